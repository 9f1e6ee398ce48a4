"""The N sweep, trajectory, checkpoint and vocabulary tables against direct loops on hand-made records."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from hyptest.metrics import order_sensitivity
from hyptest.metrics.agreement import agreement_table
from hyptest.records import final_step_rows as final_steps
from hyptest.analysis.descriptive import (
    checkpoint_table,
    closest_to_reference,
    n_sweep_table,
    trajectory_table,
    vocab_order_table,
)

VOCAB = 50
K = 6


def _records(*, methods=("icl", "sgd"), n_demos=(2, 4), steps=None, n_sets=2, n_orders=3, n_queries=4, seed=0):
    """Random long-format records; ``steps`` maps method -> number of steps recorded (0..K)."""
    rng = np.random.default_rng(seed)
    steps = steps or {}
    rows = []
    for n, method, s, o in itertools.product(n_demos, methods, range(n_sets), range(n_orders)):
        key = f"{method}-{n}-{s}-{o}"
        for step in range(steps.get(method, 0) + 1) if method in steps else [0]:
            for q in range(n_queries):
                p = rng.dirichlet([2, 2])
                ids = rng.choice(VOCAB, size=K, replace=False)
                probs = np.sort(rng.dirichlet(np.ones(K + 2)))[::-1][:K]
                gold = q % 2
                rows.append({
                    "unit_key": key, "model": "m", "task": "t", "n_demos": n, "method": method,
                    "method_kind": "icl" if method == "icl" else "sgd", "demo_set": s, "order_id": o, "seed": 0,
                    "step": step, "query_id": f"q{q}", "gold": "ab"[gold], "labels": ["a", "b"],
                    "label_probs": list(p), "label_logprobs": list(np.log(p)), "p_gold": float(p[gold]),
                    "correct": bool(p.argmax() == gold), "topk_ids": list(map(int, ids)),
                    "topk_probs": list(map(float, probs)), "order": [0, 1],
                })
    return pd.DataFrame(rows)


def test_final_steps_keeps_the_last_step_of_each_unit():
    rec = _records(steps={"sgd": 3})
    final = final_steps(rec)
    assert set(final.loc[final["method"] == "sgd", "step"]) == {3}
    assert set(final.loc[final["method"] == "icl", "step"]) == {0}
    assert len(final) == len(rec[(rec["method"] == "icl") | (rec["step"] == 3)])


def test_n_sweep_matches_direct_means():
    rec = _records()
    sweep = n_sweep_table(rec, order_sensitivity(rec), agreement_table(rec, k=5), rng=1)
    for n, method in itertools.product((2, 4), ("icl", "sgd")):
        part = rec[(rec["n_demos"] == n) & (rec["method"] == method)]
        # accuracy: mean over (set, query) of the mean over orders
        acc = np.mean([g["correct"].mean() for _, g in part.groupby(["demo_set", "query_id"])])
        sds = [np.std(g["p_gold"].to_numpy(), ddof=1) for _, g in part.groupby(["demo_set", "query_id"])]
        got = sweep[(sweep["n_demos"] == n) & (sweep["method"] == method)].set_index("metric")
        assert got.loc["accuracy", "estimate"] == pytest.approx(acc)
        assert got.loc["order_sd", "estimate"] == pytest.approx(np.mean(sds))
        for metric in ("accuracy", "order_sd", "label_js"):
            assert got.loc[metric, "ci_low"] <= got.loc[metric, "estimate"] <= got.loc[metric, "ci_high"]
    # label JS of sgd vs icl under the same order, by scipy (squared JS distance = JS divergence, nats)
    part = rec[rec["n_demos"] == 2]
    icl = part[part["method"] == "icl"].set_index(["demo_set", "query_id", "order_id"])
    sgd = part[part["method"] == "sgd"].set_index(["demo_set", "query_id", "order_id"])
    js = pd.Series([jensenshannon(icl.loc[i, "label_probs"], sgd.loc[i, "label_probs"]) ** 2 for i in icl.index],
                   index=icl.index)
    expected = js.groupby(level=["demo_set", "query_id"]).mean().mean()
    got = sweep[(sweep["n_demos"] == 2) & (sweep["method"] == "sgd") & (sweep["metric"] == "label_js")]
    assert got["estimate"].iloc[0] == pytest.approx(expected, rel=1e-9)


def test_trajectory_table_by_direct_loop():
    rec = _records(n_demos=(2,), steps={"sgd": 2})
    traj = trajectory_table(rec, k=4, rng=0)
    assert set(traj["step"]) == {0, 1, 2}
    icl = rec[rec["method"] == "icl"].set_index(["demo_set", "query_id", "order_id"])
    for step in (0, 1, 2):
        sgd = rec[(rec["method"] == "sgd") & (rec["step"] == step)].set_index(["demo_set", "query_id", "order_id"])
        overlap = pd.Series([len(set(icl.loc[i, "topk_ids"][:4]) & set(sgd.loc[i, "topk_ids"][:4])) / 4
                             for i in sgd.index], index=sgd.index)
        js = pd.Series([jensenshannon(icl.loc[i, "label_probs"], sgd.loc[i, "label_probs"]) ** 2 for i in sgd.index],
                       index=sgd.index)
        got = traj[traj["step"] == step].set_index("metric")["estimate"]
        assert got["token_overlap_to_icl"] == pytest.approx(overlap.groupby(level=[0, 1]).mean().mean())
        assert got["label_js_to_icl"] == pytest.approx(js.groupby(level=[0, 1]).mean().mean())
        assert got["p_gold"] == pytest.approx(sgd["p_gold"].mean())
    assert trajectory_table(final_steps(rec)).empty


def test_closest_to_reference_picks_the_smallest_js_per_family():
    traj = pd.DataFrame({
        "model": "m", "task": "t", "n_demos": 2, "method": ["sgd@lr=1", "sgd@lr=1", "sgd@lr=2", "sgd@lr=2"],
        "step": [1, 2, 1, 2], "metric": "label_js_to_icl", "estimate": [0.3, 0.2, 0.1, 0.25],
        "ci_low": 0.0, "ci_high": 1.0, "n": 4})
    final = pd.DataFrame({"model": "m", "task": "t", "n_demos": 2, "method": ["adam"], "metric": ["label_js"],
                          "estimate": [0.05], "ci_low": [0.0], "ci_high": [0.1], "n": [4]})
    best = closest_to_reference(traj, final, lambda m: m.split("@")[0]).set_index("family")
    assert best.loc["sgd", "method"] == "sgd@lr=2" and best.loc["sgd", "step"] == 1
    assert best.loc["sgd", "n_candidates"] == 4
    assert best.loc["adam", "label_js_to_icl"] == 0.05 and pd.isna(best.loc["adam", "step"])


def test_checkpoint_table_keeps_listed_order():
    sweep = pd.DataFrame({"model": ["m@b", "m@a", "other"], "task": "t", "method": "icl", "n_demos": 2,
                          "metric": "accuracy", "estimate": [0.6, 0.5, 0.9], "ci_low": 0.0, "ci_high": 1.0, "n": 3})
    table = checkpoint_table(sweep, {"m": ["m@a", "m@b"]})
    assert list(table["checkpoint"]) == ["a", "b"] and list(table["position"]) == [0, 1]
    assert list(table["estimate"]) == [0.5, 0.6]


def test_vocab_order_table_by_direct_loop():
    rec = _records(n_demos=(2,), n_orders=3)
    table = vocab_order_table(rec, rng=0).set_index("method")
    part = rec[rec["method"] == "icl"]
    values, bounds = [], []
    for _, g in part.groupby(["demo_set", "query_id"]):
        probs = {}
        for o, row in enumerate(g.sort_values("order_id").itertuples()):
            for t, p in zip(row.topk_ids, row.topk_probs):
                probs.setdefault(t, np.zeros(len(g)))[o] = p
        values.append(sum(np.std(v, ddof=1) for v in probs.values()))
        bounds.append(sum(1 - sum(r) for r in g["topk_probs"]) / np.sqrt(len(g)))
    assert table.loc["icl", "estimate"] == pytest.approx(np.mean(values))
    assert table.loc["icl", "bound"] == pytest.approx(np.mean(bounds))
    assert table.loc["icl", "top_k"] == K
