"""Every analysis of a study, from stored records to comparisons with verdicts.

Reads only the long-format records (the store's schema) and the validated
study; builds one :class:`hyptest.results.Comparison` per (model, task, N,
method vs reference, analysis) and lets :func:`hyptest.results.decide` give
the verdicts, family by family. The pipeline writes the tables; the report
renders them.

Analyses (per (model, task, N), each method compared with the reference):

``order_sensitivity`` (confirmatory by default)
    Theorem 1's quantity: the log ratio of the mean per-query SD of P(gold)
    across orders, reference / method. Equivalence: ratio within the declared
    margin (default [1/1.25, 1.25]). Resampling follows the design: orders
    within demo sets (unless all N! were run) and queries within demo sets,
    the same for both methods; or, with demo sets as clusters, an exact
    sign-flip test over the per-set log ratios.
``order_sensitivity_labels``
    The same on the mean over labels of the per-label SD (tasks with > 2 labels).
``log_variance_ratio``
    Mean over (demo set, query) of the per-unit log variance ratio (margin: the
    same SD ratio, squared), resampled as above.
``order_alignment``
    Correlation of per-order effects of the reference and the method under the
    same orders (methods whose outputs depend on the order); equivalence
    predicts r = 1 (or the seed-reliability ceiling): "different" when the
    upper bound lies below ``alignment_rho0``, "equivalent" when the lower
    bound lies above it; bounds resample orders within sets.
``token_overlap`` / ``overlap_cosine`` / ``label_js`` / ``label_kl``
    ICL's agreement with itself under another order minus its agreement with
    the method under the same order, paired by (demo set, query).
``order_sensitivity_vocab``
    Shen et al.'s order sensitivity over the whole vocabulary; differences
    within the top-k truncation bound are never called "different".

The analyses in ``analysis.confirmatory`` form the confirmatory family; every
other analysis is a secondary (exploratory) family of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from .cubes import order_cube
from ..metrics import order_sensitivity
from ..metrics.agreement import AGREEMENT_METRICS, agreement_table
from ..results import CONFIRMATORY, Comparison, decide
from ..stats.alignment import order_alignment_test
from ..stats.order_resampling import (
    ZERO_TOL,
    BootstrapDistribution,
    SignFlipDistribution,
    alignment_draws,
    alignment_statistic,
    order_sd_draws,
    order_sd_statistic,
    per_set_statistics,
)
from ..study import AnalysisSpec, MarginSpec, Study
from .descriptive import vocab_order_per_query
from .slices import iter_slices

__all__ = ["AnalysisOutput", "cluster_reaches_alpha", "margin_table", "order_comparison", "order_cube",
           "paired_unit_sampler", "run_analyses", "uses_clusters"]

_GROUP = ["model", "task", "n_demos"]

#: what each order statistic measures, for the rows
_SCALES = {
    "log_mean_sd_ratio": "log ratio of mean per-query order SD ({a} / {b})",
    "mean_log_var_ratio": "mean per-(set, query) log variance ratio ({a} / {b})",
    "mean_sd_difference": "difference of mean per-query order SD ({a} − {b})",
}


@dataclass
class AnalysisOutput:
    """Tables produced by :func:`run_analyses`."""

    comparisons: pd.DataFrame
    nulls: dict[int, np.ndarray]
    per_query: pd.DataFrame
    agreement: pd.DataFrame
    margins: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: (model, task, N) -> BayesResult of the hierarchical model, when it ran
    bayes: dict[tuple[Any, Any, int], Any] = field(default_factory=dict)
    #: adaptive runs: per confirmatory comparison, its per-set statistics, confidence sequence and stop
    adaptive: list[dict[str, Any]] = field(default_factory=list)
    #: :func:`hyptest.analysis.descriptive.vocab_order_per_query` of every record (zero-shot included), computed
    #: once: the vocabulary comparisons use its trained methods' rows, the descriptive table all of them
    vocab: pd.DataFrame | None = None


def margin_table(spec: AnalysisSpec) -> list[dict[str, Any]]:
    """The declared margins, one row per analysis, for results.json and the report."""
    rows = []
    for name, m in sorted(spec.margins.items()):
        if m is None:
            rows.append({"analysis": name, "kind": None, "value": None, "margin": None,
                         "source": "study file: no equivalence test"})
            continue
        margin, _ = _margin_on_scale(name, m)
        kind = "ratio" if m.ratio is not None else "absolute"
        rows.append({"analysis": name, "kind": kind, "value": m.ratio if m.ratio is not None else m.absolute,
                     "margin": margin, "source": f"declared: analysis.margins.{name}"})
    rows.append({"analysis": "order_alignment", "kind": "rho0", "value": spec.alignment_rho0,
                 "margin": spec.alignment_rho0, "source": "declared: analysis.alignment_rho0"})
    rows.append({"analysis": "bayes_order_variance", "kind": "rope", "value": math.exp(spec.rope),
                 "margin": spec.rope, "source": "declared: analysis.rope (log scale)"})
    return rows


def _margin_on_scale(analysis: str, spec: MarginSpec | None) -> tuple[float | None, str]:
    """(half-width on the statistic's scale, statistic) for an order analysis."""
    variance = analysis == "log_variance_ratio"
    statistic = "mean_log_var_ratio" if variance else "log_mean_sd_ratio"
    if spec is None:
        return None, statistic
    if spec.ratio is not None:
        return (2.0 if variance else 1.0) * math.log(spec.ratio), statistic
    return float(spec.absolute), "mean_sd_difference"  # type: ignore[arg-type]


def order_comparison(
    cube_a: np.ndarray,
    cube_b: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    keys: dict[str, Any],
    analysis: str = "order_sensitivity",
    family: str = CONFIRMATORY,
    margin: MarginSpec | None = None,
    cluster: bool = False,
    resample_orders: bool = True,
) -> Comparison:
    """The comparison of two methods' order sensitivity, resampled as the design was sampled.

    Parameters
    ----------
    cube_a, cube_b : numpy.ndarray
        (sets, orders, queries[, labels]) outputs of the reference (A) and the
        method (B) under the same orders.
    mask : numpy.ndarray of bool, optional
        (sets, queries) slots that hold data.
    keys : dict
        ``model``, ``task``, ``n_demos``, ``method_a``, ``method_b``.
    analysis, family : str
        Row labels; ``family`` decides which adjustment the row joins.
    margin : MarginSpec, optional
        Declared equivalence margin (``ratio`` -> log scale; ``absolute`` -> the
        statistic becomes the difference of mean SDs).
    cluster : bool
        Demo sets as clusters: exact sign-flip test over per-set statistics.
    resample_orders : bool
        Orders are a sample of the N! (resample them within sets); False when
        all N! orders were run (they are the population).

    Returns
    -------
    Comparison
    """
    mask = np.ones((cube_a.shape[0], cube_a.shape[2]), dtype=bool) if mask is None else mask
    margin_value, statistic = _margin_on_scale(analysis, margin)
    a_name, b_name = keys["method_a"], keys["method_b"]
    # mean per-query order SDs, with the statistic's numerical zero (a mean at or below ZERO_TOL is 0)
    sd_a, sd_b = (order_sd_statistic(c, np.ones_like(c), "mean_sd_difference", mask=mask) for c in (cube_a, cube_b))
    sd_a, sd_b = (0.0 if v <= ZERO_TOL else v for v in (sd_a, sd_b))
    n_sets = int(cube_a.shape[0])
    sampler: Callable[[int, np.random.Generator], BootstrapDistribution | SignFlipDistribution]
    if cluster:
        values = per_set_statistics(cube_a, cube_b, statistic, mask=mask)  # type: ignore[arg-type]
        estimate = float(np.mean(values))
        sampler = lambda n, rng: SignFlipDistribution(values)  # noqa: E731 - exact: no draws to budget
        resampling = (f"demo sets as clusters: exact sign-flip test over the {n_sets} per-set statistics "
                      "(each set's own orders and queries inside it)")
    else:
        def sampler(n: int, rng: np.random.Generator) -> BootstrapDistribution:
            return BootstrapDistribution(order_sd_draws(cube_a, cube_b, statistic=statistic,  # type: ignore[arg-type]
                                                        resample_orders=resample_orders, n_resamples=n, rng=rng,
                                                        mask=mask))

        estimate = order_sd_statistic(cube_a, cube_b, statistic, mask=mask)  # type: ignore[arg-type]
        orders_text = ("orders resampled within demo sets (a sample of the N! orders)" if resample_orders
                       else "all N! orders run: orders are the population, not resampled")
        resampling = (f"bootstrap: {orders_text}, the same for both methods; queries resampled within demo sets; "
                      f"the {n_sets} demo set(s) fixed (inference conditional on the sampled demo sets)")
    ratio = math.exp(estimate) if statistic != "mean_sd_difference" and math.isfinite(estimate) else None
    if statistic == "mean_log_var_ratio" and ratio is not None:
        ratio = math.exp(estimate / 2)  # as an SD ratio
    source = None
    if margin is not None:
        source = (f"declared: analysis.margins.{analysis} = "
                  + (f"ratio {margin.ratio:g}" if margin.ratio is not None else f"absolute {margin.absolute:g}"))
    return Comparison(
        **keys, analysis=analysis, family=family, estimate=estimate,
        scale=_SCALES[statistic].format(a=a_name, b=b_name), rule="two_sided",
        sampler=sampler,
        margin=margin_value, margin_source=source, margin_ratio=margin.ratio if margin is not None else None,
        resampling=resampling, mean_a=sd_a, mean_b=sd_b,
        ratio=ratio if ratio is not None else (sd_a / sd_b if sd_b > 0 else None),
        n=int(mask.sum()),
        test=("exact sign-flip test over demo sets" if cluster else "two-stage bootstrap (orders, queries)")
        + (" + TOST" if margin_value is not None else ""),
        extra={"n_sets": n_sets, "n_orders": int(cube_a.shape[1]),
               "orders_resampled": bool(resample_orders and not cluster)},
    )


def _alignment_comparison(records: pd.DataFrame, cube_a: np.ndarray, cube_b: np.ndarray, mask: np.ndarray, *,
                          keys: dict[str, Any], spec: AnalysisSpec, resample_orders: bool) -> Comparison:
    """Order-effect correlation against the pre-declared rho0 (equivalence predicts 1 or the ceiling)."""
    n_sets, n_orders = cube_a.shape[:2]
    ceiling, ceiling_note = _seed_ceiling(records, keys["method_b"])
    estimate = alignment_statistic(cube_a, cube_b, mask=mask) / ceiling
    test = order_alignment_test(np.where(mask[:, None, :], cube_a[..., 0], 0.0),
                                np.where(mask[:, None, :], cube_b[..., 0], 0.0),
                                n_resamples=min(spec.n_resamples, 2000), rng=np.random.default_rng(0))
    not_estimable = None
    if n_sets * (n_orders - 1) < 10:
        not_estimable = (f"{n_sets} demo set(s) × ({n_orders} − 1) orders = {n_sets * (n_orders - 1)} < 10 "
                         "independent order contrasts: the correlation cannot be estimated")

    def sample(n: int, rng: np.random.Generator) -> BootstrapDistribution:
        return BootstrapDistribution(alignment_draws(cube_a, cube_b, resample_orders=resample_orders, n_resamples=n,
                                                     rng=rng, mask=mask) / ceiling)

    note = f"descriptive: r > 0 by permutation of order labels, p = {test.pvalue:.3g}"
    if ceiling_note:
        note += f"; {ceiling_note}"
    return Comparison(
        **keys, analysis="order_alignment", family=_family("order_alignment", spec), estimate=float(estimate),
        scale=f"correlation of per-order effects ({keys['method_a']}, {keys['method_b']})"
        + (" / seed-reliability ceiling" if ceiling < 1 else ""),
        rule="threshold", sampler=sample, null_value=spec.alignment_rho0,
        margin_source="declared: analysis.alignment_rho0 (equivalence predicts r = 1)",
        resampling=("bootstrap: orders resampled within demo sets" if resample_orders else "bootstrap: all N! orders")
        + ", queries within demo sets; demo sets fixed",
        test="bootstrap bounds against rho0", n=int(mask.sum()), note=note, not_estimable=not_estimable,
        extra={"p_r_positive": float(test.pvalue), "ceiling": ceiling},
    )


def _fill(cube: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``cube`` with every slot outside ``mask`` set to 0 (no NaN left where nothing is used)."""
    return np.where(mask[:, None, :, None], cube, 0.0)


def _complete_slots(cube_a: np.ndarray, cube_b: np.ndarray, labels_a: np.ndarray, mask: np.ndarray
                    ) -> tuple[Any, ...] | None:
    """The (set, query) slots both methods have in every order: the cubes, masked, and how many were dropped.

    A study fills every cell; imported logs may not (lm-eval draws a random
    order per document and seed). Slots with a missing order in either method
    are left out of both, and so are demo sets left with no slot; None if
    fewer than two slots remain. Returns ``(cube_a, cube_b, labels_a, mask,
    dropped, kept_sets)``, ``kept_sets`` a boolean index of the sets kept.
    """
    complete = mask & ~np.isnan(cube_a).any(axis=(1, 3)) & ~np.isnan(cube_b).any(axis=(1, 3))
    if complete.sum() < 2:
        return None
    dropped = int(mask.sum() - complete.sum())
    keep = complete.any(axis=1)
    complete = complete[keep]
    return (_fill(cube_a[keep], complete), _fill(cube_b[keep], complete), _fill(labels_a[keep], complete), complete,
            dropped, keep)


def _seed_ceiling(records: pd.DataFrame, method: str) -> tuple[float, str | None]:
    """sqrt(reliability) of a method's seed-averaged order effects (1 for a deterministic method)."""
    rows = records[records["method"] == method]
    seeds = sorted(rows["seed"].unique())
    if len(seeds) < 2:
        return 1.0, None
    halves = [rows[rows["seed"].isin(seeds[0::2])], rows[rows["seed"].isin(seeds[1::2])]]
    cubes = [order_cube(h, method)[0] for h in halves]
    r = alignment_statistic(cubes[0], cubes[1])
    reliability = max(2 * r / (1 + r), 1e-6) if r > 0 else 1e-6
    ceiling = min(1.0, math.sqrt(reliability))
    return ceiling, f"{len(seeds)} training seeds: split-half reliability {reliability:.3g}, ceiling {ceiling:.3g}"


def paired_unit_sampler(d: np.ndarray, sets: np.ndarray, cluster: bool
                        ) -> Callable[[int, np.random.Generator], BootstrapDistribution | SignFlipDistribution]:
    """A sampler for the mean of paired per-unit differences ``d``.

    ``cluster`` false: units resampled within their stratum ``sets`` (e.g.
    queries within demo sets), strata fixed. ``cluster`` true: exact sign
    flips over the stratum means (each stratum one cluster).
    """
    codes = np.unique(sets, return_inverse=True)[1]
    if cluster:
        means = np.bincount(codes, weights=d) / np.bincount(codes)
        return lambda n, rng: SignFlipDistribution(means)

    def sample(n: int, rng: np.random.Generator) -> BootstrapDistribution:
        weights = np.zeros((n, len(d)))
        for c in np.unique(codes):
            idx = np.flatnonzero(codes == c)
            weights[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1 / len(idx)), size=n)
        return BootstrapDistribution(weights @ d / weights.sum(axis=1))
    return sample


def _paired_comparison(x: np.ndarray, y: np.ndarray, sets: np.ndarray, *, keys: dict[str, Any], analysis: str,
                       spec: AnalysisSpec, cluster: bool, resolution: float | None = None,
                       note: str | None = None) -> Comparison:
    d = x - y
    margin = spec.margins.get(analysis)
    codes = np.unique(sets, return_inverse=True)[1]
    n_sets = int(codes.max()) + 1
    # with demo sets as clusters the estimate is the mean of the set means, as the sign-flip test sees it
    estimate = float(np.mean(np.bincount(codes, weights=d) / np.bincount(codes))) if cluster else float(d.mean())
    return Comparison(
        **keys, analysis=analysis, family=_family(analysis, spec), estimate=estimate,
        scale=f"difference of means ({keys['method_a']} vs itself − {keys['method_a']} vs {keys['method_b']})"
        if analysis in AGREEMENT_METRICS else f"difference of means ({keys['method_a']} − {keys['method_b']})",
        sampler=paired_unit_sampler(d, sets, cluster),
        margin=float(margin.absolute) if margin is not None and margin.absolute is not None else None,
        margin_source=f"declared: analysis.margins.{analysis}" if margin is not None else None,
        resolution=resolution,
        resampling=(f"demo sets as clusters: exact sign-flip test over {n_sets} set means" if cluster else
                    "bootstrap: queries within demo sets; orders fixed (each value averages the sampled orders), "
                    f"{n_sets} demo set(s) fixed"),
        test="paired " + ("sign-flip test over demo sets" if cluster else "bootstrap"),
        mean_a=float(x.mean()), mean_b=float(y.mean()),
        ratio=float(x.mean() / y.mean()) if y.mean() != 0 else None, n=int(len(d)), note=note,
    )


def cluster_reaches_alpha(n_sets: int, family_size: int, alpha: float) -> bool:
    """Whether the exact sign-flip test over ``n_sets`` demo sets can reach ``alpha / family_size`` (two-sided)."""
    return n_sets >= 2 and 2.0 ** (1 - n_sets) <= alpha / max(family_size, 1)


def uses_clusters(spec: AnalysisSpec, n_sets: int, family_size: int) -> bool:
    """Demo sets as clusters: when asked (``bootstrap: cluster``), or ``auto`` and the exact test can reach α/m."""
    if n_sets < 2:
        return False
    return spec.bootstrap == "cluster" or (spec.bootstrap == "auto"
                                           and cluster_reaches_alpha(n_sets, family_size, spec.alpha))


def _family(analysis: str, spec: AnalysisSpec) -> str:
    return CONFIRMATORY if analysis in spec.confirmatory else analysis


#: The family prefix of an untrained control's rows: its analyses are adjusted apart from the trained models'.
CONTROL_FAMILY = "untrained control: "


def control_family(analysis: str) -> str:
    """The family of an untrained control's rows of ``analysis`` (secondary; one per analysis)."""
    return f"{CONTROL_FAMILY}{analysis}"


def _confirmatory_size(records: pd.DataFrame) -> int:
    methods = records.groupby(_GROUP)["method"].nunique()
    return max(int((methods - 1).clip(lower=0).sum()), 1)


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
    single = records.groupby(_GROUP)["order_id"].transform("nunique") < 2
    single_keys = pd.MultiIndex.from_frame(records.loc[single, _GROUP].drop_duplicates())
    per_query = order_sensitivity(records)
    # zero-shot sees no demos, so it is order-invariant by construction: a baseline for accuracy and
    # agreement, not a candidate for ICL's order behaviour
    baselines = set(records.loc[records["method_kind"] == "zs", "method"])
    all_records, records = records, records[~records["method"].isin(baselines)]
    all_per_query = per_query
    # one order (N = 1): no order analysis; accuracy and agreement with ICL still describe it
    records = records[~single.loc[records.index]]
    notes = [f"{m}/{t}/N={n}: a single order, so no order analysis (accuracy and agreement only)"
             for m, t, n in sorted(single_keys)]
    controls = set(study.controls()) if hasattr(study, "controls") else set()
    # the design's choices (cluster or pairs) follow the trained models: adding a control changes none of their rows
    trained = records[~records["model"].isin(controls)] if controls else records
    n_sets = int(trained["demo_set"].nunique()) if len(trained) else 0
    m_conf = _confirmatory_size(trained)
    reachable = cluster_reaches_alpha(n_sets, m_conf, a.alpha)
    cluster = uses_clusters(a, n_sets, m_conf)
    # adaptive runs (hyptest/workflows/adaptive.py): the confirmatory rows come from the anytime-valid tests; the fixed-size
    # tests of those analyses are not run (optional stopping invalidates them)
    adaptive = getattr(getattr(study, "collection", None), "mode", "fixed") == "adaptive"
    skip = set(a.confirmatory) if adaptive else set()
    if adaptive:
        cluster = cluster and n_sets <= 20  # exact sign flips enumerate 2**S patterns
    if a.bootstrap == "cluster" and not reachable:
        needed = 1 + math.ceil(math.log2(m_conf / a.alpha))
        notes.append(f"demo sets as clusters: with {n_sets} demo sets the exact sign-flip test cannot reach "
                     f"α/{m_conf} = {a.alpha / m_conf:.3g} (smallest two-sided p {2.0 ** (1 - n_sets):.3g}); "
                     f"{needed} demo sets would. 'different' is unreachable in this design")
    comparisons: list[Comparison] = []
    comparisons += _order_comparisons(records, a, cluster=cluster, adaptive=adaptive, skip=skip, notes=notes)
    agreement = agreement_table(all_records, reference=a.reference, k=a.overlap_k)
    if len(single_keys):  # ICL vs "ICL under another order" is ICL vs itself there: no reference row
        trivial = agreement.set_index(_GROUP).index.isin(single_keys) & (agreement["method"] == a.reference)
        agreement = agreement[~trivial]
    comparisons += _agreement_comparisons(agreement, a, cluster=cluster)
    # per (set, seed) groups with a single order give no row, so the single-order slices drop out by themselves
    vocab = vocab_order_per_query(all_records)
    comparisons += _vocab_comparisons(vocab[~vocab["method"].isin(baselines)], a, cluster=cluster)
    bayes = _bayes(records, study, comparisons, notes, controls=controls) if a.bayes else {}
    for c in comparisons:  # an untrained control's rows: its own secondary families, never the confirmatory one
        if c.model in controls:
            c.family = control_family(c.analysis)
    trajectories: list[dict[str, Any]] = []
    if adaptive:
        from .adaptive import adaptive_comparisons

        labels = {t: len(g["labels"].iloc[0]) for t, g in all_records.groupby("task")} \
            if "labels" in all_records.columns and len(all_records) else {}
        anytime, trajectories = adaptive_comparisons(records, study, labels)
        comparisons += anytime
        notes.append("adaptive collection: the confirmatory verdicts come from anytime-valid tests at each "
                     "comparison's stopping point; the other families' tests do not account for the "
                     "data-dependent stopping (exploratory)")
    table, draws = decide(comparisons, alpha=a.alpha, adjust=a.adjust, n_resamples=a.n_resamples, seed=study.seed)
    if not table.empty:
        # pooled rows have no N: keep the others integers rather than floats
        table["n_demos"] = table["n_demos"].map(lambda v: None if pd.isna(v) else int(v)).astype(object)
    return AnalysisOutput(table, draws, all_per_query, agreement, margin_table(a), notes, bayes,
                          adaptive=trajectories, vocab=vocab)


def _order_comparisons(records: pd.DataFrame, a: AnalysisSpec, *, cluster: bool, adaptive: bool, skip: set[str],
                       notes: list[str]) -> list[Comparison]:
    """The order analyses of every slice: each method's order cube against the reference's (notes: what was skipped)."""
    comparisons: list[Comparison] = []
    for sl in iter_slices(records, a.reference):
        model, task, n_demos, group = sl.model, sl.task, sl.n_demos, sl.rows
        if not sl.has_reference:
            notes.append(f"{model}/{task}/N={n_demos}: no {a.reference} rows; no comparisons")
            continue
        # orders are numbered within each set (or across sets: only the count per set matters)
        n_orders_run = int(group.groupby("demo_set")["order_id"].nunique().min())
        population = n_orders_run >= math.factorial(int(n_demos))
        cube_ref, mask, sets, orders = order_cube(group, a.reference)
        labels_ref = order_cube(group, a.reference, "label_probs")[0]
        binary = int(labels_ref.shape[-1]) == 2
        for method in sl.methods:
            keys = sl.keys(method)
            if adaptive:  # a method that stopped early has fewer demo sets than the reference: compare on its own
                own = group[group["demo_set"].isin(set(group.loc[group["method"] == method, "demo_set"]))]
                cube_ref, mask, sets, orders = order_cube(own, a.reference)
                labels_ref = order_cube(own, a.reference, "label_probs")[0]
            cube, mask_b, sets_b, orders_b = order_cube(group, method)
            if cube.shape != cube_ref.shape or sets_b != sets or orders_b != orders or (mask_b != mask).any():
                notes.append(f"{model}/{task}/N={n_demos}: {method} was not run on the same demo sets, orders and "
                             f"queries as {a.reference}; its order analyses are skipped")
                continue
            pair = _complete_slots(cube_ref, cube, labels_ref, mask)
            if pair is None:
                notes.append(f"{model}/{task}/N={n_demos}: no (set, query) slot has every order for both "
                             f"{a.reference} and {method}; its order analyses are skipped")
                continue
            ref_used, cube, labels_used, slot_mask, dropped, kept_sets = pair
            if dropped:
                notes.append(f"{model}/{task}/N={n_demos}: {method} vs {a.reference}: {dropped} of "
                             f"{int(mask.sum())} (set, query) slots lack some orders in one of them; compared on "
                             f"the {int(slot_mask.sum())} complete ones (unbiased when the orders were missed at "
                             "random, e.g. drawn by a few-shot seed)")
            common = {"mask": slot_mask, "keys": keys, "cluster": cluster and int(kept_sets.sum()) >= 2,
                      "resample_orders": not population}
            if "order_sensitivity" not in skip:
                comparisons.append(order_comparison(ref_used, cube, analysis="order_sensitivity",
                                                    family=_family("order_sensitivity", a),
                                                    margin=a.margins.get("order_sensitivity"), **common))
            if not binary and "order_sensitivity_labels" not in skip:  # with two labels the label SD equals the P(gold) SD: not a separate test
                labels_b = _fill(order_cube(group, method, "label_probs")[0][kept_sets], slot_mask)
                comparisons.append(order_comparison(labels_used, labels_b,
                                                    analysis="order_sensitivity_labels",
                                                    family=_family("order_sensitivity_labels", a),
                                                    margin=a.margins.get("order_sensitivity_labels"), **common))
            if "log_variance_ratio" not in skip:
                comparisons.append(order_comparison(ref_used, cube, analysis="log_variance_ratio",
                                                    family=_family("log_variance_ratio", a),
                                                    margin=a.margins.get("log_variance_ratio"), **common))
            kind = group.loc[group["method"] == method, "method_kind"].iloc[0]
            if kind != "gd" and np.ptp(cube, axis=1).max() > 0 and np.ptp(ref_used, axis=1).max() > 0:
                # full-batch GD is order-invariant by construction: its per-order "effects" are
                # float rounding, and correlating them with ICL's would test nothing
                comparisons.append(_alignment_comparison(group, ref_used, cube, slot_mask, keys=keys, spec=a,
                                                         resample_orders=not population))
    return comparisons


def _agreement_comparisons(agreement: pd.DataFrame, a: AnalysisSpec, *, cluster: bool) -> list[Comparison]:
    """Agreement with the reference: the reference against itself under another order vs against each method."""
    comparisons: list[Comparison] = []
    for sl in iter_slices(agreement, a.reference):
        group = sl.rows
        ref = group[group["method"] == a.reference].set_index(["demo_set", "query_id"])
        for method in sl.methods:
            other = group[group["method"] == method].set_index(["demo_set", "query_id"])
            joined = ref.merge(other, how="inner", left_index=True, right_index=True, suffixes=("_ref", ""))
            for metric in AGREEMENT_METRICS:
                x = joined[f"{metric}_ref"].to_numpy(float)  # reference vs itself, another order
                y = joined[metric].to_numpy(float)  # reference vs this method, same order
                ok = np.isfinite(x) & np.isfinite(y)
                if ok.sum() < 2:
                    continue
                sets = joined.index.get_level_values("demo_set").to_numpy()[ok]
                keys = sl.keys(method)
                comparisons.append(_paired_comparison(x[ok], y[ok], sets, keys=keys, analysis=metric, spec=a,
                                                      cluster=cluster and len(np.unique(sets)) >= 2))
    return comparisons


def _vocab_comparisons(vocab: pd.DataFrame, a: AnalysisSpec, *, cluster: bool) -> list[Comparison]:
    """Vocabulary order sensitivity, reference vs each method; never "different" within the truncation bound.

    ``vocab`` is :func:`hyptest.analysis.descriptive.vocab_order_per_query` of the records compared.
    """
    out: list[Comparison] = []
    for sl in iter_slices(vocab, a.reference):
        group = sl.rows
        ref = group[group["method"] == a.reference].set_index(["demo_set", "query_id"])
        if ref.empty:
            continue
        for method in sl.methods:
            other = group[group["method"] == method].set_index(["demo_set", "query_id"])
            joined = ref.merge(other, how="inner", left_index=True, right_index=True, suffixes=("_ref", ""))
            if len(joined) < 2:
                continue
            # each per-query value moves by at most its bound, so a difference of means by at most the sum
            bound = float(joined["bound_ref"].max() + joined["bound"].max())
            sets = joined.index.get_level_values("demo_set").to_numpy()
            keys = sl.keys(method)
            out.append(_paired_comparison(
                joined["value_ref"].to_numpy(float), joined["value"].to_numpy(float), sets, keys=keys,
                analysis="order_sensitivity_vocab", spec=a, cluster=cluster and len(np.unique(sets)) >= 2,
                resolution=bound,
                note=f"top-{int(joined['top_k'].min())} truncation can move the difference by up to {bound:.3g}"))
    return out


def _bayes(records: pd.DataFrame, study: Study, comparisons: list[Comparison],
           notes: list[str], *, controls: set[str] | frozenset[str] = frozenset()
           ) -> dict[tuple[Any, Any, int], Any]:
    """Fit the hierarchical model per (model, task, N); append its rows (outside the p-value families)."""
    try:
        from ..stats.bayes import fit_order_variance
    except ImportError as error:  # pragma: no cover - pymc is an optional extra
        notes.append(f"hierarchical Bayes skipped: {error}; install it with pip install \"hyptest[bayes]\"")
        return {}
    a = study.analysis
    fits: dict[tuple[Any, Any, int], Any] = {}
    columns = ["method", "demo_set", "order_id", "query_id", "seed", "p_gold"]
    for sl in iter_slices(records, a.reference):
        model, task, n_demos, group = sl.model, sl.task, sl.n_demos, sl.rows
        per_order = group[columns].copy()
        per_order.insert(0, "n_demos", int(n_demos))
        per_order.insert(0, "task", task)
        per_order.insert(0, "model", model)
        try:
            fit = fit_order_variance(per_order, reference=a.reference, rope=a.rope, hdi_prob=a.hdi_prob,
                                     draws=a.bayes_draws, tune=a.bayes_draws, seed=study.seed)
        except ValueError as error:
            notes.append(f"{model}/{task}/N={n_demos}: hierarchical Bayes not fitted: {error}")
            fit = None
        if fit is None:
            continue
        fits[(model, task, int(n_demos))] = fit
        if not fit.converged:
            notes.append(f"{model}/{task}/N={n_demos}: the hierarchical model did not converge ({fit.reason}); "
                         "its rows say so instead of deciding")
        for row in fit.table.to_dict("records"):
            comparisons.append(_bayes_comparison(row, (model, task, int(n_demos)), "bayes_order_variance", n=int(
                row["n_sets"] * row["n_orders"] * row["n_queries"])))
    # the pooled effect is the trained models': an untrained control is not one more sample of them
    _pooled({k: f for k, f in fits.items() if k[0] not in controls}, study, comparisons, notes)
    return fits


#: How each sampler of hyptest.stats.bayes is named in a comparison's ``test``.
_SAMPLER_WORDS: dict[Any, str] = {"nutpie": "nutpie, numba density", "nutpie-pymc": "PyMC model, nutpie",
                                  "pymc": "PyMC"}


def _bayes_comparison(row: dict[str, Any], key: tuple[Any, Any, int | None], analysis: str, *, n: int,
                      test: str | None = None) -> Comparison:
    est = float(row["estimate"])
    quantity = row.get("quantity") or "per-query SD of logit P(gold) across orders"
    return Comparison(
        model=key[0], task=key[1], n_demos=key[2], method_a=row["method_a"], method_b=row["method_b"],
        analysis=analysis, family=analysis, estimate=est, scale=f"log ratio of the {quantity} (posterior mean)",
        rule="given", given_verdict=row["verdict"], given_interval=(row["ci_low"], row["ci_high"], row["ci_level"]),
        margin=row["rope"], margin_source="ROPE on the log SD ratio (analysis.rope)",
        mean_a=row.get("sd_query_a", row.get("sigma_order_a")), mean_b=row.get("sd_query_b", row.get("sigma_order_b")),
        ratio=float(np.exp(est)) if np.isfinite(est) else None, n=n, note=row.get("note"),
        resampling="posterior (hierarchical model: queries, demo sets and orders as random effects)",
        test=test or f"hierarchical Bayes ({_SAMPLER_WORDS.get(row.get('sampler'), row.get('sampler'))}): "
                     f"HDI + ROPE ±{row['rope']:.3g}",
        extra={"p_rope": row["p_rope"], "rope": row["rope"],
               "ci_method": f"{row['ci_level']:.0%} HDI of the log ratio of {quantity}"},
    )


def _pooled(fits: dict[tuple[Any, Any, int], Any], study: Study, comparisons: list[Comparison],
            notes: list[str]) -> None:
    """Second level across (model, task, N) slices: Student-t shrinkage to a common log SD ratio."""
    if len(fits) < 2:
        return
    from ..stats.bayes import fit_pooled

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
        row = {**pooled.table.iloc[0].to_dict(), "method_a": method_a, "method_b": method_b}
        comparisons.append(_bayes_comparison(
            row, ("(pooled)", "(pooled)", None), "bayes_order_variance_pooled", n=int(len(effects)),
            test=f"hierarchical Bayes across {len(effects)} slices (Corani et al. 2017)"))
