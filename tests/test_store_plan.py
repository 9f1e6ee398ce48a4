"""Atomic unit files, content-addressed keys, and the sampling plan."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from hyptest.collect.plan import make_plan, sample_demo_sets, sample_orders
from hyptest.store import RECORD_COLUMNS, RunDir, StoreError
from hyptest.study import parse_study

from .conftest import TINY_STUDY


def test_orders_are_distinct_and_start_with_identity():
    rng = np.random.default_rng(0)
    orders = sample_orders(5, 20, rng=rng)
    assert orders[0] == [0, 1, 2, 3, 4]
    assert len({tuple(o) for o in orders}) == 20
    assert all(sorted(o) == list(range(5)) for o in orders)
    everything = sample_orders(4, "all", rng=rng)
    assert len({tuple(o) for o in everything}) == math.factorial(4)


def test_demo_sets_are_disjoint_and_balanced(sentiment):
    sets = sample_demo_sets(sentiment, 4, 5, seed=0, balanced=True)
    ids = [e.id for s in sets for e in s]
    assert len(ids) == len(set(ids)) == 20
    for s in sets:
        assert sorted(e.label for e in s) == ["negative", "negative", "positive", "positive"]


def _plan(sentiment, **method_overrides):
    data = yaml.safe_load(TINY_STUDY)
    data["methods"][1].update(method_overrides)
    study = parse_study(data)
    return make_plan(study, {"sentiment": sentiment}, {"tiny": {"source": "tiny", "seed": 0}},
                     versions={"torch": "x"})


def test_keys_are_deterministic_and_sensitive(sentiment):
    a, b = _plan(sentiment), _plan(sentiment)
    assert [u.key for u in a] == [u.key for u in b]
    assert len({u.key for u in a}) == len(a) == 2 * 6 * 4
    changed = _plan(sentiment, learning_rate=0.02)
    diff = {u.key for u in changed} ^ {u.key for u in a}
    # only the gd units change when gd's learning rate changes
    assert len(diff) == 2 * 12
    assert all(u.method == "gd" for u in changed if u.key not in {v.key for v in a})


def test_unit_write_is_atomic_and_complete(tmp_path):
    run = RunDir(tmp_path)
    frame = pd.DataFrame({c: [1] for c in RECORD_COLUMNS})
    run.write_unit("abc", frame)
    assert run.has_unit("abc") and not list(tmp_path.glob("units/.tmp-*"))
    pd.testing.assert_frame_equal(run.read_units(["abc"]), frame)
    with pytest.raises(StoreError, match="missing columns"):
        run.write_unit("bad", frame.drop(columns="p_gold"))


def test_corrupt_unit_file_says_what_to_do(tmp_path):
    run = RunDir(tmp_path)
    run.units_dir.mkdir(parents=True)
    run.unit_path("k").write_bytes(b"not parquet")
    with pytest.raises(StoreError, match="delete it and rerun"):
        run.read_units(["k"])


def test_full_disk_keeps_finished_units(tmp_path, monkeypatch):
    import hyptest.store.run_dir as rd

    run = RunDir(tmp_path)
    frame = pd.DataFrame({c: [1] for c in RECORD_COLUMNS})
    run.write_unit("done", frame)

    def full(*_args, **_kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rd, "atomic_write_bytes", full)
    with pytest.raises(StoreError, match="No space left on device.*rerun the same command to resume"):
        run.write_unit("next", frame)
    assert run.has_unit("done") and not run.has_unit("next")
