"""Distribution agreement (Shen et al.): top-k token overlap, overlap cosine, KL/JS, vocab order sensitivity.

Pure numpy functions on arrays.  The token axis is the last one; any leading
axes are batch axes (they broadcast between the two distributions compared),
and outputs drop the token axis.  Token-level inputs are the top-k of a
next-token distribution: ``ids`` (integers) and ``probs`` (probabilities of the
full-vocabulary softmax, *not* renormalised over the top-k), as stored in the
``topk_ids`` / ``topk_probs`` columns of the long-format records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._validation import validate_choice, validate_count, validate_real

__all__ = [
    "VocabOrderSensitivity",
    "label_js",
    "label_kl",
    "overlap_cosine",
    "token_overlap",
    "vocab_order_sensitivity",
]

#: Absolute tolerance on "sums to one" (label distributions) and on
#: "sums to at most one" (top-k probabilities of a full softmax).
_SUM_ATOL: float = 1e-6
_SUPPORTS: tuple[str, ...] = ("shared", "union")


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _validate_ids(ids: ArrayLike, name: str, k: int) -> np.ndarray:
    """Return ``ids`` as an int64 array with ``k <= K`` distinct ids per row."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"`{name}` must hold integer token ids, got an array of dtype {arr.dtype}")
    if arr.ndim < 1:
        raise ValueError(f"`{name}` must have a token axis (last axis), got a scalar")
    if arr.shape[-1] < k:
        raise ValueError(
            f"`{name}` has {arr.shape[-1]} token(s) on its last axis, fewer than `k` = {k}"
        )
    arr = arr.astype(np.int64, copy=False)
    srt = np.sort(arr, axis=-1)
    if (np.diff(srt, axis=-1) == 0).any():
        raise ValueError(f"`{name}` must not repeat a token id within one top-k list")
    return arr


def _validate_probs(probs: ArrayLike, name: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(probs)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold real probabilities, got an array of dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(
            f"`{name}` must have the shape of its ids, {shape}, got {arr.shape}"
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` must be finite, got NaN or inf")
    if (arr < 0).any() or (arr > 1).any():
        raise ValueError(
            f"`{name}` must lie in [0, 1], got values in [{arr.min()!r}, {arr.max()!r}]"
        )
    return arr


def _validate_pair_shapes(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    try:
        np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except ValueError:
        raise ValueError(
            f"the leading (batch) axes of `{name_a}` {a.shape[:-1]} and `{name_b}` "
            f"{b.shape[:-1]} do not broadcast"
        ) from None


def _validate_overlap(ids_a: ArrayLike, ids_b: ArrayLike, k: object) -> tuple[np.ndarray, np.ndarray, int]:
    kk = validate_count(k, "k")
    a = _validate_ids(ids_a, "ids_a", kk)
    b = _validate_ids(ids_b, "ids_b", kk)
    _validate_pair_shapes(a, b, "ids_a", "ids_b")
    return a[..., :kk], b[..., :kk], kk


def _top_k(ids: np.ndarray, probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable (id, prob) pairs, probability descending, ties by position."""
    if (probs[..., :-1] >= probs[..., 1:]).all():  # already in that order (the stored top-k): the first k
        return ids[..., :k], probs[..., :k]
    order = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(ids, order, axis=-1), np.take_along_axis(probs, order, axis=-1)


def _validate_label_dist(p: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(p)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold real probabilities, got an array of dtype {arr.dtype}")
    if arr.ndim < 1 or arr.shape[-1] < 1:
        raise ValueError(f"`{name}` must have a non-empty label axis (last axis), got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` must be finite, got NaN or inf")
    if (arr < 0).any():
        raise ValueError(f"`{name}` must be non-negative, got minimum {arr.min()!r}")
    sums = arr.sum(axis=-1)
    bad = np.abs(sums - 1.0) > _SUM_ATOL
    if bad.any():
        raise ValueError(
            f"every row of `{name}` must sum to 1 (within {_SUM_ATOL:g}); got a row summing "
            f"to {float(sums[bad].ravel()[0])!r}"
        )
    return arr


def _validate_label_pair(p: ArrayLike, q: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    pa = _validate_label_dist(p, "p")
    qa = _validate_label_dist(q, "q")
    if pa.shape[-1] != qa.shape[-1]:
        raise ValueError(
            f"`p` and `q` must have the same number of labels, got {pa.shape[-1]} and {qa.shape[-1]}"
        )
    _validate_pair_shapes(pa, qa, "p", "q")
    return pa, qa


def _validate_eps(eps: object, n_labels: int) -> float:
    e = validate_real(eps, "eps")
    if not (0.0 < e < 1.0 / n_labels):
        raise ValueError(f"`eps` must lie in (0, 1/n_labels) = (0, {1.0 / n_labels:g}), got {e!r}")
    return e


@dataclass(frozen=True, slots=True)
class _VocabInput:
    ids: np.ndarray  # (R, n_orders, K) int64
    probs: np.ndarray  # (R, n_orders, K) float64
    batch_shape: tuple[int, ...]


def _validate_vocab(topk_ids: ArrayLike, topk_probs: ArrayLike, vocab_size: object) -> _VocabInput:
    ids = np.asarray(topk_ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"`topk_ids` must hold integer token ids, got an array of dtype {ids.dtype}")
    if ids.ndim < 2:
        raise ValueError(f"`topk_ids` must have shape (..., n_orders, K), got {ids.shape}")
    n_orders, k = ids.shape[-2:]
    if n_orders < 2:
        raise ValueError(f"`topk_ids` must hold at least 2 orders (axis -2), got {n_orders}")
    if k < 1:
        raise ValueError("`topk_ids` must hold at least one token per order (axis -1), got 0")
    ids = ids.astype(np.int64, copy=False)
    if (ids < 0).any():
        raise ValueError(f"`topk_ids` must be non-negative token ids, got {int(ids.min())}")
    if vocab_size is not None:
        validate_count(vocab_size, "vocab_size", minimum=0, allow_none=True)
        if int(vocab_size) < k:
            raise ValueError(f"`vocab_size` must be at least K = {k}, got {int(vocab_size)}")
        if (ids >= int(vocab_size)).any():
            raise ValueError(
                f"`topk_ids` must be < `vocab_size` = {int(vocab_size)}, got {int(ids.max())}"
            )
    if (np.diff(np.sort(ids, axis=-1), axis=-1) == 0).any():
        raise ValueError("`topk_ids` must not repeat a token id within one order's top-k list")
    probs = _validate_probs(topk_probs, "topk_probs", ids.shape)
    sums = probs.sum(axis=-1)
    if (sums > 1.0 + _SUM_ATOL).any():
        raise ValueError(
            "each order's `topk_probs` must sum to at most 1 (they are probabilities of the "
            f"full-vocabulary softmax, not renormalised), got a sum of {float(sums.max())!r}"
        )
    batch = ids.shape[:-2]
    return _VocabInput(
        ids=ids.reshape(-1, n_orders, k), probs=probs.reshape(-1, n_orders, k), batch_shape=batch
    )


def _pick_shared(eq: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """``(eq * pb[..., None, :]).sum(axis=-1)`` without the (..., k, k) product, bit for bit.

    ``eq[..., i, :]`` holds at most one True (ids do not repeat in a row), so
    each sum is one ``pb`` value plus zeros, all non-negative: that value,
    exactly, in any order of summation, or +0.0.  Only a -0.0 in ``pb``
    (``False * -0.0`` is -0.0) makes the sign of a zero sum depend on how
    numpy sums; then the product is summed as before.
    """
    if (np.signbit(pb) & (pb == 0)).any():
        return (eq * pb[..., None, :]).sum(axis=-1)
    pb = np.broadcast_to(pb, eq.shape[:-2] + pb.shape[-1:])
    picked = np.take_along_axis(pb, eq.argmax(axis=-1), axis=-1)  # [..., i] = pb[..., j of a's i-th token]
    return np.where(eq.any(axis=-1), picked, 0.0)


def _scalar_or_array(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | float:
    out = np.asarray(x).reshape(shape)
    return out[()]


# ---------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------


def token_overlap(ids_a: ArrayLike, ids_b: ArrayLike, *, k: int = 10) -> np.ndarray | float:
    """Share of the top-k tokens that two next-token distributions have in common.

    Parameters
    ----------
    ids_a, ids_b : array_like of int, shape (..., K_a) and (..., K_b)
        Top-K token ids of each distribution, sorted by probability
        descending, ``K >= k``; only the first `k` are used.  Ids must not
        repeat within a row.  The leading axes broadcast.
    k : int, default 10
        Number of top tokens compared (Shen et al. use 10).

    Returns
    -------
    numpy.ndarray or float
        ``|top_k(a) ∩ top_k(b)| / k`` in ``[0, 1]``, one value per broadcast
        leading index (a numpy float for 1-D inputs).

    Raises
    ------
    ValueError
        If `k` is not positive, a row has fewer than `k` ids or a repeated id,
        or the leading axes do not broadcast.
    TypeError
        If the ids are not integers or `k` is not an integer.

    See Also
    --------
    overlap_cosine : agreement of the probabilities on the shared tokens.

    Notes
    -----
    .. math:: \\mathrm{TO}_k(a, b) = \\frac{|T_k(a) \\cap T_k(b)|}{k},

    where :math:`T_k(x)` is the set of the `k` most probable tokens of `x`.
    It is symmetric in ``a, b`` and invariant to the order of the ids inside
    the first `k`.  Ties in probability at the k-th place make :math:`T_k`
    ambiguous; the stored order (the collector's ``torch.topk``) decides.
    Shen et al. [1]_ report this "Token Overlap" with the ICL-vs-ICL value
    (two orders of the same demos) as the reference row.

    References
    ----------
    .. [1] Shen, Mishra, Khashabi (2023), Do pretrained Transformers learn
       in-context by gradient descent? arXiv:2310.08540.

    Examples
    --------
    >>> from hyptest.metrics.overlap import token_overlap
    >>> float(token_overlap([3, 1, 4, 5, 9], [4, 3, 2, 7, 1], k=5))  # {1, 3, 4}
    0.6
    """
    a, b, kk = _validate_overlap(ids_a, ids_b, k)
    eq = a[..., :, None] == b[..., None, :]  # (..., k, k); ids are distinct per row
    return (eq.any(axis=-1).sum(axis=-1) / kk)[()]


def overlap_cosine(
    ids_a: ArrayLike,
    probs_a: ArrayLike,
    ids_b: ArrayLike,
    probs_b: ArrayLike,
    *,
    k: int = 10,
    support: str = "shared",
) -> np.ndarray | float:
    """Cosine similarity of two next-token distributions on their shared top-k tokens.

    Parameters
    ----------
    ids_a, ids_b : array_like of int, shape (..., K_a) and (..., K_b)
        Top-K token ids of each distribution (``K >= k``, no repeats in a row).
    probs_a, probs_b : array_like of float, same shapes as the ids
        Their probabilities under the full-vocabulary softmax.  The `k`
        most probable entries of each row are used (stable sort, so with
        sorted input these are the first `k`); the leading axes broadcast.
    k : int, default 10
        Number of top tokens of each distribution.
    support : {"shared", "union"}, default "shared"
        ``"shared"``: the cosine over the tokens in both top-k sets (Shen et
        al.'s Overlap Cosine Similarity, see Notes).  ``"union"``: the cosine
        over the union of the two top-k sets, a token missing from one top-k
        counted as probability 0 there.

    Returns
    -------
    numpy.ndarray or float
        Cosine in ``[0, 1]`` (probabilities are non-negative), one per
        broadcast leading index.  **0.0 when the two top-k sets share no
        token** (and when the probabilities on the support are all 0).

    Raises
    ------
    ValueError
        If shapes disagree, a row has fewer than `k` ids or a repeated id,
        probabilities are outside ``[0, 1]`` or non-finite, or `support` is
        not an accepted value.
    TypeError
        If the ids are not integers or `k` is not an integer.

    See Also
    --------
    token_overlap : how many of the top-k tokens are shared.

    Notes
    -----
    With :math:`S = T_k(a) \\cap T_k(b)` (``support="shared"``) or
    :math:`S = T_k(a) \\cup T_k(b)` (``"union"``, with :math:`p(t) = 0`
    outside the top-k of `p`):

    .. math::
        \\mathrm{OC}_k(a, b) = \\frac{\\sum_{t \\in S} p_a(t)\\, p_b(t)}
        {\\sqrt{\\sum_{t \\in S} p_a(t)^2}\\ \\sqrt{\\sum_{t \\in S} p_b(t)^2}},
        \\qquad \\mathrm{OC}_k = 0 \\text{ if } S = \\varnothing.

    Definitional choices.  Shen et al. [1]_ (Fig. 5) describe the Overlap
    Cosine Similarity as the cosine between the probabilities of the
    overlapping top-k tokens; as far as the text tells, tokens are aligned by
    id and the cosine is taken over :math:`S = T_k(a) \\cap T_k(b)`, which is
    the default here.  At full overlap (:math:`|S| = k`) this is the ordinary
    cosine of the two k-vectors aligned by token id.  At zero overlap the
    cosine of two empty vectors is undefined; it is set to 0, the value of
    the ``"union"`` cosine there (disjoint supports are orthogonal), so the
    metric is continuous in the sense that "no shared token" reads as "no
    agreement".  Caveat of the shared-token cosine: with one shared token it
    is always 1, so read it beside :func:`token_overlap`; the ``"union"``
    variant penalises non-shared mass and has no such degeneracy, but treats
    the (unknown, at most the k-th probability) mass of a token outside a
    top-k as 0.  The value is symmetric in ``a, b``, invariant to any joint
    permutation of a row's (id, probability) pairs, and invariant to
    positive rescaling of either probability vector.

    References
    ----------
    .. [1] Shen, Mishra, Khashabi (2023), Do pretrained Transformers learn
       in-context by gradient descent? arXiv:2310.08540.

    Examples
    --------
    >>> from hyptest.metrics.overlap import overlap_cosine
    >>> # shared tokens 7 and 5: (0.5*0.2 + 0.3*0.6) / (sqrt(0.34) * sqrt(0.40))
    >>> round(float(overlap_cosine([7, 5, 2], [0.5, 0.3, 0.1],
    ...                            [5, 7, 8], [0.6, 0.2, 0.1], k=3)), 6)
    0.759257
    """
    kk = validate_count(k, "k")
    ia = _validate_ids(ids_a, "ids_a", kk)
    ib = _validate_ids(ids_b, "ids_b", kk)
    pa = _validate_probs(probs_a, "probs_a", ia.shape)
    pb = _validate_probs(probs_b, "probs_b", ib.shape)
    _validate_pair_shapes(ia, ib, "ids_a", "ids_b")
    validate_choice(support, "support", _SUPPORTS)
    ia, pa = _top_k(ia, pa, kk)
    ib, pb = _top_k(ib, pb, kk)

    eq = ia[..., :, None] == ib[..., None, :]  # (..., k, k), at most one True per row/column
    pb_on_a = _pick_shared(eq, pb)  # p_b of a's i-th token, 0 if absent
    dot = (pa * pb_on_a).sum(axis=-1)
    if support == "shared":
        in_a = eq.any(axis=-1)
        in_b = eq.any(axis=-2)
        sq_a = (pa**2 * in_a).sum(axis=-1)
        sq_b = (pb**2 * in_b).sum(axis=-1)
    else:
        sq_a = (pa**2).sum(axis=-1)
        sq_b = (pb**2).sum(axis=-1)
    denom = np.sqrt(sq_a) * np.sqrt(sq_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(cos, 0.0, 1.0)[()]


def label_kl(p: ArrayLike, q: ArrayLike, *, eps: float = 1e-12) -> np.ndarray | float:
    """Kullback-Leibler divergence KL(p || q) between label distributions, in nats.

    Parameters
    ----------
    p, q : array_like, shape (..., n_labels)
        Label distributions (e.g. the ``label_probs`` column), each row
        non-negative and summing to 1 within 1e-6; leading axes broadcast.
    eps : float, default 1e-12
        Floor applied before the divergence, in ``(0, 1/n_labels)``.

    Returns
    -------
    numpy.ndarray or float
        ``KL(p || q) >= 0`` per broadcast leading index.

    Raises
    ------
    ValueError
        If a row is negative, non-finite or does not sum to 1, the label
        counts differ, or `eps` is outside ``(0, 1/n_labels)``.

    See Also
    --------
    label_js : the symmetric, bounded Jensen-Shannon divergence.

    Notes
    -----
    Both distributions are clipped to ``[eps, 1]`` and renormalised,
    :math:`\\tilde p = \\max(p, \\epsilon) / \\sum \\max(p, \\epsilon)`, then

    .. math:: \\mathrm{KL}(p \\,\\|\\, q) = \\sum_j \\tilde p_j \\log(\\tilde p_j / \\tilde q_j).

    Without the floor KL is infinite when ``q`` puts zero mass where ``p``
    does not (a float32 softmax underflows easily); with it the value is at
    most about ``log(1/eps)`` (27.6 nats for the default).  For rows whose
    entries all exceed `eps` nothing changes beyond rounding, so the value
    equals ``scipy.special.rel_entr(p, q).sum(-1)``.  KL is not symmetric.

    References
    ----------
    .. [1] Kullback, S. and Leibler, R. A. (1951). On information and
       sufficiency. *Annals of Mathematical Statistics*, 22(1), 79-86.
    .. [2] Shen, Mishra, Khashabi (2023), Do pretrained Transformers learn
       in-context by gradient descent? arXiv:2310.08540.

    Examples
    --------
    >>> from hyptest.metrics.overlap import label_kl
    >>> round(float(label_kl([0.5, 0.5], [0.9, 0.1])), 6)  # 0.5 log(5/9) + 0.5 log 5
    0.510826
    """
    pa, qa = _validate_label_pair(p, q)
    e = _validate_eps(eps, pa.shape[-1])
    pc = np.maximum(pa, e)
    qc = np.maximum(qa, e)
    pc = pc / pc.sum(axis=-1, keepdims=True)
    qc = qc / qc.sum(axis=-1, keepdims=True)
    kl = (pc * (np.log(pc) - np.log(qc))).sum(axis=-1)
    return np.maximum(kl, 0.0)[()]


def label_js(p: ArrayLike, q: ArrayLike) -> np.ndarray | float:
    """Jensen-Shannon divergence between label distributions, in nats.

    Parameters
    ----------
    p, q : array_like, shape (..., n_labels)
        Label distributions, rows non-negative and summing to 1 within 1e-6;
        leading axes broadcast.

    Returns
    -------
    numpy.ndarray or float
        JS divergence in ``[0, log 2]`` per broadcast leading index.

    Raises
    ------
    ValueError
        If a row is negative, non-finite or does not sum to 1, or the label
        counts differ.

    See Also
    --------
    label_kl

    Notes
    -----
    With :math:`m = (p + q) / 2`,

    .. math::
        \\mathrm{JS}(p, q) = \\tfrac12 \\mathrm{KL}(p \\,\\|\\, m) + \\tfrac12 \\mathrm{KL}(q \\,\\|\\, m),

    using :math:`0 \\log 0 = 0`.  No floor is needed: ``m > 0`` wherever
    ``p`` or ``q`` is.  It is symmetric, zero iff ``p = q``, and at most
    :math:`\\log 2` (disjoint supports).  It is the *square* of
    ``scipy.spatial.distance.jensenshannon`` with the default natural-log
    base; the result is clipped to ``[0, log 2]`` against rounding.

    References
    ----------
    .. [1] Lin, J. (1991). Divergence measures based on the Shannon entropy.
       *IEEE Transactions on Information Theory*, 37(1), 145-151.

    Examples
    --------
    >>> import numpy as np
    >>> from hyptest.metrics.overlap import label_js
    >>> bool(np.isclose(label_js([1.0, 0.0], [0.0, 1.0]), np.log(2)))
    True
    """
    pa, qa = _validate_label_pair(p, q)
    m = 0.5 * (pa + qa)

    def _kl_to_m(x: np.ndarray) -> np.ndarray:
        pos = x > 0
        safe_x = np.where(pos, x, 1.0)
        safe_m = np.where(pos, m, 1.0)
        return np.where(pos, x * (np.log(safe_x) - np.log(safe_m)), 0.0).sum(axis=-1)

    js = 0.5 * _kl_to_m(pa) + 0.5 * _kl_to_m(qa)
    return np.clip(js, 0.0, np.log(2.0))[()]


@dataclass(frozen=True, slots=True)
class VocabOrderSensitivity:
    """Order sensitivity over the vocabulary, from truncated (top-k) distributions.

    Attributes
    ----------
    value : float or numpy.ndarray
        Sum over the union of the orders' top-k tokens of the per-token
        standard deviation (ddof = 1) across orders, a token outside an
        order's top-k counted as probability 0.
    error_bound : float or numpy.ndarray
        Upper bound on ``|value - full-vocabulary value|`` caused by the
        truncation: ``sum_o r_o / sqrt(n_orders)`` with ``r_o = 1 -
        sum(topk_probs[o])`` the mass outside order ``o``'s top-k.
    n_tokens : int or numpy.ndarray
        Size of the union of the top-k id sets.
    n_orders : int
        Number of orders.
    """

    value: float | np.ndarray
    error_bound: float | np.ndarray
    n_tokens: int | np.ndarray
    n_orders: int


def vocab_order_sensitivity(
    topk_ids: ArrayLike, topk_probs: ArrayLike, *, vocab_size: int | None = None
) -> VocabOrderSensitivity:
    """Order sensitivity of one query's next-token distribution over the vocabulary.

    Parameters
    ----------
    topk_ids : array_like of int, shape (..., n_orders, K)
        For each order of the same demos, the top-K token ids of the
        next-token distribution (no repeated id within an order).  Leading
        axes (e.g. queries) are batch axes.
    topk_probs : array_like of float, same shape
        Their full-softmax probabilities (each order's row sums to at most 1).
    vocab_size : int, optional
        If given, every id must be in ``[0, vocab_size)`` (a check only; the
        value and bound do not depend on it).

    Returns
    -------
    VocabOrderSensitivity
        ``value``, ``error_bound`` and ``n_tokens`` (floats / int for a
        single query, arrays of the leading shape otherwise) and ``n_orders``.

    Raises
    ------
    ValueError
        If there are fewer than 2 orders, ids repeat within an order or are
        negative or out of range, probabilities are outside ``[0, 1]`` or an
        order's top-k sums to more than 1 (+1e-6).
    TypeError
        If the ids are not integers.

    Notes
    -----
    With :math:`U` the union of the top-k id sets and :math:`\\tilde p_o(t)`
    the probability of token ``t`` under order ``o`` if ``t`` is in that
    order's top-k and 0 otherwise,

    .. math::
        \\widetilde{\\mathrm{OS}} = \\sum_{t \\in U} \\mathrm{sd}_{o}\\big(\\tilde p_o(t)\\big),
        \\qquad \\mathrm{sd} \\text{ with ddof} = 1.

    The full-vocabulary quantity of Shen et al. [1]_ (Fig. 4) is
    :math:`\\mathrm{OS} = \\sum_{t \\in V} \\mathrm{sd}_o(p_o(t))`.

    Truncation bound.  Let :math:`e_o = p_o - \\tilde p_o \\ge 0` (the mass
    outside order ``o``'s top-k, each entry at most that order's k-th
    probability), :math:`\\|e_o\\|_1 = r_o = 1 - \\sum \\mathrm{topk\\_probs}_o`.
    For one token, ``sd`` is a seminorm of the column
    :math:`x = (p_o(t))_o`: :math:`\\mathrm{sd}(x) = \\|Cx\\|_2 / \\sqrt{n-1}` with
    ``C`` the centring matrix.  By the triangle inequality
    :math:`|\\mathrm{sd}(x) - \\mathrm{sd}(\\tilde x)| \\le \\|C e\\|_2 / \\sqrt{n-1}`, and
    for ``e >= 0``,
    :math:`\\|Ce\\|_2^2 = \\|e\\|_2^2 - \\|e\\|_1^2 / n \\le (1 - 1/n)\\|e\\|_1^2`.
    Summing over all tokens (those outside :math:`U` included),

    .. math::
        |\\mathrm{OS} - \\widetilde{\\mathrm{OS}}| \\le \\frac{1}{\\sqrt n}\\sum_t \\|e_{\\cdot t}\\|_1
        = \\frac{1}{\\sqrt n} \\sum_o r_o.

    The bound is sharp: it is approached when the residual mass is spread
    thinly over many tokens, each outside every top-k but one order's
    residual.  It needs the probabilities to be those of the full softmax
    (not renormalised over the top-k); with ``r_o = 0`` the value is exact.

    References
    ----------
    .. [1] Shen, Mishra, Khashabi (2023), Do pretrained Transformers learn
       in-context by gradient descent? arXiv:2310.08540.

    Examples
    --------
    >>> from hyptest.metrics.overlap import vocab_order_sensitivity
    >>> res = vocab_order_sensitivity([[5, 7], [7, 5]], [[0.6, 0.4], [0.6, 0.4]])
    >>> # token 5: sd(0.6, 0.4) = 0.1414; token 7 the same; residual mass 0
    >>> round(float(res.value), 4), float(res.error_bound), int(res.n_tokens)
    (0.2828, 0.0, 2)
    """
    v = _validate_vocab(topk_ids, topk_probs, vocab_size)
    r, n, k = v.ids.shape
    base = int(v.ids.max()) + 1
    row = np.repeat(np.arange(r, dtype=np.int64), n * k)
    order = np.tile(np.repeat(np.arange(n), k), r)
    key = row * base + v.ids.ravel()
    uniq, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.ravel()
    dense = np.zeros((uniq.size, n))
    dense[inverse, order] = v.probs.ravel()
    sd = dense.std(axis=1, ddof=1)
    group_row = uniq // base
    value = np.bincount(group_row, weights=sd, minlength=r)
    n_tokens = np.bincount(group_row, minlength=r)
    residual = np.clip(1.0 - v.probs.sum(axis=-1), 0.0, None)  # (R, n)
    bound = residual.sum(axis=-1) / np.sqrt(n)
    shape = v.batch_shape
    n_tok = n_tokens.reshape(shape)
    return VocabOrderSensitivity(
        value=_scalar_or_array(value, shape),
        error_bound=_scalar_or_array(bound, shape),
        n_tokens=int(n_tok) if n_tok.ndim == 0 else n_tok,
        n_orders=int(n),
    )
