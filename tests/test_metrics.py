"""Order sensitivity and accuracy on hand-made records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hyptest.metrics import accuracy_table, order_sensitivity


def _records():
    rows = []
    # one query, two orders, two methods; probabilities chosen by hand
    table = {("icl", 0): [0.8, 0.2], ("icl", 1): [0.6, 0.4], ("icl", 2): [0.7, 0.3],
             ("gd", 0): [0.55, 0.45], ("gd", 1): [0.55, 0.45], ("gd", 2): [0.55, 0.45]}
    for (method, order), probs in table.items():
        rows.append({"model": "m", "task": "t", "n_demos": 2, "method": method, "method_kind": method,
                     "demo_set": 0, "query_id": "q", "seed": 0, "order_id": order, "p_gold": probs[0],
                     "label_probs": probs, "correct": probs[0] > 0.5})
    return pd.DataFrame(rows)


def test_order_sensitivity_by_hand():
    out = order_sensitivity(_records()).set_index("method")
    # std(ddof=1) of (0.8, 0.6, 0.7) = 0.1
    assert out.loc["icl", "sd_gold"] == pytest.approx(0.1, abs=1e-12)
    assert out.loc["icl", "sd_labels"] == pytest.approx(0.1, abs=1e-12)
    assert out.loc["icl", "spread"] == pytest.approx(0.2, abs=1e-12)
    assert out.loc["gd", "sd_gold"] == 0.0 and out.loc["gd", "spread"] == 0.0
    assert out.loc["icl", "n_orders"] == 3


def test_seeds_are_averaged():
    rec = _records()
    other = rec.copy()
    other["seed"] = 1
    other.loc[other.method == "icl", "p_gold"] = [0.5, 0.5, 0.8]
    other.loc[other.method == "icl", "label_probs"] = pd.Series([[0.5, 0.5], [0.5, 0.5], [0.8, 0.2]],
                                                                index=other.index[other.method == "icl"])
    out = order_sensitivity(pd.concat([rec, other])).set_index("method")
    expected = (0.1 + np.std([0.5, 0.5, 0.8], ddof=1)) / 2
    assert out.loc["icl", "sd_gold"] == pytest.approx(expected, abs=1e-12)
    assert out.loc["icl", "n_seeds"] == 2


def test_accuracy_table():
    acc = accuracy_table(_records()).set_index("method")
    assert acc.loc["icl", "accuracy"] == 1.0 and acc.loc["icl", "n"] == 3
    assert acc.loc["gd", "mean_p_gold"] == pytest.approx(0.55)


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="p_gold"):
        order_sensitivity(_records().drop(columns="p_gold"))
