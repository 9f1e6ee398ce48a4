"""The fast paths of the reanalysis (issue 17, item 5) give the numbers of the plain code, bit for bit.

Each vectorised or chunked function is checked against a reference written
plainly here (a loop per group, the resampled data built by repetition), and
a whole reanalysis of a file from ``benchmarks/bench_reanalyse.py`` is run
twice, with the fast paths and with them replaced by the plain ones: its
comparisons, tables and report must be identical.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyptest.metrics import order_sensitivity
from hyptest.metrics.rows import stack_rows
from hyptest.stats import order_resampling
from hyptest.stats.order_resampling import alignment_draws, order_sd_draws

from ._benchmarks import load_benchmark

_os_module = importlib.import_module("hyptest.metrics.order_sensitivity")


# ---------------------------------------------------------------------------
# stack_rows
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cells, dtype", [
    ([np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 6.0])], None),
    ([[1, 2, 3], [4, 5, 6]], None),  # lists of ints stay int64
    ([[1, 2, 3], [4, 5, 6]], float),
    ([np.array([], dtype=np.int64), np.array([], dtype=np.int64)], None),  # width 0
    ([np.array([0.25]), np.array([0.5])], float),
    ([np.zeros((2, 2)), np.ones((2, 2))], None),  # 2-D cells: np.stack's own path
    ([1.0, 2.0], None),  # scalars: np.stack's own path
])
def test_stack_rows_equals_numpy_stack(cells, dtype):
    expected = np.stack([np.asarray(c, dtype=dtype) for c in cells])
    got = stack_rows(cells, dtype=dtype)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_stack_rows_refuses_what_numpy_stack_refuses():
    with pytest.raises(ValueError):
        stack_rows([np.array([1.0, 2.0]), np.array([1.0])])
    with pytest.raises(ValueError):
        stack_rows([])


# ---------------------------------------------------------------------------
# order_sensitivity: blocks of groups against one group at a time
# ---------------------------------------------------------------------------


def _records(seed: int = 0) -> pd.DataFrame:
    """Two tasks (2 and 3 labels), ICL and SGD with 2 seeds, unequal orders per set, one single-order set."""
    rng = np.random.default_rng(seed)
    rows = []
    for task, n_labels in (("bin", 2), ("tri", 3)):
        for method, kind, seeds in (("icl", "icl", (0,)), ("sgd", "sgd", (0, 1))):
            for seed_ in seeds:
                for demo_set, n_orders in ((0, 5), (1, 3), (2, 1)):
                    for order_id in range(n_orders):
                        for q in range(4):
                            probs = rng.dirichlet(np.ones(n_labels))
                            gold = int(rng.integers(n_labels))
                            rows.append({"model": "m", "task": task, "n_demos": 3, "method": method,
                                         "method_kind": kind, "demo_set": demo_set, "query_id": f"{task}-{q}",
                                         "seed": seed_, "order_id": order_id, "p_gold": float(probs[gold]),
                                         "label_probs": probs})
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows in no particular order


def _naive_per_seed(records: pd.DataFrame) -> dict[tuple, tuple[float, float, float, int, int]]:
    """One (unit, seed) at a time, rows in file order: sd of P(gold), mean per-label sd, largest range."""
    out = {}
    keys = ["model", "task", "n_demos", "method", "method_kind", "demo_set", "query_id", "seed"]
    for key, group in records.groupby(keys, sort=True):
        p = np.array(list(group["p_gold"]), dtype=float)
        probs = np.array([list(v) for v in group["label_probs"]], dtype=float)
        if len(p) < 2:
            sd_gold = sd_labels = float("nan")
        else:
            sd_gold = float(np.std(p, ddof=1))
            sd_labels = float(np.mean(np.std(probs, axis=0, ddof=1)))
        spread = max(float(probs[:, j].max() - probs[:, j].min()) for j in range(probs.shape[1]))
        out[key] = (sd_gold, sd_labels, spread, len(p), probs.shape[1])
    return out


def test_order_sensitivity_blocks_equal_a_plain_loop_bit_for_bit():
    records = _records()
    per_seed = _os_module._per_seed_vectorised(records)
    assert per_seed is not None
    naive = _naive_per_seed(records)
    keys = ["model", "task", "n_demos", "method", "method_kind", "demo_set", "query_id", "seed"]
    assert [tuple(k) for k in per_seed[keys].itertuples(index=False)] == list(naive)  # groupby's order
    for row, expected in zip(per_seed.itertuples(index=False), naive.values()):
        got = (row.sd_gold, row.sd_labels, row.spread, row.n_orders, row.n_labels)
        assert got[3:] == expected[3:]
        for g, e in zip(got[:3], expected[:3]):
            assert (np.isnan(g) and np.isnan(e)) or g == e  # the same floats, not merely close
    # and with statistics.stdev as an outside check of what is computed
    import statistics

    one = records[(records["task"] == "tri") & (records["method"] == "sgd") & (records["seed"] == 1)
                  & (records["demo_set"] == 0) & (records["query_id"] == "tri-2")]
    row = per_seed[(per_seed["task"] == "tri") & (per_seed["method"] == "sgd") & (per_seed["seed"] == 1)
                   & (per_seed["demo_set"] == 0) & (per_seed["query_id"] == "tri-2")].iloc[0]
    assert row["sd_gold"] == pytest.approx(statistics.stdev(one["p_gold"]), rel=1e-12)


def test_order_sensitivity_public_result_is_the_loops():
    records = _records(3)
    pd.testing.assert_frame_equal(_os_module._per_seed_vectorised(records), _os_module._per_seed_loop(records),
                                  check_exact=True)
    assert len(order_sensitivity(records)) == records.groupby(["task", "method", "demo_set", "query_id"]).ngroups


def test_order_sensitivity_duplicate_orders_still_raise():
    records = _records()
    with pytest.raises(ValueError, match="duplicate orders"):
        order_sensitivity(pd.concat([records, records.iloc[:1]], ignore_index=True))


def test_order_cube_equals_a_cube_filled_cell_by_cell():
    from hyptest.analysis.cubes import order_cube

    records = _records(5)
    records = records[records["task"] == "tri"]
    for column in ("p_gold", "label_probs"):
        cube, mask, sets, orders = order_cube(records, "sgd", column)
        rows = records[records["method"] == "sgd"]
        plain_sets = sorted(set(rows["demo_set"]))
        set_orders = {s: sorted(set(rows.loc[rows["demo_set"] == s, "order_id"])) for s in plain_sets}
        set_queries = {s: sorted(set(rows.loc[rows["demo_set"] == s, "query_id"])) for s in plain_sets}
        width = 1 if column == "p_gold" else 3
        expected = np.full((len(plain_sets), max(map(len, set_orders.values())),
                            max(map(len, set_queries.values())), width), np.nan)
        expected_mask = np.zeros(expected.shape[::2][:1] + expected.shape[2:3], dtype=bool)
        for i, s in enumerate(plain_sets):
            for j, o in enumerate(set_orders[s]):
                for k, q in enumerate(set_queries[s]):
                    cell = rows[(rows["demo_set"] == s) & (rows["order_id"] == o) & (rows["query_id"] == q)]
                    if len(cell):
                        values = np.array([np.atleast_1d(v) for v in cell[column]], dtype=float)
                        expected[i, j, k] = values.mean(axis=0)
                        expected_mask[i, k] = True
        expected[~np.broadcast_to(expected_mask[:, None, :, None], expected.shape)] = 0.0
        assert sets == plain_sets
        assert orders == [(s, o) for s in plain_sets for o in set_orders[s]]
        np.testing.assert_array_equal(mask, expected_mask)
        np.testing.assert_allclose(cube, expected, rtol=1e-15, atol=0)


# ---------------------------------------------------------------------------
# resampling in chunks: the same draws, and the draws are what they claim to be
# ---------------------------------------------------------------------------


def _cubes(shape, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape)
    b = 0.5 * rng.normal(size=shape)
    mask = rng.random((shape[0], shape[2])) < 0.8
    mask[:, 0] = True
    return a, b, mask


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunked_resampling_gives_the_same_draws(monkeypatch, chunk):
    a, b, mask = _cubes((3, 5, 11, 2))
    a3, b3, _ = _cubes((3, 5, 11), seed=1)
    monkeypatch.setattr(order_resampling, "_CHUNK", 4096)  # one chunk per block: the unchunked computation
    whole = [order_sd_draws(a, b, statistic=s, n_resamples=4100, rng=np.random.default_rng(5), mask=mask)
             for s in ("log_mean_sd_ratio", "mean_log_var_ratio", "mean_sd_difference")]
    whole.append(alignment_draws(a3, b3, n_resamples=4100, rng=np.random.default_rng(6), mask=mask))
    monkeypatch.setattr(order_resampling, "_CHUNK", chunk)
    chunked = [order_sd_draws(a, b, statistic=s, n_resamples=4100, rng=np.random.default_rng(5), mask=mask)
               for s in ("log_mean_sd_ratio", "mean_log_var_ratio", "mean_sd_difference")]
    chunked.append(alignment_draws(a3, b3, n_resamples=4100, rng=np.random.default_rng(6), mask=mask))
    for x, y in zip(whole, chunked):
        np.testing.assert_array_equal(x, y)


def test_resampled_statistic_equals_the_resampled_data_built_by_hand():
    """Draw 1: the orders and queries it picks, repeated as rows, then the plain statistic on them."""
    a, b, mask = _cubes((2, 4, 6))
    draws = order_sd_draws(a, b, statistic="log_mean_sd_ratio", n_resamples=3, rng=np.random.default_rng(8),
                           mask=mask)
    rng = np.random.default_rng(8)  # the documented order of the draws: orders of every set, then queries per set
    n_sets, n_orders, _ = a.shape
    size = 3
    picks_o = rng.integers(0, n_orders, size=(size * n_sets, n_orders)).reshape(size, n_sets, n_orders)
    picks_q = [rng.integers(0, int(mask[s].sum()), size=(size, int(mask[s].sum()))) for s in range(n_sets)]
    for d in range(size):
        sums = {"a": 0.0, "b": 0.0}
        for s in range(n_sets):
            queries = np.flatnonzero(mask[s])[picks_q[s][d]]
            for q in queries:
                for name, cube in (("a", a), ("b", b)):
                    values = cube[s, picks_o[d, s], q]
                    sd = float(np.std(values, ddof=1))
                    sums[name] += 0.0 if sd <= order_resampling.ZERO_TOL else sd
        assert draws[d] == pytest.approx(np.log(sums["a"] / sums["b"]), rel=1e-9)


@pytest.mark.parametrize("statistic, method", [("mean", "percentile"), ("median", "percentile"), ("mean", "bca")])
def test_bootstrap_ci_in_blocks_equals_one_block(statistic, method):
    from hyptest.stats import bootstrap

    x = np.random.default_rng(0).exponential(size=3000)
    default = bootstrap.bootstrap_ci(x, statistic=statistic, method=method, n_resamples=999, rng=4)
    one = bootstrap.bootstrap_ci(x, statistic=statistic, method=method, n_resamples=999, batch=999, rng=4)
    assert 999 > bootstrap._BLOCK_ELEMENTS // x.size  # the default really uses several blocks
    np.testing.assert_array_equal(default.bootstrap_distribution, one.bootstrap_distribution)
    assert (default.ci_low, default.ci_high) == (one.ci_low, one.ci_high)
    # what the draws are: n indices with replacement per resample, from the seeded generator
    idx = np.random.default_rng(4).integers(0, x.size, size=(999, x.size))
    plain = x[idx].mean(axis=1) if statistic == "mean" else np.median(x[idx], axis=1)
    np.testing.assert_allclose(default.bootstrap_distribution, plain, rtol=1e-12)


# ---------------------------------------------------------------------------
# a whole reanalysis: fast paths against the plain ones
# ---------------------------------------------------------------------------


def _plain_paths(monkeypatch) -> None:
    """Replace the fast paths of the first pass of this issue with the plain code they replaced.

    ``agreement.stack_rows`` now serves only agreement's fallback for ragged cells; its fast path
    (``RowLists``) and the vocabulary and sweep shortcuts are checked against their plain code in
    ``tests/test_reanalyse_speed_report.py``.
    """
    from hyptest.analysis import cubes, descriptive
    from hyptest.metrics import agreement

    def np_stack(cells, dtype=None):
        return np.stack([np.asarray(c, dtype=dtype) for c in cells])

    monkeypatch.setattr(_os_module, "_per_seed_vectorised", lambda records: None)
    for module in (_os_module, agreement, descriptive, cubes):
        monkeypatch.setattr(module, "stack_rows", np_stack)
    monkeypatch.setattr(order_resampling, "_CHUNK", order_resampling._BLOCK)


def _outputs(folder: Path) -> tuple[dict, dict[str, pd.DataFrame], str]:
    results = json.loads((folder / "results.json").read_text())
    for key in ("provenance", "import"):
        results.pop(key)
    tables = {p.name: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}
    report = (folder / "report.html").read_text()
    report = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^\"<\s]*", "TIME", report)
    report = re.sub(r'<td class="num">[0-9.]+ s</td>', "SECONDS", report)
    report = report.replace(str(folder), "RUN")
    return results, tables, report


def test_reanalysis_is_identical_with_the_plain_paths(tmp_path, monkeypatch):
    from hyptest.workflows.reanalyse import reanalyse

    bench = load_benchmark("bench_reanalyse")
    data = tmp_path / "long.csv"
    bench.synthesise(data, 0.6)
    overrides = {"analysis": {"bayes": False, "n_resamples": 2000}}
    reanalyse(data, out_dir=tmp_path / "fast", study_overrides=overrides)
    with monkeypatch.context() as m:
        _plain_paths(m)
        reanalyse(data, out_dir=tmp_path / "plain", study_overrides=overrides)
    fast, plain = _outputs(tmp_path / "fast"), _outputs(tmp_path / "plain")
    assert fast[0]["comparisons"] == plain[0]["comparisons"]
    assert fast[0] == plain[0]
    assert fast[1].keys() == plain[1].keys()
    for name in fast[1]:
        pd.testing.assert_frame_equal(fast[1][name], plain[1][name], check_exact=True)
    assert fast[2].replace(str(tmp_path / "fast"), "RUN") == plain[2].replace(str(tmp_path / "plain"), "RUN")


# ---------------------------------------------------------------------------
# the analysis takes the imported records from memory instead of reading the unit files back
# ---------------------------------------------------------------------------


def _bench_module():
    bench = load_benchmark("bench_reanalyse")
    return bench


def _cell_kinds(column: pd.Series) -> set:
    return {(type(v).__name__, getattr(v, "dtype", None), getattr(v, "shape", None)) for v in column}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_analysed_rows_are_what_read_units_reads_back(tmp_path, suffix):
    """Earlier steps (trajectory units), rows in no particular order, two tasks: the frame handed to the
    analysis equals the unit files read back (values, dtypes, cell types, row order, index), less the columns
    no analysis reads."""
    from hyptest.importers import read_long
    from hyptest.store import RunDir
    from hyptest.workflows import reanalyse as module

    from .test_reanalyse import synthetic_rows

    rows = synthetic_rows(steps=(1, 2)) + [{**r, "task": "t2", "query_id": r["query_id"] + "b"}
                                           for r in synthetic_rows(steps=(3,), seed=1)]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    frame = pd.DataFrame(rows)
    path = tmp_path / f"log{suffix}"
    if suffix == ".csv":
        for column in ("topk_ids", "topk_probs"):
            frame[column] = frame[column].map(json.dumps)
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        frame.to_parquet(path, index=False)
    out = module.reanalyse(path, out_dir=tmp_path / "out", study_overrides={"analysis": {"bayes": False,
                                                                                          "n_resamples": 1000}})
    run = RunDir(out)
    manifest = run.read_json("manifest.json")
    assert manifest["trajectory_units"] and manifest["units"]
    imported = read_long(path, as_table=True)
    got = module._analysed_rows(imported.records, manifest["units"])
    expected = run.read_units(u["key"] for u in manifest["units"]).drop(columns=list(module._NOT_ANALYSED))
    assert list(got.columns) == list(expected.columns)
    assert [repr(t) for t in got.dtypes] == [repr(t) for t in expected.dtypes]
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    for column in expected.columns:
        if expected[column].dtype == object:
            assert _cell_kinds(got[column]) == _cell_kinds(expected[column]), column
            assert all(np.array_equal(x, y) for x, y in zip(got[column], expected[column])), column


def test_reanalysis_from_memory_equals_reading_the_units_back(tmp_path, monkeypatch):
    """results.json, every Parquet table, the unit files and the report are the same as when the analysis
    reads the units back from the files (the code before the records were kept in memory)."""
    from hyptest.workflows import reanalyse as module

    data = tmp_path / "long.csv"
    _bench_module().synthesise(data, 0.6)
    overrides = {"analysis": {"bayes": False, "n_resamples": 2000}}
    handed = []
    original = module._analysed_rows
    monkeypatch.setattr(module, "_analysed_rows", lambda *a: handed.append(1) or original(*a))
    module.reanalyse(data, out_dir=tmp_path / "memory", study_overrides=overrides)
    assert handed  # the in-memory path ran
    monkeypatch.setattr(module, "_analysed_rows", lambda *a: None)  # analyse_run reads the unit files
    module.reanalyse(data, out_dir=tmp_path / "files", study_overrides=overrides)
    memory, files = _outputs(tmp_path / "memory"), _outputs(tmp_path / "files")
    assert memory[0] == files[0]
    assert memory[1].keys() == files[1].keys()
    for name in memory[1]:
        pd.testing.assert_frame_equal(memory[1][name], files[1][name], check_exact=True)
    assert memory[2].replace(str(tmp_path / "memory"), "RUN") == files[2].replace(str(tmp_path / "files"), "RUN")
    units = [sorted((tmp_path / name / "units").iterdir()) for name in ("memory", "files")]
    assert [p.name for p in units[0]] == [p.name for p in units[1]]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(*units))
    results = [json.loads((tmp_path / name / "results.json").read_text()) for name in ("memory", "files")]
    assert results[0]["import"] == results[1]["import"]
    assert results[0]["provenance"]["warnings"] == results[1]["provenance"]["warnings"]


# ---------------------------------------------------------------------------
# Bayes: one compiled model serves every slice of the same shape
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_cached_bayes_model_gives_the_draws_of_a_fresh_compile(monkeypatch):
    """A slice fitted on the model compiled for another slice (data swapped in with ``with_data``)
    gets the same posterior draws, bit for bit, as when its own model is compiled.

    This in-process cache is that of ``sampler="nutpie-pymc"`` (nutpie on the PyMC-compiled model);
    the default ``"nutpie"`` compiles nothing per slice (tests/test_bayes_kernels.py checks that its
    fits do not depend on the slices fitted before)."""
    pytest.importorskip("nutpie")
    from hyptest.stats import bayes

    from .test_bayes import simulate

    first = simulate({"icl": 1.2, "gd": 0.0, "sgd": 0.2}, seed=11)
    second = simulate({"icl": 0.5, "gd": 0.0, "sgd": 0.9}, seed=12)  # same design, other data
    kwargs = {"seed": 3, "draws": 200, "tune": 200, "chains": 2, "sampler": "nutpie-pymc"}
    monkeypatch.setattr(bayes, "_NUTPIE_CACHE", {})
    bayes.fit_order_variance(first, **kwargs)
    reused = bayes.fit_order_variance(second, **kwargs)
    assert reused.compile_cached
    monkeypatch.setattr(bayes, "_NUTPIE_CACHE", {})
    fresh = bayes.fit_order_variance(second, **kwargs)
    assert not fresh.compile_cached
    for name in fresh.idata.posterior.data_vars:
        np.testing.assert_array_equal(reused.idata.posterior[name].values, fresh.idata.posterior[name].values)
    pd.testing.assert_frame_equal(reused.table, fresh.table, check_exact=True)


@pytest.mark.parametrize("mask_rows", [
    [[True] * 9, [True] * 9],  # every query in every set: slices
    [[False, False, True, True, True, False, False, False, False], [True] * 9],  # one run not at 0: a slice
    [[True, False, True, True, False, False, True, True, True], [False] * 8 + [True]],  # gaps: the index
])
def test_query_weights_equal_the_indexed_assignment(mask_rows):
    """The slice assignment for a set whose queries are one run of slots gives the counts of the index."""
    mask = np.array(mask_rows, dtype=bool)
    got = order_resampling._query_weights(mask, 50, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    expected = np.zeros((50, *mask.shape), dtype=np.uint16)
    for s, row in enumerate(mask):  # the code before: float counts into the index
        idx = np.flatnonzero(row)
        expected[:, s, idx] = order_resampling._counts(len(idx), 50, rng)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    assert (got.sum(axis=2)[:, mask.any(axis=1)] == mask.sum(axis=1)).all()
