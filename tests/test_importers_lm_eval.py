"""lm-evaluation-harness sample logs: real harness runs on a local task, read back and reanalysed.

The independent sources: the probabilities are recomputed from the harness's logged log-likelihoods with
``scipy.special.softmax``; the demos each doc was given are replayed from lm-eval's sampler (the standard
library's ``random.Random(seed).sample`` per doc, itself checked against ``lm_eval``'s own
``ContextSampler``) and rendered with an f-string written from the task YAML, not parsed from the prompt.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from typer.testing import CliRunner

from hyptest.cli import app
from hyptest.importers import ImportProblems, detect_format, read_lm_eval
from hyptest.importers.lm_eval import _split_demos

from .lm_eval_harness import replay_sampler, run_harness

pytest.importorskip("lm_eval")

FIXTURES = Path(__file__).parent / "fixtures" / "lm_eval"
SEEDS = (1, 2, 3)
N = 2
LABELS = ["negative", "positive"]
runner = CliRunner()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _demo_text(doc: dict) -> str:
    """A demo as the task YAML renders it: doc_to_text + target_delimiter + choice."""
    return f"Review: {doc['text']}\nSentiment: {LABELS[doc['label']]}"


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    """Three real harness runs (few-shot seeds 1-3) of the three fixture tasks on a tiny random Llama."""
    from hyptest.models.tiny import load_tiny

    root = tmp_path_factory.mktemp("lm_eval")
    tiny = load_tiny("tiny", seed=0)
    model_dir = root / "tiny-llama"
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    run_harness(model_dir, ["tiny_sentiment", "tiny_sentiment_fixed", "tiny_continuation"], FIXTURES, SEEDS,
                root / "out", num_fewshot=N)
    return root / "out"


def _samples(out: Path, task: str, seeds: tuple[int, ...] = SEEDS) -> dict[int, Path]:
    """Seed -> samples file of that task, found by the layout lm-eval writes."""
    found = {}
    for seed in seeds:
        (path,) = [p for p in (out / f"fewshot_seed_{seed}").glob(f"*/samples_{task}_*.jsonl")
                   if re.fullmatch(rf"samples_{task}_\d{{4}}-\d\d-\d\dT.*\.jsonl", p.name)]
        found[seed] = path
    return found


def test_replayed_sampler_is_lm_evals_own():
    from lm_eval.api.samplers import ContextSampler

    pool = _jsonl(FIXTURES / "train.jsonl")
    for seed in SEEDS:
        sampler = ContextSampler(pool, rnd=seed)
        assert replay_sampler(pool, 6, N, seed) == [list(sampler.sample(N)) for _ in range(6)]


def _check_against_harness(out: Path, tasks: dict[str, str], seeds: tuple[int, ...]):
    """Every (run, doc) line of the harness: its record has softmax(logged lls) and the replayed demos."""
    imported = read_lm_eval(out)
    records = imported.result.records
    assert imported.result.problems == []
    tests = _jsonl(FIXTURES / "test.jsonl")
    for task, pool_file in tasks.items():
        pool = _jsonl(FIXTURES / pool_file)
        rows = records[records["task"] == task]
        seen = set()
        for seed, path in _samples(out, task, seeds).items():
            expected = replay_sampler(pool, len(tests), N, seed)
            for line in _jsonl(path):
                doc = line["doc_id"]
                demos = [_demo_text(d) for d in expected[doc]]
                lls = [float(r[0]) for r in line["filtered_resps"]]
                # the record of this (doc, demos in this order): there is exactly one
                match = rows[(rows["query_id"] == str(doc))
                             & rows["order"].map(lambda o, d=demos: [imported.demos[i] for i in o] == d)]
                assert len(match) == 1, (task, seed, doc)
                row = match.iloc[0]
                np.testing.assert_allclose(row["label_probs"], softmax(lls), rtol=0, atol=1e-12)
                assert row["gold"] == LABELS[tests[doc]["label"]]
                assert row["p_gold"] == pytest.approx(softmax(lls)[tests[doc]["label"]], abs=1e-12)
                seen.add((doc, tuple(demos)))
        assert len(rows) == len(seen)  # a prompt met twice (two seeds drew the same) is kept once
        # demo sets are the SETS of demos: same set <=> same demo_set index
        by_set = rows.groupby("demo_set")["order"].apply(lambda s: {frozenset(o) for o in s})
        assert all(len(v) == 1 for v in by_set)
        assert len({next(iter(v)) for v in by_set}) == len(by_set)
    return imported


def test_probabilities_and_demos_match_the_harness(harness):
    assert detect_format(harness) == "lm_eval"
    imported = _check_against_harness(harness, {"tiny_sentiment": "train.jsonl",
                                                "tiny_sentiment_fixed": "fewshot.jsonl"}, SEEDS)
    records = imported.result.records
    fixed = records[records["task"] == "tiny_sentiment_fixed"]
    assert set(fixed["demo_set"]) == {0}  # a pool of exactly N docs: one set, its orders vary
    design = {d["task"]: d for d in imported.design}
    expected_sets = {frozenset(_demo_text(d) for d in draw)
                     for seed in SEEDS for draw in replay_sampler(_jsonl(FIXTURES / "train.jsonl"), 6, N, seed)}
    assert design["tiny_sentiment"]["n_sets"] == len(expected_sets)
    assert design["tiny_sentiment_fixed"]["n_sets"] == 1
    assert design["tiny_sentiment_fixed"]["orders_per_set_max"] == 2
    assert "estimable" in design["tiny_sentiment_fixed"]["applies"]


def test_loglikelihood_task_gives_the_target_its_probability(harness):
    imported = read_lm_eval(harness)
    records = imported.result.records
    rows = records[records["task"] == "tiny_continuation"]
    pool, tests = _jsonl(FIXTURES / "train.jsonl"), _jsonl(FIXTURES / "test.jsonl")
    n_lines = 0
    for seed, path in _samples(harness, "tiny_continuation").items():
        expected = replay_sampler(pool, len(tests), N, seed)
        for line in _jsonl(path):
            n_lines += 1
            doc = line["doc_id"]
            # lm-eval 0.4.13 scores the bare target here (no target delimiter before it)
            assert line["arguments"]["gen_args_0"]["arg_1"] == LABELS[tests[doc]["label"]]
            (ll,) = [float(r[0]) for r in line["filtered_resps"]]
            demos = [_demo_text(d) for d in expected[doc]]
            match = rows[(rows["query_id"] == str(doc)) & rows["order"].map(
                lambda o, d=demos: [imported.demos[i] for i in o] == d)]
            assert len(match) == 1
            row = match.iloc[0]
            assert row["labels"] == ["target", "other"] and row["gold"] == "target"
            assert row["label_probs"][0] == pytest.approx(np.exp(ll), abs=1e-15)
            assert row["label_probs"][1] == pytest.approx(1 - np.exp(ll), abs=1e-15)
    assert n_lines >= len(rows) > 0


def test_reanalyse_end_to_end(harness, tmp_path):
    out = tmp_path / "rep"
    result = runner.invoke(app, ["reanalyse", str(harness), "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["import"]["format"] == "lm_eval"
    assert {d["task"] for d in results["import"]["lm_eval"]["design"]} == {"tiny_sentiment", "tiny_sentiment_fixed",
                                                                           "tiny_continuation"}
    # the order SD of each doc of the fixed-set task, by hand from the logged log-likelihoods
    by_order: dict[int, dict[tuple, float]] = {}
    fewshot = _jsonl(FIXTURES / "fewshot.jsonl")
    tests = _jsonl(FIXTURES / "test.jsonl")
    for seed, path in _samples(harness, "tiny_sentiment_fixed").items():
        draws = replay_sampler(fewshot, len(tests), N, seed)
        for line in _jsonl(path):
            doc = line["doc_id"]
            p = softmax([float(r[0]) for r in line["filtered_resps"]])[tests[doc]["label"]]
            by_order.setdefault(doc, {})[tuple(d["text"] for d in draws[doc])] = p
    per_query = pd.read_parquet(out / "per_query.parquet")
    fixed = per_query[per_query["task"] == "tiny_sentiment_fixed"].set_index("query_id")
    for doc, values in by_order.items():
        assert fixed.loc[str(doc), "n_orders"] == len(values)
        if len(values) >= 2:
            assert fixed.loc[str(doc), "sd_gold"] == pytest.approx(np.std(list(values.values()), ddof=1), abs=1e-12)


def test_two_models_on_the_same_prompts_get_verdicts(harness, tmp_path):
    """A second model run with the same few-shot seeds: the models are compared, with verdicts, on shared cells."""
    from hyptest.models.tiny import load_tiny

    other = load_tiny("tiny", seed=1)
    model_dir = tmp_path / "tiny-llama-b"
    other.model.save_pretrained(model_dir)
    other.tokenizer.save_pretrained(model_dir)
    both = tmp_path / "both"
    shutil.copytree(harness, both / "a")
    run_harness(model_dir, ["tiny_sentiment_fixed"], FIXTURES, SEEDS, both / "b", num_fewshot=N)
    out = tmp_path / "rep"
    result = runner.invoke(app, ["reanalyse", str(both), "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    rows = [c for c in results["comparisons"] if c["analysis"] == "order_sensitivity"]
    assert len(rows) == 1 and rows[0]["method_a"] == "tiny-llama" and rows[0]["method_b"] == "tiny-llama-b"
    assert rows[0]["verdict"] in {"different", "equivalent", "negligible", "inconclusive"}
    # by hand: P(gold) of each doc under each order, per model, from the logged log-likelihoods; the SD over
    # the 2 orders for the docs both models saw in both orders; the log ratio of the mean SDs
    fewshot, tests = _jsonl(FIXTURES / "fewshot.jsonl"), _jsonl(FIXTURES / "test.jsonl")
    p: dict[str, dict[int, dict[tuple, float]]] = {}
    for name, root in (("a", both / "a"), ("b", both / "b")):
        for seed, path in _samples(root, "tiny_sentiment_fixed").items():
            draws = replay_sampler(fewshot, len(tests), N, seed)
            for line in _jsonl(path):
                doc = line["doc_id"]
                probs = softmax([float(r[0]) for r in line["filtered_resps"]])
                p.setdefault(name, {}).setdefault(doc, {})[tuple(d["text"] for d in draws[doc])] = \
                    probs[tests[doc]["label"]]
    complete = [d for d in p["a"] if len(p["a"][d]) == 2 and len(p["b"].get(d, {})) == 2]
    assert len(complete) >= 2
    sd = {k: np.mean([np.std(list(p[k][d].values()), ddof=1) for d in complete]) for k in ("a", "b")}
    assert rows[0]["estimate"] == pytest.approx(math.log(sd["a"] / sd["b"]), rel=1e-9)
    assert rows[0]["n"] == len(complete)


def _copy_run(harness: Path, tmp_path: Path) -> Path:
    src = _samples(harness, "tiny_sentiment")[1]
    dest = tmp_path / "run"
    dest.mkdir()
    shutil.copy(src, dest / src.name)
    results = next(src.parent.glob("results_*.json"))
    shutil.copy(results, dest / results.name)
    return dest / src.name


def test_bad_line_exits_2_with_file_and_line_and_skip_bad_counts_it(harness, tmp_path):
    samples = _copy_run(harness, tmp_path)
    lines = samples.read_text().splitlines()
    lines[2] = lines[2][:40]  # a truncated line 3
    bad = json.loads(lines[4])
    bad["filtered_resps"][0][0] = "0.5"  # a positive log-likelihood on line 5
    lines[4] = json.dumps(bad)
    samples.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["reanalyse", str(samples.parent), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"{samples.name}:3" in result.output.replace("\n", "")
    with pytest.raises(ImportProblems) as error:
        read_lm_eval(samples)
    problems = error.value.problems
    assert [p.line for p in problems] == [3, 5]
    assert problems[0].message.startswith("not a JSON object")
    assert problems[1].message.startswith("log-likelihood '0.5' must be finite and <= 0")
    assert all(p.file == str(samples) for p in problems)
    result = runner.invoke(app, ["reanalyse", str(samples.parent), "--out", str(tmp_path / "o"), "--skip-bad"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["import"]["n_rows_read"] == 6 and results["import"]["n_rows_skipped"] == 2
    listed = json.loads((tmp_path / "o" / "import_problems.json").read_text())
    assert [p["line"] for p in listed] == [3, 5]


def test_missing_results_file_and_unsupported_runs(harness, tmp_path):
    samples = _copy_run(harness, tmp_path)
    results = next(samples.parent.glob("results_*.json"))
    info = json.loads(results.read_text())
    info["configs"]["tiny_sentiment"]["output_type"] = "generate_until"
    results.write_text(json.dumps(info))
    with pytest.raises(ImportProblems, match="output_type 'generate_until'"):
        read_lm_eval(samples)
    results.unlink()
    result = runner.invoke(app, ["reanalyse", str(samples), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "results_" in result.output and "beside it" in result.output


def test_a_column_mapping_is_refused(harness, tmp_path):
    result = runner.invoke(app, ["reanalyse", str(harness), "--format", "lm_eval", "--column", "a=model",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "does not apply to lm-eval logs" in result.output


def test_split_demos_at_the_delimiter():
    body = "A: x\n\nB: y\n\nquery"
    assert _split_demos(body, 2, "\n\n", None) == ["A: x", "B: y"]
    assert _split_demos(body, 3, "\n\n", None) is None  # fewer demos than asked
    # the delimiter inside a demo: ambiguous alone, resolved by demos seen unambiguously elsewhere
    body = "A: x\n\nmore\n\nB: y\n\nquery"
    assert _split_demos(body, 2, "\n\n", None) is None
    assert _split_demos(body, 2, "\n\n", {"A: x\n\nmore", "B: y"}) == ["A: x\n\nmore", "B: y"]


def test_committed_report_states_its_design():
    """reports/lm_eval_sentiment: the design the import states agrees with the analysis it fed."""
    path = Path(__file__).resolve().parent.parent / "reports" / "lm_eval_sentiment" / "results.json"
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    results = json.loads(path.read_text())
    info = results["import"]
    assert info["format"] == "lm_eval" and info["n_rows_skipped"] == 0
    (design,) = info["lm_eval"]["design"]
    (summary,) = results["order_sensitivity"]
    (accuracy,) = results["accuracy"]
    assert design["n_runs"] == len(design["fewshot_seeds"]) == len(info["lm_eval"]["runs"])
    assert design["n_sets"] == 1 and design["n_distinct_demos"] == design["n_demos"]
    assert design["orders_per_set_max"] <= math.factorial(design["n_demos"])
    assert design["n_cells_multi_order"] == design["n_docs"] == summary["n_queries"]
    assert accuracy["n"] == info["n_rows_stored"] <= info["n_rows_read"]
    assert summary["ci_low"] <= summary["mean_sd_gold"] <= summary["ci_high"]


@pytest.mark.slow
def test_real_model_run_reanalysed(tmp_path):
    """The embedded SmolLM2-135M through the harness (two seeds), read back and reanalysed."""
    from hyptest.models.embedded import cache_root, load_embedded

    load_embedded(device="cpu")  # the dequantised Hugging Face directory lm-eval loads
    (model_dir,) = (cache_root() / "models").glob("smollm2-135m-*")
    seeds = (1, 2)
    run_harness(model_dir, ["tiny_sentiment_fixed"], FIXTURES, seeds, tmp_path / "out", num_fewshot=N)
    imported = _check_against_harness(tmp_path / "out", {"tiny_sentiment_fixed": "fewshot.jsonl"}, seeds)
    assert set(imported.result.records["model"]) == {model_dir.name}
    result = runner.invoke(app, ["reanalyse", str(tmp_path / "out"), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "rep" / "results.json").read_text())
    (row,) = results["accuracy"]
    assert row["n"] == len(imported.result.records)
