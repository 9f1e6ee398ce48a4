"""The confirmatory family of an adaptive run, read from its records (``collection: adaptive``).

The design and the rounds live in :mod:`hyptest.workflows.adaptive`; this
module holds what the analysis needs to decide from the stored units alone:
the per-set statistic of each comparison (:class:`FamilyKey`,
``SetObservations``), the replay of every look
(:func:`hyptest.stats.anytime_family.monitor_family`) and the confirmatory
rows with their confidence-sequence trajectories
(:func:`adaptive_comparisons`). A resumed run, and ``hyptest report``,
replay the same looks on the same data and reach the same decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..results import CONFIRMATORY, Comparison
from ..stats.anytime import clipped_statistics, confidence_sequence
from ..stats.anytime_family import FamilyState, monitor_family
from ..stats.order_resampling import per_set_statistics
from ..study import Study
from .cubes import order_cube

__all__ = ["AdaptiveComparison", "FamilyKey", "SetObservations", "adaptive_comparisons", "adaptive_family", "family_keys", "monitor_sets",
           "orders_per_set", "set_budget"]

#: analysis -> (statistic of per_set_statistics, record column, scale factor of the log ratio)
_STATISTICS: dict[str, tuple[str, str, float]] = {
    "order_sensitivity": ("log_mean_sd_ratio", "p_gold", 1.0),
    "order_sensitivity_labels": ("log_mean_sd_ratio", "label_probs", 1.0),
    "log_variance_ratio": ("mean_log_var_ratio", "p_gold", 2.0),
}


def orders_per_set(study: Study, n_demos: int) -> int:
    """``k = min(min_orders, N!)``: the orders of every adaptive demo set of N demos."""
    return int(min(study.collection.min_orders, math.factorial(n_demos)))


def set_budget(study: Study, n_demos: int) -> int:
    """The most demo sets a slice of N demos may collect (``max_sets``, and ``max_orders`` / k)."""
    c = study.collection
    k = orders_per_set(study, n_demos)
    return int(min(c.max_sets, c.max_orders // k)) if c.max_orders is not None else int(c.max_sets)


@dataclass(frozen=True)
class FamilyKey:
    """One confirmatory comparison of the adaptive family."""

    model: str
    task: str
    n_demos: int
    method: str
    analysis: str


def family_keys(study: Study, labels: dict[str, int]) -> list[FamilyKey]:
    """Every confirmatory comparison of an adaptive study, in a fixed order (``labels``: labels per task)."""
    a = study.analysis
    compared = [n for n in study.method_names() if n != a.reference and study.method(n).kind != "zs"]
    out = []
    for model, task, n in study.slices():
        if orders_per_set(study, n) < 2:
            continue
        for method in compared:
            for analysis in a.confirmatory:
                if analysis == "order_sensitivity_labels" and labels.get(task, 3) == 2:
                    continue  # with two labels it is order_sensitivity itself
                out.append(FamilyKey(model, task, n, method, analysis))
    return out


def _bound_and_margin(study: Study, analysis: str) -> tuple[float, float | None]:
    scale = _STATISTICS[analysis][2]
    margin = study.analysis.margins.get(analysis)
    return (scale * math.log(study.collection.bound),
            scale * math.log(margin.ratio) if margin is not None and margin.ratio is not None else None)


def _set_cube(rows: pd.DataFrame, method: str, column: str) -> np.ndarray:
    """One demo set's outputs of ``method`` as a (1, orders, queries, labels) cube, seeds averaged
    (:func:`hyptest.analysis.cubes.order_cube`); an adaptive set always has every (order, query) cell."""
    cube, mask, _, _ = order_cube(rows, method, column)
    if not mask.all() or np.isnan(cube).any():
        raise ValueError(f"{method}: a demo set lacks some (order, query) cells")
    return cube


class SetObservations:
    """Per-set statistics of every family comparison, computed once per set from the stored units."""

    def __init__(self, study: Study, keys: list[FamilyKey]) -> None:
        self.study = study
        self.keys = keys
        self.values: dict[FamilyKey, dict[int, float]] = {k: {} for k in keys}

    def add(self, records: pd.DataFrame) -> None:
        """Compute the statistic of every (comparison, set) whose reference and method rows are all in ``records``."""
        ref = self.study.analysis.reference
        if records.empty:
            return
        for (model, task, n_demos, demo_set), rows in records.groupby(["model", "task", "n_demos", "demo_set"]):
            k = orders_per_set(self.study, int(n_demos))
            methods = set(rows["method"])
            if ref not in methods or rows.loc[rows["method"] == ref, "order_id"].nunique() < k:
                continue
            for key in self.keys:
                if (key.model, key.task, key.n_demos) != (model, task, int(n_demos)) or key.method not in methods:
                    continue
                if int(demo_set) in self.values[key] or rows.loc[rows["method"] == key.method, "order_id"].nunique() < k:
                    continue
                statistic, column, _ = _STATISTICS[key.analysis]
                cube_a = _set_cube(rows, ref, column)
                cube_b = _set_cube(rows, key.method, column)
                value = per_set_statistics(cube_a, cube_b, statistic)[0]  # type: ignore[arg-type]
                self.values[key][int(demo_set)] = float(value)

    def series(self, key: FamilyKey) -> np.ndarray:
        """The comparison's clipped statistics for sets 0, 1, ... (up to the first set not yet computed)."""
        got = self.values[key]
        n = 0
        while n in got:
            n += 1
        bound, _ = _bound_and_margin(self.study, key.analysis)
        return clipped_statistics(np.array([got[i] for i in range(n)]), bound)


def monitor_sets(study: Study, keys: list[FamilyKey], obs: SetObservations) -> FamilyState:
    """Replay every look of the confirmatory family on the per-set statistics stored so far."""
    a = study.analysis
    bounds, margins = zip(*(_bound_and_margin(study, k.analysis) for k in keys)) if keys else ((), ())
    return monitor_family([obs.series(k) for k in keys], bound=list(bounds), margins=list(margins),
                          max_n=[set_budget(study, k.n_demos) for k in keys], alpha=a.alpha, adjust=a.adjust,
                          check_every=study.collection.check_every)


@dataclass
class AdaptiveComparison:
    """One confirmatory comparison of an adaptive run, decided by the anytime-valid tests."""

    key: FamilyKey
    observations: np.ndarray
    state: Any  # ComparisonState
    cs_low: np.ndarray
    cs_high: np.ndarray
    cs_level: float


def adaptive_family(records: pd.DataFrame, study: Study, tasks_labels: dict[str, int]
                    ) -> tuple[list[AdaptiveComparison], FamilyState]:
    """Replay the adaptive family on a run's records: the decisions the collection took.

    ``tasks_labels``: number of labels of each task (binary tasks have no separate label analysis).
    """
    keys = family_keys(study, tasks_labels)
    obs = SetObservations(study, keys)
    obs.add(records)
    state = monitor_sets(study, keys, obs)
    m = max(len(keys), 1)
    level = study.analysis.alpha / m
    out = []
    for key, s in zip(keys, state.comparisons):
        bound, _ = _bound_and_margin(study, key.analysis)
        x = s.test.x[: s.n_used]
        low, high = confidence_sequence(x, level, lo=-bound, hi=bound, include=(0.0,), points=401) if len(x) \
            else (np.empty(0), np.empty(0))
        out.append(AdaptiveComparison(key, x, s, low, high, 1 - level))
    return out, state


def adaptive_comparisons(records: pd.DataFrame, study: Study, tasks_labels: dict[str, int]
                         ) -> tuple[list[Comparison], list[dict[str, Any]]]:
    """The confirmatory rows of an adaptive run (rule ``anytime``) and their trajectories for the report."""
    family, state = adaptive_family(records, study, tasks_labels)
    a = study.analysis
    rows: list[Comparison] = []
    traj: list[dict[str, Any]] = []
    for item in family:
        key, s = item.key, item.state
        bound, margin = _bound_and_margin(study, key.analysis)
        scale = _STATISTICS[key.analysis][2]
        est = s.test.estimate(s.n_used)
        k = orders_per_set(study, key.n_demos)
        n_sets = int(s.n_used)
        low = float(item.cs_low[-1]) if n_sets else -bound
        high = float(item.cs_high[-1]) if n_sets else bound
        text = {"decided": f"stopped after {n_sets} demo sets: decided",
                "budget": f"stopped after {n_sets} demo sets: budget spent",
                "running": f"{n_sets} demo sets so far (run not finished)"}[s.status]
        rows.append(Comparison(
            model=key.model, task=key.task, n_demos=key.n_demos, method_a=a.reference, method_b=key.method,
            analysis=key.analysis, family=CONFIRMATORY, estimate=est,
            scale=f"mean over demo sets of the per-set log ratio of {'order variances' if scale == 2 else 'mean order SDs'} "
                  f"({a.reference} / {key.method}, {k} orders per set, clipped to ±{bound:.3g})",
            rule="anytime", null_value=0.0, margin=margin,
            margin_source=f"declared: analysis.margins.{key.analysis}", margin_ratio=(
                math.exp(margin / scale) if margin is not None else None),
            resampling=f"adaptive: independent demo sets with {k} random orders each, a look after every "
                       f"{study.collection.check_every} set(s)",
            test="anytime-valid betting e-processes (WSR 2024 aGRAPA): difference + equivalence",
            ratio=math.exp(est / scale) if math.isfinite(est) else None, n=n_sets,
            given_verdict=s.verdict, given_interval=(low, high, item.cs_level), note=text,
            extra={"e_difference": s.e_difference, "e_equivalence": s.e_equivalence,
                   "p_anytime": s.p_difference, "p_anytime_adjusted": s.p_difference_adjusted,
                   "p_anytime_equivalence": s.p_equivalence,
                   "p_anytime_equivalence_adjusted": s.p_equivalence_adjusted,
                   "n_sets": n_sets, "n_orders": k, "stopped": s.status, "stop_look": s.stop_look,
                   "family_size": len(family),
                   "ci_method": f"confidence sequence (betting, hull of a grid) at {item.cs_level:.4g}, "
                                "simultaneous over looks; Bonferroni over the family"},
        ))
        units_per_set = k * len(list(getattr(study.method(key.method), "train_seeds", [0])))
        traj.append({
            "model": key.model, "task": key.task, "n_demos": key.n_demos, "method_a": a.reference,
            "method_b": key.method, "analysis": key.analysis, "verdict": s.verdict, "status": s.status,
            "stop_sets": n_sets, "orders_per_set": k, "units_per_set": units_per_set, "bound": bound,
            "margin": margin, "cs_level": item.cs_level,
            "x": [float(v) for v in item.observations],
            "estimate": [float(v) for v in np.cumsum(item.observations) / np.arange(1, n_sets + 1)] if n_sets else [],
            "cs_low": [float(v) for v in item.cs_low], "cs_high": [float(v) for v in item.cs_high],
            "e_difference": [float(v) for v in s.test.e_difference[:n_sets]],
            "e_equivalence": ([float(v) for v in s.test.e_equivalence[:n_sets]]
                              if s.test.e_equivalence is not None else None),
        })
    return rows, traj
