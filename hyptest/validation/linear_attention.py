"""Linear self-attention that performs one gradient-descent step (the positive control).

von Oswald et al. [1]_ (Proposition 1) construct the weights of one linear
self-attention (LSA) layer so that, on tokens ``e_i = (x_i, y_i)``, the layer's
update of a query token ``e_q = (x_q, 0)`` equals minus the prediction of a
linear model after one full-batch gradient-descent step on the in-context
squared loss. hyptest uses this layer as the positive control of its
statistical layer: here "ICL" (the layer) and GD are the same algorithm.

Pure numpy; no torch.

References
----------
.. [1] von Oswald, Niklasson, Randazzo, Sacramento, Mordvintsev, Zhmoginov,
   Vladymyrov (2023), Transformers learn in-context by gradient descent.
   ICML, PMLR 202, 35151-35174 (arXiv:2212.07677).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._validation import validate_count, validate_real

__all__ = [
    "LSAWeights",
    "lsa_forward",
    "lsa_predict",
    "lsa_weights",
    "one_step_gd_predict",
    "weight_sparsity",
]


@dataclass(frozen=True, slots=True)
class LSAWeights:
    """Hand-constructed weights of one LSA layer (von Oswald et al., Prop. 1).

    All matrices are ``(d + 1, d + 1)`` and act on tokens ``e = (x, y)`` with
    ``x`` in the first ``d`` coordinates and the scalar ``y`` last. They are
    read-only arrays.

    Attributes
    ----------
    W_K : numpy.ndarray
        Key projection ``[[I_d, 0], [0, 0]]``: keys read only ``x``.
    W_Q : numpy.ndarray
        Query projection, equal to ``W_K``.
    W_V : numpy.ndarray
        Value projection ``[[0, 0], [W_0, -1]]`` with ``W_0 = 0``: the value of
        token ``i`` is ``(0, W_0 x_i - y_i) = (0, -y_i)``.
    P : numpy.ndarray
        Output projection ``eta * I_{d+1}``.
    d : int
        Input dimension.
    eta : float
        Learning rate of the emulated gradient step.
    """

    W_K: np.ndarray
    W_Q: np.ndarray
    W_V: np.ndarray
    P: np.ndarray
    d: int
    eta: float


def _validate_eta(eta: object) -> float:
    return validate_real(eta, "eta", finite=True)


@dataclass(frozen=True, slots=True)
class _Regression:
    X: np.ndarray
    y: np.ndarray
    x_query: np.ndarray
    single: bool
    eta: float


def _validate_regression(X: ArrayLike, y: ArrayLike, x_query: ArrayLike, eta: object) -> _Regression:
    """Validate the arguments of :func:`lsa_predict` and :func:`one_step_gd_predict`.

    Leading (batch) dimensions are allowed: ``X (..., N, d)``, ``y (..., N)``
    and ``x_query (..., d)`` (one query) or ``(..., M, d)`` (M queries).
    """
    Xa = np.asarray(X, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    qa = np.asarray(x_query, dtype=np.float64)
    if Xa.ndim < 2 or Xa.shape[-2] < 1 or Xa.shape[-1] < 1:
        raise ValueError(f"`X` must be a non-empty array of shape (..., n_demos, d), got shape {Xa.shape}")
    if ya.shape != Xa.shape[:-1]:
        raise ValueError(f"`y` must have shape {Xa.shape[:-1]} to match `X`, got {ya.shape}")
    if qa.ndim == Xa.ndim - 1:
        single, qa2 = True, qa[..., None, :]
    elif qa.ndim == Xa.ndim:
        single, qa2 = False, qa
    else:
        single, qa2 = False, None
    if qa2 is None or qa2.shape[-1] != Xa.shape[-1] or qa2.shape[:-2] != Xa.shape[:-2]:
        raise ValueError(
            f"`x_query` must have shape {(*Xa.shape[:-2], Xa.shape[-1])} (one query) or "
            f"{(*Xa.shape[:-2], 'n_queries', Xa.shape[-1])}, got {qa.shape}"
        )
    for name, arr in (("X", Xa), ("y", ya), ("x_query", qa2)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` must contain only finite values")
    return _Regression(Xa, ya, qa2, single, _validate_eta(eta))


def _unbatch(y_hat: np.ndarray, single: bool) -> np.ndarray | float:
    """Drop the query axis for a single query; return a float for a 0-d result."""
    out = y_hat[..., 0] if single else y_hat
    return float(out) if out.ndim == 0 else out


def lsa_weights(d: int, eta: float) -> LSAWeights:
    """Construct the LSA weights that emulate one GD step from ``W_0 = 0``.

    Parameters
    ----------
    d : int
        Input dimension (tokens have ``d + 1`` coordinates).
    eta : float
        Learning rate of the emulated step.

    Returns
    -------
    LSAWeights
        ``W_K = W_Q = [[I_d, 0], [0, 0]]``, ``W_V = [[0, 0], [0, -1]]``,
        ``P = eta * I``.

    Raises
    ------
    TypeError, ValueError
        If `d` is not a positive integer or `eta` is not finite.

    Notes
    -----
    von Oswald et al. [1]_ write ``P = (eta / N) I``; here the ``1 / N`` is
    part of the layer (the attention scores are divided by the number of
    context tokens, see :func:`lsa_forward`), so the weights do not depend
    on the number of demonstrations.

    References
    ----------
    .. [1] von Oswald et al. (2023), Transformers learn in-context by gradient
       descent. ICML.

    Examples
    --------
    >>> w = lsa_weights(2, 0.5)
    >>> w.W_V
    array([[ 0.,  0.,  0.],
           [ 0.,  0.,  0.],
           [ 0.,  0., -1.]])
    """
    d = validate_count(d, "d")
    eta = _validate_eta(eta)
    W_K = np.zeros((d + 1, d + 1))
    W_K[:d, :d] = np.eye(d)
    W_Q = W_K.copy()
    W_V = np.zeros((d + 1, d + 1))
    W_V[d, d] = -1.0  # W_0 = 0 in the bottom-left block
    P = eta * np.eye(d + 1)
    for m in (W_K, W_Q, W_V, P):
        m.setflags(write=False)
    return LSAWeights(W_K=W_K, W_Q=W_Q, W_V=W_V, P=P, d=d, eta=eta)


def weight_sparsity(weights: LSAWeights) -> dict[str, float]:
    """Share of exactly-zero entries in each constructed matrix.

    Parameters
    ----------
    weights : LSAWeights
        Output of :func:`lsa_weights`.

    Returns
    -------
    dict
        ``{"W_K", "W_Q", "W_V", "P"} -> share of zeros``. For ``d`` inputs
        (``D = d + 1``) and ``eta != 0``: ``W_K`` and ``W_Q``:
        ``1 - d / D**2``; ``W_V``: ``1 - 1 / D**2``; ``P``: ``1 - 1 / D``.

    Notes
    -----
    Shen et al. (arXiv:2310.08540) compare the sparsity that hand-built GD
    constructions need with that of trained attention weights; inside a
    model of width ``D_model`` the same blocks are embedded in far larger
    matrices, so the share of zeros grows towards 1.

    Examples
    --------
    >>> s = weight_sparsity(lsa_weights(3, 1.0))
    >>> s["W_K"], s["W_V"], s["P"]
    (0.8125, 0.9375, 0.75)
    """
    if not isinstance(weights, LSAWeights):
        raise TypeError(f"`weights` must be an LSAWeights, got {type(weights).__name__}")
    return {
        name: float(np.mean(getattr(weights, name) == 0.0)) for name in ("W_K", "W_Q", "W_V", "P")
    }


def lsa_forward(tokens: ArrayLike, n_context: int, weights: LSAWeights) -> np.ndarray:
    """Apply one linear self-attention layer with a residual connection.

    Parameters
    ----------
    tokens : array_like, shape (..., T, d + 1)
        Token matrix ``E`` (leading batch dimensions allowed): the first
        `n_context` rows are the demonstrations, the rest are queries.
    n_context : int
        Number of context (demonstration) tokens ``N``; keys and values come
        only from them.
    weights : LSAWeights
        The layer's weights.

    Returns
    -------
    numpy.ndarray, shape (..., T, d + 1)
        ``E + (A V) P^T`` with ``K = E_c W_K^T``, ``V = E_c W_V^T`` (context
        rows ``E_c``), ``Q = E W_Q^T`` and the linear attention scores
        ``A = Q K^T / N`` (no softmax).

    Notes
    -----
    Row ``j`` of the update is ``P sum_i (W_V e_i) (W_K e_i)^T W_Q e_j / N``,
    the LSA layer of von Oswald et al. (their eq. 5 with the ``1 / N`` moved
    from ``P`` into the layer). Keys and values come from the context tokens
    only; with ``W_0 = 0`` a query token's value ``(0, -y_q) = 0`` would add
    nothing anyway.
    """
    E = np.asarray(tokens, dtype=np.float64)
    if E.ndim < 2 or E.shape[-1] != weights.d + 1:
        raise ValueError(f"`tokens` must have shape (..., T, {weights.d + 1}), got {E.shape}")
    if isinstance(n_context, (bool, np.bool_)) or not isinstance(n_context, (int, np.integer)):
        raise TypeError(f"`n_context` must be an integer, got {n_context!r}")
    if not 1 <= int(n_context) <= E.shape[-2]:
        raise ValueError(f"`n_context` must lie in [1, {E.shape[-2]}], got {n_context}")
    n = int(n_context)
    context = E[..., :n, :]
    K = context @ weights.W_K.T
    V = context @ weights.W_V.T
    Q = E @ weights.W_Q.T
    A = (Q @ np.swapaxes(K, -1, -2)) / n  # (..., T, N) linear attention scores
    return E + (A @ V) @ weights.P.T


def lsa_predict(X: ArrayLike, y: ArrayLike, x_query: ArrayLike, *, eta: float) -> np.ndarray | float:
    """Predict ``y`` at `x_query` with the constructed LSA layer.

    The demonstrations become tokens ``(x_i, y_i)``, each query the token
    ``(x_q, 0)``; one forward pass of :func:`lsa_forward` with
    :func:`lsa_weights` is run, and the prediction is read from the query's
    last coordinate as ``y_hat = -(output y-component)`` (the layer writes
    ``y_q - Delta W x_q`` with ``y_q = 0``, von Oswald et al., Prop. 1).

    Parameters
    ----------
    X : array_like, shape (..., N, d)
        Demonstration inputs (leading batch dimensions allowed).
    y : array_like, shape (..., N)
        Demonstration targets.
    x_query : array_like, shape (..., d) or (..., M, d)
        One query or `M` queries per batch element.
    eta : float
        Learning rate of the emulated GD step.

    Returns
    -------
    float or numpy.ndarray of shape (...,) or (..., M)
        Predictions; equal to :func:`one_step_gd_predict` up to rounding.

    Raises
    ------
    ValueError, TypeError
        If the shapes disagree, values are not finite or `eta` is invalid.

    See Also
    --------
    one_step_gd_predict : the same prediction from an explicit gradient step.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0]]); y = np.array([1.0, -1.0])
    >>> lsa_predict(X, y, np.array([1.0, 1.0]), eta=1.0)
    -0.5
    """
    r = _validate_regression(X, y, x_query, eta)
    n, d = r.X.shape[-2:]
    weights = lsa_weights(d, r.eta)
    demos = np.concatenate([r.X, r.y[..., None]], axis=-1)
    queries = np.concatenate([r.x_query, np.zeros((*r.x_query.shape[:-1], 1))], axis=-1)
    out = lsa_forward(np.concatenate([demos, queries], axis=-2), n, weights)
    y_hat = -out[..., n:, d]
    return _unbatch(y_hat, r.single)


def one_step_gd_predict(
    X: ArrayLike, y: ArrayLike, x_query: ArrayLike, *, eta: float
) -> np.ndarray | float:
    """Predict with a linear model after one full-batch GD step from ``W = 0``.

    Parameters
    ----------
    X : array_like, shape (..., N, d)
        Demonstration inputs (leading batch dimensions allowed).
    y : array_like, shape (..., N)
        Demonstration targets.
    x_query : array_like, shape (..., d) or (..., M, d)
        One query or `M` queries per batch element.
    eta : float
        Learning rate.

    Returns
    -------
    float or numpy.ndarray of shape (...,) or (..., M)
        ``W_1 x_q`` with ``W_1 = W_0 - eta * grad L(W_0)``, ``W_0 = 0`` and
        ``L(W) = 1 / (2N) sum_i (W x_i - y_i)^2``, i.e.
        ``W_1 = (eta / N) sum_i y_i x_i^T``.

    See Also
    --------
    lsa_predict : the same prediction from a linear self-attention layer.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0]]); y = np.array([1.0, -1.0])
    >>> one_step_gd_predict(X, y, np.array([1.0, 1.0]), eta=1.0)
    -0.5
    """
    r = _validate_regression(X, y, x_query, eta)
    n = r.X.shape[-2]
    W0 = np.zeros(r.X.shape[:-2] + r.X.shape[-1:])  # (..., d)
    residual = np.einsum("...nd,...d->...n", r.X, W0) - r.y  # W0 x_i - y_i
    grad = np.einsum("...n,...nd->...d", residual, r.X) / n  # dL/dW at W0
    W1 = W0 - r.eta * grad
    y_hat = np.einsum("...md,...d->...m", r.x_query, W1)
    return _unbatch(y_hat, r.single)
