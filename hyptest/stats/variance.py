"""Order sensitivity as a comparison of spreads (variances).

Order sensitivity is a standard deviation across demo orders, so "ICL is more
order-sensitive than SGD" is a statement about variances.  This module holds
the Brown-Forsythe test, a permutation test of the log variance ratio, and a
paired summary of per-unit SD ratios for reports.  Pure numpy/scipy; the only
randomness comes from the keyword-only ``rng``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from numbers import Real

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from hyptest.stats.permutation import (
    Alternative,
    PermutationResult,
    _validate_alternative,
    _validate_positive_int,
    _validate_rng,
    _validate_sample,
)

__all__ = [
    "LogVarianceRatioSummary",
    "VarianceTestResult",
    "brown_forsythe",
    "log_variance_ratio_permutation_test",
    "paired_log_variance_ratio",
]

#: Absolute tolerance (on the log scale) below which two log variance
#: ratios count as tied; rounding differences are ~1e-14, distinct values of
#: real data differ by far more.
_TIE_TOL: float = 1e-10
#: Target number of array elements per vectorised block (a few MiB).
_BLOCK_ELEMENTS: int = 2**18


@dataclass(frozen=True, slots=True)
class VarianceTestResult:
    """Result of a test of equal variances across groups.

    Attributes
    ----------
    statistic : float
        The F statistic of the one-way ANOVA on absolute deviations from the
        group medians.
    pvalue : float
        Upper tail of ``F(df_between, df_within)`` at `statistic`.
    df_between : int
        ``k - 1`` for ``k`` groups.
    df_within : int
        ``N - k`` for ``N`` observations in total.
    n : int
        Total number of observations ``N``.
    method : str
        ``"Brown-Forsythe (Levene, median-centred)"``.
    """

    statistic: float
    pvalue: float
    df_between: int
    df_within: int
    n: int
    method: str


@dataclass(frozen=True, slots=True)
class LogVarianceRatioSummary:
    """Paired summary of per-unit order SDs of two methods.

    Attributes
    ----------
    statistic : float
        Mean over the used units of ``log(sd_a**2 / sd_b**2)`` (the mean log
        variance ratio; ``2 * log_sd_ratio``).  NaN when no unit is usable.
    log_sd_ratio : float
        Mean over the used units of ``log(sd_a / sd_b)``.
    sd_ratio : float
        ``exp(log_sd_ratio)``: the geometric mean of the per-unit SD ratios
        ("A is this many times as order-sensitive as B").
    standard_error : float
        ``std(log(sd_a / sd_b), ddof=1) / sqrt(n)`` over the used units
        (NaN when ``n < 2``).
    n : int
        Units used (both SDs above `atol`).
    n_total : int
        Units given.
    n_zero_a : int
        Units dropped because only ``sd_a`` is zero (<= `atol`).
    n_zero_b : int
        Units dropped because only ``sd_b`` is zero.
    n_zero_both : int
        Units dropped because both are zero.
    method : str
        ``"mean log SD ratio over units with both SDs > atol"``.
    """

    statistic: float
    log_sd_ratio: float
    sd_ratio: float
    standard_error: float
    n: int
    n_total: int
    n_zero_a: int
    n_zero_b: int
    n_zero_both: int
    method: str


@dataclass(frozen=True, slots=True)
class _GroupsInput:
    groups: tuple[np.ndarray, ...]


@dataclass(frozen=True, slots=True)
class _LogVarInput:
    x: np.ndarray
    y: np.ndarray
    n_resamples: int
    alternative: str
    rng: np.random.Generator


@dataclass(frozen=True, slots=True)
class _PairedSdInput:
    sd_a: np.ndarray
    sd_b: np.ndarray
    atol: float


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _validate_groups(groups: tuple[ArrayLike, ...]) -> _GroupsInput:
    """Validate the arguments of :func:`brown_forsythe`."""
    if len(groups) < 2:
        raise ValueError(f"`groups` must hold at least 2 samples, got {len(groups)}")
    arrays = tuple(
        _validate_sample(g, f"groups[{i}]", min_size=2) for i, g in enumerate(groups)
    )
    if all(a.size <= 2 for a in arrays):
        raise ValueError(
            "`groups` must include at least one sample with 3 or more observations: with "
            "two per group the absolute deviations from the median are constant within "
            f"each group, got sizes {[a.size for a in arrays]}"
        )
    return _GroupsInput(arrays)


def _validate_log_var(x: ArrayLike, y: ArrayLike, n_resamples: object, alternative: object,
                      rng: object) -> _LogVarInput:
    """Validate the arguments of :func:`log_variance_ratio_permutation_test`."""
    xa = _validate_sample(x, "x", min_size=2)
    ya = _validate_sample(y, "y", min_size=2)
    for name, arr in (("x", xa), ("y", ya)):
        if np.all(arr == arr[0]):
            raise ValueError(
                f"`{name}` has zero variance (all {arr.size} values equal {float(arr[0])!r}); "
                "the log variance ratio is undefined"
            )
    return _LogVarInput(
        xa,
        ya,
        _validate_positive_int(n_resamples, "n_resamples"),
        _validate_alternative(alternative),
        _validate_rng(rng),
    )


def _validate_paired_sd(sd_a: ArrayLike, sd_b: ArrayLike, atol: object) -> _PairedSdInput:
    """Validate the arguments of :func:`paired_log_variance_ratio`."""
    a = _validate_sample(sd_a, "sd_a", min_size=1)
    b = _validate_sample(sd_b, "sd_b", min_size=1)
    if a.shape != b.shape:
        raise ValueError(
            "`sd_b` must have the same length as `sd_a` (paired units), "
            f"got {a.size} and {b.size}"
        )
    for name, arr in (("sd_a", a), ("sd_b", b)):
        if np.any(arr < 0):
            i = int(np.flatnonzero(arr < 0)[0])
            raise ValueError(
                f"`{name}` must hold standard deviations (>= 0), "
                f"got {float(arr[i])!r} at index {i}"
            )
    if isinstance(atol, (bool, np.bool_)) or not isinstance(atol, Real):
        raise TypeError(f"`atol` must be a non-negative float, got {atol!r}")
    tol = float(atol)
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"`atol` must be a non-negative finite float, got {tol!r}")
    return _PairedSdInput(a, b, tol)


# ---------------------------------------------------------------------------
# Brown-Forsythe
# ---------------------------------------------------------------------------


def brown_forsythe(*groups: ArrayLike) -> VarianceTestResult:
    """Test equality of spread across groups (Brown-Forsythe / median Levene).

    Parameters
    ----------
    *groups : array_like
        Two or more 1-D samples (e.g. per-order P(gold) of one query under
        two methods), each with at least 2 finite values and at least one
        with 3 or more.

    Returns
    -------
    VarianceTestResult
        F statistic, p-value, degrees of freedom ``(k - 1, N - k)`` and ``N``.

    Raises
    ------
    ValueError
        If fewer than two groups are given, a group has fewer than 2 values
        or a non-finite value, or every group has exactly 2 values.
    TypeError
        If a group is not numeric.

    Notes
    -----
    With ``z_ij = |y_ij - median_i|``, group means ``zbar_i`` and grand mean
    ``zbar``,

    .. math:: W = \\frac{N - k}{k - 1}
              \\frac{\\sum_i n_i (\\bar z_i - \\bar z)^2}
                    {\\sum_i \\sum_j (z_{ij} - \\bar z_i)^2},

    referred to ``F(k - 1, N - k)`` [1]_ [2]_.  This equals
    ``scipy.stats.levene(*groups, center="median")``.  When the denominator
    is zero (every group's absolute deviations are constant) the statistic is
    ``inf`` with ``p = 0`` if the group means of ``z`` differ, and ``0`` with
    ``p = 1`` if they do not (SciPy agrees in the first case and returns NaN
    in the second).

    References
    ----------
    .. [1] Brown, M. B. and Forsythe, A. B. (1974). Robust tests for the
       equality of variances. *Journal of the American Statistical
       Association*, 69(346), 364-367.
    .. [2] Levene, H. (1960). Robust tests for equality of variances. In
       *Contributions to Probability and Statistics*, 278-292. Stanford
       University Press.

    Examples
    --------
    >>> from hyptest.stats.variance import brown_forsythe
    >>> res = brown_forsythe([0.61, 0.72, 0.55, 0.80, 0.47],
    ...                      [0.66, 0.67, 0.65, 0.68, 0.66])
    >>> round(res.statistic, 4), round(res.pvalue, 4), res.df_between, res.df_within
    (7.8081, 0.0234, 1, 8)
    """
    inp = _validate_groups(groups)
    k = len(inp.groups)
    z = [np.abs(g - np.median(g)) for g in inp.groups]
    sizes = np.array([zi.size for zi in z], dtype=np.float64)
    n_total = int(sizes.sum())
    means = np.array([zi.mean() for zi in z])
    grand = float(np.sum(sizes * means) / n_total)
    between = float(np.sum(sizes * (means - grand) ** 2))
    within = float(sum(np.sum((zi - m) ** 2) for zi, m in zip(z, means)))
    dfb, dfw = k - 1, n_total - k
    if within > 0:
        statistic = (dfw / dfb) * between / within
        pvalue = float(stats.f.sf(statistic, dfb, dfw))
    elif between > 0:
        statistic, pvalue = math.inf, 0.0
    else:
        statistic, pvalue = 0.0, 1.0
    return VarianceTestResult(
        statistic=float(statistic),
        pvalue=pvalue,
        df_between=int(dfb),
        df_within=int(dfw),
        n=n_total,
        method="Brown-Forsythe (Levene, median-centred)",
    )


# ---------------------------------------------------------------------------
# permutation test of the log variance ratio
# ---------------------------------------------------------------------------


def _log_ratio_rows(values: np.ndarray, nx: int) -> np.ndarray:
    """``log(var(row[:nx]) / var(row[nx:]))`` for each row of ``values``.

    A row where both parts have zero variance gets 0 (equal spread); one
    zero variance gives ``+-inf``.
    """
    va = np.var(values[:, :nx], axis=1, ddof=1)
    vb = np.var(values[:, nx:], axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(va) - np.log(vb)
    out[(va == 0) & (vb == 0)] = 0.0
    return out


def _pvalue(null: np.ndarray, observed: float, alternative: str, exact: bool) -> float:
    gamma = _TIE_TOL * max(1.0, abs(observed))
    if alternative == "greater":
        k = np.count_nonzero(null >= observed - gamma)
    elif alternative == "less":
        k = np.count_nonzero(null <= observed + gamma)
    else:
        k = np.count_nonzero(np.abs(null) >= abs(observed) - gamma)
    p = k / null.size if exact else (k + 1) / (null.size + 1)
    return float(min(p, 1.0))


def log_variance_ratio_permutation_test(
    x: ArrayLike,
    y: ArrayLike,
    *,
    n_resamples: int = 10000,
    alternative: Alternative = "two-sided",
    rng: np.random.Generator | int | None = None,
) -> PermutationResult:
    """Test equality of two variances by relabelling median-centred observations.

    The statistic is ``log(var(x, ddof=1) / var(y, ddof=1))``.  Each sample
    is first centred at its own median, so that under the null hypothesis
    (equal spread, any locations) the pooled centred values are
    approximately exchangeable; the null distribution is that of the
    statistic over random splits of the pool into groups of sizes ``n_x``
    and ``n_y``.

    Parameters
    ----------
    x : array_like, shape (n_x,)
        First sample (e.g. per-order P(gold) of one query under ICL),
        ``n_x >= 2``, finite, not constant.
    y : array_like, shape (n_y,)
        Second sample, ``n_y >= 2``, finite, not constant.
    n_resamples : int, default 10000
        Number of Monte Carlo relabellings.  When
        ``comb(n_x + n_y, n_x) <= n_resamples`` every split is enumerated
        (exact test).
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
        ``"greater"``: ``var(x) > var(y)``; ``"less"``: ``<``;
        ``"two-sided"``: ``!=``, extremeness measured by the absolute log
        ratio.
    rng : numpy.random.Generator or int, optional
        Source of randomness (an int seeds ``numpy.random.default_rng``).
        Unused when the test is exact.

    Returns
    -------
    PermutationResult
        ``statistic`` is the observed log variance ratio, ``n = n_x + n_y``,
        ``method = "log variance ratio, median-centred relabelling"``.  For
        an exact test the null distribution follows the lexicographic order
        of ``itertools.combinations(range(n_x + n_y), n_x)`` (positions of
        the pooled ``[x - median(x), y - median(y)]`` labelled ``x``).

    Raises
    ------
    ValueError
        If a sample has fewer than 2 values, a non-finite value or zero
        variance, if `n_resamples` is not positive or `alternative` is not
        accepted.
    TypeError
        If an argument has the wrong type.

    Notes
    -----
    Monte Carlo relabellings are uniform random permutations of the pool,
    drawn in vectorised blocks as the ``argsort`` of a matrix of i.i.d.
    uniforms; the first ``n_x`` positions form the relabelled ``x``.  The
    p-value is ``k / comb(n_x + n_y, n_x)`` when exact and
    ``(k + 1) / (B + 1)`` otherwise [2]_, where ``k`` counts null values at
    least as extreme as the observed one (ties within ``1e-10`` on the log
    scale count as extreme).  A split in which both parts have zero
    variance gets the value 0; one zero variance gives ``+-inf``.

    Median-centring makes the test one of spread, not location (as in the
    Brown-Forsythe test [1]_); because the medians are estimated, the
    centred values are only approximately exchangeable, so the test is
    approximate.  In 2,000 simulated null data sets per cell (equal spreads,
    different locations, ``n_x, n_y`` in ``(10, 10), (6, 15), (24, 24)``,
    199 resamples, ``alpha = 0.05``) the rejection rate was 0.040-0.052 for
    normal data, 0.047-0.050 for t(3) and 0.061-0.066 for exponential data,
    so it is slightly liberal for strongly skewed samples.

    A sample of odd size contains its median, which becomes an exact 0 after
    centring; relabellings that swap such zeros are ties, so small exact
    tests are coarser than ``1 / comb(n_x + n_y, n_x)``.  The statistic and
    p-value are invariant to shifting either sample and to rescaling both by
    the same factor; swapping `x` and `y` flips the sign of the statistic.

    References
    ----------
    .. [1] Brown, M. B. and Forsythe, A. B. (1974). Robust tests for the
       equality of variances. *Journal of the American Statistical
       Association*, 69(346), 364-367.
    .. [2] Phipson, B. and Smyth, G. K. (2010). Permutation p-values should
       never be zero: calculating exact p-values when permutations are
       randomly drawn. *Statistical Applications in Genetics and Molecular
       Biology*, 9(1), Article 39.
    .. [3] Good, P. I. (2005). *Permutation, Parametric, and Bootstrap Tests
       of Hypotheses*, 3rd ed., sec. 3.7 (comparing variances). Springer.

    Examples
    --------
    ``comb(10, 5) = 252`` splits are enumerated exactly:

    >>> from hyptest.stats.variance import log_variance_ratio_permutation_test
    >>> icl = [0.41, 0.62, 0.35, 0.70, 0.52]
    >>> sgd = [0.50, 0.55, 0.53, 0.49, 0.56]
    >>> res = log_variance_ratio_permutation_test(icl, sgd, rng=0)
    >>> round(res.statistic, 3), round(res.pvalue, 4), res.exact, res.n_resamples
    (3.11, 0.0476, True, 252)
    """
    inp = _validate_log_var(x, y, n_resamples, alternative, rng)
    nx, ny = inp.x.size, inp.y.size
    n = nx + ny
    pooled = np.concatenate([inp.x - np.median(inp.x), inp.y - np.median(inp.y)])
    pooled -= pooled.mean()  # within-group variances are shift-invariant
    observed = float(np.log(np.var(inp.x, ddof=1)) - np.log(np.var(inp.y, ddof=1)))
    n_splits = math.comb(n, nx)
    exact = n_splits <= inp.n_resamples

    if exact:
        chosen = np.fromiter(
            combinations(range(n), nx), dtype=np.dtype((np.intp, (nx,))), count=n_splits
        ).reshape(n_splits, nx)
        in_x = np.zeros((n_splits, n), dtype=bool)
        np.put_along_axis(in_x, chosen, True, axis=1)
        # stable argsort of ~in_x lists the x positions (ascending), then the y ones
        perms = np.argsort(~in_x, axis=1, kind="stable")
        null = _log_ratio_rows(pooled[perms], nx)
        n_used = n_splits
    else:
        block = max(1, _BLOCK_ELEMENTS // n)
        null = np.empty(inp.n_resamples, dtype=np.float64)
        for start in range(0, inp.n_resamples, block):
            stop = min(start + block, inp.n_resamples)
            perms = np.argsort(inp.rng.random((stop - start, n)), axis=1)
            null[start:stop] = _log_ratio_rows(pooled[perms], nx)
        n_used = inp.n_resamples

    null.setflags(write=False)
    return PermutationResult(
        statistic=observed,
        pvalue=_pvalue(null, observed, inp.alternative, exact),
        null_distribution=null,
        n_resamples=int(n_used),
        exact=bool(exact),
        alternative=inp.alternative,
        n=int(n),
        method="log variance ratio, median-centred relabelling",
    )


# ---------------------------------------------------------------------------
# paired summary of per-unit SDs
# ---------------------------------------------------------------------------


def paired_log_variance_ratio(
    sd_a: ArrayLike,
    sd_b: ArrayLike,
    *,
    atol: float = 0.0,
) -> LogVarianceRatioSummary:
    """Summarise per-unit order SDs of two methods as a mean log ratio.

    Parameters
    ----------
    sd_a, sd_b : array_like, shape (n,)
        Per-unit (e.g. per-(demo set, query)) order standard deviations of
        methods A and B, paired by position; finite and ``>= 0``.  NaN
        raises (drop units with fewer than two orders before calling).
    atol : float, default 0.0
        SDs ``<= atol`` count as zero.  Use a small positive value (e.g.
        ``1e-12``) when a method that is order-invariant in exact arithmetic
        (full-batch GD) shows rounding-level SDs.

    Returns
    -------
    LogVarianceRatioSummary
        Mean log variance ratio (`statistic`), mean log SD ratio, geometric
        mean SD ratio, its standard error, and the counts of used and
        dropped units.

    Raises
    ------
    ValueError
        If the inputs are empty, of different lengths, non-finite or
        negative, or `atol` is negative.
    TypeError
        If an argument has the wrong type.

    Notes
    -----
    ``log_sd_ratio = mean_u log(sd_a[u] / sd_b[u])`` over the units with both
    SDs above `atol`, and ``statistic = 2 * log_sd_ratio``, the mean log
    variance ratio (same scale as :func:`log_variance_ratio_permutation_test`).
    Units where an SD is zero have an infinite or undefined log ratio and are
    dropped; their numbers are reported (``n_zero_a``, ``n_zero_b``,
    ``n_zero_both``) so that the report can say, e.g., "B is exactly
    order-invariant on 40 of 40 units" instead of silently averaging.  When
    no unit is usable every ratio field is NaN.  The geometric mean is the
    natural average of ratios (log-symmetric: swapping A and B inverts it).
    This is a descriptive effect size for reports; test differences in order
    sensitivity with the paired permutation test on ``sd_a - sd_b``.

    Examples
    --------
    >>> from hyptest.stats.variance import paired_log_variance_ratio
    >>> s = paired_log_variance_ratio([0.08, 0.12, 0.05, 0.0], [0.04, 0.06, 0.0, 0.0])
    >>> round(s.sd_ratio, 3), s.n, s.n_zero_b, s.n_zero_both
    (2.0, 2, 1, 1)
    """
    inp = _validate_paired_sd(sd_a, sd_b, atol)
    pos_a = inp.sd_a > inp.atol
    pos_b = inp.sd_b > inp.atol
    use = pos_a & pos_b
    n = int(np.count_nonzero(use))
    if n:
        logs = np.log(inp.sd_a[use]) - np.log(inp.sd_b[use])
        log_sd = float(np.mean(logs))
        se = float(np.std(logs, ddof=1)) / math.sqrt(n) if n >= 2 else math.nan
    else:
        log_sd, se = math.nan, math.nan
    return LogVarianceRatioSummary(
        statistic=2.0 * log_sd,
        log_sd_ratio=log_sd,
        sd_ratio=math.exp(log_sd),
        standard_error=se,
        n=n,
        n_total=int(inp.sd_a.size),
        n_zero_a=int(np.count_nonzero(~pos_a & pos_b)),
        n_zero_b=int(np.count_nonzero(pos_a & ~pos_b)),
        n_zero_both=int(np.count_nonzero(~pos_a & ~pos_b)),
        method="mean log SD ratio over units with both SDs > atol",
    )
