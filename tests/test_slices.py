"""The one loop over (model, task, N) slices (hyptest.analysis.slices) and the study's design slices."""

from __future__ import annotations

import pandas as pd

from hyptest.analysis.slices import comparison_keys, iter_slices
from hyptest.names import AGREEMENT_METRICS, DAI_METRIC_NAMES, DAI_NAMES, SWEEP_METRICS


def _records() -> pd.DataFrame:
    rows = []
    for model in ("m2", "m1"):
        for task in ("t", "s"):
            for n in (4, 2):
                for method in ("sgd", "icl", "gd") if (model, task) != ("m1", "s") else ("gd", "sgd"):
                    rows.append({"model": model, "task": task, "n_demos": n, "method": method, "x": len(rows)})
    return pd.DataFrame(rows)


def test_slices_are_the_sorted_groups_with_their_methods_and_keys():
    records = _records()
    got = list(iter_slices(records, "icl"))
    # written out: every distinct (model, task, N), sorted; methods other than icl, sorted
    expected = sorted({(r.model, r.task, r.n_demos) for r in records.itertuples()})
    assert [(s.model, s.task, s.n_demos) for s in got] == expected
    for s in got:
        mine = records[(records.model == s.model) & (records.task == s.task) & (records.n_demos == s.n_demos)]
        assert s.rows["x"].tolist() == mine["x"].tolist()
        assert s.methods == sorted(set(mine["method"]) - {"icl"})
        assert s.has_reference == ("icl" in set(mine["method"]))
        assert s.label == f"{s.model}/{s.task}/N={s.n_demos}"
        assert s.keys("gd") == {"model": s.model, "task": s.task, "n_demos": int(s.n_demos), "method_a": "icl",
                                "method_b": "gd"}
        assert type(s.keys("gd")["n_demos"]) is int
    assert not got[0].has_reference and got[0].methods == ["gd", "sgd"]  # m1/s has no icl rows


def test_comparison_keys_and_an_empty_table():
    assert comparison_keys("m", "t", 3.0, "icl", "gd") == {"model": "m", "task": "t", "n_demos": 3,
                                                          "method_a": "icl", "method_b": "gd"}
    empty = pd.DataFrame(columns=["model", "task", "n_demos", "method"])
    assert list(iter_slices(empty, "icl")) == []


def test_design_slices_follow_the_study_file():
    from hyptest.study import parse_study

    study = parse_study({
        "name": "slices", "seed": 1,
        "models": [{"name": "b", "source": "tiny"}, {"name": "a", "source": "tiny"}],
        "tasks": ["sentiment"],
        "demos": {"n_demos": [3, 2], "n_queries": 2},
        "methods": [{"kind": "icl"}, {"kind": "gd", "learning_rate": 0.01, "steps": 1}],
        "analysis": {"bayes": False},
    })
    task = study.tasks[0].name
    assert study.slices() == [("b", task, 3), ("b", task, 2), ("a", task, 3), ("a", task, 2)]


def test_the_name_tables_agree_with_each_other():
    assert DAI_METRIC_NAMES == tuple(DAI_NAMES) == ("rec2ftp", "simaou", "simam", "kendall", "kendall_demo_token",
                                                    "kendall_demo_example")
    assert SWEEP_METRICS == ("accuracy", "order_sd", "token_overlap", "overlap_cosine", "label_js", "label_kl")
    assert list(AGREEMENT_METRICS) == ["token_overlap", "overlap_cosine", "label_js", "label_kl"]
