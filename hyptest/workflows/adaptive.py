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

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .._util import stable_hash
from ..analysis.adaptive import FamilyKey, monitor_sets, SetObservations, family_keys, orders_per_set, set_budget
from ..collect.plan import DemoSet, Unit, _name_code, method_settings, sample_orders, sample_queries
from ..stats.anytime_family import FamilyState
from ..study import Study
from ..tasks import Task, sample_examples

__all__ = ["adaptive_demo_set", "adaptive_units", "collect_adaptive", "run_adaptive_rounds", "sets_needed"]

def adaptive_demo_set(task: Task, n_demos: int, index: int, study: Study) -> DemoSet:
    """Demo set ``index`` of a slice: an independent draw from the pool with k distinct random orders."""
    rng = np.random.default_rng([study.seed, _name_code(task.name), 5, n_demos, index])
    demos = sample_examples(task.demos, n_demos, rng=rng, balanced=study.demos.balanced)
    ids = tuple(e.id for e in demos)
    orders = sample_orders(n_demos, orders_per_set(study, n_demos), rng=rng, identity_first=False)
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


def sets_needed(study: Study, keys: list[FamilyKey], state: FamilyState) -> dict[tuple[str, str, int, str], int]:
    """Sets each (model, task, N, method) slice needs for the next look (its current count when stopped)."""
    ce = study.collection.check_every
    need: dict[tuple[str, str, int, str], int] = {}
    ref = study.analysis.reference
    for model, task, n in study.slices():
        for method in study.method_names():  # everything gets the first round
            need[(model, task, n, method)] = min(ce, set_budget(study, n))
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
    obs = SetObservations(study, keys)
    planned: dict[tuple[str, str, int, str], int] = {}
    units: list[Unit] = []
    seen: set[str] = set()
    while True:
        state = monitor_sets(study, keys, obs)
        need = sets_needed(study, keys, state)
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
        from ..records import final_step_rows

        # a new set's statistic needs the reference's rows too, which may come from an earlier round
        touched = {(u.model, u.task, u.n_demos, u.demo_set) for u in fresh}
        obs.add(final_step_rows(read_units([u.key for u in units if (u.model, u.task, u.n_demos, u.demo_set)
                                            in touched])))
        if on_round is not None:
            on_round(units, state)


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

    from .._util import clean_for_json, json_default
    from ..collect.executors import group_units

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
