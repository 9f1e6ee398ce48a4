"""Dai et al.'s metrics (Rec2FTP, SimAOU, SimAM, Kendall) and their summaries vs baselines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cosine as cosine_distance
from scipy.stats import kendalltau

import hyptest.metrics.dai as dai
from hyptest.metrics.dai import (
    Rec2FTPResult,
    SimAMResult,
    kendall_attention,
    kendall_random_baseline,
    rec2ftp,
    simam,
    simaou,
    simaou_random_baseline,
)
from hyptest.metrics.summaries import metric_vs_baseline, metric_with_ci


def _cos(a, b):
    return 1.0 - cosine_distance(a, b)  # scipy's cosine similarity


# ---------------------------------------------------------------------------
# Rec2FTP
# ---------------------------------------------------------------------------


def test_rec2ftp_by_hand():
    zs = [0, 0, 0, 0, 1, 1]
    ft = [1, 1, 1, 0, 1, 0]
    icl = [1, 0, 1, 1, 0, 1]
    res = rec2ftp(zs, ft, icl)
    assert isinstance(res, Rec2FTPResult)
    # ZS wrong & FT right: examples 0, 1, 2 -> 3; of those ICL right: 0, 2 -> 2
    assert (res.numerator, res.denominator) == (2, 3)
    assert res.value == pytest.approx(2 / 3, abs=1e-15)


def test_rec2ftp_undefined_and_batched():
    # FT fixes nothing (no ZS-wrong example is FT-right): NaN, denominator 0 returned
    res = rec2ftp([False, True], [False, True], [True, True])
    assert np.isnan(res.value) and res.numerator == 0 and res.denominator == 0
    gen = np.random.default_rng(0)
    z, f, i = (gen.random((3, 40)) < 0.5 for _ in range(3))
    out = rec2ftp(z, f, i)
    for row in range(3):
        fixed = ~z[row] & f[row]
        assert out.denominator[row] == fixed.sum()
        np.testing.assert_allclose(out.value[row], (fixed & i[row]).sum() / fixed.sum(), atol=1e-15)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (([0, 1], [0, 1, 1], [0, 1]), ValueError, "same shape"),
        (([0, 2], [0, 1], [0, 1]), ValueError, "zs_correct"),
        (([0.0, 1.0], [0, 1], [0, 1]), TypeError, "zs_correct"),
    ],
)
def test_rec2ftp_rejects_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        rec2ftp(*args)


# ---------------------------------------------------------------------------
# SimAOU
# ---------------------------------------------------------------------------


def test_simaou_by_hand():
    zs = np.array([[[1.0, 0.0]]])
    icl = np.array([[[0.0, 2.0]]])
    ft = np.array([[[1.0, 1.0]]])
    # normalised: zs (1,0), icl (0,1), ft (1,1)/sqrt2; updates (-1, 1) and (1/sqrt2 - 1, 1/sqrt2)
    u = np.array([-1.0, 1.0])
    v = np.array([1 / np.sqrt(2) - 1, 1 / np.sqrt(2)])
    # dot = (1 - 1/sqrt2) + 1/sqrt2 = 1; |u| = sqrt2; |v|^2 = 2 - sqrt2
    expected = 1.0 / (np.sqrt(2) * np.sqrt(2 - np.sqrt(2)))  # 0.9238795 = cos(pi/8)
    np.testing.assert_allclose(simaou(icl, ft, zs), [[expected]], atol=1e-12)
    np.testing.assert_allclose(expected, _cos(u, v), atol=1e-12)
    # without normalisation: updates (-1, 2) and (0, 1): 2 / sqrt5
    np.testing.assert_allclose(simaou(icl, ft, zs, normalise=False), [[2 / np.sqrt(5)]], atol=1e-12)


def test_simaou_matches_direct_computation_and_invariances():
    gen = np.random.default_rng(1)
    icl, ft, zs = (gen.normal(size=(4, 3, 16)) for _ in range(3))
    out = simaou(icl, ft, zs)
    assert out.shape == (4, 3)
    unit = lambda x: x / np.linalg.norm(x)  # noqa: E731
    for e in range(4):
        for layer in range(3):
            a, f, z = unit(icl[e, layer]), unit(ft[e, layer]), unit(zs[e, layer])
            np.testing.assert_allclose(out[e, layer], _cos(a - z, f - z), atol=1e-12)
    # swap ICL and FT
    np.testing.assert_allclose(simaou(ft, icl, zs), out, atol=1e-14)
    # normalised: each input may be rescaled on its own
    np.testing.assert_allclose(simaou(3.0 * icl, 0.2 * ft, 7.0 * zs), out, atol=1e-12)
    # unnormalised: only a joint rescaling leaves it unchanged
    raw = simaou(icl, ft, zs, normalise=False)
    np.testing.assert_allclose(simaou(5.0 * icl, 5.0 * ft, 5.0 * zs, normalise=False), raw, atol=1e-12)


def test_simaou_zero_update_is_nan():
    zs = np.array([[1.0, 2.0], [1.0, 0.0]])
    icl = np.array([[2.0, 4.0], [0.0, 1.0]])  # first row: same direction as zs -> zero update
    ft = np.array([[0.0, 1.0], [1.0, 1.0]])
    out = simaou(icl, ft, zs)
    assert np.isnan(out[0]) and np.isfinite(out[1])


def test_simaou_random_baseline():
    gen = np.random.default_rng(2)
    d = 64
    icl, zs = gen.normal(size=(300, 2, d)), gen.normal(size=(300, 2, d))
    base = simaou_random_baseline(icl, zs, rng=np.random.default_rng(9))
    # direct: same draws from the same seed
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    u = unit(icl) - unit(zs)
    r = np.random.default_rng(9).standard_normal(icl.shape)
    direct = (u * r).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(r, axis=-1)
    np.testing.assert_allclose(base, direct, atol=1e-12)
    # Gaussian directions: mean 0, sd 1/sqrt(d) = 0.125 (600 draws: se of mean ~0.005)
    assert abs(base.mean()) < 0.025
    assert base.std() == pytest.approx(1 / np.sqrt(d), rel=0.15)
    # seeded: reproducible
    again = simaou_random_baseline(icl, zs, rng=3)
    np.testing.assert_array_equal(simaou_random_baseline(icl, zs, rng=3), again)


def test_simaou_uniform_baseline_reproduces_reference_bias():
    # the reference code's uniform [0,1) draws: cos(u, R) ~ sqrt(3)/2 * mean(u) sqrt(d) / |u|
    d = 4096
    u = np.full((1, d), 1.0)  # a fixed update with positive mean (ICL = zs + u, unnormalised)
    zs = np.zeros((1, d))
    got = simaou_random_baseline(u, zs, rng=0, normalise=False, distribution="uniform")
    # mean(u) sqrt(d)/|u| = 1 here, so the expected value is sqrt(3)/2 = 0.866 (not 0)
    assert got[0] == pytest.approx(np.sqrt(3) / 2, abs=0.01)


def test_simaou_rejects_bad_input():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="same shape"):
        simaou(x, x, np.ones((2, 4)))
    with pytest.raises(ValueError, match="`ft`.*finite"):
        simaou(x, np.full((2, 3), np.nan), x)
    with pytest.raises(TypeError, match="rng"):
        simaou_random_baseline(x, x, rng=None)
    with pytest.raises(ValueError, match="distribution"):
        simaou_random_baseline(x, x, rng=0, distribution="cauchy")


# ---------------------------------------------------------------------------
# SimAM
# ---------------------------------------------------------------------------


def test_simam_by_hand():
    icl = np.array([[[[1.0, 0.0], [1.0, 1.0]]]])  # 1 example, 1 layer, 2 heads, 2 positions
    ft = np.array([[[[1.0, 1.0], [1.0, 1.0]]]])
    zs = np.array([[[[0.0, 1.0], [1.0, -1.0]]]])
    res = simam(icl, ft, zs)
    assert isinstance(res, SimAMResult)
    # ICL vs FT: head 0 cos((1,0),(1,1)) = 1/sqrt2; head 1 cos((1,1),(1,1)) = 1; mean
    np.testing.assert_allclose(res.icl_ft, [[(1 / np.sqrt(2) + 1) / 2]], atol=1e-12)
    # ICL vs ZS: head 0 cos((1,0),(0,1)) = 0; head 1 cos((1,1),(1,-1)) = 0
    np.testing.assert_allclose(res.icl_zs, [[0.0]], atol=1e-12)
    # ZS vs FT: head 0 cos((0,1),(1,1)) = 1/sqrt2; head 1 cos((1,-1),(1,1)) = 0
    np.testing.assert_allclose(res.zs_ft, [[1 / (2 * np.sqrt(2))]], atol=1e-12)


def test_simam_matches_direct_computation_and_invariances():
    gen = np.random.default_rng(4)
    icl, ft, zs = (gen.normal(size=(3, 2, 4, 9)) for _ in range(3))
    res = simam(icl, ft, zs)
    assert res.icl_ft.shape == (3, 2)
    for e in range(3):
        for layer in range(2):
            want = np.mean([_cos(icl[e, layer, h], ft[e, layer, h]) for h in range(4)])
            np.testing.assert_allclose(res.icl_ft[e, layer], want, atol=1e-12)
            want = np.mean([_cos(icl[e, layer, h], zs[e, layer, h]) for h in range(4)])
            np.testing.assert_allclose(res.icl_zs[e, layer], want, atol=1e-12)
    # symmetric: swapping ICL and FT swaps nothing in icl_ft
    np.testing.assert_allclose(simam(ft, icl, zs).icl_ft, res.icl_ft, atol=1e-14)
    # positive rescaling of one map per head
    scale = gen.uniform(0.1, 10.0, size=(3, 2, 4, 1))
    np.testing.assert_allclose(simam(scale * icl, ft, zs).icl_ft, res.icl_ft, atol=1e-12)
    # zero padding on the same positions (the reference code's left padding) changes nothing
    pad = lambda x: np.concatenate([np.zeros((3, 2, 4, 5)), x], axis=-1)  # noqa: E731
    padded = simam(pad(icl), pad(ft), pad(zs))
    np.testing.assert_allclose(padded.icl_ft, res.icl_ft, atol=1e-12)
    np.testing.assert_allclose(padded.zs_ft, res.zs_ft, atol=1e-12)


def test_simam_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        simam(np.ones((1, 2, 3)), np.ones((1, 2, 3)), np.ones((1, 2, 4)))
    with pytest.raises(ValueError, match="icl_map.*at least 2"):
        simam(np.ones(3), np.ones(3), np.ones(3))


# ---------------------------------------------------------------------------
# Kendall
# ---------------------------------------------------------------------------


def test_kendall_by_hand():
    # pairs of (0.1, 0.5, 0.4) vs (1, 2, 3): (0,1) C, (0,2) C, (1,2) D -> (2 - 1) / 3
    assert kendall_attention([0.1, 0.5, 0.4], [1.0, 2.0, 3.0]) == pytest.approx(1 / 3, abs=1e-15)
    # with a tie in x: x = (1, 1, 2), y = (1, 2, 3): pairs (0,1) tied in x, (0,2) C, (1,2) C
    # tau_b = 2 / sqrt((3 - 1) * 3) = 2 / sqrt(6)
    assert kendall_attention([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(2 / np.sqrt(6), abs=1e-15)


@pytest.mark.parametrize("block", [2**20, 7])
def test_kendall_matches_scipy_with_ties(monkeypatch, block):
    monkeypatch.setattr(dai, "_BLOCK_ELEMENTS", block)  # 7 forces the blocked loops
    gen = np.random.default_rng(5)
    x = gen.integers(0, 6, size=(3, 2, 15)).astype(float)  # many ties
    y = gen.integers(0, 6, size=(3, 2, 15)).astype(float)
    out = kendall_attention(x, y)
    for e in range(3):
        for layer in range(2):
            # scipy.stats.kendalltau(x, y) default: variant="b"
            want = kendalltau(x[e, layer], y[e, layer]).statistic
            np.testing.assert_allclose(out[e, layer], want, atol=1e-12)


def test_kendall_invariances_and_nan():
    gen = np.random.default_rng(6)
    x, y = gen.normal(size=(4, 12)), gen.normal(size=(4, 12))
    ref = kendall_attention(x, y)
    np.testing.assert_allclose(kendall_attention(y, x), ref, atol=1e-15)
    # softmax (strictly increasing per row) leaves the ranks unchanged
    soft = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    np.testing.assert_allclose(kendall_attention(soft, y), ref, atol=1e-15)
    # reversing one row's order flips the sign
    np.testing.assert_allclose(kendall_attention(-x, y), -ref, atol=1e-15)
    # a constant row has no ranking: NaN, as scipy
    assert np.isnan(kendall_attention(np.ones(5), np.arange(5.0)))
    assert np.isnan(kendalltau(np.ones(5), np.arange(5.0)).statistic)


def test_kendall_random_baseline():
    gen = np.random.default_rng(7)
    n = 10
    icl = gen.normal(size=(2000, n))
    tau = kendall_random_baseline(icl, rng=np.random.default_rng(3))
    # direct: scipy on the same uniform draws
    r = np.random.default_rng(3).random(icl.shape)
    for i in range(5):
        np.testing.assert_allclose(tau[i], kendalltau(icl[i], r[i]).statistic, atol=1e-12)
    # null moments: mean 0, var 2(2n+5)/(9n(n-1)) = 50/810 = 0.0617 (se of mean ~0.0056)
    assert abs(tau.mean()) < 0.02
    assert tau.var() == pytest.approx(2 * (2 * n + 5) / (9 * n * (n - 1)), rel=0.1)


def test_kendall_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        kendall_attention([1.0], [2.0])
    with pytest.raises(ValueError, match="same shape"):
        kendall_attention([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="rng"):
        kendall_random_baseline([1.0, 2.0], rng=1.5)


# ---------------------------------------------------------------------------
# summaries (metric with CI, metric vs its baseline)
# ---------------------------------------------------------------------------


def test_metric_with_ci():
    x = np.array([0.2, 0.4, 0.6, 0.8, 0.5, 0.3])
    row = metric_with_ci(x, n_resamples=999, rng=0)
    assert row.shape[0] == 1
    assert row.statistic[0] == pytest.approx(x.mean(), abs=1e-15)  # 2.8 / 6
    assert row.ci_low[0] < row.statistic[0] < row.ci_high[0]
    assert row.n[0] == 6 and row.n_clusters[0] is None
    # constant values: a degenerate interval at the value
    const = metric_with_ci(np.full(5, 0.7), n_resamples=99, rng=0)
    assert const.ci_low[0] == const.ci_high[0] == pytest.approx(0.7)
    clustered = metric_with_ci(x, clusters=[0, 0, 1, 1, 2, 2], n_resamples=99, rng=0)
    assert clustered.n_clusters[0] == 3


def test_metric_vs_baseline_exact_by_hand():
    metric = np.array([1.5, 2.5, 3.5])
    baseline = np.array([0.5, 0.5, 0.5])
    # d = (1, 2, 3), mean 2; all 2^3 = 8 sign vectors enumerated (8 <= n_resamples);
    # |mean| >= 2 only for (+,+,+) and (-,-,-): p = 2 / 8
    row = metric_vs_baseline(metric, baseline, n_resamples=999, rng=0)
    assert row.statistic[0] == pytest.approx(2.0)
    assert row.pvalue[0] == pytest.approx(0.25)
    assert bool(row.exact[0]) and row.n[0] == 3
    # one-sided "greater": only (+,+,+) -> 1/8
    greater = metric_vs_baseline(metric, baseline, n_resamples=999, alternative="greater", rng=0)
    assert greater.pvalue[0] == pytest.approx(0.125)
    # swapping metric and baseline flips the statistic and keeps the two-sided p-value
    swapped = metric_vs_baseline(baseline, metric, n_resamples=999, rng=0)
    assert swapped.statistic[0] == pytest.approx(-2.0) and swapped.pvalue[0] == pytest.approx(0.25)


def test_metric_vs_baseline_rejects_unpaired():
    with pytest.raises(ValueError, match="paired"):
        metric_vs_baseline([1.0, 2.0], [1.0, 2.0, 3.0], rng=0)
    with pytest.raises(TypeError, match="rng"):
        metric_vs_baseline([1.0, 2.0], [1.0, 2.0], rng=None)
