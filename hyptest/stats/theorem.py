"""Theorem-1 checks: is ICL's order sensitivity that of a GD method?

Shen et al. (Theorem 1): an algorithm equivalent to ICL has the same order
sensitivity. Full-batch GD is order-invariant, ICL is not, so a difference in
order sensitivity larger than the margin rejects the equivalence.

:func:`order_sensitivity_rows` builds the unadjusted comparison rows;
:func:`finalise` adjusts p-values across a family and assigns verdicts;
:func:`theorem1_check` does both for the order-sensitivity analyses alone.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from .bootstrap import bootstrap_ci
from .equivalence import min_equivalence_margin, tost_paired
from .multiplicity import adjust_pvalues
from .permutation import paired_permutation_test
from .verdict import decide

__all__ = ["ORDER_ANALYSES", "Margin", "finalise", "order_sensitivity_rows", "paired_row", "theorem1_check"]

#: analysis name -> per-query column it compares.
ORDER_ANALYSES: dict[str, str] = {
    "order_sensitivity": "sd_gold",
    "order_sensitivity_labels": "sd_labels",
}

#: (margin value or None, where it came from)
Margin = tuple[float | None, str | None]


def _validate_per_query(per_query: pd.DataFrame, reference: str) -> None:
    needed = ["model", "task", "n_demos", "method", "demo_set", "query_id", *ORDER_ANALYSES.values()]
    missing = [c for c in needed if c not in per_query.columns]
    if missing:
        raise ValueError(f"`per_query` lacks the column(s) {missing}")
    if reference not in set(per_query["method"]):
        raise ValueError(f"`reference` method {reference!r} has no rows in `per_query`")


def _binary(group: pd.DataFrame) -> bool:
    return "n_labels" in group.columns and bool((group["n_labels"] == 2).all())


def paired_row(
    x: np.ndarray,
    y: np.ndarray,
    *,
    clusters: np.ndarray | None,
    alpha: float,
    confidence: float,
    n_resamples: int,
    ci_type: str,
    margin: Margin,
    rng: np.random.Generator,
) -> tuple[dict[str, Any], np.ndarray]:
    """Test and interval for paired per-unit values ``x`` (reference) and ``y``.

    Returns the row's numbers (estimate = mean(x - y), permutation p-value,
    bootstrap CI, TOST against the margin when there is one, the smallest
    margin TOST would accept) and the permutation null distribution.
    """
    d = x - y
    if clusters is None:
        test = paired_permutation_test(x, y, n_resamples=n_resamples, rng=rng)
        unit = "pairs"
    else:
        # the queries of one demo set share its orders and its randomness: flip whole demo sets
        # (sign-flip test of the per-set mean differences), so the test generalises over demo sets
        labels, codes = np.unique(clusters, return_inverse=True)
        set_means = np.bincount(codes, weights=d) / np.bincount(codes)
        test = paired_permutation_test(set_means, n_resamples=n_resamples, rng=rng)
        unit = f"{len(labels)} demo sets"
    boot = bootstrap_ci(d, confidence=confidence, n_resamples=n_resamples, method=ci_type,
                        clusters=clusters, rng=rng)
    value, source = margin
    kind = "exact" if test.exact else f"{test.n_resamples} resamples"
    kind += f", units: {unit}"
    where = "clusters: demo sets, then queries" if clusters is not None else "pairs"
    row: dict[str, Any] = {
        "estimate": float(d.mean()),
        "ci_low": float(boot.ci_low),
        "ci_high": float(boot.ci_high),
        "ci_level": confidence,
        "ci_method": f"bootstrap ({ci_type}, {where})",
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "statistic": float(test.statistic),
        "p_value": float(test.pvalue),
        "test": f"paired sign-flip permutation test ({kind})",
        "n": int(len(x)),
        "margin": value,
        "margin_source": source,
        "p_equivalence": None,
        "_eq_low": float("nan"),
        "_eq_high": float("nan"),
        "rule": "difference",
    }
    units_d = d if clusters is None else set_means
    if len(units_d) >= 2 and np.ptp(units_d) > 0:
        row["min_equivalence_margin"] = float(min_equivalence_margin(units_d, alpha=alpha))
    else:
        row["min_equivalence_margin"] = float(np.abs(units_d).max())
    if value is not None:
        tost = tost_paired(d if clusters is None else set_means, margin=value, alpha=alpha)
        row.update(p_equivalence=float(tost.pvalue), _eq_low=float(tost.ci_low), _eq_high=float(tost.ci_high))
        row["test"] += " + TOST (paired t)"
    mean_b = row["mean_b"]
    row["ratio"] = row["mean_a"] / mean_b if mean_b > 0 else float("inf")
    return row, np.asarray(test.null_distribution)


def order_sensitivity_rows(
    per_query: pd.DataFrame,
    *,
    reference: str = "icl",
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 10000,
    margins: Mapping[tuple[Any, Any, int], Margin] | float | None = None,
    ci_type: str = "percentile",
    cluster: bool = False,
    rng: np.random.Generator | int | None = None,
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Unadjusted order-sensitivity comparisons of ``reference`` with every other method.

    Pairs per-query order sensitivities by (demo set, query); see
    :func:`theorem1_check` for the statistics. With two labels the
    label-distribution analysis equals the P(gold) one and is not repeated.

    Returns
    -------
    rows : list of dict
        One per comparison, p-values not yet adjusted and no verdict yet.
    nulls : list of numpy.ndarray
        The permutation null distribution of each row.
    """
    _validate_per_query(per_query, reference)
    rng = np.random.default_rng(rng)
    rows: list[dict[str, Any]] = []
    nulls: list[np.ndarray] = []
    for (model, task, n_demos), group in per_query.groupby(["model", "task", "n_demos"], sort=True):
        margin: Margin
        if isinstance(margins, Mapping):
            margin = margins.get((model, task, int(n_demos)), (None, None))
        elif margins is None:
            margin = (None, None)
        else:
            margin = (float(margins), "study file (analysis.margin)")
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
                clusters = pair.index.get_level_values("demo_set").to_numpy() if cluster else None
                numbers, null = paired_row(
                    x, y, clusters=clusters, alpha=alpha, confidence=confidence, n_resamples=n_resamples,
                    ci_type=ci_type, margin=margin, rng=rng,
                )
                rows.append({"model": model, "task": task, "n_demos": int(n_demos), "method_a": reference,
                             "method_b": method, "analysis": analysis, **numbers})
                nulls.append(null)
    return rows, nulls


def finalise(
    rows: list[dict[str, Any]],
    *,
    alpha: float = 0.05,
    adjust: str = "holm",
    alignment_margin: float = 0.5,
) -> pd.DataFrame:
    """Adjust p-values across the whole family of rows and assign verdicts.

    Rows with ``rule == "difference"`` get :func:`hyptest.stats.verdict.decide`
    on the adjusted p-value and their TOST interval. Rows with
    ``rule == "alignment"`` (order-effect correlation ``r``; equivalence
    predicts ``r = 1``) are ``equivalent`` when the CI of ``r`` lies above
    ``alignment_margin``, ``different`` when it lies below it, else
    ``inconclusive``.
    """
    table = pd.DataFrame(rows)
    table["p_adjusted"] = adjust_pvalues(table["p_value"].to_numpy(float), method=adjust)
    table["adjust_method"] = adjust
    table["family_size"] = int(table["p_value"].notna().sum())  # Bayes rows carry no p-value
    verdicts = []
    for row in table.to_dict("records"):
        if row.get("rule") == "bayes":
            verdicts.append(row["_verdict"])  # HDI + ROPE, gated by convergence diagnostics
        elif row.get("rule") == "alignment":
            if row["ci_low"] > alignment_margin:
                verdicts.append("equivalent")
            elif row["ci_high"] < alignment_margin:
                verdicts.append("different")
            else:
                verdicts.append("inconclusive")
        else:
            margin = row.get("margin")
            margin = None if margin is None or pd.isna(margin) else float(margin)
            verdicts.append(decide(row["p_adjusted"], row["_eq_low"], row["_eq_high"], alpha=alpha, margin=margin))
    table["verdict"] = verdicts
    table["margin"] = table["margin"].astype(object).where(table["margin"].notna(), None)
    return table.drop(columns=[c for c in ("_eq_low", "_eq_high", "_verdict") if c in table.columns])


def theorem1_check(
    per_query: pd.DataFrame,
    *,
    reference: str = "icl",
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 10000,
    margin: float | None = None,
    adjust: str = "holm",
    ci_type: str = "percentile",
    cluster: bool = False,
    rng: np.random.Generator | int | None = None,
) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Compare the order sensitivity of ``reference`` with every other method.

    For each (model, task, N) and each other method, the per-query order
    sensitivities are paired by (demo set, query) and the differences
    ``d = sd_reference - sd_method`` are tested with a paired sign-flip
    permutation test (exact when ``2**n <= n_resamples``); the mean difference
    gets a bootstrap CI at ``confidence`` (over pairs, or over demo sets then
    queries when ``cluster``), and, with a margin, a paired TOST whose
    ``1 - 2 alpha`` interval decides equivalence. p-values are adjusted across
    every comparison of the call (the study's family).

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
    ci_type : {"percentile", "bca"}
        Bootstrap interval.
    cluster : bool, default False
        Resample demo sets, then queries within them.
    rng : numpy.random.Generator or int, optional
        Source of randomness.

    Returns
    -------
    comparisons : pandas.DataFrame
        One row per comparison with columns ``model, task, n_demos, method_a,
        method_b, analysis, estimate, ci_low, ci_high, ci_level, ci_method,
        mean_a, mean_b, ratio, statistic, p_value, p_adjusted, adjust_method,
        test, n, margin, margin_source, p_equivalence, min_equivalence_margin,
        verdict``.
    null_distributions : dict
        Row index -> permutation null distribution of the mean difference.

    References
    ----------
    .. [1] Shen, Mishra, Khashabi (2023), arXiv:2310.08540, Theorem 1.
    .. [2] Phipson & Smyth (2010), Permutation p-values should never be zero.
    .. [3] Lakens (2017), Equivalence tests, SPPS 8(4).
    """
    rows, nulls = order_sensitivity_rows(
        per_query, reference=reference, alpha=alpha, confidence=confidence, n_resamples=n_resamples,
        margins=margin, ci_type=ci_type, cluster=cluster, rng=rng,
    )
    table = finalise(rows, alpha=alpha, adjust=adjust)
    return table.drop(columns=["rule"]), dict(enumerate(nulls))
