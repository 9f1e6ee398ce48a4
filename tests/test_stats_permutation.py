"""Tests for hyptest.stats.permutation against independent references.

References: scipy.stats.permutation_test (exact and large Monte Carlo),
naive itertools enumeration in exact integer arithmetic, and closed-form
moments of the permutation null distributions.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from hyptest.stats.permutation import (
    PermutationResult,
    paired_permutation_test,
    two_sample_permutation_test,
)


def _mean(a, axis=-1):
    return np.mean(a, axis=axis)


def _abs_mean(a, axis=-1):
    return np.abs(np.mean(a, axis=axis))


def _diff_means(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _abs_diff_means(a, b, axis=-1):
    return np.abs(np.mean(a, axis=axis) - np.mean(b, axis=axis))


def _mc_tol(p: float, *sizes: int) -> float:
    """Four Monte-Carlo standard errors of the difference of p-value estimates."""
    p = min(max(p, 1e-3), 1 - 1e-3)
    return 4.0 * math.sqrt(sum(p * (1 - p) / b for b in sizes))


# ---------------------------------------------------------------------------
# paired sign-flip test: exact
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("kind", ["continuous", "integer"])
def test_paired_exact_matches_scipy(alternative, kind):
    rng = np.random.default_rng(11)
    if kind == "continuous":
        x = rng.normal(0.4, 1.0, size=10)
        y = rng.normal(0.0, 1.0, size=10)
    else:  # many ties in the null distribution
        x = rng.integers(0, 4, size=10).astype(float)
        y = rng.integers(0, 3, size=10).astype(float)
    d = x - y
    res = paired_permutation_test(x, y, n_resamples=10000, alternative=alternative)
    # reference: scipy.stats.permutation_test((d,), np.mean, permutation_type="samples",
    #            n_resamples=10000 (>= 2**10, so exact), alternative=alternative)
    ref = stats.permutation_test(
        (d,), _mean, permutation_type="samples", vectorized=True,
        n_resamples=10000, alternative=alternative,
    )
    assert res.exact is True
    assert res.n_resamples == 2**10 == ref.null_distribution.size
    assert res.statistic == pytest.approx(float(ref.statistic), abs=1e-15)
    assert abs(res.pvalue - float(ref.pvalue)) <= 1e-12
    np.testing.assert_allclose(
        np.sort(res.null_distribution), np.sort(ref.null_distribution), rtol=0, atol=1e-12
    )


def test_paired_exact_two_sided_is_abs_statistic_test():
    rng = np.random.default_rng(5)
    d = rng.normal(0.3, 1.0, size=12)
    res = paired_permutation_test(d, n_resamples=2**12)
    # reference: scipy.stats.permutation_test((d,), lambda d, axis: |mean(d, axis)|,
    #            permutation_type="samples", alternative="greater", n_resamples=4096) (exact)
    ref = stats.permutation_test(
        (d,), _abs_mean, permutation_type="samples", vectorized=True,
        n_resamples=2**12, alternative="greater",
    )
    assert abs(res.pvalue - float(ref.pvalue)) <= 1e-12


def test_paired_exact_matches_naive_enumeration_with_decimal_ties():
    # d = k / 10 with small integers k: many ties, and 0.1 is not exact in
    # binary, so this exercises the tie tolerance.
    k = np.array([3, -1, 2, 2, 0, 1, -2, 3])
    d = k / 10.0
    res = paired_permutation_test(d, exact=True)
    # reference: naive itertools.product over all 2**8 sign vectors in exact
    # integer arithmetic on k (mean(s * d) compared via sum(s * k))
    sums = np.array([int(np.dot(s, k)) for s in itertools.product((1, -1), repeat=k.size)])
    obs = int(k.sum())
    p_two = np.mean(np.abs(sums) >= abs(obs))
    p_greater = np.mean(sums >= obs)
    p_less = np.mean(sums <= obs)
    assert res.exact and res.n_resamples == 256
    assert abs(res.pvalue - p_two) <= 1e-12
    assert abs(paired_permutation_test(d, exact=True, alternative="greater").pvalue
               - p_greater) <= 1e-12
    assert abs(paired_permutation_test(d, exact=True, alternative="less").pvalue
               - p_less) <= 1e-12
    np.testing.assert_allclose(np.sort(res.null_distribution), np.sort(sums) / 80.0,
                               atol=1e-12)


def test_paired_exact_null_order_and_first_entry():
    d = np.array([0.5, -1.25, 2.0])
    res = paired_permutation_test(d)
    # reference: entry k flips observation j iff bit j of k is set (documented)
    expected = [np.mean(d * np.where([(k >> j) & 1 for j in range(3)], -1, 1))
                for k in range(8)]
    np.testing.assert_allclose(res.null_distribution, expected, atol=1e-15)
    assert res.null_distribution[0] == res.statistic


def test_paired_exact_alternatives_consistent():
    d = np.random.default_rng(8).normal(0.2, 1.0, size=11)
    p = {a: paired_permutation_test(d, alternative=a).pvalue
         for a in ("two-sided", "greater", "less")}
    # reference: with continuous data only the identity flip ties the observed
    # value, so p_greater + p_less = 1 + 2**-n; symmetric null gives
    # p_two = 2 * min(p_greater, p_less)
    assert p["greater"] + p["less"] == pytest.approx(1 + 2.0**-11, abs=1e-12)
    assert p["two-sided"] == pytest.approx(2 * min(p["greater"], p["less"]), abs=1e-12)


def test_paired_all_zero_differences_gives_pvalue_one():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    for exact in ("auto", False):
        res = paired_permutation_test(x, x.copy(), exact=exact, n_resamples=500, rng=0)
        # reference: the null is identically 0 = observed, so every rearrangement ties
        assert res.pvalue == 1.0
        assert res.statistic == 0.0


def test_paired_n_equals_one():
    res = paired_permutation_test([2.5])
    # reference: two sign vectors {+2.5, -2.5}; both have |T| >= 2.5
    assert res.exact and res.n_resamples == 2 and res.pvalue == 1.0
    assert paired_permutation_test([2.5], alternative="greater").pvalue == 0.5


# ---------------------------------------------------------------------------
# paired sign-flip test: Monte Carlo
# ---------------------------------------------------------------------------


def test_paired_monte_carlo_close_to_scipy_exact():
    rng = np.random.default_rng(21)
    d = rng.normal(0.45, 1.0, size=16)
    res = paired_permutation_test(d, n_resamples=20000, exact=False, rng=1)
    # reference: scipy.stats.permutation_test((d,), np.mean, permutation_type="samples",
    #            n_resamples=np.inf) -> exact over 2**16 sign vectors
    ref = stats.permutation_test((d,), _mean, permutation_type="samples",
                                 vectorized=True, n_resamples=np.inf)
    p_ref = float(ref.pvalue)
    assert not res.exact and res.n_resamples == 20000
    assert 0.01 < p_ref < 0.5  # informative regime
    assert abs(res.pvalue - p_ref) <= _mc_tol(p_ref, 20000)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_paired_monte_carlo_close_to_scipy_large_resample(alternative):
    rng = np.random.default_rng(3)
    x = rng.normal(0.1, 1.0, size=60)
    y = rng.normal(-0.1, 1.0, size=60)
    res = paired_permutation_test(x, y, n_resamples=20000, alternative=alternative, rng=4)
    # reference: scipy.stats.permutation_test((x - y,), np.mean, permutation_type="samples",
    #            n_resamples=200000, batch=50000, alternative=alternative, rng=5)
    ref = stats.permutation_test((x - y,), _mean, permutation_type="samples",
                                 vectorized=True, n_resamples=200000, batch=50000,
                                 alternative=alternative, rng=5)
    p_ref = float(ref.pvalue)
    assert abs(res.pvalue - p_ref) <= _mc_tol(p_ref, 20000, 200000)


def test_paired_monte_carlo_null_moments():
    d = np.random.default_rng(9).exponential(size=200) - 0.7
    res = paired_permutation_test(d, n_resamples=40000, rng=2)
    # reference: under uniform random signs E[T] = 0 and
    # Var[T] = sum(d**2) / n**2 (closed form)
    var_ref = np.sum(d**2) / d.size**2
    null = res.null_distribution
    assert abs(null.mean()) <= 4 * math.sqrt(var_ref / null.size)
    # sd of the sample variance of a ~normal null: var * sqrt(2 / B)
    assert abs(null.var() - var_ref) <= 4 * var_ref * math.sqrt(2 / null.size)


def test_paired_monte_carlo_pvalue_never_zero():
    d = np.full(40, 1.0) + np.linspace(0, 0.1, 40)
    res = paired_permutation_test(d, n_resamples=999, rng=0)
    # reference: Phipson & Smyth (2010): p = (0 + 1) / (999 + 1)
    assert res.pvalue == pytest.approx(1 / 1000, abs=1e-15)


def test_paired_result_independent_of_batch_and_reproducible():
    d = np.random.default_rng(1).normal(size=100)
    a = paired_permutation_test(d, n_resamples=5000, rng=3)
    b = paired_permutation_test(d, n_resamples=5000, rng=3, batch=17)
    c = paired_permutation_test(d, n_resamples=5000, rng=np.random.default_rng(3))
    # reference: the unbatched run with the same seed
    np.testing.assert_array_equal(a.null_distribution, b.null_distribution)
    np.testing.assert_array_equal(a.null_distribution, c.null_distribution)
    assert a.pvalue == b.pvalue == c.pvalue


def test_paired_exact_flags():
    d = np.random.default_rng(0).normal(size=12)
    assert paired_permutation_test(d, n_resamples=4095, rng=0).exact is False
    assert paired_permutation_test(d, n_resamples=4096).exact is True
    forced = paired_permutation_test(d, n_resamples=10, exact=True)
    assert forced.exact and forced.n_resamples == 4096
    mc = paired_permutation_test(d, n_resamples=10**5, exact=False, rng=0)
    assert not mc.exact and mc.n_resamples == 10**5
    # reference for forced exact: the auto-exact run with enough resamples
    assert forced.pvalue == paired_permutation_test(d, n_resamples=4096).pvalue


# ---------------------------------------------------------------------------
# paired: invariances
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("exact", ["auto", False])
def test_paired_swap_flips_statistic_keeps_two_sided(exact):
    rng = np.random.default_rng(4)
    x, y = rng.normal(0.3, 1, 9), rng.normal(0, 1, 9)
    a = paired_permutation_test(x, y, exact=exact, n_resamples=2000, rng=7)
    b = paired_permutation_test(y, x, exact=exact, n_resamples=2000, rng=7)
    # reference: result for (x, y); swapping negates d
    assert b.statistic == -a.statistic
    assert b.pvalue == a.pvalue
    g = paired_permutation_test(x, y, exact=exact, n_resamples=2000, rng=7,
                                alternative="greater")
    lo = paired_permutation_test(y, x, exact=exact, n_resamples=2000, rng=7,
                                 alternative="less")
    assert g.pvalue == lo.pvalue


def test_paired_shift_both_by_constant_changes_nothing():
    rng = np.random.default_rng(6)
    x, y = rng.normal(0.5, 1, 10), rng.normal(0, 1, 10)
    a = paired_permutation_test(x, y)
    b = paired_permutation_test(x + 3.0, y + 3.0)
    # reference: result on unshifted data
    assert b.statistic == pytest.approx(a.statistic, abs=1e-12)
    assert b.pvalue == a.pvalue


def test_paired_y_none_equals_differences():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=30), rng.normal(size=30)
    a = paired_permutation_test(x, y, n_resamples=3000, rng=1)
    b = paired_permutation_test(x - y, n_resamples=3000, rng=1)
    # reference: passing the differences directly
    assert a.pvalue == b.pvalue and a.statistic == b.statistic


# ---------------------------------------------------------------------------
# paired: validation
# ---------------------------------------------------------------------------


def test_paired_rejects_nan_naming_argument():
    with pytest.raises(ValueError, match=r"`x` must contain only finite values.*nan.*index 1"):
        paired_permutation_test([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match=r"`y` must contain only finite values"):
        paired_permutation_test([1.0, 2.0], [np.nan, 1.0])
    with pytest.raises(ValueError, match=r"`x`.*finite.*inf"):
        paired_permutation_test([1.0, np.inf])


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"x": []}, ValueError, r"`x` must contain at least 1 observation\(s\), got 0"),
        ({"x": [[1.0, 2.0]]}, ValueError, r"`x` must be 1-D, got an array of shape \(1, 2\)"),
        ({"x": [1.0, 2.0], "y": [1.0]}, ValueError, r"`y` must have the same length as `x`"),
        ({"x": ["a", "b"]}, TypeError, r"`x` must contain real numbers"),
        ({"x": [1.0, 2.0], "n_resamples": 0}, ValueError,
         r"`n_resamples` must be a positive integer, got 0"),
        ({"x": [1.0, 2.0], "n_resamples": 10.5}, TypeError,
         r"`n_resamples` must be a positive integer, got 10.5"),
        ({"x": [1.0, 2.0], "alternative": "two_sided"}, ValueError,
         r"`alternative` must be one of 'two-sided', 'greater', 'less', got 'two_sided'"),
        ({"x": [1.0, 2.0], "exact": "yes"}, ValueError, r"`exact` must be 'auto', True or False"),
        ({"x": np.ones(25), "exact": True}, ValueError, r"`exact`=True .* n <= 24.*got n=25"),
        ({"x": [1.0, 2.0], "batch": 0}, ValueError, r"`batch` must be a positive integer, got 0"),
        ({"x": [1.0, 2.0], "rng": "seed"}, TypeError, r"`rng` must be None, a non-negative"),
        ({"x": [1.0, 2.0], "rng": -1}, ValueError, r"`rng` seed must be a non-negative"),
    ],
)
def test_paired_validation_messages(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        paired_permutation_test(**kwargs)


def test_result_is_frozen_and_null_read_only():
    res = paired_permutation_test([1.0, 2.0, -0.5])
    assert isinstance(res, PermutationResult)
    with pytest.raises(AttributeError):
        res.pvalue = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.null_distribution[0] = 1.0


# ---------------------------------------------------------------------------
# two-sample relabelling test
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ["greater", "less"])
@pytest.mark.parametrize(("nx", "ny"), [(5, 6), (4, 4), (3, 7)])
def test_two_sample_exact_one_sided_matches_scipy(alternative, nx, ny):
    rng = np.random.default_rng(nx * 10 + ny)
    x, y = rng.normal(0.8, 1, nx), rng.normal(0, 1, ny)
    res = two_sample_permutation_test(x, y, n_resamples=10000, alternative=alternative)
    # reference: scipy.stats.permutation_test((x, y), mean(x) - mean(y),
    #            permutation_type="independent", n_resamples=10000 (>= comb, exact),
    #            alternative=alternative)
    ref = stats.permutation_test((x, y), _diff_means, permutation_type="independent",
                                 vectorized=True, n_resamples=10000, alternative=alternative)
    assert res.exact and res.n_resamples == math.comb(nx + ny, nx)
    assert res.n_resamples == ref.null_distribution.size
    assert res.statistic == pytest.approx(float(ref.statistic), abs=1e-12)
    assert abs(res.pvalue - float(ref.pvalue)) <= 1e-12
    np.testing.assert_allclose(np.sort(res.null_distribution),
                               np.sort(ref.null_distribution), atol=1e-12)


@pytest.mark.parametrize(("nx", "ny"), [(5, 6), (3, 7)])
def test_two_sample_exact_two_sided_is_abs_statistic_test(nx, ny):
    rng = np.random.default_rng(100 + nx)
    x, y = rng.normal(0.8, 1, nx), rng.normal(0, 1, ny)
    res = two_sample_permutation_test(x, y, n_resamples=10000)
    # reference: scipy.stats.permutation_test((x, y), |mean(x) - mean(y)|,
    #            permutation_type="independent", alternative="greater", n_resamples=10000)
    ref = stats.permutation_test((x, y), _abs_diff_means, permutation_type="independent",
                                 vectorized=True, n_resamples=10000, alternative="greater")
    assert abs(res.pvalue - float(ref.pvalue)) <= 1e-12


def test_two_sample_exact_two_sided_equal_sizes_matches_scipy_default():
    rng = np.random.default_rng(77)
    x = rng.integers(0, 5, 6).astype(float)  # ties
    y = rng.integers(0, 3, 6).astype(float)
    res = two_sample_permutation_test(x, y, n_resamples=10000)
    # reference: scipy.stats.permutation_test((x, y), mean(x) - mean(y),
    #            permutation_type="independent", n_resamples=10000) (two-sided,
    #            2*min rule; equals the |T| rule because n_x == n_y makes the null symmetric)
    ref = stats.permutation_test((x, y), _diff_means, permutation_type="independent",
                                 vectorized=True, n_resamples=10000)
    assert abs(res.pvalue - float(ref.pvalue)) <= 1e-12


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_two_sample_monte_carlo_close_to_scipy(alternative):
    rng = np.random.default_rng(33)  # p-values ~0.1-0.9: an informative regime
    x, y = rng.normal(0.3, 1, 15), rng.normal(0, 1, 20)
    res = two_sample_permutation_test(x, y, n_resamples=20000, alternative=alternative, rng=1)
    # reference: scipy.stats.permutation_test((x, y), |mean(x)-mean(y)| (two-sided) or
    #            mean(x)-mean(y), permutation_type="independent", n_resamples=200000,
    #            batch=50000, alternative="greater" (two-sided) or alternative, rng=2)
    stat, alt = ((_abs_diff_means, "greater") if alternative == "two-sided"
                 else (_diff_means, alternative))
    ref = stats.permutation_test((x, y), stat, permutation_type="independent",
                                 vectorized=True, n_resamples=200000, batch=50000,
                                 alternative=alt, rng=2)
    p_ref = float(ref.pvalue)
    assert not res.exact and res.n_resamples == 20000
    assert abs(res.pvalue - p_ref) <= _mc_tol(p_ref, 20000, 200000)


def test_two_sample_monte_carlo_null_variance():
    rng = np.random.default_rng(12)
    x, y = rng.exponential(size=25), rng.exponential(size=40)
    res = two_sample_permutation_test(x, y, n_resamples=40000, rng=3)
    # reference: permutation variance of mean(x*) - mean(y*) is
    # S**2 * (1/n_x + 1/n_y), S**2 = pooled variance with ddof=1 (closed form)
    z = np.concatenate([x, y])
    var_ref = np.var(z, ddof=1) * (1 / 25 + 1 / 40)
    null = res.null_distribution
    assert abs(null.mean()) <= 4 * math.sqrt(var_ref / null.size)
    assert abs(null.var() - var_ref) <= 5 * var_ref * math.sqrt(2 / null.size)


def test_two_sample_shift_and_swap_invariance():
    rng = np.random.default_rng(13)
    x, y = rng.normal(1, 1, 5), rng.normal(0, 1, 5)
    a = two_sample_permutation_test(x, y)
    b = two_sample_permutation_test(x + 100.0, y + 100.0)
    c = two_sample_permutation_test(y, x)
    # reference: result on the original data
    assert b.statistic == pytest.approx(a.statistic, abs=1e-12)
    assert b.pvalue == a.pvalue
    assert c.statistic == pytest.approx(-a.statistic, abs=1e-15)
    assert c.pvalue == a.pvalue


def test_two_sample_batch_independent():
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=30), rng.normal(size=25)
    a = two_sample_permutation_test(x, y, n_resamples=3000, rng=5)
    b = two_sample_permutation_test(x, y, n_resamples=3000, rng=5, batch=7)
    # reference: unbatched run with the same seed
    np.testing.assert_array_equal(a.null_distribution, b.null_distribution)


def test_two_sample_validation_messages():
    with pytest.raises(ValueError, match=r"`y` must contain only finite values"):
        two_sample_permutation_test([1.0, 2.0], [1.0, np.nan])
    with pytest.raises(ValueError, match=r"`x` must contain at least 1 observation"):
        two_sample_permutation_test([], [1.0])
    with pytest.raises(ValueError, match=r"`n_resamples` must be a positive integer, got -3"):
        two_sample_permutation_test([1.0], [2.0], n_resamples=-3)
    with pytest.raises(ValueError, match=r"`alternative` must be one of"):
        two_sample_permutation_test([1.0], [2.0], alternative="bigger")
