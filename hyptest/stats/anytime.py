"""Anytime-valid tests and confidence sequences for a bounded mean, by betting.

The adaptive collection of a study (``collection: adaptive``) looks at its
data after every round and stops a comparison once it is decided. Classical
p-values are invalid under such optional stopping; the e-processes here are
not: for every stopping time ``tau``, ``E[K_tau] <= 1`` under the null, so
``P(K_tau >= 1/alpha) <= alpha`` (and, by Ville's inequality, the chance that
the process *ever* reaches ``1/alpha`` is at most ``alpha``).

Observations and parameter
--------------------------
``x_1, x_2, ...`` are independent draws of one bounded random variable
``X in [lo, hi]`` with mean ``mu`` (in the adaptive design: one per demo set,
the set's log ratio of mean order SDs, clipped to ``[-B, B]``; see
:func:`clipped_statistics`). Every test and interval here is about ``mu``,
the mean of the *clipped per-set statistic*, not about the population log
ratio of mean order SDs that the fixed-size analysis estimates; the docs
(docs/calibration.md, "Adaptive collection") say how the two relate.

Capital processes (Waudby-Smith & Ramdas 2024, "Estimating means of bounded
random variables by betting", JRSS-B, Sections 3-5): for a candidate mean
``m``,

* ``K+_t(m) = prod_{i<=t} (1 + l+_i (x_i - m))`` bets that ``mu > m``;
* ``K-_t(m) = prod_{i<=t} (1 - l-_i (x_i - m))`` bets that ``mu < m``;

with *predictable* bets ``l+-_i >= 0`` (functions of ``x_1..x_{i-1}`` only),
truncated to ``c / (m - lo)`` and ``c / (hi - m)`` (``c < 1``) so every factor
stays positive whatever ``x_i`` in ``[lo, hi]`` is. Under ``mu <= m``,
``K+(m)`` is a nonnegative supermartingale (a test supermartingale), and
under ``mu >= m`` so is ``K-(m)``. The bets are the aGRAPA plug-in
(approximate growth-rate adaptive to the particular alternative, WSR 2024
Section 5.1): ``l = (mu_hat - m) / (var_hat + (mu_hat - m)**2)`` from the past
observations, the Kelly bet of a second-order expansion; the first bet is a
fixed fraction ``first_bet`` of the cap (no past yet).

Tests
-----
* one-sided: ``K+(m)`` against H0: ``mu <= m``; ``K-(m)`` against ``mu >= m``;
* difference, H0: ``mu = m0`` (two-sided): the mixture ``(K+(m0) + K-(m0)) / 2``
  (WSR's hedged capital with ``theta = 1/2``), an e-process under H0;
* equivalence, H0: ``mu <= m0 - delta`` or ``mu >= m0 + delta`` (TOST's
  union null): ``min(K+(m0 - delta), K-(m0 + delta))``, an e-process under
  either part of the null (the minimum is at most the one that is valid).

Confidence sequence: ``{m : (K+_t(m) + K-_t(m)) / 2 < 1/alpha}``, evaluated on
a grid, its hull, intersected over time (the running intersection of a
confidence sequence is one too). The one-sided bounds of the equivalence test
(TOST's ``1 - 2 alpha`` interval) come from ``K+`` and ``K-`` alone.

Families: e-values stay e-values under any dependence, so ``p = min(1, 1/e)``
is a valid p-value (Markov) and Holm, Bonferroni (``e >= m / alpha``) and
Benjamini-Hochberg (which, on ``1/e``, is the e-BH procedure of Wang & Ramdas
2022, valid under arbitrary dependence) apply to them: :func:`adjust_evalues`.

Also: :func:`normal_mixture_radius`, the two-sided normal-mixture boundary of
Howard et al. (2021, "Time-uniform, nonparametric, nonasymptotic confidence
sequences", eq. (14)) for sub-Gaussian increments, a closed-form reference
confidence sequence (bounded ``X`` is sub-Gaussian with ``sigma = (hi - lo)/2``).

Pure numpy; no randomness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._validation import validate_probability
from .multiplicity import adjust_pvalues

__all__ = [
    "AnytimeTest",
    "adjust_evalues",
    "anytime_test",
    "capital",
    "clipped_statistics",
    "confidence_sequence",
    "difference_evalues",
    "ebh",
    "equivalence_evalues",
    "normal_mixture_radius",
    "predictable_bets",
]

Side = Literal["greater", "less"]

#: default truncation of the bets: at most this fraction of what keeps the capital positive
DEFAULT_C = 0.75
#: default first bet, as a fraction of the cap (there is no past to plug in yet)
DEFAULT_FIRST_BET = 0.5


def _check(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"observations must be one-dimensional, got shape {arr.shape}")
    if not lo < hi:
        raise ValueError(f"need lo < hi, got [{lo}, {hi}]")
    if arr.size and (not np.isfinite(arr).all() or arr.min() < lo - 1e-12 or arr.max() > hi + 1e-12):
        raise ValueError(f"observations must be finite and lie in [{lo:g}, {hi:g}]")
    return np.clip(arr, lo, hi)


def predictable_bets(x: np.ndarray, m: float, *, lo: float, hi: float, side: Side, c: float = DEFAULT_C,
                     first_bet: float = DEFAULT_FIRST_BET) -> np.ndarray:
    """The aGRAPA bets ``l_1..l_n`` of :func:`capital`; ``l_t`` uses ``x_1..x_{t-1}`` only.

    ``side="greater"`` bets on ``mu > m`` (capped at ``c / (m - lo)``),
    ``"less"`` on ``mu < m`` (capped at ``c / (hi - m)``). The variance
    estimate starts from the prior ``((hi - lo) / 4)**2`` as one pseudo-observation.
    """
    x = _check(x, lo, hi)
    if not lo < m < hi:
        raise ValueError(f"the candidate mean must lie strictly inside ({lo:g}, {hi:g}), got {m!r}")
    validate_probability(c, "c")
    if not 0 <= first_bet <= 1:
        raise ValueError(f"`first_bet` must lie in [0, 1], got {first_bet!r}")
    n = len(x)
    cap = c / (m - lo) if side == "greater" else c / (hi - m)
    out = np.empty(n)
    if n == 0:
        return out
    out[0] = first_bet * cap
    if n == 1:
        return out
    t = np.arange(1, n)                                  # past observations before bets 2..n
    csum = np.cumsum(x)[:-1]
    mean = csum / t
    # sum of squared deviations from the running mean (Welford-free: exact enough for bounded data)
    csq = np.cumsum(x * x)[:-1]
    ss = np.clip(csq - csum * mean, 0.0, None)
    prior = ((hi - lo) / 4.0) ** 2
    var = (prior + ss) / (t + 1)
    d = mean - m if side == "greater" else m - mean
    out[1:] = np.clip(d / (var + d * d), 0.0, cap)
    return out


def capital(x: np.ndarray, m: float, *, lo: float, hi: float, side: Side, c: float = DEFAULT_C,
            first_bet: float = DEFAULT_FIRST_BET) -> np.ndarray:
    """The capital ``K_1..K_n`` of betting against ``mu <= m`` (``"greater"``) or ``mu >= m`` (``"less"``).

    A test supermartingale under that null: ``E[K_tau] <= 1`` at any stopping time.
    """
    x = _check(x, lo, hi)
    bets = predictable_bets(x, m, lo=lo, hi=hi, side=side, c=c, first_bet=first_bet)
    sign = 1.0 if side == "greater" else -1.0
    factors = 1.0 + sign * bets * (x - m)
    return np.exp(np.cumsum(np.log(factors)))


def difference_evalues(x: np.ndarray, m0: float, *, lo: float, hi: float, c: float = DEFAULT_C,
                       first_bet: float = DEFAULT_FIRST_BET) -> np.ndarray:
    """E-process against H0: ``mu = m0``: ``(K+(m0) + K-(m0)) / 2``, one value per observation."""
    kw = {"lo": lo, "hi": hi, "c": c, "first_bet": first_bet}
    return 0.5 * (capital(x, m0, side="greater", **kw) + capital(x, m0, side="less", **kw))


def equivalence_evalues(x: np.ndarray, m0: float, delta: float, *, lo: float, hi: float, c: float = DEFAULT_C,
                        first_bet: float = DEFAULT_FIRST_BET) -> np.ndarray:
    """E-process against H0: ``|mu - m0| >= delta``: ``min(K+(m0 - delta), K-(m0 + delta))``."""
    if not delta > 0:
        raise ValueError(f"`delta` must be positive, got {delta!r}")
    kw = {"lo": lo, "hi": hi, "c": c, "first_bet": first_bet}
    return np.minimum(capital(x, m0 - delta, side="greater", **kw), capital(x, m0 + delta, side="less", **kw))


def _grid(lo: float, hi: float, points: int, must: tuple[float, ...]) -> np.ndarray:
    span = hi - lo
    inner = np.linspace(lo + span * 1e-6, hi - span * 1e-6, points)
    return np.unique(np.concatenate([inner, [v for v in must if lo < v < hi]]))


def confidence_sequence(x: np.ndarray, alpha: float, *, lo: float, hi: float, c: float = DEFAULT_C,
                        first_bet: float = DEFAULT_FIRST_BET, points: int = 801,
                        include: tuple[float, ...] = (), side: Literal["two_sided", "lower", "upper"] = "two_sided"
                        ) -> tuple[np.ndarray, np.ndarray]:
    """A ``1 - alpha`` confidence sequence for ``mu``: (lower_t, upper_t), t = 1..n.

    ``two_sided``: the values ``m`` of a grid (``points`` values, plus
    ``include``) whose mixture capital ``(K+(m) + K-(m)) / 2`` stays below
    ``1/alpha``, as their hull, intersected over time. ``lower`` / ``upper``:
    the one-sided bound from ``K+`` (resp. ``K-``) alone (the other end is
    ``lo`` / ``hi``). A value never excluded on the grid keeps the interval
    at the grid's ends (``lo`` / ``hi``).
    """
    validate_probability(alpha, "alpha")
    x = _check(x, lo, hi)
    n = len(x)
    grid = _grid(lo, hi, points, include)
    kw = {"lo": lo, "hi": hi, "c": c, "first_bet": first_bet}
    if side == "two_sided":
        k = np.stack([difference_evalues(x, m, **kw) for m in grid], axis=1) if n else np.empty((0, len(grid)))
    elif side == "lower":
        k = np.stack([capital(x, m, side="greater", **kw) for m in grid], axis=1) if n else np.empty((0, len(grid)))
    else:
        k = np.stack([capital(x, m, side="less", **kw) for m in grid], axis=1) if n else np.empty((0, len(grid)))
    kept = k < 1.0 / alpha                                    # (n, grid)
    kept = np.logical_and.accumulate(kept, axis=0)            # running intersection
    lower = np.full(n, float(lo))
    upper = np.full(n, float(hi))
    for t in range(n):
        idx = np.flatnonzero(kept[t])
        if idx.size == 0:  # every grid value excluded: the data left the model; keep the last estimate
            lower[t] = upper[t] = float(np.mean(x[: t + 1]))
            continue
        if side in ("two_sided", "lower"):
            lower[t] = lo if idx[0] == 0 else grid[idx[0]]
        if side in ("two_sided", "upper"):
            upper[t] = hi if idx[-1] == len(grid) - 1 else grid[idx[-1]]
    return lower, upper


def clipped_statistics(values: np.ndarray, bound: float) -> np.ndarray:
    """Per-set statistics clipped to ``[-bound, bound]`` (``+inf`` -> ``bound``, NaN is an error)."""
    v = np.asarray(values, dtype=float)
    if np.isnan(v).any():
        raise ValueError("per-set statistics hold NaN")
    if not bound > 0 or not math.isfinite(bound):
        raise ValueError(f"`bound` must be positive and finite, got {bound!r}")
    return np.clip(v, -bound, bound)


@dataclass
class AnytimeTest:
    """Both anytime-valid tests of one comparison, at every look.

    Arrays have one entry per observation (look after observation ``t``).
    """

    x: np.ndarray                 # the clipped per-set statistics, in collection order
    bound: float
    null_value: float
    margin: float | None
    e_difference: np.ndarray      # (K+(m0) + K-(m0)) / 2
    e_greater: np.ndarray         # K+(m0): evidence that mu > m0
    e_less: np.ndarray            # K-(m0): evidence that mu < m0
    e_equivalence: np.ndarray | None  # min(K+(m0 - delta), K-(m0 + delta))

    @property
    def n(self) -> int:
        return int(len(self.x))

    def estimate(self, t: int | None = None) -> float:
        """Mean of the first ``t`` observations (all by default)."""
        t = self.n if t is None else t
        return float(np.mean(self.x[:t])) if t else math.nan


def anytime_test(x: np.ndarray, *, bound: float, null_value: float = 0.0, margin: float | None = None,
                 c: float = DEFAULT_C, first_bet: float = DEFAULT_FIRST_BET) -> AnytimeTest:
    """E-processes of the difference and equivalence tests of a mean in ``[-bound, bound]``."""
    x = _check(x, -bound, bound)
    kw = {"lo": -bound, "hi": bound, "c": c, "first_bet": first_bet}
    if margin is not None and not (-bound < null_value - margin and null_value + margin < bound):
        raise ValueError(f"the equivalence margin ±{margin:g} must lie inside the bound ±{bound:g}")
    plus = capital(x, null_value, side="greater", **kw)
    minus = capital(x, null_value, side="less", **kw)
    eq = equivalence_evalues(x, null_value, margin, **kw) if margin is not None else None
    return AnytimeTest(x, bound, null_value, margin, 0.5 * (plus + minus), plus, minus, eq)


def adjust_evalues(evalues: np.ndarray, *, method: str = "holm") -> np.ndarray:
    """Adjusted p-values of a family of e-values: ``adjust_pvalues(min(1, 1/e))``.

    ``1/e`` is a valid p-value for any e-value (Markov's inequality), and
    Holm, Bonferroni and (on e-values, as e-BH) Benjamini-Hochberg are valid
    under any dependence between them. NaN entries are left out.
    """
    e = np.asarray(evalues, dtype=float)
    if method not in ("holm", "bonferroni", "bh"):
        raise ValueError(f"`method` must be 'holm', 'bonferroni' or 'bh', got {method!r}")
    with np.errstate(divide="ignore"):
        p = np.where(np.isnan(e), np.nan, np.minimum(1.0, 1.0 / np.maximum(e, 0.0)))
    return adjust_pvalues(p, method=method)  # NaN entries pass through, outside the family


def ebh(evalues: np.ndarray, alpha: float) -> np.ndarray:
    """The e-BH procedure (Wang & Ramdas 2022): reject the ``k*`` largest e-values.

    ``k* = max{k : e_(k) >= m / (alpha k)}`` with ``e_(1) >= e_(2) >= ...``;
    returns a boolean array of rejections. (Equal to Benjamini-Hochberg on
    ``1/e``; written out here as the reference for :func:`adjust_evalues`.)
    """
    e = np.asarray(evalues, dtype=float)
    m = len(e)
    order = np.argsort(-e, kind="stable")
    ks = np.arange(1, m + 1)
    ok = e[order] >= m / (alpha * ks)
    out = np.zeros(m, dtype=bool)
    if ok.any():
        k_star = int(ks[ok].max())
        out[order[:k_star]] = True
    return out


def normal_mixture_radius(t: np.ndarray, *, sigma: float, alpha: float, rho: float) -> np.ndarray:
    """Howard et al. (2021) two-sided normal-mixture boundary for the *mean*: radius at times ``t``.

    For i.i.d. ``sigma``-sub-Gaussian observations, ``|S_t - t mu| <
    sqrt((t sigma^2 + rho) log((t sigma^2 + rho) / (rho alpha^2)))`` for all
    ``t`` with probability at least ``1 - alpha``; the radius of the
    confidence sequence for ``mu`` is that divided by ``t``.
    """
    t = np.asarray(t, dtype=float)
    v = t * sigma * sigma
    return np.sqrt((v + rho) * np.log((v + rho) / (rho * alpha * alpha))) / t
