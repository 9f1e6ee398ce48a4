"""Hand-written log densities and gradients of :mod:`hyptest.stats.bayes`'s models, for nutpie.

Why this module exists
----------------------
``nutpie.compile_pymc_model`` (numba backend) costs 9-12 s per model and per
process, almost all of it numba compiling two ``numba.cfunc`` wrappers around
PyTensor's generated function; numba cannot cache those on disk (they close
over the generated code), and importing PyMC costs another ~3 s. The two
models of :mod:`hyptest.stats.bayes` are small and fixed, so their log density
and its gradient are written here by hand, as module-level
``numba.cfunc(..., cache=True)`` functions with nutpie's C ABI: numba compiles
them once per machine (per source version), stores them in its on-disk cache
and loads them in about 0.1 s in later processes. No PyMC, PyTensor or
per-shape compilation is involved: the data, their shape (numbers of methods
and blocks, or of effects) and the prior constants travel in one flat float64
buffer behind nutpie's ``user_data`` pointer, so one compiled function serves
every slice.

The densities are exactly those PyMC builds from ``_build_order_model`` and
``_build_pooled_model`` of :mod:`hyptest.stats.bayes` (tests/test_bayes_kernels.py
compares value and gradient with PyMC's ``compile_logp`` / ``compile_dlogp`` to
~1e-9 relative): the log density on the *unconstrained* scale, with PyMC's log
transform of every positive parameter and its Jacobian ``+ log x``.

Parameter vectors (PyMC's order of the free variables)
------------------------------------------------------
order model, ``M`` methods, ``B`` blocks, ``1 + 3M + B`` parameters:
    ``log sigma_set, log sigma_query[M], log sigma_order[M], z_order[B], log sigma_resid[M]``.
pooled model, ``n`` effects, ``3 + n`` parameters:
    ``delta, log sigma_between, log nu, z[n]``.

Buffers (``user_data``), float64
--------------------------------
order: a header of :data:`ORDER_HEADER` values ``(ORDER_MAGIC, M, B, a = mu_scale^2,
sigma_set scale, sigma_set nu, sigma_query scale, sigma_order scale, tau_order,
sigma_resid scale)`` then the ``B``-long columns of :data:`ORDER_COLUMNS`.
pooled: a header of :data:`POOLED_HEADER` values ``(POOLED_MAGIC, n, delta scale,
sigma_between scale, nu alpha, nu beta)`` then ``estimate[n]`` and ``posterior_sd[n]``.

A call whose buffer has the wrong magic number or whose ``dim`` does not match
the header returns -1 (nutpie then reports an error instead of sampling a
wrong density).

Floating point
--------------
Every kernel is compiled with ``error_model="numpy"``: far out in the tails
(a warm-up step to ``log sigma = -400``) a scale underflows to 0 and a
division gives inf or nan, the callback returns the non-finite code (3 or 4)
and nutpie rejects the step, as with PyTensor's generated code. With numba's
default (Python's) error model the division would raise inside the C
callback, where an exception cannot propagate: numba prints "Exception
ignored" and the step would go on with whatever the outputs held.

Cache safety
------------
numba keys its cache on this file's modification time and size, the numba
version and the CPU, so an edited kernel is recompiled; every function the
cfuncs call lives in this file (numba does not track other files). A
corrupt cache file makes the import fail (the caller falls back to the
PyMC-compiled path), and :func:`self_check` compares each compiled cfunc with
the interpreted Python source of the same kernel on a fixed point before first
use, so a cache entry that does not match this source is never used.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types

__all__ = [
    "ORDER_COLUMNS",
    "order_buffer",
    "order_expand_c",
    "order_initial_point",
    "order_logp_c",
    "order_logp_grad",
    "pooled_buffer",
    "pooled_expand_c",
    "pooled_initial_point",
    "pooled_logp_c",
    "pooled_logp_grad",
    "self_check",
]

#: nutpie's C signatures (nutpie/compile_pymc.py: ``_make_c_logp_func``, ``_make_c_expand_func``).
LOGP_SIGNATURE = types.int64(
    types.uint64, types.CPointer(types.double), types.CPointer(types.double),
    types.CPointer(types.double), types.voidptr,
)
EXPAND_SIGNATURE = types.int64(
    types.uint64, types.uint64, types.CPointer(types.double), types.CPointer(types.double), types.voidptr,
)

ORDER_MAGIC: float = 7301.0
POOLED_MAGIC: float = 7302.0
ORDER_HEADER: int = 10
POOLED_HEADER: int = 6
#: Columns of the order buffer, each ``B`` long (``_STAT_KEYS`` of hyptest.stats.bayes).
ORDER_COLUMNS: tuple[str, ...] = (
    "method_idx", "n_orders", "n_queries", "grand_mean",
    "ss_order", "df_order", "ss_query", "df_query", "ss_int", "df_int", "has_int",
)
_LOG2PI = math.log(2.0 * math.pi)
_LOG2 = math.log(2.0)
_HALFNORM_CONST = 0.5 * math.log(2.0 / math.pi)


# ---------------------------------------------------------------------------
# building blocks (njit, same file: numba's cache tracks this file only)
# ---------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def digamma(x: float) -> float:
    """Digamma function for ``x > 0``: recurrence up to 10, then the asymptotic series (|error| < 1e-14)."""
    acc = 0.0
    while x < 10.0:
        acc -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 * (
        1.0 / 240.0 - inv2 * (1.0 / 132.0 - inv2 * (691.0 / 32760.0))))))
    return acc + math.log(x) - 0.5 / x - series


@numba.njit(cache=True, error_model="numpy")
def _log_halfnormal(u: float, scale: float) -> tuple[float, float]:
    """HalfNormal(scale) log density of ``x = exp(u)`` plus the Jacobian ``u``, and its u-derivative."""
    t = math.exp(u) / scale
    return _HALFNORM_CONST - math.log(scale) - 0.5 * t * t + u, 1.0 - t * t


@numba.njit(cache=True, error_model="numpy")
def _log_halfstudentt(u: float, nu: float, scale: float) -> tuple[float, float]:
    """HalfStudentT(nu, scale) log density of ``x = exp(u)`` plus ``u``, and its u-derivative."""
    t = math.exp(u) / scale
    q = t * t / nu
    const = _LOG2 + math.lgamma(0.5 * (nu + 1.0)) - math.lgamma(0.5 * nu) - 0.5 * math.log(nu * math.pi)
    return const - math.log(scale) - 0.5 * (nu + 1.0) * math.log1p(q) + u, 1.0 - (nu + 1.0) * q / (1.0 + q)


@numba.njit(cache=True, error_model="numpy")
def _log_gamma_density(u: float, alpha: float, beta: float) -> tuple[float, float]:
    """Gamma(alpha, rate beta) log density of ``x = exp(u)`` plus ``u``, and its u-derivative."""
    x = math.exp(u)
    lp = alpha * math.log(beta) - math.lgamma(alpha) + (alpha - 1.0) * u - beta * x + u
    return lp, alpha - beta * x


# ---------------------------------------------------------------------------
# the order-variance model
# ---------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def _order_priors(x: np.ndarray, buf: np.ndarray, grad: np.ndarray, n_m: int, n_b: int) -> float:
    """Priors (with log-transform Jacobians) of the order model; writes their gradient into ``grad``."""
    lp, g = _log_halfstudentt(x[0], buf[5], buf[4])
    grad[0] = g
    scales = (buf[6], buf[7], buf[9])  # sigma_query, sigma_order, sigma_resid
    offsets = (1, 1 + n_m, 1 + 2 * n_m + n_b)
    for k in range(3):
        for m in range(n_m):
            i = offsets[k] + m
            lp_i, g_i = _log_halfnormal(x[i], scales[k])
            lp += lp_i
            grad[i] = g_i
    for b in range(n_b):
        z = x[1 + 2 * n_m + b]
        lp += -0.5 * _LOG2PI - 0.5 * z * z
        grad[1 + 2 * n_m + b] = -z
    return lp


@numba.njit(cache=True, error_model="numpy")
def _order_within(x: np.ndarray, buf: np.ndarray, n_m: int, n_b: int, var: np.ndarray,
                  g_var: np.ndarray) -> float:
    """Within-block (Helmert) log likelihood of every block.

    Fills ``var[:, b] = (v_e, v_o, v_q, d_b)`` (interaction, order, query
    variances and the block mean's variance without ``sigma_set^2``) and
    ``g_var[:, b]`` with the derivatives of the returned sum with respect to
    ``v_r`` (the method's ``sigma_resid^2``, direct and through ``v_e``),
    ``v_o`` and ``v_q``.
    """
    h0 = ORDER_HEADER
    tau = buf[8]
    lp = 0.0
    for b in range(n_b):
        m = int(buf[h0 + b])
        n_o, n_q = buf[h0 + n_b + b], buf[h0 + 2 * n_b + b]
        ss_o, df_o = buf[h0 + 4 * n_b + b], buf[h0 + 5 * n_b + b]
        ss_q, df_q = buf[h0 + 6 * n_b + b], buf[h0 + 7 * n_b + b]
        ss_i, df_i = buf[h0 + 8 * n_b + b], buf[h0 + 9 * n_b + b]
        h = buf[h0 + 10 * n_b + b]
        v_r = math.exp(2.0 * x[1 + 2 * n_m + n_b + m])
        v_o = math.exp(2.0 * (x[1 + n_m + m] + tau * x[1 + 2 * n_m + b]))
        v_q = math.exp(2.0 * x[1 + m])
        v_e = h * v_r
        lam_o = v_e + n_q * v_o
        lam_q = v_e + n_o * v_q
        term = (ss_o / lam_o + df_o * (_LOG2PI + math.log(lam_o))
                + ss_q / lam_q + df_q * (_LOG2PI + math.log(lam_q)) + math.log(n_o * n_q))
        g_lo = -0.5 * (df_o / lam_o - ss_o / (lam_o * lam_o))
        g_lq = -0.5 * (df_q / lam_q - ss_q / (lam_q * lam_q))
        g_r = h * (g_lo + g_lq)
        if h != 0.0:
            term += h * (ss_i / v_r + df_i * (_LOG2PI + math.log(v_r)))
            g_r += -0.5 * h * (df_i / v_r - ss_i / (v_r * v_r))
        lp -= 0.5 * term
        var[0, b], var[1, b], var[2, b] = v_e, v_o, v_q
        var[3, b] = v_e / (n_o * n_q) + v_o / n_o + v_q / n_q
        g_var[0, b], g_var[1, b], g_var[2, b] = g_r, n_q * g_lo, n_o * g_lq
    return lp


@numba.njit(cache=True, error_model="numpy")
def _order_means(x: np.ndarray, buf: np.ndarray, n_m: int, n_b: int, var: np.ndarray,
                 g_d: np.ndarray) -> float:
    """Log density of the block means with each method's ``mu ~ N(0, a)`` integrated out.

    Writes ``g_d[b]``, the derivative with respect to block ``b``'s mean
    variance ``d_b = var[3, b] + sigma_set^2``:
    ``-(1/d_b - a / (c d_b^2) - (y_b - mhat)^2 / d_b^2) / 2`` with
    ``c = 1 + a sum 1/d`` and ``mhat = a sum(y/d) / c`` (the method's).
    """
    h0 = ORDER_HEADER
    a = buf[3]
    s2 = math.exp(2.0 * x[0])
    prec = np.zeros(n_m)
    wsum = np.zeros(n_m)
    lp = 0.0
    for b in range(n_b):
        m = int(buf[h0 + b])
        d = var[3, b] + s2
        y = buf[h0 + 3 * n_b + b]
        prec[m] += 1.0 / d
        wsum[m] += y / d
        lp -= 0.5 * (_LOG2PI + math.log(d) + y * y / d)
    for m in range(n_m):
        lp -= 0.5 * (math.log1p(a * prec[m]) - a * wsum[m] * wsum[m] / (1.0 + a * prec[m]))
    for b in range(n_b):
        m = int(buf[h0 + b])
        d = var[3, b] + s2
        c = 1.0 + a * prec[m]
        r = buf[h0 + 3 * n_b + b] - a * wsum[m] / c
        g_d[b] = -0.5 * (1.0 / d - a / (c * d * d) - r * r / (d * d))
    return lp


@numba.njit(cache=True, error_model="numpy")
def order_logp_grad(x: np.ndarray, buf: np.ndarray, grad: np.ndarray) -> float:
    """Log density of the order-variance model at unconstrained ``x``; its gradient into ``grad``.

    Parameters
    ----------
    x : numpy.ndarray
        ``1 + 3M + B`` unconstrained parameters (module docstring).
    buf : numpy.ndarray
        The buffer of :func:`order_buffer`.
    grad : numpy.ndarray
        Output, same length as ``x``.

    Returns
    -------
    float
        The log density (PyMC's ``model.logp(jacobian=True)``).
    """
    n_m, n_b = int(buf[1]), int(buf[2])
    tau = buf[8]
    lp = _order_priors(x, buf, grad, n_m, n_b)
    var = np.empty((4, n_b))
    g_var = np.empty((3, n_b))
    g_d = np.empty(n_b)
    lp += _order_within(x, buf, n_m, n_b, var, g_var)
    lp += _order_means(x, buf, n_m, n_b, var, g_d)
    s2 = math.exp(2.0 * x[0])
    h0 = ORDER_HEADER
    for b in range(n_b):
        m = int(buf[h0 + b])
        n_o, n_q = buf[h0 + n_b + b], buf[h0 + 2 * n_b + b]
        h = buf[h0 + 10 * n_b + b]
        v_r = math.exp(2.0 * x[1 + 2 * n_m + n_b + m])
        g_vo = (g_var[1, b] + g_d[b] / n_o) * var[1, b]  # d/d log(v_o)
        grad[0] += 2.0 * s2 * g_d[b]
        grad[1 + m] += 2.0 * var[2, b] * (g_var[2, b] + g_d[b] / n_q)
        grad[1 + n_m + m] += 2.0 * g_vo
        grad[1 + 2 * n_m + b] += 2.0 * tau * g_vo
        grad[1 + 2 * n_m + n_b + m] += 2.0 * v_r * (g_var[0, b] + h * g_d[b] / (n_o * n_q))
    return lp


@numba.njit(cache=True, error_model="numpy")
def order_expand(x: np.ndarray, out: np.ndarray, n_m: int, n_b: int) -> None:
    """Constrained values ``sigma_set, sigma_query, sigma_order, z_order, sigma_resid`` of ``x``."""
    for i in range(1 + 3 * n_m + n_b):
        is_z = 1 + 2 * n_m <= i < 1 + 2 * n_m + n_b
        out[i] = x[i] if is_z else math.exp(x[i])


@numba.njit(cache=True, error_model="numpy")
def _finite_code(grad: np.ndarray, logp: float) -> int:
    """nutpie's status of a logp call: 3 for a non-finite gradient, 4 for a non-finite density, else 0."""
    for i in range(len(grad)):
        if not math.isfinite(grad[i]):
            return 3
    if not math.isfinite(logp):
        return 4
    return 0


@numba.cfunc(LOGP_SIGNATURE, cache=True, error_model="numpy")
def order_logp_c(dim, x_, grad_, logp_, user_data_):  # type: ignore[no-untyped-def]
    """nutpie logp callback of the order model (C ABI; 0 ok, -1 bad buffer, 3/4 non-finite)."""
    head = numba.carray(user_data_, (ORDER_HEADER,), dtype=np.float64)
    n_m, n_b = int(head[1]), int(head[2])
    if head[0] != ORDER_MAGIC or dim != 1 + 3 * n_m + n_b:
        return -1
    buf = numba.carray(user_data_, (ORDER_HEADER + len(ORDER_COLUMNS) * n_b,), dtype=np.float64)
    x = numba.carray(x_, (dim,))
    grad = numba.carray(grad_, (dim,))
    logp = numba.carray(logp_, (1,))
    logp[0] = order_logp_grad(x, buf, grad)
    return _finite_code(grad, logp[0])


@numba.cfunc(EXPAND_SIGNATURE, cache=True, error_model="numpy")
def order_expand_c(dim, n_expanded, x_, out_, user_data_):  # type: ignore[no-untyped-def]
    """nutpie expand callback of the order model: the constrained draws (0 ok, -1 bad sizes)."""
    head = numba.carray(user_data_, (ORDER_HEADER,), dtype=np.float64)
    n_m, n_b = int(head[1]), int(head[2])
    if head[0] != ORDER_MAGIC or dim != 1 + 3 * n_m + n_b or n_expanded != dim:
        return -1
    order_expand(numba.carray(x_, (dim,)), numba.carray(out_, (dim,)), n_m, n_b)
    return 0


# ---------------------------------------------------------------------------
# the pooled (Student-t random-effects) model
# ---------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def pooled_logp_grad(x: np.ndarray, buf: np.ndarray, grad: np.ndarray) -> float:
    """Log density of the pooled model at unconstrained ``x``; its gradient into ``grad``.

    ``delta ~ N(0, s_d)``, ``sigma_between ~ HalfNormal(s_b)``, ``nu ~
    Gamma(alpha, beta)``, ``z_i ~ t_nu(0, 1)``, ``estimate_i ~ N(delta +
    sigma_between z_i, posterior_sd_i)``; parameters ``delta, log
    sigma_between, log nu, z`` (module docstring).
    """
    n = int(buf[1])
    s_d = buf[2]
    delta = x[0]
    lp = -0.5 * _LOG2PI - math.log(s_d) - 0.5 * (delta / s_d) ** 2
    grad[0] = -delta / s_d**2
    lp_b, grad[1] = _log_halfnormal(x[1], buf[3])
    lp_n, grad[2] = _log_gamma_density(x[2], buf[4], buf[5])
    lp += lp_b + lp_n
    sb, nu = math.exp(x[1]), math.exp(x[2])
    t_const = math.lgamma(0.5 * (nu + 1.0)) - math.lgamma(0.5 * nu) - 0.5 * math.log(nu * math.pi)
    dconst = 0.5 * digamma(0.5 * (nu + 1.0)) - 0.5 * digamma(0.5 * nu) - 0.5 / nu
    g_nu = 0.0
    g_sb = 0.0
    for i in range(n):
        z = x[3 + i]
        est, se = buf[POOLED_HEADER + i], buf[POOLED_HEADER + n + i]
        q = z * z / nu
        lp += t_const - 0.5 * (nu + 1.0) * math.log1p(q)
        g_nu += dconst - 0.5 * math.log1p(q) + 0.5 * (nu + 1.0) * z * z / (nu * (nu + z * z))
        r = (est - delta - sb * z) / se
        lp += -0.5 * _LOG2PI - math.log(se) - 0.5 * r * r
        grad[0] += r / se
        g_sb += r * z / se
        grad[3 + i] = -(nu + 1.0) * z / (nu + z * z) + r * sb / se
    grad[1] += sb * g_sb
    grad[2] += nu * g_nu
    return lp


@numba.njit(cache=True, error_model="numpy")
def pooled_expand(x: np.ndarray, out: np.ndarray, n: int) -> None:
    """Constrained values ``delta, sigma_between, nu, delta_task[n]`` of ``x``."""
    sb = math.exp(x[1])
    out[0] = x[0]
    out[1] = sb
    out[2] = math.exp(x[2])
    for i in range(n):
        out[3 + i] = x[0] + sb * x[3 + i]


@numba.cfunc(LOGP_SIGNATURE, cache=True, error_model="numpy")
def pooled_logp_c(dim, x_, grad_, logp_, user_data_):  # type: ignore[no-untyped-def]
    """nutpie logp callback of the pooled model (C ABI; 0 ok, -1 bad buffer, 3/4 non-finite)."""
    head = numba.carray(user_data_, (POOLED_HEADER,), dtype=np.float64)
    n = int(head[1])
    if head[0] != POOLED_MAGIC or dim != 3 + n:
        return -1
    buf = numba.carray(user_data_, (POOLED_HEADER + 2 * n,), dtype=np.float64)
    x = numba.carray(x_, (dim,))
    grad = numba.carray(grad_, (dim,))
    logp = numba.carray(logp_, (1,))
    logp[0] = pooled_logp_grad(x, buf, grad)
    return _finite_code(grad, logp[0])


@numba.cfunc(EXPAND_SIGNATURE, cache=True, error_model="numpy")
def pooled_expand_c(dim, n_expanded, x_, out_, user_data_):  # type: ignore[no-untyped-def]
    """nutpie expand callback of the pooled model: ``delta, sigma_between, nu, delta_task``."""
    head = numba.carray(user_data_, (POOLED_HEADER,), dtype=np.float64)
    n = int(head[1])
    if head[0] != POOLED_MAGIC or dim != 3 + n or n_expanded != 3 + n:
        return -1
    pooled_expand(numba.carray(x_, (dim,)), numba.carray(out_, (n_expanded,)), n)
    return 0


# ---------------------------------------------------------------------------
# buffers and initial points
# ---------------------------------------------------------------------------


def order_buffer(stats: dict[str, np.ndarray], n_methods: int, priors: dict[str, float],
                 set_nu: float) -> np.ndarray:
    """The ``user_data`` buffer of the order model.

    Parameters
    ----------
    stats : dict of str to numpy.ndarray
        ``_block_stats`` of :mod:`hyptest.stats.bayes`: the columns of :data:`ORDER_COLUMNS`.
    n_methods : int
        Modelled methods ``M`` (``stats["method_idx"]`` takes values in ``range(M)``).
    priors : dict of str to float
        ``PRIOR_SCALES`` of :mod:`hyptest.stats.bayes`.
    set_nu : float
        Degrees of freedom of ``sigma_set``'s half-Student-t prior.

    Returns
    -------
    numpy.ndarray
        Read-only, C-contiguous float64 buffer (layout in the module docstring).
    """
    n_b = len(stats["method_idx"])
    head = [ORDER_MAGIC, n_methods, n_b, priors["mu"] ** 2, priors["sigma_set"], set_nu,
            priors["sigma_query"], priors["sigma_order"], priors["tau_order"], priors["sigma_resid"]]
    cols = [np.asarray(stats[k], dtype=np.float64).reshape(n_b) for k in ORDER_COLUMNS]
    buf = np.ascontiguousarray(np.concatenate([np.asarray(head, dtype=np.float64), *cols]))
    buf.flags.writeable = False
    return buf


def pooled_buffer(estimate: np.ndarray, se: np.ndarray, priors: dict[str, float]) -> np.ndarray:
    """The ``user_data`` buffer of the pooled model (``priors``: ``POOLED_PRIORS``)."""
    est = np.asarray(estimate, dtype=np.float64).reshape(-1)
    head = [POOLED_MAGIC, est.size, priors["delta"], priors["sigma_between"], priors["nu_alpha"],
            priors["nu_beta"]]
    buf = np.ascontiguousarray(np.concatenate([np.asarray(head, dtype=np.float64), est,
                                               np.asarray(se, dtype=np.float64).reshape(-1)]))
    buf.flags.writeable = False
    return buf


def _jitter(point: np.ndarray, seed: object) -> np.ndarray:
    """``point + U(-1, 1)`` per coordinate, as PyMC jitters the initial point of every free variable."""
    rng = np.random.default_rng(int(seed) if seed is not None else None)  # type: ignore[call-overload]
    return point + rng.uniform(-1.0, 1.0, size=point.size)


def order_initial_point(buf: np.ndarray, seed: object = None) -> np.ndarray:
    """PyMC's initial point of the order model, jittered: each scale's prior ``sigma`` (its
    support point), logged, ``z_order = 0``, plus U(-1, 1) on the unconstrained scale."""
    n_m, n_b = int(buf[1]), int(buf[2])
    point = np.concatenate([
        [math.log(buf[4])], np.full(n_m, math.log(buf[6])), np.full(n_m, math.log(buf[7])),
        np.zeros(n_b), np.full(n_m, math.log(buf[9])),
    ])
    return _jitter(point, seed)


def pooled_initial_point(buf: np.ndarray, seed: object = None) -> np.ndarray:
    """PyMC's initial point of the pooled model, jittered: ``delta = 0``, ``log sigma_between``'s
    scale, ``log`` of ``nu``'s prior mean ``alpha / beta``, ``z = 0``, plus U(-1, 1)."""
    n = int(buf[1])
    point = np.concatenate([[0.0, math.log(buf[3]), math.log(buf[4] / buf[5])], np.zeros(n)])
    return _jitter(point, seed)


# ---------------------------------------------------------------------------
# self-check of the compiled (possibly cache-loaded) callbacks
# ---------------------------------------------------------------------------


def _order_logp_numpy(x: np.ndarray, buf: np.ndarray) -> float:
    """The order model's log density written plainly in numpy (the self-check's reference)."""
    n_m, n_b = int(buf[1]), int(buf[2])
    c = {k: buf[ORDER_HEADER + i * n_b: ORDER_HEADER + (i + 1) * n_b] for i, k in enumerate(ORDER_COLUMNS)}
    m = c["method_idx"].astype(np.int64)
    u_s, u_q, u_o = x[0], x[1:1 + n_m], x[1 + n_m:1 + 2 * n_m]
    z, u_r = x[1 + 2 * n_m:1 + 2 * n_m + n_b], x[1 + 2 * n_m + n_b:]
    nu, s_scale = buf[5], buf[4]
    lp = (_LOG2 + math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
          - math.log(s_scale) - (nu + 1) / 2 * math.log1p(math.exp(2 * u_s) / s_scale**2 / nu) + u_s)
    for u, scale in ((u_q, buf[6]), (u_o, buf[7]), (u_r, buf[9])):
        lp += np.sum(_HALFNORM_CONST - math.log(scale) - 0.5 * np.exp(2 * u) / scale**2 + u)
    lp += np.sum(-0.5 * _LOG2PI - 0.5 * z**2)
    h, n_o, n_q = c["has_int"], c["n_orders"], c["n_queries"]
    v_r = np.exp(2 * u_r)[m]
    v_e, v_o, v_q = h * v_r, np.exp(2 * (u_o[m] + buf[8] * z)), np.exp(2 * u_q)[m]
    lam_o, lam_q = v_e + n_q * v_o, v_e + n_o * v_q
    lp -= 0.5 * np.sum(np.where(h > 0, h * (c["ss_int"] / v_r + c["df_int"] * (_LOG2PI + np.log(v_r))), 0.0)
                       + c["ss_order"] / lam_o + c["df_order"] * (_LOG2PI + np.log(lam_o))
                       + c["ss_query"] / lam_q + c["df_query"] * (_LOG2PI + np.log(lam_q)) + np.log(n_o * n_q))
    d = v_e / (n_o * n_q) + v_o / n_o + v_q / n_q + math.exp(2 * u_s)
    y, a = c["grand_mean"], buf[3]
    for j in range(n_m):
        sel = m == j
        p, w = np.sum(1 / d[sel]), np.sum(y[sel] / d[sel])
        lp -= 0.5 * (sel.sum() * _LOG2PI + np.sum(np.log(d[sel])) + math.log1p(a * p)
                     + np.sum(y[sel] ** 2 / d[sel]) - a * w * w / (1 + a * p))
    return float(lp)


def _pooled_logp_numpy(x: np.ndarray, buf: np.ndarray) -> float:
    """The pooled model's log density written plainly in numpy (the self-check's reference)."""
    n = int(buf[1])
    est, se = buf[POOLED_HEADER:POOLED_HEADER + n], buf[POOLED_HEADER + n:POOLED_HEADER + 2 * n]
    s_d, s_b, alpha, beta = buf[2], buf[3], buf[4], buf[5]
    delta, sb, nu, z = x[0], math.exp(x[1]), math.exp(x[2]), x[3:]
    lp = -0.5 * _LOG2PI - math.log(s_d) - 0.5 * (delta / s_d) ** 2
    lp += _HALFNORM_CONST - math.log(s_b) - 0.5 * (sb / s_b) ** 2 + x[1]
    lp += alpha * math.log(beta) - math.lgamma(alpha) + (alpha - 1) * x[2] - beta * nu + x[2]
    lp += np.sum(math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
                 - (nu + 1) / 2 * np.log1p(z**2 / nu))
    lp += np.sum(-0.5 * _LOG2PI - np.log(se) - 0.5 * ((est - delta - sb * z) / se) ** 2)
    return float(lp)


def call_logp(cfunc: object, x: np.ndarray, buf: np.ndarray) -> tuple[int, float, np.ndarray]:
    """Call a logp cfunc through ctypes, as nutpie would: ``(return code, logp, gradient)``."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    logp = np.zeros(1)
    fn = cfunc.ctypes  # type: ignore[attr-defined]
    ptr = fn.argtypes[1]
    code = fn(x.size, x.ctypes.data_as(ptr), grad.ctypes.data_as(ptr), logp.ctypes.data_as(ptr),
              buf.ctypes.data)
    return int(code), float(logp[0]), grad


def _check_one(cfunc: object, reference: object, buf: np.ndarray, x: np.ndarray) -> str:
    """Compare one cfunc with its numpy reference at ``x`` (value, and gradient by central differences)."""
    code, lp, grad = call_logp(cfunc, x, buf)
    want = reference(x, buf)  # type: ignore[operator]
    if code != 0 or not abs(lp - want) <= 1e-9 * max(1.0, abs(want)):
        return f"logp {lp!r} (code {code}) != {want!r}"
    direction = np.sin(np.arange(1, x.size + 1))  # a fixed direction touching every coordinate
    eps = 1e-5
    fd = (reference(x + eps * direction, buf) - reference(x - eps * direction, buf)) / (2 * eps)  # type: ignore[operator]
    if not abs(fd - grad @ direction) <= 1e-5 * max(1.0, abs(fd)):
        return f"gradient . v {grad @ direction!r} != finite difference {fd!r}"
    return ""


def self_check() -> str:
    """Check both compiled logp callbacks against plain numpy on fixed data; "" when they agree.

    Run once per process before the callbacks are used: a cache entry that
    is corrupt or does not match this file's source gives a message instead
    of a wrong posterior.
    """
    stats = {
        "method_idx": np.array([0, 0, 1]), "n_orders": np.array([4.0, 5.0, 4.0]),
        "n_queries": np.array([6.0, 6.0, 3.0]), "grand_mean": np.array([0.3, -0.2, 1.1]),
        "ss_order": np.array([3.0, 5.5, 0.7]), "df_order": np.array([3.0, 4.0, 3.0]),
        "ss_query": np.array([20.0, 31.0, 4.0]), "df_query": np.array([5.0, 5.0, 2.0]),
        "ss_int": np.array([2.5, 4.0, 0.0]), "df_int": np.array([15.0, 20.0, 6.0]),
        "has_int": np.array([1.0, 1.0, 0.0]),
    }
    priors = {"mu": 2.5, "sigma_set": 1.0, "sigma_query": 2.5, "sigma_order": 1.0, "tau_order": 0.5,
              "sigma_resid": 1.0}
    obuf = order_buffer(stats, 2, priors, 3.0)
    pbuf = pooled_buffer(np.array([0.2, -0.4, 0.9]), np.array([0.3, 0.2, 0.5]),
                         {"delta": 2.5, "sigma_between": 1.0, "nu_alpha": 2.0, "nu_beta": 0.1})
    x_o = 0.3 * np.cos(np.arange(10.0))
    x_p = np.array([0.1, -0.7, 2.2, 0.5, -1.3, 0.2])
    problems = [_check_one(order_logp_c, _order_logp_numpy, obuf, x_o),
                _check_one(pooled_logp_c, _pooled_logp_numpy, pbuf, x_p)]
    return "; ".join(p for p in problems if p)
