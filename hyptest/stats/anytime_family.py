"""Continuous monitoring of a family of anytime-valid comparisons, with stopping.

The adaptive collection adds demo sets to every undecided comparison in
rounds and looks after each round. :func:`monitor_family` replays those
looks on the per-set statistics collected so far and is the one rule both
the collection (which comparisons still need data) and the analysis (the
verdicts) use, so a resumed run, which replays the same stored data, makes
the same decisions.

At each look ``r`` every running comparison has ``r * check_every``
observations (fewer when its budget ``max_n`` is reached). Its two e-values
(difference and equivalence, :func:`hyptest.stats.anytime.anytime_test`) are
adjusted within the family, separately for the difference and the
equivalence tests, as :func:`hyptest.results.decide` does. A comparison is
*decided* when either adjusted p-value is at most ``alpha``; it then stops,
and its e-values are frozen at that look. A comparison whose budget is spent
stops undecided, frozen too.

The adjustments (``adjust``, the study's ``analysis.adjust``):

``holm`` (family-wise error)
    For e-values Holm's rule is dominated by **closed testing with the
    arithmetic mean** (Vovk & Wang 2021, "E-values: calibration, combination
    and applications", Ann. Statist. 49(3), sec. 5): an intersection of the
    nulls in ``S`` is rejected when the mean of their e-values is at least
    ``1 / alpha``, and comparison ``i`` when every ``S`` that holds it is
    (:func:`closed_mean_pvalues`). The mean of e-processes that are null
    under the intersection is itself a nonnegative supermartingale with
    respect to the family's filtration (the demo sets are independent, so
    each set's statistics have their null mean given every earlier set, and
    the stopping rule uses only past sets), so by Ville's inequality it
    crosses ``1 / alpha`` at *any* look with probability at most ``alpha``:
    the family-wise error is at most ``alpha`` under continuous monitoring,
    and a rejection at any look stands. Holm's Bonferroni-based
    intersection test (``max e >= |S| / alpha``) implies the mean test, so
    this rejects everything Holm on ``1/e`` would, and more: when every
    comparison is far from its null it needs ``e >= 1 / alpha`` instead of
    ``m / alpha``.
``bonferroni``
    ``min(1, m / e)``; a rejection at any look stands (Ville per comparison).
``bh``
    Benjamini-Hochberg on ``min(1, 1/e)`` (= e-BH, false discovery rate under
    any dependence), applied to the frozen vector: each comparison's
    e-process stopped at its own stopping time is an e-value, and BH
    rejections only grow as p-values fall, so a decision once taken is
    never undone by the final vector.

For ``holm`` and ``bonferroni`` the reported adjusted p-value of a comparison
is the smallest over the looks so far (an anytime-valid adjusted p-value: the
argument above holds at every level), and its verdict follows from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .._validation import validate_probability
from .anytime import DEFAULT_C, DEFAULT_FIRST_BET, AnytimeTest, anytime_test
from .multiplicity import adjust_optional

__all__ = ["ComparisonState", "FamilyState", "closed_mean_pvalues", "monitor_family", "verdict_of"]


@dataclass
class ComparisonState:
    """Where one comparison stands after the last complete look."""

    test: AnytimeTest            # e-processes over every observation available
    n_used: int                  # observations the decision used (frozen here once stopped)
    status: str                  # "running", "decided" or "budget" (stopped undecided)
    stop_look: int | None        # the look at which it stopped (1-based), None while running
    e_difference: float
    e_equivalence: float | None
    p_difference: float
    p_equivalence: float | None
    p_difference_adjusted: float = math.nan
    p_equivalence_adjusted: float | None = None
    verdict: str = "inconclusive"
    #: per look (1-based): n used, the adjusted p-values at that look
    looks: list[dict[str, float | int | None]] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        return self.status != "running"


@dataclass
class FamilyState:
    """Every comparison of a family after the last complete look."""

    comparisons: list[ComparisonState]
    n_looks: int
    alpha: float
    adjust: str
    check_every: int

    @property
    def running(self) -> list[int]:
        """Indices of the comparisons that need more observations."""
        return [i for i, c in enumerate(self.comparisons) if not c.stopped]


def verdict_of(significant: bool, equivalent: bool) -> str:
    """The four verdicts of :func:`hyptest.results.decide` for a two-sided comparison."""
    if significant and equivalent:
        return "negligible"
    if significant:
        return "different"
    return "equivalent" if equivalent else "inconclusive"


def _p(e: float | None) -> float | None:
    if e is None:
        return None
    return 1.0 if e <= 1 else 1.0 / e


def closed_mean_pvalues(evalues: Sequence[float]) -> np.ndarray:
    """Adjusted p-values of closed testing with the arithmetic mean of e-values (family-wise error).

    The intersection of the nulls in ``S`` is tested by ``mean_{j in S} e_j``
    (an e-value under any dependence); comparison ``i`` is rejected at level
    ``a`` when every ``S`` holding ``i`` has mean at least ``1/a``, so its
    adjusted p-value is ``min(1, 1 / min_{S containing i} mean_S e)``. The
    smallest mean over the sets holding ``i`` with ``k`` others takes the
    ``k`` smallest other e-values, so it is found in ``O(m log m)``.

    Parameters
    ----------
    evalues : sequence of float
        Nonnegative e-values (``inf`` allowed).

    Returns
    -------
    numpy.ndarray
        Adjusted p-values in ``(0, 1]`` (0 only for an infinite e-value).

    Examples
    --------
    >>> closed_mean_pvalues([30.0, 30.0, 30.0]).round(4).tolist()
    [0.0333, 0.0333, 0.0333]
    >>> closed_mean_pvalues([30.0, 1.0]).round(4).tolist()
    [0.0645, 1.0]
    """
    e = np.asarray(evalues, dtype=np.float64)
    if e.ndim != 1 or np.isnan(e).any() or (e < 0).any():
        raise ValueError("`evalues` must be a 1-D sequence of nonnegative numbers")
    out = np.ones(e.size)
    order = np.argsort(e, kind="stable")
    for i in range(e.size):
        others = e[order[order != i]]                       # ascending
        sums = e[i] + np.concatenate([[0.0], np.cumsum(others)])
        means = sums / np.arange(1, e.size + 1)
        low = float(means.min())
        out[i] = 1.0 if low <= 1 else 1.0 / low
    return out


def _adjusted(evalues: list[float | None], method: str) -> list[float | None]:
    """Adjusted p-values of the e-values (None: no such test); see the module docstring."""
    if method != "holm":
        return adjust_optional([_p(e) for e in evalues], method=method)
    present = [i for i, e in enumerate(evalues) if e is not None]
    adj = closed_mean_pvalues([float(evalues[i]) for i in present])  # type: ignore[arg-type]
    out: list[float | None] = [None] * len(evalues)
    for i, a in zip(present, adj):
        out[i] = float(a)
    return out


def _running_min(old: float | None, new: float | None) -> float | None:
    if new is None:
        return None
    return new if old is None or not math.isfinite(old) else min(old, new)


def monitor_family(
    observations: Sequence[np.ndarray],
    *,
    bound: float | Sequence[float],
    margins: Sequence[float | None],
    max_n: Sequence[int],
    alpha: float = 0.05,
    adjust: str = "holm",
    check_every: int = 1,
    null_value: float = 0.0,
    c: float = DEFAULT_C,
    first_bet: float = DEFAULT_FIRST_BET,
) -> FamilyState:
    """Replay the looks of an adaptive family on the observations collected so far.

    Parameters
    ----------
    observations : sequence of numpy.ndarray
        Per comparison, its clipped per-set statistics in collection order
        (a comparison that stopped has no more; one still running may have
        fewer than the next look needs, and then the replay ends there).
    bound : float or sequence of float
        The statistics lie in ``[-bound, bound]`` (one bound, or one per comparison).
    margins : sequence of float or None
        Equivalence margin of each comparison on the statistic's scale (None: no equivalence test).
    max_n : sequence of int
        Budget of observations of each comparison.
    alpha, adjust : float, str
        Family level and adjustment (``holm``: closed testing with the mean
        of e-values; ``bonferroni``; ``bh``: e-BH; see the module docstring).
    check_every : int
        Observations added to each running comparison between looks.
    null_value : float
        The difference test's null value.
    c, first_bet : float
        Betting truncation and first bet of :func:`hyptest.stats.anytime.capital`.

    Returns
    -------
    FamilyState
    """
    validate_probability(alpha, "alpha")
    if check_every < 1:
        raise ValueError(f"`check_every` must be at least 1, got {check_every!r}")
    if not len(observations) == len(margins) == len(max_n):
        raise ValueError("observations, margins and max_n need one entry per comparison")
    bounds = [float(bound)] * len(observations) if np.ndim(bound) == 0 else [float(b) for b in bound]  # type: ignore[union-attr]
    if len(bounds) != len(observations):
        raise ValueError("give one bound, or one per comparison")
    tests = [anytime_test(np.asarray(x, dtype=float), bound=b, null_value=null_value, margin=mg, c=c,
                          first_bet=first_bet) for x, mg, b in zip(observations, margins, bounds)]
    m = len(tests)
    ever = adjust in ("holm", "bonferroni")
    states = [ComparisonState(t, 0, "running", None, 1.0, 1.0 if mg is not None else None, 1.0,
                              1.0 if mg is not None else None) for t, mg in zip(tests, margins)]
    look = 0
    while True:
        running = [i for i in range(m) if not states[i].stopped]
        if not running:
            break
        want = {i: min((look + 1) * check_every, int(max_n[i])) for i in running}
        if any(tests[i].n < want[i] for i in running):
            break  # this look's data are not all collected yet
        look += 1
        for i in running:
            n = want[i]
            s = states[i]
            s.n_used = n
            s.e_difference = float(tests[i].e_difference[n - 1]) if n else 1.0
            s.e_equivalence = (float(tests[i].e_equivalence[n - 1]) if n else 1.0) \
                if tests[i].e_equivalence is not None else None
            s.p_difference, s.p_equivalence = _p(s.e_difference), _p(s.e_equivalence)  # type: ignore[assignment]
        adj_d = _adjusted([s.e_difference for s in states], adjust)
        adj_e = _adjusted([s.e_equivalence for s in states], adjust)
        for i in range(m):
            s = states[i]
            if ever:  # a rejection at any look stands (Ville): keep the smallest adjusted p-value so far
                adj_d[i] = _running_min(s.p_difference_adjusted, adj_d[i])  # NaN / None before the first look
                adj_e[i] = _running_min(s.p_equivalence_adjusted, adj_e[i])
            s.p_difference_adjusted = float(adj_d[i])  # type: ignore[arg-type]
            s.p_equivalence_adjusted = adj_e[i]
            if s.stopped:
                continue
            s.looks.append({"look": look, "n": s.n_used, "p_difference_adjusted": adj_d[i],
                            "p_equivalence_adjusted": adj_e[i]})
            decided = adj_d[i] <= alpha or (adj_e[i] is not None and adj_e[i] <= alpha)  # type: ignore[operator]
            if decided:
                s.status, s.stop_look = "decided", look
            elif s.n_used >= int(max_n[i]):
                s.status, s.stop_look = "budget", look
    for s in states:
        sig = s.p_difference_adjusted <= alpha
        eq = s.p_equivalence_adjusted is not None and s.p_equivalence_adjusted <= alpha
        s.verdict = verdict_of(bool(sig), bool(eq))
    return FamilyState(states, look, alpha, adjust, check_every)
