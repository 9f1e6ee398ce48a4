"""Every analysis of a study, from stored records to one family of comparisons.

Reads only the long-format records (the store's schema) and the validated
study; returns tables. The pipeline writes them; the report renders them.

Analyses, per (model, task, N) and per method compared with the reference:

``order_sensitivity`` / ``order_sensitivity_labels``
    Theorem-1 check on per-(demo set, query) order SDs: permutation test,
    bootstrap CI, TOST against the margin.
``variance_ratio_bf`` / ``log_variance_ratio``
    Order effects as variances: Brown-Forsythe test and a permutation test of
    the log variance ratio, on deviations of P(gold) from each unit's mean
    over orders.
``order_alignment``
    Mantel-style permutation test of the correlation of per-order effects
    (methods whose outputs depend on the order), with a bootstrap CI of r.
``token_overlap`` / ``overlap_cosine`` / ``label_js`` / ``label_kl``
    ICL's agreement with itself under another order (``mean_a``) minus its
    agreement with the method under the same order (``mean_b``).
``order_sensitivity_vocab``
    Shen et al.'s order sensitivity over the whole vocabulary (per-token SD
    across orders summed over tokens, from the stored top-k; the truncation
    bound is in ``hyptest.sweeps.vocab_order_table``), paired per (set, query).

All p-values form one family, adjusted together (Holm by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .metrics import order_sensitivity
from .metrics.agreement import AGREEMENT_METRICS, agreement_table
from .stats.alignment import order_alignment_ci, order_alignment_test
from .stats.bootstrap import bootstrap_ci
from .stats.equivalence import noise_floor_margin
from .stats.theorem import Margin, finalise, order_sensitivity_rows, paired_row
from .stats.variance import brown_forsythe, log_variance_ratio_permutation_test
from .study import Study
from .sweeps import vocab_order_per_query

__all__ = ["AnalysisOutput", "resolve_margins", "run_analyses"]

_GROUP = ["model", "task", "n_demos"]


@dataclass
class AnalysisOutput:
    """Tables produced by :func:`run_analyses`."""

    comparisons: pd.DataFrame
    nulls: dict[int, np.ndarray]
    per_query: pd.DataFrame
    agreement: pd.DataFrame
    margins: dict[tuple[Any, Any, int], Margin] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: (model, task, N) -> BayesResult of the hierarchical model, when it ran
    bayes: dict[tuple[Any, Any, int], Any] = field(default_factory=dict)


def resolve_margins(per_query: pd.DataFrame, study: Study) -> tuple[dict[tuple[Any, Any, int], Margin], list[str]]:
    """The equivalence margin of each (model, task, N) and where it came from.

    ``analysis.margin`` may be a number (used everywhere), ``null`` (no
    equivalence test) or ``auto``: the noise floor of the reference method
    itself, i.e. how much its mean order sensitivity differs between two
    halves of the demo sets (even vs odd set index), paired by query, plus
    1.96 standard errors. Two exchangeable halves of one method are what
    "equivalent" looks like in this study; the comparison being judged is
    never used to set its own margin.
    """
    spec = study.analysis.margin
    notes: list[str] = []
    margins: dict[tuple[Any, Any, int], Margin] = {}
    for (model, task, n_demos), group in per_query.groupby(_GROUP, sort=True):
        key = (model, task, int(n_demos))
        if spec is None:
            margins[key] = (None, None)
        elif spec != "auto":
            margins[key] = (float(spec), "study file (analysis.margin)")
        else:
            ref = group[group["method"] == study.analysis.reference]
            halves = ref.assign(half=ref["demo_set"] % 2).groupby(["half", "query_id"])["sd_gold"].mean()
            if ref["demo_set"].nunique() < 2 or halves.index.get_level_values("half").nunique() < 2:
                margins[key] = (None, None)
                notes.append(f"{model}/{task}/N={n_demos}: margin 'auto' needs >= 2 demo sets; no equivalence test")
                continue
            wide = halves.unstack("half").dropna()
            floor = noise_floor_margin(wide[0].to_numpy(), wide[1].to_numpy())
            if not floor.margin > 0:
                margins[key] = (None, None)
                notes.append(f"{model}/{task}/N={n_demos}: the noise floor is 0; no equivalence test")
                continue
            source = (f"noise floor: {study.analysis.reference} order sensitivity, even vs odd demo sets "
                      f"(|Δ| {abs(floor.difference):.3g} + 1.96 SE {floor.standard_error:.3g}, n = {floor.n})")
            margins[key] = (float(floor.margin), source)
    return margins, notes


def _per_order_cube(records: pd.DataFrame, method: str) -> tuple[np.ndarray, list[Any], list[Any], list[Any]]:
    """P(gold) of one method as (demo_set, order_id, query) — seeds averaged."""
    rows = records[records["method"] == method]
    table = rows.groupby(["demo_set", "order_id", "query_id"])["p_gold"].mean()
    sets = sorted(table.index.get_level_values(0).unique())
    orders = sorted(table.index.get_level_values(1).unique())
    queries = sorted(table.index.get_level_values(2).unique())
    full = pd.MultiIndex.from_product([sets, orders, queries])
    cube = table.reindex(full).to_numpy().reshape(len(sets), len(orders), len(queries))
    return cube, sets, orders, queries


def _variance_rows(cube_a: np.ndarray, cube_b: np.ndarray, *, n_resamples: int, confidence: float,
                   rng: np.random.Generator) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    dev_a = (cube_a - cube_a.mean(axis=1, keepdims=True)).ravel()
    dev_b = (cube_b - cube_b.mean(axis=1, keepdims=True)).ravel()
    # bootstrap CI of log(var_a / var_b) over (demo set, query) units, reweighting per-unit sums of squares
    ss_a = ((cube_a - cube_a.mean(axis=1, keepdims=True)) ** 2).sum(axis=1).ravel()
    ss_b = ((cube_b - cube_b.mean(axis=1, keepdims=True)) ** 2).sum(axis=1).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = float(np.log(ss_a.sum() / ss_b.sum()))
        w = rng.multinomial(len(ss_a), np.full(len(ss_a), 1 / len(ss_a)), size=min(n_resamples, 4999))
        boot = np.log((w @ ss_a) / (w @ ss_b))
    tail = (1 - confidence) / 2
    ci = np.quantile(boot, [tail, 1 - tail]) if np.isfinite(boot).all() else (estimate, estimate)
    base = {"estimate": estimate, "statistic": estimate, "ci_low": float(ci[0]), "ci_high": float(ci[1]),
            "ci_level": confidence, "ci_method": "bootstrap (percentile, demo set x query units)",
            "mean_a": float(dev_a.var(ddof=1)), "mean_b": float(dev_b.var(ddof=1)),
            "ratio": float(np.exp(estimate)) if np.isfinite(estimate) else float("inf"),
            "n": int(len(ss_a)), "margin": None, "margin_source": None, "p_equivalence": None,
            "min_equivalence_margin": None, "_eq_low": float("nan"), "_eq_high": float("nan"),
            "rule": "difference"}
    bf = brown_forsythe(dev_a, dev_b)
    rows = [{**base, "analysis": "variance_ratio_bf", "p_value": float(bf.pvalue),
             "test": "Brown-Forsythe (Levene, median-centred) on deviations across orders"}]
    nulls = [np.array([])]
    if dev_a.var() > 0 and dev_b.var() > 0:
        perm = log_variance_ratio_permutation_test(dev_a, dev_b, n_resamples=n_resamples, rng=rng)
        kind = "exact" if perm.exact else f"{perm.n_resamples} resamples"
        rows.append({**base, "analysis": "log_variance_ratio", "p_value": float(perm.pvalue),
                     "test": f"permutation test of log variance ratio, median-centred ({kind})"})
        nulls.append(np.asarray(perm.null_distribution))
    return rows, nulls


def _alignment_row(cube_a: np.ndarray, cube_b: np.ndarray, *, n_resamples: int, confidence: float,
                   rng: np.random.Generator) -> tuple[dict[str, Any], np.ndarray]:
    test = order_alignment_test(cube_a, cube_b, n_resamples=n_resamples, rng=rng)
    ci = order_alignment_ci(cube_a, cube_b, confidence=confidence, n_resamples=min(n_resamples, 4999), rng=rng)
    kind = "exact" if test.exact else f"{test.n_resamples} resamples"
    row = {"analysis": "order_alignment", "estimate": float(test.statistic), "statistic": float(test.statistic),
           "ci_low": ci.ci_low, "ci_high": ci.ci_high, "ci_level": confidence,
           "ci_method": "bootstrap (percentile, demo set x query units)", "mean_a": None, "mean_b": None,
           "ratio": None, "p_value": float(test.pvalue),
           "test": f"Mantel-style permutation of order labels within demo sets ({kind}), H0: r <= 0",
           "n": int(cube_a.shape[0] * cube_a.shape[2]), "margin": None, "margin_source": None,
           "p_equivalence": None, "min_equivalence_margin": None, "_eq_low": float("nan"),
           "_eq_high": float("nan"), "rule": "alignment"}
    return row, np.asarray(test.null_distribution)


def run_analyses(records: pd.DataFrame, study: Study) -> AnalysisOutput:
    """Run every analysis of a study on its records and decide every comparison.

    Parameters
    ----------
    records : pandas.DataFrame
        Long-format records of the study (see README, "result schema").
    study : Study
        The validated study (analysis settings, reference method).

    Returns
    -------
    AnalysisOutput
    """
    a = study.analysis
    rng = np.random.default_rng([study.seed, 7])
    single = records.groupby(_GROUP)["order_id"].transform("nunique") < 2
    single_keys = pd.MultiIndex.from_frame(records.loc[single, _GROUP].drop_duplicates())
    per_query = order_sensitivity(records)
    # zero-shot sees no demos, so it is order-invariant by construction: a baseline for accuracy and
    # agreement, not a candidate for ICL's order behaviour
    baselines = set(records.loc[records["method_kind"] == "zs", "method"])
    all_records, records = records, records[~records["method"].isin(baselines)]
    all_per_query, per_query = per_query, per_query[~per_query["method"].isin(baselines)]
    # one order (N = 1): no order analysis; accuracy and agreement with ICL still describe it
    records = records[~single.loc[records.index]]
    per_query = per_query[per_query["n_orders"] >= 2]
    margins, notes = resolve_margins(per_query, study)
    notes += [f"{m}/{t}/N={n}: a single order, so no order analysis (accuracy and agreement only)"
              for m, t, n in sorted(single_keys)]
    n_sets = int(per_query["demo_set"].nunique())
    cluster = a.bootstrap == "cluster" or (a.bootstrap == "auto" and n_sets >= 5)
    rows, nulls = order_sensitivity_rows(
        per_query, reference=a.reference, alpha=a.alpha, confidence=a.confidence, n_resamples=a.n_resamples,
        margins=margins, ci_type=a.ci_type, cluster=cluster, rng=rng,
    )
    for (model, task, n_demos), group in records.groupby(_GROUP, sort=True):
        context = {"model": model, "task": task, "n_demos": int(n_demos), "method_a": a.reference}
        cube_ref, sets, orders, queries = _per_order_cube(group, a.reference)
        for method in sorted(set(group["method"]) - {a.reference}):
            cube, *_ = _per_order_cube(group, method)
            if cube.shape != cube_ref.shape or np.isnan(cube).any() or np.isnan(cube_ref).any():
                notes.append(f"{model}/{task}/N={n_demos}: {method} lacks some (set, order, query) cells; "
                             "variance and alignment analyses skipped")
                continue
            new_rows, new_nulls = _variance_rows(cube_ref, cube, n_resamples=a.n_resamples,
                                                 confidence=a.confidence, rng=rng)
            rows += [{**context, "method_b": method, **r} for r in new_rows]
            nulls += new_nulls
            kind = group.loc[group["method"] == method, "method_kind"].iloc[0]
            if kind != "gd" and np.ptp(cube, axis=1).max() > 0 and np.ptp(cube_ref, axis=1).max() > 0:
                # full-batch GD is order-invariant by construction: its per-order "effects" are
                # float rounding, and correlating them with ICL's would test nothing
                row, null = _alignment_row(cube_ref, cube, n_resamples=a.n_resamples, confidence=a.confidence,
                                           rng=rng)
                rows.append({**context, "method_b": method, **row})
                nulls.append(null)
    agreement = agreement_table(all_records, reference=a.reference, k=a.overlap_k)
    if len(single_keys):  # ICL vs "ICL under another order" is ICL vs itself there: no reference row
        trivial = agreement.set_index(_GROUP).index.isin(single_keys) & (agreement["method"] == a.reference)
        agreement = agreement[~trivial]
    for (model, task, n_demos), group in agreement.groupby(_GROUP, sort=True):
        ref = group[group["method"] == a.reference].set_index(["demo_set", "query_id"])
        for method in sorted(set(group["method"]) - {a.reference}):
            other = group[group["method"] == method].set_index(["demo_set", "query_id"])
            joined = ref.merge(other, how="inner", left_index=True, right_index=True, suffixes=("_ref", ""))
            for metric in AGREEMENT_METRICS:
                x = joined[f"{metric}_ref"].to_numpy(float)  # reference vs itself, another order
                y = joined[metric].to_numpy(float)  # reference vs this method, same order
                ok = np.isfinite(x) & np.isfinite(y)
                if ok.sum() < 2:
                    continue
                numbers, null = paired_row(
                    x[ok], y[ok], clusters=None, alpha=a.alpha, confidence=a.confidence,
                    n_resamples=a.n_resamples, ci_type=a.ci_type, margin=(None, None), rng=rng,
                )
                numbers["ratio"] = float(x[ok].mean() / y[ok].mean()) if y[ok].mean() != 0 else None
                rows.append({"model": model, "task": task, "n_demos": int(n_demos), "method_a": a.reference,
                             "method_b": method, "analysis": metric, **numbers})
                nulls.append(null)
    rows_vocab, nulls_vocab = _vocab_rows(records, a, cluster=cluster, rng=rng)
    rows += rows_vocab
    nulls += nulls_vocab
    bayes = _bayes(records, study, rows, nulls, notes) if a.bayes else {}
    comparisons = finalise(rows, alpha=a.alpha, adjust=a.adjust, alignment_margin=a.alignment_margin)
    # pooled rows have no N: keep the others integers rather than floats
    comparisons["n_demos"] = comparisons["n_demos"].map(lambda v: None if pd.isna(v) else int(v)).astype(object)
    return AnalysisOutput(comparisons.drop(columns=["rule"]), dict(enumerate(nulls)), all_per_query, agreement,
                          margins, notes, bayes)


def _vocab_rows(records: pd.DataFrame, a: Any, *, cluster: bool, rng: np.random.Generator
                ) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Paired test of the vocabulary order sensitivity, reference vs each method (no margin)."""
    vocab = vocab_order_per_query(records)
    rows: list[dict[str, Any]] = []
    nulls: list[np.ndarray] = []
    for (model, task, n_demos), group in vocab.groupby(_GROUP, sort=True):
        ref = group[group["method"] == a.reference].set_index(["demo_set", "query_id"])
        if ref.empty:
            continue
        for method in sorted(set(group["method"]) - {a.reference}):
            other = group[group["method"] == method].set_index(["demo_set", "query_id"])
            joined = ref.merge(other, how="inner", left_index=True, right_index=True, suffixes=("_ref", ""))
            if len(joined) < 2:
                continue
            clusters = joined.index.get_level_values("demo_set").to_numpy() if cluster else None
            numbers, null = paired_row(
                joined["value_ref"].to_numpy(float), joined["value"].to_numpy(float), clusters=clusters,
                alpha=a.alpha, confidence=a.confidence, n_resamples=a.n_resamples, ci_type=a.ci_type,
                margin=(None, None), rng=rng,
            )
            mean_b = float(joined["value"].mean())
            numbers["ratio"] = float(joined["value_ref"].mean() / mean_b) if mean_b != 0 else None
            numbers["note"] = (f"top-{int(joined['top_k'].min())} truncation moves each per-query value by at most "
                               f"{float(max(joined['bound_ref'].max(), joined['bound'].max())):.3g}")
            rows.append({"model": model, "task": task, "n_demos": int(n_demos), "method_a": a.reference,
                         "method_b": method, "analysis": "order_sensitivity_vocab", **numbers})
            nulls.append(null)
    return rows, nulls


def _bayes(records: pd.DataFrame, study: Study, rows: list[dict[str, Any]], nulls: list[np.ndarray],
           notes: list[str]) -> dict[tuple[Any, Any, int], Any]:
    """Fit the hierarchical model per (model, task, N); append its rows (outside the p-value family)."""
    try:
        from .stats.bayes import NoOrderInteractionError, fit_order_variance
    except ImportError as error:  # pragma: no cover - pymc is an optional extra
        notes.append(f"hierarchical Bayes skipped: {error}; install it with pip install \"hyptest[bayes]\"")
        return {}
    a = study.analysis
    fits: dict[tuple[Any, Any, int], Any] = {}
    columns = ["method", "demo_set", "order_id", "query_id", "seed", "p_gold"]
    for (model, task, n_demos), group in records.groupby(_GROUP, sort=True):
        per_order = group[columns].copy()
        per_order.insert(0, "n_demos", int(n_demos))
        per_order.insert(0, "task", task)
        per_order.insert(0, "model", model)
        fit = None
        while fit is None:
            try:
                fit = fit_order_variance(per_order, reference=a.reference, rope=a.rope, hdi_prob=a.hdi_prob,
                                         draws=a.bayes_draws, tune=a.bayes_draws, seed=study.seed)
            except NoOrderInteractionError as error:
                # a method whose order effect is the same shift for every query cannot be modelled;
                # fit the others rather than none
                if error.method == a.reference:
                    notes.append(f"{model}/{task}/N={n_demos}: hierarchical Bayes not fitted: {error}")
                    break
                per_order = per_order[per_order["method"] != error.method]
                notes.append(f"{model}/{task}/N={n_demos}: hierarchical Bayes fitted without {error.method}: "
                             f"{error}")
            except ValueError as error:
                notes.append(f"{model}/{task}/N={n_demos}: hierarchical Bayes not fitted: {error}")
                break
        if fit is None:
            continue
        fits[(model, task, int(n_demos))] = fit
        if not fit.converged:
            notes.append(f"{model}/{task}/N={n_demos}: the hierarchical model did not converge ({fit.reason}); "
                         "its rows say so instead of deciding")
        for row in fit.table.to_dict("records"):
            rows.append({
                "model": model, "task": task, "n_demos": int(n_demos), "method_a": row["method_a"],
                "method_b": row["method_b"], "analysis": "bayes_order_variance",
                "estimate": row["estimate"], "statistic": row["estimate"], "ci_low": row["ci_low"],
                "ci_high": row["ci_high"], "ci_level": row["ci_level"],
                "ci_method": f"{row['ci_level']:.0%} HDI of log(σ_order,{row['method_a']} / σ_order,{row['method_b']})",
                "mean_a": row.get("sigma_order_a"), "mean_b": row.get("sigma_order_b"),
                "ratio": float(np.exp(row["estimate"])) if np.isfinite(row["estimate"]) else None,
                "p_value": float("nan"), "p_rope": row["p_rope"], "rope": row["rope"],
                "test": f"hierarchical Bayes (PyMC, {row['sampler']}): HDI + ROPE ±{row['rope']:.3g}",
                "n": int(row["n_sets"] * row["n_orders"] * row["n_queries"]), "margin": row["rope"],
                "margin_source": "ROPE on the log σ ratio (analysis.rope)", "p_equivalence": None,
                "min_equivalence_margin": None, "_eq_low": float("nan"), "_eq_high": float("nan"),
                "rule": "bayes", "_verdict": row["verdict"], "note": row.get("note"),
            })
            nulls.append(np.array([]))
    _pooled(fits, study, rows, nulls, notes)
    return fits


def _pooled(fits: dict[tuple[Any, Any, int], Any], study: Study, rows: list[dict[str, Any]],
            nulls: list[np.ndarray], notes: list[str]) -> None:
    """Second level across (model, task, N) slices: Student-t shrinkage to a common log σ ratio."""
    if len(fits) < 2:
        return
    from .stats.bayes import fit_pooled

    a = study.analysis
    tables = pd.concat([fit.table for fit in fits.values()], ignore_index=True)
    if "posterior_sd" not in tables.columns:
        return
    for (method_a, method_b), effects in tables.groupby(["method_a", "method_b"], sort=True):
        effects = effects.assign(task=effects["task"].astype(str) + " N=" + effects["n_demos"].astype(str))
        try:
            pooled = fit_pooled(effects[["model", "task", "method_a", "method_b", "estimate", "posterior_sd"]],
                                rope=a.rope, hdi_prob=a.hdi_prob, draws=a.bayes_draws, tune=a.bayes_draws,
                                seed=study.seed)
        except ValueError as error:
            notes.append(f"pooled Bayes {method_a} vs {method_b} not fitted: {error}")
            continue
        row = pooled.table.iloc[0].to_dict()
        est = row["estimate"]
        rows.append({
            "model": "(pooled)", "task": "(pooled)", "n_demos": None, "method_a": method_a, "method_b": method_b,
            "analysis": "bayes_order_variance_pooled", "estimate": est, "statistic": est,
            "ci_low": row["ci_low"], "ci_high": row["ci_high"], "ci_level": row["ci_level"],
            "ci_method": f"{row['ci_level']:.0%} HDI of the common log σ ratio (Student-t hierarchy)",
            "mean_a": None, "mean_b": None, "ratio": float(np.exp(est)) if np.isfinite(est) else None,
            "p_value": float("nan"), "p_rope": row["p_rope"], "rope": row["rope"],
            "test": f"hierarchical Bayes across {len(effects)} slices (Corani et al. 2017)",
            "n": int(len(effects)), "margin": row["rope"], "margin_source": "ROPE (analysis.rope)",
            "p_equivalence": None, "min_equivalence_margin": None, "_eq_low": float("nan"),
            "_eq_high": float("nan"), "rule": "bayes", "_verdict": row["verdict"], "note": row.get("note"),
        })
        nulls.append(np.array([]))
