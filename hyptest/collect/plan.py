"""Plan a study: which units to collect, with content-addressed keys.

A unit is one (model, task, N, demo set, order, method, training seed). Its key
hashes everything that determines its output and the names its rows carry
(model, task, method), so a rerun finds finished units, a changed setting
never reuses stale data, and a renamed method is collected under its new name.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._util import stable_hash
from ..tasks import Example, Task, sample_examples

if TYPE_CHECKING:  # annotations only: the samplers import without pydantic (the GPU image has none)
    from ..study import Study

__all__ = ["DemoSet", "Unit", "make_plan", "sample_demo_sets", "sample_orders", "sample_queries"]


@dataclass(frozen=True)
class DemoSet:
    """One sampled demo set of one task and N, with its sampled orders."""

    task: str
    n_demos: int
    index: int
    demo_ids: tuple[str, ...]
    orders: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Unit:
    """The smallest piece of work; one Parquet file in the store."""

    key: str
    model: str
    task: str
    n_demos: int
    demo_set: int
    order_id: int
    order: tuple[str, ...]
    method: str
    method_kind: str
    seed: int
    query_ids: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        """The unit's descriptor, as stored in the manifest."""
        return {
            "key": self.key,
            "model": self.model,
            "task": self.task,
            "n_demos": self.n_demos,
            "demo_set": self.demo_set,
            "order_id": self.order_id,
            "order": list(self.order),
            "method": self.method,
            "method_kind": self.method_kind,
            "seed": self.seed,
        }


def _name_code(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def sample_queries(task: Task, n_queries: int | str, *, seed: int) -> list[Example]:
    """The held-out queries of a study: all, or a label-balanced sample."""
    if n_queries == "all" or int(n_queries) >= len(task.queries):
        return list(task.queries)
    rng = np.random.default_rng([seed, _name_code(task.name), 1])
    chosen = sample_examples(task.queries, int(n_queries), rng=rng, balanced=True)
    return sorted(chosen, key=lambda e: task.queries.index(e))


def sample_demo_sets(task: Task, n_demos: int, n_sets: int, *, seed: int, balanced: bool) -> list[list[Example]]:
    """Draw ``n_sets`` disjoint demo sets of size ``n_demos`` from the demo pool."""
    rng = np.random.default_rng([seed, _name_code(task.name), 2, n_demos])
    remaining = list(task.demos)
    sets: list[list[Example]] = []
    for _ in range(n_sets):
        chosen = sample_examples(remaining, n_demos, rng=rng, balanced=balanced)
        sets.append(chosen)
        taken = {e.id for e in chosen}
        remaining = [e for e in remaining if e.id not in taken]
    return sets


def _unrank(index: int, n: int) -> list[int]:
    """The permutation of ``range(n)`` with lexicographic rank ``index``."""
    pool = list(range(n))
    out: list[int] = []
    for i in range(n, 0, -1):
        block = math.factorial(i - 1)
        out.append(pool.pop(index // block))
        index %= block
    return out


def sample_orders(n: int, n_orders: int | str, *, rng: np.random.Generator,
                  identity_first: bool = True) -> list[list[int]]:
    """Distinct permutations of ``range(n)``: all of them, or ``n_orders`` at random.

    Parameters
    ----------
    n : int
        Number of demonstrations.
    n_orders : int or "all"
        How many orders.
    rng : numpy.random.Generator
        The stream the orders are drawn from.
    identity_first : bool, default True
        The fixed design: the identity order is always included first, so order 0
        is the demo set as drawn, and ``n_orders >= n!`` (or ``"all"``) gives every
        permutation in lexicographic order without drawing. False (adaptive
        collection): ``n_orders`` orders drawn uniformly without replacement, none
        forced; asking for more than ``n!`` raises numpy's ``ValueError``.

    Returns
    -------
    list of list of int
    """
    total = math.factorial(n)
    if identity_first and (n_orders == "all" or int(n_orders) >= total):
        return [list(p) for p in itertools.permutations(range(n))]
    k = int(n_orders)
    if total <= 10**6:
        if identity_first:
            ranks = [0, *(1 + rng.choice(total - 1, size=k - 1, replace=False))]
        else:
            ranks = rng.choice(total, size=k, replace=False)
        return [_unrank(int(r), n) for r in ranks]
    orders = [list(range(n))] if identity_first else []
    seen = {tuple(o) for o in orders}
    while len(orders) < k:
        perm = tuple(int(i) for i in rng.permutation(n))
        if perm not in seen:
            seen.add(perm)
            orders.append(list(perm))
    return orders


def demo_sets_for(task: Task, n_demos: int, study: Study) -> list[DemoSet]:
    """The demo sets and their orders for one task and N."""
    sets = sample_demo_sets(task, n_demos, study.demos.n_sets, seed=study.seed, balanced=study.demos.balanced)
    out: list[DemoSet] = []
    for index, demos in enumerate(sets):
        rng = np.random.default_rng([study.seed, _name_code(task.name), 3, n_demos, index])
        orders = sample_orders(n_demos, study.demos.n_orders, rng=rng)
        ids = tuple(e.id for e in demos)
        out.append(DemoSet(task.name, n_demos, index, ids, tuple(tuple(ids[i] for i in o) for o in orders)))
    return out


#: Options added after the first stored runs: left out of a unit's key while at their
#: default, so the keys of studies that do not use them stay what they were.
_NEW_OPTION_DEFAULTS: dict[str, Any] = {"params": "all", "layer": None, "record_steps": False}


def method_settings(method: Any) -> dict[str, Any]:
    """The hyper-parameters of a method that determine its output.

    Names (``name``, the grid ``family``) and ``train_seeds`` (each seed is its
    own unit) are left out; ``params``, ``layer`` and ``record_steps`` are
    left out while at their defaults, so keys of studies written before these
    options existed do not change.
    """
    settings = method.model_dump(exclude={"name", "family", "train_seeds"})
    for option, default in _NEW_OPTION_DEFAULTS.items():
        if option in settings and settings[option] == default:
            del settings[option]
    return settings


def make_plan(
    study: Study,
    tasks: dict[str, Task],
    model_identities: dict[str, dict[str, Any]],
    *,
    versions: dict[str, str],
) -> list[Unit]:
    """List every unit of a study, in a deterministic order.

    Parameters
    ----------
    study : Study
        The validated study.
    tasks : dict
        Loaded tasks by name.
    model_identities : dict
        What determines each model's weights (file hash, revision, ...).
    versions : dict
        Library versions that can change outputs; part of every key.
    """
    units: list[Unit] = []
    for model in study.models:
        for task_spec in study.tasks:
            task = tasks[task_spec.name]
            queries = sample_queries(task, study.demos.n_queries, seed=study.seed)
            query_ids = tuple(q.id for q in queries)
            task_hash = task.content_hash()
            for n in study.demos.n_demos:
                for demo_set in demo_sets_for(task, n, study):
                    for order_id, order in enumerate(demo_set.orders):
                        for name in study.method_names():
                            method = study.method(name)
                            seeds = list(getattr(method, "train_seeds", [0]))  # icl, zs: no training
                            for seed in seeds:
                                key = stable_hash(
                                    {
                                        # the names a unit's rows carry: two methods (models, tasks)
                                        # with the same settings but other names never share a file
                                        "names": [model.name, task.name, name],
                                        "model": model_identities[model.name],
                                        "task": task_hash,
                                        "order": order,
                                        "queries": query_ids,
                                        "method": method_settings(method),
                                        "seed": seed,
                                        "top_k": study.analysis.top_k,
                                        "versions": versions,
                                    },
                                    length=24,
                                )
                                units.append(
                                    Unit(key, model.name, task.name, n, demo_set.index, order_id, order,
                                         name, method.kind, seed, query_ids)
                                )
    return units

