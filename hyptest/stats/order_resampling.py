"""Resampling that follows the design of an order study.

Every query of a demo set is scored under the *same* sampled orders, so the
per-query order SDs of one set are not independent units: they share the
orders that happened to be drawn. Inference on order sensitivity must
therefore resample what was sampled:

* **orders within demo sets** (when the orders are a sample of the N!
  orders; when all N! were run they are the population and stay fixed),
  the same resampled orders for both methods, because both ran under them;
* **queries within demo sets**, the same queries for both methods (paired);
* **demo sets** only when the analysis generalises over demo sets, which is
  done by an exact sign-flip test over per-set statistics instead
  (:class:`SignFlipDistribution`), whose smallest p-value ``2 / 2**S`` is
  known in advance.

The functions here take outputs as cubes of shape ``(sets, orders, queries)``
or ``(sets, orders, queries, labels)`` and return resampling distributions of
the statistic; :class:`BootstrapDistribution` and
:class:`SignFlipDistribution` turn a distribution into p-values and interval
bounds that are inverses of each other by construction, so a verdict read
from a p-value never contradicts the interval printed beside it.

Pure numpy; randomness only from the ``rng`` argument.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from .._util import as_run

__all__ = [
    "BootstrapDistribution",
    "SignFlipDistribution",
    "ZERO_TOL",
    "alignment_draws",
    "alignment_statistic",
    "order_sd_draws",
    "order_sd_statistic",
    "per_set_statistics",
    "sign_flip_floor",
]

#: Order SDs at or below this count as exactly zero. An order-invariant method
#: is not bitwise invariant in float32: full-batch GD on SmolLM2 sums its
#: gradients in the demos' order, and its per-query SD of P(gold) across orders
#: reaches 5e-6 (mean 7e-7) in the default study; 1e-5 sits above that rounding
#: and three orders of magnitude below any real order effect seen so far.
ZERO_TOL: float = 1e-5

Statistic = Literal["log_mean_sd_ratio", "mean_log_var_ratio", "mean_sd_difference"]
Side = Literal["greater", "less"]

#: Draws whose random numbers are drawn together (the streams: changing it changes every draw).
_BLOCK = 4096
#: Draws whose statistic is computed together (bounds memory: chunk x sets x queries x labels floats;
#: any value gives the same draws, bit for bit). 128: each temporary of 8 sets x 496 queries is 4 MB, and the
#: alignment and order-SD draws take 13-22 % less CPU than with 256 (cache), 32 to 128 alike.
_CHUNK = 128


def _as_cube(cube: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(cube, dtype=float)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"`{name}` must have shape (sets, orders, queries[, labels]), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` contains missing or non-finite cells")
    if arr.shape[1] < 2:
        raise ValueError(f"`{name}` needs at least 2 orders per demo set, got {arr.shape[1]}")
    # centre each (set, query, label) across orders: variances and correlations do not change, and the
    # one-pass sums below then cannot cancel catastrophically (an order-invariant method stays exactly 0)
    return arr - arr.mean(axis=1, keepdims=True)


def _counts(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` multinomial(n, uniform) count vectors: n draws with replacement from n items, (size, n)."""
    return _int_counts(n, size, rng).astype(float)


def _int_counts(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """:func:`_counts` as integers (int64): the same random numbers and counts."""
    idx = rng.integers(0, n, size=(size, n))
    idx += n * np.arange(size)[:, None]  # in place: one (size, n) array less at a time
    return np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)


def _query_weights(mask: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Multinomial query weights within each set, (size, S, Q); padded queries (mask False) get 0.

    Counts are whole numbers at most Q, so they are kept in the smallest
    unsigned integer type that holds Q (exact; a quarter of the memory of
    floats or less) and turned into floats one chunk of draws at a time.
    """
    dtype = np.uint16 if mask.shape[1] <= np.iinfo(np.uint16).max else np.int64
    out = np.zeros((size, *mask.shape), dtype=dtype)
    for s, row in enumerate(mask):
        idx = np.flatnonzero(row)
        # a set's queries are usually one run of slots: a slice assignment, ten times faster than the index
        out[:, s, as_run(idx)] = _int_counts(len(idx), size, rng)
    return out


def _order_counts(n_sets: int, n_orders: int, size: int, resample: bool, rng: np.random.Generator) -> np.ndarray:
    if not resample:
        return np.ones((size, n_sets, n_orders))
    return _counts(n_orders, size * n_sets, rng).reshape(size, n_sets, n_orders)


def _mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones((shape[0], shape[2]), dtype=bool)
    m = np.asarray(mask, dtype=bool)
    if m.shape != (shape[0], shape[2]):
        raise ValueError(f"`mask` must have shape (sets, queries) = {(shape[0], shape[2])}, got {m.shape}")
    if not m.any(axis=1).all():
        raise ValueError("every demo set needs at least one query")
    return m


def _weighted_sd(cube: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-query SD across orders with order multiplicities ``counts``.

    ``cube``: (S, O, Q, L); ``counts``: (B, S, O) -> (B, S, Q), mean over labels.
    ddof = 1 with respect to the number of orders, as for the unresampled SD.
    """
    n = cube.shape[1]
    s1 = np.einsum("bso,soql->bsql", counts, cube)
    s2 = np.einsum("bso,soql->bsql", counts, cube * cube)
    var = (s2 - s1 * s1 / n) / (n - 1)
    sd = np.sqrt(np.clip(var, 0.0, None))
    sd[sd <= ZERO_TOL] = 0.0
    return sd.mean(axis=-1)


def _log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(a / b) with 0/0 = 0 (both exactly order-invariant) and x/0 = +inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(a) - np.log(b)
    out[(a == 0) & (b == 0)] = 0.0
    return out


def _statistic(sd_a: np.ndarray, sd_b: np.ndarray, weights: np.ndarray, statistic: Statistic) -> np.ndarray:
    """Statistic over (B, S, Q) SDs with query weights (B, S, Q)."""
    if statistic == "log_mean_sd_ratio":
        mean_a = (sd_a * weights).sum(axis=(1, 2))
        mean_b = (sd_b * weights).sum(axis=(1, 2))
        mean_a[mean_a <= ZERO_TOL * weights.sum(axis=(1, 2))] = 0.0
        mean_b[mean_b <= ZERO_TOL * weights.sum(axis=(1, 2))] = 0.0
        return _log_ratio(mean_a, mean_b)
    if statistic == "mean_sd_difference":
        return ((sd_a - sd_b) * weights).sum(axis=(1, 2)) / weights.sum(axis=(1, 2))
    if statistic == "mean_log_var_ratio":
        unit = 2.0 * _log_ratio(sd_a, sd_b)
        with np.errstate(invalid="ignore"):
            total = (np.where(weights > 0, unit, 0.0) * weights).sum(axis=(1, 2))
        return total / weights.sum(axis=(1, 2))
    raise ValueError(f"unknown statistic {statistic!r}")


def order_sd_statistic(cube_a: np.ndarray, cube_b: np.ndarray, statistic: Statistic = "log_mean_sd_ratio",
                       *, mask: np.ndarray | None = None) -> float:
    """The observed statistic of :func:`order_sd_draws` (no resampling).

    ``log_mean_sd_ratio``: log(mean over (set, query) of SD_a / same of SD_b),
    the log ratio of mean order sensitivities (Theorem 1's quantity).
    ``mean_log_var_ratio``: mean over (set, query) of log(var_a / var_b).
    ``mean_sd_difference``: mean over (set, query) of SD_a - SD_b (absolute margins).
    SDs at or below :data:`ZERO_TOL` are exactly zero; 0/0 counts as ratio 1.
    """
    a, b = _as_cube(cube_a, "cube_a"), _as_cube(cube_b, "cube_b")
    ones = np.ones((1, a.shape[0], a.shape[1]))
    w = _mask(mask, a.shape)[None].astype(float)
    return float(_statistic(_weighted_sd(a, ones), _weighted_sd(b, ones), w, statistic)[0])


def order_sd_draws(
    cube_a: np.ndarray,
    cube_b: np.ndarray,
    *,
    statistic: Statistic = "log_mean_sd_ratio",
    resample_orders: bool = True,
    n_resamples: int = 10000,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Bootstrap distribution of an order-sensitivity statistic, following the design.

    Each draw resamples, within every demo set, the orders (multinomial
    counts, the same for both methods; skipped when ``resample_orders`` is
    false, i.e. all N! orders were run) and the queries (the same for both
    methods), recomputes every per-query SD across the resampled orders and
    the statistic. Demo sets stay fixed: the inference is conditional on the
    sampled demo sets (use :class:`SignFlipDistribution` over per-set
    statistics to generalise over them).

    Parameters
    ----------
    cube_a, cube_b : numpy.ndarray
        Outputs of the two methods, shape (sets, orders, queries[, labels]),
        aligned cell by cell (same demo set, order and query).
    statistic : {"log_mean_sd_ratio", "mean_log_var_ratio"}
        See :func:`order_sd_statistic`.
    resample_orders : bool, default True
        Resample orders within sets (orders were sampled from the N!).
    n_resamples : int
        Number of draws.
    rng : numpy.random.Generator
        Source of randomness.
    mask : numpy.ndarray of bool, shape (sets, queries), optional
        Which query slots hold data (demo sets may have different queries;
        padded slots are False and never drawn).

    Returns
    -------
    numpy.ndarray, shape (n_resamples,)
        The statistic under each draw (may hold ``±inf`` where one method is
        exactly order-invariant).
    """
    a, b = _as_cube(cube_a, "cube_a"), _as_cube(cube_b, "cube_b")
    return _resample(a, b, lambda c, w: _statistic(_weighted_sd(a, c), _weighted_sd(b, c), w, statistic),
                     resample_orders=resample_orders, n_resamples=n_resamples, rng=rng, mask=mask)


def _resample(a: np.ndarray, b: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
              resample_orders: bool, n_resamples: int, rng: np.random.Generator,
              mask: np.ndarray | None) -> np.ndarray:
    """``statistic(order counts, query weights)`` over blocks of draws, resampled within demo sets."""
    if a.shape != b.shape:
        raise ValueError(f"cubes differ in shape: {a.shape} vs {b.shape}")
    n_sets, n_orders = a.shape[:2]
    m = _mask(mask, a.shape)
    out = np.empty(int(n_resamples))
    for start in range(0, len(out), _BLOCK):
        size = min(_BLOCK, len(out) - start)
        # the random numbers of a whole block, in the same calls as always; the statistic chunk by chunk
        counts = _order_counts(n_sets, n_orders, size, resample_orders, rng)
        weights = _query_weights(m, size, rng)
        for first in range(0, size, _CHUNK):
            last = min(first + _CHUNK, size)
            out[start + first:start + last] = statistic(counts[first:last], weights[first:last].astype(float))
    return out


def _alignment_sums(a: np.ndarray, b: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    n = a.shape[1]
    ma = np.einsum("bso,soq->bsq", counts, a) / n
    mb = np.einsum("bso,soq->bsq", counts, b) / n
    sab = np.einsum("bso,soq->bsq", counts, a * b) - n * ma * mb
    saa = np.einsum("bso,soq->bsq", counts, a * a) - n * ma * ma
    sbb = np.einsum("bso,soq->bsq", counts, b * b) - n * mb * mb
    # a cell whose resampled orders are all alike has no order effect: exactly 0, not rounding noise
    flat_a, flat_b = saa <= n * ZERO_TOL ** 2, sbb <= n * ZERO_TOL ** 2
    saa, sbb = np.where(flat_a, 0.0, saa), np.where(flat_b, 0.0, sbb)
    sab = np.where(flat_a | flat_b, 0.0, sab)
    num = (sab * weights).sum(axis=(1, 2))
    den = np.sqrt(np.clip((saa * weights).sum(axis=(1, 2)), 0, None) * np.clip((sbb * weights).sum(axis=(1, 2)), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, 0.0)


def alignment_statistic(cube_a: np.ndarray, cube_b: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """Pearson r of the order effects (outputs centred per (set, query) across orders), pooled."""
    a, b = _as_cube(cube_a, "cube_a")[..., 0], _as_cube(cube_b, "cube_b")[..., 0]
    counts = np.ones((1, a.shape[0], a.shape[1]))
    w = _mask(mask, a.shape)[None].astype(float)
    return float(_alignment_sums(a, b, counts, w)[0])


def alignment_draws(cube_a: np.ndarray, cube_b: np.ndarray, *, resample_orders: bool = True,
                    n_resamples: int = 10000, rng: np.random.Generator,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """Bootstrap distribution of :func:`alignment_statistic`, resampling as :func:`order_sd_draws`."""
    a, b = _as_cube(cube_a, "cube_a")[..., 0], _as_cube(cube_b, "cube_b")[..., 0]
    return _resample(a, b, lambda c, w: _alignment_sums(a, b, c, w), resample_orders=resample_orders,
                     n_resamples=n_resamples, rng=rng, mask=mask)


def per_set_statistics(cube_a: np.ndarray, cube_b: np.ndarray, statistic: Statistic = "log_mean_sd_ratio",
                       *, mask: np.ndarray | None = None) -> np.ndarray:
    """The statistic computed within each demo set separately, shape (sets,)."""
    a, b = _as_cube(cube_a, "cube_a"), _as_cube(cube_b, "cube_b")
    m = _mask(mask, a.shape)
    return np.array([order_sd_statistic(a[s:s + 1], b[s:s + 1], statistic, mask=m[s:s + 1])
                     for s in range(a.shape[0])])


def _index_from_level(level: float, n: int) -> int:
    """Largest count k of draws that may lie beyond a bound at one-sided level ``level``.

    A one-sided Monte-Carlo p-value is ``(1 + count) / (n + 1)``; it is at most
    ``level`` exactly when ``count <= level * (n + 1) - 1``.
    """
    return int(math.floor(level * (n + 1) - 1 + 1e-9))


@dataclass
class BootstrapDistribution:
    """p-values and bounds from resampling draws, inverse to each other.

    One-sided p-values are Monte-Carlo ``(1 + #beyond) / (B + 1)`` (never 0);
    the bound at one-sided level ``a`` is the order statistic that excludes
    exactly the values whose p-value is at most ``a``. Hence "p <= a" and "the
    bound at level a excludes the value" are the same statement.
    """

    draws: np.ndarray
    exact: bool = False
    _sorted: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        d = np.asarray(self.draws, dtype=float)
        d = np.where(np.isnan(d), 0.0, d)
        self._sorted = np.sort(d)

    @property
    def n(self) -> int:
        return int(len(self._sorted))

    @property
    def smallest_pvalue(self) -> float:
        """The smallest one-sided p-value these draws can give."""
        return 1.0 / (self.n + 1)

    def pvalue(self, value: float, side: Side) -> float:
        """One-sided p-value of H0: θ <= value (``side="greater"``) or θ >= value (``"less"``)."""
        if side == "greater":
            beyond = np.searchsorted(self._sorted, value, side="right")  # draws <= value
        else:
            beyond = self.n - np.searchsorted(self._sorted, value, side="left")  # draws >= value
        return float(min(1.0, (1 + beyond) / (self.n + 1)))

    def bound(self, level: float, side: Side) -> float:
        """Lower (``side="greater"``) or upper (``"less"``) confidence bound at one-sided level ``level``.

        ``-inf`` / ``+inf`` when the draws are too few to reach ``level``.
        """
        k = _index_from_level(level, self.n)
        if k < 0:
            return -math.inf if side == "greater" else math.inf
        return float(self._sorted[k] if side == "greater" else self._sorted[self.n - 1 - k])


def sign_flip_floor(n_clusters: int) -> float:
    """Smallest one-sided p-value of the exact sign-flip test over ``n_clusters`` clusters."""
    return 1.0 / 2 ** n_clusters


@dataclass
class SignFlipDistribution:
    """Exact sign-flip inference on the mean of per-cluster statistics ``values``.

    H0: θ = θ0 is tested by flipping the signs of ``values - θ0`` (symmetry of
    each cluster's statistic about θ); one-sided p-values count the sign
    patterns whose mean is at least as extreme as the observed one
    (``2**S`` patterns enumerated; ``S <= 20``). Bounds invert the same test by
    bisection, so p-values and bounds agree.
    """

    values: np.ndarray
    exact: bool = True
    _signs: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=float)
        if v.ndim != 1 or len(v) < 2:
            raise ValueError("sign-flip inference needs at least 2 clusters")
        if len(v) > 20:
            raise ValueError("sign-flip inference enumerates 2**S patterns; at most 20 clusters")
        self.values = v
        self._signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(v))))

    @property
    def n(self) -> int:
        return int(len(self._signs))

    @property
    def smallest_pvalue(self) -> float:
        return 1.0 / self.n

    def pvalue(self, value: float, side: Side) -> float:
        centred = self.values - value
        if np.isinf(centred).any():
            finite = np.isfinite(centred)
            centred = np.where(finite, centred, np.sign(centred) * 1e300)
        null = self._signs @ centred / len(centred)
        observed = centred.mean()
        tol = 1e-12 * max(1.0, abs(observed))
        if side == "greater":
            return float(np.mean(null >= observed - tol))
        return float(np.mean(null <= observed + tol))

    def bound(self, level: float, side: Side) -> float:
        if self.smallest_pvalue > level:
            return -math.inf if side == "greater" else math.inf
        v = self.values[np.isfinite(self.values)]
        if len(v) == 0:
            return float(self.values[0])
        span = float(np.ptp(v)) + 1.0
        lo, hi = float(v.min()) - span, float(v.max()) + span
        rejects: Callable[[float], bool] = lambda t: self.pvalue(t, side) <= level  # noqa: E731
        # side "greater": small t are rejected (θ > t); find the largest rejected t
        if side == "greater":
            if not rejects(lo):
                return -math.inf
            for _ in range(200):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if rejects(mid) else (lo, mid)
            return lo
        if not rejects(hi):
            return math.inf
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if rejects(mid) else (mid, hi)
        return hi
