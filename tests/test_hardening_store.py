"""Full disks, permissions, umask, stale temp files, unit identity and hub models (issue 16, items 2, 3, 6)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hyptest import _util
from hyptest.cli import app
from hyptest.workflows.study import load_tasks, plan_study, run_study
from hyptest.store import RunDir, StoreError
from hyptest.study import StudyError, load_study, parse_study

from .conftest import MINI_STUDY as MINI



def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mini")
    path = folder / "mini.yaml"
    path.write_text(MINI)
    study, text = load_study(path)
    run_study(study, text, out_dir=folder / "run", threads=1)
    return path, folder / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


# -- item 3: every failure to write is one clear error naming the path ---------------------------


@pytest.mark.parametrize("writer", ["json", "parquet", "text", "bytes"])
def test_full_disk_in_every_writer_is_a_store_error_naming_the_file(tmp_path, monkeypatch, writer):
    run = RunDir(tmp_path)
    run.write_text("results.json", "old")
    monkeypatch.setattr(os, "write", _enospc)
    call = {"json": lambda: run.write_json("results.json", {"a": 1}),
            "parquet": lambda: run.write_parquet("results.json", pd.DataFrame({"a": [1]})),
            "text": lambda: run.write_text("results.json", "new"),
            "bytes": lambda: run.write_bytes("results.json", b"new")}[writer]
    with pytest.raises(StoreError, match=f"cannot write {tmp_path / 'results.json'}: No space left on device"):
        call()
    monkeypatch.undo()
    assert (tmp_path / "results.json").read_text() == "old"  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temp file left


def test_permission_error_names_the_file(tmp_path, monkeypatch):
    def eacces(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(_util.tempfile, "mkstemp", eacces)  # root ignores chmod, so simulate it
    with pytest.raises(StoreError, match=r"cannot write .*per_query\.parquet: Permission denied; make the folder"):
        RunDir(tmp_path).write_parquet("per_query.parquet", pd.DataFrame({"a": [1]}))


def test_bayes_netcdf_on_a_full_disk_is_a_clean_error(tmp_path, monkeypatch):
    """The posterior is serialised in memory (HDF5 never sees the disk), then written like every other file."""
    pytest.importorskip("arviz")
    from types import SimpleNamespace

    from hyptest.workflows.study import _write_bayes
    from hyptest.stats._arviz import from_draws, from_netcdf

    rng = np.random.default_rng(0)
    idata = from_draws({"sigma_order": rng.normal(size=(2, 50))})
    fits = {("tiny", "sentiment", 2): SimpleNamespace(idata=idata)}
    run = RunDir(tmp_path)
    assert _write_bayes(run, fits) == ["bayes_tiny_sentiment_N2.nc"]
    back = from_netcdf(tmp_path / "bayes_tiny_sentiment_N2.nc")
    np.testing.assert_array_equal(back.posterior["sigma_order"].values, idata.posterior["sigma_order"].values)
    monkeypatch.setattr(os, "write", _enospc)
    with pytest.raises(StoreError, match=r"cannot write .*bayes_tiny_sentiment_N2\.nc: No space left on device"):
        _write_bayes(run, fits)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bayes_tiny_sentiment_N2.nc"]


def test_full_disk_through_the_cli_exits_2_naming_the_file(tmp_path, mini_run, monkeypatch):
    path, finished = mini_run
    run = _copy(finished, tmp_path)  # every unit is reused: only the analysis writes
    from hyptest.store import run_dir

    real = run_dir.atomic_write_bytes

    def full_after_manifest(target, data):
        if Path(target).name == "manifest.json":
            return real(target, data)
        _enospc()

    monkeypatch.setattr(run_dir, "atomic_write_bytes", full_after_manifest)
    result = CliRunner().invoke(app, ["study", str(path), "--out", str(run)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"cannot write {run}/" in text and "No space left on device" in text
    assert "Traceback" not in text and not isinstance(result.exception, OSError)
    assert not (run / ".hyptest.lock").exists()  # released on the way out


def test_stale_temp_files_are_removed_at_start(tmp_path, mini_run):
    path, finished = mini_run
    run = _copy(finished, tmp_path)
    stale = [run / ".tmp-abc123", run / "units" / ".tmp-def456", run / ".bayes_tiny_sentiment_N2.nc.x1y2.tmp",
             run / ".report.html.zz.tmp"]
    for file in stale:
        file.write_bytes(b"partial")
    study, text = load_study(path)
    summary = run_study(study, text, out_dir=run, threads=1)
    assert summary.n_reused == summary.n_units == 8
    assert not any(file.exists() for file in stale)


def test_output_files_respect_the_umask(tmp_path, mini_run):
    _, run = mini_run
    expected = 0o666 & ~_util.current_umask()
    files = [run / name for name in ("manifest.json", "results.json", "report.html", "per_query.parquet")]
    files += sorted((run / "units").glob("*.parquet"))[:2]
    assert {oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {oct(expected)}
    old = os.umask(0o077)
    try:
        private = _util.atomic_write_bytes(tmp_path / "private.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    os.umask(0o002)
    try:
        shared = _util.atomic_write_bytes(tmp_path / "shared.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o664


# -- item 2: unit identity includes every name a row carries --------------------------------------


def _plan(data: dict) -> list:
    study = parse_study(data)
    units, _ = plan_study(study, load_tasks(study))
    return units


def test_same_settings_other_names_never_share_a_unit():
    base = {"name": "k", "models": [{"name": "a", "source": "tiny"}, {"name": "b", "source": "tiny"}],
            "tasks": ["sentiment"], "demos": {"n_demos": 2, "n_sets": 1, "n_orders": 2, "n_queries": 2},
            "methods": [{"kind": "icl"}, {"kind": "sgd", "name": "one", "learning_rate": 0.01},
                        {"kind": "sgd", "name": "two", "learning_rate": 0.01}]}
    units = _plan(base)
    keys = [u.key for u in units]
    assert len(set(keys)) == len(keys)  # models a/b and methods one/two: identical settings, own files
    again = {(u.model, u.method, u.order_id): u.key for u in _plan(base)}
    assert again == {(u.model, u.method, u.order_id): u.key for u in units}  # still deterministic


@pytest.mark.parametrize("change, where", [
    ({"demos": {"n_demos": [2, 2]}}, "demos.n_demos"),
    ({"methods": [{"kind": "icl"}, {"kind": "sgd", "train_seeds": [0, 1, 0]}]}, "train_seeds"),
    ({"models": [{"name": "t", "source": "tiny"}, {"name": "t", "source": "tiny"}]}, "`models` names must be unique"),
    ({"methods": [{"kind": "icl"}, {"kind": "sgd", "learning_rate": [0.01, 0.01]}]}, "learning_rate"),
])
def test_validate_rejects_duplicates_that_would_collide(change, where):
    data = {"name": "d", "models": ["tiny"], "tasks": ["sentiment"],
            "methods": [{"kind": "icl"}, {"kind": "sgd"}], **change}
    with pytest.raises(StudyError) as caught:
        parse_study(data)
    assert where in str(caught.value)
    assert "repeated" in str(caught.value) or "distinct" in str(caught.value)


# -- item 6: hub models ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["./models/mine", "/no/such/model", "~/no-such-model", "a/b/c", "org/name/",
                                  "models/missing", "has space/x"])
def test_local_looking_hf_path_that_does_not_exist_is_a_validation_error(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # "models/missing" exists partly: a mistyped local path, not a hub id
    with pytest.raises(StudyError, match=r"models\[0\].*path"):
        parse_study({"name": "h", "models": [{"name": "m", "source": "hf", "path": path}],
                     "tasks": ["sentiment"], "methods": [{"kind": "icl"}, {"kind": "zs"}]})


def test_hub_units_are_keyed_and_loaded_by_the_resolved_commit(monkeypatch, tiny_lm):
    import transformers

    from hyptest.models import hf, load_model, model_identity

    commits = {"main": "a" * 40}
    asked = []

    class FakeConfig:
        @staticmethod
        def from_pretrained(path, revision=None):
            return type("C", (), {"_commit_hash": commits[revision or "main"]})()

    class FakeModel:
        @staticmethod
        def from_pretrained(path, revision=None, dtype=None):
            asked.append(revision)
            tiny_lm.model.config._commit_hash = revision
            return tiny_lm.model

    class FakeTokenizer:
        @staticmethod
        def from_pretrained(path, revision=None):
            return tiny_lm.tokenizer

    monkeypatch.setattr(transformers, "AutoConfig", FakeConfig)
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", FakeModel)
    monkeypatch.setattr(transformers, "AutoTokenizer", FakeTokenizer)
    hf.resolve_hub_commit.cache_clear()
    data = {"name": "h", "models": [{"name": "m", "source": "hf", "path": "org/model", "device": "cpu"}],
            "tasks": ["sentiment"], "demos": {"n_demos": 2, "n_sets": 1, "n_orders": 2, "n_queries": 2},
            "methods": [{"kind": "icl"}, {"kind": "zs"}]}
    study = parse_study(data)
    assert model_identity(study.models[0])["commit"] == "a" * 40
    first = [u.key for u in _plan(data)]
    lm = load_model(study.models[0])
    assert asked == ["a" * 40] and lm.identity["commit"] == "a" * 40  # loaded at the keyed commit
    commits["main"] = "b" * 40  # the hub model changed
    hf.resolve_hub_commit.cache_clear()
    assert not set(first) & {u.key for u in _plan(data)}  # its units are collected again
    pinned = parse_study({**data, "models": [{**data["models"][0], "revision": "c" * 40}]})
    assert model_identity(pinned.models[0])["commit"] == "c" * 40  # a pinned commit needs no lookup
    hf.resolve_hub_commit.cache_clear()


def test_unresolvable_hub_revision_is_a_model_error(monkeypatch):
    import transformers

    from hyptest.models import ModelError, hf, model_identity

    class Offline:
        @staticmethod
        def from_pretrained(path, revision=None):
            raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers, "AutoConfig", Offline)
    hf.resolve_hub_commit.cache_clear()
    spec = parse_study({"name": "h", "models": [{"name": "m", "source": "hf", "path": "org/model"}],
                        "tasks": ["sentiment"], "methods": [{"kind": "icl"}, {"kind": "zs"}]}).models[0]
    with pytest.raises(ModelError, match="cannot resolve it to a commit"):
        model_identity(spec)
    hf.resolve_hub_commit.cache_clear()
