"""Multiple-testing adjustment of p-values (Holm, Bonferroni, Benjamini-Hochberg).

An own numpy kernel, not :func:`statsmodels.stats.multitest.multipletests`:
statsmodels 0.15's Holm runs ``gc.collect()`` on every call (about 58 ms
here, against 16-25 us for this kernel), and :func:`hyptest.results.decide`
adjusts every family of every simulated study, so the calibration ran 7.7
times slower with it (``benchmarks/bench_multiplicity.py`` prints the ratio).  The tests compare this kernel with statsmodels, with R's
``p.adjust`` and with the definitions written as loops.  Pure functions, no
randomness.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .._validation import validate_choice

__all__ = ["adjust_optional", "adjust_pvalues"]

AdjustMethod = Literal["holm", "bonferroni", "bh"]

_METHODS: tuple[str, ...] = ("holm", "bonferroni", "bh")


def _validate_adjust(pvalues: ArrayLike, method: object) -> tuple[np.ndarray, str]:
    """Validate the arguments of :func:`adjust_pvalues`."""
    validate_choice(method, "method", _METHODS)
    if isinstance(pvalues, (str, bytes)):
        raise TypeError(
            f"`pvalues` must be an array-like of floats in [0, 1], got {type(pvalues).__name__}"
        )
    p = np.asarray(pvalues)
    if p.dtype.kind not in "biuf":
        raise TypeError(
            f"`pvalues` must be an array-like of floats in [0, 1], got dtype {p.dtype}"
        )
    p = p.astype(np.float64)
    finite = p[~np.isnan(p)]
    bad = (finite < 0) | (finite > 1)
    if bad.any():
        raise ValueError(
            f"`pvalues` must lie in [0, 1] (NaN allowed), got {float(finite[bad][0])!r}"
        )
    return p, method


def adjust_pvalues(pvalues: ArrayLike, *, method: AdjustMethod = "holm") -> np.ndarray:
    """Adjust p-values for multiple comparisons.

    Parameters
    ----------
    pvalues : array_like
        Unadjusted p-values in ``[0, 1]``, any shape.  NaN entries are passed
        through as NaN and are not counted in the family size ``m``.
    method : {"holm", "bonferroni", "bh"}, default "holm"
        ``"holm"``: Holm's step-down Bonferroni (family-wise error rate; plain
        Holm, not Holm-Sidak); ``"bonferroni"``: single-step Bonferroni
        (FWER); ``"bh"``: Benjamini-Hochberg step-up (false discovery rate,
        valid under independence or positive regression dependence).

    Returns
    -------
    numpy.ndarray
        Adjusted p-values, float64, same shape as `pvalues`, capped at 1.
        Reject hypothesis ``i`` at level ``q`` iff ``adjusted[i] <= q``.

    Raises
    ------
    ValueError
        If `method` is not accepted or a non-NaN p-value lies outside [0, 1].
    TypeError
        If `pvalues` is not numeric.

    Notes
    -----
    Let ``p_(1) <= ... <= p_(m)`` be the sorted non-NaN p-values (stable
    sort, so ties keep their input order) and ``m`` their number.

    * Bonferroni: :math:`\\tilde p_i = \\min(1, m p_i)`.
    * Holm [1]_: :math:`\\tilde p_{(i)} = \\min\\{1, \\max_{j \\le i} (m - j + 1) p_{(j)}\\}`.
    * Benjamini-Hochberg [2]_:
      :math:`\\tilde p_{(i)} = \\min\\{1, \\min_{j \\ge i} \\tfrac{m}{j} p_{(j)}\\}`.

    The running max / min enforce monotonicity in the sorted order.  An empty
    input returns an empty array.

    References
    ----------
    .. [1] Holm, S. (1979). A simple sequentially rejective multiple test
       procedure. *Scandinavian Journal of Statistics*, 6(2), 65-70.
    .. [2] Benjamini, Y. and Hochberg, Y. (1995). Controlling the false
       discovery rate: a practical and powerful approach to multiple
       testing. *Journal of the Royal Statistical Society B*, 57(1), 289-300.

    Examples
    --------
    >>> from hyptest.stats.multiplicity import adjust_pvalues
    >>> adjust_pvalues([0.01, 0.04, 0.03, float("nan")], method="holm")
    array([0.03, 0.06, 0.06,  nan])
    >>> adjust_pvalues([0.01, 0.04, 0.03], method="bh")
    array([0.03, 0.04, 0.04])
    """
    p, meth = _validate_adjust(pvalues, method)
    flat = p.reshape(-1)
    out = np.full(flat.shape, np.nan)
    keep = np.flatnonzero(~np.isnan(flat))
    m = keep.size
    if m == 0:
        return out.reshape(p.shape)
    q = flat[keep]
    if meth == "bonferroni":
        adj = np.minimum(1.0, m * q)
    else:
        order = np.argsort(q, kind="stable")
        sorted_p = q[order]
        rank = np.arange(1, m + 1, dtype=np.float64)
        if meth == "holm":
            adj_sorted = np.maximum.accumulate((m - rank + 1) * sorted_p)
        else:
            adj_sorted = np.minimum.accumulate((m / rank * sorted_p)[::-1])[::-1]
        adj = np.empty(m)
        adj[order] = np.minimum(1.0, adj_sorted)
    out[keep] = adj
    return out.reshape(p.shape)


def adjust_optional(values: Sequence[float | None], *, method: AdjustMethod = "holm") -> list[float | None]:
    """:func:`adjust_pvalues` over the entries that hold a p-value; None and NaN entries stay None.

    The form :func:`hyptest.results.decide` and the adaptive monitor need: a
    family in which some comparisons have no test (no margin: no equivalence
    p-value) and are left out of the family size.

    Examples
    --------
    >>> adjust_optional([0.01, None, 0.04], method="holm")
    [0.02, None, 0.04]
    """
    p = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return [None if np.isnan(a) else float(a) for a in adjust_pvalues(p, method=method)]
