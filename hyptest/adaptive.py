"""Adaptive collection (``collection: adaptive``): rounds of demo sets until the confirmatory verdicts are decided.

Design (the unit of accrual is a demo set)
------------------------------------------
Every (model, task, N) slice draws demo sets one at a time, each
*independently* from the task's demo pool (label-balanced as the study asks;
two sets may share demos), each with ``k = min(min_orders, N!)`` distinct
orders drawn uniformly from its ``N!``, all scored on the study's sampled
queries. Set ``s`` of a slice is the same draw in every run (seeded by the
study seed, task, N and ``s``), so a resumed run plans the same units.

For a comparison of the reference A (ICL) with method B in analysis ``a``,
set ``s`` gives one observation: the analysis' statistic within the set
(:func:`hyptest.stats.order_resampling.per_set_statistics`; for
``order_sensitivity`` the log ratio of the mean over queries of the per-query
SD of P(gold) across the set's ``k`` orders, A / B), clipped to
``±log(bound)`` (``±2 log(bound)`` for ``log_variance_ratio``). The sets are
independent and identically drawn, so the observations are i.i.d. and the
betting e-processes of :mod:`hyptest.stats.anytime` are exactly valid for
their mean: the **target parameter** is the expected clipped per-set log
ratio for a random demo set with ``k`` random orders (on the study's
queries), not the fixed design's pooled log ratio of mean order SDs over the
sampled sets. The two agree when every set has the same ratio and ``k`` is
large; docs/calibration.md ("Adaptive collection") measures the error rates
against the population ratio in simulation.

Rounds: before each round, :func:`hyptest.stats.anytime_family.monitor_family`
replays every look on the stored data; each comparison still running needs
``check_every`` more sets (up to its budget); a method's slice runs while any
of its comparisons does, the reference while any method compared with it
does. Baselines (zero-shot) and slices without an order analysis (N = 1) get
the first round only. Verdicts come from the anytime-valid tests at the
stopping point, never from the fixed-size test applied after stopping (which
optional stopping invalidates); the fixed-size analyses of the other
families still run on every collected unit, as exploratory rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ._util import stable_hash
from .cubes import order_cube
from .collect.plan import DemoSet, Unit, _name_code, _unrank, method_settings, sample_queries
from .results import CONFIRMATORY, Comparison
from .stats.anytime import clipped_statistics, confidence_sequence
from .stats.anytime_family import FamilyState, monitor_family
from .stats.order_resampling import per_set_statistics
from .study import Study
from .tasks import Task, sample_examples

__all__ = ["AdaptiveComparison", "adaptive_comparisons", "adaptive_demo_set", "adaptive_family", "adaptive_units",
           "collect_adaptive", "family_keys", "orders_per_set", "set_budget"]

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


def adaptive_demo_set(task: Task, n_demos: int, index: int, study: Study) -> DemoSet:
    """Demo set ``index`` of a slice: an independent draw from the pool with k distinct random orders."""
    rng = np.random.default_rng([study.seed, _name_code(task.name), 5, n_demos, index])
    demos = sample_examples(task.demos, n_demos, rng=rng, balanced=study.demos.balanced)
    ids = tuple(e.id for e in demos)
    k = orders_per_set(study, n_demos)
    total = math.factorial(n_demos)
    if total <= 10**6:
        ranks = rng.choice(total, size=k, replace=False)
        orders = [_unrank(int(r), n_demos) for r in ranks]
    else:
        seen: set[tuple[int, ...]] = set()
        orders = []
        while len(orders) < k:
            perm = tuple(int(i) for i in rng.permutation(n_demos))
            if perm not in seen:
                seen.add(perm)
                orders.append(list(perm))
    return DemoSet(task.name, n_demos, index, ids, tuple(tuple(ids[i] for i in o) for o in orders))


def adaptive_units(study: Study, task: Task, model: str, n_demos: int, method: str, sets: Sequence[int], *,
                   identities: dict[str, dict[str, Any]], versions: dict[str, str]) -> list[Unit]:
    """The units of ``method`` on the given adaptive demo sets of one slice (keys name the set and position)."""
    spec = study.method(method)
    query_ids = tuple(q.id for q in sample_queries(task, study.demos.n_queries, seed=study.seed))
    task_hash = task.content_hash()
    out = []
    for index in sets:
        demo_set = adaptive_demo_set(task, n_demos, index, study)
        for order_id, order in enumerate(demo_set.orders):
            for seed in list(getattr(spec, "train_seeds", [0])):
                key = stable_hash({
                    "names": [model, task.name, method], "model": identities[model], "task": task_hash,
                    "order": order, "queries": query_ids, "method": method_settings(spec), "seed": seed,
                    "top_k": study.analysis.top_k, "versions": versions,
                    # independent sets may repeat an order of another set: the slot keeps their files apart
                    "adaptive": [n_demos, index, order_id],
                }, length=24)
                out.append(Unit(key, model, task.name, n_demos, index, order_id, order, method, spec.kind, seed,
                                query_ids))
    return out


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
    for model in study.models:
        for task in study.tasks:
            for n in study.demos.n_demos:
                if orders_per_set(study, n) < 2:
                    continue
                for method in compared:
                    for analysis in a.confirmatory:
                        if analysis == "order_sensitivity_labels" and labels.get(task.name, 3) == 2:
                            continue  # with two labels it is order_sensitivity itself
                        out.append(FamilyKey(model.name, task.name, int(n), method, analysis))
    return out


def _bound_and_margin(study: Study, analysis: str) -> tuple[float, float | None]:
    scale = _STATISTICS[analysis][2]
    margin = study.analysis.margins.get(analysis)
    return (scale * math.log(study.collection.bound),
            scale * math.log(margin.ratio) if margin is not None and margin.ratio is not None else None)


def _set_cube(rows: pd.DataFrame, method: str, column: str) -> np.ndarray:
    """One demo set's outputs of ``method`` as a (1, orders, queries, labels) cube, seeds averaged
    (:func:`hyptest.cubes.order_cube`); an adaptive set always has every (order, query) cell."""
    cube, mask, _, _ = order_cube(rows, method, column)
    if not mask.all() or np.isnan(cube).any():
        raise ValueError(f"{method}: a demo set lacks some (order, query) cells")
    return cube


class _Observations:
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


def _monitor(study: Study, keys: list[FamilyKey], obs: _Observations) -> FamilyState:
    a = study.analysis
    bounds, margins = zip(*(_bound_and_margin(study, k.analysis) for k in keys)) if keys else ((), ())
    return monitor_family([obs.series(k) for k in keys], bound=list(bounds), margins=list(margins),
                          max_n=[set_budget(study, k.n_demos) for k in keys], alpha=a.alpha, adjust=a.adjust,
                          check_every=study.collection.check_every)


def _needs(study: Study, keys: list[FamilyKey], state: FamilyState) -> dict[tuple[str, str, int, str], int]:
    """Sets each (model, task, N, method) slice needs for the next look (its current count when stopped)."""
    ce = study.collection.check_every
    need: dict[tuple[str, str, int, str], int] = {}
    ref = study.analysis.reference
    for model in study.models:
        for task in study.tasks:
            for n in study.demos.n_demos:
                for method in study.method_names():  # everything gets the first round
                    need[(model.name, task.name, int(n), method)] = min(ce, set_budget(study, int(n)))
    for key, s in zip(keys, state.comparisons):
        want = s.n_used if s.stopped else min((state.n_looks + 1) * ce, set_budget(study, key.n_demos))
        for method in (key.method, ref):
            slot = (key.model, key.task, key.n_demos, method)
            need[slot] = max(need[slot], want)
    return need


def collect_adaptive(study: Study, tasks: dict[str, Task], identities: dict[str, dict[str, Any]],
                     versions: dict[str, str], *, has_unit: Callable[[str], bool],
                     read_units: Callable[[list[str]], pd.DataFrame],
                     run_units: Callable[[list[Unit]], None],
                     on_round: Callable[[list[Unit], FamilyState], None] | None = None) -> list[Unit]:
    """Collect in rounds until every confirmatory comparison is decided or out of budget.

    Parameters
    ----------
    study, tasks, identities, versions
        As for :func:`hyptest.collect.plan.make_plan`.
    has_unit, read_units : callable
        The store: whether a unit key is stored; the rows of stored keys.
    run_units : callable
        Collects and stores the given units (the executor; called once per round with the missing ones).
    on_round : callable, optional
        Called after each round with every unit planned so far and the family state.

    Returns
    -------
    list of Unit
        Every unit planned (collected now or found in the store), in a fixed order.
    """
    keys = family_keys(study, {name: len(t.labels) for name, t in tasks.items()})
    obs = _Observations(study, keys)
    planned: dict[tuple[str, str, int, str], int] = {}
    units: list[Unit] = []
    seen: set[str] = set()
    while True:
        state = _monitor(study, keys, obs)
        need = _needs(study, keys, state)
        new: list[Unit] = []
        for (model, task, n, method), count in need.items():
            have = planned.get((model, task, n, method), 0)
            if count > have:
                new += adaptive_units(study, tasks[task], model, n, method, range(have, count),
                                      identities=identities, versions=versions)
                planned[(model, task, n, method)] = count
        if not new:
            if on_round is not None:
                on_round(units, state)
            return units
        fresh = [u for u in new if u.key not in seen]
        seen.update(u.key for u in fresh)
        units += fresh
        missing = [u for u in fresh if not has_unit(u.key)]
        if missing:
            run_units(missing)
        from .collect.units import final_step_rows

        # a new set's statistic needs the reference's rows too, which may come from an earlier round
        touched = {(u.model, u.task, u.n_demos, u.demo_set) for u in fresh}
        obs.add(final_step_rows(read_units([u.key for u in units if (u.model, u.task, u.n_demos, u.demo_set)
                                            in touched])))
        if on_round is not None:
            on_round(units, state)


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
    obs = _Observations(study, keys)
    obs.add(records)
    state = _monitor(study, keys, obs)
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


def run_adaptive_rounds(study: Study, tasks: dict[str, Task], identities: dict[str, dict[str, Any]],
                        versions: dict[str, str], run: Any, executor: Any,
                        on_unit: Callable[[Unit, pd.DataFrame], None], manifest: dict[str, Any]
                        ) -> tuple[list[Unit], int, dict[str, Any]]:
    """The pipeline's collection step for ``collection: adaptive``: rounds through ``executor`` into ``run``.

    The manifest is rewritten after every round (every unit planned so far),
    so an interrupted run leaves a readable directory; a rerun replays the
    stored rounds and goes on where it stopped. Returns the units, how many
    were found in the store, and the manifest as the analysis should read it.
    """
    import json

    from ._util import clean_for_json, json_default
    from .collect.executors import group_units

    reused = 0
    keep = hasattr(executor, "keep_loaded") and not executor.keep_loaded
    if keep:
        executor.keep_loaded = True  # one model load for every round

    def collect(units: list[Unit]) -> None:
        executor.run(group_units(units), study=study, tasks=tasks, on_unit=on_unit)

    def has_unit(key: str) -> bool:
        nonlocal reused
        found = bool(run.has_unit(key))
        reused += found
        return found

    def record(units: list[Unit], state: FamilyState) -> None:
        manifest["units"] = [u.describe() for u in units]
        manifest["adaptive"] = {"looks": state.n_looks, "running": len(state.running)}
        run.write_json("manifest.json", manifest)

    try:
        units = collect_adaptive(study, tasks, identities, versions, has_unit=has_unit, read_units=run.read_units,
                                 run_units=collect, on_round=record)
    finally:
        if keep:
            executor.close()
            executor.keep_loaded = False
    return units, reused, json.loads(json.dumps(clean_for_json(manifest), default=json_default))
