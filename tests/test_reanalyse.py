"""`reanalyse` end to end: a real study's records round-trip through the long format; Dai and summaries runs."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyptest.importers import ImportProblems, read_long
from hyptest.workflows.reanalyse import (
    dai_comparisons,
    dai_metric_values,
    export_run,
    reanalyse,
    synthetic_study,
)
from hyptest.store import RECORD_COLUMNS, RunDir
from hyptest.study import AnalysisSpec

FIXTURES = Path(__file__).parent / "fixtures"
KEY = ["model", "task", "n_demos", "method_a", "method_b", "analysis"]
NUMBERS = ["estimate", "ci_low", "ci_high", "p_value", "p_adjusted", "verdict", "mean_a", "mean_b", "n"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from hyptest.workflows.study import run_study
    from hyptest.study import load_study

    from .conftest import TINY_STUDY

    folder = tmp_path_factory.mktemp("study")
    path = folder / "tiny.yaml"
    path.write_text(TINY_STUDY)
    study, text = load_study(path)
    if "bayes" in AnalysisSpec.model_fields:  # MCMC is slow and not what this round trip tests
        study = study.model_copy(update={"analysis": study.analysis.model_copy(update={"bayes": False})})
    summary = run_study(study, text, out_dir=folder / "out", threads=1)
    run = RunDir(summary.run_dir)
    records = run.read_units(u["key"] for u in run.read_json("manifest.json")["units"])
    overrides = {"seed": study.seed, "analysis": study.analysis.model_dump(mode="json")}
    return summary.run_dir, records, overrides


def _comparisons(run_dir: Path) -> dict[tuple, dict]:
    rows = json.loads((Path(run_dir) / "results.json").read_text())["comparisons"]
    return {tuple(r[k] for k in KEY): r for r in rows}


def _assert_same_results(a: Path, b: Path) -> None:
    ca, cb = _comparisons(a), _comparisons(b)
    assert ca.keys() == cb.keys() and len(ca) >= 20
    for key, row in ca.items():
        if key[-1].startswith("bayes"):  # MCMC (only with the bayes extra installed): not compared bit for bit
            continue
        for name in NUMBERS:
            # identical records and the same seeded rng: the numbers are identical, not just close
            assert row[name] == cb[key][name], (key, name, row[name], cb[key][name])
    pd.testing.assert_frame_equal(pd.read_parquet(Path(a) / "per_query.parquet"),
                                  pd.read_parquet(Path(b) / "per_query.parquet"))


THEIRS = {"model": "lm", "task": "dataset", "method": "algorithm", "n_demos": "k", "demo_set": "demo_set_idx",
          "order_id": "perm", "order": "perm_ids", "seed": "train_seed", "step": "n_steps",
          "query_id": "example_id", "gold": "label", "topk_ids": "top_ids", "topk_probs": "top_probs"}


def test_round_trip_through_their_csv_and_a_mapping(tiny_run, tmp_path):
    run_dir, records, overrides = tiny_run
    labels = records["labels"].iloc[0].tolist()
    header = [*THEIRS.values(), *(f"P({label})" for label in labels)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in records.to_dict("records"):
        values = []
        for ours in THEIRS:
            v = row[ours]
            values.append(json.dumps(np.asarray(v).tolist()) if isinstance(v, (np.ndarray, list)) else
                          repr(float(v)) if isinstance(v, float) else str(v))
        values += [repr(float(p)) for p in row["label_probs"]]
        writer.writerow(values)
    their_csv = tmp_path / "their_log.csv"
    their_csv.write_text(buffer.getvalue())
    mapping = tmp_path / "map.yaml"
    mapping.write_text("columns:\n" + "".join(f"  {t}: {o}\n" for o, t in THEIRS.items())
                       + "".join(f"  P({label}): prob_{label}\n" for label in labels))
    out = reanalyse(their_csv, out_dir=tmp_path / "re", mapping=mapping, study_overrides=overrides)
    _assert_same_results(run_dir, out)
    results = json.loads((out / "results.json").read_text())
    assert results["import"]["n_rows_read"] == 288 and results["import"]["n_rows_skipped"] == 0
    assert results["provenance"]["warnings"][0] == f"imported 288 row(s) from {their_csv}; 0 skipped because of problems"
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["units"]) == 48 and manifest["trajectory_units"] == []
    assert {m["kind"] for m in manifest["study"]["methods"]} == {"icl", "gd", "sgd", "adam"}
    assert (out / "report.html").is_file() and (out / "import_problems.json").read_text().strip() == "[]"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_export_run_reads_back_as_the_same_records(tiny_run, tmp_path, suffix):
    run_dir, records, _ = tiny_run
    dest = export_run(run_dir, tmp_path / f"records{suffix}")
    if suffix == ".csv":
        head = dest.read_text().splitlines()[0]
        assert head == ",".join(RECORD_COLUMNS)
    back = read_long(dest)
    assert back.n_rows_skipped == 0 and any("ignored column(s): correct, label_logprobs" in n for n in back.notes)
    # label_logprobs are recomputed (log of the renormalised probabilities) and unit keys re-hashed
    same = [c for c in RECORD_COLUMNS if c not in ("unit_key", "label_logprobs")]
    expected = records[same].map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)
    pd.testing.assert_frame_equal(back.records[same], expected, check_dtype=False)
    np.testing.assert_allclose(np.stack(back.records["label_logprobs"]), np.log(np.stack(records["label_probs"])),
                               rtol=1e-15)


def test_reanalyse_an_export_without_mapping(tiny_run, tmp_path):
    run_dir, _, overrides = tiny_run
    dest = export_run(run_dir, tmp_path / "records.parquet")
    out = reanalyse(dest, out_dir=tmp_path / "re", study_overrides=overrides)
    _assert_same_results(run_dir, out)
    with pytest.raises(ValueError, match="must end in .csv, .jsonl or .parquet"):
        export_run(run_dir, tmp_path / "records.xlsx")


# ---------------------------------------------------------------------------
# small synthetic files
# ---------------------------------------------------------------------------


def synthetic_rows(*, methods=("icl", "sgd"), steps=(2,), topk=True, seed=0) -> list[dict]:
    """ICL and a GD-like method on 2 demo sets x 3 orders x 4 queries, with order effects."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in methods:
        for step in (steps if method != "icl" else (0,)):
            for s in range(2):
                for o in range(3):
                    for q in range(4):
                        p = float(np.clip(0.5 + 0.2 * (q % 2 - 0.5) + rng.normal(0, 0.05), 0.01, 0.99))
                        row = {"model": "m", "task": "t", "method": method, "n_demos": 3, "demo_set": s,
                               "order_id": o, "seed": 0, "step": step, "query_id": f"q{q}",
                               "gold": ["neg", "pos"][q % 2], "prob_neg": 1 - p, "prob_pos": p}
                        if topk:
                            row["topk_ids"] = rng.choice(100, 12, replace=False).tolist()
                            row["topk_probs"] = sorted((rng.dirichlet(np.ones(20))[:12]).tolist(), reverse=True)
                        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _no_bayes(analysis: dict) -> dict:
    """Turn the hierarchical Bayes analysis off where the schema has it (slow, and not tested here)."""
    return {**analysis, "bayes": False} if "bayes" in AnalysisSpec.model_fields else analysis


OVERRIDES = {"analysis": _no_bayes({"n_resamples": 1000})}


def test_skip_bad_reports_problems_in_results(tmp_path):
    rows = synthetic_rows()
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    lines = path.read_text().splitlines()
    lines[5] = lines[5][:40]
    lines[30] = lines[30].replace('"prob_neg": ', '"prob_neg": 7', 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportProblems, match=r"log.jsonl:6: malformed JSON"):
        reanalyse(path, out_dir=tmp_path / "strict", study_overrides=OVERRIDES)
    out = reanalyse(path, out_dir=tmp_path / "skip", strict=False, study_overrides=OVERRIDES)
    results = json.loads((out / "results.json").read_text())
    warnings = results["provenance"]["warnings"]
    assert warnings[0] == f"imported 48 row(s) from {path}; 2 skipped because of problems (listed in import_problems.json)"
    assert any(w.startswith(f"import problem: {path}:6: malformed JSON") for w in warnings)
    assert any(w.startswith(f"import problem: {path}:31:") for w in warnings)
    problems = json.loads((out / "import_problems.json").read_text())
    assert [p["line"] for p in problems] == [6, 31]
    assert results["import"]["n_rows_skipped"] == 2
    html = (out / "report.html").read_text()
    assert "2 skipped because of problems" in html


def test_trajectories_store_every_step_and_analyse_the_last(tmp_path):
    both = write_jsonl(tmp_path / "steps.jsonl", synthetic_rows(steps=(1, 2)))
    last = write_jsonl(tmp_path / "last.jsonl", synthetic_rows(steps=(1, 2))[:24] + synthetic_rows(steps=(1, 2))[48:])
    out_both = reanalyse(both, out_dir=tmp_path / "both", study_overrides=OVERRIDES)
    out_last = reanalyse(last, out_dir=tmp_path / "last", study_overrides=OVERRIDES)
    manifest = json.loads((out_both / "manifest.json").read_text())
    assert len(manifest["units"]) == 12 and len(manifest["trajectory_units"]) == 6
    assert {u["step"] for u in manifest["trajectory_units"]} == {1}
    a, b = _comparisons(out_both), _comparisons(out_last)
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key]["estimate"] == b[key]["estimate"] and a[key]["p_value"] == b[key]["p_value"]
    notes = json.loads((out_both / "results.json").read_text())["import"]["notes"]
    assert any("24 row(s) of earlier optimisation steps are stored" in n for n in notes)


def test_method_kinds_and_the_synthetic_study(tmp_path):
    rows = synthetic_rows(methods=("icl", "kv_finetune"))
    records = read_long(write_jsonl(tmp_path / "k.jsonl", rows)).records
    assert set(records["method_kind"]) == {"icl", "other"}
    study, notes = synthetic_study(records, name="x y", overrides={"seed": 4})
    assert study.name == "x_y" and study.seed == 4
    assert [(m.kind, m.name) for m in study.methods] == [("icl", None), ("sgd", "kv_finetune")]
    assert study.demos.n_demos == [3] and study.demos.n_sets == 2 and study.demos.n_orders == 3
    assert study.analysis.top_k == 12 and study.analysis.overlap_k == 10
    assert any("declared as sgd" in n for n in notes)
    mapped = read_long(tmp_path / "k.jsonl", mapping={"methods": {"kv_finetune": "adam"}}).records
    assert set(mapped["method_kind"]) == {"icl", "adam"}
    out = reanalyse(tmp_path / "k.jsonl", out_dir=tmp_path / "out", study_overrides=OVERRIDES)
    assert {r["method_b"] for r in _comparisons(out).values()} == {"kv_finetune"}


def test_long_files_that_cannot_be_analysed_say_why(tmp_path):
    no_icl = write_jsonl(tmp_path / "noicl.jsonl", synthetic_rows(methods=("gd", "sgd")))
    with pytest.raises(ValueError, match="the records have no ICL method"):
        reanalyse(no_icl, out_dir=tmp_path / "a")
    # without top-k columns the token metrics are skipped; the label-distribution JS is still tested
    no_topk = write_jsonl(tmp_path / "notopk.jsonl", synthetic_rows(topk=False))
    out = reanalyse(no_topk, out_dir=tmp_path / "b", study_overrides=OVERRIDES)
    analyses = {r["analysis"] for r in json.loads((out / "results.json").read_text())["comparisons"]}
    assert "label_js" in analyses and not analyses & {"token_overlap", "overlap_cosine"}
    with pytest.raises(ValueError, match=r"analysis.n_resamples"):
        reanalyse(write_jsonl(tmp_path / "ok.jsonl", synthetic_rows()), out_dir=tmp_path / "c",
                  study_overrides={"analysis": _no_bayes({"n_resamples": 10})})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot tell the format of this folder; looked for"):
        reanalyse(tmp_path / "empty", out_dir=tmp_path / "d")


def test_dai_run_directory(tmp_path):
    out = reanalyse(FIXTURES / "dai", out_dir=tmp_path / "dai", study_overrides={"analysis": {"n_resamples": 999}})
    results = json.loads((out / "results.json").read_text())
    expected = dai_comparisons(dai_metric_values(FIXTURES / "dai"), n_resamples=999)
    got = pd.DataFrame(results["comparisons"])
    assert list(got.columns) == list(expected.columns)
    for name in ("estimate", "ci_low", "ci_high", "p_value", "p_adjusted"):
        # results.json stores an unbounded interval end (the exact test cannot reach the level) as null
        want = expected[name].astype(float).replace([np.inf, -np.inf], np.nan)
        np.testing.assert_array_equal(got[name].astype(float), want)
    assert list(got["verdict"]) == list(expected["verdict"])
    assert [r["layer"] for r in results["comparisons"]] == [None, 0, 1, None, 0, 1, None, 0, 1, None]
    # one family per metric (Rec2FTP has too few examples to test); none is confirmatory
    assert [(f["family"], f["size"], f["role"]) for f in results["families"]] == [
        ("rec2ftp", 0, "exploratory"), ("simaou", 3, "exploratory"), ("simam", 3, "exploratory"),
        ("kendall", 3, "exploratory")]
    assert all("no confirmatory family" in f["description"] for f in results["families"])
    assert results["provenance"]["import"]["n_examples_read"] == 6
    assert [e["analysis"] for e in results["layers_different"]] == ["simaou", "simam", "kendall"]
    assert results["correctness"][0]["icl_correct"] == pytest.approx(4 / 6)
    html = (out / "report.html").read_text()
    assert "SimAOU minus its baseline (random-update SimAOU), layer 1" in html
    assert pd.read_parquet(out / "dai_values.parquet").shape == (36, 7)  # 3 metrics x 6 examples x 2 layers


def test_margins_are_declared_never_derived(tmp_path):
    for analysis in ({"margin": "auto"}, {"alignment_margin": 0.1}, {"confidence": 0.9}):
        with pytest.raises(ValueError, match="do not apply to this format"):
            reanalyse(FIXTURES / "dai", out_dir=tmp_path / "x", study_overrides={"analysis": analysis})
    out = reanalyse(FIXTURES / "dai", out_dir=tmp_path / "m", study_overrides={
        "analysis": {"n_resamples": 999, "margins": {"simam": {"absolute": 0.5}}}})
    rows = json.loads((out / "results.json").read_text())["comparisons"]
    assert {r["analysis"] for r in rows if r["margin"] == 0.5} == {"simam"}
    # the long format goes through the study's schema, which has no data-derived margin either
    path = write_jsonl(tmp_path / "l.jsonl", synthetic_rows())
    with pytest.raises(ValueError, match="analysis.margins"):
        reanalyse(path, out_dir=tmp_path / "l", study_overrides={"analysis": {"margin": "auto"}})


def test_summaries_run_directory(tmp_path):
    pattern = r"(?P<task>[a-z0-9]+)-seed(?P<seed>\d+)-perm(?P<order_id>\d+)-lr(?P<learning_rate>[0-9.e-]+)\.json$"
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"pattern: '{pattern}'\n")
    out = reanalyse(FIXTURES / "summaries", out_dir=tmp_path / "s", mapping=mapping)
    results = json.loads((out / "results.json").read_text())
    assert results["study"]["format"] == "summaries" and len(results["comparisons"]) == 8
    assert [(e["analysis"], e["layers_different"]) for e in results["layers_different"]] == [
        ("SimAOU", [0, 2]), ("SimAM", [0])]
    assert [(f["family"], f["size"]) for f in results["families"]] == [("SimAOU", 4), ("SimAM", 4)]
    assert results["provenance"]["import"]["settings"] == ["task", "seed", "order_id", "learning_rate", "model"]
    assert (out / "report.html").is_file()


def test_summaries_cli_on_deutch_logs_as_a_new_user(tmp_path):
    """`hyptest reanalyse <folder>` on Deutch et al.'s 36 real runs: units, untested lists, weak baseline, all said."""
    from typer.testing import CliRunner

    from hyptest.cli import app

    folder = FIXTURES / "deutch_summaries"
    result = CliRunner().invoke(app, ["reanalyse", str(folder), "--out", str(tmp_path / "d"),
                                      "--n-resamples", "2000"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "units: 18 independent unit(s) from 36 run(s); runs with the same task, seed form one unit" in text
    assert "units check: runs that differ only in per_layer have nearly the same 'Random SimAOU' lists" in text
    assert "not tested: ICL-FTZS SimAM: no baseline list" in text
    assert "weak baseline: 'Random SimAOU' of SimAOU: nearly constant across units" in text
    assert "Also reported against a stronger baseline: layer permutation" in text
    results = json.loads((tmp_path / "d" / "results.json").read_text())
    assert results["units"]["n_units"] == 18 and results["units"]["cluster_by"] == ["task", "seed"]
    assert results["untested"][0]["analysis"] == "ICL-FTZS SimAM"
    assert [b["analysis"] for b in results["baselines"] if b["weak"]] == ["SimAOU"]
    assert [e["analysis"] for e in results["layers_different"]] == ["SimAOU", "layer permutation: SimAOU"]
    assert {r["n"] for r in results["comparisons"]} == {18}
    html = (tmp_path / "d" / "report.html").read_text()
    assert "18 independent unit(s) from 36 run(s)" in html and "not tested: ICL-FTZS SimAM" in html
    # --cluster-by stated too finely: the shared passes still merge the per_layer partners, with the message
    result = CliRunner().invoke(app, ["reanalyse", str(folder), "--out", str(tmp_path / "c"), "--n-resamples",
                                      "2000", "--cluster-by", "task,seed", "--cluster-by", "per_layer"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "the data checks merged 36 units into 18" in text
    # --pattern states the settings instead of reading them from the names
    pattern = r"(?P<task>[a-z0-9]+)_per_layer_(?P<pl>\d)_k_32_seed_(?P<seed>\d+)"
    result = CliRunner().invoke(app, ["reanalyse", str(folder), "--out", str(tmp_path / "p"), "--n-resamples",
                                      "2000", "--pattern", pattern])
    results = json.loads((tmp_path / "p" / "results.json").read_text())
    assert result.exit_code == 0 and results["provenance"]["import"]["settings"] == ["task", "pl", "seed"]
    assert results["provenance"]["import"]["settings_from"] == "pattern" and results["units"]["n_units"] == 18
    bad = CliRunner().invoke(app, ["reanalyse", str(folder), "--out", str(tmp_path / "b"), "--cluster-by", "nope"])
    assert bad.exit_code == 2 and "`cluster_by`: 'nope' is not a setting" in " ".join(bad.output.split())


# ---------------------------------------------------------------------------
# the long format goes through the study's analysis: demo sets with their own queries
# ---------------------------------------------------------------------------


def _own_queries_rows(seed: int = 3) -> list[dict]:
    """icl and sgd on 3 demo sets x 4 orders; each set has its own query ids (and its own number of them)."""
    rng = np.random.default_rng(seed)
    rows = []
    for method, spread in (("icl", 0.10), ("sgd", 0.02)):
        for s in range(3):
            shifts = rng.normal(0, spread, size=4)  # one effect per order, shared by the set's queries
            for o in range(4):
                for q in range(4 + s):
                    noise = rng.normal(0, spread / 3)
                    p = float(np.clip(0.5 + 0.15 * (q % 2 - 0.5) + shifts[o] + noise, 0.02, 0.98))
                    rows.append({"model": "m", "task": "t", "method": method, "n_demos": 4, "demo_set": s,
                                 "order_id": o, "seed": 0, "step": 0 if method == "icl" else 3,
                                 "query_id": f"set{s}-q{q}", "gold": ["neg", "pos"][q % 2],
                                 "prob_neg": 1 - p, "prob_pos": p,
                                 "topk_ids": rng.choice(100, 8, replace=False).tolist(),
                                 "topk_probs": sorted(rng.dirichlet(np.ones(10))[:8].tolist(), reverse=True)})
    return rows


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_long_file_whose_demo_sets_have_different_queries(tmp_path, suffix):
    from hyptest.results import VERDICTS

    frame = pd.DataFrame(_own_queries_rows())
    path = tmp_path / f"own{suffix}"
    if suffix == ".csv":
        frame.assign(topk_ids=frame["topk_ids"].map(json.dumps),
                     topk_probs=frame["topk_probs"].map(json.dumps)).to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    out = reanalyse(path, out_dir=tmp_path / "out", study_overrides=OVERRIDES)
    rows = [r for r in json.loads((out / "results.json").read_text())["comparisons"]
            if r["analysis"] == "order_sensitivity"]
    assert len(rows) == 1
    (row,) = rows
    assert row["method_a"] == "icl" and row["method_b"] == "sgd" and row["family"] == "confirmatory"
    assert row["verdict"] in VERDICTS and row["verdict"] != "not_estimable"
    assert row["n"] == 4 + 5 + 6 and row["n_sets"] == 3 and row["n_orders"] == 4
    # Theorem 1's quantity by hand: log of the mean over (set, query) of the SD across orders (ddof 1),
    # icl over sgd
    sd = frame.groupby(["method", "demo_set", "query_id"])["prob_pos"].std(ddof=1).groupby("method").mean()
    assert row["estimate"] == pytest.approx(np.log(sd["icl"] / sd["sgd"]), rel=1e-9)
    assert row["ci_low"] <= row["estimate"] <= row["ci_high"]


# ---------------------------------------------------------------------------
# format detection reports the parser's own error, at its file and line, and the CLI exits 2
# ---------------------------------------------------------------------------


def _cli(*args: str):
    from typer.testing import CliRunner

    from hyptest.cli import app

    return CliRunner().invoke(app, ["reanalyse", *map(str, args)])


def _parser_message(text: str) -> tuple[int, str]:
    """What json itself says about `text`: (line, message), the independent reference."""
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        return error.lineno, f"{error.msg} (column {error.colno})"
    raise AssertionError("the text parses")


def test_a_truncated_json_in_a_folder_is_reported_at_its_line(tmp_path):
    folder = tmp_path / "runs"
    shutil.copytree(FIXTURES / "summaries", folder)
    good = sorted(folder.glob("*.json"))[0]
    text = json.dumps({"SimAOU": [0.3, 0.4], "Random SimAOU": [0.0, 0.01], "seed": 9}, indent=1)
    truncated = text[: len(text) // 2]
    (folder / "zz-truncated.json").write_text(truncated)
    line, message = _parser_message(truncated)
    result = _cli(folder, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert f"{folder / 'zz-truncated.json'}:{line}: not valid JSON: {message}" in flat
    assert "cannot tell the format" not in flat and str(good) not in flat
    assert not (tmp_path / "out").exists()
    # the same from Python: ImportProblems, a ValueError, with the Problem
    with pytest.raises(ImportProblems) as caught:
        reanalyse(folder, out_dir=tmp_path / "out2")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (str(folder / "zz-truncated.json"), line)


def test_unparsable_single_files_are_reported_at_their_line(tmp_path):
    bad_json = tmp_path / "run.json"
    bad_json.write_text('{"SimAOU": [0.1,\n  0.2], "Random SimAOU": [0.0 0.1]}\n')
    line, message = _parser_message(bad_json.read_text())
    result = _cli(bad_json, "--out", tmp_path / "a")
    assert result.exit_code == 2 and line == 2
    assert f"{bad_json}:2: not valid JSON: {message}" in " ".join(result.output.split())
    # a JSONL file none of whose lines parses: its first bad line
    bad_jsonl = tmp_path / "rows.jsonl"
    bad_jsonl.write_text("\n" + '{"model": "m", "task": \n' + "{oops}\n")
    result = _cli(bad_jsonl, "--out", tmp_path / "b")
    assert result.exit_code == 2 and f"{bad_jsonl}:2: not valid JSON" in " ".join(result.output.split())
    # a CSV whose header is not UTF-8: its line and the offending byte
    bad_csv = tmp_path / "rows.csv"
    bad_csv.write_bytes(b"model,task,\xff\xfemethod\n")
    result = _cli(bad_csv, "--out", tmp_path / "c")
    flat = " ".join(result.output.split())
    assert result.exit_code == 2 and f"{bad_csv}:1: not UTF-8 text: byte 0xff at offset 11" in flat


# ---------------------------------------------------------------------------
# a long file without top-k runs, and says on the console, in results.json and in the report what it skipped
# ---------------------------------------------------------------------------


def test_long_file_without_topk_says_what_was_not_analysed(tmp_path, monkeypatch):
    import hyptest.workflows.reanalyse as module

    original = module.reanalyse
    monkeypatch.setattr(module, "reanalyse", lambda *a, **k: original(*a, **{**k, "study_overrides": OVERRIDES}))
    path = write_jsonl(tmp_path / "notopk.jsonl", synthetic_rows(topk=False))
    result = _cli(path, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    console = " ".join(result.output.split())
    for name in ("Token Overlap", "Overlap Cosine"):
        assert f"not analysed: {name}: 48 of 48 rows have no top-k lists (topk_ids, topk_probs)" in console
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [s["analysis"] for s in results["skipped_analyses"]] == ["token_overlap", "overlap_cosine"]
    assert "skipped for every comparison" in results["skipped_analyses"][0]["reason"]
    assert sum("not analysed" in n for n in results["import"]["notes"]) == 2
    assert results["provenance"]["warnings"][1].startswith("not analysed: Token Overlap (token_overlap): 48 of 48")
    analyses = {r["analysis"] for r in results["comparisons"]}
    assert "label_js" in analyses and not analyses & {"token_overlap", "overlap_cosine"}
    html = (tmp_path / "run" / "report.html").read_text()
    callout = html[html.index('id="not-analysed"'):]
    callout = callout[: callout.index("</div>")]
    assert "<strong>Token Overlap</strong>" in callout and "<strong>Overlap Cosine</strong>" in callout
    # with top-k everything is analysed and nothing is said
    out = reanalyse(write_jsonl(tmp_path / "topk.jsonl", synthetic_rows()), out_dir=tmp_path / "ok",
                    study_overrides=OVERRIDES)
    results = json.loads((out / "results.json").read_text())
    assert "skipped_analyses" not in results and {"token_overlap", "overlap_cosine"} <= {
        r["analysis"] for r in results["comparisons"]}
    assert 'id="not-analysed"' not in (out / "report.html").read_text()


# ---------------------------------------------------------------------------
# reports of reanalysis runs: only the sections that apply, a Method text that fits the format, directions
# ---------------------------------------------------------------------------


def _section_ids(html: str) -> list[str]:
    import re

    return re.findall(r'<section id="([a-z-]+)"', html)


def test_reanalysis_reports_show_only_sections_that_apply(tmp_path):
    dai = (reanalyse(FIXTURES / "dai", out_dir=tmp_path / "dai", study_overrides={"analysis": {"n_resamples": 999}})
           / "report.html").read_text()
    pattern = r"(?P<task>[a-z0-9]+)-seed(?P<seed>\d+)-perm(?P<order_id>\d+)-lr(?P<learning_rate>[0-9.e-]+)\.json$"
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"pattern: '{pattern}'\n")
    summaries = (reanalyse(FIXTURES / "summaries", out_dir=tmp_path / "s", mapping=mapping)
                 / "report.html").read_text()
    for html in (dai, summaries):
        ids = _section_ids(html)
        assert "order-sensitivity" not in ids and "accuracy" not in ids and "method" in ids
        assert "No accuracy results" not in html and "No order-sensitivity results" not in html
        assert 'href="#order-sensitivity"' not in html and 'href="#accuracy"' not in html
        method = html[html.index('<section id="method">'):html.index("<h3>References</h3>")]
        # no margin declared: no equivalence test is described, and the order-sensitivity framing is not there
        assert "two one-sided tests" not in method and "Following Shen" not in method
        assert "no equivalence test was run" in method and "no confirmatory family" in method
        assert "Lakens" not in html and "arXiv:2310.08540" not in html
        assert "This run has no confirmatory family" in html
    assert "reanalyse Dai et al." in dai and "examples as the independent units" in dai
    assert "reanalyse run summaries" in summaries and "<em>clusters</em> are the units" in summaries
    assert "reanalyse Dai et al." not in summaries
    # a declared margin brings the equivalence test (and its reference) back
    margin = (reanalyse(FIXTURES / "dai", out_dir=tmp_path / "dm", study_overrides={
        "analysis": {"n_resamples": 999, "margins": {"simam": {"absolute": 0.5}}}}) / "report.html").read_text()
    assert "two one-sided tests" in margin and "Lakens" in margin


def test_long_reanalysis_report_is_a_study_report(tmp_path):
    html = (reanalyse(write_jsonl(tmp_path / "l.jsonl", synthetic_rows()), out_dir=tmp_path / "l",
                      study_overrides=OVERRIDES) / "report.html").read_text()
    ids = _section_ids(html)
    assert "order-sensitivity" in ids and "accuracy" in ids and "Following Shen" in html
    assert "imported from a long-format file" in html


def test_dai_report_says_which_side_of_the_baseline(tmp_path):
    import re

    root = tmp_path / "swapped"
    shutil.copytree(FIXTURES / "dai", root)
    task = root / "ana_rlt" / "en_dense_lm_tiny" / "sst2"
    (task / "zs").rename(task / "tmp")
    (task / "ftzs").rename(task / "zs")
    (task / "tmp").rename(task / "ftzs")
    out = reanalyse(root, out_dir=tmp_path / "run", study_overrides={"analysis": {"n_resamples": 999, "alpha": 0.2}})
    results = json.loads((out / "results.json").read_text())
    simam = [r for r in results["comparisons"] if r["analysis"] == "simam"]
    assert [(r["verdict"], r["direction"], r["supports_similarity"]) for r in simam] == [
        ("different", "less", False)] * 3
    entry = next(e for e in results["layers_different"] if e["analysis"] == "simam")
    assert entry["layers_different"] == [0, 1] and entry["layers_below"] == [0, 1] and entry["layers_above"] == []
    html = (out / "report.html").read_text()
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert "SimAM minus its baseline (ICL vs ZS map (ZSL SimAM)), layer 0" in html
    assert "no evidence of ICL–FT similarity" in text
    assert "SimAM: 2 of 2 layers differ (0, 1): 0 above its baseline (none), 2 below (0, 1)." in text
    assert "differs from its baseline" not in text
    dai_table = re.search(r'<table class="dai">(.*?)</table>', html, re.S).group(1)
    assert dai_table.count('data-supports-similarity="false"') == 1  # the SimAM layer mean, below
    assert "below its baseline" in dai_table
    # triangles mark the layers above their baseline: none here (SimAM is below, SimAOU and Kendall not significant)
    section = html[html.index('<section id="dai">'):]
    section = section[: section.index("</section>")]
    assert 'data-panel="SimAM"' in section and 'class="marked"' not in section


# ---------------------------------------------------------------------------
# unit files written in the background while the analysis runs
# ---------------------------------------------------------------------------


def test_results_are_written_only_after_every_unit_file(tmp_path, monkeypatch):
    """Slow unit writes: every unit file is in place before results.json (the mark of a finished run)."""
    import threading
    import time

    path = write_jsonl(tmp_path / "log.jsonl", synthetic_rows(steps=(1, 2)))
    written: list[str] = []
    original = RunDir.write_bytes

    def slow(self, name, data):
        if name.startswith("units/"):
            time.sleep(0.05)
        written.append(name)
        return original(self, name, data)

    monkeypatch.setattr(RunDir, "write_bytes", slow)
    out = reanalyse(path, out_dir=tmp_path / "out", study_overrides=OVERRIDES)
    manifest = json.loads((out / "manifest.json").read_text())
    keys = {u["key"] for u in manifest["units"] + manifest["trajectory_units"]}
    assert {n[len("units/"):-len(".parquet")] for n in written if n.startswith("units/")} == keys
    first_result = written.index("results.json")
    assert all(written.index(f"units/{k}.parquet") < first_result for k in keys)
    assert not [t for t in threading.enumerate() if t.name.startswith("hyptest-units")]


def test_a_failed_unit_write_or_analysis_leaves_no_finished_run(tmp_path, monkeypatch):
    """A unit that cannot be written stops the run before results.json; a failed analysis stops the writes."""
    import threading

    from hyptest.store import StoreError
    from hyptest.workflows import study as study_module

    path = write_jsonl(tmp_path / "log.jsonl", synthetic_rows(steps=(1, 2)))
    original = RunDir.write_bytes
    calls = {"units": 0}

    def fail_third_unit(self, name, data):
        if name.startswith("units/"):
            calls["units"] += 1
            if calls["units"] == 3:
                raise StoreError(f"cannot write {name}: No space left on device")
        return original(self, name, data)

    with monkeypatch.context() as m:
        m.setattr(RunDir, "write_bytes", fail_third_unit)
        with pytest.raises(StoreError, match="No space left"):
            reanalyse(path, out_dir=tmp_path / "full", study_overrides=OVERRIDES)
    assert not (tmp_path / "full" / "results.json").exists() and not (tmp_path / "full" / "report.html").exists()

    def broken(*args, **kwargs):
        raise RuntimeError("analysis failed")

    monkeypatch.setattr(study_module, "run_analyses", broken)
    with pytest.raises(RuntimeError, match="analysis failed"):
        reanalyse(path, out_dir=tmp_path / "broken", study_overrides=OVERRIDES)
    assert not (tmp_path / "broken" / "results.json").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("hyptest-units")]  # no write goes on
    assert not [p for p in (tmp_path / "broken" / "units").iterdir() if p.name.startswith(".")]  # no partial file


def test_a_reanalysis_does_not_import_torch(tmp_path):
    """No model runs in a reanalysis: provenance names the CPU without importing torch (a second)."""
    import os
    import subprocess
    import sys

    path = write_jsonl(tmp_path / "log.jsonl", synthetic_rows())
    code = ("import json, sys\n"
            "from hyptest.workflows.reanalyse import reanalyse\n"
            "reanalyse(sys.argv[1], out_dir=sys.argv[2], study_overrides=json.loads(sys.argv[3]))\n"
            "print('torch' in sys.modules)\n")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "out"), json.dumps(OVERRIDES)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    provenance = json.loads((tmp_path / "out" / "results.json").read_text())["provenance"]
    assert provenance["device"] == f"cpu ({os.cpu_count()} cores)"
