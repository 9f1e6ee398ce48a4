"""Issue 16, item 5: property-based fuzzing of the study schema and the long-format importer.

Any generated input must end in exit 0 or in exit 2 with one message (``hyptest
validate``), or in :class:`ImportProblems` (``read_long``) — never a traceback —
within a time bound (hypothesis' deadline) and a memory bound (peak RSS).

``HYPTEST_FUZZ_EXAMPLES=2000`` runs a larger one-off probe; with
``HYPTEST_FUZZ_REPORT=FILE`` the outcome counts are written there as JSON.
The defects of issue 16 are kept as explicit ``@example`` regression cases.
"""

from __future__ import annotations

import collections
import copy
import io
import json
import math
import os
import resource
import traceback
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from hyptest.cli import app  # noqa: E402
from hyptest.importers import ImportProblems, read_long  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_EXAMPLES = int(os.environ.get("HYPTEST_FUZZ_EXAMPLES", "60"))
DEADLINE_MS = 10_000
MEMORY_BOUND_MB = 1024
COUNTS: collections.Counter[str] = collections.Counter()
FAILURES: list[str] = []
FUZZ = settings(max_examples=N_EXAMPLES, deadline=DEADLINE_MS, derandomize=N_EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much],
                database=None)
runner = CliRunner()

COMMITTED = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "studies").glob("*.yaml"))}
TINY = {
    "name": "fz", "seed": 1, "models": [{"name": "tiny", "source": "tiny"}], "tasks": ["sentiment"],
    "demos": {"n_demos": 3, "n_sets": 2, "n_orders": 4, "n_queries": 6},
    "methods": [{"kind": "icl"}, {"kind": "sgd", "learning_rate": 0.01}, {"kind": "adam", "learning_rate": 0.001}],
    "analysis": {"n_resamples": 2000, "bayes": False},
}
BASES = {"tiny": TINY, **COMMITTED}


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module", autouse=True)
def _in_a_scratch_dir(tmp_path_factory):
    # validate resolves reports/<name> and relative output_dir against the working directory
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("fuzz"))
    rss0 = _max_rss_mb()
    yield
    os.chdir(old)
    report = os.environ.get("HYPTEST_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps({"counts": dict(COUNTS), "failures": FAILURES[:50],
                                            "rss_growth_mb": _max_rss_mb() - rss0}, indent=1))
    assert _max_rss_mb() - rss0 < MEMORY_BOUND_MB, "the fuzzed inputs took more memory than the bound"


# ---------------------------------------------------------------------------
# study files
# ---------------------------------------------------------------------------

KEYS = sorted({"name", "seed", "models", "tasks", "demos", "methods", "analysis", "dai", "executor", "kind",
               "learning_rate", "steps", "epochs", "betas", "eps", "layer", "params", "n_demos", "n_sets",
               "n_orders", "n_queries", "top_k", "overlap_k", "margins", "ratio", "absolute", "bootstrap",
               "n_resamples", "bayes_draws", "train_seeds", "output_dir", "source", "path", "checkpoints",
               "dataset", "label_words", "input_template", "confirmatory", "reference", "alpha", "rope",
               "control", "untrained", "seeds", "control_of", "control_seed", "margins_vs_untrained"})
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-3, 40)
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e9, 2**63, -1, 0, 1, 0.5, 1.0])
           | st.text(max_size=12) | st.sampled_from(["all", "middle", "last", "icl", "gd", "sgd", "adam", "zs",
                                                     "untrained", "cluster", "pairs", "tiny", "sentiment", "..", ".", ""]))
values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=4),
                      max_leaves=12)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


@st.composite
def mutated_studies(draw):
    """A committed (or the tiny) study with a few random replacements, deletions and insertions."""
    data = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "insert"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(values)
        else:
            parent.insert(path[-1], draw(values))
    return data


def _dump(data) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except (yaml.YAMLError, RecursionError):
        return json.dumps(data, default=str)


def _run_validate(text: str) -> str:
    """Run ``hyptest validate`` in-process on a file's text; return the outcome, record failures."""
    path = Path("fuzzed.yaml")
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = runner.invoke(app, ["validate", str(path)])
    COUNTS["inputs"] += 1
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        COUNTS["tracebacks"] += 1
        FAILURES.append(f"{type(result.exception).__name__}: {result.exception!s:.300} <- {text[:300]!r}\n"
                        + "".join(traceback.format_exception(result.exception)[-3:]))
        return "traceback"
    if result.exit_code == 0:
        COUNTS["exit 0"] += 1
        return "ok"
    if result.exit_code == 2 and result.output.count("error:") == 1:
        COUNTS["clean exit 2"] += 1
        return "error"
    COUNTS["other exit"] += 1
    FAILURES.append(f"exit {result.exit_code}: {result.output[:300]!r} <- {text[:300]!r}")
    return "other"


def _assert_clean(outcome: str) -> None:
    assert outcome in {"ok", "error"}, FAILURES[-1]


def _issue_16_cases():
    """The study files of issue 16 that crashed ``study`` after ``validate`` passed them (regression cases)."""
    def method(**options):
        return {**TINY, "methods": [{"kind": "icl"}, options]}
    return [
        {**TINY, "seed": -1}, {**TINY, "seed": 2**63}, {**TINY, "seed": True},
        method(kind="sgd", params="value_proj", layer=99, learning_rate=0.01),
        method(kind="adam", betas=[1.5, 0.9]), method(kind="adam", betas=[float("nan"), 0.9]),
        {**TINY, "demos": {**TINY["demos"], "n_queries": 1}}, {**TINY, "methods": [{"kind": "icl"}]},
        {**TINY, "demos": {**TINY["demos"], "n_sets": 1}, "analysis": {"bootstrap": "cluster", "bayes": False}},
        {**TINY, "analysis": {"top_k": 10**9}}, {**TINY, "analysis": {"top_k": 500, "bayes": False}},
        method(kind="sgd", learning_rate=1e9), {**TINY, "output_dir": "/proc/none/run"},
        {**TINY, "analysis": {"margins": {"order_sensitivity": {"ratio": float("inf")}}}},
        {**TINY, "analysis": {"margins": {"order_sensitivity": {"ratio": True}}}},
        {**TINY, "demos": {**TINY["demos"], "n_sets": True}}, method(kind="sgd", epochs=True),
        {**TINY, "demos": {"n_demos": 13, "n_orders": 10**9}}, method(kind="gd", steps=10**9),
        method(kind="sgd", epochs=10**9), {**TINY, "analysis": {"n_resamples": 10**9}},
        {**TINY, "analysis": {"bayes_draws": 10**9}}, {**TINY, "name": ".."},
    ]


def _with_examples(test, cases):
    for case in cases:
        test = example(case)(test)
    return test


@pytest.mark.parametrize("case", range(len(_issue_16_cases())))
def test_issue_16_study_files_are_clean_errors(case):
    assert _run_validate(_dump(_issue_16_cases()[case])) == "error"


def test_yaml_nested_900_deep_is_a_clean_error():
    assert _run_validate("name: x\ndescription: " + "[" * 900 + "]" * 900 + "\n") == "error"
    assert _run_validate("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 1000))) == "error"


@FUZZ
@given(mutated_studies())
def test_mutated_committed_studies(data):
    _assert_clean(_run_validate(_dump(data)))


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=6))
def test_generated_study_documents(data):
    _assert_clean(_run_validate(_dump(data)))


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_as_a_study_file(text):
    _assert_clean(_run_validate(text))


# ---------------------------------------------------------------------------
# the long-format importer
# ---------------------------------------------------------------------------

LONG_NAMES = ["model", "task", "method", "demo_set", "query_id", "gold", "order_id", "order", "n_demos", "seed",
              "step", "method_kind", "labels", "label_probs", "topk_ids", "topk_probs", "prob_neg", "prob_pos"]
cells = (st.sampled_from(["m", "t", "icl", "sgd", "neg", "pos", "0", "1", "2", "-1", "0.25", "0.75", "0.5", "nan",
                          "inf", "1e309", "", "[0.3, 0.7]", "[\"neg\", \"pos\"]", "[1, 2]", "[0.5]", "[[", "true",
                          "[0, 1, 2, 3]", "9" * 30])
         | st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.integers().map(str) | st.text(max_size=8))
VALID_HEADER = ["model", "task", "method", "demo_set", "order_id", "n_demos", "query_id", "gold", "prob_neg",
                "prob_pos"]


@st.composite
def long_tables(draw):
    """(suffix, bytes): a CSV or JSONL file mostly in the long format, with garbage mixed in."""
    header = draw(st.sampled_from([VALID_HEADER, VALID_HEADER + ["seed", "step"],
                                   ["model", "task", "method", "demo_set", "order", "query_id", "gold", "labels",
                                    "label_probs", "topk_ids", "topk_probs"]])
                  | st.lists(st.sampled_from(LONG_NAMES) | st.text(max_size=5), max_size=12))
    rows = draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header))
                         | st.lists(cells, max_size=len(header) + 2), max_size=8))
    if draw(st.booleans()):
        import csv

        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
        raw = out.getvalue().encode("utf-8", "surrogatepass")
        suffix = ".csv"
    else:
        lines = []
        for row in rows:
            record = {}
            for name, cell in zip(header, row):
                try:
                    record[name] = json.loads(cell)
                except (ValueError, RecursionError):
                    record[name] = cell
            lines.append(json.dumps(record))
        raw = "\n".join(lines).encode("utf-8", "surrogatepass")
        suffix = ".jsonl"
    if draw(st.booleans()):  # damage: insert random bytes somewhere
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=12)) + raw[at:]
    return suffix, raw


def _run_read_long(suffix: str, raw: bytes) -> str:
    path = Path(f"fuzzed{suffix}")
    path.write_bytes(raw)
    outcome = "ok"
    for strict in (True, False):
        COUNTS["import inputs"] += 1
        try:
            result = read_long(path, strict=strict, batch_rows=3)
            assert all(math.isfinite(p) for p in result.records.get("p_gold", [])), "non-finite p_gold"
            COUNTS["import ok"] += 1
        except ImportProblems as error:
            assert str(error).strip()
            COUNTS["import clean error"] += 1
            outcome = "error" if outcome == "ok" else outcome
        except Exception as error:  # noqa: BLE001 - the property under test
            COUNTS["import tracebacks"] += 1
            FAILURES.append(f"read_long(strict={strict}) {type(error).__name__}: {error!s:.300} <- {raw[:300]!r}\n"
                            + "".join(traceback.format_exception(error)[-3:]))
            return "traceback"
    return outcome


@FUZZ
@given(long_tables())
@example((".csv", b"model,task,method,demo_set,order_id,n_demos,query_id,gold,prob_neg,prob_pos\n"
                  b"m,t,icl,0,0,2,q1,pos,0.25,0.75\n"))
@example((".csv", b"model,task,method,demo_set,order_id,n_demos,query_id,gold,prob_neg,prob_pos\n"
                  b"m,t,icl,0,0,2,q1,pos,\xff\xfe,0.75\n"))
@example((".csv", b"model,task,method,demo_set,order_id,n_demos,query_id,gold,prob_neg,prob_pos\n"
                  b'm,t,icl,0,0,2,q1,"' + b"a" * (128 * 1024 + 5) + b'",0.25,0.75\n'))
def test_long_importer(table):
    assert _run_read_long(*table) in {"ok", "error"}, FAILURES[-1]


def test_long_importer_deeply_nested_jsonl_line():
    """Found by this suite: json's RecursionError on a deeply nested JSONL line is a line error."""
    path = Path("deep.jsonl")
    path.write_bytes(b'{"model": "m"}\n' + b"[" * 5000 + b"]" * 5000 + b"\n")
    with pytest.raises(ImportProblems):
        read_long(path)
