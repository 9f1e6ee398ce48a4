"""Adaptive collection (hyptest/workflows/adaptive.py): the schema, the rounds, stopping, resuming.

The rounds are tested with a synthetic collector (rows computed from the
unit, no model): an order-invariant method must stop once decided, a method
as order-sensitive as ICL must run to its budget, the reference must run as
long as any method compared with it, and a run resumed from a partial store
must plan the same units and take the same decisions. One small study runs
end to end on the tiny random model, then again from its store.
"""

from __future__ import annotations

import math
import textwrap
import zlib

import numpy as np
import pandas as pd
import pytest
import yaml

from hyptest.analysis.adaptive import adaptive_family, family_keys, orders_per_set, set_budget
from hyptest.workflows.adaptive import adaptive_demo_set, collect_adaptive
from hyptest.stats.anytime import anytime_test
from hyptest.study import StudyError, parse_study

STUDY = textwrap.dedent("""\
    name: adaptive_synthetic
    seed: 1
    models: [{name: tiny, source: tiny}]
    tasks: [sentiment]
    demos: {n_demos: 4, n_queries: 4}
    methods:
      - kind: icl
      - {kind: gd, learning_rate: 0.01, steps: 1}
      - {kind: sgd, learning_rate: 0.01}
    analysis: {bayes: false, adjust: bonferroni}
    collection: {mode: adaptive, min_orders: 2, max_sets: 14, check_every: 1}
""")


def _study(text: str = STUDY, **collection):
    data = yaml.safe_load(text)
    data["collection"].update(collection)
    return parse_study(data)


def _rows(unit) -> pd.DataFrame:
    """Synthetic rows: ICL and sgd move with the order (same spread), gd never does."""
    q = len(unit.query_ids)
    code = zlib.crc32(repr((unit.demo_set, unit.order, unit.method)).encode())
    rng = np.random.default_rng(code)
    shift = 0.0 if unit.method == "gd" else rng.normal(0, 0.1)
    p = np.clip(0.5 + shift + 0.01 * np.arange(q), 0.01, 0.99)
    return pd.DataFrame({
        "unit_key": unit.key, "model": unit.model, "task": unit.task, "method": unit.method,
        "method_kind": unit.method_kind, "n_demos": unit.n_demos, "demo_set": unit.demo_set,
        "order_id": unit.order_id, "seed": unit.seed, "step": 0, "query_id": list(unit.query_ids),
        "p_gold": p, "label_probs": [[1 - v, v] for v in p], "labels": [["negative", "positive"]] * q,
    })


class _Store:
    def __init__(self):
        self.rows: dict[str, pd.DataFrame] = {}
        self.collected: list[str] = []

    def run(self, units):
        for u in units:
            self.collected.append(u.key)
            self.rows[u.key] = _rows(u)

    def read(self, keys):
        return pd.concat([self.rows[k] for k in keys], ignore_index=True)


def _collect(study, store, sentiment):
    return collect_adaptive(study, {"sentiment": sentiment}, {"tiny": {"id": "tiny"}}, {"v": "1"},
                            has_unit=lambda k: k in store.rows, read_units=store.read, run_units=store.run)


def test_collection_block_is_validated():
    s = _study()
    assert s.collection.mode == "adaptive" and s.collection.min_orders == 2
    data = yaml.safe_load(STUDY)
    data["collection"] = "adaptive"
    assert parse_study(data).collection.max_sets == 32
    for bad, message in [({"mode": "adaptive", "max_orders": 1}, "max_orders"),
                         ({"mode": "adaptive", "bound": 1.1}, "collection.bound"),
                         ({"mode": "adaptive", "check_every": 40}, "check_every"),
                         ({"mode": "sometimes"}, "collection.mode"),
                         ({"mode": "adaptive", "min_orders": 1}, "min_orders")]:
        data["collection"] = bad
        with pytest.raises(StudyError, match=message):
            parse_study(data)
    data["collection"] = "adaptive"
    data["analysis"]["confirmatory"] = ["order_alignment"]
    with pytest.raises(StudyError, match="anytime-validly"):
        parse_study(data)


def test_sets_are_independent_draws_with_distinct_orders(sentiment):
    study = _study(min_orders=5)
    a, b = adaptive_demo_set(sentiment, 4, 0, study), adaptive_demo_set(sentiment, 4, 1, study)
    assert adaptive_demo_set(sentiment, 4, 0, study) == a  # the same draw in every run
    assert a.demo_ids != b.demo_ids
    assert len(a.orders) == orders_per_set(study, 4) == 5 and len(set(a.orders)) == 5
    assert all(sorted(o) == sorted(a.demo_ids) for o in a.orders)
    assert orders_per_set(study, 2) == 2 and set_budget(_study(max_orders=9), 4) == 4


def test_rounds_stop_the_decided_method_and_resume_alike(sentiment):
    study = _study()
    store = _Store()
    units = _collect(study, store, sentiment)
    per = pd.DataFrame([{"method": u.method, "set": u.demo_set} for u in units]).groupby("method")["set"].nunique()
    # gd (order-invariant, statistic at the bound every set) is decided once e >= m / alpha = 40
    x = np.full(14, math.log(4))
    first = int(np.argmax(anytime_test(x, bound=math.log(4)).e_difference >= 2 / 0.05)) + 1
    assert per["gd"] == first < 14
    assert per["sgd"] == 14 and per["icl"] == 14  # as order-sensitive as ICL: runs to its budget
    assert len(units) == len(set(u.key for u in units)) == 2 * (14 + 14 + first)
    records = store.read([u.key for u in units])
    family, state = adaptive_family(records, study, {"sentiment": 2})
    got = {f.key.method: (f.state.status, f.state.n_used, f.state.verdict) for f in family}
    assert got["gd"] == ("decided", first, "different") and got["sgd"][:2] == ("budget", 14)
    # resume: a store holding only the first units plans the same units, collects the rest, decides alike
    partial = _Store()
    keep = [u.key for u in units[: len(units) // 3]]
    partial.rows = {k: store.rows[k] for k in keep}
    again = _collect(study, partial, sentiment)
    assert [u.key for u in again] == [u.key for u in units]
    assert sorted(partial.collected) == sorted(set(store.rows) - set(keep))
    family2, _ = adaptive_family(partial.read([u.key for u in again]), study, {"sentiment": 2})
    assert {f.key.method: (f.state.status, f.state.n_used, f.state.verdict) for f in family2} == got


def test_family_keys_skip_single_orders_and_baselines(sentiment):
    data = yaml.safe_load(STUDY)
    data["demos"]["n_demos"] = [1, 4]
    data["methods"].append({"kind": "zs"})
    keys = family_keys(parse_study(data), {"sentiment": 2})
    assert {(k.n_demos, k.method) for k in keys} == {(4, "gd"), (4, "sgd")}


ENDTOEND = textwrap.dedent("""\
    name: tiny_adaptive
    seed: 3
    models: [{name: tiny, source: tiny}]
    tasks: [sentiment]
    demos: {n_demos: 2, n_queries: 4}
    methods:
      - kind: icl
      - {kind: sgd, learning_rate: 0.01}
    analysis: {n_resamples: 1000, bayes: false}
    collection: {mode: adaptive, max_sets: 3}
""")


def test_adaptive_study_end_to_end_and_resumed(tmp_path):
    from hyptest.workflows.study import run_study

    study = parse_study(yaml.safe_load(ENDTOEND))
    first = run_study(study, ENDTOEND, out_dir=tmp_path)
    assert first.n_units == 2 * 3 * 2 and first.n_reused == 0
    rows = pd.DataFrame(first.results["comparisons"])
    conf = rows[rows["family"] == "confirmatory"]
    assert list(conf["rule"]) == ["anytime"] and conf["n"].iloc[0] == 3
    assert conf["verdict"].iloc[0] in ("different", "equivalent", "negligible", "inconclusive")
    (traj,) = first.results["adaptive"]
    assert traj["stop_sets"] == 3 and len(traj["cs_low"]) == 3
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="adaptive"' in html and "stopping point" in html and "Adaptive collection" in html
    again = run_study(study, ENDTOEND, out_dir=tmp_path)
    assert again.n_reused == again.n_units == first.n_units
    rows2 = pd.DataFrame(again.results["comparisons"])
    pd.testing.assert_frame_equal(rows2[rows2["family"] == "confirmatory"][["verdict", "estimate", "p_value"]],
                                  conf[["verdict", "estimate", "p_value"]])


def test_report_view_escapes_and_marks_the_stop():
    import xml.dom.minidom

    from hyptest.report.views.adaptive import adaptive_view

    traj = {"model": "m<1>", "task": "t&", "n_demos": 4, "method_a": "icl", "method_b": "sgd<script>",
            "analysis": "order_sensitivity", "verdict": "different", "status": "decided", "stop_sets": 3,
            "orders_per_set": 2, "units_per_set": 2, "bound": 1.386, "margin": 0.223, "cs_level": 0.975,
            "x": [1.0, 1.2, 1.3], "estimate": [1.0, 1.1, 1.17], "cs_low": [-1.0, -0.2, 0.1],
            "cs_high": [1.386, 1.386, 1.386], "e_difference": [1.0, 5.0, 45.0], "e_equivalence": [0.6, 0.5, 0.4]}
    view = adaptive_view([traj])
    svg_text = str(view["figure"])
    assert "<script>" not in svg_text and "sgd&lt;script&gt;" in svg_text
    xml.dom.minidom.parseString(svg_text)  # well-formed
    (row,) = view["rows"]
    assert row["units"] == "12" and row["cs"] == "[0.1, 1.39]" and row["e_difference"] == "45"
    assert adaptive_view([]) is None
