"""The one decision layer: resampling kernels, p-values vs intervals, families, deterministic controls.

References are independent of the code under test: numpy written out per query,
exhaustive enumeration of the bootstrap distribution, statsmodels' Holm, and
closed-form deterministic algorithms (von Oswald et al.'s LSA = one GD step).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hyptest.analysis.order import order_comparison, run_analyses
from hyptest.validation.linear_attention import lsa_predict, one_step_gd_predict
from hyptest.results import Comparison, decide, monte_carlo_budget
from hyptest.stats.order_resampling import (
    BootstrapDistribution,
    SignFlipDistribution,
    alignment_statistic,
    order_sd_draws,
    order_sd_statistic,
)
from hyptest.study import MarginSpec, parse_study

KEYS = {"model": "m", "task": "t", "n_demos": 4, "method_a": "icl", "method_b": "sgd"}
RATIO = MarginSpec(ratio=1.25)


def _cubes(rng: np.random.Generator, ratio: float, sets: int = 2, orders: int = 8, queries: int = 32):
    """Rank-1 order effects within each set; both methods under the same orders."""
    u = rng.normal(size=(sets, orders, 1))
    v = rng.uniform(0.5, 1.5, size=(sets, 1, queries))
    mu = rng.normal(size=(sets, 1, queries))
    a = 1 / (1 + np.exp(-(mu + 0.5 * u * v + 0.05 * rng.normal(size=(sets, orders, queries)))))
    u_b = rng.normal(size=(sets, orders, 1))
    b = 1 / (1 + np.exp(-(mu + 0.5 / ratio * u_b * v + 0.05 / ratio * rng.normal(size=(sets, orders, queries)))))
    return a, b


def test_statistic_matches_a_per_query_loop():
    rng = np.random.default_rng(0)
    a, b = _cubes(rng, 2.0, queries=7)
    sd_a = [np.std(a[s, :, q], ddof=1) for s in range(2) for q in range(7)]
    sd_b = [np.std(b[s, :, q], ddof=1) for s in range(2) for q in range(7)]
    assert order_sd_statistic(a, b) == pytest.approx(math.log(np.mean(sd_a) / np.mean(sd_b)), rel=1e-12)
    log_var = np.mean([2 * math.log(x / y) for x, y in zip(sd_a, sd_b)])
    assert order_sd_statistic(a, b, "mean_log_var_ratio") == pytest.approx(log_var, rel=1e-12)


def test_bootstrap_matches_exhaustive_enumeration():
    """Mean and variance of the two-stage bootstrap equal the exact ones, enumerated over every resample."""
    rng = np.random.default_rng(1)
    a, b = _cubes(rng, 1.5, sets=1, orders=3, queries=2)
    values, probs = [], []
    for orders in itertools.product(range(3), repeat=3):
        for queries in itertools.product(range(2), repeat=2):
            sd_a = [np.std(a[0, list(orders), q], ddof=1) for q in queries]
            sd_b = [np.std(b[0, list(orders), q], ddof=1) for q in queries]
            if np.mean(sd_b) == 0 and np.mean(sd_a) == 0:
                values.append(0.0)
            else:
                values.append(math.log(np.mean(sd_a) / np.mean(sd_b)))
            probs.append(1 / 27 * 1 / 4)
    values, probs = np.array(values), np.array(probs)
    exact_mean = float(values @ probs)
    exact_sd = float(np.sqrt(((values - exact_mean) ** 2) @ probs))
    draws = order_sd_draws(a, b, n_resamples=200_000, rng=np.random.default_rng(2))
    assert draws.mean() == pytest.approx(exact_mean, abs=4 * exact_sd / math.sqrt(len(draws)))
    assert draws.std() == pytest.approx(exact_sd, rel=0.02)


def test_alignment_bootstrap_matches_exhaustive_enumeration():
    from hyptest.stats.order_resampling import alignment_draws

    rng = np.random.default_rng(9)
    a = rng.normal(size=(1, 3, 2))
    b = 0.6 * a + rng.normal(size=a.shape)
    values = []
    for orders in itertools.product(range(3), repeat=3):
        for queries in itertools.product(range(2), repeat=2):
            xa = np.stack([a[0, list(orders), q] - a[0, list(orders), q].mean() for q in queries])
            xb = np.stack([b[0, list(orders), q] - b[0, list(orders), q].mean() for q in queries])
            # one distinct order resampled: no order effect at all, r taken as 0
            values.append((xa * xb).sum() / np.sqrt((xa * xa).sum() * (xb * xb).sum()) if len(set(orders)) > 1
                          else 0.0)
    values = np.array(values)  # every resample equally likely: 27 order draws x 4 query draws
    draws = alignment_draws(a, b, n_resamples=200_000, rng=np.random.default_rng(10))
    assert alignment_statistic(a, b) == pytest.approx(
        np.corrcoef((a - a.mean(1, keepdims=True)).ravel(), (b - b.mean(1, keepdims=True)).ravel())[0, 1])
    assert draws.mean() == pytest.approx(values.mean(), abs=4 * values.std() / math.sqrt(len(draws)))
    assert draws.std() == pytest.approx(values.std(), rel=0.02)


def test_orders_fixed_when_all_were_run():
    rng = np.random.default_rng(3)
    a, b = _cubes(rng, 1.0, sets=2, orders=6, queries=1)
    # one query per set and orders not resampled: every draw picks the same single query per set
    draws = order_sd_draws(a, b, resample_orders=False, n_resamples=50, rng=rng)
    assert np.allclose(draws, order_sd_statistic(a, b))


@pytest.mark.parametrize("side", ["greater", "less"])
def test_pvalue_and_bound_are_inverse(side):
    rng = np.random.default_rng(4)
    dist = BootstrapDistribution(rng.normal(size=999))
    sorted_draws = np.sort(dist.draws)
    for level in (0.001, 0.01, 0.025, 0.05, 0.2):
        bound = dist.bound(level, side)
        for value in np.concatenate([sorted_draws, sorted_draws + 1e-9, sorted_draws - 1e-9]):
            # naive count: (1 + #draws at or beyond value) / (B + 1)
            beyond = (sorted_draws <= value).sum() if side == "greater" else (sorted_draws >= value).sum()
            p = (1 + beyond) / (len(sorted_draws) + 1)
            assert dist.pvalue(value, side) == pytest.approx(min(p, 1.0))
            excluded = value < bound if side == "greater" else value > bound
            assert (p <= level) == excluded


def test_sign_flip_matches_enumeration_and_its_bounds_invert_it():
    values = np.array([0.31, 0.52, -0.05, 0.44, 0.27, 0.12])
    dist = SignFlipDistribution(values)
    flips = np.array(list(itertools.product((1, -1), repeat=6)))
    null = flips @ values / 6
    assert dist.pvalue(0.0, "greater") == pytest.approx(np.mean(null >= values.mean() - 1e-12))
    # scipy's exact permutation test of the mean (sign flips = "samples" permutation type)
    ref = stats.permutation_test((values,), np.mean, permutation_type="samples", alternative="greater",
                                 n_resamples=np.inf)
    assert dist.pvalue(0.0, "greater") == pytest.approx(ref.pvalue)
    low = dist.bound(0.05, "greater")
    assert dist.pvalue(low - 1e-6, "greater") <= 0.05 < dist.pvalue(low + 1e-6, "greater")


def _family(ratios, seed=0, margin=RATIO):
    rng = np.random.default_rng(seed)
    comps = []
    for i, ratio in enumerate(ratios):
        a, b = _cubes(rng, ratio)
        comps.append(order_comparison(a, b, keys={**KEYS, "method_b": f"m{i}"}, margin=margin))
    return comps


def test_holm_matches_statsmodels_and_rows_never_contradict_their_intervals():
    from statsmodels.stats.multitest import multipletests

    table, _ = decide(_family([1.0, 1.1, 1.25, 1.3, 1.6, 2.0, 6.0, 1.0, 0.15, 0.8]), n_resamples=4000)
    assert (table["n_resamples"] >= monte_carlo_budget(10, 0.05, 4000)).all()
    assert np.allclose(table["p_adjusted"], multipletests(table["p_value"], method="holm")[1])
    assert np.allclose(table["p_equivalence_adjusted"], multipletests(table["p_equivalence"], method="holm")[1])
    for row in table.to_dict("records"):
        excludes = row["ci_low"] > 0 or row["ci_high"] < 0
        inside = -row["margin"] < row["eq_low"] and row["eq_high"] < row["margin"]
        assert excludes == (row["p_adjusted"] <= 0.05)
        assert inside == (row["p_equivalence_adjusted"] <= 0.05)
        expected = {(True, False): "different", (False, True): "equivalent", (True, True): "negligible",
                    (False, False): "inconclusive"}[(excludes, inside)]
        assert row["verdict"] == expected
        assert row["min_equivalence_margin"] >= max(-row["eq_low"], row["eq_high"]) - 1e-12
    verdicts = dict(zip(table["method_b"], table["verdict"]))
    # with rank-1 order effects, 2 sets x 8 orders carry little information: only large ratios are decided
    # (a logit-scale ratio below 1 saturates on the probability scale, so only the large one is asserted)
    assert verdicts["m6"] == "different"  # ratio 6
    assert set(verdicts.values()) <= {"different", "inconclusive"}  # equivalence is out of reach at 2 x 8


def test_families_are_adjusted_separately():
    conf = _family([1.0, 2.0])
    other = _family([1.0] * 30, seed=1)
    for c in other:
        c.family, c.analysis = "log_variance_ratio", "log_variance_ratio"
    table, _ = decide(conf + other, n_resamples=2000)
    assert table.loc[table["family"] == "confirmatory", "family_size"].eq(2).all()
    assert table.loc[table["family"] == "log_variance_ratio", "family_size"].eq(30).all()
    assert set(table["role"]) == {"confirmatory", "exploratory"}
    alone, _ = decide(conf, n_resamples=2000)
    assert np.allclose(table.loc[table["family"] == "confirmatory", "p_adjusted"], alone["p_adjusted"])


def test_resolution_keeps_a_tiny_difference_inconclusive():
    sampler = lambda n, rng: BootstrapDistribution(np.full(n, 0.01) + rng.normal(0, 1e-4, n))  # noqa: E731
    c = Comparison(**KEYS, analysis="order_sensitivity_vocab", family="order_sensitivity_vocab", estimate=0.01,
                   scale="difference", sampler=sampler, resolution=0.02)
    table, _ = decide([c])
    assert table["p_adjusted"].iloc[0] < 0.05
    assert table["verdict"].iloc[0] == "inconclusive"
    assert "resolution" in table["note"].iloc[0]


def test_cluster_floor_is_stated():
    rng = np.random.default_rng(5)
    a, b = _cubes(rng, 3.0, sets=5)
    table, _ = decide([order_comparison(a, b, keys=KEYS, margin=RATIO, cluster=True)])
    row = table.iloc[0]
    assert row["p_value"] == pytest.approx(2 / 32)  # all five sets agree: the smallest exact p
    assert row["verdict"] == "inconclusive"
    assert "5 independent units" in row["note"] and "6 units would" in row["note"]


def test_alignment_threshold_rule():
    rng = np.random.default_rng(6)
    a, _ = _cubes(rng, 1.0)
    same = a + 1e-4 * rng.normal(size=a.shape)
    assert alignment_statistic(a, same) > 0.99
    from hyptest.analysis.order import _alignment_comparison
    from hyptest.study import AnalysisSpec

    records = pd.DataFrame({"method": ["sgd"], "seed": [0]})
    spec = AnalysisSpec()
    close = _alignment_comparison(records, a[..., None], same[..., None], np.ones((2, 32), bool), keys=KEYS,
                                  spec=spec, resample_orders=True)
    far = _alignment_comparison(records, a[..., None], _cubes(rng, 1.0)[1][..., None], np.ones((2, 32), bool),
                                keys=KEYS, spec=spec, resample_orders=True)
    table, _ = decide([close, far])
    assert list(table["verdict"]) == ["equivalent", "different"]
    assert table["ci_low"].iloc[0] > 0.9 and table["ci_high"].iloc[1] < 0.9
    few = _alignment_comparison(records, a[:1, :4, :, None], same[:1, :4, :, None], np.ones((1, 32), bool),
                                keys=KEYS, spec=spec, resample_orders=True)
    assert decide([few])[0]["verdict"].iloc[0] == "not_estimable"


# --- deterministic controls (von Oswald et al.: one LSA layer = one GD step) -------------------------


def _regression_outputs(predict, *, sets=3, orders=8, queries=16, n=4, d=3, seed=7):
    rng = np.random.default_rng(seed)
    out = np.empty((sets, orders, queries))
    for s in range(sets):
        X, w = rng.normal(size=(n, d)), rng.normal(size=d)
        y = X @ w
        xq = rng.normal(size=(queries, d))
        perms = [rng.permutation(n) for _ in range(orders)]
        for o, perm in enumerate(perms):
            out[s, o] = predict(X[perm], y[perm], xq)
    return out


def _recency_lsa(X, y, xq, eta=0.1, gamma=0.7):
    """LSA with attention weights that decay with distance from the query (order-dependent)."""
    weights = gamma ** np.arange(len(y))[::-1]
    return xq @ ((eta / len(y)) * (weights * y) @ X)


def _sgd_batch1(X, y, xq, eta=0.1):
    """SGD with batch 1 over the demos in order, from W = 0 (order-dependent)."""
    w = np.zeros(X.shape[1])
    for x_i, y_i in zip(X, y):
        w -= eta * (w @ x_i - y_i) * x_i
    return xq @ w


def test_deterministic_controls_get_their_expected_verdicts():
    lsa = _regression_outputs(lambda X, y, q: lsa_predict(X, y, q, eta=0.1))
    gd = _regression_outputs(lambda X, y, q: one_step_gd_predict(X, y, q, eta=0.1))
    recency = _regression_outputs(_recency_lsa)
    sgd = _regression_outputs(_sgd_batch1)
    assert 0 < np.abs(lsa - gd).max() < 1e-12  # equal up to rounding, not bitwise
    comps = [
        order_comparison(lsa, gd, keys={**KEYS, "method_a": "lsa", "method_b": "gd"}, margin=RATIO),
        order_comparison(recency, gd, keys={**KEYS, "method_a": "recency_lsa", "method_b": "gd"}, margin=RATIO),
        order_comparison(sgd, gd, keys={**KEYS, "method_a": "sgd_batch1", "method_b": "gd"}, margin=RATIO),
    ]
    table, _ = decide(comps)
    assert list(table["verdict"]) == ["equivalent", "different", "different"]
    assert table["estimate"].iloc[0] == 0.0 and table["mean_a"].iloc[0] == 0.0


# --- the study path ----------------------------------------------------------------------------------


def _records(query_ids_per_set):
    rng = np.random.default_rng(8)
    rows = []
    for method, kind, scale in (("icl", "icl", 0.6), ("sgd", "sgd", 0.2)):
        for s, queries in enumerate(query_ids_per_set):
            effects = rng.normal(size=6)
            for o in range(6):
                for q in queries:
                    logit = 0.3 + scale * effects[o] + 0.1 * rng.normal()
                    p = 1 / (1 + math.exp(-logit))
                    rows.append({"model": "m", "task": "t", "n_demos": 4, "method": method, "method_kind": kind,
                                 "demo_set": s, "order_id": o, "order": [str(o)], "seed": 0, "step": 1,
                                 "query_id": q, "gold": "a", "labels": ["a", "b"],
                                 "label_logprobs": [math.log(p), math.log(1 - p)], "label_probs": [p, 1 - p],
                                 "p_gold": p, "pred": "a" if p > 0.5 else "b", "correct": p > 0.5,
                                 "topk_ids": [], "topk_probs": []})
    return pd.DataFrame(rows)


def _study(extra: str = ""):
    import yaml

    from .conftest import TINY_STUDY

    data = yaml.safe_load(TINY_STUDY)
    data["analysis"] = {"n_resamples": 2000, "bayes": False, **yaml.safe_load(extra or "{}")}
    return parse_study(data)


def test_demo_sets_with_different_query_ids_are_analysed():
    records = _records([[f"a{i}" for i in range(10)], [f"b{i}" for i in range(7)]])
    out = run_analyses(records, _study())
    row = out.comparisons.set_index("analysis").loc["order_sensitivity"]
    assert row["verdict"] == "different" and row["family"] == "confirmatory"
    sd = records.groupby(["method", "demo_set", "query_id"])["p_gold"].std()
    assert row["estimate"] == pytest.approx(math.log(sd["icl"].mean() / sd["sgd"].mean()), rel=1e-9)
    assert "orders resampled within demo sets" in row["resampling"]


def test_declared_families_and_margins_reach_the_rows():
    out = run_analyses(_records([[f"q{i}" for i in range(8)]] * 2),
                       _study("{confirmatory: [order_sensitivity, log_variance_ratio], "
                              "margins: {order_sensitivity: {ratio: 1.5}, token_overlap: {absolute: 0.1}}}"))
    rows = out.comparisons.set_index("analysis")
    assert rows.loc["log_variance_ratio", "family"] == "confirmatory"
    assert rows.loc["order_sensitivity", "margin"] == pytest.approx(math.log(1.5))
    assert rows.loc["log_variance_ratio", "margin"] == pytest.approx(2 * math.log(1.25))
    assert {m["analysis"]: m["value"] for m in out.margins}["order_sensitivity"] == 1.5


def test_order_ids_numbered_across_sets_are_orders_within_their_set():
    """Set 1's orders numbered 6..11 (or 4..7) instead of 0..5: the same analysis, not a skipped one."""
    per_set = _records([[f"q{i}" for i in range(8)]] * 2)
    across = per_set.assign(order_id=per_set["order_id"] + 6 * per_set["demo_set"])
    a, b = (run_analyses(r, _study()).comparisons for r in (per_set, across))
    assert len(a) == len(b) and "order_sensitivity" in set(b["analysis"])
    columns = ["analysis", "estimate", "p_value", "ci_low", "ci_high", "verdict"]
    pd.testing.assert_frame_equal(a[columns].reset_index(drop=True), b[columns].reset_index(drop=True))
    sd = across.groupby(["method", "demo_set", "query_id"])["p_gold"].std()
    row = b.set_index("analysis").loc["order_sensitivity"]
    assert row["estimate"] == pytest.approx(math.log(sd["icl"].mean() / sd["sgd"].mean()), rel=1e-9)
    # N = 3 with 4 of the 3! = 6 orders in each set: a sample of orders, however they are numbered
    few = per_set[per_set["order_id"] < 4].assign(n_demos=3)
    few = few.assign(order_id=few["order_id"] + 4 * few["demo_set"])  # 8 distinct ids, 4 per set
    row = run_analyses(few, _study()).comparisons.set_index("analysis").loc["order_sensitivity"]
    assert "orders resampled within demo sets" in row["resampling"]


# --- decide resamples comparisons on threads: the numbers of one thread, bit for bit ---------------------


def test_threaded_decide_equals_one_thread(monkeypatch):
    """Bootstrap, alignment, paired and sign-flip rows in two families (a failing sampler raises as before)."""
    from hyptest import results
    from hyptest.analysis.order import _alignment_comparison, paired_unit_sampler
    from hyptest.study import AnalysisSpec

    rng = np.random.default_rng(11)
    comps = _family([1.0, 1.3, 2.0, 0.7])
    a, b = _cubes(rng, 1.5, sets=3)
    mask = rng.random((3, 32)) < 0.7
    mask[:, 0] = True
    comps.append(order_comparison(a, b, keys={**KEYS, "method_b": "masked"}, mask=mask, margin=RATIO,
                                  analysis="log_variance_ratio", family="log_variance_ratio"))
    comps.append(order_comparison(a, b, keys={**KEYS, "method_b": "clusters"}, cluster=True, margin=RATIO))
    comps.append(_alignment_comparison(pd.DataFrame({"method": ["sgd"], "seed": [0]}), a[..., None], b[..., None],
                                       np.ones((3, 32), bool), keys=KEYS, spec=AnalysisSpec(), resample_orders=True))
    d = rng.normal(0.1, 1.0, size=60)
    comps.append(Comparison(**{**KEYS, "method_b": "paired"}, analysis="label_js", family="label_js",
                            estimate=float(d.mean()), scale="difference",
                            sampler=paired_unit_sampler(d, np.repeat(np.arange(3), 20), False)))
    monkeypatch.setattr(results, "DECIDE_WORKERS", 1)
    one, draws_one = decide(comps, n_resamples=3000, seed=4)
    monkeypatch.setattr(results, "DECIDE_WORKERS", 2)
    monkeypatch.setattr(results.os, "cpu_count", lambda: 2)
    two, draws_two = decide(comps, n_resamples=3000, seed=4)
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert draws_one.keys() == draws_two.keys() and len(draws_one) >= 7
    for i in draws_one:
        np.testing.assert_array_equal(draws_one[i], draws_two[i])

    def broken(n, rng):
        raise ValueError("sampler failed")

    comps.insert(2, Comparison(**{**KEYS, "method_b": "broken"}, analysis="label_kl", family="label_kl",
                               estimate=0.0, scale="difference", sampler=broken))
    with pytest.raises(ValueError, match="sampler failed"):
        decide(comps, n_resamples=3000, seed=4)
