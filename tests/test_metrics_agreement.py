"""ICL-vs-GD agreement pairs the same order; the ICL reference pairs consecutive orders."""

from __future__ import annotations

import pandas as pd
import pytest

from hyptest.metrics.agreement import agreement_table


def _row(method, order, ids, probs, label_probs, seed=0):
    return {"model": "m", "task": "t", "n_demos": 2, "demo_set": 0, "query_id": "q", "method": method,
            "order_id": order, "seed": seed, "topk_ids": ids, "topk_probs": probs, "label_probs": label_probs}


def test_pairs_by_hand():
    records = pd.DataFrame([
        _row("icl", 0, [1, 2], [0.6, 0.3], [0.7, 0.3]),
        _row("icl", 1, [2, 3], [0.5, 0.4], [0.4, 0.6]),
        _row("gd", 0, [1, 2], [0.3, 0.6], [0.7, 0.3]),
        _row("gd", 1, [4, 5], [0.5, 0.4], [0.5, 0.5]),
    ])
    out = agreement_table(records, k=2).set_index("method")
    # ICL reference: order 0 vs 1 -> {1,2} & {2,3} = 1 of 2; order 1 vs 0 the same -> 0.5
    assert out.loc["icl", "token_overlap"] == pytest.approx(0.5)
    # one shared token: cosine of 1-vectors is 1 for both ordered pairs
    assert out.loc["icl", "overlap_cosine"] == pytest.approx(1.0)
    # GD: order 0 -> {1,2} vs {1,2}: 1.0; order 1 -> {2,3} vs {4,5}: 0.0; mean 0.5
    assert out.loc["gd", "token_overlap"] == pytest.approx(0.5)
    # order 0 cosine on shared {1,2}: (0.6*0.3 + 0.3*0.6) / (|(0.6,0.3)|^2) = 0.36 / 0.45 = 0.8; order 1: 0
    assert out.loc["gd", "overlap_cosine"] == pytest.approx(0.4)
    # JS of identical label distributions is 0 (order 0); order 1 by scipy's jensenshannon(base e)^2
    from scipy.spatial.distance import jensenshannon

    expected = (0.0 + jensenshannon([0.4, 0.6], [0.5, 0.5]) ** 2) / 2
    assert out.loc["gd", "label_js"] == pytest.approx(expected, rel=1e-9)
    # KL(ICL || GD) by scipy's entropy (base e): order 0 identical (0), order 1 [0.4, 0.6] vs [0.5, 0.5]
    from scipy.stats import entropy

    assert out.loc["gd", "label_kl"] == pytest.approx((0.0 + entropy([0.4, 0.6], [0.5, 0.5])) / 2, rel=1e-9)


def test_unknown_reference():
    records = pd.DataFrame([_row("gd", 0, [1, 2], [0.6, 0.3], [0.7, 0.3])])
    with pytest.raises(ValueError, match="reference"):
        agreement_table(records, k=2)
