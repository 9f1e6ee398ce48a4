"""Run a study's work groups on a Ray cluster, into the same store.

Design
------
* **One actor per worker.** Each actor holds a :class:`~hyptest.collect.units.UnitRunner`
  per model, built lazily on the first group of that model and reused for every
  later group of it; runners of models with no work left are dropped.
* **Work groups are the scheduling grain**, as in the local executor. An idle
  actor takes the first pending group of a model it already holds, else the
  first pending group.
* **The driver is the only writer.** An actor streams each finished unit back
  as soon as it is done (a Ray streaming generator yielding plain dicts with the
  unit's rows as Parquet bytes); the driver calls ``on_unit(unit, rows)``, so the
  pipeline stores it atomically and advances its progress bar. The store can
  therefore be a folder on the driver's machine, a shared filesystem or an
  object store; workers need no access to it.
  Through Ray Client (``ray://``), which cannot stream from actors, a group's
  units come back together when the group is done.
* **Fault tolerance.** A worker that dies (crash, ``kill -9``, OOM killer, lost
  node) loses only the unit it was computing: the units of its group already
  streamed back are stored, and the rest of the group is retried on a fresh
  actor, at most ``max_retries`` times per group. A run stopped for good
  resumes on a rerun, because finished units are in the store.
* **Same keys, same numbers.** Unit keys are computed on the driver, so before
  any work each actor reports its hyptest/torch/transformers versions, the
  device its models would run on and the hash of every task, and the run
  stops with a clear error when they differ from the driver's.

Ray stays optional: this module imports without Ray; building a
:class:`RayExecutor` without it raises an error that names the extra.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import io
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd

from .._validation import validate_count, validate_flag, validate_real
from .executors import Executor, LocalExecutor, OnUnit, WorkGroup
from .plan import Unit

__all__ = ["EXECUTORS", "RayExecutor", "RayExecutorError", "make_executor"]

#: Names accepted by :func:`make_executor`.
EXECUTORS = ("local", "ray")

_INSTALL_HINT = 'pip install "hyptest[ray]"'
#: Libraries whose versions must agree between the driver and every worker.
_CHECKED_LIBRARIES = ("hyptest", "torch", "transformers")


class RayExecutorError(RuntimeError):
    """The cluster could not finish the work (lost workers, mismatched environments)."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            f"the Ray executor needs Ray, which is not installed here; install it with: {_INSTALL_HINT}"
        ) from None
    return ray


@dataclass(frozen=True, slots=True)
class _RayOptions:
    address: str | None
    num_workers: int | None
    num_cpus_per_worker: float
    num_gpus_per_worker: float
    memory_per_worker: int | None
    max_retries: int
    init_kwargs: dict[str, Any]
    batch_size: int | None
    allow_tf32: bool


def _validate_ray_options(
    *,
    address: Any,
    num_workers: Any,
    num_cpus_per_worker: Any,
    num_gpus_per_worker: Any,
    memory_per_worker: Any,
    max_retries: Any,
    init_kwargs: Any,
    batch_size: Any,
    allow_tf32: Any,
) -> _RayOptions:

    if address is not None and (not isinstance(address, str) or not address):
        raise TypeError(
            f"`address` must be None (start or join a local Ray), 'auto' or a cluster address such as "
            f"'ray://HEAD:10001', got {address!r}"
        )
    validate_count(num_workers, "num_workers", allow_none=True, none_means="one per free slot")
    validate_real(num_cpus_per_worker, "num_cpus_per_worker", minimum=0.0, strict=True)
    validate_real(num_gpus_per_worker, "num_gpus_per_worker", minimum=0.0)
    validate_count(memory_per_worker, "memory_per_worker", allow_none=True, none_means="no reservation; a number of bytes")
    validate_count(max_retries, "max_retries", minimum=0)
    if init_kwargs is not None and not isinstance(init_kwargs, dict):
        raise TypeError(f"`init_kwargs` must be a dict of ray.init keyword arguments or None, got {init_kwargs!r}")
    if init_kwargs and "address" in init_kwargs:
        raise ValueError("pass the cluster address as `address`, not inside `init_kwargs`")
    validate_count(batch_size, "batch_size", allow_none=True, none_means="automatic")
    validate_flag(allow_tf32, "allow_tf32")
    return _RayOptions(
        address=address,
        num_workers=num_workers,
        num_cpus_per_worker=num_cpus_per_worker,
        num_gpus_per_worker=num_gpus_per_worker,
        memory_per_worker=memory_per_worker,
        max_retries=max_retries,
        init_kwargs=dict(init_kwargs or {}),
        batch_size=batch_size,
        allow_tf32=allow_tf32,
    )


# -- what travels to the workers: plain data, rebuilt there ------------------------------------------


def _task_to_dict(task: Any) -> dict[str, Any]:
    data = {f.name: getattr(task, f.name) for f in dataclasses.fields(task) if f.init}
    data["demos"] = [dataclasses.astuple(e) for e in task.demos]
    data["queries"] = [dataclasses.astuple(e) for e in task.queries]
    return data


def _task_from_dict(data: dict[str, Any]) -> Any:
    from ..tasks import Example, Task

    return Task(**{**data, "demos": tuple(Example(*e) for e in data["demos"]),
                   "queries": tuple(Example(*e) for e in data["queries"])})


def _unit_to_dict(unit: Unit) -> dict[str, Any]:
    return dataclasses.asdict(unit)


def _unit_from_dict(data: dict[str, Any]) -> Unit:
    return Unit(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _versions() -> dict[str, str]:
    from ..provenance import package_version

    return {name: package_version(name) for name in _CHECKED_LIBRARIES}


def _environment(study: Any, tasks: dict[str, Any]) -> dict[str, Any]:
    """What unit keys assume about the machine that computes them (see ``pipeline.plan_study``)."""
    from ..models.base import resolve_device

    devices = sorted({resolve_device(m.device) if m.source != "tiny" else "cpu" for m in study.models})
    return {
        "versions": _versions(),
        "device": ",".join(devices),
        "tasks": {name: task.content_hash() for name, task in sorted(tasks.items())},
    }


class _Worker:
    """The body of one Ray actor: loads each model once, runs groups, streams units back."""

    def __init__(self, study: dict[str, Any], tasks: dict[str, dict[str, Any]], *, batch_size: int | None,
                 allow_tf32: bool, num_threads: int, hook: Callable[[dict[str, Any]], None] | None) -> None:
        import torch

        torch.set_num_threads(num_threads)
        self._data = (study, tasks)
        self.study: Any = None
        self.tasks: dict[str, Any] = {}
        self.batch_size = batch_size
        self.allow_tf32 = allow_tf32
        self.hook = hook
        self.runners: dict[str, Any] = {}

    def environment(self) -> dict[str, Any]:
        """Versions, device and task hashes; the study is read here, after the versions are known."""
        import os
        import socket

        where = {"host": socket.gethostname(), "pid": os.getpid()}
        try:
            from ..study import Study

            self.study = Study.model_validate(self._data[0])
            self.tasks = {name: _task_from_dict(data) for name, data in self._data[1].items()}
            return {**_environment(self.study, self.tasks), **where}
        except Exception as error:  # reported with the versions, which usually explain it
            return {"versions": _versions(), "error": f"{type(error).__name__}: {error}", **where}

    def run_group(self, model: str, units: list[dict[str, Any]], live_models: list[str]):  # noqa: ANN201
        """Yield ``{"load_seconds": s}`` when the model is loaded, then ``{"key", "parquet"}`` per unit."""
        if self.hook is not None:
            self.hook({"event": "group", "model": model, "units": units})
        for name in [n for n in self.runners if n not in live_models]:
            self._drop(name)
        runner = self.runners.get(model)
        if runner is None:
            from ..models import load_model
            from .units import UnitRunner

            spec = next(m for m in self.study.models if m.name == model)
            t0 = time.perf_counter()
            runner = UnitRunner(load_model(spec), self.tasks, self.study, batch_size=self.batch_size,
                                allow_tf32=self.allow_tf32)
            self.runners[model] = runner
            yield {"load_seconds": time.perf_counter() - t0}
        for index, (unit, rows) in enumerate(runner.run_group([_unit_from_dict(u) for u in units])):
            if self.hook is not None:
                self.hook({"event": "unit", "unit": _unit_to_dict(unit), "index": index})
            buffer = io.BytesIO()
            rows.to_parquet(buffer, index=False)
            yield {"key": unit.key, "parquet": buffer.getvalue()}

    def run_group_at_once(self, model: str, units: list[dict[str, Any]], live_models: list[str]) -> list[dict]:
        """:meth:`run_group` as one list, for Ray Client, which cannot stream from actors."""
        return list(self.run_group(model, units, live_models))

    def _drop(self, name: str) -> None:
        import gc

        runner = self.runners.pop(name)
        del runner
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


# -- the driver side -------------------------------------------------------------------------------


@dataclass
class _Job:
    group: WorkGroup
    attempt: int = 0
    done: set[str] = field(default_factory=set)
    units_by_key: dict[str, Unit] = field(init=False)

    def __post_init__(self) -> None:
        self.units_by_key = {u.key: u for u in self.group.units}


@dataclass
class _Slot:
    actor: Any = None
    ready: bool = False
    job: _Job | None = None
    models: set[str] = field(default_factory=set)
    info: dict[str, Any] = field(default_factory=dict)


def _describe(group: WorkGroup) -> str:
    return (f"model {group.model}, task {group.task}, N={group.n_demos}, demo set {group.demo_set}, "
            f"method {group.method}")


class RayExecutor(Executor):
    """Run work groups on Ray actors; the driver stores every unit as it arrives.

    Parameters
    ----------
    address : str, optional
        Ray cluster to join when Ray is not initialised yet: ``"auto"`` (the
        cluster this node belongs to), ``"ray://HEAD:10001"`` (Ray Client) or
        ``"HEAD:6379"``. None starts a local Ray instance (or joins the one in
        ``RAY_ADDRESS``). When Ray is already initialised, it is used as is.
    num_workers : int, optional
        Number of actors. Default: as many as the cluster's nodes can hold with
        the resources asked per worker, and never more than the number of groups.
    num_cpus_per_worker : float, default 1
        CPUs reserved per actor; also its torch thread count (rounded down, at least 1).
    num_gpus_per_worker : float, default 0
        GPUs reserved per actor (fractions share a GPU).
    memory_per_worker : int, optional
        Bytes of memory reserved per actor (Ray's ``memory`` resource).
    max_retries : int, default 2
        How many times a group whose worker died is retried on a fresh actor.
    init_kwargs : dict, optional
        Extra keyword arguments for ``ray.init`` (``runtime_env``, ``namespace``,
        ``num_cpus`` for a local instance, ...).
    batch_size : int, optional
        Packed query rows per forward pass; default automatic, as in
        :class:`~hyptest.collect.executors.LocalExecutor`. The automatic size reads the
        node's free memory, which the other workers on the node share: give
        ``memory_per_worker`` or a fixed ``batch_size`` when workers share a node's memory.
    allow_tf32 : bool, default False
        Allow TF32 float32 matmuls on CUDA workers (as the local executor).

    Attributes
    ----------
    load_seconds : float
        Seconds the workers spent loading models, summed over workers.
    workers : list of dict
        Host and process of every actor that reported ready during the last run.

    Raises
    ------
    ImportError
        When Ray is not installed; the message says ``pip install "hyptest[ray]"``.
    ValueError, TypeError
        For an invalid argument, named in the message.

    Notes
    -----
    Groups of one model are preferred by the actors that already hold it, so a
    model is loaded once per actor. Unit keys are computed on the driver; an
    actor whose library versions, device or task data differ from the driver's
    stops the run with :class:`RayExecutorError` before any work is done.
    Exceptions raised by hyptest code inside a worker (a model that cannot be
    loaded, ...) are not retried: they are raised on the driver as they are.

    Examples
    --------
    >>> from hyptest.collect.ray_executor import RayExecutor  # doctest: +SKIP
    >>> run_study(study, text, executor=RayExecutor(address="auto", num_gpus_per_worker=1))  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        num_workers: int | None = None,
        num_cpus_per_worker: float = 1,
        num_gpus_per_worker: float = 0,
        memory_per_worker: int | None = None,
        max_retries: int = 2,
        init_kwargs: dict[str, Any] | None = None,
        batch_size: int | None = None,
        allow_tf32: bool = False,
    ) -> None:
        self.options = _validate_ray_options(
            address=address, num_workers=num_workers, num_cpus_per_worker=num_cpus_per_worker,
            num_gpus_per_worker=num_gpus_per_worker, memory_per_worker=memory_per_worker,
            max_retries=max_retries, init_kwargs=init_kwargs, batch_size=batch_size, allow_tf32=allow_tf32,
        )
        _import_ray()
        self.load_seconds = 0.0
        self.workers: list[dict[str, Any]] = []
        # Testing hook, shipped to every actor (the tests crash workers from it). Called with
        # {"event": "group", "model", "units"} when a group starts (before the model is loaded), and
        # {"event": "unit", "unit", "index"} after each unit is computed, before it is sent back.
        self._hook: Callable[[dict[str, Any]], None] | None = None

    def run(self, groups: Sequence[WorkGroup], *, study: Any, tasks: dict[str, Any], on_unit: OnUnit) -> None:
        """Run every group on the cluster; call ``on_unit(unit, rows)`` as each unit arrives."""
        groups = [g for g in groups if g.units]
        if not groups:
            return
        ray = _import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.options.address, **self.options.init_kwargs)
        try:
            self._run(ray, groups, study, tasks, on_unit)
        finally:
            if started_here:
                ray.shutdown()

    # -- internals -----------------------------------------------------------------------------------

    def _resources(self) -> dict[str, float]:
        o = self.options
        wanted = {"CPU": float(o.num_cpus_per_worker)}
        if o.num_gpus_per_worker:
            wanted["GPU"] = float(o.num_gpus_per_worker)
        if o.memory_per_worker:
            wanted["memory"] = float(o.memory_per_worker)
        return wanted

    def _n_workers(self, ray: Any, n_groups: int) -> int:
        wanted = self._resources()
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        per_node = [min(int(res.get(k, 0.0) // v) for k, v in wanted.items()) for res in nodes]
        if not any(per_node):
            offered = "; ".join(
                ", ".join(f"{k}={res.get(k, 0):g}" for k in wanted) for res in nodes
            ) or "no live node"
            raise RayExecutorError(
                f"no node of the Ray cluster can hold one worker asking for "
                f"{', '.join(f'{k}={v:g}' for k, v in wanted.items())} (nodes offer: {offered}); "
                "lower `num_cpus_per_worker` / `num_gpus_per_worker` / `memory_per_worker` or add nodes"
            )
        n = self.options.num_workers or sum(per_node)
        return max(1, min(n, n_groups))

    def _actor_class(self, ray: Any) -> Any:
        o = self.options
        options: dict[str, Any] = {"num_cpus": o.num_cpus_per_worker, "num_gpus": o.num_gpus_per_worker,
                                   "max_restarts": 0, "max_task_retries": 0, "max_concurrency": 1}
        if o.memory_per_worker:
            options["memory"] = o.memory_per_worker
        return ray.remote(_Worker).options(**options)

    def _run(self, ray: Any, groups: list[WorkGroup], study: Any, tasks: dict[str, Any], on_unit: OnUnit) -> None:
        retryable = _retryable_errors(ray)
        expected = _environment(study, tasks)
        study_ref = ray.put(study.model_dump(mode="json"))
        tasks_ref = ray.put({name: _task_to_dict(task) for name, task in tasks.items()})
        actor_class = self._actor_class(ray)
        num_threads = max(1, int(self.options.num_cpus_per_worker))
        # Ray Client (ray://) has no streaming actor methods: there a group's units come back together
        streaming = not _client_mode()
        pending: collections.deque[_Job] = collections.deque(_Job(g) for g in groups)
        slots = [_Slot() for _ in range(self._n_workers(ray, len(groups)))]
        waiting: dict[Any, tuple[str, int]] = {}  # object ref or stream -> (what, slot index)
        self.workers = []

        def spawn(index: int) -> None:
            slot = slots[index]
            slot.actor = actor_class.remote(study_ref, tasks_ref, batch_size=self.options.batch_size,
                                            allow_tf32=self.options.allow_tf32, num_threads=num_threads,
                                            hook=self._hook)
            slot.ready, slot.job, slot.models = False, None, set()
            waiting[slot.actor.environment.remote()] = ("ready", index)

        def dispatch() -> None:
            for index, slot in enumerate(slots):
                if not pending:
                    return
                if not slot.ready or slot.job is not None:
                    continue
                job = next((j for j in pending if j.group.model in slot.models), pending[0])
                pending.remove(job)
                slot.job = job
                live = sorted({j.group.model for j in pending} | {s.job.group.model for s in slots if s.job})
                todo = [_unit_to_dict(u) for u in job.group.units if u.key not in job.done]
                if streaming:
                    call = slot.actor.run_group.options(num_returns="streaming").remote(job.group.model, todo, live)
                else:
                    call = slot.actor.run_group_at_once.remote(job.group.model, todo, live)
                slot.models = (slot.models & set(live)) | {job.group.model}
                waiting[call] = ("stream" if streaming else "batch", index)

        def lost(index: int, error: BaseException) -> None:
            slot = slots[index]
            job = slot.job
            try:
                ray.kill(slot.actor)
            except Exception:  # already gone
                pass
            if job is not None:
                if job.attempt >= self.options.max_retries:
                    raise RayExecutorError(
                        f"work group ({_describe(job.group)}) lost its worker {job.attempt + 1} time(s) "
                        f"(max_retries={self.options.max_retries}); last error: {_first_line(error)}. "
                        "Every unit that came back before (of this group and of the others) is stored; "
                        "rerun the same command to resume."
                    ) from error
                remaining = tuple(u for u in job.group.units if u.key not in job.done)
                pending.appendleft(_Job(dataclasses.replace(job.group, units=remaining), job.attempt + 1))
            spawn(index)

        try:
            for index in range(len(slots)):
                spawn(index)
            while pending or any(s.job is not None for s in slots):
                dispatch()
                [ref], _ = ray.wait(list(waiting), num_returns=1)
                what, index = waiting.pop(ref)
                slot = slots[index]
                if what == "ready":
                    try:
                        info = ray.get(ref)
                    except retryable as error:
                        raise RayExecutorError(
                            f"a Ray worker could not start: {_first_line(error)}. Is hyptest (same version) "
                            "installed on every node, with the study's models and extras?"
                        ) from error
                    _check_environment(expected, info)
                    slot.ready, slot.info = True, info
                    self.workers.append({"host": info["host"], "pid": info["pid"]})
                    continue
                try:
                    items = [ray.get(next(ref))] if what == "stream" else ray.get(ref)
                except StopIteration:
                    slot.job = None
                    continue
                except retryable as error:
                    lost(index, error)
                    continue
                if what == "stream":
                    waiting[ref] = ("stream", index)
                job = slot.job  # a call only exists while its slot has a job
                for item in items:
                    if "load_seconds" in item:
                        self.load_seconds += float(item["load_seconds"])
                        continue
                    unit = job.units_by_key[item["key"]]
                    on_unit(unit, pd.read_parquet(io.BytesIO(item["parquet"])))
                    job.done.add(unit.key)
                if what == "batch":
                    slot.job = None
        finally:
            for slot in slots:
                if slot.actor is not None:
                    try:
                        ray.kill(slot.actor)
                    except Exception:  # already gone
                        pass


def _client_mode() -> bool:
    """Whether this driver talks to the cluster through Ray Client (``ray://``)."""
    try:
        from ray.util.client import ray as client
    except ImportError:  # pragma: no cover - Ray without its client module
        return False
    return bool(client.is_connected())


def _retryable_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Errors that mean the worker (not the work) failed."""
    exc = ray.exceptions
    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
             "OutOfMemoryError")
    return tuple(getattr(exc, n) for n in names if hasattr(exc, n))


def _check_environment(expected: dict[str, Any], got: dict[str, Any]) -> None:
    where = f"the Ray worker on {got.get('host')} (pid {got.get('pid')})"
    for name, version in expected["versions"].items():
        if got["versions"].get(name) != version:
            raise RayExecutorError(
                f"{where} has {name} {got['versions'].get(name)}, but the driver has {version}; unit keys "
                f"record the driver's versions, so install the same {name} on every node"
            )
    if "error" in got:
        raise RayExecutorError(f"{where} cannot read the study and its tasks: {got['error']}")
    if got["device"] != expected["device"]:
        raise RayExecutorError(
            f"{where} would run the models on {got['device']!r}, but the unit keys were planned on the driver "
            f"for {expected['device']!r}; set each model's `device` in the study file to what the workers "
            "have (and plan on a node that has it too), or give the workers the driver's device"
        )
    if got["tasks"] != expected["tasks"]:
        raise RayExecutorError(f"{where} rebuilt the tasks with different content hashes; this is a bug in hyptest")


def _first_line(error: BaseException) -> str:
    """The error's type, first line and, for a multi-line error (a remote traceback), its last line."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return f"{type(error).__name__}: {text}"


def make_executor(
    name: str,
    *,
    address: str | None = None,
    num_workers: int | None = None,
    **ray_options: Any,
) -> Executor:
    """Build the executor called ``name``: ``"local"`` or ``"ray"``.

    Parameters
    ----------
    name : {"local", "ray"}
        Who runs the work groups.
    address : str, optional
        Ray cluster address (``"auto"``, ``"HEAD:6379"``, ``"ray://HEAD:10001"``); ray only.
    num_workers : int, optional
        Number of Ray actors (default: what the cluster holds); ray only.
    **ray_options
        Other :class:`RayExecutor` keywords (``num_cpus_per_worker``,
        ``num_gpus_per_worker``, ``memory_per_worker``, ``max_retries``, ...); ray only.
        Options left at None are not passed on.

    Returns
    -------
    Executor

    Raises
    ------
    ValueError
        For an unknown name, or Ray options given with the local executor.
    ImportError
        For ``"ray"`` without Ray installed (the message says ``pip install "hyptest[ray]"``).

    Examples
    --------
    >>> make_executor("local")  # doctest: +ELLIPSIS
    <hyptest.collect.executors.LocalExecutor object at ...>
    """
    if not isinstance(name, str) or name not in EXECUTORS:
        close = difflib.get_close_matches(str(name), EXECUTORS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"`executor` must be one of {', '.join(map(repr, EXECUTORS))}, got {name!r}.{hint}")
    given = {"address": address, "num_workers": num_workers, **ray_options}
    given = {key: value for key, value in given.items() if value is not None}
    if name == "local":
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise ValueError(
                f"{', '.join(f'`{key}`' for key in given)} only {verb} to the ray executor, but `executor` is 'local'"
            )
        return LocalExecutor()
    return RayExecutor(**given)
