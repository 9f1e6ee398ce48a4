"""Margins from the data and the alignment decision rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from hyptest.analysis import resolve_margins
from hyptest.stats.theorem import finalise
from hyptest.study import parse_study

from .conftest import TINY_STUDY


def _study(margin):
    data = yaml.safe_load(TINY_STUDY)
    data["analysis"]["margin"] = margin
    return parse_study(data)


def _per_query(values_set0, values_set1):
    rows = []
    for s, values in ((0, values_set0), (1, values_set1)):
        for q, v in enumerate(values):
            rows.append({"model": "m", "task": "t", "n_demos": 3, "method": "icl", "demo_set": s,
                         "query_id": f"q{q}", "sd_gold": v})
    return pd.DataFrame(rows)


def test_auto_margin_is_the_noise_floor_between_set_halves():
    a = np.array([0.10, 0.20, 0.15, 0.12])
    b = np.array([0.12, 0.16, 0.15, 0.10])
    margins, notes = resolve_margins(_per_query(a, b), _study("auto"))
    d = a - b
    # closed form: |mean(d)| + 1.96 * sd(d, ddof=1) / sqrt(n)
    expected = abs(d.mean()) + 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    value, source = margins[("m", "t", 3)]
    assert value == pytest.approx(expected, rel=1e-12)
    assert source.startswith("noise floor") and not notes


def test_fixed_and_absent_margins():
    per_query = _per_query([0.1, 0.2], [0.1, 0.3])
    assert resolve_margins(per_query, _study(0.02))[0][("m", "t", 3)] == (0.02, "study file (analysis.margin)")
    assert resolve_margins(per_query, _study(None))[0][("m", "t", 3)] == (None, None)
    one_set = per_query[per_query.demo_set == 0]
    margins, notes = resolve_margins(one_set, _study("auto"))
    assert margins[("m", "t", 3)] == (None, None) and "needs >= 2 demo sets" in notes[0]


@pytest.mark.parametrize(("low", "high", "expected"), [(0.6, 0.9, "equivalent"), (0.1, 0.4, "different"),
                                                       (0.3, 0.7, "inconclusive")])
def test_alignment_rule(low, high, expected):
    row = {"p_value": 0.01, "ci_low": low, "ci_high": high, "margin": None, "_eq_low": np.nan,
           "_eq_high": np.nan, "rule": "alignment"}
    assert finalise([row], alignment_margin=0.5)["verdict"].iloc[0] == expected


def test_bayes_drops_a_method_with_a_pure_order_shift_and_fits_the_rest():
    pytest.importorskip("pymc")
    from hyptest.analysis import _bayes

    rng = np.random.default_rng(3)
    rows = []
    shift = rng.normal(0, 0.3, size=4)  # one shift per order, the same for every query: no interaction
    for method in ("icl", "sgd", "flat"):
        for s in range(2):
            base = rng.normal(0, 1, size=6)
            for o in range(4):
                for q in range(6):
                    if method == "flat":
                        y = base[q] + shift[o]
                    else:
                        y = base[q] + rng.normal(0, 0.5 if method == "icl" else 0.2)
                    rows.append({"model": "m", "task": "t", "n_demos": 3, "method": method, "demo_set": s,
                                 "order_id": o, "query_id": f"q{q}", "seed": 0, "p_gold": 1 / (1 + np.exp(-y))})
    data = yaml.safe_load(TINY_STUDY)
    data["analysis"].update({"bayes": True, "bayes_draws": 200})
    out_rows, nulls, notes = [], [], []
    fits = _bayes(pd.DataFrame(rows), parse_study(data), out_rows, nulls, notes)
    assert ("m", "t", 3) in fits
    assert any("fitted without flat" in n for n in notes)
    assert {r["method_b"] for r in out_rows} == {"sgd"}
