"""Dai et al.'s logs: the importer and the metrics on a hand-built fixture.

Fixture ``tests/fixtures/dai/ana_rlt/en_dense_lm_tiny/sst2/{zs,ftzs,ft,icl}/record_info.jsonl``:
6 examples, 2 layers, hidden size 4, 2 heads, 5 positions.  Notation: e1..e4 unit vectors of R^4;
a = (1,0,0,0,0), b = (0,1,0,0,0), c = (1,1,0,0,0), d = (1,1,1,1,0), e5 = (0,0,0,0,1).

self_attn_out_hiddens            layer 0                         layer 1
  zs   (all examples)            2 e1                            5 e4
  icl  ex0..ex5                  3e2, 2e2, e2, e2, e2, e2        e1, e1, e1, e1, e1, e2
  ftzs ex0..ex5                  e2, 3e3, -e2, -e1, e3, e2       e1, e2, e2, -e4, e1, e1

attn_map (heads h0, h1)          layer 0                         layer 1
  zs   (all)                     (b, b)                          (a, e5)
  icl  (all)                     (a, c)                          (d, d)
  ftzs                           even ex: (a, d); odd ex: (b, c) ex0-2: (d, a); ex3-5: (c, c)

correct (gold == pred)           zs: 1 0 0 0 0 1   ftzs: 1 1 1 0 1 0   icl: 1 1 0 0 1 1
The ft folder holds 3 training-pass records (not aligned with the test examples).
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from hyptest.importers import (
    ImportProblems,
    detect_format,
    find_dai_tasks,
    read_dai,
)
from hyptest.workflows.reanalyse import DaiValues, dai_comparisons, dai_metric_values

FIXTURE = Path(__file__).parent / "fixtures" / "dai"
TASK = FIXTURE / "ana_rlt" / "en_dense_lm_tiny" / "sst2"
S = 1 / np.sqrt(2)  # 0.70710678...


@pytest.fixture(scope="module")
def values():
    return dai_metric_values(FIXTURE)


@pytest.fixture(scope="module")
def table(values):
    return dai_comparisons(values, n_resamples=999, rng=5)


def _wide(values, analysis, column="value"):
    sub = values.values[values.values["analysis"] == analysis]
    return sub.pivot(index="example", columns="layer", values=column).sort_index().to_numpy()


def test_find_and_read_the_fixture():
    tasks = find_dai_tasks(FIXTURE)
    assert [(t.model, t.task) for t in tasks] == [("en_dense_lm_tiny", "sst2")]
    # the ana_rlt folder, a model folder and a task folder are found too
    for path in (FIXTURE / "ana_rlt", FIXTURE / "ana_rlt" / "en_dense_lm_tiny", TASK):
        assert [(t.model, t.task) for t in find_dai_tasks(path)] == [("en_dense_lm_tiny", "sst2")]
        assert detect_format(path) == "dai"
    data = read_dai(FIXTURE)
    assert data.n_examples_read == 6 and data.n_examples_skipped == 0 and data.problems == []
    (task,) = data.tasks
    assert task.hidden["zs"].shape == (6, 2, 4)
    assert [m.shape for m in task.attn["icl"]] == [(2, 2, 5)] * 6
    np.testing.assert_array_equal(task.correct["zs"], [1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(task.correct["ft"], [1, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(task.correct["icl"], [1, 1, 0, 0, 1, 1])


def test_simaou_by_hand(values):
    # unit vectors first (3e2 -> e2, 2e1 -> e1, ...), then cos(ICL - ZS, FT - ZS):
    # layer 0, ZS = e1, ICL = e2, update u = (-1, 1, 0, 0):
    #   ex0 FT e2: same update -> 1;  ex1 FT e3: (-1,0,1,0).u = 1, |.|^2 = 2 -> 1/2
    #   ex2 FT -e2: (-1,-1,0,0).u = 0 -> 0;  ex3 FT -e1: (-2,0,0,0).u = 2, 2 * sqrt2 -> 1/sqrt2
    #   ex4 FT e3 -> 1/2;  ex5 FT e2 -> 1
    # layer 1, ZS = e4, ICL = e1 (ex5: e2), u = (1, 0, 0, -1):
    #   ex0 FT e1 -> 1; ex1, ex2 FT e2: (0,1,0,-1).u = 1 -> 1/2; ex3 FT -e4: (0,0,0,-2).u = 2 -> 1/sqrt2
    #   ex4 FT e1 -> 1; ex5 ICL e2, FT e1: (0,1,0,-1).(1,0,0,-1) = 1 -> 1/2
    expected = np.array([[1, 1], [0.5, 0.5], [0, 0.5], [S, S], [0.5, 1], [1, 0.5]])
    np.testing.assert_allclose(_wide(values, "simaou"), expected, atol=1e-12)


def test_simaou_baseline_is_the_documented_random_direction(values):
    # rng=0 -> default_rng(0).spawn(1 task)[0].spawn(2)[0] draws one (2, 4) normal matrix per example
    gen = np.random.default_rng(0).spawn(1)[0].spawn(2)[0]
    icl = [[[0, 1, 0, 0], [1, 0, 0, 0]]] * 5 + [[[0, 1, 0, 0], [0, 1, 0, 0]]]  # unit ICL states
    zs = np.array([[1, 0, 0, 0], [0, 0, 0, 1]], float)
    expected = []
    for ex in range(6):
        u = np.array(icl[ex], float) - zs
        r = gen.standard_normal((2, 4))
        expected.append((u * r).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(r, axis=1)))
    np.testing.assert_allclose(_wide(values, "simaou", "baseline"), expected, rtol=1e-12)


def test_simam_by_hand(values):
    # cos over positions per head, then the mean of the 2 heads
    # layer 0: ICL (a, c); FT even (a, d): (cos(a,a) = 1 + cos(c,d) = 2/(sqrt2*2) = 1/sqrt2) / 2 = 0.853553
    #                       FT odd (b, c): (cos(a,b) = 0 + cos(c,c) = 1) / 2 = 0.5
    # layer 1: ICL (d, d); FT ex0-2 (d, a): (1 + cos(d,a) = 1/2) / 2 = 0.75
    #                       FT ex3-5 (c, c): (cos(d,c) = 2/(2*sqrt2) = 1/sqrt2, twice) / 2 = 0.707107
    hi = (1 + S) / 2
    expected = np.array([[hi, 0.75], [0.5, 0.75], [hi, 0.75], [0.5, S], [hi, S], [0.5, S]])
    np.testing.assert_allclose(_wide(values, "simam"), expected, atol=1e-12)
    # baseline ICL vs ZS: layer 0 (cos(a,b) = 0 + cos(c,b) = 1/sqrt2) / 2; layer 1 (cos(d,a) = 1/2 + cos(d,e5) = 0) / 2
    np.testing.assert_allclose(_wide(values, "simam", "baseline"), np.tile([S / 2, 0.25], (6, 1)), atol=1e-12)


def test_kendall_by_hand_and_against_scipy(values):
    # head means: ICL layer 0 (1, .5, 0, 0, 0), layer 1 d = (1, 1, 1, 1, 0)
    # FT layer 0 even (1, .5, .5, .5, 0): of 10 pairs, 5 concordant, 0 discordant; untied pairs 7 and 7
    #   -> tau_b = 5 / sqrt(7 * 7) = 5/7;  odd (.5, 1, 0, 0, 0): 6 concordant, 1 discordant -> 5/7
    # FT layer 1 ex0-2 (1, .5, .5, .5, 0): 4 concordant (pairs with position 4), untied 4 and 7 -> 4/sqrt(28)
    #            ex3-5 (1, 1, 0, 0, 0): 2 concordant, untied 4 and 6 -> 2/sqrt(24)
    k1, k2 = 4 / np.sqrt(28), 2 / np.sqrt(24)
    expected = np.array([[5 / 7, k1]] * 3 + [[5 / 7, k2]] * 3)
    got = _wide(values, "kendall")
    np.testing.assert_allclose(got, expected, atol=1e-12)
    a, b, c, d = (np.eye(5)[0], np.eye(5)[1], np.eye(5)[0] + np.eye(5)[1], np.r_[1.0, 1, 1, 1, 0])
    icl = [(a + c) / 2, d]
    for ex in range(6):
        ft = [(a + d) / 2 if ex % 2 == 0 else (b + c) / 2, (d + a) / 2 if ex < 3 else c]
        for layer in range(2):
            ref = scipy.stats.kendalltau(icl[layer], ft[layer]).statistic  # tau-b, the default
            np.testing.assert_allclose(got[ex, layer], ref, rtol=1e-12)


def _exact_p(diff):
    """Two-sided exact sign-flip p-value of the mean, by enumerating the 2**n sign vectors."""
    signs = np.array(list(itertools.product([1, -1], repeat=len(diff))))
    return float(np.mean(np.abs(signs @ diff / len(diff)) >= abs(diff.mean()) - 1e-12))


def test_rec2ftp_by_hand(values, table):
    # ZS wrong and FT right: examples 1, 2, 4 (denominator 3); ICL right on 1 and 4 -> 2/3.
    # Baseline: ZS wrong and FT wrong: example 3, ICL wrong -> 0/1 = 0.
    row = table[table["analysis"] == "rec2ftp"].iloc[0]
    assert row["mean_a"] == pytest.approx(2 / 3) and row["mean_b"] == 0 and row["baseline"] == 0 and row["n"] == 3
    assert row["estimate"] == pytest.approx(2 / 3)  # the difference of the two proportions
    # 3 and 1 examples: too few for the two-sample bootstrap, so no verdict rather than a fragile one
    assert row["verdict"] == "not_estimable" and "2/3 vs 0/1" in row["note"] and np.isnan(row["p_value"])
    assert row["layer"] is None and row["method_a"] == "icl" and row["method_b"] == "ft"
    assert row["family"] == "rec2ftp" and row["role"] == "exploratory"


def test_rec2ftp_two_sample_bootstrap_against_the_normal_approximation():
    # 400 ZS-wrong examples: FT right on 200 (ICL right on 160), FT wrong on 200 (ICL right on 100)
    n = 200
    correctness = pd.DataFrame({
        "model": "m", "task": "t", "example": np.arange(2 * n), "zs_correct": False,
        "ft_correct": np.r_[np.ones(n, bool), np.zeros(n, bool)],
        "icl_correct": np.r_[np.arange(n) < 160, np.arange(n) < 100],
    })
    empty = pd.DataFrame(columns=["model", "task", "analysis", "example", "layer", "value", "baseline"])
    table = dai_comparisons(DaiValues(empty, correctness, [], 2 * n, 0), n_resamples=20000, rng=1)
    (row,) = table.to_dict("records")
    assert row["estimate"] == pytest.approx(0.3) and row["n"] == n and row["verdict"] == "different"
    # one comparison in its family: the interval is at 1 - alpha; the bootstrap SE of a difference of
    # independent proportions is sqrt(p1 q1 / n1 + p2 q2 / n2)
    assert row["family_size"] == 1 and row["ci_level"] == pytest.approx(0.95)
    se = np.sqrt(0.8 * 0.2 / n + 0.5 * 0.5 / n)
    z = scipy.stats.norm.ppf(0.975)
    assert row["ci_low"] == pytest.approx(0.3 - z * se, abs=0.01)
    assert row["ci_high"] == pytest.approx(0.3 + z * se, abs=0.01)
    assert row["p_value"] == pytest.approx(1 / 20001 * 2, rel=1e-9)  # no draw at or below 0: the floor


def test_layer_means_and_averaged_rows(table):
    layer = table["layer"].map(lambda x: "mean" if x is None else str(x))
    est = table.set_index(["analysis", layer])["mean_a"]  # the metric's mean; estimate is metric - baseline
    # SimAOU layer 0: (1 + .5 + 0 + 1/sqrt2 + .5 + 1) / 6; layer 1: (1 + .5 + .5 + 1/sqrt2 + 1 + .5) / 6
    np.testing.assert_allclose(est[("simaou", "0")], (3 + S) / 6, rtol=1e-12)
    np.testing.assert_allclose(est[("simaou", "1")], (3.5 + S) / 6, rtol=1e-12)
    # averaged over layers per example, then over examples = mean of the two layer means
    np.testing.assert_allclose(est[("simaou", "mean")], (6.5 + 2 * S) / 12, rtol=1e-12)
    # SimAM: layer 0 (3 * 0.853553 + 3 * 0.5) / 6, layer 1 (3 * 0.75 + 3 / sqrt2) / 6
    np.testing.assert_allclose(est[("simam", "0")], ((1 + S) / 2 + 0.5) / 2, rtol=1e-12)
    np.testing.assert_allclose(est[("simam", "1")], (0.75 + S) / 2, rtol=1e-12)
    # Kendall: layer 0 = 5/7; layer 1 = (4/sqrt28 + 2/sqrt24) / 2
    np.testing.assert_allclose(est[("kendall", "0")], 5 / 7, rtol=1e-12)
    np.testing.assert_allclose(est[("kendall", "1")], (4 / np.sqrt(28) + 2 / np.sqrt(24)) / 2, rtol=1e-12)
    tested = table[table["analysis"] != "rec2ftp"]
    np.testing.assert_allclose(tested["estimate"], tested["mean_a"] - tested["mean_b"], atol=1e-12)
    np.testing.assert_allclose(tested["baseline"], tested["mean_b"], rtol=0)
    for row in tested.itertuples():
        assert row.ci_low - 1e-12 <= row.estimate <= row.ci_high + 1e-12


def test_pvalues_are_exact_sign_flips_and_holm_per_metric(values, table):
    from statsmodels.stats.multitest import multipletests

    for analysis in ("simaou", "simam", "kendall"):
        diff = _wide(values, analysis) - _wide(values, analysis, "baseline")
        rows = table[table["analysis"] == analysis]
        for layer in (0, 1):
            row = rows[rows["layer"] == layer].iloc[0]
            assert row["p_value"] == pytest.approx(_exact_p(diff[:, layer]), abs=1e-12)
            assert row["estimate"] == pytest.approx(diff[:, layer].mean(), abs=1e-12)
            assert "exact sign-flip" in row["test"] and pd.isna(row["n_resamples"])
        row = rows[rows["layer"].isna()].iloc[0]
        assert row["p_value"] == pytest.approx(_exact_p(diff.mean(axis=1)), abs=1e-12)
        # one family per metric: its 2 layers and the layer mean, Holm-adjusted among themselves
        assert set(rows["family"]) == {analysis} and set(rows["family_size"]) == {3}
        assert set(rows["role"]) == {"exploratory"}
        np.testing.assert_allclose(rows["p_adjusted"], multipletests(rows["p_value"], method="holm")[1],
                                   rtol=1e-12)
    tested = table[table["p_value"].notna()]
    assert (tested["verdict"] == np.where(tested["p_adjusted"] <= 0.05, "different", "inconclusive")).all()
    # 6 examples: the smallest two-sided exact p is 2/64 > 0.05/3, and the rows say so
    assert (tested["verdict"] == "inconclusive").all()
    assert all("cannot reach the level" in n for n in tested.loc[tested["p_value"] < 0.05, "note"])


def test_bigger_alpha_gives_different_verdicts(values):
    # SimAM layer 0 beats its baseline on all 6 examples: exact p = 2/64; Holm over its family of 3: x3
    table = dai_comparisons(values, alpha=0.5, n_resamples=999, rng=5)
    row = table[(table["analysis"] == "simam") & (table["layer"] == 0)].iloc[0]
    assert row["p_value"] == pytest.approx(2 / 64) and row["p_adjusted"] == pytest.approx(6 / 64)
    assert row["verdict"] == "different"


def test_declared_margin_gives_equivalence_tests(values):
    # SimAM layer 0: differences d in (0, 1) on all 6 examples; margin 1: every d - 1 < 0 and d + 1 > 0,
    # so both one-sided exact p-values of TOST are 1/64; with alpha 0.5 both tests pass: "negligible"
    table = dai_comparisons(values, alpha=0.5, n_resamples=999, rng=5, margins={"simam": {"absolute": 1.0}})
    row = table[(table["analysis"] == "simam") & (table["layer"] == 0)].iloc[0]
    assert row["margin"] == 1.0 and row["margin_source"] == "declared: analysis.margins.simam = absolute 1"
    assert row["p_equivalence"] == pytest.approx(1 / 64) and row["verdict"] == "negligible"
    assert table.loc[table["analysis"] != "simam", "margin"].isna().all()
    with pytest.raises(ValueError, match="give an `absolute` margin"):
        dai_comparisons(values, margins={"simam": {"ratio": 1.25}})


def test_many_examples_use_the_paired_bootstrap(values):
    # 2**6 = 64 sign patterns > 50 resamples: the paired bootstrap over examples, with the family's budget
    table = dai_comparisons(values, n_resamples=50, rng=5)
    row = table[(table["analysis"] == "simam") & (table["layer"] == 0)].iloc[0]
    assert "paired bootstrap" in row["test"] and row["n_resamples"] == int(np.ceil(20 * 3 / 0.05))


def _copy_fixture(tmp_path: Path) -> Path:
    target = tmp_path / "logs"
    shutil.copytree(FIXTURE, target)
    return target


def _task(root: Path) -> Path:
    return root / "ana_rlt" / "en_dense_lm_tiny" / "sst2"


def test_malformed_example_strict_and_skip_bad(tmp_path):
    root = _copy_fixture(tmp_path)
    icl = _task(root) / "icl" / "record_info.jsonl"
    lines = icl.read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]  # truncate example 2 (line 3)
    icl.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportProblems) as info:
        dai_metric_values(root)
    assert f"{icl}:3:" in str(info.value)
    assert info.value.problems[0].line == 3
    values = dai_metric_values(root, strict=False)
    assert values.n_examples_read == 6 and values.n_examples_skipped == 1
    assert sorted(values.correctness["example"]) == [0, 1, 3, 4, 5]
    # the other examples keep their hand values (SimAOU layer 0 without ex2's 0)
    np.testing.assert_allclose(_wide(values, "simaou")[:, 0], [1, 0.5, S, 0.5, 1], atol=1e-12)


@pytest.mark.parametrize("damage", ["nan", "missing_key", "shape", "ragged", "flip"])
def test_bad_values_are_problems(tmp_path, damage):
    root = _copy_fixture(tmp_path)
    path = _task(root) / "ftzs" / "record_info.jsonl"
    lines = path.read_text().splitlines()
    obj = json.loads(lines[4])
    if damage == "nan":
        obj["self_attn_out_hiddens"][0][0] = float("nan")
    elif damage == "missing_key":
        del obj["pred_label"]
    elif damage == "shape":
        obj["attn_map"] = obj["attn_map"][0]
    elif damage == "ragged":
        obj["self_attn_out_hiddens"][1] = [1, 2]
    text = json.dumps(obj)
    if damage == "flip":
        text = text.replace('"', "'", 1)
    lines[4] = text
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportProblems) as info:
        read_dai(root)
    assert all(p.line == 5 and p.file == str(path) for p in info.value.problems)
    data = read_dai(root, strict=False)
    assert data.n_examples_skipped == 1 and len(data.tasks[0].index) == 5


def test_unequal_counts_are_a_problem(tmp_path):
    root = _copy_fixture(tmp_path)
    zs = _task(root) / "zs" / "record_info.jsonl"
    zs.write_text("".join(zs.read_text().splitlines(keepends=True)[:4]))
    with pytest.raises(ImportProblems, match="different numbers of examples"):
        read_dai(root)
    data = read_dai(root, strict=False)
    assert data.n_examples_read == 6 and data.n_examples_skipped == 2
    # the 'ft' folder (training-pass records) is not aligned with the test examples
    with pytest.raises(ImportProblems, match="missing key"):
        read_dai(FIXTURE, ft_setting="ft")


def test_no_log_found_says_what_was_looked_for(tmp_path):
    with pytest.raises(ValueError, match=r"looked for <model>/<task>/\{zs,ftzs,icl\}/record_info.jsonl"):
        read_dai(tmp_path)


# ---------------------------------------------------------------------------
# direction: the similarity claim needs the metric above its baseline
# ---------------------------------------------------------------------------


def _one_sided_exact_p(diff, side):
    """One-sided exact sign-flip p-value of the mean ("greater": P(flipped mean >= observed))."""
    signs = np.array(list(itertools.product([1, -1], repeat=len(diff))))
    means = signs @ diff / len(diff)
    if side == "greater":
        return float(np.mean(means >= diff.mean() - 1e-12))
    return float(np.mean(means <= diff.mean() + 1e-12))


def _swapped_fixture(tmp_path: Path) -> Path:
    """The fixture with zs and ftzs swapped: SimAM (ICL vs FT) falls below its baseline (ICL vs ZS) everywhere."""
    root = _copy_fixture(tmp_path)
    task = _task(root)
    (task / "zs").rename(task / "tmp")
    (task / "ftzs").rename(task / "zs")
    (task / "tmp").rename(task / "ftzs")
    return root


def test_simam_below_its_baseline_is_not_evidence_of_similarity(tmp_path):
    values = dai_metric_values(_swapped_fixture(tmp_path))
    table = dai_comparisons(values, alpha=0.2, n_resamples=999, rng=5)
    diff = _wide(values, "simam") - _wide(values, "simam", "baseline")
    assert (diff < 0).all()  # swapping the roles of ZS and FT negates every SimAM difference
    rows = table[table["analysis"] == "simam"]
    for layer in (0, 1):
        row = rows[rows["layer"] == layer].iloc[0]
        # two-sided exact test by enumeration: 2/64; Holm x3 = 0.094 <= 0.2, so the difference is significant ...
        assert row["p_value"] == pytest.approx(_exact_p(diff[:, layer]), abs=1e-12)
        assert row["verdict"] == "different" and row["ci_high"] < 0
        # ... but on the wrong side: the one-sided test in the claimed direction (greater) has p = 1
        assert _one_sided_exact_p(diff[:, layer], "greater") == 1.0
        assert _one_sided_exact_p(diff[:, layer], "less") == pytest.approx(1 / 64)
        assert row["direction"] == "less" and row["claimed_direction"] == "greater"
        assert row["supports_similarity"] is False
    # SimAOU stays above its baseline but is not significant here: direction greater, no support either
    simaou = table[(table["analysis"] == "simaou") & table["layer"].isna()].iloc[0]
    assert simaou["direction"] == "greater" and simaou["verdict"] == "inconclusive"
    assert simaou["supports_similarity"] is False
    # a row without a test has no say
    assert table.loc[table["analysis"] == "rec2ftp", "supports_similarity"].iloc[0] is None


def test_supports_similarity_is_the_one_sided_exact_test_at_half_the_level():
    """Against exhaustive enumeration: a row supports the claim exactly when the one-sided exact sign-flip test
    in the claimed direction rejects at half the per-row level the two-sided verdict used."""
    rng = np.random.default_rng(11)
    n, shifts = 11, (-0.9, -0.5, -0.2, 0.0, 0.2, 0.5, 0.9)
    rows = []
    for task, shift in enumerate(shifts):
        d = rng.normal(shift, 0.5, size=n)
        base = rng.uniform(0, 0.2, size=n)
        rows.append(pd.DataFrame({"model": "m", "task": f"t{task}", "analysis": "simam", "example": np.arange(n),
                                  "layer": 0, "value": base + d, "baseline": base}))
    values = pd.concat(rows, ignore_index=True)
    correct = pd.DataFrame({"model": "m", "task": np.repeat([f"t{t}" for t in range(len(shifts))], n),
                            "example": np.tile(np.arange(n), len(shifts)), "zs_correct": False,
                            "ft_correct": True, "icl_correct": True})
    # 2**11 sign patterns <= 2048 resamples: the exact test, as enumerated here
    table = dai_comparisons(DaiValues(values, correct, [], n * len(shifts), 0), n_resamples=2048, rng=1)
    tested = table[(table["analysis"] == "simam") & table["layer"].notna()]
    assert len(tested) == len(shifts) and (tested["p_value"] * 0 == 0).all()
    seen = set()
    for _, row in tested.iterrows():
        sub = values[values["task"] == row["task"]]
        d = (sub["value"] - sub["baseline"]).to_numpy()
        p_greater, p_less = _one_sided_exact_p(d, "greater"), _one_sided_exact_p(d, "less")
        assert row["p_value"] == pytest.approx(min(1.0, 2 * min(p_greater, p_less)), abs=1e-12)
        half = row["level_difference"] / 2
        assert row["supports_similarity"] == (p_greater <= half + 1e-12)
        assert (row["verdict"] == "different" and row["direction"] == "less") == (p_less <= half + 1e-12)
        assert row["direction"] == ("greater" if d.mean() > 0 else "less")
        seen.add((row["verdict"], row["direction"]))
    # the data cover a significant difference on each side and a non-significant one
    assert {("different", "greater"), ("different", "less")} <= seen and any(v == "inconclusive" for v, _ in seen)


def test_cli_counts_the_rows_above_and_below_their_baseline(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import hyptest.workflows.reanalyse as module
    from hyptest.cli import app

    original = module.reanalyse
    overrides = {"analysis": {"n_resamples": 999, "alpha": 0.2}}  # 6 examples: alpha 0.05 is out of reach
    monkeypatch.setattr(module, "reanalyse", lambda *a, **k: original(*a, **{**k, "study_overrides": overrides}))
    result = CliRunner().invoke(app, ["reanalyse", str(_swapped_fixture(tmp_path)), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    # SimAM's 3 rows differ, all below the baseline; SimAOU and Kendall are inconclusive
    assert "of the 3 different: 0 above the baseline (support ICL–FT similarity), 3 below it (no support)" in (
        " ".join(result.output.split()))
    result = CliRunner().invoke(app, ["reanalyse", str(FIXTURE), "--out", str(tmp_path / "run2")])
    assert "of the 9 different: 9 above the baseline" in " ".join(result.output.split())
