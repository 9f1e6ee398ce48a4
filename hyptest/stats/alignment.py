"""Order-effect alignment: do two methods react to the same demo orders alike?

Theorem 1 of Shen et al. (2023) has a sharper consequence than "equal order
sensitivity": if ICL were SGD on the demonstrations in prompt order, then
the *per-order* deviations of ICL's outputs would track those of SGD run
under the same order.  :func:`order_alignment_test` measures that tracking as
a correlation of order effects and tests it with a Mantel-style permutation
of order labels.  Pure numpy; randomness only from the keyword-only ``rng``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import permutations

import numpy as np
from numpy.typing import ArrayLike

from hyptest._validation import validate_choice, validate_count, validate_rng
from hyptest.stats.permutation import _ALTERNATIVES, Alternative

__all__ = ["AlignmentResult", "order_alignment_test"]

#: Absolute tolerance on the correlation scale below which a null value
#: counts as tied with the observed one (rounding is ~1e-15).
_TIE_TOL: float = 1e-10
#: Target number of array elements per vectorised block (a few MiB).
_BLOCK_ELEMENTS: int = 2**18


@dataclass(frozen=True, slots=True)
class AlignmentResult:
    """Result of an order-effect alignment test.

    Attributes
    ----------
    statistic : float
        Pearson correlation ``r`` between the order-centred outputs of A and
        B, pooled over blocks, orders and queries.
    pvalue : float
        Permutation p-value: ``k / N`` when exact, ``(k + 1) / (B + 1)`` for
        Monte Carlo.
    null_distribution : numpy.ndarray
        ``r`` under every enumerated (exact) or sampled relabelling of B's
        orders, shape ``(n_resamples,)``, read-only.
    n_resamples : int
        ``n_orders! ** n_blocks`` when exact, else the number of Monte Carlo
        relabellings.
    exact : bool
        Whether all relabellings were enumerated.
    n_blocks : int
        Number of blocks (demo sets).
    n_orders : int
        Number of orders per block.
    n_queries : int
        Number of queries per block.
    alternative : str
        ``"greater"`` (alignment: ``r > 0``), ``"less"`` or ``"two-sided"``.
    method : str
        ``"order-label permutation within blocks (Mantel-style)"``.
    """

    statistic: float
    pvalue: float
    null_distribution: np.ndarray
    n_resamples: int
    exact: bool
    n_blocks: int
    n_orders: int
    n_queries: int
    alternative: str
    method: str


@dataclass(frozen=True, slots=True)
class _AlignmentInput:
    a: np.ndarray
    b: np.ndarray
    n_resamples: int
    alternative: str
    rng: np.random.Generator


def _validate_cube(value: ArrayLike, name: str) -> np.ndarray:
    """Return ``value`` as a finite 3-D float64 array or raise naming ``name``."""
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"`{name}` must be an array of shape (n_blocks, n_orders, n_queries), "
            f"got {type(value).__name__}"
        )
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must contain real numbers, got an array of dtype {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(
            f"`{name}` must have shape (n_blocks, n_orders, n_queries) (3-D), "
            f"got an array of shape {arr.shape}"
        )
    if min(arr.shape) < 1 or arr.shape[1] < 2:
        raise ValueError(
            f"`{name}` needs at least 1 block, 2 orders and 1 query, got shape {arr.shape}"
        )
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"`{name}` must contain only finite values (NaN/inf are not dropped silently), "
            f"got {float(arr[idx])!r} at index {idx} ({int(bad.sum())} non-finite in total)"
        )
    return arr


def _validate_alignment(a: ArrayLike, b: ArrayLike, n_resamples: object, alternative: object,
                        rng: object) -> _AlignmentInput:
    """Validate the arguments of :func:`order_alignment_test`."""
    aa = _validate_cube(a, "a")
    bb = _validate_cube(b, "b")
    if aa.shape != bb.shape:
        raise ValueError(
            "`b` must have the same shape as `a` (same blocks, orders and queries), "
            f"got {aa.shape} and {bb.shape}"
        )
    return _AlignmentInput(
        aa,
        bb,
        validate_count(n_resamples, "n_resamples"),
        validate_choice(alternative, "alternative", _ALTERNATIVES),
        validate_rng(rng),
    )


def _n_relabellings(n_orders: int, n_blocks: int, cap: int) -> int | None:
    """``n_orders! ** n_blocks`` if it is at most ``cap``, else None."""
    per_block = math.factorial(n_orders)
    total = 1
    for _ in range(n_blocks):
        total *= per_block
        if total > cap:
            return None
    return total


def _pvalue(null: np.ndarray, observed: float, alternative: str, exact: bool) -> float:
    if alternative == "greater":
        k = np.count_nonzero(null >= observed - _TIE_TOL)
    elif alternative == "less":
        k = np.count_nonzero(null <= observed + _TIE_TOL)
    else:
        k = np.count_nonzero(np.abs(null) >= abs(observed) - _TIE_TOL)
    p = k / null.size if exact else (k + 1) / (null.size + 1)
    return float(min(p, 1.0))


def order_alignment_test(
    a: ArrayLike,
    b: ArrayLike,
    *,
    n_resamples: int = 10000,
    alternative: Alternative = "greater",
    rng: np.random.Generator | int | None = None,
) -> AlignmentResult:
    """Test whether two methods' per-order effects are aligned.

    Parameters
    ----------
    a : array_like, shape (n_blocks, n_orders, n_queries)
        Outputs of method A (e.g. P(gold) of ICL): block = demo set, order =
        one permutation of that set's demos, query = evaluation query.
        Finite; NaN or inf raises ``ValueError``.
    b : array_like, same shape as `a`
        Outputs of method B (e.g. P(gold) after SGD) for the same blocks,
        orders and queries: ``a[s, o]`` and ``b[s, o]`` must come from the
        *same* permutation of the demos of set ``s``.
    n_resamples : int, default 10000
        Number of Monte Carlo relabellings.  When
        ``n_orders! ** n_blocks <= n_resamples`` every relabelling is
        enumerated (exact test).
    alternative : {"greater", "less", "two-sided"}, default "greater"
        ``"greater"``: positive alignment (what "ICL is SGD in prompt order"
        predicts); ``"less"``: negative; ``"two-sided"``: either, by ``|r|``.
    rng : numpy.random.Generator or int, optional
        Source of randomness (an int seeds ``numpy.random.default_rng``).
        Unused when the test is exact.

    Returns
    -------
    AlignmentResult
        ``statistic`` is ``r``; see :class:`AlignmentResult`.  For an exact
        test, entry ``k`` of the null distribution is the relabelling number
        ``k`` of ``itertools.product(*[itertools.permutations(range(n_orders))]
        * n_blocks)`` (entry 0 is the identity, i.e. the observed ``r``), where
        permutation ``pi`` of block ``s`` pairs ``a[s, i]`` with ``b[s, pi[i]]``.

    Raises
    ------
    ValueError
        If an input is not 3-D, has fewer than 2 orders, contains NaN/inf,
        the shapes differ, either method has no order effect at all (constant
        across orders in every block and query, e.g. full-batch GD: the
        correlation is undefined), `n_resamples` is not positive or
        `alternative` is not accepted.
    TypeError
        If an argument has the wrong type.

    Notes
    -----
    *Statistic.*  Order effects are deviations from the mean over orders,
    ``a_c[s, o, q] = a[s, o, q] - mean_o a[s, o, q]`` (likewise ``b_c``), which
    removes every block, query and block-by-query effect.  Then

    .. math:: r = \\frac{\\sum_{s,o,q} a_c b_c}
                   {\\sqrt{\\sum a_c^2 \\sum b_c^2}},

    the Pearson correlation of the pooled centred values (their means are
    zero, so this equals ``np.corrcoef(a_c.ravel(), b_c.ravel())[0, 1]``).
    Blocks and queries with larger order effects weigh more.

    *Null.*  If B's order effects are unrelated to A's, which order of B is
    paired with which order of A is arbitrary.  The null distribution
    permutes B's order labels within each block, applying the same
    permutation to every query of the block, so the dependence between
    queries under one order is kept (a Mantel test [2]_ on blocks of the
    order-by-order cross-product).  The test is valid when the orders of a
    block are exchangeable: drawn uniformly at random, or all ``n!``
    permutations used.

    *Computation.*  With ``C_s[i, j] = sum_q a_c[s, i, q] b_c[s, j, q]``, a
    relabelling ``pi`` has numerator ``sum_s sum_i C_s[i, pi_s(i)]`` and the
    same denominator, so resamples are evaluated for whole blocks at once by
    fancy indexing into ``C``.  Monte Carlo permutations are the ``argsort``
    of i.i.d. uniforms.  p-values are ``k / N`` (exact) or
    ``(k + 1) / (B + 1)`` (Monte Carlo) [3]_, counting null values within
    ``1e-10`` of the observed one as ties.

    *Reading.*  Theorem 1 of [1]_ implies that an algorithm equivalent to ICL
    reproduces ICL's output under every order, hence ``r`` close to 1 for
    the same order pairing.  A significant positive ``r`` shows that the two
    methods share order effects (necessary, not sufficient, for
    equivalence); a small or non-significant ``r`` for an order-dependent
    method such as SGD is evidence against "ICL is SGD in prompt order".

    References
    ----------
    .. [1] Shen, L., Mishra, A. and Khashabi, D. (2023). Do pretrained
       Transformers learn in-context by gradient descent? arXiv:2310.08540.
    .. [2] Mantel, N. (1967). The detection of disease clustering and a
       generalized regression approach. *Cancer Research*, 27(2), 209-220.
    .. [3] Phipson, B. and Smyth, G. K. (2010). Permutation p-values should
       never be zero: calculating exact p-values when permutations are
       randomly drawn. *Statistical Applications in Genetics and Molecular
       Biology*, 9(1), Article 39.

    Examples
    --------
    Two demo sets, six orders, eight queries; B shares A's order effects:

    >>> import numpy as np
    >>> from hyptest.stats.alignment import order_alignment_test
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(2, 6, 8))
    >>> b = 0.5 * a + rng.normal(size=(2, 6, 8))
    >>> res = order_alignment_test(a, b, n_resamples=2000, rng=1)
    >>> round(res.statistic, 3), round(res.pvalue, 4), res.exact
    (0.619, 0.0005, False)
    """
    inp = _validate_alignment(a, b, n_resamples, alternative, rng)
    n_blocks, n_orders, n_queries = inp.a.shape
    a_c = inp.a - inp.a.mean(axis=1, keepdims=True)
    b_c = inp.b - inp.b.mean(axis=1, keepdims=True)
    ss_a = float(np.sum(a_c * a_c))
    ss_b = float(np.sum(b_c * b_c))
    for name, raw, ss in (("a", inp.a, ss_a), ("b", inp.b, ss_b)):
        if ss == 0.0 or np.all(raw == raw[:, :1, :]):
            raise ValueError(
                f"`{name}` has no order effects (constant across orders in every block and "
                "query, e.g. full-batch GD); the alignment correlation is undefined"
            )
    denom = math.sqrt(ss_a) * math.sqrt(ss_b)
    observed = float(np.sum(a_c * b_c)) / denom
    cross = np.einsum("siq,sjq->sij", a_c, b_c)  # (n_blocks, n_orders, n_orders)
    rows = np.arange(n_orders)

    total = _n_relabellings(n_orders, n_blocks, inp.n_resamples)
    exact = total is not None
    if total is not None:
        perms = np.array(list(permutations(range(n_orders))), dtype=np.intp)
        # table[s, k]: numerator contribution of block s under permutation k
        table = cross[:, rows[None, :], perms].sum(axis=-1)
        combos = np.indices((perms.shape[0],) * n_blocks).reshape(n_blocks, -1)
        numer = table[np.arange(n_blocks)[:, None], combos].sum(axis=0)
        null = numer / denom
        n_used = total
    else:
        block_idx = np.arange(n_blocks)[None, :, None]
        row_idx = rows[None, None, :]
        chunk = max(1, _BLOCK_ELEMENTS // (n_blocks * n_orders))
        null = np.empty(inp.n_resamples, dtype=np.float64)
        for start in range(0, inp.n_resamples, chunk):
            stop = min(start + chunk, inp.n_resamples)
            pi = np.argsort(inp.rng.random((stop - start, n_blocks, n_orders)), axis=-1)
            null[start:stop] = cross[block_idx, row_idx, pi].sum(axis=(1, 2)) / denom
        n_used = inp.n_resamples

    null = np.ascontiguousarray(null, dtype=np.float64)
    null.setflags(write=False)
    return AlignmentResult(
        statistic=observed,
        pvalue=_pvalue(null, observed, inp.alternative, exact),
        null_distribution=null,
        n_resamples=int(n_used),
        exact=bool(exact),
        n_blocks=int(n_blocks),
        n_orders=int(n_orders),
        n_queries=int(n_queries),
        alternative=inp.alternative,
        method="order-label permutation within blocks (Mantel-style)",
    )
