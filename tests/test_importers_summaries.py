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
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyptest.importers import ImportProblems, baseline_pairs, detect_format, read_run_summaries
from hyptest.workflows.reanalyse import analyse_summaries
from hyptest.workflows.reanalyse import test_summaries as summaries_test  # not collected: it is not a test

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


# ---------------------------------------------------------------------------
# Deutch et al.'s 36 real run summaries (tests/fixtures/deutch_summaries/README.md): settings from the names,
# units stated / inferred / checked, every list tested or listed, weak baselines, group_by
# ---------------------------------------------------------------------------

DEUTCH = Path(__file__).parent / "fixtures" / "deutch_summaries"
DEUTCH_NAME = re.compile(r"^(?P<task>[a-z0-9]+)_per_layer_(?P<per_layer>\d)_k_32_seed_(?P<seed>\d+)_perm_(?P<perm>\d)_"
                         r"lr_(?P<lr>[0-9.]+)_bsz_1_clip_norm_0\.json$")


def deutch_runs(tasks=None) -> list[dict]:
    """The runs, read the way an outsider would: json.load and a hand-written regex per file name."""
    runs = []
    for path in sorted((DEUTCH / "en_dense_lm_1_3b").glob("*.json")):
        m = DEUTCH_NAME.match(path.name)
        assert m is not None, path.name
        if tasks is not None and m["task"] not in tasks:
            continue
        runs.append({"path": path, "task": m["task"], "seed": int(m["seed"]), "per_layer": int(m["per_layer"]),
                     **json.loads(path.read_text())})
    return runs


def unit_means(runs: list[dict], f) -> dict[tuple[str, int], float]:
    """Mean of f(run) over the runs of each (task, seed), with plain dicts."""
    sums: dict[tuple[str, int], list[float]] = {}
    for run in runs:
        sums.setdefault((run["task"], run["seed"]), []).append(f(run))
    return {k: sum(v) / len(v) for k, v in sorted(sums.items())}


def enumerate_p(d: np.ndarray) -> float:
    """Two-sided exact sign-flip p-value of the mean, all 2**n sign vectors (n <= 14)."""
    signs = np.array(list(itertools.product([1, -1], repeat=len(d))))
    return float(np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-12))


@pytest.fixture(scope="module")
def deutch():
    return read_run_summaries(DEUTCH)


def test_settings_from_three_naming_styles():
    from hyptest.importers.names import counter_template, name_settings

    # the three styles the files were committed under (see the fixture's README)
    head = ["agnews_per_layer_0_k_32_seed_3_perm_0_lr_0.2_bsz_1_clip_norm_0",
            "sst5_per_layer_1_k_32_seed_7_perm_2_lr_0.00016_bsz_1_clip_norm_0"]
    old = ["1_3b_agnews_per_layer_0_num_demonstrations_32_seed_3_perm_id_0_lr_0.2_bsz_1_clip_norm_0",
           "1_3b_sst5_per_layer_1_num_demonstrations_32_seed_7_perm_id_2_lr_0.00016_bsz_1_clip_norm_0"]
    expected = {"task": "sst5", "per_layer": 1, "k": 32, "seed": 7, "perm": 2, "lr": 0.00016, "bsz": 1,
                "clip_norm": 0}
    assert name_settings(head).settings[1] == expected
    got = name_settings(old)
    assert got.settings[1] == {**{k: v for k, v in expected.items() if k not in ("k", "perm")},
                               "num_demonstrations": 32, "perm_id": 2}
    assert "read as the setting `task`" in got.notes[0] and "agnews, sst5" in got.notes[0]
    # glued fragments and other separators; "sst2" stays a word (not sst = 2), "1e-3" a number
    glued = name_settings(["sst2-seed3.perm1-lr0.001", "cb-seed4.perm0-lr1e-3"]).settings
    assert glued == [{"task": "sst2", "seed": 3, "perm": 1, "lr": 0.001}, {"task": "cb", "seed": 4, "perm": 0,
                                                                          "lr": 0.001}]
    assert name_settings(["x_run7"]).settings == [{"run": 7}]
    assert counter_template(["results_1", "results_2", "results_12"]) == "results_#"
    assert counter_template(head) is None and counter_template(["a_1_2", "a_2_3"]) is None


def test_deutch_settings_units_and_checks(deutch):
    assert deutch.n_runs_read == 36 and deutch.problems == [] and deutch.settings_source == "names"
    assert deutch.settings == ["task", "per_layer", "k", "seed", "perm", "lr", "bsz", "clip_norm"]
    runs = deutch_runs()
    got = deutch.table.groupby("file")[["task", "seed", "per_layer"]].first()
    for run in runs:
        assert tuple(got.loc[str(run["path"])]) == (run["task"], run["seed"], run["per_layer"])
    # ICL-FTZS SimAM has no baseline list: not tested, and why
    assert list(deutch.untested) == ["ICL-FTZS SimAM"] and "no baseline list" in deutch.untested["ICL-FTZS SimAM"]
    from hyptest.analysis.summary_units import plan_units

    default = plan_units(deutch.table)
    assert (default.n_runs, default.n_units, default.cluster_by, default.stated) == (36, 18, ("task", "seed"), False)
    assert "per_layer partner, in all 18 sets" in default.checks[0] and "already in one unit" in default.checks[0]
    # stated too finely, or every run its own unit: the shared passes merge the per_layer partners anyway
    for stated in (["task", "seed", "per_layer"], ["run"], []):
        plan = plan_units(deutch.table, cluster_by=stated)
        assert plan.n_units == 18 and plan.merged_by == ["per_layer"], stated
        assert "merged into one unit each" in plan.checks[0]
        units = {}
        for run, label in plan.unit.items():
            row = deutch.table[deutch.table["run"] == run].iloc[0]
            units.setdefault(label, set()).add((row["task"], row["seed"]))
        assert all(len(v) == 1 for v in units.values())  # each unit is one (task, seed)
    with pytest.raises(ValueError, match="`cluster_by`: 'lr_x' is not a setting"):
        plan_units(deutch.table, cluster_by=["lr_x"])


def test_deutch_pooled_row_recomputed_by_hand(deutch):
    table = summaries_test(deutch, n_resamples=999, rng=0)
    pooled = table[(table["analysis"] == "SimAOU") & table["layer"].isna()].iloc[0]
    runs = deutch_runs()
    diff = unit_means(runs, lambda r: np.mean(r["SimAOU"]) - np.mean(r["Random SimAOU"]))
    metric = unit_means(runs, lambda r: np.mean(r["SimAOU"]))
    assert pooled["n"] == 18 and pooled["n_runs"] == 36
    assert pooled["estimate"] == pytest.approx(np.mean(list(diff.values())), rel=1e-12)
    assert pooled["mean_a"] == pytest.approx(np.mean(list(metric.values())), rel=1e-12)
    # 2**18 sign vectors > 999: the paired bootstrap over the 18 units; every unit is above its baseline
    assert "paired bootstrap" in pooled["test"] and min(diff.values()) > 0 and pooled["verdict"] == "different"


def test_deutch_exact_tests_match_enumeration_and_scipy(deutch):
    from scipy.stats import permutation_test
    from statsmodels.stats.multitest import multipletests

    tasks = ("cb", "mr", "sst2", "subj")  # 12 units: 2**12 = 4096 sign vectors, enumerable
    sub = deutch.table[deutch.table["task"].isin(tasks)]
    res = analyse_summaries(sub, n_resamples=5000, rng=0)
    table = res.comparisons
    runs = deutch_runs(tasks)
    assert set(table["n"]) == {12} and table["test"].str.contains("exact sign-flip").all()
    for layer in (0, 1, 11, 23):
        d = np.array(list(unit_means(runs, lambda r, i=layer: r["SimAOU"][i] - r["Random SimAOU"][i]).values()))
        row = table[(table["analysis"] == "SimAOU") & (table["layer"] == layer)].iloc[0]
        assert row["estimate"] == pytest.approx(d.mean(), rel=1e-12)
        assert row["p_value"] == pytest.approx(enumerate_p(d), rel=1e-9)
    # the weak baseline's stronger comparison: each layer minus the unit's mean over its 24 layers
    assert res.baselines[0]["weak"] and res.baselines[0]["stronger"].startswith("layer permutation")
    perm = table[table["analysis"] == "layer permutation: SimAOU"].sort_values("layer")
    assert len(perm) == 24 and perm["family"].nunique() == 1 and set(perm["family_size"]) == {24}
    for layer in (2, 5, 21):
        d = np.array(list(unit_means(runs, lambda r, i=layer: r["SimAOU"][i] - np.mean(r["SimAOU"])).values()))
        row = perm[perm["layer"] == layer].iloc[0]
        assert row["estimate"] == pytest.approx(d.mean(), rel=1e-12)
        ref = permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                               alternative="two-sided")
        assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert row["p_value"] == pytest.approx(enumerate_p(d), rel=1e-9)
    np.testing.assert_allclose(perm["p_adjusted"], multipletests(perm["p_value"], method="holm")[1], rtol=1e-12)


def test_baseline_strength_closed_form(deutch):
    from hyptest.metrics.summaries import baseline_strength

    out = baseline_strength([0.2, 0.4, 0.3, 0.5], [0.01, 0.01, 0.012, 0.008])
    assert out["metric_sd"] == pytest.approx(np.std([0.2, 0.4, 0.3, 0.5], ddof=1))
    assert out["spread_ratio"] == pytest.approx(np.std([0.01, 0.01, 0.012, 0.008], ddof=1) / out["metric_sd"])
    assert out["floor_ratio"] == pytest.approx(0.01 / 0.35) and out["weak"] and len(out["reasons"]) == 2
    strong = baseline_strength([0.2, 0.4, 0.3, 0.5], [0.1, 0.3, 0.15, 0.35])
    assert not strong["weak"] and strong["reasons"] == []
    # Deutch's random SimAOU, per unit: mean ~0.002, SD ~1% of SimAOU's
    res = analyse_summaries(deutch, n_resamples=999, rng=0)
    (b,) = res.baselines
    runs = deutch_runs()
    base = np.array(list(unit_means(runs, lambda r: np.mean(r["Random SimAOU"])).values()))
    metric = np.array(list(unit_means(runs, lambda r: np.mean(r["SimAOU"])).values()))
    assert b["baseline_mean"] == pytest.approx(base.mean()) and b["baseline_sd"] == pytest.approx(base.std(ddof=1))
    assert b["spread_ratio"] == pytest.approx(base.std(ddof=1) / metric.std(ddof=1))
    assert b["weak"] and "nearly constant" in b["reasons"][0] and "testing against 0" in b["reasons"][1]
    assert 0.001 < base.mean() < 0.003 and b["spread_ratio"] < 0.05


def test_pairs_with_a_constant_or_another_list(deutch):
    const = read_run_summaries(DEUTCH, pairs={"ICL-FTZS SimAM": 0})
    assert const.untested == {}
    res = analyse_summaries(const, n_resamples=999, rng=0)
    rows = res.comparisons[res.comparisons["analysis"] == "ICL-FTZS SimAM"]
    assert set(rows["baseline_name"]) == {"constant 0"} and (rows["baseline"] == 0).all()
    pooled = rows[rows["layer"].isna()].iloc[0]
    simam = unit_means(deutch_runs(), lambda r: np.mean(r["ICL-FTZS SimAM"]))
    assert pooled["estimate"] == pytest.approx(np.mean(list(simam.values())), rel=1e-12)
    # a declared constant is the user's choice: not assessed as weak
    assert [b["declared_constant"] for b in res.baselines] == [False, True] and not res.baselines[1]["weak"]
    # against another list: SimAM minus SimAOU, layer by layer
    other = read_run_summaries(DEUTCH, pairs={"ICL-FTZS SimAM": "SimAOU"})
    t = summaries_test(other, n_resamples=999, rng=0)
    row = t[(t["analysis"] == "ICL-FTZS SimAM") & (t["layer"] == 4)].iloc[0]
    d = unit_means(deutch_runs(), lambda r: r["ICL-FTZS SimAM"][4] - r["SimAOU"][4])
    assert row["baseline_name"] == "SimAOU" and row["estimate"] == pytest.approx(np.mean(list(d.values())))


def test_identical_lists_merge_and_counter_names_warn(tmp_path):
    from hyptest.analysis.summary_units import plan_units

    gen = np.random.default_rng(5)
    shared = [gen.normal(0.0, 0.01, 6).tolist() for _ in range(3)]  # 3 pairs of runs share a baseline pass
    for i in range(6):
        _write(tmp_path / f"run_{i + 1}.json", {"SimAOU": gen.normal(0.3, 0.1, 6).tolist(),
                                               "Random SimAOU": shared[i // 2]})
    read = read_run_summaries(tmp_path)
    plan = plan_units(read.table)
    assert plan.n_units == 3 and plan.merged_by == ["identical Random SimAOU"] and plan.warnings == []
    assert plan.checks[0].startswith("3 pair(s) of runs in different units have identical 'Random SimAOU'")
    # rounded or short lists can coincide by chance: they do not merge
    for i in range(6):
        _write(tmp_path / f"run_{i + 1}.json", {"SimAOU": [0.1 * i, 0.2, 0.3, 0.4, 0.5],
                                               "Random SimAOU": [0.01, 0.02, 0.0, 0.01, 0.03]})
    plan = plan_units(read_run_summaries(tmp_path).table)
    assert plan.n_units == 6 and plan.merged_by == []
    # every run its own unit and the names differ only by a counter: said loudly
    assert len(plan.warnings) == 1 and plan.warnings[0].startswith("EVERY RUN IS ITS OWN UNIT (6 runs)")
    assert "'run_#'" in plan.warnings[0]


def test_group_by_keeps_groups_apart_in_layers_different(deutch):
    from hyptest.workflows.reanalyse import layers_different

    table = summaries_test(deutch, group_by=["per_layer"], cluster_by=["task", "seed"], n_resamples=999, rng=0)
    entries = layers_different(table, group_by=["per_layer"])
    assert [(e["per_layer"], e["analysis"], e["n_layers"]) for e in entries] == [(0, "SimAOU", 24), (1, "SimAOU", 24)]
    for e in entries:
        rows = table[(table["per_layer"] == e["per_layer"]) & table["layer"].notna()]
        assert e["layers_different"] == sorted(int(x) for x in rows.loc[rows["verdict"] == "different", "layer"])
        assert len(set(e["layers_different"])) == len(e["layers_different"])  # no layer twice
    assert set(table["n"]) == {18}  # 18 (task, seed) units within each per_layer group


def test_group_by_in_the_run_directory_and_report(tmp_path):
    import re as _re

    from hyptest.workflows.reanalyse import reanalyse

    out = reanalyse(DEUTCH, out_dir=tmp_path / "g", mapping={"group_by": ["per_layer"]},
                    study_overrides={"analysis": {"n_resamples": 999}})
    results = json.loads((out / "results.json").read_text())
    entries = [(e["per_layer"], e["analysis"], e["n_layers"]) for e in results["layers_different"]]
    assert sorted(entries) == [(0, "SimAOU", 24), (0, "layer permutation: SimAOU", 24), (1, "SimAOU", 24),
                               (1, "layer permutation: SimAOU", 24)]
    html = (out / "report.html").read_text()
    counts = _re.findall(r"(\d+) of (\d+) layers differ", html)
    assert counts and all(int(n) == 24 for _, n in counts)  # never 48: the groups' layers are not merged
    assert "per_layer = 0" in html and "per_layer = 1" in html


def test_near_identity_needs_shared_passes_not_just_a_shared_task(tmp_path):
    from hyptest.analysis.summary_units import plan_units

    gen = np.random.default_rng(11)
    # 6 tasks x 2 learning rates, every run independent: lr partners resemble each other no more than others
    for t in range(6):
        for lr in ("0.1", "0.01"):
            _write(tmp_path / f"task{t}_lr_{lr}.json", {"SimAOU": gen.normal(0.3, 0.1, 8).tolist(),
                                                       "Random SimAOU": gen.normal(0.0, 0.01, 8).tolist()})
    plan = plan_units(read_run_summaries(tmp_path).table, cluster_by=["run"])
    assert plan.n_units == 12 and plan.merged_by == [] and plan.checks == []
    # the same task under two seeds: nearly the same lists (a strong task effect), yet no shared pass: seeds are
    # the declared replication, exempt from the near-identity rule
    for path in tmp_path.glob("*.json"):
        path.unlink()
    for t in range(6):
        level = gen.normal(0.0, 0.5, 8)
        for seed in (1, 2):
            _write(tmp_path / f"t{t}_seed_{seed}.json", {"SimAOU": (level + gen.normal(0, 0.001, 8)).tolist(),
                                                        "Random SimAOU": gen.normal(0.0, 0.01, 8).tolist()})
    plan = plan_units(read_run_summaries(tmp_path).table, cluster_by=["run"])
    assert plan.n_units == 12 and plan.merged_by == []
    # renamed to a setting that is not a replication one, the same data are merged: the rule is what decides
    for t in range(6):
        for seed in (1, 2):
            (tmp_path / f"t{t}_seed_{seed}.json").rename(tmp_path / f"t{t}_variant_{seed}.json")
    plan = plan_units(read_run_summaries(tmp_path).table, cluster_by=["run"])
    assert plan.n_units == 6 and plan.merged_by == ["variant"]


def test_mapping_pairs_cluster_by_and_bad_input(tmp_path):
    from typer.testing import CliRunner

    from hyptest.cli import app
    from hyptest.importers import load_mapping, mapping_from_options

    good = tmp_path / "m.yaml"
    good.write_text("pairs: {ICL-FTZS SimAM: 0, SimAM: ZSL SimAM}\ncluster_by: [task, seed]\ngroup_by: [model]\n")
    m = load_mapping(good)
    assert m.pairs == {"ICL-FTZS SimAM": 0.0, "SimAM": "ZSL SimAM"} and m.cluster_by == ("task", "seed")
    assert mapping_from_options(good, cluster_by=["task", "seed,lr"]).cluster_by == ("task", "seed", "lr")
    bad = tmp_path / "b.yaml"
    bad.write_text("pairs: {SimAM: true}\n")
    with pytest.raises(ValueError, match=r"b.yaml: `pairs.SimAM` must name a baseline list or be a number"):
        load_mapping(bad)
    result = CliRunner().invoke(app, ["reanalyse", str(DEUTCH), "--out", str(tmp_path / "o"), "--cluster-by", ","])
    assert result.exit_code == 2 and "--cluster-by" in result.output
    result = CliRunner().invoke(app, ["reanalyse", str(DEUTCH), "--out", str(tmp_path / "o"), "--pattern", "(?P<x"])
    assert result.exit_code == 2 and "not a valid regular expression" in " ".join(result.output.split())
    # a counter-named folder: the loud warning reaches the console and results.json
    gen = np.random.default_rng(2)
    runs = tmp_path / "runs"
    runs.mkdir()
    for i in range(5):
        _write(runs / f"out_{i}.json", {"SimAOU": gen.normal(0.3, 0.1, 4).tolist(),
                                       "Random SimAOU": gen.normal(0, 0.01, 4).tolist()})
    result = CliRunner().invoke(app, ["reanalyse", str(runs), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0 and "WARNING: EVERY RUN IS ITS OWN UNIT (5 runs)" in " ".join(result.output.split())
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["units"]["n_units"] == 5 and results["units"]["warnings"][0].startswith("EVERY RUN")
