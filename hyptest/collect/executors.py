"""Executors: who runs the work groups of a study.

A *work group* is every pending unit of one (model, task, N, demo set, method):
all its orders and seeds. Groups are the scheduling grain, so a collector can
share work between the orders of one demo set (prefix caches, shared SGD
steps) while every unit is still stored on its own.

The local executor runs groups in this process, one model loaded at a time.
Other executors (e.g. Ray) implement the same ``run`` contract.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from .plan import Unit

__all__ = ["Executor", "LocalExecutor", "WorkGroup", "group_units"]

#: Called with (unit, its rows) as soon as a unit is finished.
OnUnit = Callable[[Unit, pd.DataFrame], None]


@dataclass(frozen=True)
class WorkGroup:
    """Pending units of one (model, task, N, demo set, method), in plan order."""

    model: str
    task: str
    n_demos: int
    demo_set: int
    method: str
    units: tuple[Unit, ...]


def group_units(units: Iterable[Unit]) -> list[WorkGroup]:
    """Group units by (model, task, N, demo set, method), keeping plan order."""
    groups: dict[tuple[Any, ...], list[Unit]] = {}
    for unit in units:
        key = (unit.model, unit.task, unit.n_demos, unit.demo_set, unit.method)
        groups.setdefault(key, []).append(unit)
    return [WorkGroup(*key, units=tuple(members)) for key, members in groups.items()]


class Executor(abc.ABC):
    """Runs work groups and hands every finished unit to ``on_unit``."""

    @abc.abstractmethod
    def run(
        self,
        groups: Sequence[WorkGroup],
        *,
        study: Any,
        tasks: dict[str, Any],
        on_unit: OnUnit,
    ) -> None:
        """Run every group; call ``on_unit(unit, rows)`` once per finished unit."""


class LocalExecutor(Executor):
    """Run groups in this process; each model is loaded once and reused.

    Parameters
    ----------
    batch_size : int, optional
        Packed query rows per forward pass; default automatic (a per-device
        token budget, capped by free memory, halved on out-of-memory).
    allow_tf32 : bool, default False
        Allow TF32 for float32 matmuls on CUDA. Off by default, and set
        explicitly, so GPU float32 numbers match the CPU's to float32 rounding.
    memory_budget : int or str, optional
        What training state, snapshots, caches and batches may hold (see
        :class:`~hyptest.collect.memory.MemoryBudget`); default the study's
        ``executor.memory_budget``, else the device's default.
    """

    def __init__(self, *, batch_size: int | None = None, allow_tf32: bool = False,
                 memory_budget: int | str | None = None, keep_loaded: bool = False) -> None:
        self.batch_size = batch_size
        #: keep each model loaded between calls of ``run`` (adaptive collection calls it once per round);
        #: :meth:`close` frees them
        self.keep_loaded = keep_loaded
        self._runners: dict[str, Any] = {}
        self.allow_tf32 = allow_tf32
        self.memory_budget = memory_budget
        #: seconds spent loading models, for the provenance table
        self.load_seconds = 0.0
        #: per model: the budget, what was planned at most, and what did not fit (recomputed)
        self.memory: dict[str, dict[str, Any]] = {}

    def run(self, groups: Sequence[WorkGroup], *, study: Any, tasks: dict[str, Any], on_unit: OnUnit) -> None:
        import time

        from ..models import load_model
        from .units import UnitRunner

        for spec in study.models:
            mine = [g for g in groups if g.model == spec.name]
            if not mine:
                continue
            runner = self._runners.pop(spec.name, None)
            if runner is None:
                t0 = time.perf_counter()
                lm = load_model(spec)
                self.load_seconds += time.perf_counter() - t0
                runner = UnitRunner(lm, tasks, study, batch_size=self.batch_size, allow_tf32=self.allow_tf32,
                                    memory_budget=self.memory_budget)
                del lm
            for group in mine:
                for unit, rows in runner.run_group(group.units):
                    on_unit(unit, rows)
            self.memory[spec.name] = runner.memory_summary()
            if self.keep_loaded:
                self._runners[spec.name] = runner
            else:
                runner.close()
            del runner

    def close(self) -> None:
        """Free the models kept loaded (``keep_loaded``)."""
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()
