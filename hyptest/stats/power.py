"""Generative model of order effects for power simulations (``hyptest power``).

A simulated study needs P(gold) cubes ``(sets, orders, queries)`` for the
reference (ICL) and every compared method, under the *same* sampled orders.
The model, on the logit scale, for method ``k``, demo set ``s``, order ``o``
and query ``q``::

    logit p[k, s, o, q] = mu[s, q]
                          + sd_k * (sqrt(share_k) * u[k, s, o] * v[k, s, q]
                                    + sqrt(1 - share_k) * e[k, s, o, q])

with ``mu[s, q] = mean_logit + between_query_sd * z[s, q]`` shared by all
methods (the same queries), and ``z, u, v, e`` independent standard normals.
Each set's order effect is rank 1 (an order moves every query, each by its own
loading ``v``) plus a small order x query remainder; ``sd_k`` is the root mean
square over queries of the per-query order SD on the logit scale (``E[(u v)^2]
= E[e^2] = 1``), so ``sd_ref / sd_k`` is the true ratio of order SDs on the
logit scale, and a ratio of 1 means the two methods have the same
distribution. The order effects of different methods are independent (an
assumption: positively correlated order effects would make the paired
resampling more precise, so power here is, if anything, conservative).

:func:`estimate_order_effects` fits ``sd_k``, ``share_k``,
``between_query_sd`` and ``mean_logit`` crudely from a pilot's
``per_order.parquet``. The decision itself is not here: ``hyptest.workflows.power``
feeds these cubes to :func:`hyptest.analysis.order.order_comparison` and
:func:`hyptest.results.decide`, the code path of a study.

Pure numpy/pandas; randomness only from the ``rng`` argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
from scipy.special import expit
from statsmodels.stats.proportion import proportion_confint

from .._validation import validate_count

if TYPE_CHECKING:  # pandas is imported lazily, by the pilot function only
    import pandas as pd

__all__ = ["DEFAULT_RANK1_SHARE", "OrderEffects", "StandardDraws", "estimate_order_effects", "logits_from_draws",
           "probability_scale_ratio", "simulate_order_logits", "standard_draws", "wilson_interval"]

#: Default share of the order variance in the rank-1 (order x query) structure.
DEFAULT_RANK1_SHARE: float = 0.9


@dataclass(frozen=True)
class StandardDraws:
    """The standard-normal parts of one simulated slice (they do not depend on the SDs).

    Drawing them once and scaling them for every scenario gives common random
    numbers across scenarios (e.g. across the ratios of a power curve).

    Attributes
    ----------
    z : numpy.ndarray, shape (sets, queries)
        Query baselines.
    u : numpy.ndarray, shape (methods, sets, orders)
        Order scores of the rank-1 effect.
    v : numpy.ndarray, shape (methods, sets, queries)
        Query loadings of the rank-1 effect.
    e : numpy.ndarray, shape (methods, sets, orders, queries)
        Order x query remainder.
    """

    z: np.ndarray
    u: np.ndarray
    v: np.ndarray
    e: np.ndarray


@dataclass(frozen=True)
class OrderEffects:
    """Order-effect parameters estimated from a pilot (logit scale of P(gold)).

    Attributes
    ----------
    order_sd : Mapping[str, float]
        Method -> root mean square over (slice, set, query) of the per-query
        order SD.
    rank1_share : Mapping[str, float]
        Method -> mean over (slice, set) of the share of the centred
        (order x query) sum of squares in its first singular value (NaN for a
        method whose order effects are all zero).
    between_query_sd : float
        SD of the reference's per-(set, query) mean logits within a set,
        less the part the order effects explain, pooled.
    mean_logit : float
        Mean of the reference's logits.
    n_slices : int
        (model, task, N) slices with at least 2 orders that went in.
    clip : float
        P(gold) was clipped to ``[clip, 1 - clip]`` before the logit.
    """

    order_sd: Mapping[str, float]
    rank1_share: Mapping[str, float]
    between_query_sd: float
    mean_logit: float
    n_slices: int
    clip: float


def standard_draws(n_methods: int, n_sets: int, n_orders: int, n_queries: int,
                   rng: np.random.Generator) -> StandardDraws:
    """Draw the standard-normal parts of one slice for ``n_methods`` methods (reference first)."""
    k = validate_count(n_methods, "n_methods")
    s = validate_count(n_sets, "n_sets")
    o = validate_count(n_orders, "n_orders", minimum=2)
    q = validate_count(n_queries, "n_queries")
    return StandardDraws(z=rng.standard_normal((s, q)), u=rng.standard_normal((k, s, o)),
                         v=rng.standard_normal((k, s, q)), e=rng.standard_normal((k, s, o, q)))


def logits_from_draws(draws: StandardDraws, sds: Sequence[float], *, rank1_share: float | Sequence[float]
                      = DEFAULT_RANK1_SHARE, between_query_sd: float = 1.0, mean_logit: float = 0.0) -> np.ndarray:
    """Logits ``(methods, sets, orders, queries)`` of the model in the module docstring.

    Parameters
    ----------
    draws : StandardDraws
        From :func:`standard_draws`; one method per entry of ``sds``.
    sds : sequence of float
        Order SD (logit scale, >= 0) of each method.
    rank1_share : float or sequence of float
        Share of each method's order variance in the rank-1 structure, in [0, 1].
    between_query_sd, mean_logit : float
        Query baselines.
    """
    sd = np.asarray(sds, dtype=float)
    if sd.ndim != 1 or len(sd) != draws.u.shape[0]:
        raise ValueError(f"`sds` needs one value per method ({draws.u.shape[0]}), got {sds!r}")
    if not (np.isfinite(sd).all() and (sd >= 0).all()):
        raise ValueError(f"order SDs must be finite and >= 0, got {sds!r}")
    share = np.broadcast_to(np.asarray(rank1_share, dtype=float), sd.shape)
    if not (np.isfinite(share).all() and (share >= 0).all() and (share <= 1).all()):
        raise ValueError(f"`rank1_share` must lie in [0, 1], got {rank1_share!r}")
    if not (math.isfinite(between_query_sd) and between_query_sd >= 0 and math.isfinite(mean_logit)):
        raise ValueError("`between_query_sd` must be finite and >= 0 and `mean_logit` finite")
    mu = mean_logit + between_query_sd * draws.z  # (S, Q)
    rank1 = draws.u[:, :, :, None] * draws.v[:, :, None, :]  # (K, S, O, Q)
    effect = (np.sqrt(share)[:, None, None, None] * rank1
              + np.sqrt(1.0 - share)[:, None, None, None] * draws.e)
    return mu[None, :, None, :] + sd[:, None, None, None] * effect


def simulate_order_logits(*, n_sets: int, n_orders: int, n_queries: int, sds: Sequence[float],
                          rank1_share: float | Sequence[float] = DEFAULT_RANK1_SHARE,
                          between_query_sd: float = 1.0, mean_logit: float = 0.0,
                          rng: np.random.Generator | int | None = None) -> np.ndarray:
    """One simulated slice: logits ``(methods, sets, orders, queries)``; P(gold) is ``expit`` of them.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.special import expit
    >>> from hyptest.stats.power import simulate_order_logits
    >>> logits = simulate_order_logits(n_sets=2, n_orders=8, n_queries=32, sds=[0.6, 0.15], rng=0)
    >>> logits.shape
    (2, 2, 8, 32)
    >>> sd = np.std(expit(logits), axis=2, ddof=1).mean(axis=(1, 2))  # mean per-query SD of P(gold)
    >>> bool(sd[0] > sd[1])
    True
    """
    gen = np.random.default_rng(rng)
    draws = standard_draws(len(sds), n_sets, n_orders, n_queries, gen)
    return logits_from_draws(draws, sds, rank1_share=rank1_share, between_query_sd=between_query_sd,
                             mean_logit=mean_logit)


def probability_scale_ratio(sd_a: float, sd_b: float, *, n_orders: int, n_queries: int,
                            rank1_share: float | Sequence[float] = DEFAULT_RANK1_SHARE,
                            between_query_sd: float = 1.0, mean_logit: float = 0.0,
                            n_sets: int = 400, rng: np.random.Generator | int | None = 0) -> float:
    """Ratio of mean per-query SDs of P(gold), method A / method B, in a large simulated design.

    The decision's estimate is on the probability scale; this translates a
    logit-scale ratio ``sd_a / sd_b`` to the ratio the estimate targets (the
    logistic curve compresses SDs near 0 and 1, differently for large and
    small SDs). ``inf`` when ``sd_b`` is 0 and ``sd_a`` is not.
    """
    logits = simulate_order_logits(n_sets=n_sets, n_orders=n_orders, n_queries=n_queries, sds=[sd_a, sd_b],
                                   rank1_share=rank1_share, between_query_sd=between_query_sd,
                                   mean_logit=mean_logit, rng=rng)
    mean_sd = np.std(expit(logits), axis=2, ddof=1).mean(axis=(1, 2))
    if mean_sd[1] == 0:
        return 1.0 if mean_sd[0] == 0 else math.inf
    return float(mean_sd[0] / mean_sd[1])


def wilson_interval(count: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``count / n`` (``count`` may be fractional).

    statsmodels' ``proportion_confint(method="wilson")``, with NaNs for
    ``n <= 0`` and the bounds clipped so that they contain ``count / n`` (float
    rounding at 0 and 1).

    Examples
    --------
    >>> low, high = wilson_interval(5, 100)
    >>> round(low, 4), round(high, 4)
    (0.0215, 0.1118)
    """
    if n <= 0:
        return math.nan, math.nan
    low, high = proportion_confint(count, n, alpha=1.0 - confidence, method="wilson")
    p = count / n
    return max(0.0, min(float(low), p)), min(1.0, max(float(high), p))


def estimate_order_effects(per_order: "pd.DataFrame", *, reference: str = "icl",
                           clip: float = 1e-6) -> OrderEffects:
    """Crude estimates of the model's parameters from a pilot's per-order P(gold).

    Parameters
    ----------
    per_order : pandas.DataFrame
        ``per_order.parquet`` of a run: columns ``method``, ``demo_set``,
        ``order_id``, ``query_id``, ``p_gold`` and optionally ``model``,
        ``task``, ``n_demos``, ``seed``, ``method_kind``: each unit's final
        answer (:func:`hyptest.records.final_step_rows` of a run's
        ``per_order.parquet``, as :func:`hyptest.workflows.power.power_table`
        passes it); seeds are averaged; zero-shot rows and slices with a
        single order are dropped.
    reference : str
        The reference method (its logits give ``between_query_sd`` and
        ``mean_logit``).
    clip : float
        P(gold) is clipped to ``[clip, 1 - clip]`` before the logit.

    Returns
    -------
    OrderEffects

    Notes
    -----
    Per (slice, method, demo set), the logits form an (orders x queries)
    matrix; centred per query (across orders) it holds the order effects.
    Its per-query variances (ddof 1), averaged, estimate ``sd_k^2``; the share
    of its sum of squares in the first singular value estimates
    ``share_k`` (biased upwards by noise: a matrix of pure noise also has a
    largest singular value). ``between_query_sd^2`` is the variance over
    queries of the reference's per-query mean logits less ``sd_ref^2 / O``.
    """
    needed = {"method", "demo_set", "order_id", "query_id", "p_gold"}
    missing = sorted(needed - set(per_order.columns))
    if missing:
        raise ValueError(f"the pilot's per-order table lacks column(s) {', '.join(missing)}")
    if not 0 < clip < 0.5:
        raise ValueError(f"`clip` must lie in (0, 0.5), got {clip!r}")
    frame = per_order
    if "method_kind" in frame.columns:
        frame = frame[frame["method_kind"] != "zs"]
    slice_cols = [c for c in ("model", "task", "n_demos") if c in frame.columns]
    keys = [*slice_cols, "method", "demo_set", "order_id", "query_id"]
    cells = frame.groupby(keys, dropna=False)["p_gold"].mean().reset_index()
    p = np.clip(cells["p_gold"].to_numpy(dtype=float), clip, 1 - clip)
    cells["y"] = np.log(p) - np.log1p(-p)
    if reference not in set(cells["method"]):
        raise ValueError(f"the pilot has no rows of the reference method {reference!r}")
    var_sum: dict[str, float] = {}
    var_n: dict[str, int] = {}
    shares: dict[str, list[float]] = {}
    query_vars: list[float] = []
    ref_logits: list[np.ndarray] = []
    slices: set[tuple] = set()
    group_keys = [*slice_cols, "method", "demo_set"]
    for key, grp in cells.groupby(group_keys, dropna=False, sort=True):
        mat = grp.pivot(index="order_id", columns="query_id", values="y").dropna(axis=1)
        if mat.shape[0] < 2 or mat.shape[1] < 1:
            continue
        method = str(key[len(slice_cols)])
        slices.add(tuple(key[:len(slice_cols)]))
        y = mat.to_numpy(dtype=float)
        centred = y - y.mean(axis=0, keepdims=True)
        per_query_var = (centred ** 2).sum(axis=0) / (y.shape[0] - 1)
        var_sum[method] = var_sum.get(method, 0.0) + float(per_query_var.sum())
        var_n[method] = var_n.get(method, 0) + int(per_query_var.size)
        total = float((centred ** 2).sum())
        if total > 1e-18:
            s = np.linalg.svd(centred, compute_uv=False)
            shares.setdefault(method, []).append(float(s[0] ** 2 / np.sum(s ** 2)))
        if method == reference:
            ref_logits.append(y)
            if y.shape[1] >= 2:
                query_vars.append(float(np.var(y.mean(axis=0), ddof=1) - per_query_var.mean() / y.shape[0]))
    if reference not in var_n:
        raise ValueError("the pilot has no (slice, demo set) of the reference with at least 2 orders")
    order_sd = {m: math.sqrt(var_sum[m] / var_n[m]) for m in sorted(var_n)}
    share = {m: float(np.mean(shares[m])) if m in shares else math.nan for m in sorted(var_n)}
    between = math.sqrt(max(float(np.mean(query_vars)), 0.0)) if query_vars else math.nan
    return OrderEffects(
        order_sd=MappingProxyType(order_sd), rank1_share=MappingProxyType(share), between_query_sd=between,
        mean_logit=float(np.mean(np.concatenate([y.ravel() for y in ref_logits]))),
        n_slices=len(slices), clip=clip,
    )
