"""Permutation tests for mean differences (paired sign-flip and two-sample).

The functions here are pure: they take numpy arrays (or array-likes), draw
randomness only from the keyword-only ``rng`` argument, and return frozen
result dataclasses.  Null distributions are computed in vectorised blocks,
never with a Python loop per resample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from .._validation import validate_choice, validate_count, validate_paired, validate_rng, validate_sample

__all__ = [
    "PermutationResult",
    "paired_permutation_test",
    "two_sample_permutation_test",
]

Alternative = Literal["two-sided", "greater", "less"]

_ALTERNATIVES: tuple[str, ...] = ("two-sided", "greater", "less")
#: Largest ``n`` for which ``exact=True`` enumerates all ``2**n`` sign vectors.
_MAX_EXACT_N: int = 24
#: Relative tolerance factor (in units of machine epsilon) for ties.
_TIE_EPS_FACTOR: float = 100.0
#: Target number of array elements per vectorised block (about 2 MiB of
#: float64 / intp work space per temporary; small blocks stay in cache).
_BLOCK_ELEMENTS: int = 2**18

# Row ``b`` of this (256, 8) matrix holds the 8 bits of the byte ``b``
# (least-significant bit first).
_BYTE_BITS: np.ndarray = (
    (np.arange(256, dtype=np.uint16)[:, None] >> np.arange(8, dtype=np.uint16)) & 1
).astype(np.float64)
_BYTE_BITS.setflags(write=False)


@dataclass(frozen=True, slots=True)
class PermutationResult:
    """Result of a permutation test.

    Attributes
    ----------
    statistic : float
        Observed test statistic: the mean difference ``mean(x - y)`` for the
        paired test, ``mean(x) - mean(y)`` for the two-sample test.
    pvalue : float
        Permutation p-value: ``k / N`` for an exact test, ``(k + 1) / (B + 1)``
        for a Monte Carlo test, where ``k`` counts null statistics at least as
        extreme as the observed one.
    null_distribution : numpy.ndarray
        The statistic under every enumerated (exact) or sampled (Monte Carlo)
        rearrangement, shape ``(n_resamples,)``, read-only.
    n_resamples : int
        Number of rearrangements actually used: ``2**n`` (paired) or
        ``comb(n_x + n_y, n_x)`` (two-sample) when exact, else the requested
        number of Monte Carlo draws.
    exact : bool
        Whether the null distribution was enumerated exactly.
    alternative : str
        ``"two-sided"``, ``"greater"`` or ``"less"``.
    n : int
        Number of pairs (paired test) or total number of observations
        ``n_x + n_y`` (two-sample test).
    method : str
        ``"paired sign-flip"`` or ``"two-sample relabelling"``.
    """

    statistic: float
    pvalue: float
    null_distribution: np.ndarray
    n_resamples: int
    exact: bool
    alternative: str
    n: int
    method: str


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _validate_paired(
    x: ArrayLike,
    y: ArrayLike | None,
    n_resamples: object,
    alternative: object,
    exact: object,
    batch: object,
    rng: object,
) -> tuple[np.ndarray, int, str, bool | str, int | None, np.random.Generator]:
    """Validate the arguments of :func:`paired_permutation_test`."""
    if y is not None:
        xa, ya = validate_paired(x, y)
        d = xa - ya
    else:
        d = validate_sample(x, "x")
    b = validate_count(n_resamples, "n_resamples")
    alt = validate_choice(alternative, "alternative", _ALTERNATIVES)
    if isinstance(exact, str):
        if exact != "auto":
            raise ValueError(f"`exact` must be 'auto', True or False, got {exact!r}")
        ex: bool | str = "auto"
    elif isinstance(exact, (bool, np.bool_)):
        ex = bool(exact)
    else:
        raise TypeError(f"`exact` must be 'auto', True or False, got {exact!r}")
    if ex is True and d.size > _MAX_EXACT_N:
        raise ValueError(
            f"`exact`=True enumerates 2**n sign vectors and is allowed only for "
            f"n <= {_MAX_EXACT_N} pairs, got n={d.size}; use exact='auto' or False"
        )
    return d, b, alt, ex, None if batch is None else validate_count(batch, "batch"), validate_rng(rng)


def _validate_two_sample(
    x: ArrayLike,
    y: ArrayLike,
    n_resamples: object,
    alternative: object,
    batch: object,
    rng: object,
) -> tuple[np.ndarray, np.ndarray, int, str, int | None, np.random.Generator]:
    """Validate the arguments of :func:`two_sample_permutation_test`."""
    xa = validate_sample(x, "x")
    ya = validate_sample(y, "y")
    return (
        xa,
        ya,
        validate_count(n_resamples, "n_resamples"),
        validate_choice(alternative, "alternative", _ALTERNATIVES),
        None if batch is None else validate_count(batch, "batch"),
        validate_rng(rng),
    )


# ---------------------------------------------------------------------------
# shared numerics
# ---------------------------------------------------------------------------


def _pvalue(
    null: np.ndarray, observed: float, alternative: str, gamma: float, exact: bool
) -> float:
    """Count null statistics at least as extreme as ``observed`` (with tie
    tolerance ``gamma``) and turn the count into a p-value."""
    if alternative == "greater":
        count = np.count_nonzero(null >= observed - gamma)
    elif alternative == "less":
        count = np.count_nonzero(null <= observed + gamma)
    else:
        count = np.count_nonzero(np.abs(null) >= abs(observed) - gamma)
    if exact:
        p = count / null.size
    else:
        p = (count + 1) / (null.size + 1)
    return float(min(p, 1.0))


def _tie_tolerance(observed: float, scale: float) -> float:
    """Absolute tolerance below which null and observed statistics count as tied."""
    return _TIE_EPS_FACTOR * np.finfo(np.float64).eps * max(abs(observed), scale)


def _freeze(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------
# paired sign-flip test
# ---------------------------------------------------------------------------


def paired_permutation_test(
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    n_resamples: int = 10000,
    alternative: Alternative = "two-sided",
    exact: bool | Literal["auto"] = "auto",
    batch: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> PermutationResult:
    """Test whether paired differences have mean zero by random sign flips.

    Under the null hypothesis the distribution of each difference
    ``d_i = x_i - y_i`` is symmetric about zero, so every one of the ``2**n``
    sign vectors ``s`` is equally likely.  The test statistic is the mean
    difference and its null distribution is that of ``mean(s * d)``.

    Parameters
    ----------
    x : array_like, shape (n,)
        First member of each pair, or the differences themselves when `y` is
        None.  Must be finite: NaN or inf raises ``ValueError`` (missing pairs
        are never dropped silently; remove or impute them first).
    y : array_like, shape (n,), optional
        Second member of each pair.  Same length as `x`, finite.
    n_resamples : int, default 10000
        Number of Monte Carlo sign vectors.  Also the threshold for
        ``exact="auto"``: enumeration is used when ``2**n <= n_resamples``.
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
        ``"greater"``: mean difference > 0; ``"less"``: < 0;
        ``"two-sided"``: != 0, extremeness measured by ``|mean|``.
    exact : {"auto", True, False}, default "auto"
        ``True`` forces enumeration of all ``2**n`` sign vectors (only for
        ``n <= 24``); ``False`` forces Monte Carlo; ``"auto"`` enumerates when
        ``2**n <= n_resamples``.
    batch : int, optional
        Number of resamples evaluated per vectorised block; bounds memory to
        about ``batch * ceil(n / 8) * 8`` bytes.  By default blocks are sized
        to a few MiB (cache-friendly).  The result does not depend on `batch`.
    rng : numpy.random.Generator or int, optional
        Source of randomness (an int is used as a seed for
        ``numpy.random.default_rng``).  Unused when the test is exact.

    Returns
    -------
    PermutationResult
        ``statistic`` is ``mean(d)``; ``null_distribution`` holds the
        sign-flipped means.  For an exact test entry ``k`` corresponds to
        flipping observation ``j`` iff bit ``j`` of ``k`` is set (so entry 0 is
        the observed statistic).

    Raises
    ------
    ValueError
        If `x` or `y` is empty, not 1-D, contains NaN/inf, if their lengths
        differ, if `n_resamples` or `batch` is not positive, if `alternative`
        or `exact` is not an accepted value, or if ``exact=True`` and
        ``n > 24``.
    TypeError
        If an argument has the wrong type (e.g. non-numeric data, float
        `n_resamples`, or an `rng` that is not a seed or Generator).

    Notes
    -----
    With ``d_sum = sum(d)`` and ``F`` the set of flipped indices, the
    sign-flipped mean is

    .. math:: T(F) = \\frac{1}{n}\\Big(\\sum_i d_i - 2\\sum_{i \\in F} d_i\\Big).

    Sign vectors are encoded as bits.  ``d`` is split into groups of 8 and a
    lookup table of the 256 possible partial sums of each group is built, so a
    resample costs ``ceil(n / 8)`` table look-ups instead of ``n`` multiply-adds.

    Let ``k`` be the number of null statistics at least as extreme as the
    observed ``t``: ``T >= t - gamma`` ("greater"), ``T <= t + gamma``
    ("less") or ``|T| >= |t| - gamma`` ("two-sided").  The tie tolerance
    ``gamma = 100 * eps * max(|t|, mean(|d|))`` (``eps`` the float64 machine
    epsilon) makes mathematically tied rearrangements count as ties despite
    rounding; unlike SciPy's ``100 * eps * |t|`` it is scaled by the data so
    it also works when ``t`` is close to zero.

    * Exact: ``p = k / 2**n``.  The identity sign vector is one of the
      ``2**n``, so ``p >= 2**-n``.
    * Monte Carlo: ``B`` independent uniform sign vectors,
      ``p = (k + 1) / (B + 1)`` [2]_, which is a valid (slightly conservative)
      p-value.

    For a symmetric null the two-sided p-value equals SciPy's
    ``2 * min(p_less, p_greater)`` whenever ``t != 0``.  If every difference
    is zero the null distribution is identically zero and ``p = 1``.

    References
    ----------
    .. [1] Fisher, R. A. (1935). *The Design of Experiments*, sec. 21.
       Edinburgh: Oliver and Boyd.
    .. [2] Phipson, B. and Smyth, G. K. (2010). Permutation p-values should
       never be zero: calculating exact p-values when permutations are
       randomly drawn. *Statistical Applications in Genetics and Molecular
       Biology*, 9(1), Article 39.
    .. [3] Good, P. I. (2005). *Permutation, Parametric, and Bootstrap Tests
       of Hypotheses*, 3rd ed. New York: Springer.

    Examples
    --------
    Eight pairs give ``2**8 = 256 <= n_resamples`` sign vectors, so the test
    is exact:

    >>> import numpy as np
    >>> from hyptest.stats.permutation import paired_permutation_test
    >>> x = np.array([0.71, 0.64, 0.80, 0.55, 0.62, 0.77, 0.69, 0.58])
    >>> y = np.array([0.60, 0.66, 0.70, 0.50, 0.55, 0.71, 0.70, 0.52])
    >>> res = paired_permutation_test(x, y, rng=0)
    >>> round(res.statistic, 4), res.pvalue, res.exact, res.n_resamples
    (0.0525, 0.03125, True, 256)

    With more pairs the null distribution is sampled:

    >>> rng = np.random.default_rng(1)
    >>> d = rng.normal(0.3, 1.0, size=200)
    >>> res = paired_permutation_test(d, n_resamples=9999, rng=2)
    >>> res.exact, res.n_resamples, round(res.pvalue, 4)
    (False, 9999, 0.0006)
    """
    d, n_res, alt, exact_opt, batch_opt, gen = _validate_paired(
        x, y, n_resamples, alternative, exact, batch, rng
    )
    n = d.size
    use_exact = exact_opt is True or (exact_opt == "auto" and 2**n <= n_res)

    n_groups = (n + 7) // 8
    padded = np.zeros(n_groups * 8, dtype=np.float64)
    padded[:n] = d
    # table[g, b] = sum of d over the members of group g whose bit is set in b
    table = padded.reshape(n_groups, 8) @ _BYTE_BITS.T
    flat_table = table.ravel()
    offsets = (np.arange(n_groups, dtype=np.intp) * 256)[None, :]
    d_sum = float(np.sum(d))
    observed = d_sum / n

    n_total = 2**n if use_exact else n_res
    words = (n + 63) // 64  # random 64-bit words per Monte Carlo resample
    block = batch_opt or max(1, _BLOCK_ELEMENTS // max(n_groups, words * 8))
    block = min(block, n_total)
    null = np.empty(n_total, dtype=np.float64)
    # Work buffers are allocated once and reused (avoids page-faulting fresh
    # temporaries for every block).
    index_buf = np.empty((block, n_groups), dtype=np.intp)
    value_buf = np.empty((block, n_groups), dtype=np.float64)
    for start in range(0, n_total, block):
        stop = min(start + block, n_total)
        m = stop - start
        if use_exact:
            codes = np.arange(start, stop, dtype=np.uint64)
            flips = codes.astype("<u8", copy=False).view(np.uint8).reshape(m, 8)
        else:
            raw = gen.integers(
                0, np.iinfo(np.uint64).max, size=m * words, dtype=np.uint64, endpoint=True
            )
            flips = raw.astype("<u8", copy=False).view(np.uint8).reshape(m, words * 8)
        np.add(flips[:, :n_groups], offsets, out=index_buf[:m])
        np.take(flat_table, index_buf[:m], out=value_buf[:m])
        flipped_sum = null[start:stop]
        value_buf[:m].sum(axis=1, out=flipped_sum)
        flipped_sum *= -2.0
        flipped_sum += d_sum
        flipped_sum /= n

    gamma = _tie_tolerance(observed, float(np.mean(np.abs(d))))
    pvalue = _pvalue(null, observed, alt, gamma, use_exact)
    if not np.any(d):
        pvalue = 1.0
    return PermutationResult(
        statistic=float(np.mean(d)),
        pvalue=pvalue,
        null_distribution=_freeze(null),
        n_resamples=int(n_total),
        exact=bool(use_exact),
        alternative=alt,
        n=int(n),
        method="paired sign-flip",
    )


# ---------------------------------------------------------------------------
# two-sample relabelling test
# ---------------------------------------------------------------------------


def two_sample_permutation_test(
    x: ArrayLike,
    y: ArrayLike,
    *,
    n_resamples: int = 10000,
    alternative: Alternative = "two-sided",
    batch: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> PermutationResult:
    """Test equality of two means by randomly relabelling pooled observations.

    Under the null hypothesis the ``n_x + n_y`` pooled observations are
    exchangeable, so every split into groups of sizes ``n_x`` and ``n_y`` is
    equally likely.  The statistic is ``mean(x) - mean(y)``.

    Parameters
    ----------
    x : array_like, shape (n_x,)
        First sample; finite values only (NaN/inf raise ``ValueError``).
    y : array_like, shape (n_y,)
        Second sample; finite values only.
    n_resamples : int, default 10000
        Number of Monte Carlo relabellings.  When
        ``comb(n_x + n_y, n_x) <= n_resamples`` all distinct splits are
        enumerated instead (exact test).
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
        ``"greater"``: ``mean(x) > mean(y)``; ``"less"``: ``<``;
        ``"two-sided"``: ``!=``, extremeness measured by ``|mean(x) - mean(y)|``.
    batch : int, optional
        Number of relabellings evaluated per vectorised block (memory bound);
        by default a few MiB per block.  The result does not depend on it.
    rng : numpy.random.Generator or int, optional
        Source of randomness (an int seeds ``numpy.random.default_rng``).
        Unused when the test is exact.

    Returns
    -------
    PermutationResult
        ``n`` is ``n_x + n_y``.  For an exact test the null distribution is in
        the lexicographic order of ``itertools.combinations(range(N), n_x)``
        (indices of the pooled ``concatenate([x, y])`` labelled ``x``).

    Raises
    ------
    ValueError
        If a sample is empty, not 1-D or non-finite, if `n_resamples` or
        `batch` is not positive, or if `alternative` is not accepted.
    TypeError
        If an argument has the wrong type.

    Notes
    -----
    With pooled data ``z`` centred at its mean (the statistic is
    shift-invariant; centring improves rounding), total ``S = sum(z)`` and
    ``S_A`` the sum over the ``n_x`` indices relabelled as ``x``,

    .. math:: T(A) = \\frac{S_A}{n_x} - \\frac{S - S_A}{n_y}.

    Monte Carlo relabellings take the ``n_x`` smallest of ``N`` i.i.d.
    uniform keys per resample (a uniformly random subset, computed with
    ``argpartition`` on a ``(block, N)`` key matrix).  Exact p-value
    ``k / comb(N, n_x)``; Monte Carlo ``(k + 1) / (B + 1)`` [2]_.  "As
    extreme" uses the tie tolerance ``gamma = 100 * eps * max(|t|, mean|z|)``
    as in :func:`paired_permutation_test`; two-sided compares ``|T|`` with
    ``|t|``.  SciPy's two-sided rule ``2 * min(p_less, p_greater)`` agrees
    when the null is symmetric (e.g. ``n_x == n_y``) but not in general.

    References
    ----------
    .. [1] Pitman, E. J. G. (1937). Significance tests which may be applied
       to samples from any populations. *Supplement to the Journal of the
       Royal Statistical Society*, 4(1), 119-130.
    .. [2] Phipson, B. and Smyth, G. K. (2010). Permutation p-values should
       never be zero. *Statistical Applications in Genetics and Molecular
       Biology*, 9(1), Article 39.

    Examples
    --------
    ``comb(9, 4) = 126`` splits are enumerated exactly:

    >>> from hyptest.stats.permutation import two_sample_permutation_test
    >>> res = two_sample_permutation_test([3.1, 2.9, 3.6, 3.3],
    ...                                   [2.2, 2.8, 2.5, 2.4, 2.7], rng=0)
    >>> round(res.statistic, 3), round(res.pvalue, 4), res.exact, res.n_resamples
    (0.705, 0.0079, True, 126)
    """
    xa, ya, n_res, alt, batch_opt, gen = _validate_two_sample(
        x, y, n_resamples, alternative, batch, rng
    )
    nx, ny = xa.size, ya.size
    n_total_obs = nx + ny
    pooled = np.concatenate([xa, ya])
    z = pooled - pooled.mean()
    z_sum = float(np.sum(z))
    scale = n_total_obs / (nx * ny)

    def stat_from_sums(s_a: np.ndarray | float) -> np.ndarray | float:
        return s_a * scale - z_sum / ny

    observed = float(stat_from_sums(float(np.sum(z[:nx]))))
    n_splits = math.comb(n_total_obs, nx)
    use_exact = n_splits <= n_res

    if use_exact:
        chosen = np.fromiter(
            combinations(range(n_total_obs), nx),
            dtype=np.dtype((np.intp, (nx,))),
            count=n_splits,
        ).reshape(n_splits, nx)
        null = np.asarray(stat_from_sums(z[chosen].sum(axis=1)), dtype=np.float64)
        n_used = n_splits
    else:
        block = batch_opt or max(1, _BLOCK_ELEMENTS // n_total_obs)
        null = np.empty(n_res, dtype=np.float64)
        for start in range(0, n_res, block):
            stop = min(start + block, n_res)
            keys = gen.random((stop - start, n_total_obs))
            idx = np.argpartition(keys, nx - 1, axis=1)[:, :nx]
            null[start:stop] = stat_from_sums(z[idx].sum(axis=1))
        n_used = n_res

    gamma = _tie_tolerance(observed, float(np.mean(np.abs(z))))
    pvalue = _pvalue(null, observed, alt, gamma, use_exact)
    if np.all(pooled == pooled[0]):
        pvalue = 1.0
    return PermutationResult(
        statistic=float(np.mean(xa) - np.mean(ya)),
        pvalue=pvalue,
        null_distribution=_freeze(null),
        n_resamples=int(n_used),
        exact=bool(use_exact),
        alternative=alt,
        n=int(n_total_obs),
        method="two-sample relabelling",
    )
