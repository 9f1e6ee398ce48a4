"""Equivalence tests (TOST) for mean differences, and how to choose a margin.

Two one-sided t-tests (Schuirmann 1987; Lakens 2017) decide whether a mean
difference lies inside an equivalence interval ``(margin_low, margin_high)``.
The functions are pure: numpy arrays in, frozen result dataclasses out, no
randomness.  Margins are either given (the study file) or derived from a
noise floor measured in the same study (:func:`noise_floor_margin`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Literal, cast

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from hyptest.stats.permutation import _validate_sample

__all__ = [
    "EquivalenceResult",
    "NoiseFloorMargin",
    "min_equivalence_margin",
    "noise_floor_margin",
    "tost_ind",
    "tost_paired",
]

UseVar = Literal["pooled", "unequal"]

_USEVARS: tuple[str, ...] = ("pooled", "unequal")
#: Normal quantile used by :func:`noise_floor_margin` (two-sided 95 %).
_NOISE_FLOOR_Z: float = 1.96


@dataclass(frozen=True, slots=True)
class EquivalenceResult:
    """Result of a two one-sided tests (TOST) equivalence test.

    Attributes
    ----------
    statistic : float
        Observed mean difference: ``mean(x - y)`` (paired) or
        ``mean(x) - mean(y)`` (independent samples).
    pvalue : float
        TOST p-value ``max(pvalue_lower, pvalue_upper)``.
    pvalue_lower : float
        p-value of the one-sided test of ``H0: diff <= margin_low`` against
        ``diff > margin_low``.
    pvalue_upper : float
        p-value of the one-sided test of ``H0: diff >= margin_high`` against
        ``diff < margin_high``.
    t_lower : float
        ``(statistic - margin_low) / standard_error``.
    t_upper : float
        ``(statistic - margin_high) / standard_error``.
    df : float
        Degrees of freedom of the t reference distribution (``n - 1``
        paired, ``n_x + n_y - 2`` pooled, Welch-Satterthwaite unequal).
    standard_error : float
        Standard error of `statistic`.
    ci_low : float
        Lower end of the ``1 - 2 alpha`` confidence interval of the difference.
    ci_high : float
        Upper end of the ``1 - 2 alpha`` confidence interval.
    margin_low : float
        Lower equivalence bound.
    margin_high : float
        Upper equivalence bound.
    alpha : float
        Significance level of each one-sided test.
    n : int
        Number of pairs (paired) or ``n_x + n_y`` (independent samples).
    method : str
        ``"paired TOST"``, ``"independent TOST (pooled)"`` or
        ``"independent TOST (Welch)"``.
    equivalent : bool
        ``pvalue < alpha``; equivalently ``margin_low < ci_low`` and
        ``ci_high < margin_high``.
    """

    statistic: float
    pvalue: float
    pvalue_lower: float
    pvalue_upper: float
    t_lower: float
    t_upper: float
    df: float
    standard_error: float
    ci_low: float
    ci_high: float
    margin_low: float
    margin_high: float
    alpha: float
    n: int
    method: str
    equivalent: bool


@dataclass(frozen=True, slots=True)
class NoiseFloorMargin:
    """An equivalence margin derived from two replicates that should agree.

    Attributes
    ----------
    margin : float
        ``|difference| + 1.96 * standard_error`` (symmetric: use it as
        ``(-margin, margin)``).  Zero when the two replicates are identical.
    difference : float
        ``mean(values_a - values_b)``.
    standard_error : float
        ``std(values_a - values_b, ddof=1) / sqrt(n)``.
    n : int
        Number of paired units.
    source : str
        Human-readable provenance for the report, e.g.
        ``"noise floor (GD seeds 0 vs 1): |mean diff| + 1.96 SE over 120 paired units"``.
    """

    margin: float
    difference: float
    standard_error: float
    n: int
    source: str


@dataclass(frozen=True, slots=True)
class _TostInput:
    """Validated arguments of the TOST functions."""

    x: np.ndarray
    y: np.ndarray | None
    low: float
    high: float
    alpha: float
    usevar: str


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _validate_alpha(alpha: object) -> float:
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, Real):
        raise TypeError(f"`alpha` must be a float in (0, 0.5), got {alpha!r}")
    a = float(alpha)
    if not 0.0 < a < 0.5:
        raise ValueError(
            f"`alpha` must be a float in (0, 0.5) (the CI level is 1 - 2 alpha), got {a!r}"
        )
    return a


def _validate_margin(margin: object) -> tuple[float, float]:
    """Return ``(low, high)`` from a positive scalar or a ``(low, high)`` pair."""
    if isinstance(margin, (bool, np.bool_)):
        raise TypeError(
            f"`margin` must be a positive number or a (low, high) pair, got {margin!r}"
        )
    if isinstance(margin, Real):
        m = float(margin)
        if not (math.isfinite(m) and m > 0):
            raise ValueError(
                f"`margin` must be a finite positive number or a (low, high) pair, got {m!r}"
            )
        return -m, m
    if isinstance(margin, np.ndarray) and margin.ndim != 1:
        raise TypeError(
            f"`margin` must be a positive number or a (low, high) pair, got {margin!r}"
        )
    if isinstance(margin, (tuple, list, np.ndarray)) and len(margin) == 2:
        low, high = margin[0], margin[1]
        if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, Real) for v in (low, high)):
            raise TypeError(f"`margin` bounds must be real numbers, got {margin!r}")
        lo, hi = float(low), float(high)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(
                f"`margin` as (low, high) needs finite low < high, got ({lo!r}, {hi!r})"
            )
        return lo, hi
    raise TypeError(f"`margin` must be a positive number or a (low, high) pair, got {margin!r}")


def _validate_usevar(usevar: object) -> str:
    if not isinstance(usevar, str) or usevar not in _USEVARS:
        raise ValueError(
            f"`usevar` must be one of {', '.join(map(repr, _USEVARS))}, got {usevar!r}"
        )
    return usevar


def _validate_tost_paired(x: ArrayLike, y: ArrayLike | None, margin: object,
                          alpha: object) -> _TostInput:
    """Validate the arguments of :func:`tost_paired`."""
    xa = _validate_sample(x, "x", min_size=2)
    if y is None:
        d = xa
    else:
        ya = _validate_sample(y, "y", min_size=2)
        if ya.shape != xa.shape:
            raise ValueError(
                "`y` must have the same length as `x` (paired observations), "
                f"got len(x)={xa.size} and len(y)={ya.size}"
            )
        d = xa - ya
    low, high = _validate_margin(margin)
    return _TostInput(d, None, low, high, _validate_alpha(alpha), "paired")


def _validate_tost_ind(x: ArrayLike, y: ArrayLike, margin: object, alpha: object,
                       usevar: object) -> _TostInput:
    """Validate the arguments of :func:`tost_ind`."""
    xa = _validate_sample(x, "x", min_size=2)
    ya = _validate_sample(y, "y", min_size=2)
    low, high = _validate_margin(margin)
    return _TostInput(xa, ya, low, high, _validate_alpha(alpha), _validate_usevar(usevar))


# ---------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------


def _one_sample_moments(d: np.ndarray) -> tuple[float, float, float]:
    """Mean, standard error and df of a one-sample t statistic."""
    n = d.size
    return float(np.mean(d)), float(np.std(d, ddof=1)) / math.sqrt(n), float(n - 1)


def _two_sample_moments(x: np.ndarray, y: np.ndarray, usevar: str) -> tuple[float, float, float]:
    """Mean difference, standard error and df of a two-sample t statistic."""
    nx, ny = x.size, y.size
    vx, vy = float(np.var(x, ddof=1)), float(np.var(y, ddof=1))
    diff = float(np.mean(x) - np.mean(y))
    if usevar == "pooled":
        df = float(nx + ny - 2)
        pooled = ((nx - 1) * vx + (ny - 1) * vy) / df
        return diff, math.sqrt(pooled * (1.0 / nx + 1.0 / ny)), df
    ax, ay = vx / nx, vy / ny
    se2 = ax + ay
    if se2 > 0:
        df = se2**2 / (ax**2 / (nx - 1) + ay**2 / (ny - 1))
    else:  # 0/0: both samples constant; df is irrelevant to p (t = +-inf or 0)
        df = float(nx + ny - 2)
    return diff, math.sqrt(se2), float(df)


def _one_sided(diff: float, bound: float, se: float, df: float,
               upper: bool) -> tuple[float, float]:
    """t statistic and p-value of one of the two one-sided tests.

    ``upper=False`` tests ``H0: diff <= bound`` (p = P(T >= t)),
    ``upper=True`` tests ``H0: diff >= bound`` (p = P(T <= t)).  With a zero
    standard error the difference is known exactly: ``t = +-inf`` and
    ``p = 0`` when it lies strictly on the alternative side, else ``p = 1``
    (``t = 0`` when it sits exactly on the bound).
    """
    gap = diff - bound
    if se > 0:
        t = gap / se
        p = float(stats.t.cdf(t, df)) if upper else float(stats.t.sf(t, df))
        return float(t), p
    if gap == 0:
        return 0.0, 1.0
    t = math.copysign(math.inf, gap)
    on_alternative = gap < 0 if upper else gap > 0
    return t, 0.0 if on_alternative else 1.0


def _tost(diff: float, se: float, df: float, inp: _TostInput, n: int,
          method: str) -> EquivalenceResult:
    t_lo, p_lo = _one_sided(diff, inp.low, se, df, upper=False)
    t_hi, p_hi = _one_sided(diff, inp.high, se, df, upper=True)
    half = float(stats.t.ppf(1.0 - inp.alpha, df)) * se if se > 0 else 0.0
    p = max(p_lo, p_hi)
    return EquivalenceResult(
        statistic=diff,
        pvalue=p,
        pvalue_lower=p_lo,
        pvalue_upper=p_hi,
        t_lower=t_lo,
        t_upper=t_hi,
        df=df,
        standard_error=se,
        ci_low=diff - half,
        ci_high=diff + half,
        margin_low=inp.low,
        margin_high=inp.high,
        alpha=inp.alpha,
        n=int(n),
        method=method,
        equivalent=bool(p < inp.alpha),
    )


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def tost_paired(
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    margin: float | tuple[float, float],
    alpha: float = 0.05,
) -> EquivalenceResult:
    """Test whether a paired mean difference lies inside an equivalence margin.

    Two one-sided paired t-tests [1]_ [2]_: ``H0: mean(x - y) <= low`` and
    ``H0: mean(x - y) >= high``.  Equivalence is declared when both are
    rejected at level `alpha`, i.e. when the ``1 - 2 alpha`` confidence
    interval of the mean difference lies inside ``(low, high)``.

    Parameters
    ----------
    x : array_like, shape (n,)
        First member of each pair, or the differences themselves when `y` is
        None.  ``n >= 2``; NaN or inf raises ``ValueError``.
    y : array_like, shape (n,), optional
        Second member of each pair (same length as `x`, finite).
    margin : float or (float, float)
        Equivalence bounds on the mean difference: a positive number ``m``
        means ``(-m, m)``; a pair gives ``(low, high)`` with ``low < high``.
        In the units of `x` (here: order sensitivity, a probability SD).
    alpha : float, default 0.05
        Level of each one-sided test, in ``(0, 0.5)``.

    Returns
    -------
    EquivalenceResult
        ``method == "paired TOST"``, ``df == n - 1``; see
        :class:`EquivalenceResult` for every field.

    Raises
    ------
    ValueError
        If a sample has fewer than 2 values or a non-finite value, the lengths
        differ, `margin` is not positive (or ``low >= high``), or `alpha` is
        outside ``(0, 0.5)``.
    TypeError
        If an argument has the wrong type.

    See Also
    --------
    tost_ind : independent samples.
    min_equivalence_margin : the smallest margin that would give equivalence.
    hyptest.stats.verdict.decide : the four-verdict reading with a difference test.

    Notes
    -----
    With ``d = x - y``, ``se = sd(d, ddof=1) / sqrt(n)`` and ``df = n - 1``,

    .. math:: t_L = (\\bar d - low) / se,\\quad p_L = P(T_{df} \\ge t_L),\\qquad
              t_U = (\\bar d - high) / se,\\quad p_U = P(T_{df} \\le t_U),

    and ``pvalue = max(p_L, p_U)``.  The interval is
    ``mean(d) -+ t_{1-alpha, df} * se``.  This reproduces
    ``statsmodels.stats.weightstats.ttost_paired(x, y, low, high)`` and, for a
    symmetric margin, ``pingouin.tost(x, y, bound=margin, paired=True)``.

    *Zero variance.*  When all differences are equal (``se == 0``) the mean
    difference is known exactly: each one-sided test has ``t = +-inf`` and
    ``p = 0`` when the difference lies strictly inside its bound, ``p = 1``
    otherwise; a difference exactly on a bound gives ``t = 0`` and ``p = 1``
    (the equivalence interval is open).  The CI collapses to the point.
    statsmodels' ``ttost_paired`` gives the same infinite t and 0/1
    p-values (with a divide-by-zero warning) except on a bound, where it
    returns NaN; its Welch ``ttost_ind`` returns NaN df and p-values when
    both samples are constant.

    References
    ----------
    .. [1] Schuirmann, D. J. (1987). A comparison of the two one-sided tests
       procedure and the power approach for assessing the equivalence of
       average bioavailability. *Journal of Pharmacokinetics and
       Biopharmaceutics*, 15(6), 657-680.
    .. [2] Lakens, D. (2017). Equivalence tests: a practical primer for t
       tests, correlations, and meta-analyses. *Social Psychological and
       Personality Science*, 8(4), 355-362.

    Examples
    --------
    >>> import numpy as np
    >>> from hyptest.stats.equivalence import tost_paired
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(0.10, 0.02, size=40)
    >>> y = x + rng.normal(0.001, 0.01, size=40)
    >>> res = tost_paired(x, y, margin=0.01)
    >>> res.equivalent, round(res.pvalue, 6), res.df
    (True, 0.000672, 39.0)
    >>> round(res.ci_low, 4), round(res.ci_high, 4)
    (-0.0069, -0.0011)
    """
    inp = _validate_tost_paired(x, y, margin, alpha)
    diff, se, df = _one_sample_moments(inp.x)
    return _tost(diff, se, df, inp, inp.x.size, "paired TOST")


def tost_ind(
    x: ArrayLike,
    y: ArrayLike,
    *,
    margin: float | tuple[float, float],
    alpha: float = 0.05,
    usevar: UseVar = "pooled",
) -> EquivalenceResult:
    """Test whether the difference of two independent means lies inside a margin.

    Two one-sided two-sample t-tests [1]_ [2]_ on ``mean(x) - mean(y)``.

    Parameters
    ----------
    x : array_like, shape (n_x,)
        First sample, ``n_x >= 2``, finite.
    y : array_like, shape (n_y,)
        Second sample, ``n_y >= 2``, finite.
    margin : float or (float, float)
        Equivalence bounds on ``mean(x) - mean(y)``: ``m > 0`` means
        ``(-m, m)``; a pair gives ``(low, high)``.
    alpha : float, default 0.05
        Level of each one-sided test, in ``(0, 0.5)``.
    usevar : {"pooled", "unequal"}, default "pooled"
        ``"pooled"``: Student's pooled variance, ``df = n_x + n_y - 2``;
        ``"unequal"``: Welch's standard error with Welch-Satterthwaite df.

    Returns
    -------
    EquivalenceResult
        ``n == n_x + n_y``; `method` is ``"independent TOST (pooled)"`` or
        ``"independent TOST (Welch)"``.

    Raises
    ------
    ValueError
        If a sample has fewer than 2 values or a non-finite value, or
        `margin`, `alpha` or `usevar` is not accepted.
    TypeError
        If an argument has the wrong type.

    See Also
    --------
    tost_paired

    Notes
    -----
    Pooled: ``se^2 = s_p^2 (1/n_x + 1/n_y)`` with
    ``s_p^2 = ((n_x-1) s_x^2 + (n_y-1) s_y^2) / (n_x + n_y - 2)``.  Welch:
    ``se^2 = s_x^2/n_x + s_y^2/n_y`` and
    ``df = se^4 / ((s_x^2/n_x)^2/(n_x-1) + (s_y^2/n_y)^2/(n_y-1))``.  The
    tests and CI are then as in :func:`tost_paired`, which also documents the
    zero-variance rule (when both samples are constant the Welch df is 0/0 and
    is reported as ``n_x + n_y - 2``; it does not affect the p-values).  This
    reproduces ``statsmodels.stats.weightstats.ttost_ind(x, y, low, high,
    usevar=usevar)`` and ``pingouin.tost(x, y, bound=margin,
    correction=(usevar == "unequal"))``.  Unlike statsmodels, a sample of one
    observation is rejected (the Welch variance needs two).

    References
    ----------
    .. [1] Schuirmann, D. J. (1987). A comparison of the two one-sided tests
       procedure and the power approach for assessing the equivalence of
       average bioavailability. *Journal of Pharmacokinetics and
       Biopharmaceutics*, 15(6), 657-680.
    .. [2] Lakens, D. (2017). Equivalence tests: a practical primer for t
       tests, correlations, and meta-analyses. *Social Psychological and
       Personality Science*, 8(4), 355-362.

    Examples
    --------
    >>> from hyptest.stats.equivalence import tost_ind
    >>> a = [4, 7, 8, 6, 3, 2]
    >>> b = [6, 8, 7, 10, 11, 9]
    >>> res = tost_ind(a, b, margin=1)
    >>> round(res.pvalue, 6), res.df, res.equivalent
    (0.965097, 10.0, False)
    >>> round(tost_ind(a, b, margin=1, usevar="unequal").df, 4)
    9.4944
    """
    inp = _validate_tost_ind(x, y, margin, alpha, usevar)
    diff, se, df = _two_sample_moments(inp.x, cast(np.ndarray, inp.y), inp.usevar)
    label = "pooled" if inp.usevar == "pooled" else "Welch"
    return _tost(diff, se, df, inp, inp.x.size + inp.y.size, f"independent TOST ({label})")


def min_equivalence_margin(
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    alpha: float = 0.05,
    paired: bool = True,
    usevar: UseVar = "pooled",
) -> float:
    """Return the smallest symmetric margin at which TOST would declare equivalence.

    Parameters
    ----------
    x : array_like, shape (n,)
        First sample, or the paired differences when `y` is None.
    y : array_like, optional
        Second sample (paired with `x` when `paired` is True).  Required when
        `paired` is False.
    alpha : float, default 0.05
        Level of each one-sided test, in ``(0, 0.5)``.
    paired : bool, default True
        Paired (:func:`tost_paired`) or independent (:func:`tost_ind`) design.
    usevar : {"pooled", "unequal"}, default "pooled"
        Variance model of the independent design; ignored when paired.

    Returns
    -------
    float
        ``max(|ci_low|, |ci_high|)`` of the ``1 - 2 alpha`` t-interval of the
        difference.  TOST with symmetric margin ``m`` declares equivalence iff
        ``m`` is strictly larger than this value.

    Raises
    ------
    ValueError
        As :func:`tost_paired` / :func:`tost_ind`, or if `y` is None while
        `paired` is False.

    Notes
    -----
    ``p_L < alpha`` iff ``ci_low > -m`` and ``p_U < alpha`` iff
    ``ci_high < m`` (both with ``t_{1-alpha, df}``), so the infimum of the
    margins giving equivalence is ``max(-ci_low, ci_high)``, which equals
    ``max(|ci_low|, |ci_high|)`` because ``ci_low <= ci_high``.  It is the
    equivalence-test counterpart of a confidence bound ("the data rule out
    differences larger than this"), computed in closed form [1]_.

    References
    ----------
    .. [1] Lakens, D. (2017). Equivalence tests: a practical primer for t
       tests, correlations, and meta-analyses. *Social Psychological and
       Personality Science*, 8(4), 355-362.

    Examples
    --------
    >>> from hyptest.stats.equivalence import min_equivalence_margin, tost_paired
    >>> d = [0.010, -0.004, 0.003, 0.007, -0.001, 0.005]
    >>> m = min_equivalence_margin(d)
    >>> round(m, 5)
    0.00758
    >>> tost_paired(d, margin=m * 1.001).equivalent, tost_paired(d, margin=m * 0.999).equivalent
    (True, False)
    """
    if not isinstance(paired, (bool, np.bool_)):
        raise TypeError(f"`paired` must be True or False, got {paired!r}")
    if paired:
        inp = _validate_tost_paired(x, y, 1.0, alpha)
        diff, se, df = _one_sample_moments(inp.x)
    else:
        if y is None:
            raise ValueError("`y` is required when `paired` is False, got None")
        inp = _validate_tost_ind(x, y, 1.0, alpha, usevar)
        diff, se, df = _two_sample_moments(inp.x, cast(np.ndarray, inp.y), inp.usevar)
    half = float(stats.t.ppf(1.0 - inp.alpha, df)) * se if se > 0 else 0.0
    return float(max(abs(diff - half), abs(diff + half)))


def noise_floor_margin(
    values_a: ArrayLike,
    values_b: ArrayLike,
    *,
    label: str | None = None,
) -> NoiseFloorMargin:
    """Derive an equivalence margin from the noise floor of two equivalent replicates.

    Give the per-unit values (e.g. per-(demo set, query) order sensitivity)
    of two *replicates that should be equivalent*: the same GD method trained
    with two different seeds, or ICL on two disjoint, exchangeable demo sets.
    Their difference is what "no real difference" looks like in this study;
    the margin is that difference plus its sampling error.

    Parameters
    ----------
    values_a, values_b : array_like, shape (n,)
        Paired per-unit values of the two replicates (same units, same
        order), ``n >= 2``, finite.
    label : str, optional
        Short description of the replicates, copied into ``source``
        (e.g. ``"SGD seeds 0 vs 1"``).

    Returns
    -------
    NoiseFloorMargin
        ``margin = |mean(a - b)| + 1.96 * sd(a - b, ddof=1) / sqrt(n)``, with
        ``difference``, ``standard_error``, ``n`` and a ``source`` string.

    Raises
    ------
    ValueError
        If a sample has fewer than 2 values or a non-finite value, or the
        lengths differ.
    TypeError
        If `label` is not a string or None, or the data are not numeric.

    Notes
    -----
    "The difference two equivalent replicates show, plus its sampling
    error": ``|d_bar| + z_{0.975} se(d_bar)``, the upper end of a normal 95 %
    interval for ``|E(a - b)|`` when the two replicates really are
    equivalent.  Differences between methods smaller than this are not
    distinguishable from replicate noise, which is the defensible reading of
    an equivalence margin [1]_.

    Rules for using it (the margin must not be tuned on the comparison it
    judges):

    * the replicates must be measured on the same units and with the same
      number of orders as the comparison, but must *not* be the data of the
      comparison itself (e.g. use a second GD seed that is not otherwise used);
    * use the same scale as the tested difference (probability SDs, not
      logits);
    * a margin of exactly 0 means the replicates are identical (e.g. a
      deterministic method re-run); it cannot serve as a margin and
      :func:`tost_paired` rejects it -- use a replicate with real noise
      (different seed or demo set) or a margin from the study file.

    References
    ----------
    .. [1] Lakens, D. (2017). Equivalence tests: a practical primer for t
       tests, correlations, and meta-analyses. *Social Psychological and
       Personality Science*, 8(4), 355-362.

    Examples
    --------
    >>> from hyptest.stats.equivalence import noise_floor_margin
    >>> nf = noise_floor_margin([0.12, 0.10, 0.15, 0.11], [0.11, 0.12, 0.13, 0.10],
    ...                         label="SGD seeds 0 vs 1")
    >>> round(nf.margin, 5), nf.n
    (0.02197, 4)
    >>> nf.source
    'noise floor (SGD seeds 0 vs 1): |mean(a - b)| + 1.96 SE over 4 paired units'
    """
    if label is not None and not isinstance(label, str):
        raise TypeError(f"`label` must be a string or None, got {label!r}")
    a = _validate_sample(values_a, "values_a", min_size=2)
    b = _validate_sample(values_b, "values_b", min_size=2)
    if a.shape != b.shape:
        raise ValueError(
            "`values_b` must have the same length as `values_a` (paired units), "
            f"got {a.size} and {b.size}"
        )
    d = a - b
    n = d.size
    diff = float(np.mean(d))
    se = float(np.std(d, ddof=1)) / math.sqrt(n)
    what = f" ({label})" if label else ""
    return NoiseFloorMargin(
        margin=abs(diff) + _NOISE_FLOOR_Z * se,
        difference=diff,
        standard_error=se,
        n=int(n),
        source=(
            f"noise floor{what}: |mean(a - b)| + {_NOISE_FLOOR_Z} SE over {n} paired units"
        ),
    )
