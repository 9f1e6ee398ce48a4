"""Tests for hyptest.stats.anytime (betting e-processes and confidence sequences).

References: the capital is checked against an explicit Python loop over the
definitions; validity (``E[K_tau] <= 1`` at a stopping time, Ville's bound on
ever crossing ``1/alpha``) by exact enumeration of every sequence of a small
two- or three-point distribution; the confidence sequence's time-uniform
coverage by simulation; the normal-mixture boundary against numerical
integration of the mixture martingale; e-BH against its definition.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate

from hyptest.stats.anytime import (
    adjust_evalues,
    anytime_test,
    capital,
    clipped_statistics,
    confidence_sequence,
    difference_evalues,
    ebh,
    equivalence_evalues,
    normal_mixture_radius,
    predictable_bets,
)


def _loop_capital(x, m, lo, hi, side, c=0.75, first_bet=0.5):
    """The definition, one observation at a time (aGRAPA with a prior variance pseudo-observation)."""
    cap = c / (m - lo) if side == "greater" else c / (hi - m)
    k, out = 1.0, []
    for t in range(len(x)):
        if t == 0:
            lam = first_bet * cap
        else:
            past = x[:t]
            mean = sum(past) / t
            var = (((hi - lo) / 4) ** 2 + sum((v - mean) ** 2 for v in past)) / (t + 1)
            d = mean - m if side == "greater" else m - mean
            lam = min(max(d / (var + d * d), 0.0), cap)
        k *= 1 + (lam if side == "greater" else -lam) * (x[t] - m)
        out.append(k)
    return np.array(out)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("side", ["greater", "less"])
def test_capital_matches_the_loop(seed, side):
    rng = np.random.default_rng(seed)
    lo, hi = -1.5, 1.5
    x = np.clip(rng.normal(0.4 * (seed - 1.5), 0.7, size=40), lo, hi)
    m = [-0.3, 0.0, 0.2, 1.0][seed]
    np.testing.assert_allclose(capital(x, m, lo=lo, hi=hi, side=side), _loop_capital(list(x), m, lo, hi, side),
                               rtol=1e-10)


def test_bets_are_predictable_and_truncated():
    x = np.array([1.0, 1.0, 1.0, -1.0, 0.5])
    bets = predictable_bets(x, 0.0, lo=-1, hi=1, side="greater")
    assert bets[0] == pytest.approx(0.5 * 0.75)
    assert (bets <= 0.75 + 1e-12).all() and (bets >= 0).all()
    # changing a later observation never changes an earlier bet
    y = x.copy()
    y[3] = 1.0
    np.testing.assert_array_equal(predictable_bets(y, 0.0, lo=-1, hi=1, side="greater")[:4], bets[:4])
    # at the bound every factor stays positive
    worst = np.full(30, -1.0)
    assert (capital(np.r_[np.ones(10), worst], 0.0, lo=-1, hi=1, side="greater") > 0).all()


def _enumerate(values, probs, n):
    for seq in itertools.product(range(len(values)), repeat=n):
        yield np.array([values[i] for i in seq]), math.prod(probs[i] for i in seq)


def _stopped_mean(process, values, probs, n, threshold):
    """E[K_tau] for tau = first crossing of ``threshold`` (else n), and P(ever crossing), exactly."""
    mean = crossed = 0.0
    for seq, p in _enumerate(values, probs, n):
        k = process(seq)
        hit = np.flatnonzero(k >= threshold)
        mean += p * (k[hit[0]] if hit.size else k[-1])
        crossed += p * bool(hit.size)
    return mean, crossed


@pytest.mark.parametrize("side", ["greater", "less"])
def test_capital_is_a_martingale_at_the_true_mean_exactly(side):
    # two-point X in {-1, 1} with mean m: the capital is a martingale, so E[K_n] = 1 and E[K_tau] = 1
    lo, hi, n, m = -1.0, 1.0, 11, 0.2
    p_hi = (m - lo) / (hi - lo)
    process = lambda s: capital(s, m, lo=lo, hi=hi, side=side)  # noqa: E731
    mean_n = sum(p * process(s)[-1] for s, p in _enumerate([lo, hi], [1 - p_hi, p_hi], n))
    assert mean_n == pytest.approx(1.0, abs=1e-9)
    stopped, crossed = _stopped_mean(process, [lo, hi], [1 - p_hi, p_hi], n, 1 / 0.1)
    assert stopped <= 1 + 1e-9
    assert crossed <= 0.1 + 1e-12  # Ville


def test_capital_is_a_supermartingale_inside_the_null():
    # three-point X with mean below m: E[K+_n(m)] < 1 and the stopped process too
    values, probs, n, m = [-1.0, 0.0, 1.0], [0.4, 0.3, 0.3], 8, 0.0  # mean -0.1
    process = lambda s: capital(s, m, lo=-1, hi=1, side="greater")  # noqa: E731
    mean_n = sum(p * process(s)[-1] for s, p in _enumerate(values, probs, n))
    assert mean_n < 1.0
    stopped, crossed = _stopped_mean(process, values, probs, n, 1 / 0.2)
    assert stopped <= 1.0 and crossed <= 0.2


def test_difference_mixture_is_an_eprocess_under_the_point_null():
    lo, hi, n = -1.0, 1.0, 11
    process = lambda s: difference_evalues(s, 0.0, lo=lo, hi=hi)  # noqa: E731
    values, probs = [lo, hi], [0.5, 0.5]
    assert sum(p * process(s)[-1] for s, p in _enumerate(values, probs, n)) == pytest.approx(1.0, abs=1e-9)
    stopped, crossed = _stopped_mean(process, values, probs, n, 1 / 0.1)
    assert stopped <= 1 + 1e-9 and crossed <= 0.1


@pytest.mark.parametrize("where", ["lower", "upper"])
def test_equivalence_eprocess_is_valid_at_the_margin(where):
    # mean exactly at m0 - delta (or m0 + delta): the TOST union null holds at its edge
    lo, hi, n, delta = -1.0, 1.0, 11, 0.25
    mu = -delta if where == "lower" else delta
    p_hi = (mu - lo) / (hi - lo)
    process = lambda s: equivalence_evalues(s, 0.0, delta, lo=lo, hi=hi)  # noqa: E731
    values, probs = [lo, hi], [1 - p_hi, p_hi]
    assert sum(p * process(s)[-1] for s, p in _enumerate(values, probs, n)) <= 1 + 1e-9
    stopped, crossed = _stopped_mean(process, values, probs, n, 1 / 0.1)
    assert stopped <= 1 + 1e-9 and crossed <= 0.1


def test_strong_evidence_grows_the_capital():
    bound = math.log(4)
    test = anytime_test(np.full(12, bound), bound=bound, margin=math.log(1.25))
    assert test.e_difference[-1] > 100
    assert test.e_greater[-1] > test.e_difference[-1] > test.e_less[-1]
    assert test.e_equivalence is not None and test.e_equivalence[-1] < 1  # aGRAPA stops betting against the data
    near = anytime_test(np.zeros(200), bound=bound, margin=math.log(1.25))
    assert near.e_equivalence[-1] > 1000 and near.e_difference[-1] <= 1


def test_confidence_sequence_coverage_by_simulation():
    # X = 2 * Beta(2, 5) - 1 in [-1, 1], mean 2 * 2/7 - 1; time-uniform coverage at 1 - alpha
    rng = np.random.default_rng(0)
    mu, alpha, sims, n = 2 * 2 / 7 - 1, 0.1, 200, 60
    misses = 0
    widths = []
    for _ in range(sims):
        x = 2 * rng.beta(2, 5, size=n) - 1
        low, high = confidence_sequence(x, alpha, lo=-1, hi=1, points=161)
        misses += bool(((low > mu) | (high < mu)).any())
        widths.append(high[-1] - low[-1])
        assert (np.diff(low) >= -1e-12).all() and (np.diff(high) <= 1e-12).all()  # running intersection
    # the CS should miss at most alpha of the time; binomial slack at 200 sims
    assert misses / sims <= alpha + 0.05
    assert np.mean(widths) < 0.6


def test_confidence_sequence_agrees_with_the_tests():
    rng = np.random.default_rng(3)
    bound, alpha = math.log(4), 0.05
    x = np.clip(rng.normal(0.5, 0.6, size=25), -bound, bound)
    low, high = confidence_sequence(x, alpha, lo=-bound, hi=bound, include=(0.0,))
    e = difference_evalues(x, 0.0, lo=-bound, hi=bound)
    excluded = np.logical_or.accumulate(e >= 1 / alpha)
    np.testing.assert_array_equal(excluded, (low > 0) | (high < 0))
    lower, _ = confidence_sequence(x, alpha, lo=-bound, hi=bound, include=(-0.2,), side="lower")
    k_plus = capital(x, -0.2, lo=-bound, hi=bound, side="greater")
    np.testing.assert_array_equal(np.logical_or.accumulate(k_plus >= 1 / alpha), lower > -0.2)


def test_normal_mixture_radius_is_the_mixture_martingale_boundary():
    # the mixture over lambda ~ N(0, 1/rho) of exp(lambda S - lambda^2 V / 2) equals 1/alpha at |S| = radius * t
    sigma, rho, alpha = 0.8, 2.0, 0.05
    for t in (1, 5, 40):
        s = normal_mixture_radius(np.array([t]), sigma=sigma, alpha=alpha, rho=rho)[0] * t
        v = t * sigma**2
        value, _ = integrate.quad(lambda lam: math.exp(lam * s - lam * lam * v / 2) * math.sqrt(rho / (2 * math.pi))
                                  * math.exp(-rho * lam * lam / 2), -50, 50)
        assert value == pytest.approx(1 / alpha, rel=1e-6)
    # and it covers Gaussian means time-uniformly
    rng = np.random.default_rng(1)
    t = np.arange(1, 201)
    radius = normal_mixture_radius(t, sigma=1.0, alpha=0.1, rho=1.0)
    misses = sum(bool((np.abs(np.cumsum(rng.normal(size=200)) / t) >= radius).any()) for _ in range(300))
    assert misses / 300 <= 0.1 + 0.05


def test_ebh_is_bh_on_inverse_evalues():
    rng = np.random.default_rng(2)
    for m in (1, 3, 10, 40):
        for _ in range(20):
            e = np.exp(rng.normal(1.5, 2.0, size=m))
            for alpha in (0.05, 0.1):
                np.testing.assert_array_equal(ebh(e, alpha), adjust_evalues(e, method="bh") <= alpha)
                np.testing.assert_array_equal(e >= m / alpha, adjust_evalues(e, method="bonferroni") <= alpha)


def test_clipping():
    np.testing.assert_array_equal(clipped_statistics(np.array([np.inf, -np.inf, 0.3, 5.0]), 1.0),
                                  [1.0, -1.0, 0.3, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        clipped_statistics(np.array([np.nan]), 1.0)
    with pytest.raises(ValueError, match="lie in"):
        capital(np.array([2.0]), 0.0, lo=-1, hi=1, side="greater")
    with pytest.raises(ValueError, match="inside the bound"):
        anytime_test(np.zeros(3), bound=0.2, margin=0.3)


@pytest.mark.parametrize("method", ["holm", "bonferroni", "bh"])
def test_family_adjustment_matches_statsmodels(method):
    from hyptest.stats.multiplicity import adjust_pvalues

    rng = np.random.default_rng(5)
    for m in (1, 2, 5, 30):
        e = np.exp(rng.normal(1.0, 2.0, size=m))
        e[rng.uniform(size=m) < 0.2] = 0.5  # p-values of exactly 1
        np.testing.assert_allclose(adjust_evalues(e, method=method),
                                   adjust_pvalues(np.minimum(1, 1 / e), method=method), rtol=1e-12)
    assert np.isnan(adjust_evalues(np.array([np.nan, 40.0]), method=method)[0])
