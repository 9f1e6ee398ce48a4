"""The fast agreement, vocabulary, sweep and report paths (issue 17, item 5) give what the plain code gives, bit for bit.

``agreement_table`` pairs the records on their keys and gathers the list
cells from arrays stacked once (``RowLists``); ``vocab_order_per_query``
picks each group's rows from the same stacked arrays; ``overlap_cosine``
picks the shared token's probability instead of summing a (k, k) product,
and skips the sort of a top-k already in order.  Each is checked here
against the code it replaced, kept below as a plain reference, on generated
records with the awkward cases: shuffled rows, unequal orders per set, a
single-order set, training seeds, rows missing for one method, queries not
scored under every order, ties and zeros in the top-k, top-k lists of
different widths (the frame path) and narrower than k (no token metrics).

A single-N run advances the generator past the N sweep instead of computing
it (``n_sweep_draws``): the generator's state is checked against the
computed sweep's, and a whole reanalysis against the plain code.  The
report's fast paths (group keys, axis ranges of arrays, markers styled once
per line) are checked against the row-by-row keys, the list ranges and
matplotlib's own SVG canvas.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from hyptest._validation import validate_choice, validate_count
from hyptest.analysis.descriptive import vocab_order_per_query
from hyptest.metrics.agreement import AGREEMENT_METRICS, agreement_table
from hyptest.metrics.overlap import (
    _pick_shared,
    _validate_ids,
    _validate_pair_shapes,
    _validate_probs,
    label_js,
    label_kl,
    overlap_cosine,
    token_overlap,
    vocab_order_sensitivity,
)
from hyptest.metrics.rows import stack_rows

from ._benchmarks import load_benchmark

_UNIT = ["model", "task", "n_demos", "demo_set", "query_id"]


# ---------------------------------------------------------------------------
# the plain code the fast paths replaced (hyptest before issue 17, item 5)
# ---------------------------------------------------------------------------


def _plain_overlap_cosine(ids_a, probs_a, ids_b, probs_b, *, k=10, support="shared"):
    kk = validate_count(k, "k")
    ia = _validate_ids(ids_a, "ids_a", kk)
    ib = _validate_ids(ids_b, "ids_b", kk)
    pa = _validate_probs(probs_a, "probs_a", ia.shape)
    pb = _validate_probs(probs_b, "probs_b", ib.shape)
    _validate_pair_shapes(ia, ib, "ids_a", "ids_b")
    validate_choice(support, "support", ("shared", "union"))

    def top_k(ids, probs):
        order = np.argsort(-probs, axis=-1, kind="stable")[..., :kk]
        return np.take_along_axis(ids, order, axis=-1), np.take_along_axis(probs, order, axis=-1)

    ia, pa = top_k(ia, pa)
    ib, pb = top_k(ib, pb)
    eq = ia[..., :, None] == ib[..., None, :]
    pb_on_a = (eq * pb[..., None, :]).sum(axis=-1)
    dot = (pa * pb_on_a).sum(axis=-1)
    if support == "shared":
        sq_a = (pa**2 * eq.any(axis=-1)).sum(axis=-1)
        sq_b = (pb**2 * eq.any(axis=-2)).sum(axis=-1)
    else:
        sq_a = (pa**2).sum(axis=-1)
        sq_b = (pb**2).sum(axis=-1)
    denom = np.sqrt(sq_a) * np.sqrt(sq_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(cos, 0.0, 1.0)[()]


def _plain_pair_metrics(a: pd.DataFrame, b: pd.DataFrame, k: int) -> dict[str, np.ndarray]:
    def stack(frame, column):
        return stack_rows(frame[column].to_numpy())

    pa, pb = stack(a, "label_probs"), stack(b, "label_probs")
    js = np.asarray(label_js(pa, pb), dtype=float)
    kl = np.asarray(label_kl(pa, pb), dtype=float)
    width = min(min((len(v) for v in a["topk_ids"]), default=0), min((len(v) for v in b["topk_ids"]), default=0))
    if width < k:
        missing = np.full(len(a), np.nan)
        return {"token_overlap": missing, "overlap_cosine": missing.copy(), "label_js": js, "label_kl": kl}
    ids_a, ids_b = stack(a, "topk_ids"), stack(b, "topk_ids")
    return {
        "token_overlap": np.asarray(token_overlap(ids_a, ids_b, k=k), dtype=float),
        "overlap_cosine": np.asarray(
            _plain_overlap_cosine(ids_a, stack(a, "topk_probs"), ids_b, stack(b, "topk_probs"), k=k), dtype=float),
        "label_js": js,
        "label_kl": kl,
    }


def _plain_agreement_slice(records: pd.DataFrame, reference: str, k: int) -> pd.DataFrame:
    keys = [*_UNIT, "order_id"]
    ref = records[records["method"] == reference].sort_values(keys)
    frames = []
    shifted = ref.copy()
    n_orders = shifted.groupby(_UNIT)["order_id"].transform("nunique")
    rank = shifted.groupby(_UNIT)["order_id"].rank(method="first").astype(int) - 1
    shifted["_next"] = (rank + 1) % n_orders
    shifted["_rank"] = rank
    left = shifted.sort_values([*_UNIT, "_rank"])
    right = left.set_index([*_UNIT, "_rank"]).loc[
        pd.MultiIndex.from_frame(left[[*_UNIT, "_next"]].rename(columns={"_next": "_rank"}))
    ].reset_index()
    values = _plain_pair_metrics(left, right, k)
    frames.append(left[_UNIT].assign(method=reference, seed=0, **values))
    for method in sorted(set(records["method"]) - {reference}):
        other = records[records["method"] == method]
        joined = ref.merge(other, on=keys, suffixes=("_a", "_b"))
        if joined.empty:
            continue
        a = joined[[f"{c}_a" for c in ("topk_ids", "topk_probs", "label_probs")]]
        b = joined[[f"{c}_b" for c in ("topk_ids", "topk_probs", "label_probs")]]
        a.columns = b.columns = ["topk_ids", "topk_probs", "label_probs"]
        values = _plain_pair_metrics(a, b, k)
        frames.append(joined[_UNIT].assign(method=method, seed=joined["seed_b"].to_numpy(), **values))
    long = pd.concat(frames, ignore_index=True)
    per_seed = long.groupby([*_UNIT, "method", "seed"], sort=True)[list(AGREEMENT_METRICS)].mean()
    return per_seed.groupby([*_UNIT, "method"], sort=True).mean().reset_index()


def _plain_agreement_table(records: pd.DataFrame, *, reference: str = "icl", k: int = 10) -> pd.DataFrame:
    needed = [*_UNIT, "method", "order_id", "seed", "topk_ids", "topk_probs", "label_probs"]
    records = records[needed]
    slices = [_plain_agreement_slice(group, reference, k)
              for _, group in records.groupby(["model", "task", "n_demos"], sort=True)
              if (group["method"] == reference).any()]
    return pd.concat(slices, ignore_index=True)


def _plain_vocab_order_per_query(records: pd.DataFrame) -> pd.DataFrame:
    per: list[dict[str, Any]] = []
    group_keys = ["model", "task", "n_demos", "method", "demo_set", "seed"]
    records = records[[*group_keys, "query_id", "order_id", "topk_ids", "topk_probs"]]
    for key, group in records.groupby(group_keys, sort=True):
        if group["order_id"].nunique() < 2:
            continue
        k = int(group["topk_ids"].map(len).min())
        if k == 0:
            continue
        group = group.sort_values(["query_id", "order_id"])
        n_orders = group["order_id"].nunique()
        counts = group.groupby("query_id")["order_id"].nunique()
        group = group[group["query_id"].isin(counts[counts == n_orders].index)]
        queries = group["query_id"].unique()
        if len(queries) == 0:
            continue
        ids = stack_rows([v[:k] for v in group["topk_ids"]]).reshape(len(queries), n_orders, k)
        probs = stack_rows([v[:k] for v in group["topk_probs"]], dtype=float).reshape(len(queries), n_orders, k)
        res = vocab_order_sensitivity(ids, probs)
        for q, value, bound in zip(queries, np.atleast_1d(res.value), np.atleast_1d(res.error_bound)):
            per.append({**dict(zip(group_keys, key)), "query_id": q, "value": float(value),
                        "bound": float(bound), "top_k": k})
    columns = [*_UNIT, "method", "value", "bound", "top_k"]
    if not per:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(per).groupby([*_UNIT, "method"], sort=True).agg(
        value=("value", "mean"), bound=("bound", "mean"), top_k=("top_k", "min")).reset_index()[columns]


# ---------------------------------------------------------------------------
# generated records
# ---------------------------------------------------------------------------


def _topk(rng: np.random.Generator, width: int, *, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.choice(40, size=width, replace=False).astype(np.int64)  # a small vocabulary: many shared tokens
    probs = np.sort(rng.dirichlet(np.ones(width + 1))[:width])[::-1].copy()
    if ties and width >= 3:
        probs[1] = probs[2]  # a tie inside the top-k
        if rng.random() < 0.5:
            probs[-1] = 0.0
    if rng.random() < 0.05:
        probs = rng.permutation(probs)  # a top-k not stored in order: the sorting path
    return ids, probs


def _records(seed: int = 0, *, width=lambda method, rng: 10) -> pd.DataFrame:
    """Two tasks (2 and 3 labels), ICL, GD, SGD (2 seeds) and a zero-shot method; awkward cases included."""
    rng = np.random.default_rng(seed)
    rows = []
    for task, n_labels in (("bin", 2), ("tri", 3)):
        for method, kind, seeds in (("icl", "icl", (0,)), ("gd", "gd", (0,)), ("sgd", "sgd", (0, 1)),
                                    ("zs", "zs", (0,))):
            for seed_ in seeds:
                for demo_set, n_orders in ((0, 4), (1, 3), (2, 1)):
                    for order_id in range(n_orders):
                        for q in range(5):
                            if method == "sgd" and rng.random() < 0.08:
                                continue  # a row missing for one method: the merge drops its pair
                            if q == 4 and order_id == 1 and method != "icl":
                                continue  # a query not scored under every order
                            ids, probs = _topk(rng, width(method, rng), ties=rng.random() < 0.3)
                            label_probs = rng.dirichlet(np.ones(n_labels))
                            rows.append({"model": "m", "task": task, "n_demos": 3, "method": method,
                                         "method_kind": kind, "demo_set": demo_set, "query_id": f"{task}-{q:02d}",
                                         "seed": seed_, "order_id": order_id, "label_probs": label_probs,
                                         "topk_ids": ids, "topk_probs": probs})
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows in no particular order


def _same_bits(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    for column in want.columns:
        if want[column].dtype.kind == "f":  # NaN where NaN, and the sign of every zero
            assert np.array_equal(got[column].to_numpy().view(np.int64), want[column].to_numpy().view(np.int64)), column


_WIDTHS = {
    "uniform": lambda method, rng: 10,
    "wider than k": lambda method, rng: 12,
    "ragged": lambda method, rng: 10 if method == "icl" else 11,  # RowLists refuses: the frame path
    "narrower than k": lambda method, rng: 4,  # no token metrics
}


# ---------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("widths", list(_WIDTHS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agreement_table_is_the_plain_one_bit_for_bit(seed, widths):
    records = _records(seed, width=_WIDTHS[widths])
    _same_bits(agreement_table(records, k=10), _plain_agreement_table(records, k=10))


@pytest.mark.parametrize("widths", ["uniform", "wider than k", "ragged"])
@pytest.mark.parametrize("seed", [0, 3])
def test_vocab_order_per_query_is_the_plain_one_bit_for_bit(seed, widths):
    records = _records(seed, width=_WIDTHS[widths])
    _same_bits(vocab_order_per_query(records), _plain_vocab_order_per_query(records))


def test_vocab_order_per_query_with_float32_probabilities_and_lists():
    records = _records(5)
    records["topk_probs"] = [p.astype(np.float32) for p in records["topk_probs"]]
    _same_bits(vocab_order_per_query(records), _plain_vocab_order_per_query(records))
    records["topk_ids"] = [list(v) for v in records["topk_ids"]]  # lists, not arrays
    _same_bits(vocab_order_per_query(records), _plain_vocab_order_per_query(records))


@pytest.mark.parametrize("support", ["shared", "union"])
def test_overlap_cosine_is_the_plain_one_bit_for_bit(support):
    rng = np.random.default_rng(7)
    for n, width, k in ((50, 10, 10), (40, 12, 10), (30, 5, 3), (1, 4, 4)):
        pairs = [_topk(rng, width, ties=True) for _ in range(2 * n)]
        ids = np.stack([p[0] for p in pairs])
        probs = np.stack([p[1] for p in pairs])
        got = overlap_cosine(ids[:n], probs[:n], ids[n:], probs[n:], k=k, support=support)
        want = _plain_overlap_cosine(ids[:n], probs[:n], ids[n:], probs[n:], k=k, support=support)
        assert np.array_equal(np.asarray(got).view(np.int64), np.asarray(want).view(np.int64))
    # one query against a batch (broadcast leading axes), and 1-D inputs
    got = overlap_cosine(ids[0], probs[0], ids[:5], probs[:5], k=3, support=support)
    want = _plain_overlap_cosine(ids[0], probs[0], ids[:5], probs[:5], k=3, support=support)
    assert np.array_equal(np.asarray(got).view(np.int64), np.asarray(want).view(np.int64))
    assert float(overlap_cosine(ids[0], probs[0], ids[1], probs[1], k=4, support=support)) == float(
        _plain_overlap_cosine(ids[0], probs[0], ids[1], probs[1], k=4, support=support))


def test_pick_shared_is_the_summed_product_with_every_zero_sign():
    rng = np.random.default_rng(1)
    for trial in range(300):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 12))
        ia = np.stack([rng.permutation(20)[:k] for _ in range(n)])
        ib = np.stack([rng.permutation(20)[:k] for _ in range(n)])
        pb = rng.random((n, k))
        pb[rng.random((n, k)) < 0.2] = 0.0
        if trial % 2:
            pb[rng.random((n, k)) < 0.2] = -0.0  # the sign of a zero sum then depends on numpy: summed as before
        eq = ia[..., :, None] == ib[..., None, :]
        want = (eq * pb[..., None, :]).sum(axis=-1)
        assert np.array_equal(_pick_shared(eq, pb).view(np.int64), want.view(np.int64))


# ---------------------------------------------------------------------------
# the N sweep of a single-N run: the generator advanced instead of the table computed
# ---------------------------------------------------------------------------


def _sweep_inputs(n_sets: int, seed: int = 0):
    from hyptest.metrics import order_sensitivity

    rng = np.random.default_rng(seed)
    rows = []
    for method, kind in (("icl", "icl"), ("sgd", "sgd")):
        for demo_set in range(n_sets):
            for order_id in range(3):
                for q in range(4 + demo_set % 3):  # clusters of unequal sizes
                    ids, probs = _topk(rng, 10, ties=False)
                    label_probs = rng.dirichlet(np.ones(2))
                    rows.append({"model": "m", "task": "t", "n_demos": 4, "method": method, "method_kind": kind,
                                 "demo_set": demo_set, "query_id": f"q{q}", "seed": 0, "order_id": order_id,
                                 "label_probs": label_probs, "p_gold": float(label_probs[0]),
                                 "correct": bool(rng.random() < 0.6), "topk_ids": ids, "topk_probs": probs})
    records = pd.DataFrame(rows)
    return records, order_sensitivity(records), agreement_table(records, k=10)


@pytest.mark.parametrize("n_sets", [5, 7])
def test_n_sweep_draws_leaves_the_generator_where_the_table_does(n_sets):
    from hyptest.analysis.descriptive import n_sweep_draws, n_sweep_table

    records, per_query, agreement = _sweep_inputs(n_sets)
    computed, advanced = np.random.default_rng([3, 13]), np.random.default_rng([3, 13])
    n_sweep_table(records, per_query, agreement, rng=computed)
    draws = n_sweep_draws(records, per_query, agreement)
    assert draws is not None and draws > 0
    advanced.bit_generator.advance(draws)
    assert advanced.bit_generator.state == computed.bit_generator.state
    assert advanced.random(5).tolist() == computed.random(5).tolist()


def test_n_sweep_draws_is_unknown_for_ordinary_bootstraps():
    from hyptest.analysis.descriptive import n_sweep_draws

    records, per_query, agreement = _sweep_inputs(3)  # fewer than 5 demo sets: SciPy's bootstrap
    assert n_sweep_draws(records, per_query, agreement) is None


def test_reanalysis_is_identical_with_the_plain_agreement_vocab_and_sweep(tmp_path, monkeypatch):
    """A whole single-N reanalysis: agreement and vocabulary tables by the plain code, the N sweep computed."""
    import json

    from hyptest.analysis import descriptive, order
    from hyptest.workflows import study as study_module
    from hyptest.workflows.reanalyse import reanalyse

    bench = load_benchmark("bench_reanalyse")
    data = tmp_path / "long.csv"
    bench.synthesise(data, 0.6)
    overrides = {"analysis": {"bayes": False, "n_resamples": 2000}}
    advanced = []

    def counting(*args, **kwargs):
        draws = descriptive.n_sweep_draws(*args, **kwargs)
        advanced.append(draws)
        return draws

    with monkeypatch.context() as m:
        m.setattr(study_module, "n_sweep_draws", counting)
        reanalyse(data, out_dir=tmp_path / "fast", study_overrides=overrides)
    assert advanced and advanced[0] is not None  # the sweep was skipped, the generator advanced
    with monkeypatch.context() as m:
        m.setattr(order, "agreement_table", _plain_agreement_table)
        m.setattr(order, "vocab_order_per_query", _plain_vocab_order_per_query)
        m.setattr(study_module, "n_sweep_draws", lambda *a, **k: None)
        reanalyse(data, out_dir=tmp_path / "plain", study_overrides=overrides)
    outputs = []
    for folder in (tmp_path / "fast", tmp_path / "plain"):
        results = json.loads((folder / "results.json").read_text())
        for key in ("provenance", "import"):
            results.pop(key)
        outputs.append((results, {p.name: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}))
    (fast, fast_tables), (plain, plain_tables) = outputs
    assert fast == plain
    assert fast_tables.keys() == plain_tables.keys()
    for name in fast_tables:
        _same_bits(fast_tables[name], plain_tables[name])


# ---------------------------------------------------------------------------
# the report's fast paths: the same keys, ranges and SVG text as the plain ones
# ---------------------------------------------------------------------------


def test_data_range_of_an_array_is_that_of_its_list():
    from hyptest.report.figures.canvas import data_range

    rng = np.random.default_rng(4)
    for trial in range(200):
        values = rng.normal(size=int(rng.integers(0, 30))) * 10.0 ** rng.integers(-3, 3)
        if trial % 3 == 0 and values.size:
            values[rng.random(values.size) < 0.3] = np.nan
        if trial % 5 == 0 and values.size:
            values[0] = np.inf
        if trial % 7 == 0:
            values = np.abs(values)
        if trial % 4 == 1 and values.size > 2:  # zeros of both signs: the first one sets the limit's sign
            values[rng.integers(values.size)] = -0.0
            values[rng.integers(values.size)] = 0.0
        include = [float(v) for v in rng.normal(size=int(rng.integers(0, 3)))] + ([None, np.nan] if trial % 2 else [])
        kw = [{}, {"floor": 0.0}, {"floor": 0.0, "ceiling": 1.0, "pad": 0.04}, {"ceiling": 2.0}][trial % 4]
        want = data_range(values.tolist(), include=include, **kw)
        assert repr(data_range(values, include=include, **kw)) == repr(want)  # repr: the sign of a zero too


def test_group_keys_of_the_per_order_view_are_those_of_each_row():
    from hyptest.report.views.format import _group_key
    from hyptest.report.views.order import _split, _with_key

    frame = pd.DataFrame({
        "model": pd.array(["a", "a", None, "b", "a", "b"], dtype="str"),
        "task": pd.array(["t", "t", "t", "u", "t", "u"], dtype="str"),
        "n_demos": [4.0, 4.0, np.nan, 2.0, 4.0, 8.0],
        "method": pd.array(["icl", "gd", "icl", "gd", "sgd", "icl"], dtype="str"),
    })
    keyed = _with_key(frame, ("model", "task", "n_demos", "method"))
    assert list(keyed["_key"]) == [_group_key(m, t, n) for m, t, n in
                                   zip(frame["model"], frame["task"], frame["n_demos"], strict=True)]
    for key, part in _split(keyed).items():  # slices and gathered rows alike: the rows of the key, in order
        pd.testing.assert_frame_equal(part, keyed[[k == key for k in keyed["_key"]]])


def test_markers_styled_once_write_the_svg_of_matplotlib_canvas(monkeypatch):
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    from hyptest.report.figures import canvas, order_scatter_plot, order_sensitivity_plot

    rng = np.random.default_rng(0)
    per_query = pd.DataFrame({"method": np.repeat(["icl", "gd", "sgd"], 300), "sd_gold": rng.random(900) * 0.2})
    pairs = pd.DataFrame({"method": np.repeat(["gd", "sgd"], 400), "x": rng.random(800), "y": rng.random(800)})

    def draw() -> list[str]:
        return [order_sensitivity_plot(per_query, methods_order=["icl", "gd", "sgd"], title="t"),
                order_scatter_plot(pairs, methods=["gd", "sgd"], title="s", max_points=300)]

    fast = draw()
    monkeypatch.setattr(canvas, "_Canvas", FigureCanvasSVG)
    assert draw() == fast


def _plain_descriptive_tables(run, study, records, all_steps, output):
    """``_descriptive_tables`` as it was: the N sweep always computed."""
    from hyptest.analysis.descriptive import (checkpoint_table, closest_to_reference, n_sweep_table,
                                              trajectory_table, vocab_order_table)
    from hyptest.workflows.study import _records_json

    a = study.analysis
    rng = np.random.default_rng([study.seed, 13])
    sweep = n_sweep_table(records, output.per_query, output.agreement, confidence=a.confidence, rng=rng)
    trajectories = trajectory_table(all_steps, reference=a.reference, k=a.overlap_k, confidence=a.confidence,
                                    rng=rng)
    family = study.method_family
    baselines = {a.reference, *(n for n in study.method_names() if study.method(n).kind == "zs")}
    closest = closest_to_reference(trajectories[trajectories["step"] >= 1] if not trajectories.empty else trajectories,
                                   sweep[~sweep["method"].isin(baselines)], family)
    out = {
        "n_sweep": _records_json(sweep) if sweep["n_demos"].nunique() > 1 else [],
        "trajectories": _records_json(trajectories),
        "closest_to_icl": _records_json(closest) if not trajectories.empty or
        len(set(map(family, study.method_names()))) < len(study.method_names()) else [],
        "vocab_order_sensitivity": _records_json(vocab_order_table(
            records, confidence=a.confidence, rng=rng, per_query=output.vocab)),
    }
    groups = study.checkpoint_groups()
    checkpoints = checkpoint_table(sweep, groups) if groups else pd.DataFrame()
    out["checkpoints"] = _records_json(checkpoints) if not checkpoints.empty else []
    out["sparsity"] = []
    return out


@pytest.mark.parametrize("case", ["one N", "one N, a grid family", "two N", "checkpoints", "few sets"])
def test_descriptive_tables_are_the_plain_ones(case):
    from types import SimpleNamespace

    from hyptest.metrics import order_sensitivity
    from hyptest.workflows.study import _descriptive_tables

    records, _, _ = _sweep_inputs(3 if case == "few sets" else 6, seed=2)
    records = records.assign(step=1)
    if case == "two N":
        records = pd.concat([records, records.assign(n_demos=8)], ignore_index=True)
    output = SimpleNamespace(per_query=order_sensitivity(records), agreement=agreement_table(records, k=10),
                             vocab=vocab_order_per_query(records))
    kinds = {"icl": "icl", "sgd": "sgd"}
    families = {"icl": "icl", "sgd": "icl" if case == "one N, a grid family" else "sgd"}
    study = SimpleNamespace(
        seed=5, analysis=SimpleNamespace(confidence=0.95, reference="icl", overlap_k=10),
        method_family=lambda m: families[m], method_names=lambda: ["icl", "sgd"],
        method=lambda m: SimpleNamespace(kind=kinds[m]),
        checkpoint_groups=lambda: {"m": ["m"]} if case == "checkpoints" else {})
    run = SimpleNamespace(exists=lambda name: False)
    got = _descriptive_tables(run, study, records, records, output)
    assert got == _plain_descriptive_tables(run, study, records, records, output)
    assert got["vocab_order_sensitivity"]  # the table drawn after the sweep's place in the stream
