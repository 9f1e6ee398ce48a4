"""Tests for hyptest.stats.equivalence against independent references.

References: statsmodels ``ttost_paired`` / ``ttost_ind`` (every number to
1e-10), statsmodels ``DescrStatsW.tconfint_mean`` / ``CompareMeans.tconfint_diff``
for the 1 - 2 alpha intervals, ``pingouin.tost``, and closed forms (limits of
the t distribution for zero variance; the noise-floor formula by hand).
"""

from __future__ import annotations

import math

import numpy as np
import pingouin as pg
import pytest
from statsmodels.stats.weightstats import (
    CompareMeans,
    DescrStatsW,
    ttost_ind,
    ttost_paired,
)

from hyptest.stats.equivalence import (
    EquivalenceResult,
    NoiseFloorMargin,
    min_equivalence_margin,
    noise_floor_margin,
    tost_ind,
    tost_paired,
)

TOL = 1e-10


@pytest.fixture(scope="module")
def paired_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20240611)
    x = rng.normal(0.10, 0.03, size=25)
    y = x + rng.normal(0.004, 0.012, size=25)
    return x, y


@pytest.fixture(scope="module")
def ind_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(0.11, 0.02, size=18), rng.normal(0.10, 0.04, size=27)


def _close(value: float, reference: float) -> bool:
    """Equal within TOL; infinities must match exactly."""
    return value == float(reference) or abs(value - float(reference)) <= TOL


def _check_against_statsmodels(res: EquivalenceResult, ref: tuple) -> None:
    pvalue, (t1, p1, df1), (t2, p2, df2) = ref
    assert _close(res.pvalue, pvalue)
    assert _close(res.pvalue_lower, p1)
    assert _close(res.pvalue_upper, p2)
    assert _close(res.t_lower, t1)
    assert _close(res.t_upper, t2)
    assert _close(res.df, df1) and _close(res.df, df2)


# ---------------------------------------------------------------------------
# tost_paired versus statsmodels / pingouin
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [0.002, 0.006, 0.01, 0.03, (-0.001, 0.012)])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_tost_paired_matches_statsmodels(paired_data, margin, alpha):
    x, y = paired_data
    low, high = (-margin, margin) if np.isscalar(margin) else margin
    res = tost_paired(x, y, margin=margin, alpha=alpha)
    # reference: statsmodels.stats.weightstats.ttost_paired(x, y, low, high)
    #            -> (pvalue, (t_low, p_low, df), (t_upp, p_upp, df))
    ref = ttost_paired(x, y, low, high)
    _check_against_statsmodels(res, ref)
    # reference: DescrStatsW(x - y).tconfint_mean(alpha=2 * alpha)  (the 1 - 2 alpha CI)
    lo, hi = DescrStatsW(x - y).tconfint_mean(alpha=2 * alpha)
    assert abs(res.ci_low - lo) <= TOL and abs(res.ci_high - hi) <= TOL
    # reference: numpy mean of the differences
    assert abs(res.statistic - float(np.mean(x - y))) <= TOL
    # reference: DescrStatsW(x - y).std_mean (standard error of the mean difference)
    assert abs(res.standard_error - DescrStatsW(x - y).std_mean) <= TOL
    assert (res.margin_low, res.margin_high) == (low, high)
    assert res.n == x.size and res.alpha == alpha and res.method == "paired TOST"
    assert res.equivalent is bool(float(ref[0]) < alpha)
    # TOST decision == "1 - 2 alpha CI inside the bounds" (Schuirmann 1987)
    assert res.equivalent is bool(low < lo and hi < high)


@pytest.mark.parametrize("margin", [0.005, 0.01, 0.02])
def test_tost_paired_matches_pingouin(paired_data, margin):
    x, y = paired_data
    res = tost_paired(x, y, margin=margin)
    # reference: pingouin.tost(x, y, bound=margin, paired=True)
    ref = pg.tost(x, y, bound=margin, paired=True)
    assert abs(res.pvalue - float(ref.at["TOST", "pval"])) <= TOL
    assert res.df == float(ref.at["TOST", "dof"])


def test_tost_paired_differences_only_equals_pair(paired_data):
    x, y = paired_data
    a = tost_paired(x, y, margin=0.01)
    b = tost_paired(x - y, margin=0.01)
    # reference: statsmodels.stats.weightstats.ttost_paired(x - y, zeros, -0.01, 0.01)
    _check_against_statsmodels(b, ttost_paired(x - y, np.zeros_like(x), -0.01, 0.01))
    assert abs(a.pvalue - b.pvalue) <= TOL


def test_tost_paired_swap_mirrors(paired_data):
    x, y = paired_data
    a = tost_paired(x, y, margin=0.01)
    b = tost_paired(y, x, margin=0.01)
    # reference: statsmodels.stats.weightstats.ttost_paired(y, x, -0.01, 0.01)
    _check_against_statsmodels(b, ttost_paired(y, x, -0.01, 0.01))
    # symmetric margin: the two one-sided tests swap roles
    assert abs(a.pvalue_lower - b.pvalue_upper) <= TOL
    assert abs(a.pvalue_upper - b.pvalue_lower) <= TOL
    assert abs(a.ci_low + b.ci_high) <= TOL


# ---------------------------------------------------------------------------
# tost_ind versus statsmodels / pingouin
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("usevar", ["pooled", "unequal"])
@pytest.mark.parametrize("margin", [0.005, 0.02, 0.05, (-0.03, 0.01)])
@pytest.mark.parametrize("alpha", [0.05, 0.025])
def test_tost_ind_matches_statsmodels(ind_data, usevar, margin, alpha):
    x, y = ind_data
    low, high = (-margin, margin) if np.isscalar(margin) else margin
    res = tost_ind(x, y, margin=margin, alpha=alpha, usevar=usevar)
    # reference: statsmodels.stats.weightstats.ttost_ind(x, y, low, high, usevar=usevar)
    ref = ttost_ind(x, y, low, high, usevar=usevar)
    _check_against_statsmodels(res, ref)
    # reference: CompareMeans.from_data(x, y).tconfint_diff(alpha=2 * alpha, usevar=usevar)
    cm = CompareMeans.from_data(x, y)
    lo, hi = cm.tconfint_diff(alpha=2 * alpha, usevar=usevar)
    assert abs(res.ci_low - lo) <= TOL and abs(res.ci_high - hi) <= TOL
    # reference: CompareMeans.std_meandiff_pooledvar / std_meandiff_separatevar
    se = cm.std_meandiff_pooledvar if usevar == "pooled" else cm.std_meandiff_separatevar
    assert abs(res.standard_error - se) <= TOL
    assert abs(res.statistic - float(np.mean(x) - np.mean(y))) <= TOL
    assert res.n == x.size + y.size
    assert res.method == ("independent TOST (pooled)" if usevar == "pooled"
                          else "independent TOST (Welch)")
    assert res.equivalent is bool(float(ref[0]) < alpha)


@pytest.mark.parametrize("correction", [False, True])
@pytest.mark.parametrize("margin", [0.01, 0.03])
def test_tost_ind_matches_pingouin(ind_data, correction, margin):
    x, y = ind_data
    res = tost_ind(x, y, margin=margin, usevar="unequal" if correction else "pooled")
    # reference: pingouin.tost(x, y, bound=margin, paired=False, correction=correction)
    ref = pg.tost(x, y, bound=margin, paired=False, correction=correction)
    assert abs(res.pvalue - float(ref.at["TOST", "pval"])) <= TOL
    assert abs(res.df - float(ref.at["TOST", "dof"])) <= TOL


def test_tost_ind_pingouin_docstring_example():
    a = [4, 7, 8, 6, 3, 2]
    b = [6, 8, 7, 10, 11, 9]
    # reference: pingouin.tost(a, b) -> pval 0.965097 (pingouin docstring);
    #            statsmodels ttost_ind(a, b, -1, 1)
    ref = ttost_ind(np.array(a, float), np.array(b, float), -1, 1)
    res = tost_ind(a, b, margin=1)
    _check_against_statsmodels(res, ref)
    assert abs(res.pvalue - float(pg.tost(a, b).at["TOST", "pval"])) <= TOL


# ---------------------------------------------------------------------------
# zero variance (closed form: limits of the t distribution)
# ---------------------------------------------------------------------------


def test_zero_variance_inside_margin_is_equivalent():
    d = np.full(6, 0.01)
    res = tost_paired(d, margin=0.02)
    # closed form: se = 0, t_L = (0.01 + 0.02)/0 = +inf -> P(T >= +inf) = 0;
    #              t_U = (0.01 - 0.02)/0 = -inf -> P(T <= -inf) = 0
    assert res.t_lower == math.inf and res.t_upper == -math.inf
    assert res.pvalue_lower == 0.0 and res.pvalue_upper == 0.0 and res.pvalue == 0.0
    assert res.equivalent is True
    assert res.standard_error == 0.0
    assert res.ci_low == pytest.approx(0.01, abs=1e-15)
    assert res.ci_high == pytest.approx(0.01, abs=1e-15)


def test_zero_variance_outside_margin_is_not_equivalent():
    d = np.full(6, 0.03)
    res = tost_paired(d, margin=0.02)
    # closed form: t_U = (0.03 - 0.02)/0 = +inf -> P(T <= +inf) = 1
    assert res.t_upper == math.inf and res.pvalue_upper == 1.0
    assert res.pvalue_lower == 0.0 and res.pvalue == 1.0
    assert res.equivalent is False


@pytest.mark.parametrize("value", [0.01, 0.03, -0.03])
def test_zero_variance_matches_statsmodels_limits(value):
    d = np.full(6, value)
    res = tost_paired(d, margin=0.02)
    # reference: statsmodels ttost_paired(d, zeros, -0.02, 0.02) -> t = +-inf, p in {0, 1}
    #            (it warns about the division by zero)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = ttost_paired(d, np.zeros_like(d), -0.02, 0.02)
    _check_against_statsmodels(res, ref)


def test_zero_variance_on_bound_is_not_equivalent():
    # 0.5 - 0.25 == 0.25 exactly in binary floating point
    x = np.full(4, 0.5)
    y = np.full(4, 0.25)
    res = tost_paired(x, y, margin=0.25)
    # documented rule: a difference exactly on a bound gives t = 0, p = 1
    assert res.t_upper == 0.0 and res.pvalue_upper == 1.0 and res.pvalue == 1.0
    assert res.equivalent is False


@pytest.mark.parametrize("usevar", ["pooled", "unequal"])
def test_zero_variance_independent(usevar):
    res = tost_ind([1.0, 1.0, 1.0], [1.5, 1.5], margin=1.0, usevar=usevar)
    # closed form: diff = -0.5 inside (-1, 1), se = 0 -> both one-sided p = 0
    assert res.statistic == -0.5 and res.pvalue == 0.0 and res.equivalent is True
    # documented: Welch df is 0/0 and reported as n_x + n_y - 2
    assert res.df == 3.0


def test_one_constant_sample_welch_df():
    x = np.array([0.2, 0.2, 0.2, 0.2])
    y = np.array([0.1, 0.3, 0.25, 0.15, 0.2])
    res = tost_ind(x, y, margin=0.1, usevar="unequal")
    # reference: statsmodels ttost_ind(x, y, -0.1, 0.1, usevar="unequal"); Welch df -> n_y - 1
    _check_against_statsmodels(res, ttost_ind(x, y, -0.1, 0.1, usevar="unequal"))
    assert abs(res.df - 4.0) <= TOL


# ---------------------------------------------------------------------------
# min_equivalence_margin
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_min_margin_paired_closed_form(paired_data, alpha):
    x, y = paired_data
    m = min_equivalence_margin(x, y, alpha=alpha)
    # reference: max(|lo|, |hi|) of DescrStatsW(x - y).tconfint_mean(alpha=2 * alpha)
    lo, hi = DescrStatsW(x - y).tconfint_mean(alpha=2 * alpha)
    assert abs(m - max(abs(lo), abs(hi))) <= TOL
    # reference: statsmodels ttost_paired(x, y, -m*(1 +- 1e-4), m*(1 +- 1e-4)) decides the same
    assert float(ttost_paired(x, y, -m * 1.0001, m * 1.0001)[0]) < alpha
    assert float(ttost_paired(x, y, -m * 0.9999, m * 0.9999)[0]) > alpha
    assert tost_paired(x, y, margin=m * 1.0001, alpha=alpha).equivalent is True
    assert tost_paired(x, y, margin=m * 0.9999, alpha=alpha).equivalent is False


@pytest.mark.parametrize("usevar", ["pooled", "unequal"])
def test_min_margin_independent_closed_form(ind_data, usevar):
    x, y = ind_data
    m = min_equivalence_margin(x, y, paired=False, usevar=usevar)
    # reference: CompareMeans.from_data(x, y).tconfint_diff(alpha=0.1, usevar=usevar)
    lo, hi = CompareMeans.from_data(x, y).tconfint_diff(alpha=0.1, usevar=usevar)
    assert abs(m - max(abs(lo), abs(hi))) <= TOL
    # reference: statsmodels ttost_ind at the margin times 1 +- 1e-4
    assert float(ttost_ind(x, y, -m * 1.0001, m * 1.0001, usevar=usevar)[0]) < 0.05
    assert float(ttost_ind(x, y, -m * 0.9999, m * 0.9999, usevar=usevar)[0]) > 0.05
    assert tost_ind(x, y, margin=m * 1.0001, usevar=usevar).equivalent is True
    assert tost_ind(x, y, margin=m * 0.9999, usevar=usevar).equivalent is False


def test_min_margin_zero_variance():
    # closed form: se = 0, the interval is the point 0.01
    assert min_equivalence_margin(np.full(5, 0.01)) == pytest.approx(0.01, abs=1e-15)


def test_min_margin_needs_y_when_unpaired():
    with pytest.raises(ValueError, match="`y`"):
        min_equivalence_margin([1.0, 2.0, 3.0], paired=False)


# ---------------------------------------------------------------------------
# noise_floor_margin
# ---------------------------------------------------------------------------


def test_noise_floor_margin_closed_form():
    b = np.array([0.10, 0.20, 0.15, 0.05])
    a = b + np.array([0.01, 0.02, 0.03, 0.04])
    nf = noise_floor_margin(a, b, label="SGD seeds 0 vs 1")
    # closed form: d = 0.01 * [1, 2, 3, 4]; mean 0.025; sd = 0.01 * sqrt(5/3);
    #              se = sd / 2; margin = 0.025 + 1.96 * se
    se = 0.01 * math.sqrt(5.0 / 3.0) / 2.0
    assert isinstance(nf, NoiseFloorMargin)
    assert abs(nf.difference - 0.025) <= 1e-12
    assert abs(nf.standard_error - se) <= 1e-12
    assert abs(nf.margin - (0.025 + 1.96 * se)) <= 1e-12
    assert nf.n == 4
    assert "SGD seeds 0 vs 1" in nf.source and "1.96" in nf.source
    swapped = noise_floor_margin(b, a)
    assert abs(swapped.margin - nf.margin) <= 1e-15
    assert abs(swapped.difference + nf.difference) <= 1e-15


def test_noise_floor_margin_identical_replicates_is_zero():
    a = np.array([0.1, 0.2, 0.3])
    # closed form: d = 0 -> margin 0, which TOST refuses as a margin
    nf = noise_floor_margin(a, a.copy())
    assert nf.margin == 0.0
    with pytest.raises(ValueError, match="`margin`"):
        tost_paired(a, a, margin=nf.margin)


# ---------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------


def test_n_equal_one_raises():
    with pytest.raises(ValueError, match="`x`.*at least 2"):
        tost_paired([0.1], [0.2], margin=0.1)
    with pytest.raises(ValueError, match="`y`.*at least 2"):
        tost_ind([0.1, 0.2], [0.2], margin=0.1)
    with pytest.raises(ValueError, match="`x`.*at least 2"):
        min_equivalence_margin([0.1])


@pytest.mark.parametrize("where", ["x", "y"])
def test_nan_raises_naming_argument(where):
    good = [0.1, 0.2, 0.3]
    bad = [0.1, float("nan"), 0.3]
    args = (bad, good) if where == "x" else (good, bad)
    with pytest.raises(ValueError, match=f"`{where}`.*finite"):
        tost_paired(*args, margin=0.1)
    with pytest.raises(ValueError, match=f"`{where}`.*finite"):
        tost_ind(*args, margin=0.1)
    with pytest.raises(ValueError, match=f"`values_{'a' if where == 'x' else 'b'}`"):
        noise_floor_margin(*args)


@pytest.mark.parametrize("margin", [0.0, -0.1, float("nan"), (0.1, -0.1), (0.1, 0.1)])
def test_bad_margin_raises(margin):
    with pytest.raises(ValueError, match="`margin`"):
        tost_paired([0.1, 0.2, 0.3], margin=margin)


@pytest.mark.parametrize("margin", ["0.1", True, (0.1,), None])
def test_bad_margin_type_raises(margin):
    with pytest.raises(TypeError, match="`margin`"):
        tost_paired([0.1, 0.2, 0.3], margin=margin)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.7, -0.1])
def test_bad_alpha_raises(alpha):
    with pytest.raises(ValueError, match="`alpha`"):
        tost_paired([0.1, 0.2, 0.3], margin=0.1, alpha=alpha)


def test_bad_usevar_and_lengths_raise():
    with pytest.raises(ValueError, match="`usevar`"):
        tost_ind([0.1, 0.2], [0.3, 0.4], margin=0.1, usevar="welch")
    with pytest.raises(ValueError, match="`y`.*same length"):
        tost_paired([0.1, 0.2, 0.3], [0.1, 0.2], margin=0.1)


def test_result_is_frozen(paired_data):
    res = tost_paired(*paired_data, margin=0.01)
    with pytest.raises(AttributeError):
        res.pvalue = 0.0  # type: ignore[misc]
