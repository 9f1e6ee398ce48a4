"""Tests for hyptest.stats.variance against independent references.

References: ``scipy.stats.levene(..., center="median")`` (Brown-Forsythe, to
1e-12), a naive ``itertools.combinations`` enumeration of the log variance
ratio permutation null, the binomial distribution of the rejection count
under the null, ``scipy.stats.gmean`` / ``scipy.stats.sem`` and closed forms.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from scipy import stats

from hyptest.stats.permutation import PermutationResult
from hyptest.stats.variance import (
    LogVarianceRatioSummary,
    VarianceTestResult,
    brown_forsythe,
    log_variance_ratio_permutation_test,
    paired_log_variance_ratio,
)


def _mc_tol(p: float, b: int) -> float:
    """Four Monte Carlo standard errors of a (k+1)/(B+1) p-value, plus its offset."""
    p = min(max(p, 1e-3), 1 - 1e-3)
    return 4.0 * math.sqrt(p * (1 - p) / b) + 1.0 / (b + 1)


# ---------------------------------------------------------------------------
# Brown-Forsythe versus scipy.stats.levene(center="median")
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes, scales",
    [
        ((5, 5), (1.0, 3.0)),
        ((6, 9), (1.0, 1.0)),
        ((4, 7, 12), (0.5, 1.0, 2.0)),
        ((3, 3, 3, 3), (1.0, 1.0, 4.0, 0.2)),
        ((24, 24), (0.05, 0.08)),
    ],
)
def test_brown_forsythe_matches_scipy(sizes, scales):
    rng = np.random.default_rng(sum(sizes))
    groups = [rng.normal(i, s, size=n) for i, (n, s) in enumerate(zip(sizes, scales))]
    res = brown_forsythe(*groups)
    # reference: scipy.stats.levene(*groups, center="median")
    ref = stats.levene(*groups, center="median")
    np.testing.assert_allclose(res.statistic, ref.statistic, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.pvalue, ref.pvalue, rtol=1e-12, atol=1e-12)
    assert isinstance(res, VarianceTestResult)
    assert res.df_between == len(sizes) - 1 and res.df_within == sum(sizes) - len(sizes)
    assert res.n == sum(sizes)


def test_brown_forsythe_matches_scipy_with_ties():
    rng = np.random.default_rng(3)
    groups = [rng.integers(0, 5, size=8), rng.integers(0, 3, size=11), [1, 2, 2]]
    res = brown_forsythe(*groups)
    # reference: scipy.stats.levene(*groups, center="median")
    ref = stats.levene(*groups, center="median")
    np.testing.assert_allclose([res.statistic, res.pvalue], [ref.statistic, ref.pvalue],
                               rtol=1e-12, atol=1e-12)


def test_brown_forsythe_degenerate_cases():
    # reference: scipy.stats.levene([5, 5, 5], [0, 2], center="median") -> (inf, 0.0)
    res = brown_forsythe([5, 5, 5], [0, 2])
    with np.errstate(divide="ignore"):
        ref = stats.levene([5, 5, 5], [0, 2], center="median")
    assert res.statistic == ref.statistic == math.inf and res.pvalue == ref.pvalue == 0.0
    # closed form (documented; scipy returns NaN): all deviations zero -> W = 0, p = 1
    res = brown_forsythe([5.0, 5.0, 5.0], [2.0, 2.0, 2.0])
    assert res.statistic == 0.0 and res.pvalue == 1.0


def test_brown_forsythe_validation():
    with pytest.raises(ValueError, match="`groups`.*at least 2 samples"):
        brown_forsythe([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"`groups\[1\]`.*at least 2"):
        brown_forsythe([1.0, 2.0, 3.0], [1.0])
    with pytest.raises(ValueError, match="`groups`.*3 or more"):
        brown_forsythe([1.0, 2.0], [1.0, 3.0])
    with pytest.raises(ValueError, match=r"`groups\[0\]`.*finite"):
        brown_forsythe([1.0, np.nan, 3.0], [1.0, 2.0, 4.0])


# ---------------------------------------------------------------------------
# log variance ratio permutation test: exact versus naive enumeration
# ---------------------------------------------------------------------------


def _naive_exact(x, y, alternative):
    """Naive reference: loop over itertools.combinations, np.var on each split."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    pooled = np.concatenate([x - np.median(x), y - np.median(y)])
    n, nx = pooled.size, x.size
    observed = math.log(np.var(x, ddof=1) / np.var(y, ddof=1))
    null = []
    for combo in itertools.combinations(range(n), nx):
        mask = np.zeros(n, bool)
        mask[list(combo)] = True
        null.append(math.log(np.var(pooled[mask], ddof=1) / np.var(pooled[~mask], ddof=1)))
    null = np.array(null)
    tol = 1e-9
    if alternative == "greater":
        k = np.sum(null >= observed - tol)
    elif alternative == "less":
        k = np.sum(null <= observed + tol)
    else:
        k = np.sum(np.abs(null) >= abs(observed) - tol)
    return observed, k / null.size, null


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("sizes", [(5, 6), (4, 7), (6, 6)])
def test_exact_matches_naive_enumeration(alternative, sizes):
    rng = np.random.default_rng(100 + sizes[0])
    x = rng.normal(0.5, 2.0, size=sizes[0])
    y = rng.normal(-1.0, 1.0, size=sizes[1])
    res = log_variance_ratio_permutation_test(x, y, n_resamples=10000, alternative=alternative)
    # reference: naive loop over itertools.combinations(range(n_x + n_y), n_x), np.var per split
    obs, p, null = _naive_exact(x, y, alternative)
    assert isinstance(res, PermutationResult)
    assert res.exact is True and res.n_resamples == math.comb(sum(sizes), sizes[0])
    assert abs(res.statistic - obs) <= 1e-12
    assert abs(res.pvalue - p) <= 1e-12
    np.testing.assert_allclose(res.null_distribution, null, rtol=0, atol=1e-10)
    assert res.n == sum(sizes) and res.alternative == alternative


def test_exact_with_integer_ties_matches_naive():
    x = [0.0, 1.0, 3.0, 3.0, 6.0]
    y = [2.0, 2.0, 3.0, 4.0, 3.0]
    res = log_variance_ratio_permutation_test(x, y)
    # reference: naive itertools.combinations enumeration (many tied null values)
    obs, p, _ = _naive_exact(x, y, "two-sided")
    assert abs(res.statistic - obs) <= 1e-12 and abs(res.pvalue - p) <= 1e-12


@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_monte_carlo_close_to_exact(alternative):
    rng = np.random.default_rng(8)
    x = rng.normal(0.0, 1.8, size=6)
    y = rng.normal(0.0, 1.0, size=6)
    b = 600  # < comb(12, 6) = 924, so Monte Carlo
    mc = log_variance_ratio_permutation_test(x, y, n_resamples=b, alternative=alternative, rng=1)
    # reference: naive exact enumeration over all 924 splits
    _, p_exact, _ = _naive_exact(x, y, alternative)
    assert mc.exact is False and mc.n_resamples == b
    assert abs(mc.pvalue - p_exact) <= _mc_tol(p_exact, b)
    # Phipson-Smyth: p = (k + 1) / (B + 1) is never zero
    assert mc.pvalue >= 1.0 / (b + 1)


# ---------------------------------------------------------------------------
# invariances
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_xy():
    rng = np.random.default_rng(21)
    return rng.normal(0.3, 1.5, size=6), rng.normal(0.1, 1.0, size=7)


def test_swap_flips_sign(small_xy):
    x, y = small_xy
    a = log_variance_ratio_permutation_test(x, y)
    b = log_variance_ratio_permutation_test(y, x)
    # reference: closed form log(vx/vy) = -log(vy/vx); naive enumeration p for (y, x)
    assert abs(a.statistic + b.statistic) <= 1e-12
    assert abs(b.pvalue - _naive_exact(y, x, "two-sided")[1]) <= 1e-12
    assert abs(a.pvalue - b.pvalue) <= 1e-12
    ga = log_variance_ratio_permutation_test(x, y, alternative="greater")
    lb = log_variance_ratio_permutation_test(y, x, alternative="less")
    assert abs(ga.pvalue - lb.pvalue) <= 1e-12


@pytest.mark.parametrize("n_resamples", [10000, 400])  # exact, then Monte Carlo
def test_scale_and_shift_invariance(small_xy, n_resamples):
    x, y = small_xy
    base = log_variance_ratio_permutation_test(x, y, n_resamples=n_resamples, rng=5)
    scaled = log_variance_ratio_permutation_test(7.5 * x, 7.5 * y, n_resamples=n_resamples, rng=5)
    shifted = log_variance_ratio_permutation_test(x + 100.0, y - 3.0,
                                                  n_resamples=n_resamples, rng=5)
    # reference: closed form, log(var(cx)/var(cy)) = log(var(x)/var(y)); var(x + a) = var(x)
    for other in (scaled, shifted):
        assert abs(other.statistic - base.statistic) <= 1e-10
        assert other.pvalue == base.pvalue
        np.testing.assert_allclose(other.null_distribution, base.null_distribution,
                                   rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------
# type-I error under the null (equal spreads, different locations)
# ---------------------------------------------------------------------------


def test_type_one_error_near_alpha():
    start = time.perf_counter()
    rng = np.random.default_rng(2023)
    n_sim, alpha = 200, 0.05
    rejections = 0
    for _ in range(n_sim):
        x = rng.normal(0.0, 1.0, size=10)
        y = rng.normal(4.0, 1.0, size=10)  # different location, same spread
        res = log_variance_ratio_permutation_test(x, y, n_resamples=199, rng=rng)
        rejections += res.pvalue <= alpha
    # reference: scipy.stats.binom(200, 0.05) central 99.9 % range of the rejection count
    lo, hi = stats.binom.ppf([0.0005, 0.9995], n_sim, alpha)
    assert lo <= rejections <= hi, rejections
    assert time.perf_counter() - start < 5.0


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def test_log_variance_validation():
    with pytest.raises(ValueError, match="`y`.*zero variance"):
        log_variance_ratio_permutation_test([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="`x`.*at least 2"):
        log_variance_ratio_permutation_test([1.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="`x`.*finite"):
        log_variance_ratio_permutation_test([1.0, np.nan, 2.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="`alternative`"):
        log_variance_ratio_permutation_test([1.0, 2.0], [2.0, 3.0], alternative="bigger")
    with pytest.raises(ValueError, match="`n_resamples`"):
        log_variance_ratio_permutation_test([1.0, 2.0], [2.0, 3.0], n_resamples=0)
    with pytest.raises(TypeError, match="`rng`"):
        log_variance_ratio_permutation_test([1.0, 2.0], [2.0, 3.0], rng="seed")


# ---------------------------------------------------------------------------
# paired_log_variance_ratio
# ---------------------------------------------------------------------------


def test_paired_log_variance_ratio_closed_form():
    s = paired_log_variance_ratio([0.08, 0.12, 0.05, 0.0, 0.0], [0.04, 0.06, 0.0, 0.02, 0.0])
    # closed form: used units have sd_a / sd_b = 2 -> log_sd = log 2, statistic = log 4
    assert isinstance(s, LogVarianceRatioSummary)
    assert abs(s.log_sd_ratio - math.log(2.0)) <= 1e-12
    assert abs(s.statistic - math.log(4.0)) <= 1e-12
    assert abs(s.sd_ratio - 2.0) <= 1e-12
    assert abs(s.standard_error) <= 1e-12
    assert (s.n, s.n_total, s.n_zero_a, s.n_zero_b, s.n_zero_both) == (2, 5, 1, 1, 1)


def test_paired_log_variance_ratio_matches_scipy():
    rng = np.random.default_rng(4)
    a = rng.gamma(2.0, 0.03, size=50)
    b = rng.gamma(2.0, 0.02, size=50)
    b[[3, 9]] = 0.0
    s = paired_log_variance_ratio(a, b)
    keep = b > 0
    # reference: scipy.stats.gmean(a / b) and scipy.stats.sem(log(a / b)) over units with b > 0
    assert abs(s.sd_ratio - stats.gmean(a[keep] / b[keep])) <= 1e-12
    assert abs(s.standard_error - stats.sem(np.log(a[keep] / b[keep]))) <= 1e-12
    # reference: closed form, mean log variance ratio = mean(log(a**2 / b**2))
    assert abs(s.statistic - np.mean(np.log(a[keep] ** 2 / b[keep] ** 2))) <= 1e-12
    assert s.n == 48 and s.n_zero_b == 2
    swapped = paired_log_variance_ratio(b, a)
    assert abs(swapped.statistic + s.statistic) <= 1e-12 and swapped.n_zero_a == 2


def test_paired_log_variance_ratio_atol_and_all_zero():
    s = paired_log_variance_ratio([0.1, 0.2], [1e-17, 0.1], atol=1e-12)
    # closed form: first unit dropped (sd_b <= atol), second has ratio 2
    assert s.n == 1 and s.n_zero_b == 1 and abs(s.sd_ratio - 2.0) <= 1e-12
    assert math.isnan(s.standard_error)
    s = paired_log_variance_ratio([0.1, 0.2], [0.0, 0.0])
    assert s.n == 0 and s.n_zero_b == 2
    assert math.isnan(s.statistic) and math.isnan(s.sd_ratio)


def test_paired_log_variance_ratio_validation():
    with pytest.raises(ValueError, match="`sd_b`.*>= 0"):
        paired_log_variance_ratio([0.1, 0.2], [0.1, -0.2])
    with pytest.raises(ValueError, match="`sd_a`.*finite"):
        paired_log_variance_ratio([np.nan, 0.2], [0.1, 0.2])
    with pytest.raises(ValueError, match="`sd_b`.*same length"):
        paired_log_variance_ratio([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="`atol`"):
        paired_log_variance_ratio([0.1, 0.2], [0.1, 0.2], atol=-1.0)
