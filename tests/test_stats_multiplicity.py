"""Tests for hyptest.stats.multiplicity.

``adjust_pvalues`` is an own numpy kernel (statsmodels' Holm costs a
``gc.collect()`` per call; see ``benchmarks/bench_multiplicity.py``). Its values
are checked against a naive implementation of the textbook definitions (a
double loop over the sorted p-values), R's ``p.adjust`` on a worked example,
and statsmodels' ``multipletests`` (plain Holm, not its Holm-Sidak default).
"""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from hyptest.stats.multiplicity import adjust_pvalues

# our method name -> statsmodels method name (plain Holm, not the default holm-sidak)
SM_METHOD = {"holm": "holm", "bonferroni": "bonferroni", "bh": "fdr_bh"}


def _naive_adjust(p: np.ndarray, method: str) -> np.ndarray:
    """The definitions, one p-value at a time: Holm's step-down max, BH's step-up min, Bonferroni."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = np.empty(m)
    for rank, i in enumerate(order, start=1):
        if method == "bonferroni":
            value = m * p[i]
        elif method == "holm":
            value = max((m - j + 1) * p[order[j - 1]] for j in range(1, rank + 1))
        else:
            value = min(m / j * p[order[j - 1]] for j in range(rank, m + 1))
        out[i] = min(1.0, value)
    return out


def test_r_p_adjust_worked_example():
    p = [0.01, 0.02, 0.03, 0.04, 0.05]
    # R: p.adjust(p, "holm"); p.adjust(p, "BH"); p.adjust(p, "bonferroni")
    np.testing.assert_allclose(adjust_pvalues(p, method="holm"), [0.05, 0.08, 0.09, 0.09, 0.09], rtol=1e-12)
    np.testing.assert_allclose(adjust_pvalues(p, method="bh"), [0.05] * 5, rtol=1e-12)
    np.testing.assert_allclose(adjust_pvalues(p, method="bonferroni"), [0.05, 0.10, 0.15, 0.20, 0.25], rtol=1e-12)


def _random_pvalues(seed: int, m: int, *, ties: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=m - m // 3), rng.beta(0.3, 6.0, size=m // 3)])
    rng.shuffle(p)
    if ties:
        p = np.round(p, 2)  # many exact ties, some 0.0 and 1.0
    return p


@pytest.mark.parametrize("method", ["holm", "bonferroni", "bh"])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_matches_the_definitions(method, ties, seed):
    m = [1, 2, 7, 20, 50, 200][seed]
    p = _random_pvalues(seed, m, ties=ties)
    ours = adjust_pvalues(p, method=method)
    np.testing.assert_allclose(ours, _naive_adjust(p, method), rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", ["holm", "bonferroni", "bh"])
def test_nan_passthrough_and_excluded_from_family(method):
    p = _random_pvalues(7, 30, ties=True)
    nan_at = [0, 5, 6, 29]
    p_nan = p.copy()
    p_nan[nan_at] = np.nan
    ours = adjust_pvalues(p_nan, method=method)
    keep = ~np.isnan(p_nan)
    # reference: the definitions on the non-NaN subset only (family size 26)
    ref = _naive_adjust(p_nan[keep], method)
    assert np.isnan(ours[nan_at]).all()
    np.testing.assert_allclose(ours[keep], ref, rtol=1e-12, atol=0)


def test_shape_preserved_for_2d_input():
    p = _random_pvalues(8, 12, ties=False).reshape(3, 4)
    ours = adjust_pvalues(p, method="bh")
    ref = _naive_adjust(p.ravel(), "bh").reshape(3, 4)
    assert ours.shape == (3, 4)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)


def test_holm_is_not_holm_sidak():
    p = np.array([0.01, 0.02, 0.03, 0.04])
    # reference: multipletests(p, method="holm")[1] = [0.04, 0.06, 0.06, 0.06],
    # whereas the holm-sidak default gives smaller values
    ref = multipletests(p, method="holm")[1]
    np.testing.assert_allclose(adjust_pvalues(p), ref, rtol=1e-12)
    assert not np.allclose(adjust_pvalues(p), multipletests(p)[1])


@pytest.mark.parametrize("method", ["holm", "bonferroni", "bh"])
def test_monotone_and_capped(method):
    p = _random_pvalues(9, 100, ties=True)
    adj = adjust_pvalues(p, method=method)
    order = np.argsort(p, kind="stable")
    ref = _naive_adjust(p, method)
    np.testing.assert_allclose(adj, ref, rtol=1e-12)
    assert np.all(np.diff(adj[order]) >= 0)
    assert adj.max() <= 1.0 and np.all(adj >= p)


def test_edge_cases():
    assert adjust_pvalues([]).shape == (0,)
    assert np.isnan(adjust_pvalues([np.nan, np.nan], method="bh")).all()
    # reference: single test is its own family -> unchanged (multipletests([0.3], "holm"))
    assert adjust_pvalues([0.3]) == pytest.approx(multipletests([0.3], method="holm")[1])


@pytest.mark.parametrize(
    ("pvalues", "kwargs", "exc", "pattern"),
    [
        ([0.1, 1.2], {}, ValueError, r"`pvalues` must lie in \[0, 1\] \(NaN allowed\), got 1.2"),
        ([-0.1], {}, ValueError, r"`pvalues` must lie in \[0, 1\]"),
        ([0.1], {"method": "fdr_bh"}, ValueError,
         r"`method` must be one of 'holm', 'bonferroni', 'bh', got 'fdr_bh'"),
        (["0.1"], {}, TypeError, r"`pvalues` must be an array-like of floats"),
        ("0.1", {}, TypeError, r"`pvalues` must be an array-like of floats"),
    ],
)
def test_validation_messages(pvalues, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        adjust_pvalues(pvalues, **kwargs)
