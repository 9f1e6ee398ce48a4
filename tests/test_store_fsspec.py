"""RunDir on fsspec URLs: memory:// round trips, file:// end to end, temporary names never read."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest

from hyptest.collect.executors import LocalExecutor, group_units
from hyptest.workflows.study import load_tasks, plan_study, run_study
from hyptest.store import RECORD_COLUMNS, RunDir, StoreError
from hyptest.study import load_study

from .conftest import TINY_STUDY

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def memory_run():
    url = f"memory://hyptest-tests/{uuid.uuid4().hex}"
    run = RunDir(url)
    yield run
    run.fs.rm(run._root, recursive=True)


def _frame(value: float) -> pd.DataFrame:
    frame = pd.DataFrame({c: [1, 2] for c in RECORD_COLUMNS})
    frame["order"] = [["d1", "d2"], ["d2", "d1"]]
    frame["p_gold"] = [value, 1 - value]
    return frame


def test_memory_units_round_trip(memory_run):
    run = memory_run
    assert not run.is_local and run.path.startswith("memory://")
    assert run.unit_path("abc") == f"{run.path}/units/abc.parquet"
    assert not run.has_unit("abc")
    run.write_unit("abc", _frame(0.25))
    run.write_unit("def", _frame(0.75))
    assert run.has_unit("abc") and run.has_unit("def")
    got = run.read_units(["abc", "def"])
    want = pd.concat([_frame(0.25), _frame(0.75)], ignore_index=True)
    assert list(got.columns) == list(RECORD_COLUMNS)
    np.testing.assert_array_equal(got["p_gold"].to_numpy(), [0.25, 0.75, 0.75, 0.25])
    assert [list(o) for o in got["order"]] == [list(o) for o in want["order"]]
    # no temporary file is left behind, and only final names are in the folder
    assert sorted(p.rsplit("/", 1)[1] for p in run.fs.ls(f"{run._root}/units", detail=False)) == [
        "abc.parquet", "def.parquet"]
    with pytest.raises(StoreError, match="missing columns"):
        run.write_unit("bad", _frame(0.5).drop(columns="p_gold"))
    with pytest.raises(StoreError, match="unit nope is missing"):
        run.read_units(["nope"])


def test_memory_json_parquet_and_text_round_trip(memory_run):
    run = memory_run
    run.write_json("results.json", {"a": 1, "nan": float("nan"), "x": np.float64(0.5)})
    assert run.read_json("results.json") == {"a": 1, "nan": None, "x": 0.5}
    run.write_json("results.json", {"a": 2})  # overwriting replaces the whole object
    assert run.read_json("results.json") == {"a": 2} and run.exists("results.json")
    frame = pd.DataFrame({"q": ["a", "b"], "sd": [0.1, 0.2]})
    run.write_parquet("per_query.parquet", frame)
    pd.testing.assert_frame_equal(run.read_parquet("per_query.parquet"), frame, check_exact=True)
    run.write_text("report.html", "<html>ü</html>")
    assert run.fs.cat_file(f"{run._root}/report.html").decode("utf-8") == "<html>ü</html>"
    run.write_bytes("posterior.nc", b"\x89HDF\r\n")
    assert run.fs.cat_file(f"{run._root}/posterior.nc") == b"\x89HDF\r\n"
    with pytest.raises(StoreError, match="does not exist"):
        run.read_json("manifest.json")
    with pytest.raises(StoreError, match="is missing"):
        run.read_parquet("nothing.parquet")
    run.fs.pipe_file(f"{run._root}/broken.json", b"{not json")
    with pytest.raises(StoreError, match="is not valid JSON"):
        run.read_json("broken.json")


def test_failed_write_leaves_no_unit_and_no_temp_file(memory_run, monkeypatch):
    run = memory_run
    run.write_unit("done", _frame(0.5))

    def broken_mv(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run.fs, "mv", broken_mv)
    with pytest.raises(StoreError, match="No space left on device.*rerun the same command to resume"):
        run.write_unit("next", _frame(0.5))
    assert run.has_unit("done") and not run.has_unit("next")
    assert [p.rsplit("/", 1)[1] for p in run.fs.ls(f"{run._root}/units", detail=False)] == ["done.parquet"]


def test_urls_and_paths():
    assert RunDir("file:///tmp/hyptest-x").path.as_posix() == "/tmp/hyptest-x"
    assert RunDir("file:///tmp/hyptest-x").is_local
    with pytest.raises(StoreError, match="Protocol not known: nope"):
        RunDir("nope://bucket/run")
    with pytest.raises(StoreError, match="`storage_options` apply to fsspec URLs only"):
        RunDir("/tmp/x", storage_options={"anon": True})


def test_tiny_study_into_file_url_and_memory_store(tmp_path):
    """End to end into a ``file://`` URL; one work group collected straight into ``memory://``."""
    study_file = tmp_path / "tiny.yaml"
    study_file.write_text(TINY_STUDY)
    study, text = load_study(study_file)
    summary = run_study(study, text, out_dir=(tmp_path / "out").as_uri(), threads=1)
    assert summary.n_units == 48
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["comparisons"] == summary.results["comparisons"]
    assert len(list((tmp_path / "out" / "units").glob("*.parquet"))) == 48

    tasks = load_tasks(study, base_dir=tmp_path)
    units, _ = plan_study(study, tasks)
    group = group_units(units)[0]
    memory = RunDir(f"memory://hyptest-tests/{uuid.uuid4().hex}")
    try:
        LocalExecutor().run([group], study=study, tasks=tasks,
                            on_unit=lambda unit, rows: memory.write_unit(unit.key, rows))
        local = RunDir(tmp_path / "out")
        for unit in group.units:
            pd.testing.assert_frame_equal(memory.read_units([unit.key]), local.read_units([unit.key]),
                                          check_exact=True)
    finally:
        memory.fs.rm(memory._root, recursive=True)
