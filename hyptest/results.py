"""The typed comparison and the one decision rule of hyptest.

Every analysis, in a study or a reanalysis, builds :class:`Comparison`
objects; :func:`decide` turns them into verdicts, family by family, with one
rule:

* each comparison gives a **difference** p-value (against its null value) and,
  when a margin was declared, an **equivalence** p-value (TOST: the larger of
  the two one-sided p-values at ``-margin`` and ``+margin``), both from the same
  resampling distribution (or exact sign-flip test);
* both are adjusted alike within the comparison's **family** (Holm by
  default): the confirmatory family (by default the order sensitivity of each
  method vs the reference) on its own, every secondary analysis within its own
  family;
* the interval printed beside a verdict is at the level that verdict used:
  the effective per-comparison level ``alpha * p / p_adjusted`` of the
  adjustment, so "significant" and "the interval excludes the null value"
  are the same statement, and "equivalent" and "the ``1 - 2a`` interval lies
  inside the margin" too;
* verdicts: ``different`` (difference significant, equivalence not),
  ``equivalent`` (equivalence significant, difference not), ``negligible``
  (both: a real difference inside the margin), ``inconclusive`` (neither),
  ``not_estimable`` (the design cannot estimate it), ``did_not_converge``
  (Bayes rows whose sampler failed the diagnostics gate).

The Monte-Carlo budget grows with the family: a family of ``m`` comparisons
gets at least ``ceil(20 m / alpha)`` resamples, so the smallest adjusted
p-value can reach ``alpha``; exact tests (sign flips over demo sets) state
their floor, and a note says how many demo sets would reach ``alpha``.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol, Sequence

import numpy as np
import pandas as pd

from ._validation import validate_probability
from .stats.multiplicity import adjust_optional

__all__ = ["CONFIRMATORY", "Comparison", "Distribution", "VERDICTS", "decide", "monte_carlo_budget"]

#: The family name of the confirmatory comparisons.
CONFIRMATORY = "confirmatory"

#: Every verdict a comparison can get, in the order the report lists them.
VERDICTS: tuple[str, ...] = ("different", "equivalent", "negligible", "inconclusive", "not_estimable",
                             "did_not_converge")

Rule = Literal["two_sided", "threshold", "given", "anytime"]


class Distribution(Protocol):
    """What :func:`decide` needs from a resampling distribution or an exact test."""

    exact: bool

    @property
    def n(self) -> int: ...

    @property
    def smallest_pvalue(self) -> float: ...

    def pvalue(self, value: float, side: Literal["greater", "less"]) -> float: ...

    def bound(self, level: float, side: Literal["greater", "less"]) -> float: ...


@dataclass
class Comparison:
    """One comparison of method B with method A (the reference) in one analysis.

    Parameters
    ----------
    model, task, n_demos, method_a, method_b, analysis
        What is compared (``n_demos`` None for pooled rows).
    family : str
        ``"confirmatory"`` or the name of a secondary family (usually the analysis).
    estimate : float
        The observed statistic on ``scale``.
    scale : str
        What ``estimate`` measures, in words (e.g. "log ratio of mean order SD, A / B").
    rule : {"two_sided", "threshold", "given"}
        ``two_sided``: difference from ``null_value``, equivalence inside
        ``±margin``. ``threshold``: "different" if below ``null_value`` (the
        pre-declared ρ₀), "equivalent" if above it. ``given``: the verdict is
        decided elsewhere (Bayes: HDI + ROPE) and passed in ``given_verdict``.
    sampler : callable, optional
        ``sampler(n_resamples, rng) -> Distribution``; called by :func:`decide`
        with the family's Monte-Carlo budget.
    null_value, margin, margin_source
        The null value, the half-width of the equivalence region on the
        estimate's scale (None: no equivalence test) and where it was declared.
    resolution : float, optional
        Differences with ``|estimate| <= resolution`` cannot be told from the
        measurement's own error (e.g. top-k truncation): never "different".
    resampling : str
        How the inference resampled, in plain words.
    """

    model: Any
    task: Any
    n_demos: int | None
    method_a: str
    method_b: str
    analysis: str
    family: str
    estimate: float
    scale: str
    rule: Rule = "two_sided"
    sampler: Callable[[int, np.random.Generator], Distribution] | None = None
    null_value: float = 0.0
    margin: float | None = None
    margin_source: str | None = None
    margin_ratio: float | None = None
    resolution: float | None = None
    resampling: str = ""
    test: str = ""
    mean_a: float | None = None
    mean_b: float | None = None
    ratio: float | None = None
    n: int = 0
    note: str | None = None
    not_estimable: str | None = None
    given_verdict: str | None = None
    given_interval: tuple[float, float, float] | None = None  # (low, high, level), rule "given"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.model, self.task, self.n_demos, self.method_a, self.method_b, self.analysis, self.family)

    @property
    def role(self) -> str:
        if self.rule == "given":
            return "bayesian"
        return "confirmatory" if self.family == CONFIRMATORY else "exploratory"

    @property
    def testable(self) -> bool:
        return self.rule != "given" and self.not_estimable is None and self.sampler is not None


def monte_carlo_budget(family_size: int, alpha: float, n_resamples: int) -> int:
    """Resamples for a family of ``family_size``: at least ``ceil(20 m / alpha)``."""
    return int(max(n_resamples, math.ceil(20 * max(family_size, 1) / alpha)))


def _seed_of(key: tuple[Any, ...], seed: int) -> np.random.Generator:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def _difference_pvalue(c: Comparison, dist: Distribution) -> float:
    if c.rule == "threshold":  # "different": the correlation lies below rho0
        return dist.pvalue(c.null_value, "less")
    return min(1.0, 2 * min(dist.pvalue(c.null_value, "greater"), dist.pvalue(c.null_value, "less")))


def _equivalence_pvalue(c: Comparison, dist: Distribution) -> float | None:
    if c.rule == "threshold":  # "equivalent": the correlation lies above rho0
        return dist.pvalue(c.null_value, "greater")
    if c.margin is None:
        return None
    return max(dist.pvalue(c.null_value - c.margin, "greater"), dist.pvalue(c.null_value + c.margin, "less"))


def _effective_level(alpha: float, p: float, p_adj: float) -> float:
    """Per-comparison level that the adjustment applied: p_adj <= alpha  <=>  p <= this."""
    if not p_adj > 0:
        return alpha
    return min(alpha, alpha * p / p_adj)


def _verdict(c: Comparison, sig: bool, eq: bool) -> str:
    if c.rule == "threshold":
        return "different" if sig else ("equivalent" if eq else "inconclusive")
    if sig and not eq:
        return "different"
    if sig and eq:
        return "negligible"
    return "equivalent" if eq else "inconclusive"


def _floor_note(dist: Distribution, level: float) -> str | None:
    """A warning when an exact test cannot reach the level its family needs."""
    if not dist.exact or dist.smallest_pvalue <= level:
        return None
    n_units = int(round(math.log2(dist.n)))
    needed = int(math.ceil(math.log2(1 / level)))
    return (f"with {n_units} independent units (demo sets, runs or examples) the exact sign-flip test cannot "
            f"give a one-sided p-value below {dist.smallest_pvalue:.3g} (two-sided "
            f"{min(1, 2 * dist.smallest_pvalue):.3g}), so it cannot reach the level {level:.3g} this family needs; "
            f"{needed} units would")


def decide(
    comparisons: Sequence[Comparison],
    *,
    alpha: float = 0.05,
    adjust: str = "holm",
    n_resamples: int = 10000,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Verdicts for every comparison, adjusted family by family.

    Parameters
    ----------
    comparisons : sequence of Comparison
    alpha : float
        Family-wise level (or FDR with ``adjust="bh"``) of each family.
    adjust : {"holm", "bonferroni", "bh"}
        Adjustment within each family, applied alike to difference and
        equivalence p-values.
    n_resamples : int
        Minimum Monte-Carlo resamples; each family gets
        :func:`monte_carlo_budget` of its size.
    seed : int
        Root seed; each comparison's resampling stream is derived from it and
        the comparison's key, so results do not depend on the order of rows.

    Returns
    -------
    table : pandas.DataFrame
        One row per comparison (see ``docs`` / README for the columns).
    draws : dict
        Row index -> resampling draws (bootstrap) of testable rows, for plots.
    """
    validate_probability(alpha, "alpha")
    comps = list(comparisons)
    families: dict[str, list[int]] = {}
    for i, c in enumerate(comps):
        families.setdefault(c.family, []).append(i)
    rows: list[dict[str, Any]] = [{} for _ in comps]
    draws: dict[int, np.ndarray] = {}
    budgets = {i: monte_carlo_budget(sum(comps[j].testable for j in members), alpha, n_resamples)
               for members in families.values() for i in members if comps[i].testable}
    sampled = _distributions(comps, budgets, seed)
    for family, members in families.items():
        testable = [i for i in members if comps[i].testable]
        m = len(testable)
        dists: dict[int, Distribution] = {}
        p_diff: list[float | None] = []
        p_eq: list[float | None] = []
        for i in testable:
            c = comps[i]
            dist = sampled[i]
            dists[i] = dist
            p_diff.append(_difference_pvalue(c, dist))
            p_eq.append(_equivalence_pvalue(c, dist))
            if hasattr(dist, "draws") and not dist.exact:
                draws[i] = np.asarray(dist.draws)
        adj_diff = adjust_optional(p_diff, method=adjust)
        adj_eq = adjust_optional(p_eq, method=adjust)
        for j, i in enumerate(testable):
            rows[i] = _tested_row(comps[i], dists[i], alpha, m, p_diff[j], adj_diff[j], p_eq[j], adj_eq[j])
        for i in members:
            if not rows[i]:
                rows[i] = _untested_row(comps[i], m)
    table = pd.DataFrame([_base(c) | rows[i] for i, c in enumerate(comps)])
    if not table.empty:
        table["adjust_method"] = adjust
    return table, draws


#: Comparisons resampled at the same time, on threads (numpy's einsum and array operations, most of the work,
#: release the GIL). Each comparison draws from its own stream: the numbers do not depend on the schedule.
DECIDE_WORKERS = 2


def _distributions(comps: list[Comparison], budgets: dict[int, int], seed: int) -> dict[int, Distribution]:
    """Each testable comparison's distribution (``budgets``: index -> resamples), on up to ``DECIDE_WORKERS`` threads.

    A comparison's stream is derived from ``seed`` and its key alone, and its
    sampler reads only its own data, so each distribution is the one a single
    thread computes, bit for bit; an error is raised as the first failing
    comparison (in order) raises it.
    """
    def sample(i: int) -> Distribution:
        c = comps[i]
        assert c.sampler is not None
        # rows that differ only in a stratum (a layer, a group) still get their own streams
        return c.sampler(budgets[i], _seed_of((c.key, repr(sorted(c.extra.items(), key=str))), seed))

    order = list(budgets)
    workers = min(DECIDE_WORKERS, os.cpu_count() or 1, len(order))
    if workers <= 1:
        return {i: sample(i) for i in order}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hyptest-decide") as pool:
        return dict(zip(order, pool.map(sample, order)))


def _tested_row(c: Comparison, dist: Distribution, alpha: float, m: int, pd_: float | None, pd_adj: float | None,
                pe: float | None, pe_adj: float | None) -> dict[str, Any]:
    """The decision fields of a tested comparison: intervals at the levels its verdict used, p-values, verdict.

    ``pd_`` / ``pe`` are its difference / equivalence p-values and ``pd_adj`` /
    ``pe_adj`` their adjusted values within a family of ``m`` tested rows.
    """
    assert pd_ is not None and pd_adj is not None
    a_d = _effective_level(alpha, pd_, pd_adj)
    sig = pd_adj <= alpha
    eq = pe is not None and pe_adj is not None and pe_adj <= alpha
    a_e = _effective_level(alpha, pe, pe_adj) if pe is not None and pe_adj is not None else alpha / max(m, 1)
    if c.rule == "threshold":
        ci = (dist.bound(a_e, "greater"), dist.bound(a_d, "less"))
        ci_level = None
        eq_interval = (ci[0], math.inf)
        eq_level = 1 - a_e
        ci_method = (f"one-sided bounds: lower at {1 - a_e:.4g} (equivalence: above ρ₀), "
                     f"upper at {1 - a_d:.4g} (difference: below ρ₀)")
    else:
        ci = (dist.bound(a_d / 2, "greater"), dist.bound(a_d / 2, "less"))
        ci_level = 1 - a_d
        eq_interval = (dist.bound(a_e, "greater"), dist.bound(a_e, "less"))
        eq_level = 1 - 2 * a_e
        ci_method = f"{'exact sign-flip inversion' if dist.exact else 'percentile bootstrap'} at the level the verdict used"
    verdict = _verdict(c, sig, eq)
    notes = [c.note] if c.note else []
    if c.resolution is not None and abs(c.estimate) <= c.resolution and verdict in ("different", "negligible"):
        verdict = "inconclusive"
        notes.append(f"|estimate| {abs(c.estimate):.3g} is within the measurement's resolution "
                     f"{c.resolution:.3g}: cannot be told apart")
    floor = _floor_note(dist, alpha / max(m, 1) / (2 if c.rule == "two_sided" else 1))
    if floor:
        notes.append(floor)
    if c.rule == "two_sided":
        lo, hi = eq_interval
        min_margin = max(c.null_value - lo, hi - c.null_value)
    else:
        min_margin = None
    return {
        "ci_low": ci[0], "ci_high": ci[1], "ci_level": ci_level, "ci_method": ci_method,
        "eq_low": eq_interval[0], "eq_high": eq_interval[1], "eq_level": eq_level,
        "p_value": pd_, "p_adjusted": pd_adj, "p_equivalence": pe, "p_equivalence_adjusted": pe_adj,
        "level_difference": a_d, "level_equivalence": a_e,
        "family_size": m, "n_resamples": None if dist.exact else dist.n,
        "min_equivalence_margin": min_margin,
        # on the ratio the margin was declared in (for log variance ratios: the SD ratio)
        "min_equivalence_ratio": (math.exp(min_margin * math.log(c.margin_ratio) / c.margin)
                                  if min_margin is not None and c.margin_ratio and c.margin
                                  and math.isfinite(min_margin) else None),
        "verdict": verdict, "note": "; ".join(notes) or None,
    }


def _untested_row(c: Comparison, m: int) -> dict[str, Any]:
    """The fields of a comparison decided elsewhere (``given``, ``anytime``) or not estimable (no test, no p-value)."""
    low, high, level = c.given_interval or (math.nan, math.nan, None)
    if c.rule == "anytime":  # decided by the anytime-valid tests of an adaptive run (hyptest/workflows/adaptive.py)
        return _anytime_row(c, low, high, level)
    return {
        "ci_low": low, "ci_high": high, "ci_level": level, "ci_method": c.extra.get("ci_method"),
        "eq_low": None, "eq_high": None, "eq_level": None, "p_value": None, "p_adjusted": None,
        "p_equivalence": None, "p_equivalence_adjusted": None, "level_difference": None,
        "level_equivalence": None, "family_size": m, "n_resamples": None,
        "min_equivalence_margin": None, "min_equivalence_ratio": None,
        "verdict": c.given_verdict if c.rule == "given" else "not_estimable",
        "note": c.note if c.rule == "given" else "; ".join(x for x in (c.note, c.not_estimable) if x),
    }


def _anytime_row(c: Comparison, low: float, high: float, level: float | None) -> dict[str, Any]:
    """The row of a comparison decided by its e-processes: p-values are ``min(1, 1/e)``, adjusted in its family."""
    x = c.extra
    return {
        "ci_low": low, "ci_high": high, "ci_level": level, "ci_method": x.get("ci_method"),
        "eq_low": None, "eq_high": None, "eq_level": None,
        "p_value": x.get("p_anytime"), "p_adjusted": x.get("p_anytime_adjusted"),
        "p_equivalence": x.get("p_anytime_equivalence"),
        "p_equivalence_adjusted": x.get("p_anytime_equivalence_adjusted"),
        "level_difference": None, "level_equivalence": None, "family_size": x.get("family_size"),
        "n_resamples": None, "min_equivalence_margin": None, "min_equivalence_ratio": None,
        "verdict": c.given_verdict, "note": c.note,
    }


def _base(c: Comparison) -> dict[str, Any]:
    return {
        "model": c.model, "task": c.task, "n_demos": c.n_demos, "method_a": c.method_a, "method_b": c.method_b,
        "analysis": c.analysis, "family": c.family, "role": c.role, "rule": c.rule,
        "estimate": c.estimate, "statistic": c.estimate, "scale": c.scale, "null_value": c.null_value,
        "mean_a": c.mean_a, "mean_b": c.mean_b, "ratio": c.ratio, "n": c.n,
        "margin": c.margin, "margin_ratio": c.margin_ratio, "margin_source": c.margin_source,
        "resolution": c.resolution, "resampling": c.resampling, "test": c.test, **c.extra,
    }
