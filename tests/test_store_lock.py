"""One writer per run directory: the lock, --wait, --force, and the analysis's own manifest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hyptest.cli import app
from hyptest.workflows.study import run_study
from hyptest.store import RunDir, StoreError
from hyptest.store.lock import LOCK_NAME, LockError
from hyptest.study import load_study

from .conftest import MINI_STUDY as MINI


_HOLDER = textwrap.dedent(
    """\
    import sys, time
    from hyptest.store import RunDir
    lock = RunDir(sys.argv[1]).lock().acquire()
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.release()
    """
)


def _hold(folder: Path, seconds: float = 60.0) -> subprocess.Popen:
    """A real second process that takes the run directory's lock and keeps it."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _study_file(folder: Path, text: str = MINI, name: str = "mini.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    """One finished run of the mini study (8 units), copied by the tests that change it."""
    folder = tmp_path_factory.mktemp("mini")
    path = _study_file(folder)
    study, text = load_study(path)
    run_study(study, text, out_dir=folder / "run", threads=1)
    return path, folder / "run"


def test_second_process_is_refused_with_exit_2(tmp_path, tiny_study_file):
    run = tmp_path / "run"
    holder = _hold(run)
    try:
        result = CliRunner().invoke(app, ["study", str(tiny_study_file), "--out", str(run)])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"is in use by pid {holder.pid} on host {socket.gethostname()}" in text
    assert "--wait" in text and "Traceback" not in text
    assert not (run / "manifest.json").exists()  # refused before writing anything


def test_wait_queues_behind_the_holder(tmp_path):
    run = RunDir(tmp_path / "run")
    holder = _hold(tmp_path / "run", seconds=1.5)
    told = []
    t0 = time.perf_counter()
    lock = run.lock().acquire(wait=True, poll_s=0.05, on_wait=told.append)
    waited = time.perf_counter() - t0
    holder.wait()
    try:
        assert len(told) == 1 and f"pid {holder.pid}" in told[0]
        assert waited > 0.5 and holder.returncode == 0
        assert lock.note is None  # released cleanly: nothing to take over
        assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_lock_of_a_killed_process_is_taken_over_with_a_note(tmp_path):
    holder = _hold(tmp_path / "run")
    left = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert left["pid"] == holder.pid and left["host"] == socket.gethostname() and left["started"]
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists()  # kill -9 leaves the file
    lock = RunDir(tmp_path / "run").lock().acquire()
    try:
        assert f"pid {holder.pid}" in lock.note and "no longer running" in lock.note
    finally:
        lock.release()


def test_lock_is_reentrant_in_one_process(tmp_path):
    run = RunDir(tmp_path / "run")
    outer = run.lock().acquire()
    inner = RunDir(tmp_path / "run").lock().acquire()  # analyse_run inside run_study
    inner.release()
    assert (tmp_path / "run" / LOCK_NAME).exists()
    outer.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_fsspec_lock_content_rule():
    import fsspec

    url = f"memory://locks/{os.getpid()}-{time.time_ns()}"
    run = RunDir(url)
    fs = fsspec.filesystem("memory")
    where = run._fs_path(LOCK_NAME)
    other_host = {"pid": 1, "host": "elsewhere.example", "started": "2025-01-01T00:00:00+00:00", "token": "x"}
    fs.pipe_file(where, json.dumps(other_host).encode())
    with pytest.raises(LockError, match="in use by pid 1 on host elsewhere.example"):
        run.lock().acquire()
    assert isinstance(LockError("x"), StoreError)  # the CLI's exit 2
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    fs.pipe_file(where, json.dumps({**other_host, "host": socket.gethostname(),
                                    "pid": int(dead.stdout)}).encode())
    lock = run.lock().acquire()
    assert "no longer running" in lock.note
    assert json.loads(fs.cat_file(where))["pid"] == os.getpid()
    lock.release()
    assert not fs.exists(where)


def test_analysis_uses_its_own_manifest_not_the_file(tmp_path, mini_run):
    """Another writer replacing manifest.json mid-run must not change this run's results."""
    path, _ = mini_run
    study, text = load_study(path)
    other = {"study": {**study.model_dump(mode="json"), "name": "intruder"}, "units": [], "models": {},
             "tasks": {}, "study_text": "intruder"}
    run_dir = tmp_path / "run"

    def progress(done: int, total: int, description: str) -> None:
        (run_dir / "manifest.json").write_text(json.dumps(other))

    summary = run_study(study, text, out_dir=run_dir, threads=1, progress=progress)
    assert summary.results["study"]["name"] == "mini"
    assert {r["method_b"] for r in summary.results["comparisons"]} == {"sgd"}
    assert not (run_dir / LOCK_NAME).exists()  # released at the end


def test_another_study_is_refused_then_moved_aside_with_force(tmp_path, mini_run):
    path, finished = mini_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    other = _study_file(tmp_path, MINI.replace("name: mini", "name: other"), "other.yaml")
    refused = CliRunner().invoke(app, ["study", str(other), "--out", str(run)])
    assert refused.exit_code == 2, refused.output
    text = " ".join(refused.output.split())
    assert "holds another study ('mini')" in text and "--force" in text and "Traceback" not in text
    assert json.loads((run / "manifest.json").read_text())["study"]["name"] == "mini"  # untouched

    study, text_ = load_study(other)
    summary = run_study(study, text_, out_dir=run, threads=1, force=True)
    (aside,) = [p for p in run.iterdir() if p.name.startswith("previous-")]
    assert {"manifest.json", "results.json", "report.html", "units"} <= {p.name for p in aside.iterdir()}
    assert json.loads((aside / "manifest.json").read_text())["study"]["name"] == "mini"
    assert summary.n_reused == 0  # another study: its units went aside too
    assert json.loads((run / "results.json").read_text())["study"]["name"] == "other"
    notes = summary.results["provenance"]["warnings"]
    assert any("--force" in n and str(aside) in n for n in notes)


def test_renamed_method_recomputes_cleanly(tmp_path, mini_run):
    """Renaming a method (same settings) and rerunning into the same directory: no KeyError, no stale results."""
    path, finished = mini_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    renamed = _study_file(tmp_path, MINI.replace("{kind: sgd,", "{kind: sgd, name: my_sgd,"), "renamed.yaml")
    refused = CliRunner().invoke(app, ["study", str(renamed), "--out", str(run)])
    assert refused.exit_code == 2 and "with other settings" in " ".join(refused.output.split())
    study, text = load_study(renamed)
    summary = run_study(study, text, out_dir=run, threads=1, force=True)
    assert summary.n_reused == 4  # ICL's units are the same; my_sgd is new (its rows carry its name)
    results = json.loads((run / "results.json").read_text())
    assert {r["method_b"] for r in results["comparisons"]} == {"my_sgd"}
    assert results["study"]["methods"] == ["icl", "my_sgd"]
    (aside,) = [p for p in run.iterdir() if p.name.startswith("previous-")]
    assert (aside / "results.json").exists() and not (aside / "units").exists()  # same name: units stay
