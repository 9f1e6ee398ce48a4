"""Theorem-1 check: is ICL's order sensitivity that of a GD method?

Shen et al. (Theorem 1): if an algorithm is equivalent to ICL it has the same
order sensitivity. Full-batch GD is order-invariant, ICL is not, so a
significant difference in order sensitivity rejects the equivalence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import bootstrap_ci
from .multiplicity import adjust_pvalues
from .permutation import paired_permutation_test
from .verdict import decide

__all__ = ["ORDER_ANALYSES", "theorem1_check"]

#: analysis name -> per-query column it compares.
ORDER_ANALYSES: dict[str, str] = {
    "order_sensitivity": "sd_gold",
    "order_sensitivity_labels": "sd_labels",
}


def _validate_per_query(per_query: pd.DataFrame, reference: str) -> None:
    needed = ["model", "task", "n_demos", "method", "demo_set", "query_id", *ORDER_ANALYSES.values()]
    missing = [c for c in needed if c not in per_query.columns]
    if missing:
        raise ValueError(f"`per_query` lacks the column(s) {missing}")
    if reference not in set(per_query["method"]):
        raise ValueError(f"`reference` method {reference!r} has no rows in `per_query`")


def _binary(group: pd.DataFrame) -> bool:
    return "n_labels" in group.columns and bool((group["n_labels"] == 2).all())


def theorem1_check(
    per_query: pd.DataFrame,
    *,
    reference: str = "icl",
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 10000,
    margin: float | None = None,
    adjust: str = "holm",
    rng: np.random.Generator | int | None = None,
) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Compare the order sensitivity of ``reference`` with every other method.

    For each (model, task, N) and each other method, the per-query order
    sensitivities are paired by (demo set, query) and the differences
    ``d = sd_reference - sd_method`` are tested with a paired sign-flip
    permutation test (exact when ``2**n <= n_resamples``); the mean difference
    gets a percentile bootstrap CI at ``confidence`` and a ``1 - 2 alpha``
    interval for the equivalence (TOST) side. p-values are adjusted across
    every comparison of the call (the study's family). With two labels the
    label-distribution analysis equals the P(gold) one and is not repeated.

    Parameters
    ----------
    per_query : pandas.DataFrame
        Output of :func:`hyptest.metrics.order_sensitivity`.
    reference : str, default "icl"
        The method every other one is compared with.
    alpha, confidence : float
        Significance level and CI level.
    n_resamples : int
        Permutation and bootstrap resamples.
    margin : float or None
        Equivalence margin on the difference of mean order sensitivity.
    adjust : {"holm", "bonferroni", "bh"}
        Multiplicity adjustment across the family.
    rng : numpy.random.Generator or int, optional
        Source of randomness.

    Returns
    -------
    comparisons : pandas.DataFrame
        One row per comparison with columns ``model, task, n_demos, method_a,
        method_b, analysis, estimate, ci_low, ci_high, ci_level, ci_method,
        mean_a, mean_b, ratio, statistic, p_value, p_adjusted, adjust_method,
        test, n, margin, margin_source, min_equivalence_margin, verdict``.
    null_distributions : dict
        Row index -> permutation null distribution of the mean difference.
    """
    _validate_per_query(per_query, reference)
    rng = np.random.default_rng(rng)
    rows: list[dict[str, Any]] = []
    nulls: dict[int, np.ndarray] = {}
    for (model, task, n_demos), group in per_query.groupby(["model", "task", "n_demos"], sort=True):
        ref = group[group["method"] == reference].set_index(["demo_set", "query_id"])
        for method in sorted(set(group["method"]) - {reference}):
            other = group[group["method"] == method].set_index(["demo_set", "query_id"])
            joined = ref.merge(other, how="inner", left_index=True, right_index=True, suffixes=("_a", "_b"))
            for analysis, column in ORDER_ANALYSES.items():
                if column == "sd_labels" and _binary(group):
                    continue  # identical to sd_gold with two labels: not a separate test
                pair = joined[[f"{column}_a", f"{column}_b"]].dropna()
                x = pair[f"{column}_a"].to_numpy(float)
                y = pair[f"{column}_b"].to_numpy(float)
                if len(x) < 2:
                    raise ValueError(
                        f"{model}/{task}/N={n_demos}: {reference} vs {method} has {len(x)} paired "
                        "queries; at least 2 are needed"
                    )
                test = paired_permutation_test(x, y, n_resamples=n_resamples, rng=rng)
                boot = bootstrap_ci(x - y, confidence=confidence, n_resamples=n_resamples, rng=rng)
                dist = np.asarray(boot.bootstrap_distribution)
                eq_low, eq_high = np.quantile(dist, [alpha, 1 - alpha])
                mean_a, mean_b = float(x.mean()), float(y.mean())
                kind = "exact" if test.exact else f"{test.n_resamples} resamples"
                nulls[len(rows)] = np.asarray(test.null_distribution)
                rows.append(
                    {
                        "model": model,
                        "task": task,
                        "n_demos": int(n_demos),
                        "method_a": reference,
                        "method_b": method,
                        "analysis": analysis,
                        "estimate": float(test.statistic),
                        "ci_low": float(boot.ci_low),
                        "ci_high": float(boot.ci_high),
                        "ci_level": confidence,
                        "ci_method": "bootstrap (percentile, pairs)",
                        "mean_a": mean_a,
                        "mean_b": mean_b,
                        "ratio": mean_a / mean_b if mean_b > 0 else float("inf"),
                        "statistic": float(test.statistic),
                        "p_value": float(test.pvalue),
                        "test": f"paired sign-flip permutation test ({kind})",
                        "n": int(len(x)),
                        "margin": margin,
                        "margin_source": "study file (analysis.margin)" if margin is not None else None,
                        "min_equivalence_margin": float(max(abs(eq_low), abs(eq_high))),
                        "_eq_low": float(eq_low),
                        "_eq_high": float(eq_high),
                    }
                )
    table = pd.DataFrame(rows)
    table["p_adjusted"] = adjust_pvalues(table["p_value"].to_numpy(), method=adjust)
    table["adjust_method"] = adjust
    table["verdict"] = [
        decide(p, lo, hi, alpha=alpha, margin=margin)
        for p, lo, hi in zip(table["p_adjusted"], table["_eq_low"], table["_eq_high"])
    ]
    return table.drop(columns=["_eq_low", "_eq_high"]), nulls
