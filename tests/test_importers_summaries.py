"""Run-level summaries: reading settings, pairing baselines, clustered tests per layer.

Fixture ``tests/fixtures/summaries/<task>-seed<s>-perm<p>-lr0.001.json``: tasks sst2 and subj, seeds
0-4, permutation 0, plus sst2 seed 0 permutation 1: 11 runs in 10 (task, seed) clusters.  With
k = 0..9 the cluster index (sst2 seed s -> s, subj seed s -> 5 + s), each run holds 3 layers:

    SimAOU        [0.30 + 0.01 k, 0.10, 0.60]     (sst2 seed 0 perm 1: [0.40, 0.10, 0.60])
    Random SimAOU [0.00, 0.10 + 0.05 (k even) or - 0.05 (k odd), 0.10 + 0.01 k]
    SimAM         [0.50, 0.50, 0.45 + 0.01 k]
    ZSL SimAM     [0.40, 0.52 (k < 5) or 0.48 (k >= 5), 0.50]
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyptest.importers import ImportProblems, baseline_pairs, detect_format, read_run_summaries
from hyptest.reanalyse import test_summaries as summaries_test  # not collected: it is not a test

FIXTURE = Path(__file__).parent / "fixtures" / "summaries"
PATTERN = r"(?P<task>[a-z0-9]+)-seed(?P<seed>\d+)-perm(?P<order_id>\d+)-lr(?P<learning_rate>[0-9.e-]+)\.json$"
SIGNS = np.array(list(itertools.product([1, -1], repeat=10)))  # the 1024 sign vectors of 10 clusters


def exact_p(diff: np.ndarray) -> float:
    """Two-sided exact sign-flip p-value of the mean, by enumeration."""
    return float(np.mean(np.abs(SIGNS @ diff / len(diff)) >= abs(diff.mean()) - 1e-12))


@pytest.fixture(scope="module")
def summaries():
    return read_run_summaries(FIXTURE, pattern=PATTERN)


@pytest.fixture(scope="module")
def table(summaries):
    return summaries_test(summaries, n_resamples=4999, rng=2)


def test_read_settings_and_pairs(summaries):
    assert summaries.n_runs_read == 11 and summaries.n_runs_skipped == 0 and summaries.problems == []
    assert summaries.settings == ["task", "seed", "order_id", "learning_rate", "model"]
    t = summaries.table
    assert len(t) == 11 * 2 * 3  # runs x metrics x layers
    assert t["seed"].map(type).eq(int).all() and (t["learning_rate"] == 0.001).all()
    assert set(t["model"]) == {"gpt-tiny"}
    assert set(zip(t["metric"], t["baseline_name"])) == {("SimAOU", "Random SimAOU"), ("SimAM", "ZSL SimAM")}
    perm1 = t[(t["task"] == "sst2") & (t["seed"] == 0) & (t["order_id"] == 1) & (t["metric"] == "SimAOU")]
    assert perm1.sort_values("layer")["value"].tolist() == [0.4, 0.1, 0.6]
    assert detect_format(FIXTURE) == "summaries"
    assert detect_format(FIXTURE / "subj-seed4-perm0-lr0.001.json") == "summaries"


def test_baseline_pairs_by_name():
    keys = ["SimAOU", "Random SimAOU", "SimAM", "ZSL SimAM", "token-level kendall", "token-level random_kendall",
            "recall_topk", "random_recall_topk", "acc", "acc_baseline", "orphan"]
    assert baseline_pairs(keys) == {"SimAOU": "Random SimAOU", "SimAM": "ZSL SimAM",
                                    "token-level kendall": "token-level random_kendall",
                                    "recall_topk": "random_recall_topk", "acc": "acc_baseline"}


def test_cluster_means_estimates_and_pvalues(table):
    # default clusters: (task, seed), 10 of them; sst2 seed 0's two runs are averaged first
    assert set(table["n"]) == {10} and set(table["n_runs"]) == {11}
    row = table.set_index(["analysis", table["layer"].map(lambda x: "pooled" if x is None else x)])
    k = np.arange(10)
    aou0 = 0.30 + 0.01 * k
    aou0[0] = (0.30 + 0.40) / 2  # cluster 0 = mean of its two runs
    # SimAOU layer 0: mean of (0.35, 0.31, ..., 0.34, 0.35, ..., 0.39) = 3.5 / 10; baseline 0
    assert row.loc[("SimAOU", 0), "mean_a"] == pytest.approx(0.35)
    assert row.loc[("SimAOU", 0), "estimate"] == pytest.approx(0.35)  # metric - baseline
    assert row.loc[("SimAOU", 0), "baseline"] == pytest.approx(0.0)
    # every difference > 0: only the all-plus and all-minus sign vectors reach it: p = 2 / 1024
    assert row.loc[("SimAOU", 0), "p_value"] == pytest.approx(2 / 1024)
    assert exact_p(aou0) == pytest.approx(2 / 1024)
    # layer 1: differences -0.05 (k even), +0.05 (k odd): mean 0, every sign vector is as extreme: p = 1
    assert row.loc[("SimAOU", 1), "p_value"] == pytest.approx(1.0)
    # layer 2: 0.60 - (0.10 + 0.01 k) > 0 -> 2 / 1024; estimate 0.6, baseline 0.1 + 0.045
    assert row.loc[("SimAOU", 2), "p_value"] == pytest.approx(2 / 1024)
    assert row.loc[("SimAOU", 2), "baseline"] == pytest.approx(0.145)
    # SimAM layer 0: 0.5 - 0.4 = 0.1 everywhere -> 2 / 1024; layer 1: -0.02 (k < 5), +0.02 -> p = 1
    assert row.loc[("SimAM", 0), "p_value"] == pytest.approx(2 / 1024)
    assert row.loc[("SimAM", 1), "p_value"] == pytest.approx(1.0)
    # layer 2: differences -0.05 + 0.01 k, mixed signs: enumerate
    sam2 = -0.05 + 0.01 * k
    assert row.loc[("SimAM", 2), "p_value"] == pytest.approx(exact_p(sam2))
    assert row.loc[("SimAM", 2), "mean_a"] == pytest.approx(0.495)
    assert row.loc[("SimAM", 2), "estimate"] == pytest.approx(sam2.mean())
    # 1024 sign vectors <= 4999 resamples: every row is the exact test, no Monte-Carlo draws
    assert table["test"].str.contains("exact sign-flip").all() and table["n_resamples"].isna().all()


def test_pooled_rows_recomputed_with_pandas(summaries, table):
    t = summaries.table
    for metric in ("SimAOU", "SimAM"):
        sub = t[t["metric"] == metric]
        per_run = sub.groupby(["run", "task", "seed"])[["value", "baseline"]].mean()
        clusters = per_run.groupby(["task", "seed"]).mean()
        diff = (clusters["value"] - clusters["baseline"]).to_numpy()
        row = table[(table["analysis"] == metric) & table["layer"].isna()].iloc[0]
        assert row["mean_a"] == pytest.approx(clusters["value"].mean())
        assert row["estimate"] == pytest.approx(diff.mean())
        assert row["p_value"] == pytest.approx(exact_p(diff))


def test_holm_within_each_metric_and_layers_that_differ(table):
    from statsmodels.stats.multitest import multipletests

    assert len(table) == 8  # 2 metrics x (3 layers + pooled)
    for metric, rows in table.groupby("analysis"):
        # one family per metric (its layers and the pooled row), adjusted on its own; none is confirmatory
        assert set(rows["family"]) == {metric} and set(rows["family_size"]) == {4}
        assert set(rows["role"]) == {"exploratory"}
        np.testing.assert_allclose(rows["p_adjusted"], multipletests(rows["p_value"], method="holm")[1],
                                   rtol=1e-12)
    # 2/1024 x 4 = 0.0078 < 0.05: SimAOU layers 0 and 2 and SimAM layer 0 differ from their baselines
    different = table[(table["verdict"] == "different") & table["layer"].notna()]
    assert sorted(zip(different["analysis"], different["layer"])) == [("SimAM", 0), ("SimAOU", 0), ("SimAOU", 2)]
    # no declared margin: never "equivalent"; the rest is inconclusive
    assert set(table["verdict"]) == {"different", "inconclusive"}
    assert (table["verdict"] == np.where(table["p_adjusted"] <= 0.05, "different", "inconclusive")).all()
    assert table["model"].eq("gpt-tiny").all() and table["task"].isna().all()
    # each interval is at the level its verdict used (alpha * p / p_adjusted) and excludes 0 exactly when
    # the row is "different"
    np.testing.assert_allclose(table["ci_level"], 1 - 0.05 * table["p_value"] / table["p_adjusted"], rtol=1e-12)
    excludes = (table["ci_low"] > 0) | (table["ci_high"] < 0)
    assert (excludes == (table["verdict"] == "different")).all()


def test_cluster_and_group_options(summaries):
    runs = summaries_test(summaries, cluster_by=[], n_resamples=999, rng=0)
    assert set(runs["n"]) == {11}  # every run its own cluster
    # 2**11 sign vectors > 999 resamples: the paired bootstrap over the 11 runs
    assert runs["test"].str.contains("paired bootstrap").all() and (runs["n_resamples"] >= 999).all()
    by_task = summaries_test(summaries, group_by=["task"], n_resamples=999, rng=0)
    assert set(by_task["task"]) == {"sst2", "subj"}
    assert set(by_task["n"]) == {5}  # clusters by seed within each task
    with pytest.raises(ValueError, match="`cluster_by`: 'nope' is not a setting"):
        summaries_test(summaries, cluster_by=["nope"])


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_bad_runs_are_problems(tmp_path):
    good = {"SimAOU": [0.3, 0.4], "Random SimAOU": [0.0, 0.1]}
    _write(tmp_path / "a-seed0.json", good)
    _write(tmp_path / "a-seed1.json", {"SimAOU": [0.3, None], "Random SimAOU": [0.0, 0.1]})
    _write(tmp_path / "a-seed2.json", {"SimAOU": [0.3], "Random SimAOU": [0.0, 0.1]})
    _write(tmp_path / "a-seed3.json", {"SimAOU": [0.3, 0.1], "Random SimAOU": [0.0, 0.1], "seed": 7})
    _write(tmp_path / "other.json", good)  # the name does not match the pattern
    (tmp_path / "b.jsonl").write_text(json.dumps(good) + "\n{not json\n\n" + json.dumps({"x": [1]}) + "\n")
    pattern = r"(?P<task>\w)-seed(?P<seed>\d+)"
    with pytest.raises(ImportProblems) as info:
        read_run_summaries(tmp_path, pattern=pattern)
    assert "a-seed1.json: 'SimAOU' at layer 1 is None" in str(info.value)
    res = read_run_summaries(tmp_path, pattern=pattern, strict=False)
    assert res.n_runs_read == 8 and res.n_runs_skipped == 7  # only a-seed0.json is good
    messages = [str(p) for p in res.problems]
    assert any("a-seed2.json: 'SimAOU' has 1 layers but 'Random SimAOU' has 2" in m for m in messages)
    assert any("a-seed3.json: setting 'seed' is 7 in the run but 3" in m for m in messages)
    assert any("other.json: the file name does not match" in m for m in messages)
    assert any(m.startswith(f"{tmp_path / 'b.jsonl'}:1: the file name") for m in messages)
    assert any(f"{tmp_path / 'b.jsonl'}:2: malformed JSON" in m for m in messages)
    assert any(f"{tmp_path / 'b.jsonl'}:4:" in m and "no per-layer metric" in m for m in messages)
    assert res.table["run"].unique().tolist() == [0] and len(res.table) == 2
    assert res.table["file"].iloc[0].endswith("a-seed0.json") and res.table["seed"].iloc[0] == 0


def test_unknown_format_message_names_what_was_looked_for(tmp_path):
    path = _write(tmp_path / "x.json", {"a": 1})
    with pytest.raises(ValueError, match="per-layer lists and baselines; looked for: .*dai.*long.*summaries"):
        detect_format(path)
    csv = tmp_path / "y.csv"
    csv.write_text("model,task\nm,t\n")
    with pytest.raises(ValueError, match="missing column 'method'"):
        detect_format(csv)
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "z.parquet")
    with pytest.raises(ValueError, match="not in the long format"):
        detect_format(tmp_path / "z.parquet")
