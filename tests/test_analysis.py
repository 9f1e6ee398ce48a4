"""Analysis-level behaviour that needs the hierarchical model (the decision layer: tests/test_decision.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from hyptest.study import parse_study

from .conftest import TINY_STUDY


def test_bayes_fits_a_method_with_a_pure_order_shift_beside_the_others():
    pytest.importorskip("pymc")
    from hyptest.analysis.order import _bayes

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
    comparisons, notes = [], []
    fits = _bayes(pd.DataFrame(rows), parse_study(data), comparisons, notes)
    assert ("m", "t", 3) in fits
    assert not any("not fitted" in n or "without" in n for n in notes)  # (200 draws may not converge: said)
    # the per-query SD across orders includes the order main effect: a pure shift is an order effect too
    assert {c.method_b for c in comparisons} == {"sgd", "flat"}
