"""Tests for ``hyptest power``: the generative model and the simulated decision.

Independent references: direct numpy computations of per-query SDs and SVDs;
``hyptest.analysis.order.order_comparison`` + ``hyptest.results.decide`` called by
hand on the same draws; the binomial distribution of a rejection count
(scipy); statsmodels' Wilson interval; the true parameters of a simulated
pilot.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit

from hyptest.analysis.order import order_comparison
from hyptest.records import final_step_rows
from hyptest.workflows.power import (
    PowerDesign,
    Slice,
    design_of,
    power_table,
    simulate_verdicts,
)
from hyptest.results import decide
from hyptest.stats.power import (
    estimate_order_effects,
    logits_from_draws,
    simulate_order_logits,
    standard_draws,
    wilson_interval,
)
from hyptest.study import MarginSpec, parse_study


def _design(*, n_sets=2, n_orders=6, n_queries=8, methods=("m",), cluster=False, population=False,
            n_resamples=1000) -> PowerDesign:
    return PowerDesign(
        slices=(Slice("model", "task", 3, n_orders, population),), n_sets=n_sets, n_queries=n_queries,
        reference="icl", methods=tuple(methods), analyses=("order_sensitivity",),
        margins={"order_sensitivity": MarginSpec(ratio=1.25)}, alpha=0.05, adjust="holm", cluster=cluster,
        n_resamples=n_resamples)


def _study(**analysis):
    return parse_study({
        "name": "power_test", "models": [{"name": "tiny", "source": "tiny"}], "tasks": ["sentiment"],
        "demos": {"n_demos": [3], "n_sets": 2, "n_orders": 4, "n_queries": 6},
        "methods": [{"kind": "icl"}, {"kind": "zs"}, {"kind": "sgd", "learning_rate": 0.01},
                    {"kind": "adam", "learning_rate": 0.001}],
        "analysis": {"n_resamples": 1000, "bayes": False, **analysis},
    })


# ---------------------------------------------------------------------------
# the generative model
# ---------------------------------------------------------------------------


def test_per_query_sd_the_decision_sees_matches_numpy():
    logits = simulate_order_logits(n_sets=3, n_orders=7, n_queries=11, sds=[0.8, 0.3], rng=4)
    p = expit(logits)
    c = order_comparison(p[0], p[1], keys={"model": "m", "task": "t", "n_demos": 3, "method_a": "icl",
                                           "method_b": "sgd"}, margin=MarginSpec(ratio=1.25))
    # reference: numpy per-query SD across orders (ddof 1), averaged over (set, query)
    sd_a = np.std(p[0], axis=1, ddof=1).mean()
    sd_b = np.std(p[1], axis=1, ddof=1).mean()
    assert c.mean_a == pytest.approx(sd_a, rel=1e-12)
    assert c.mean_b == pytest.approx(sd_b, rel=1e-12)
    assert c.estimate == pytest.approx(math.log(sd_a / sd_b), rel=1e-12)


def test_order_sd_on_the_logit_scale_is_the_parameter():
    sds = [0.6, 0.15]
    logits = simulate_order_logits(n_sets=400, n_orders=8, n_queries=32, sds=sds, rank1_share=0.7,
                                   between_query_sd=1.5, mean_logit=0.4, rng=1)
    # reference: numpy RMS over (set, query) of the per-query SD across orders
    rms = np.sqrt(np.var(logits, axis=2, ddof=1).mean(axis=(1, 2)))
    assert rms == pytest.approx(sds, rel=0.03)
    # query baselines: the order-mean logits spread by between_query_sd (plus sd^2 / orders)
    spread = np.var(logits[1].mean(axis=1), axis=1, ddof=1).mean()
    assert spread == pytest.approx(1.5 ** 2 + 0.15 ** 2 / 8, rel=0.05)
    assert logits.mean() == pytest.approx(0.4, abs=0.05)


def test_rank1_share_one_gives_rank1_order_effects():
    logits = simulate_order_logits(n_sets=2, n_orders=8, n_queries=20, sds=[1.0], rank1_share=1.0, rng=2)
    for s in range(2):
        y = logits[0, s]
        centred = y - y.mean(axis=0, keepdims=True)  # order effects of each query
        sv = np.linalg.svd(centred, compute_uv=False)
        assert sv[1] < 1e-10 * sv[0]


def test_draws_are_common_random_numbers_across_sds():
    draws = standard_draws(2, 2, 5, 6, np.random.default_rng(3))
    a = logits_from_draws(draws, [1.0, 0.5], between_query_sd=0.7)
    b = logits_from_draws(draws, [2.0, 0.0], between_query_sd=0.7)
    mu = 0.7 * draws.z
    np.testing.assert_allclose(b[0] - mu[:, None, :], 2 * (a[0] - mu[:, None, :]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b[1], np.broadcast_to(mu[:, None, :], b[1].shape))  # sd 0: no order effect
    with pytest.raises(ValueError, match="one value per method"):
        logits_from_draws(draws, [1.0])
    with pytest.raises(ValueError, match="rank1_share"):
        logits_from_draws(draws, [1.0, 1.0], rank1_share=1.5)


def test_wilson_interval_matches_the_closed_form():
    # Wilson (1927): (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), written out here
    # because wilson_interval itself calls statsmodels' proportion_confint
    z = 1.959963984540054
    for k, n in ((0, 50), (13, 50), (50, 50), (7, 200), (2.5, 10)):
        p = k / n
        centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        expected = ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))
        assert wilson_interval(k, n) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------
# the simulated decision is the study's decision
# ---------------------------------------------------------------------------


def test_simulated_verdicts_are_order_comparison_plus_decide():
    design = _design(methods=("sgd", "adam"))
    got = simulate_verdicts(design, {"sgd": 0.3, "adam": 0.5}, sd_ref=0.6, n_simulations=2, seed=7)
    for i in range(2):
        draws = standard_draws(3, 2, 6, 8, np.random.default_rng([7, i, 0]))
        p = expit(logits_from_draws(draws, [0.6, 0.3, 0.5]))
        comps = [order_comparison(p[0], p[k], keys={"model": "model", "task": "task", "n_demos": 3,
                                                    "method_a": "icl", "method_b": name},
                                  margin=MarginSpec(ratio=1.25), cluster=False, resample_orders=True)
                 for k, name in ((1, "sgd"), (2, "adam"))]
        table, _ = decide(comps, alpha=0.05, adjust="holm", n_resamples=1000, seed=7 * 1_000_003 + i)
        mine = got[got["simulation"] == i].reset_index(drop=True)
        assert list(mine["verdict"]) == list(table["verdict"])
        np.testing.assert_allclose(mine["p_adjusted"], table["p_adjusted"])
        np.testing.assert_allclose(mine["estimate"], table["estimate"])


def test_huge_true_ratio_is_always_called_different():
    got = simulate_verdicts(_design(), {"m": 0.02}, sd_ref=1.5, n_simulations=30, seed=1)
    assert (got["verdict"] == "different").all()


def test_false_different_rate_at_ratio_one_is_at_most_alpha():
    n = 200
    got = simulate_verdicts(_design(n_sets=3, n_orders=6, n_queries=10), {"m": 0.6}, sd_ref=0.6,
                            n_simulations=n, seed=2)
    rejections = int((got["verdict"] == "different").sum())
    # reference: scipy binomial, Holm with m = 1 is the unadjusted level 0.05; 99.9 % upper quantile
    assert rejections <= stats.binom.ppf(0.999, n, 0.05)


def test_exact_sign_flip_family_controls_the_familywise_rate():
    n = 100
    design = _design(n_sets=7, n_orders=4, n_queries=6, methods=("a", "b"), cluster=True)
    got = simulate_verdicts(design, {"a": 0.8, "b": 0.8}, sd_ref=0.8, n_simulations=n, seed=3)
    familywise = int(got.groupby("simulation")["verdict"].apply(lambda v: (v == "different").any()).sum())
    assert familywise <= stats.binom.ppf(0.999, n, 0.05)


# ---------------------------------------------------------------------------
# the design, the pilot and the report
# ---------------------------------------------------------------------------


def test_design_follows_the_study():
    design = design_of(_study())
    assert design.methods == ("sgd", "adam")  # zero-shot is a baseline, not compared
    assert design.family_size == 2 and design.slices[0].n_orders == 4 and not design.slices[0].population
    assert design.n_resamples == max(1000, math.ceil(20 * 2 / 0.05))
    assert not design.cluster  # 2 sets: the sign-flip floor 0.5 cannot reach 0.025
    seven = parse_study({**_study().model_dump(mode="json"), "demos": {"n_demos": [3], "n_sets": 7,
                                                                       "n_orders": 6, "n_queries": 6}})
    # run_analyses' rule: clusters when 2**(1 - S) <= alpha / m  (2**-6 = 0.0156 <= 0.025)
    assert design_of(seven).cluster and design_of(seven).slices[0].population
    with pytest.raises(ValueError, match="cannot simulate"):
        design_of(_study(confirmatory=["order_sensitivity", "token_overlap"]))


def _pilot(sds, share_one=True, seed=0):
    """A per-order table from independent numpy code: logit = mu_q + sd * u_o * v_q (share 1)."""
    rng = np.random.default_rng(seed)
    rows = []
    mu = 0.3 + 0.8 * rng.standard_normal((4, 40))
    for method, sd in sds.items():
        for s in range(4):
            u, v = rng.standard_normal(8), rng.standard_normal(40)
            effect = np.outer(u, v) if share_one else rng.standard_normal((8, 40))
            y = mu[s] + sd * effect
            for o in range(8):
                for q in range(40):
                    rows.append({"model": "m", "task": "t", "n_demos": 4, "method": method,
                                 "method_kind": method, "demo_set": s, "order_id": o, "seed": 0, "step": 1,
                                 "query_id": f"{s}-{q}", "p_gold": float(expit(y[o, q]))})
    frame = pd.DataFrame(rows)
    stale = frame.assign(step=0, p_gold=0.5)  # an earlier step: must be ignored
    zs = frame[frame["method"] == "icl"].assign(method="zs", method_kind="zs", p_gold=0.9)
    return pd.concat([frame, stale, zs], ignore_index=True)


def test_pilot_estimates_recover_the_parameters():
    frame = _pilot({"icl": 0.6, "sgd": 0.2})
    fx = estimate_order_effects(final_step_rows(frame), reference="icl")
    # reference: the same statistic computed with numpy on the final-step rows
    final = frame[(frame["step"] == 1) & (frame["method"] == "icl")]
    y = np.log(final["p_gold"] / (1 - final["p_gold"])).to_numpy().reshape(4, 8, 40)
    direct = math.sqrt(np.var(y, axis=1, ddof=1).mean())
    assert fx.order_sd["icl"] == pytest.approx(direct, rel=1e-4)
    assert set(fx.order_sd) == {"icl", "sgd"}
    assert fx.order_sd["sgd"] / fx.order_sd["icl"] == pytest.approx(0.2 / 0.6, rel=0.35)
    assert fx.rank1_share["icl"] == pytest.approx(1.0, abs=1e-3)
    assert fx.between_query_sd == pytest.approx(0.8, rel=0.2)
    assert fx.n_slices == 1
    noise = estimate_order_effects(final_step_rows(_pilot({"icl": 0.6}, share_one=False)), reference="icl")
    assert noise.rank1_share["icl"] < 0.4  # unstructured effects: no dominant singular value
    with pytest.raises(ValueError, match="reference"):
        estimate_order_effects(frame, reference="nope")


def test_power_table_reports_each_quantity(tmp_path):
    study = _study()
    with pytest.raises(ValueError, match="--pilot RUN_DIR"):
        power_table(study)
    report = power_table(study, sd_icl=1.2, sd_gd=0.05, n_simulations=30, n_search_simulations=20,
                         ratios=(2.0, 8.0, 30.0))
    assert list(report.table["method"]) == ["sgd", "adam"]
    assert (report.table["p_different"] >= 0.9).all()
    assert report.table["ratio_logit"].to_numpy() == pytest.approx([24.0, 24.0])
    for row in report.table.itertuples():
        assert row.p_different_low <= row.p_different <= row.p_different_high
    assert 0 <= report.null["p_equivalent_low"] <= report.null["p_equivalent"] <= report.null["p_equivalent_high"]
    assert report.mdr["low"] <= report.mdr["high"]
    assert report.curve["ratio"].is_monotonic_increasing and report.curve["ratio"].iloc[0] == 1.0
    # a pilot directory works too (its per_order.parquet)
    pilot = _pilot({"icl": 0.9, "sgd": 0.3, "adam": 0.3})
    pilot.to_parquet(tmp_path / "per_order.parquet")
    from_pilot = power_table(study, pilot_dir=tmp_path, n_simulations=10, n_search_simulations=10, ratios=(4.0,))
    # reference: numpy on the final-step rows only (the pilot also holds a stale step 0 that must be ignored)
    final = pilot[(pilot["step"] == 1) & (pilot["method"] == "icl")]
    y = np.log(final["p_gold"] / (1 - final["p_gold"])).to_numpy().reshape(4, 8, 40)
    assert from_pilot.table["sd_icl_logit"].iloc[0] == pytest.approx(math.sqrt(np.var(y, axis=1, ddof=1).mean()),
                                                                    rel=1e-4)
