"""Tests for hyptest.stats.power against independent references.

References: the binomial distribution of the rejection count under the null;
statsmodels ``TTestPower`` (paired t-test power) for an effect size computed
from an independent simulation of the documented generative model; statsmodels
``proportion_confint(method="wilson")``; closed-form method-of-moments values
for a deterministic pilot; the true parameters of a simulated pilot.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower
from statsmodels.stats.proportion import proportion_confint

from hyptest.stats.power import (
    MinimumDetectableEffect,
    PowerResult,
    VarianceComponents,
    minimum_detectable_effect,
    simulate_power,
    variance_components_from_pilot,
)


def _reference_differences(n_units, n_orders, sd_icl, sd_gd, tau_q, mu, rng):
    """Independent reimplementation of the documented model (between_set_sd = 0)."""
    base = mu + tau_q * rng.standard_normal((n_units, 1))
    p_icl = 1.0 / (1.0 + np.exp(-(base + sd_icl * rng.standard_normal((n_units, n_orders)))))
    p_gd = 1.0 / (1.0 + np.exp(-(base + sd_gd * rng.standard_normal((n_units, n_orders)))))
    return np.std(p_icl, axis=1, ddof=1) - np.std(p_gd, axis=1, ddof=1)


# ---------------------------------------------------------------------------
# simulate_power
# ---------------------------------------------------------------------------


def test_power_under_null_is_alpha():
    res = simulate_power(n_sets=2, n_queries=10, n_orders=5, sd_icl=0.5, sd_gd=0.5,
                         between_query_sd=1.0, n_simulations=400, n_resamples=199, rng=1)
    # reference: scipy.stats.binom(400, 0.05) central 99.9 % range of the rejection count
    lo, hi = stats.binom.ppf([0.0005, 0.9995], 400, 0.05)
    assert isinstance(res, PowerResult)
    assert lo <= res.n_rejections <= hi
    assert res.power == res.n_rejections / 400
    # reference: E[mean difference] = 0 under the null; 5 SE of the reference simulation
    d = _reference_differences(20000, 5, 0.5, 0.5, 1.0, 0.0, np.random.default_rng(0))
    assert abs(res.mean_difference) <= 5 * d.std() / math.sqrt(400 * 20)


def _t_reference_power(n_units, n_orders, sd_icl, sd_gd, tau, seed=3, size=100_000):
    """Paired t-test power for the effect size of the independent reference simulation."""
    d = _reference_differences(size, n_orders, sd_icl, sd_gd, tau, 0.0,
                               np.random.default_rng(seed))
    # reference: statsmodels TTestPower().power(effect_size=mean(d)/sd(d), nobs=n_units,
    #            alpha=0.05, alternative="two-sided")
    power = TTestPower().power(effect_size=d.mean() / d.std(ddof=1), nobs=n_units, alpha=0.05,
                               alternative="two-sided")
    return float(power), d


def test_power_matches_paired_t_approximation():
    n_sets, n_queries, n_orders = 4, 10, 6
    sd_icl, sd_gd, tau = 0.48, 0.4, 1.0
    res = simulate_power(n_sets=n_sets, n_queries=n_queries, n_orders=n_orders, sd_icl=sd_icl,
                         sd_gd=sd_gd, between_query_sd=tau, n_simulations=400,
                         n_resamples=499, rng=2)
    ref, d = _t_reference_power(n_sets * n_queries, n_orders, sd_icl, sd_gd, tau, size=200_000)
    assert 0.2 < ref < 0.9  # the informative range
    assert abs(res.power - ref) <= 4 * math.sqrt(ref * (1 - ref) / 400) + 0.03
    # reference: mean of d in the independent simulation; 5 SEs of the 400 * 40 simulated units
    assert abs(res.mean_difference - d.mean()) <= 5 * d.std() / math.sqrt(400 * 40)


def test_power_increases_with_queries_and_effect():
    common = dict(n_sets=2, n_orders=5, sd_gd=0.4, between_query_sd=1.0,
                  n_simulations=200, n_resamples=199)
    cases = {
        "few queries": (dict(n_queries=8, sd_icl=0.55), 4),
        "many queries": (dict(n_queries=32, sd_icl=0.55), 4),
        "small effect": (dict(n_queries=16, sd_icl=0.45), 5),
        "large effect": (dict(n_queries=16, sd_icl=0.65), 5),
    }
    power = {}
    for name, (kw, seed) in cases.items():
        res = simulate_power(rng=seed, **common, **kw)
        ref, _ = _t_reference_power(2 * kw["n_queries"], 5, kw["sd_icl"], 0.4, 1.0)
        # reference: paired t-test power (statsmodels TTestPower) for the same design
        assert abs(res.power - ref) <= 4 * math.sqrt(max(ref * (1 - ref), 0.01) / 200) + 0.04
        power[name] = res.power
    for lo, hi in (("few queries", "many queries"), ("small effect", "large effect")):
        se = math.sqrt((power[lo] * (1 - power[lo]) + power[hi] * (1 - power[hi])) / 200)
        assert power[hi] - power[lo] > 4 * se, (lo, power[lo], hi, power[hi])


def test_huge_effect_power_is_one_and_wilson_matches_statsmodels():
    res = simulate_power(n_sets=2, n_queries=12, n_orders=6, sd_icl=3.0, sd_gd=0.05,
                         between_query_sd=0.5, n_simulations=100, n_resamples=199, rng=6)
    assert res.power == 1.0 and res.n_rejections == 100
    # reference: statsmodels proportion_confint(100, 100, alpha=0.05, method="wilson")
    lo, hi = proportion_confint(100, 100, alpha=0.05, method="wilson")
    assert abs(res.ci_low - lo) <= 1e-12 and abs(res.ci_high - hi) <= 1e-12


@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_wilson_interval_matches_statsmodels(confidence):
    res = simulate_power(n_sets=2, n_queries=10, n_orders=4, sd_icl=0.6, sd_gd=0.4,
                         between_query_sd=1.0, n_simulations=150, n_resamples=99,
                         confidence=confidence, rng=7)
    # reference: statsmodels proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    lo, hi = proportion_confint(res.n_rejections, 150, alpha=1 - confidence, method="wilson")
    assert abs(res.ci_low - lo) <= 1e-12 and abs(res.ci_high - hi) <= 1e-12


def test_same_seed_is_reproducible_and_records_inputs():
    kw = dict(n_sets=2, n_queries=6, n_orders=4, sd_icl=0.7, sd_gd=0.3,
              between_query_sd=0.8, between_set_sd=0.2, mean_logit=0.5,
              n_simulations=50, n_resamples=99)
    a = simulate_power(rng=11, **kw)
    b = simulate_power(rng=11, **kw)
    assert a == b
    assert (a.n_sets, a.n_queries, a.n_orders, a.sd_icl, a.sd_gd, a.between_query_sd,
            a.between_set_sd, a.mean_logit) == (2, 6, 4, 0.7, 0.3, 0.8, 0.2, 0.5)


def test_simulate_power_validation():
    kw = dict(n_sets=2, n_queries=6, n_orders=4, sd_icl=0.7, sd_gd=0.3, between_query_sd=0.8)
    with pytest.raises(ValueError, match="`n_orders`"):
        simulate_power(**{**kw, "n_orders": 1})
    with pytest.raises(ValueError, match="`sd_gd`"):
        simulate_power(**{**kw, "sd_gd": -0.1})
    with pytest.raises(ValueError, match="`alpha`"):
        simulate_power(**{**kw, "alpha": 1.5})
    with pytest.raises(ValueError, match="`n_sets`.*`n_queries`"):
        simulate_power(**{**kw, "n_sets": 1, "n_queries": 1})
    with pytest.raises(TypeError, match="`n_queries`"):
        simulate_power(**{**kw, "n_queries": 6.0})


# ---------------------------------------------------------------------------
# minimum_detectable_effect
# ---------------------------------------------------------------------------


def test_mde_is_monotone_in_queries():
    kw = dict(n_sets=2, n_orders=5, sd_gd=0.4, between_query_sd=1.0, n_simulations=80,
              n_resamples=99, tol=0.05, rng=8)
    few = minimum_detectable_effect(n_queries=6, **kw)
    many = minimum_detectable_effect(n_queries=30, **kw)
    assert isinstance(few, MinimumDetectableEffect)
    assert few.reached and many.reached
    assert many.effect < few.effect
    for m, n_queries in ((few, 6), (many, 30)):
        assert m.power >= 0.8 and m.tol <= 0.05
        # closed form: sd_icl = sd_gd * effect
        assert abs(m.sd_icl - 0.4 * m.effect) <= 1e-12
        # reference: paired t-test power (statsmodels TTestPower) at the returned effect is
        #            near the 0.8 target (80 simulations per evaluation: Monte Carlo SE ~0.045)
        ref, _ = _t_reference_power(2 * n_queries, 5, m.sd_icl, 0.4, 1.0)
        assert abs(ref - 0.8) <= 0.2, (n_queries, m.effect, ref)


def test_mde_difference_scale_for_order_invariant_gd():
    mde = minimum_detectable_effect(n_sets=2, n_queries=10, n_orders=4, sd_gd=0.0,
                                    between_query_sd=1.0, scale="difference",
                                    n_simulations=60, n_resamples=99, tol=0.05, rng=9)
    # closed form: sd_icl = sd_gd + effect with sd_gd = 0
    assert mde.reached and mde.scale == "difference" and mde.sd_icl == mde.effect
    assert 0.0 < mde.effect < 5.0 and mde.power >= 0.8


def test_mde_unreachable_returns_inf():
    mde = minimum_detectable_effect(n_sets=1, n_queries=3, n_orders=3, sd_gd=0.4,
                                    between_query_sd=1.0, upper=1.05, n_simulations=40,
                                    n_resamples=99, rng=10)
    # closed form: 3 paired units give at best p = 2/8 (exact two-sided), so never < 0.05
    assert mde.reached is False and mde.effect == math.inf and mde.power == 0.0


def test_mde_validation():
    kw = dict(n_sets=2, n_queries=10, n_orders=4, between_query_sd=1.0)
    with pytest.raises(ValueError, match="`scale`.*sd_gd"):
        minimum_detectable_effect(sd_gd=0.0, **kw)
    with pytest.raises(ValueError, match="`target_power`"):
        minimum_detectable_effect(sd_gd=0.3, target_power=0.01, **kw)
    with pytest.raises(ValueError, match="`upper`"):
        minimum_detectable_effect(sd_gd=0.3, upper=0.5, **kw)
    with pytest.raises(ValueError, match="`scale`"):
        minimum_detectable_effect(sd_gd=0.3, scale="log", **kw)


# ---------------------------------------------------------------------------
# variance_components_from_pilot
# ---------------------------------------------------------------------------


def _pilot_frame(logits: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    for method, y in logits.items():
        n_sets, n_queries, n_orders = y.shape
        for s in range(n_sets):
            for q in range(n_queries):
                for o in range(n_orders):
                    p_gold = 1.0 / (1.0 + math.exp(-y[s, q, o]))
                    rows.append((method, f"set{s}", o, f"q{q}", p_gold))
    return pd.DataFrame(rows, columns=["method", "demo_set", "order_id", "query_id", "p_gold"])


def _standardised(values: np.ndarray, sd: float) -> np.ndarray:
    v = values - values.mean()
    return v / v.std(ddof=1) * sd


def test_pilot_closed_form():
    n_sets, n_queries, n_orders = 3, 5, 4
    mu, tau_s, tau_q = 0.3, 0.8, 0.9
    sd = {"icl": 0.8, "sgd": 0.2}
    order_pattern = _standardised(np.arange(n_orders, dtype=float), 1.0)  # mean 0, var 1
    set_fx = _standardised(np.array([-1.0, 0.2, 0.8]), tau_s)
    query_fx = np.stack([_standardised(np.array([-2.0, -0.5, 0.0, 1.0, 1.5]) * (1 + s), tau_q)
                         for s in range(n_sets)])
    logits = {m: (mu + set_fx[:, None, None] + query_fx[:, :, None]
                  + s_m * order_pattern[None, None, :]) for m, s_m in sd.items()}
    vc = variance_components_from_pilot(_pilot_frame(logits))
    # closed form (method of moments by hand): every unit has logit variance sd_m^2;
    #   within-set variance of unit means = tau_q^2 exactly -> tau_q^2 - mean_m(sd_m^2) / 4;
    #   variance of set means = tau_s^2 exactly -> tau_s^2 - (est_q^2 + mean_m(sd_m^2)/4) / 5
    mean_s2 = (0.8**2 + 0.2**2) / 2
    est_q2 = tau_q**2 - mean_s2 / n_orders
    est_s2 = tau_s**2 - (est_q2 + mean_s2 / n_orders) / n_queries
    assert isinstance(vc, VarianceComponents)
    assert abs(vc.order_sd["icl"] - 0.8) <= 1e-9 and abs(vc.order_sd["sgd"] - 0.2) <= 1e-9
    assert abs(vc.between_query_sd - math.sqrt(est_q2)) <= 1e-9
    assert abs(vc.between_set_sd - math.sqrt(est_s2)) <= 1e-9
    assert abs(vc.mean_logit - mu) <= 1e-9
    assert (vc.n_sets, vc.n_queries, vc.n_orders) == (3, 5, 4)
    with pytest.raises(TypeError):
        vc.order_sd["icl"] = 1.0  # type: ignore[index]


def test_pilot_recovers_simulated_components():
    rng = np.random.default_rng(12)
    n_sets, n_queries, n_orders = 8, 40, 6
    mu, tau_s, tau_q = -0.5, 0.5, 1.0
    sd = {"icl": 0.7, "adam": 0.35}
    base = (mu + tau_s * rng.standard_normal((n_sets, 1, 1))
            + tau_q * rng.standard_normal((n_sets, n_queries, 1)))
    logits = {m: base + s_m * rng.standard_normal((n_sets, n_queries, n_orders))
              for m, s_m in sd.items()}
    vc = variance_components_from_pilot(_pilot_frame(logits))
    # reference: the true parameters of the simulation; tolerances ~4 sampling SEs
    #   (order SD from 320 * 5 df: SE ~ sd / sqrt(2 * 1600); tau_q from 8 * 39 df: SE ~ 0.05;
    #    tau_s from 8 sets: SE ~ 0.15)
    assert abs(vc.order_sd["icl"] - 0.7) <= 4 * 0.7 / math.sqrt(3200)
    assert abs(vc.order_sd["adam"] - 0.35) <= 4 * 0.35 / math.sqrt(3200)
    assert abs(vc.between_query_sd - tau_q) <= 0.2
    assert abs(vc.between_set_sd - tau_s) <= 0.45
    assert abs(vc.mean_logit - mu) <= 4 * 0.55 / math.sqrt(8)


def test_pilot_single_set_has_nan_between_set():
    rng = np.random.default_rng(13)
    logits = {"icl": rng.normal(size=(1, 6, 3)), "sgd": rng.normal(size=(1, 6, 3))}
    vc = variance_components_from_pilot(_pilot_frame(logits))
    assert math.isnan(vc.between_set_sd) and math.isfinite(vc.between_query_sd)


def test_pilot_validation():
    rng = np.random.default_rng(14)
    frame = _pilot_frame({"icl": rng.normal(size=(2, 3, 3))})
    with pytest.raises(ValueError, match="`per_order`.*p_gold"):
        variance_components_from_pilot(frame.drop(columns=["p_gold"]))
    with pytest.raises(ValueError, match="`per_order`.*duplicate"):
        variance_components_from_pilot(pd.concat([frame, frame.iloc[:1]]))
    bad = frame.copy()
    bad.loc[0, "p_gold"] = 1.5
    with pytest.raises(ValueError, match="`per_order`.*\\[0, 1\\]"):
        variance_components_from_pilot(bad)
    bad.loc[0, "p_gold"] = np.nan
    with pytest.raises(ValueError, match="`per_order`.*p_gold"):
        variance_components_from_pilot(bad)
    with pytest.raises(ValueError, match="at least 2 orders"):
        variance_components_from_pilot(frame[frame["order_id"] == 0])
    with pytest.raises(TypeError, match="`per_order`"):
        variance_components_from_pilot(frame.to_dict())
    with pytest.raises(ValueError, match="`clip`"):
        variance_components_from_pilot(frame, clip=0.0)


def test_pilot_clips_zero_and_one():
    frame = _pilot_frame({"icl": np.zeros((2, 3, 3))})
    frame.loc[0, "p_gold"] = 0.0
    frame.loc[1, "p_gold"] = 1.0
    vc = variance_components_from_pilot(frame, clip=1e-6)
    # closed form: logit(1e-6) = -logit(1 - 1e-6) = log(1e-6 / (1 - 1e-6))
    assert math.isfinite(vc.order_sd["icl"])
    lo = math.log(1e-6 / (1 - 1e-6))
    # unit (set0, q0) holds logits [lo, -lo, 0]: variance lo^2; the other 5 units are 0
    assert abs(vc.order_sd["icl"] ** 2 - (lo**2 * 2) / (6 * 2)) <= 1e-9
