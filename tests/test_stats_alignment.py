"""Tests for hyptest.stats.alignment against independent references.

References: a naive loop over every within-block relabelling
(``itertools.product`` of ``itertools.permutations``) recomputing
``np.corrcoef``; ``scipy.stats.pearsonr`` for the observed statistic; the
binomial distribution of the rejection count under independence; closed-form
invariances of the centred correlation.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from scipy import stats

from hyptest.stats.alignment import AlignmentResult, order_alignment_test


def _centre(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=1, keepdims=True)


def _naive_null(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Naive reference: every product of per-block permutations, np.corrcoef each time."""
    n_blocks, n_orders, _ = a.shape
    a_c, b_c = _centre(a), _centre(b)
    out = []
    per_block = list(itertools.permutations(range(n_orders)))
    for combo in itertools.product(per_block, repeat=n_blocks):
        permuted = np.stack([b_c[s, list(pi), :] for s, pi in enumerate(combo)])
        out.append(np.corrcoef(a_c.ravel(), permuted.ravel())[0, 1])
    return np.array(out)


def _naive_p(null: np.ndarray, observed: float, alternative: str) -> float:
    tol = 1e-9
    if alternative == "greater":
        k = np.sum(null >= observed - tol)
    elif alternative == "less":
        k = np.sum(null <= observed + tol)
    else:
        k = np.sum(np.abs(null) >= abs(observed) - tol)
    return k / null.size


# ---------------------------------------------------------------------------
# exact test versus naive enumeration
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 4, 5), (3, 3, 2)])
def test_exact_matches_naive_enumeration(alternative, shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.normal(size=shape)
    b = 0.4 * a + rng.normal(size=shape)
    res = order_alignment_test(a, b, n_resamples=10000, alternative=alternative)
    # reference: naive loop over itertools.product(permutations(range(n_orders)), repeat=n_blocks)
    #            with np.corrcoef(a_c.ravel(), b_c_permuted.ravel())[0, 1]
    null = _naive_null(a, b)
    # reference: scipy.stats.pearsonr on the order-centred values
    r = stats.pearsonr(_centre(a).ravel(), _centre(b).ravel()).statistic
    assert isinstance(res, AlignmentResult)
    assert res.exact is True
    assert res.n_resamples == math.factorial(shape[1]) ** shape[0] == null.size
    assert abs(res.statistic - r) <= 1e-12
    np.testing.assert_allclose(res.null_distribution, null, rtol=0, atol=1e-12)
    assert abs(res.pvalue - _naive_p(null, r, alternative)) <= 1e-12
    assert (res.n_blocks, res.n_orders, res.n_queries) == shape
    assert res.alternative == alternative


def test_identity_is_first_null_entry():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(2, 3, 6))
    b = rng.normal(size=(2, 3, 6))
    res = order_alignment_test(a, b)
    # reference: np.corrcoef of the centred values (identity relabelling)
    r = np.corrcoef(_centre(a).ravel(), _centre(b).ravel())[0, 1]
    assert abs(res.null_distribution[0] - r) <= 1e-12


# ---------------------------------------------------------------------------
# Monte Carlo
# ---------------------------------------------------------------------------


def test_monte_carlo_close_to_exact():
    rng = np.random.default_rng(12)
    a = rng.normal(size=(2, 4, 3))
    b = 0.3 * a + rng.normal(size=(2, 4, 3))
    b_mc = 300  # < 4!**2 = 576, so Monte Carlo
    mc = order_alignment_test(a, b, n_resamples=b_mc, rng=0)
    # reference: naive exact enumeration of all 576 relabellings
    null = _naive_null(a, b)
    p_exact = _naive_p(null, null[0], "greater")
    p = min(max(p_exact, 1e-3), 1 - 1e-3)
    assert mc.exact is False and mc.n_resamples == b_mc
    assert abs(mc.pvalue - p_exact) <= 4 * math.sqrt(p * (1 - p) / b_mc) + 1 / (b_mc + 1)
    # Monte Carlo null values are drawn from the exact null's support
    support = np.unique(np.round(null, 10))
    assert np.all(np.isin(np.round(mc.null_distribution, 10), support))


def test_planted_alignment_is_detected():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 6, 10))
    b = a + 0.3 * rng.normal(size=a.shape)
    res = order_alignment_test(a, b, n_resamples=2000, rng=2)
    # reference: scipy.stats.pearsonr on the centred values gives the statistic
    r = stats.pearsonr(_centre(a).ravel(), _centre(b).ravel()).statistic
    assert abs(res.statistic - r) <= 1e-12 and r > 0.9
    # reference: Phipson-Smyth minimum (0 + 1) / (2000 + 1) -- no null value reaches r
    assert res.pvalue == pytest.approx(1 / 2001, abs=1e-15)
    assert res.pvalue < 0.01


def test_independent_inputs_reject_at_nominal_rate():
    start = time.perf_counter()
    rng = np.random.default_rng(77)
    n_sim, alpha = 100, 0.1
    rejections = 0
    for _ in range(n_sim):
        a = rng.normal(size=(3, 5, 6))
        b = rng.normal(size=(3, 5, 6))
        rejections += order_alignment_test(a, b, n_resamples=199, rng=rng).pvalue <= alpha
    # reference: scipy.stats.binom(100, 0.1) central 99.9 % range of the rejection count
    lo, hi = stats.binom.ppf([0.0005, 0.9995], n_sim, alpha)
    assert lo <= rejections <= hi, rejections
    assert time.perf_counter() - start < 5.0


# ---------------------------------------------------------------------------
# invariances
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_resamples", [10000, 500])  # exact (3!**3 = 216), Monte Carlo
def test_invariant_to_per_query_constants_and_scale(n_resamples):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(3, 3, 5))
    b = 0.2 * a + rng.normal(size=(3, 3, 5))
    base = order_alignment_test(a, b, n_resamples=n_resamples, rng=4)
    shift_a = rng.normal(size=(3, 1, 5)) * 10  # one constant per (block, query)
    shift_b = rng.normal(size=(3, 1, 5)) * 10
    moved = order_alignment_test(a + shift_a, 3.0 * b + shift_b, n_resamples=n_resamples, rng=4)
    # reference: closed form -- centring over orders removes (block, query) constants and
    #            Pearson's r is invariant to positive rescaling
    assert abs(moved.statistic - base.statistic) <= 1e-10
    np.testing.assert_allclose(moved.null_distribution, base.null_distribution,
                               rtol=0, atol=1e-10)
    assert moved.pvalue == base.pvalue


def test_negating_b_mirrors_alternatives():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(2, 5, 4))
    b = 0.5 * a + rng.normal(size=(2, 5, 4))
    g = order_alignment_test(a, b, n_resamples=999, alternative="greater", rng=6)
    ls = order_alignment_test(a, -b, n_resamples=999, alternative="less", rng=6)
    # reference: closed form r(a, -b) = -r(a, b), and the null flips sign with it
    assert abs(g.statistic + ls.statistic) <= 1e-12
    np.testing.assert_allclose(ls.null_distribution, -g.null_distribution, rtol=0, atol=1e-12)
    assert g.pvalue == ls.pvalue


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["a", "b"])
def test_nan_raises_naming_argument(which):
    x = np.random.default_rng(0).normal(size=(2, 3, 4))
    bad = x.copy()
    bad[1, 2, 3] = np.nan
    args = (bad, x) if which == "a" else (x, bad)
    with pytest.raises(ValueError, match=f"`{which}`.*finite"):
        order_alignment_test(*args)


def test_validation_errors():
    x = np.random.default_rng(0).normal(size=(2, 3, 4))
    with pytest.raises(ValueError, match="`a`.*3-D"):
        order_alignment_test(x[0], x[0])
    with pytest.raises(ValueError, match="`b`.*same shape"):
        order_alignment_test(x, x[:, :2])
    with pytest.raises(ValueError, match="`a`.*2 orders"):
        order_alignment_test(x[:, :1], x[:, :1])
    flat = np.broadcast_to(x[:, :1], x.shape)  # constant across orders
    with pytest.raises(ValueError, match="`b`.*no order effects"):
        order_alignment_test(x, flat)
    with pytest.raises(ValueError, match="`alternative`"):
        order_alignment_test(x, x, alternative="positive")
    with pytest.raises(ValueError, match="`n_resamples`"):
        order_alignment_test(x, x, n_resamples=0)
    with pytest.raises(TypeError, match="`a`"):
        order_alignment_test(x.astype(str), x)
