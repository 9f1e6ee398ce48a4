"""Tests for hyptest.stats.bootstrap against independent references.

References: scipy.stats.bootstrap (percentile and BCa), closed-form
bootstrap variances, a naive loop implementation of the two-stage cluster
bootstrap, and the known coverage of the percentile interval.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hyptest.stats.bootstrap import BootstrapResult, bootstrap_ci, paired_bootstrap_ci

B = 20000


@pytest.fixture(scope="module")
def skewed() -> np.ndarray:
    return np.random.default_rng(2024).lognormal(mean=0.0, sigma=0.8, size=40)


def _np_stat(name):
    return {"mean": np.mean, "median": np.median}[name]


# ---------------------------------------------------------------------------
# versus scipy.stats.bootstrap: without clusters bootstrap_ci calls it, so these
# check the arguments it passes (level, method, statistic) on another stream;
# the cluster kernel is checked against scipy through singleton clusters below,
# and both against closed forms and coverage
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("confidence", [0.95, 0.90])
def test_mean_ci_matches_scipy(skewed, method, confidence):
    res = bootstrap_ci(skewed, statistic="mean", confidence=confidence,
                       n_resamples=B, method=method, rng=1)
    # reference: scipy.stats.bootstrap((x,), np.mean, confidence_level=confidence,
    #            n_resamples=20000, method=method, rng=2)
    ref = stats.bootstrap((skewed,), np.mean, confidence_level=confidence,
                          n_resamples=B, method=method, rng=2)
    lo, hi = ref.confidence_interval
    width = hi - lo
    assert res.statistic == pytest.approx(np.mean(skewed), rel=1e-14)
    assert abs(res.ci_low - lo) <= 0.04 * width
    assert abs(res.ci_high - hi) <= 0.04 * width
    assert res.standard_error == pytest.approx(ref.standard_error, rel=0.03)
    assert res.n == 40 and res.n_resamples == B and res.method == method


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_median_ci_matches_scipy(skewed, method):
    res = bootstrap_ci(skewed, statistic="median", n_resamples=B, method=method, rng=3)
    # reference: scipy.stats.bootstrap((x,), np.median, n_resamples=20000,
    #            method=method, rng=4)
    ref = stats.bootstrap((skewed,), np.median, n_resamples=B, method=method, rng=4)
    lo, hi = ref.confidence_interval
    width = hi - lo
    # the bootstrap median is discrete; allow a little more Monte Carlo slack
    assert abs(res.ci_low - lo) <= 0.06 * width
    assert abs(res.ci_high - hi) <= 0.06 * width
    assert res.statistic == np.median(skewed)
    assert res.standard_error == pytest.approx(ref.standard_error, rel=0.05)


def test_bca_differs_from_percentile_on_skewed_data_like_scipy(skewed):
    ours = {m: bootstrap_ci(skewed, n_resamples=B, method=m, rng=5) for m in ("percentile", "bca")}
    # reference: scipy.stats.bootstrap((x,), np.mean, method=m, n_resamples=20000, rng=6)
    ref = {m: stats.bootstrap((skewed,), np.mean, method=m, n_resamples=B, rng=6)
           for m in ("percentile", "bca")}
    shift_ours = ours["bca"].ci_high - ours["percentile"].ci_high
    shift_ref = ref["bca"].confidence_interval.high - ref["percentile"].confidence_interval.high
    width = ref["percentile"].confidence_interval.high - ref["percentile"].confidence_interval.low
    assert shift_ref > 0  # right-skewed data: BCa moves the interval right
    assert abs(shift_ours - shift_ref) <= 0.04 * width


def test_bootstrap_standard_error_matches_closed_form():
    x = np.random.default_rng(8).normal(size=25)
    res = bootstrap_ci(x, n_resamples=B, rng=9)
    # reference: ideal bootstrap SE of the mean = sqrt(mean((x - xbar)**2) / n)
    se_ref = math.sqrt(np.var(x, ddof=0) / x.size)
    assert res.standard_error == pytest.approx(se_ref, rel=4 / math.sqrt(2 * B))


# ---------------------------------------------------------------------------
# cluster bootstrap
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_singleton_clusters_reduce_to_ordinary_bootstrap(skewed, statistic):
    clusters = np.arange(skewed.size)[::-1]  # one observation per cluster
    clu = bootstrap_ci(skewed, statistic=statistic, clusters=clusters, n_resamples=B, rng=10)
    # reference: scipy.stats.bootstrap((x,), np.mean / np.median, n_resamples=20000,
    #            method="percentile", rng=11) (ordinary bootstrap)
    ref = stats.bootstrap((skewed,), _np_stat(statistic), n_resamples=B,
                          method="percentile", rng=11)
    assert clu.n_clusters == skewed.size
    assert clu.standard_error == pytest.approx(ref.standard_error, rel=0.05)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert abs(clu.ci_low - ref.confidence_interval.low) <= 0.06 * width
    assert abs(clu.ci_high - ref.confidence_interval.high) <= 0.06 * width


@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_singleton_clusters_bca_matches_scipy_bca(skewed, statistic):
    # the leave-one-cluster-out jackknife equals the ordinary jackknife here
    clu = bootstrap_ci(skewed, statistic=statistic, clusters=np.arange(40), n_resamples=B,
                       method="bca", rng=12)
    # reference: scipy.stats.bootstrap((x,), np.mean / np.median, n_resamples=20000,
    #            method="bca", rng=13)
    ref = stats.bootstrap((skewed,), _np_stat(statistic), n_resamples=B, method="bca", rng=13)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert abs(clu.ci_low - ref.confidence_interval.low) <= 0.06 * width
    assert abs(clu.ci_high - ref.confidence_interval.high) <= 0.06 * width


def test_balanced_two_stage_variance_matches_closed_form():
    rng = np.random.default_rng(14)
    k, m = 12, 5
    cluster_effect = rng.normal(0, 1.0, size=k)
    x = (cluster_effect[:, None] + rng.normal(0, 0.7, size=(k, m))).ravel()
    labels = np.repeat(np.arange(k), m)
    res = bootstrap_ci(x, clusters=labels, n_resamples=B, rng=15)
    # reference (closed form for the two-stage scheme, balanced clusters):
    # Var*(mean) = (1/K) * [ mean_c (ybar_c - ybar)^2 + mean_c(s2_c) / m ],
    # s2_c = within-cluster variance with ddof=0
    y = x.reshape(k, m)
    between = np.mean((y.mean(axis=1) - y.mean()) ** 2)
    within = np.mean(y.var(axis=1, ddof=0)) / m
    se_ref = math.sqrt((between + within) / k)
    assert res.standard_error == pytest.approx(se_ref, rel=4 / math.sqrt(2 * B))
    assert res.n_clusters == k


def _naive_two_stage(x, labels, name, n_boot, seed):
    """Reference: explicit double loop over resamples and drawn clusters."""
    rng = np.random.default_rng(seed)
    groups = [x[labels == c] for c in np.unique(labels)]
    f = _np_stat(name)
    out = np.empty(n_boot)
    for b in range(n_boot):
        parts = []
        for c in rng.integers(0, len(groups), size=len(groups)):
            g = groups[c]
            parts.append(g[rng.integers(0, g.size, size=g.size)])
        out[b] = f(np.concatenate(parts))
    return out


@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_unbalanced_two_stage_matches_naive_loop(statistic):
    rng = np.random.default_rng(16)
    sizes = [1, 2, 3, 5, 8, 4, 2, 6]
    labels = np.repeat(np.array(list("abcdefgh")), sizes)
    effects = rng.normal(0, 1, size=len(sizes))
    x = np.repeat(effects, sizes) + rng.exponential(size=labels.size)
    res = bootstrap_ci(x, statistic=statistic, clusters=labels, n_resamples=B, rng=17)
    # reference: naive loop two-stage bootstrap (_naive_two_stage, 4000 resamples)
    ref = _naive_two_stage(x, labels, statistic, 4000, seed=18)
    sd_ref = ref.std(ddof=1)
    assert res.standard_error == pytest.approx(sd_ref, rel=0.07)
    assert abs(res.bootstrap_distribution.mean() - ref.mean()) <= 4 * sd_ref * math.sqrt(
        1 / B + 1 / ref.size)
    lo, hi = np.quantile(ref, [0.025, 0.975])
    assert abs(res.ci_low - lo) <= 0.08 * (hi - lo)
    assert abs(res.ci_high - hi) <= 0.08 * (hi - lo)


def test_cluster_bca_uses_leave_one_cluster_out_jackknife():
    rng = np.random.default_rng(19)
    sizes = np.array([3, 4, 2, 5, 3, 6, 4, 3, 2, 5])
    labels = np.repeat(np.arange(sizes.size), sizes)
    x = np.repeat(rng.exponential(size=sizes.size), sizes) + rng.normal(0, 0.1, labels.size)
    res_pct = bootstrap_ci(x, clusters=labels, n_resamples=B, rng=20)
    res_bca = bootstrap_ci(x, clusters=labels, n_resamples=B, method="bca", rng=20)
    # reference: BCa computed by hand from the same bootstrap distribution with a
    # naive leave-one-cluster-out jackknife (Efron & Tibshirani 1993, eq. 14.15)
    boot = res_pct.bootstrap_distribution
    theta = x.mean()
    jack = np.array([x[labels != c].mean() for c in range(sizes.size)])
    dev = jack.mean() - jack
    a = np.sum(dev**3) / (6 * np.sum(dev**2) ** 1.5)
    z0 = stats.norm.ppf((np.sum(boot < theta) + np.sum(boot <= theta)) / (2 * boot.size))
    z = stats.norm.ppf([0.025, 0.975])
    levels = stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    lo, hi = np.quantile(boot, levels)
    np.testing.assert_array_equal(res_bca.bootstrap_distribution, boot)
    assert res_bca.ci_low == pytest.approx(lo, rel=1e-12)
    assert res_bca.ci_high == pytest.approx(hi, rel=1e-12)


# ---------------------------------------------------------------------------
# coverage, degenerate data, wrappers, validation
# ---------------------------------------------------------------------------


def test_percentile_coverage_on_normal_samples():
    rng = np.random.default_rng(21)
    true_mean = 1.5
    covered = 0
    for _ in range(200):
        x = rng.normal(true_mean, 2.0, size=30)
        res = bootstrap_ci(x, n_resamples=1000, rng=rng)
        covered += res.ci_low <= true_mean <= res.ci_high
    # reference: nominal 95% coverage (percentile intervals run slightly
    # short at n=30); 200 replications give a binomial sd of ~1.6%
    assert 0.88 <= covered / 200 <= 0.99


@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_degenerate_constant_data(method, statistic):
    x = np.full(12, 0.1)
    res = bootstrap_ci(x, statistic=statistic, method=method, n_resamples=50, rng=0)
    # reference: every resample equals 0.1, so the documented interval is [0.1, 0.1]
    assert (res.statistic, res.ci_low, res.ci_high) == (0.1, 0.1, 0.1)
    assert res.standard_error == 0.0
    np.testing.assert_array_equal(res.bootstrap_distribution, np.full(50, 0.1))
    clu = bootstrap_ci(x, clusters=np.arange(12) % 3, method=method, n_resamples=50, rng=0)
    assert (clu.ci_low, clu.ci_high) == (0.1, 0.1)


def test_paired_bootstrap_equals_bootstrap_of_differences():
    rng = np.random.default_rng(22)
    x, y = rng.normal(size=30), rng.normal(size=30)
    a = paired_bootstrap_ci(x, y, method="bca", n_resamples=2000, rng=3)
    # reference: bootstrap_ci(x - y, method="bca", n_resamples=2000, rng=3)
    b = bootstrap_ci(x - y, method="bca", n_resamples=2000, rng=3)
    assert (a.statistic, a.ci_low, a.ci_high) == (b.statistic, b.ci_low, b.ci_high)
    np.testing.assert_array_equal(a.bootstrap_distribution, b.bootstrap_distribution)


def test_result_independent_of_batch():
    x = np.random.default_rng(23).normal(size=50)
    labels = np.arange(50) // 4
    for kw in ({}, {"clusters": labels}):
        a = bootstrap_ci(x, n_resamples=1000, rng=4, **kw)
        b = bootstrap_ci(x, n_resamples=1000, rng=4, batch=13, **kw)
        # reference: the unbatched run with the same seed
        np.testing.assert_array_equal(a.bootstrap_distribution, b.bootstrap_distribution)


def test_result_is_frozen():
    res = bootstrap_ci([1.0, 2.0, 4.0], n_resamples=100, rng=0)
    assert isinstance(res, BootstrapResult)
    with pytest.raises(AttributeError):
        res.ci_low = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.bootstrap_distribution[0] = 0.0


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "pattern"),
    [
        (([1.0],), {}, ValueError, r"`x` must contain at least 2 observations, got 1"),
        (([1.0, np.nan, 2.0],), {}, ValueError, r"`x` must contain only finite values.*index 1"),
        (([1.0, 2.0],), {"statistic": "mode"}, ValueError,
         r"`statistic` must be one of 'mean', 'median', got 'mode'"),
        (([1.0, 2.0],), {"confidence": 95}, ValueError,
         r"`confidence` must be a float in \(0, 1\), got 95.0"),
        (([1.0, 2.0],), {"confidence": "0.9"}, TypeError, r"`confidence` must be a float"),
        (([1.0, 2.0],), {"n_resamples": 0}, ValueError,
         r"`n_resamples` must be a positive integer, got 0"),
        (([1.0, 2.0],), {"method": "basic"}, ValueError,
         r"`method` must be one of 'percentile', 'bca', got 'basic'"),
        (([1.0, 2.0],), {"clusters": [0]}, ValueError,
         r"`clusters` must be 1-D with one label per observation \(length 2\)"),
        (([1.0, 2.0],), {"clusters": [0, 0]}, ValueError,
         r"`clusters` must contain at least 2 distinct labels, got 1"),
        (([1.0, 2.0],), {"clusters": [0.0, np.nan]}, ValueError,
         r"`clusters` must not contain NaN"),
        (([1.0, 2.0],), {"rng": 1.5}, TypeError, r"`rng` must be None"),
    ],
)
def test_validation_messages(args, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        bootstrap_ci(*args, **kwargs)


def test_paired_validation_messages():
    with pytest.raises(ValueError, match=r"`y` must have the same length as `x`"):
        paired_bootstrap_ci([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"`y` must contain only finite values"):
        paired_bootstrap_ci([1.0, 2.0], [1.0, np.nan])


def test_string_object_cluster_labels_equal_integer_codes():
    rng = np.random.default_rng(24)
    x = rng.normal(size=18)
    codes = np.arange(18) % 6
    names = np.array([f"unit-{c}" for c in codes], dtype=object)  # e.g. a pandas column
    a = bootstrap_ci(x, clusters=names, n_resamples=500, method="bca", rng=1)
    # reference: the same call with integer cluster codes (same sorted label order)
    b = bootstrap_ci(x, clusters=codes, n_resamples=500, method="bca", rng=1)
    assert (a.ci_low, a.ci_high, a.n_clusters) == (b.ci_low, b.ci_high, 6)
    with pytest.raises(ValueError, match=r"`clusters` must not contain missing labels"):
        bootstrap_ci(x, clusters=np.where(codes == 2, None, names))
