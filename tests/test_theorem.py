"""Theorem-1 check and verdicts against scipy and hand-worked cases."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hyptest.stats.theorem import theorem1_check
from hyptest.stats.verdict import decide


def _per_query(sd_icl, sd_gd, sd_sgd=None):
    rows = []
    for method, values in (("icl", sd_icl), ("gd", sd_gd), ("sgd", sd_sgd)):
        if values is None:
            continue
        for i, v in enumerate(values):
            rows.append({"model": "m", "task": "t", "n_demos": 4, "method": method, "method_kind": method,
                         "demo_set": i % 2, "query_id": f"q{i // 2}", "sd_gold": v, "sd_labels": v / 2,
                         "spread": 2 * v})
    return pd.DataFrame(rows)


def test_pvalue_matches_scipy_exact():
    rng = np.random.default_rng(1)
    icl = rng.uniform(0.01, 0.05, size=8)
    gd = rng.uniform(0.0, 0.04, size=8)
    table, nulls = theorem1_check(_per_query(icl, gd), n_resamples=1000, rng=0)
    row = table[table.analysis == "order_sensitivity"].iloc[0]
    d = icl - gd
    # scipy.stats.permutation_test((d,), mean, permutation_type="samples") enumerates all 2^8 sign flips
    ref = stats.permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                 n_resamples=np.inf, alternative="two-sided")
    assert row["p_value"] == pytest.approx(ref.pvalue, abs=1e-12)
    assert row["estimate"] == pytest.approx(d.mean(), rel=1e-12)
    assert "exact" in row["test"] and len(nulls[row.name]) == 256
    # a naive enumeration of the same null
    null = [np.mean(d * np.array(s)) for s in itertools.product([-1, 1], repeat=8)]
    assert row["p_value"] == pytest.approx(np.mean(np.abs(null) >= abs(d.mean()) - 1e-15), abs=1e-12)
    assert row["ratio"] == pytest.approx(icl.mean() / gd.mean())


def test_holm_across_family_and_verdicts():
    rng = np.random.default_rng(2)
    icl = rng.uniform(0.05, 0.1, size=40)
    gd = np.zeros(40)                      # order-invariant: ICL is clearly more sensitive
    sgd = icl + rng.normal(0, 0.01, 40)     # same sensitivity as ICL
    table, _ = theorem1_check(_per_query(icl, gd, sgd), n_resamples=5000, rng=0)
    assert len(table) == 4
    from statsmodels.stats.multitest import multipletests

    np.testing.assert_allclose(table.p_adjusted, multipletests(table.p_value, method="holm")[1], rtol=1e-12)
    gd_rows = table[table.method_b == "gd"]
    assert (gd_rows.verdict == "different").all()
    assert (gd_rows.p_adjusted < 1e-3).all()
    sgd_row = table[(table.method_b == "sgd") & (table.analysis == "order_sensitivity")].iloc[0]
    assert sgd_row.verdict == "inconclusive"   # no margin given: equivalence cannot be declared
    table_m, _ = theorem1_check(_per_query(icl, gd, sgd), n_resamples=5000, margin=0.02, rng=0)
    sgd_row = table_m[(table_m.method_b == "sgd") & (table_m.analysis == "order_sensitivity")].iloc[0]
    assert sgd_row.verdict == "equivalent"
    assert sgd_row.min_equivalence_margin < 0.02


@pytest.mark.parametrize(
    ("p", "lo", "hi", "margin", "expected"),
    [
        (0.001, 0.02, 0.04, None, "different"),
        (0.001, 0.02, 0.04, 0.01, "different"),
        (0.001, 0.002, 0.004, 0.01, "negligible"),
        (0.30, -0.004, 0.006, 0.01, "equivalent"),
        (0.30, -0.004, 0.016, 0.01, "inconclusive"),
        (0.30, -0.004, 0.006, None, "inconclusive"),
        (float("nan"), 0.0, 0.0, 0.01, "inconclusive"),
    ],
)
def test_decide(p, lo, hi, margin, expected):
    assert decide(p, lo, hi, alpha=0.05, margin=margin) == expected


def test_decide_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`alpha`"):
        decide(0.1, 0, 0, alpha=2)
    with pytest.raises(ValueError, match="`margin`"):
        decide(0.1, 0, 0, margin=-1)


def test_unknown_reference():
    with pytest.raises(ValueError, match="`reference` method 'x'"):
        theorem1_check(_per_query([0.1, 0.2], [0.0, 0.0]), reference="x")
