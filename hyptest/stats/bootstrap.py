"""Bootstrap confidence intervals (percentile and BCa), optionally clustered.

Pure functions on numpy arrays.  Randomness comes only from the keyword-only
``rng`` argument.  Without clusters the interval is
:func:`scipy.stats.bootstrap`'s (the standard implementation; an own kernel
was no faster: 0.6-1.6x of scipy's time for n = 40-4000, B = 9999).  The
two-stage cluster bootstrap and its leave-one-cluster-out BCa, which scipy
does not offer, are implemented here, with resamples drawn and evaluated in
vectorised blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from scipy.special import ndtr, ndtri

from .._validation import validate_choice, validate_count, validate_paired, validate_probability, validate_rng, validate_sample

__all__ = [
    "BootstrapResult",
    "bootstrap_ci",
    "paired_bootstrap_ci",
]

Statistic = Literal["mean", "median"]
Method = Literal["percentile", "bca"]

_STATISTICS: tuple[str, ...] = ("mean", "median")
_METHODS: tuple[str, ...] = ("percentile", "bca")
#: Target number of array elements per vectorised block (a few MiB).
_BLOCK_ELEMENTS: int = 2**19


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    """Result of a bootstrap confidence interval.

    Attributes
    ----------
    statistic : float
        Point estimate: the statistic computed on the original data.
    ci_low : float
        Lower end of the confidence interval.
    ci_high : float
        Upper end of the confidence interval.
    confidence : float
        Nominal two-sided coverage, e.g. ``0.95``.
    method : str
        ``"percentile"`` or ``"bca"``.
    n : int
        Number of observations.
    n_resamples : int
        Number of bootstrap resamples ``B``.
    standard_error : float
        Bootstrap standard error: standard deviation (``ddof=1``) of the
        bootstrap distribution.
    bootstrap_distribution : numpy.ndarray
        The statistic on each bootstrap resample, shape ``(B,)``, read-only.
    statistic_name : str
        ``"mean"`` or ``"median"``.
    n_clusters : int or None
        Number of clusters for a cluster bootstrap, else None.
    """

    statistic: float
    ci_low: float
    ci_high: float
    confidence: float
    method: str
    n: int
    n_resamples: int
    standard_error: float
    bootstrap_distribution: np.ndarray
    statistic_name: str
    n_clusters: int | None


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _validate_clusters(clusters: ArrayLike, n: int) -> np.ndarray:
    """Return integer cluster codes ``0..K-1`` for the labels in ``clusters``."""
    if isinstance(clusters, (str, bytes)):
        raise TypeError(
            "`clusters` must be a 1-D array-like of cluster labels, got "
            f"{type(clusters).__name__}"
        )
    labels = np.asarray(clusters)
    if labels.ndim != 1 or labels.size != n:
        raise ValueError(
            f"`clusters` must be 1-D with one label per observation (length {n}), "
            f"got shape {labels.shape}"
        )
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        raise ValueError(
            "`clusters` must not contain NaN labels, got NaN at index "
            f"{int(np.flatnonzero(np.isnan(labels))[0])}"
        )
    if labels.dtype.kind == "O":
        missing = [i for i, v in enumerate(labels.tolist())
                   if v is None or (isinstance(v, float) and v != v)]
        if missing:
            raise ValueError(
                f"`clusters` must not contain missing labels (None/NaN), got one at "
                f"index {missing[0]}"
            )
    try:
        _, codes = np.unique(labels, return_inverse=True)
    except TypeError as exc:
        raise TypeError(
            "`clusters` must hold mutually sortable labels (all numbers or all "
            f"strings), got dtype {labels.dtype}: {exc}"
        ) from exc
    codes = codes.reshape(-1).astype(np.intp)
    n_clusters = int(codes.max()) + 1
    if n_clusters < 2:
        raise ValueError(
            f"`clusters` must contain at least 2 distinct labels, got {n_clusters}"
        )
    return codes


def _validate_bootstrap(
    x: ArrayLike,
    statistic: object,
    confidence: object,
    n_resamples: object,
    method: object,
    clusters: ArrayLike | None,
    batch: object,
    rng: object,
) -> tuple[np.ndarray, str, float, int, str, np.ndarray | None, int | None, np.random.Generator]:
    """Validate the arguments of :func:`bootstrap_ci`."""
    xa = validate_sample(x, "x", min_size=2)
    stat = validate_choice(statistic, "statistic", _STATISTICS)
    conf = validate_probability(confidence, "confidence")
    b = validate_count(n_resamples, "n_resamples")
    meth = validate_choice(method, "method", _METHODS)
    codes = None if clusters is None else _validate_clusters(clusters, xa.size)
    bt = None if batch is None else validate_count(batch, "batch")
    return xa, stat, conf, b, meth, codes, bt, validate_rng(rng)


# ---------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------


def _row_statistic(values: np.ndarray, name: str) -> np.ndarray:
    """Statistic along the last axis of a dense ``(m, k)`` matrix."""
    if name == "mean":
        return values.mean(axis=-1)
    return np.median(values, axis=-1)


def _ragged_row_statistic(values: np.ndarray, valid: np.ndarray, counts: np.ndarray,
                          name: str) -> np.ndarray:
    """Statistic of the ``valid`` entries of each row (``counts`` per row)."""
    if name == "mean":
        return np.where(valid, values, 0.0).sum(axis=-1) / counts
    # NaN-padding sorts to the end; read the middle order statistic(s).
    ordered = np.sort(np.where(valid, values, np.nan), axis=-1)
    lo = ((counts - 1) // 2)[:, None]
    hi = (counts // 2)[:, None]
    return 0.5 * (np.take_along_axis(ordered, lo, axis=-1)[:, 0]
                  + np.take_along_axis(ordered, hi, axis=-1)[:, 0])


def _uniform_index(u: np.ndarray, size: np.ndarray | int) -> np.ndarray:
    """Map uniforms in [0, 1) to integers in ``0..size-1``."""
    idx = (u * size).astype(np.intp)
    return np.minimum(idx, np.asarray(size) - 1)


def _cluster_distribution(x: np.ndarray, codes: np.ndarray, name: str, n_resamples: int,
                          block: int | None, gen: np.random.Generator) -> np.ndarray:
    order = np.argsort(codes, kind="stable")
    xs = x[order]
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    k = sizes.size
    width = int(sizes.max())
    slot = np.arange(width)
    per_row = k * (1 + width)
    block = block or max(1, _BLOCK_ELEMENTS // per_row)
    out = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        m = stop - start
        # One row of uniforms per resample keeps the stream independent of block.
        u = gen.random((m, per_row))
        chosen = _uniform_index(u[:, :k], k)                       # stage 1
        chosen_sizes = sizes[chosen]                              # (m, k)
        pos = _uniform_index(u[:, k:].reshape(m, k, width),
                             chosen_sizes[:, :, None])            # stage 2
        valid = slot[None, None, :] < chosen_sizes[:, :, None]
        idx = np.where(valid, starts[chosen][:, :, None] + pos, 0)
        values = xs[idx].reshape(m, k * width)
        out[start:stop] = _ragged_row_statistic(
            values, valid.reshape(m, k * width), chosen_sizes.sum(axis=1), name
        )
    return out


def _jackknife(x: np.ndarray, codes: np.ndarray, name: str) -> np.ndarray:
    """Leave-one-cluster-out values of the statistic."""
    if name == "mean":
        sums = np.bincount(codes, weights=x)
        sizes = np.bincount(codes)
        return (x.sum() - sums) / (x.size - sizes)
    return np.array([np.median(x[codes != c]) for c in range(int(codes.max()) + 1)])


def _acceleration(jack: np.ndarray) -> float:
    dev = jack.mean() - jack
    den = 6.0 * np.sum(dev**2) ** 1.5
    return float(np.sum(dev**3) / den) if den > 0 else 0.0


def _interval_levels(boot: np.ndarray, estimate: float, alpha: float, method: str,
                     x: np.ndarray, codes: np.ndarray, name: str) -> tuple[float, float]:
    if method == "percentile":
        return alpha / 2, 1 - alpha / 2
    b = boot.size
    below = np.count_nonzero(boot < estimate) + np.count_nonzero(boot <= estimate)
    prop = min(max(below / (2 * b), 0.5 / b), 1 - 0.5 / b)
    z0 = float(ndtri(prop))
    a = _acceleration(_jackknife(x, codes, name))
    levels = []
    for z in (float(ndtri(alpha / 2)), float(ndtri(1 - alpha / 2))):
        levels.append(float(ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))))
    return levels[0], levels[1]


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def bootstrap_ci(
    x: ArrayLike,
    *,
    statistic: Statistic = "mean",
    confidence: float = 0.95,
    n_resamples: int = 9999,
    method: Method = "percentile",
    clusters: ArrayLike | None = None,
    batch: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> BootstrapResult:
    """Compute a bootstrap confidence interval for a mean or median.

    Parameters
    ----------
    x : array_like, shape (n,)
        Observations, ``n >= 2``.  Must be finite: NaN or inf raises
        ``ValueError`` (missing values are never dropped silently).
    statistic : {"mean", "median"}, default "mean"
        Statistic whose sampling distribution is bootstrapped.
    confidence : float, default 0.95
        Two-sided confidence level in ``(0, 1)``.
    n_resamples : int, default 9999
        Number of bootstrap resamples ``B``.
    method : {"percentile", "bca"}, default "percentile"
        Percentile interval, or bias-corrected and accelerated (BCa) interval
        with jackknife acceleration.
    clusters : array_like, shape (n,), optional
        Cluster label of each observation (any sortable labels, at least two
        distinct).  When given, a two-stage cluster bootstrap is used (see
        Notes) and the BCa jackknife leaves out one cluster at a time.
    batch : int, optional
        Number of resamples evaluated per vectorised block (memory bound); by
        default blocks use a few MiB.  The result does not depend on `batch`.
    rng : numpy.random.Generator or int, optional
        Source of randomness (an int seeds ``numpy.random.default_rng``).

    Returns
    -------
    BootstrapResult
        Point estimate, interval, bootstrap standard error and distribution.

    Raises
    ------
    ValueError
        If `x` has fewer than 2 observations, is not 1-D or is non-finite; if
        `clusters` has the wrong length, NaN labels or fewer than 2 clusters;
        or if `statistic`, `confidence`, `n_resamples`, `method` or `batch`
        has an unaccepted value.
    TypeError
        If an argument has the wrong type.

    Notes
    -----
    Resampling.  Ordinary bootstrap: :func:`scipy.stats.bootstrap` (each
    resample draws ``n`` indices uniformly with replacement; its BCa is the
    one below with the leave-one-out jackknife).  Cluster bootstrap (two-stage,
    [2]_ sec. 3.8): with ``K`` clusters, draw ``K`` clusters with replacement;
    then, within each drawn cluster of size ``m_c``, draw ``m_c`` observations
    with replacement; the statistic is computed on the pooled resample (for
    the mean with unequal cluster sizes this is the ratio
    ``sum / count``).  Resampling at both stages re-injects the within-cluster
    variance, so when within-cluster spread is large relative to
    between-cluster spread the interval is somewhat conservative ([2]_
    sec. 3.8 compares this with resampling clusters only).  When every
    cluster has one observation the scheme is the ordinary bootstrap.

    Percentile interval with ``alpha = 1 - confidence`` and bootstrap
    quantiles ``Q`` (linear interpolation, as ``numpy.quantile``):

    .. math:: [Q(\\alpha/2),\\ Q(1 - \\alpha/2)].

    BCa interval [1]_ (sec. 14.3): :math:`[Q(\\alpha_1), Q(\\alpha_2)]` with

    .. math::
        \\alpha_{1,2} = \\Phi\\Big(\\hat z_0 + \\frac{\\hat z_0 + z_{\\alpha/2,\\,1-\\alpha/2}}
        {1 - \\hat a(\\hat z_0 + z_{\\alpha/2,\\,1-\\alpha/2})}\\Big),\\quad
        \\hat a = \\frac{\\sum_i (\\bar\\theta_{(\\cdot)} - \\hat\\theta_{(i)})^3}
        {6\\,[\\sum_i (\\bar\\theta_{(\\cdot)} - \\hat\\theta_{(i)})^2]^{3/2}},

    where :math:`\\hat\\theta_{(i)}` are jackknife (leave-one-out, or
    leave-one-cluster-out) estimates and
    :math:`\\hat z_0 = \\Phi^{-1}(p)` with the mid-rank proportion
    ``p = (#{theta* < theta_hat} + #{theta* <= theta_hat}) / (2B)`` (as
    SciPy does).  ``p`` is clipped to ``[1/(2B), 1 - 1/(2B)]`` so that
    :math:`\\hat z_0` stays finite, and :math:`\\hat a = 0` when all jackknife
    values are equal.

    Degenerate data: if all values of `x` are equal to ``v`` the interval is
    ``[v, v]``, the standard error is 0 and the bootstrap distribution is
    ``B`` copies of ``v`` (no random numbers are drawn).

    References
    ----------
    .. [1] Efron, B. and Tibshirani, R. J. (1993). *An Introduction to the
       Bootstrap*, ch. 13-14. New York: Chapman & Hall.
    .. [2] Davison, A. C. and Hinkley, D. V. (1997). *Bootstrap Methods and
       their Application*, sec. 3.8. Cambridge University Press.
    .. [3] Efron, B. (1987). Better bootstrap confidence intervals.
       *Journal of the American Statistical Association*, 82(397), 171-185.

    Examples
    --------
    >>> import numpy as np
    >>> from hyptest.stats.bootstrap import bootstrap_ci
    >>> x = np.random.default_rng(0).exponential(size=40)
    >>> res = bootstrap_ci(x, method="bca", n_resamples=2000, rng=1)
    >>> round(res.statistic, 3), round(res.ci_low, 3), round(res.ci_high, 3)
    (1.158, 0.869, 1.643)
    >>> res.n, res.n_resamples, res.bootstrap_distribution.shape
    (40, 2000, (2000,))
    """
    xa, name, conf, b, meth, codes, block, gen = _validate_bootstrap(
        x, statistic, confidence, n_resamples, method, clusters, batch, rng
    )
    n_clusters = None if codes is None else int(codes.max()) + 1

    if np.all(xa == xa[0]):
        value = float(xa[0])
        boot = np.full(b, value)
        boot.setflags(write=False)
        return BootstrapResult(
            statistic=value, ci_low=value, ci_high=value, confidence=conf,
            method=meth, n=int(xa.size), n_resamples=b, standard_error=0.0,
            bootstrap_distribution=boot, statistic_name=name, n_clusters=n_clusters,
        )

    estimate = float(_row_statistic(xa, name))
    if codes is None:
        # resamples in blocks of a few MiB (SciPy draws each block's indices in turn from the same stream,
        # so the distribution is the same as in one block, bit for bit)
        block = block or max(1, _BLOCK_ELEMENTS // xa.size)
        ref = stats.bootstrap((xa,), np.mean if name == "mean" else np.median, n_resamples=b, batch=block,
                              vectorized=True, confidence_level=conf, method=meth, rng=gen)
        boot = np.asarray(ref.bootstrap_distribution, dtype=np.float64)
        ci_low, ci_high = ref.confidence_interval
    else:
        boot = _cluster_distribution(xa, codes, name, b, block, gen)
        lo_level, hi_level = _interval_levels(boot, estimate, 1 - conf, meth, xa, codes, name)
        ci_low, ci_high = np.quantile(boot, [lo_level, hi_level])
    se = float(np.std(boot, ddof=1)) if b > 1 else 0.0
    boot.setflags(write=False)
    return BootstrapResult(
        statistic=estimate, ci_low=float(ci_low), ci_high=float(ci_high),
        confidence=conf, method=meth, n=int(xa.size), n_resamples=b,
        standard_error=se, bootstrap_distribution=boot, statistic_name=name,
        n_clusters=n_clusters,
    )


def _validate_paired(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Validate paired samples and return ``x - y``."""
    xa, ya = validate_paired(x, y, min_size=2)
    return xa - ya


def paired_bootstrap_ci(
    x: ArrayLike,
    y: ArrayLike,
    *,
    statistic: Statistic = "mean",
    confidence: float = 0.95,
    n_resamples: int = 9999,
    method: Method = "percentile",
    clusters: ArrayLike | None = None,
    batch: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> BootstrapResult:
    """Compute a bootstrap confidence interval for paired differences ``x - y``.

    Convenience wrapper: ``bootstrap_ci(x - y, ...)`` after checking that the
    samples are paired.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Paired observations of equal length ``n >= 2``; finite values only.
    statistic, confidence, n_resamples, method, clusters, batch, rng
        As in :func:`bootstrap_ci`.

    Returns
    -------
    BootstrapResult
        Interval for the mean (or median) of the differences.

    Raises
    ------
    ValueError
        If the lengths differ, a sample has fewer than 2 values or contains
        NaN/inf, or any other argument is invalid (see :func:`bootstrap_ci`).
    TypeError
        If an argument has the wrong type.

    Notes
    -----
    With ``d_i = x_i - y_i`` the interval is that of :func:`bootstrap_ci`
    applied to ``d``; pairs (and, with `clusters`, their clusters) are
    resampled as units, preserving the within-pair dependence.

    References
    ----------
    .. [1] Efron, B. and Tibshirani, R. J. (1993). *An Introduction to the
       Bootstrap*, sec. 7.2 (paired data). New York: Chapman & Hall.

    Examples
    --------
    >>> from hyptest.stats.bootstrap import paired_bootstrap_ci
    >>> res = paired_bootstrap_ci([0.9, 0.8, 0.75, 0.6], [0.7, 0.8, 0.5, 0.55],
    ...                           n_resamples=1000, rng=0)
    >>> round(res.statistic, 4), res.ci_low <= res.statistic <= res.ci_high
    (0.125, True)
    """
    d = _validate_paired(x, y)
    return bootstrap_ci(
        d, statistic=statistic, confidence=confidence, n_resamples=n_resamples,
        method=method, clusters=clusters, batch=batch, rng=rng,
    )
