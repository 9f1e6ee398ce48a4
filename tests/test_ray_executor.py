"""The Ray executor on a local 2-CPU Ray cluster: same units as the local executor, worker crashes.

The reference for every Ray result is an uninterrupted run of the same study with the local
executor (``LocalExecutor``, one torch thread): unit files must be identical, unit for unit.
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from hyptest.collect.executors import LocalExecutor, group_units
from hyptest.workflows.study import load_tasks, plan_study, run_study
from hyptest.study import load_study

from .conftest import TINY_STUDY

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed (pip install "hyptest[ray]")')


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    # tests.* must be importable in the workers for the crash hooks below: ship this module by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_tiny")
    path = folder / "tiny.yaml"
    path.write_text(TINY_STUDY)
    study, text = load_study(path)
    return folder, study, text


@pytest.fixture(scope="module")
def local_run(tiny):
    folder, study, text = tiny
    run_study(study, text, out_dir=folder / "local", threads=1, executor=LocalExecutor())
    return folder / "local"


def _units(path: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted((path / "units").glob("*.parquet"))}


def _assert_same_run(a: Path, b: Path) -> None:
    ua, ub = _units(a), _units(b)
    assert ua.keys() == ub.keys() and len(ua) == 2 * 6 * 4
    for key in ua:
        pd.testing.assert_frame_equal(ua[key], ub[key], check_exact=True)
    ra = json.loads((a / "results.json").read_text())
    rb = json.loads((b / "results.json").read_text())
    for section in ("comparisons", "order_sensitivity", "accuracy", "agreement", "margins"):
        assert ra[section] == rb[section], section


def _log(log: str, text: str) -> None:
    with open(log, "a") as handle:
        handle.write(f"{text} {os.getpid()}\n")


def _crash_once(marker: str, log: str, event: dict) -> None:
    """Log every unit; kill the worker after the third unit of (sgd, demo set 1), the first time only."""
    if event["event"] != "unit":
        return
    unit, index = event["unit"], event["index"]
    _log(log, f"{unit['key']} {unit['method']} {unit['demo_set']} {index}")
    if unit["method"] == "sgd" and unit["demo_set"] == 1 and index == 2 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)


def _crash_at_start(log: str, event: dict) -> None:
    """Kill the worker whenever a group starts (before it loads the model)."""
    _log(log, f"{event['event']} {len(event['units'])}")
    os._exit(1)


def _read_log(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()]


@needs_ray
def test_ray_run_matches_local_unit_for_unit(ray_cluster, tiny, local_run):
    from hyptest.collect.ray_executor import RayExecutor

    folder, study, text = tiny
    seen: list[int] = []
    executor = RayExecutor(num_workers=2)
    summary = run_study(study, text, out_dir=folder / "ray", threads=1, executor=executor,
                        progress=lambda done, total, _: seen.append(done))
    assert summary.n_units == 48 and summary.n_reused == 0
    _assert_same_run(local_run, folder / "ray")
    # both actors did work, each loaded the model once, and progress moved one unit at a time
    assert len({w["pid"] for w in executor.workers}) == 2
    assert executor.load_seconds > 0
    assert seen == list(range(49))
    assert not list((folder / "ray" / "units").glob(".tmp-*"))


@needs_ray
def test_worker_killed_mid_group_is_retried_and_results_are_identical(ray_cluster, tiny, local_run, tmp_path):
    from hyptest.collect.ray_executor import RayExecutor

    _, study, text = tiny
    marker, log = tmp_path / "crashed", tmp_path / "calls.log"
    executor = RayExecutor(num_workers=2, max_retries=1)
    executor._hook = lambda event: _crash_once(str(marker), str(log), event)
    summary = run_study(study, text, out_dir=tmp_path / "out", threads=1, executor=executor)
    assert marker.exists(), "the hook must have killed a worker"
    assert summary.n_units == 48
    _assert_same_run(local_run, tmp_path / "out")
    calls = [(k, m, int(s), int(i), int(p)) for k, m, s, i, p in _read_log(log)]
    crashed = [c for c in calls if c[1] == "sgd" and c[2] == 1]
    crash_pid = next(p for _, _, _, i, p in crashed if i == 2)
    # the two units streamed back before the crash were kept, not recomputed;
    # the unit in flight and the rest of the group ran once more, on a fresh actor
    first_two = {k for k, _, _, i, p in crashed if p == crash_pid and i < 2}
    assert len(first_two) == 2
    assert all(sum(c[0] == k for c in calls) == 1 for k in first_two)
    retried = [c for c in crashed if c[4] != crash_pid]
    assert len(retried) == 4 and {c[3] for c in retried} == {0, 1, 2, 3}
    # every unit was computed once, except the one in flight when the worker died
    counts = collections.Counter(c[0] for c in calls)
    in_flight = next(k for k, _, _, i, p in crashed if p == crash_pid and i == 2)
    assert len(counts) == 48 and counts.pop(in_flight) == 2 and set(counts.values()) == {1}


@needs_ray
def test_retries_are_bounded_and_finished_units_are_kept(ray_cluster, tiny, tmp_path):
    from hyptest.collect.ray_executor import RayExecutor, RayExecutorError

    folder, study, _ = tiny
    tasks = load_tasks(study, base_dir=folder)
    units, _ = plan_study(study, tasks)
    group = group_units(units)[0]
    log = tmp_path / "calls.log"
    executor = RayExecutor(num_workers=1, max_retries=1)
    executor._hook = lambda event: _crash_at_start(str(log), event)
    stored = []
    with pytest.raises(RayExecutorError, match=r"lost its worker 2 time\(s\).*rerun the same command to resume"):
        executor.run([group], study=study, tasks=tasks, on_unit=lambda unit, rows: stored.append(unit))
    assert stored == []
    calls = _read_log(log)
    # one try per attempt (1 + max_retries), each on its own actor, each with the whole group
    assert len(calls) == 2 and len({c[2] for c in calls}) == 2
    assert all(c[:2] == ["group", str(len(group.units))] for c in calls)


@needs_ray
def test_workers_that_differ_from_the_driver_stop_the_run(ray_cluster, tiny, monkeypatch):
    import types

    import hyptest.collect.ray_executor as rx

    folder, study, _ = tiny
    tasks = load_tasks(study, base_dir=folder)
    units, _ = plan_study(study, tasks)
    groups = group_units(units)[:1]
    stored = []
    # a worker whose hyptest cannot read this study (as an older hyptest would not)
    foreign = types.SimpleNamespace(models=study.models, model_dump=lambda mode: {"name": "x", "bogus": 1})
    with pytest.raises(rx.RayExecutorError, match=r"cannot read the study and its tasks: ValidationError"):
        rx.RayExecutor(num_workers=1).run(groups, study=foreign, tasks=tasks, on_unit=lambda u, r: stored.append(u))
    # the driver's versions (which the unit keys record) differ from the worker's
    real = rx._versions()
    monkeypatch.setattr(rx, "_versions", lambda: {**real, "torch": "0.0.1"})
    with pytest.raises(rx.RayExecutorError, match=re.escape(f"has torch {real['torch']}, but the driver has 0.0.1")):
        rx.RayExecutor(num_workers=1).run(groups, study=study, tasks=tasks, on_unit=lambda u, r: stored.append(u))
    assert stored == []


@needs_ray
def test_impossible_resource_request_is_a_clear_error(ray_cluster, tiny):
    from hyptest.collect.ray_executor import RayExecutor, RayExecutorError

    folder, study, _ = tiny
    tasks = load_tasks(study, base_dir=folder)
    units, _ = plan_study(study, tasks)
    executor = RayExecutor(num_gpus_per_worker=1)
    with pytest.raises(RayExecutorError, match=r"GPU=1.*nodes offer: CPU=2, GPU=0"):
        executor.run(group_units(units)[:1], study=study, tasks=tasks, on_unit=lambda u, r: None)


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.delitem(sys.modules, "hyptest.collect.ray_executor", raising=False)
    module = importlib.import_module("hyptest.collect.ray_executor")  # importing must not need Ray
    with pytest.raises(ImportError, match=r'pip install "hyptest\[ray\]"'):
        module.RayExecutor()
    with pytest.raises(ImportError, match=r'pip install "hyptest\[ray\]"'):
        module.make_executor("ray", address="auto")
    with pytest.raises(ValueError, match=r"`address` only applies to the ray executor"):
        module.make_executor("local", address="auto")
    assert isinstance(module.make_executor("local"), LocalExecutor)


def test_make_executor_rejects_unknown_names_and_misplaced_options():
    from hyptest.collect.ray_executor import make_executor

    with pytest.raises(ValueError, match=r"`executor` must be one of 'local', 'ray', got 'rya'. Did you mean 'ray'"):
        make_executor("rya")
    with pytest.raises(ValueError, match=r"`address`, `max_retries` only apply to the ray executor, but `executor` is 'local'"):
        make_executor("local", address="auto", max_retries=3)
    assert isinstance(make_executor("local", num_workers=None, num_gpus_per_worker=None), LocalExecutor)


@needs_ray
def test_make_executor_passes_ray_options():
    from hyptest.collect.ray_executor import RayExecutor, make_executor

    executor = make_executor("ray", address="auto", num_workers=3, num_gpus_per_worker=0.5, max_retries=None)
    assert isinstance(executor, RayExecutor)
    o = executor.options
    assert (o.address, o.num_workers, o.num_gpus_per_worker, o.max_retries) == ("auto", 3, 0.5, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_gpu'"):
        make_executor("ray", num_gpu=1)


@needs_ray
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_workers": 0}, "`num_workers` must be a positive integer"),
        ({"num_cpus_per_worker": 0}, "`num_cpus_per_worker` must be a number > 0"),
        ({"num_gpus_per_worker": -1}, "`num_gpus_per_worker` must be a number >= 0"),
        ({"memory_per_worker": 1.5}, "`memory_per_worker` must be a positive integer"),
        ({"max_retries": -1}, "`max_retries` must be an integer >= 0"),
        ({"batch_size": 0}, "`batch_size` must be a positive integer or None"),
        ({"init_kwargs": {"address": "auto"}}, "pass the cluster address as `address`"),
    ],
)
def test_arguments_are_validated(kwargs, message):
    from hyptest.collect.ray_executor import RayExecutor

    with pytest.raises(ValueError, match=message):
        RayExecutor(**kwargs)
