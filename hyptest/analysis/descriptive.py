"""Descriptive tables across settings: the N sweep, GD trajectories, vocabulary order sensitivity.

These tables describe how the measurements move with the number of demos N,
with the optimisation step, across model checkpoints, and over the whole
vocabulary; every value comes with a bootstrap interval over (demo set, query)
units. The decisions (tests, verdicts) stay in :mod:`hyptest.analysis.order`; these
tables feed the report's figures and ``results.json``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..names import AGREEMENT_METRICS, SWEEP_METRICS, TRAJECTORY_METRICS
from ..records import final_step_rows
from ..metrics.agreement import RowLists, pair_metrics
from ..metrics.overlap import vocab_order_sensitivity
from ..metrics.rows import stack_rows
from ..stats.bootstrap import bootstrap_ci

__all__ = [
    "SWEEP_METRICS",
    "TRAJECTORY_METRICS",
    "checkpoint_table",
    "closest_to_reference",
    "n_sweep_draws",
    "n_sweep_table",
    "trajectory_table",
    "vocab_order_per_query",
    "vocab_order_table",
]

_UNIT = ["model", "task", "n_demos", "demo_set", "query_id"]


#: resamples of the descriptive tables' intervals (:func:`_mean_ci`)
_SWEEP_RESAMPLES = 2000


def _mean_ci(values: np.ndarray, clusters: np.ndarray | None, *, confidence: float,
             rng: np.random.Generator, n_resamples: int = _SWEEP_RESAMPLES) -> tuple[float, float, float]:
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    values = values[ok]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(values) < 2 or np.ptp(values) == 0:
        mean = float(values.mean())
        return mean, mean, mean
    use_clusters = clusters is not None and len(np.unique(np.asarray(clusters)[ok])) >= 5
    boot = bootstrap_ci(values, confidence=confidence, n_resamples=n_resamples, rng=rng,
                        clusters=np.asarray(clusters)[ok] if use_clusters else None)
    return float(values.mean()), float(boot.ci_low), float(boot.ci_high)


def _rows_for(frame: pd.DataFrame, keys: Sequence[str], columns: Mapping[str, str], *, confidence: float,
              rng: np.random.Generator, extra: Callable[[tuple[Any, ...]], dict[str, Any]] | None = None,
              ) -> list[dict[str, Any]]:
    rows = []
    for key, group in frame.groupby(list(keys), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        base = dict(zip(keys, key))
        for column, metric in columns.items():
            if column not in group.columns:
                continue
            est, lo, hi = _mean_ci(group[column].to_numpy(float), group["demo_set"].to_numpy(),
                                   confidence=confidence, rng=rng)
            if not np.isfinite(est):
                continue
            rows.append({**base, **(extra(key) if extra else {}), "metric": metric, "estimate": est,
                         "ci_low": lo, "ci_high": hi, "n": int(group[column].notna().sum())})
    return rows


def n_sweep_table(records: pd.DataFrame, per_query: pd.DataFrame, agreement: pd.DataFrame, *,
                  confidence: float = 0.95, rng: np.random.Generator | int = 0) -> pd.DataFrame:
    """Accuracy, order sensitivity and agreement with ICL for every (model, task, method, N).

    Parameters
    ----------
    records : pandas.DataFrame
        Final-step long-format records.
    per_query : pandas.DataFrame
        :func:`hyptest.metrics.order_sensitivity` of the same records.
    agreement : pandas.DataFrame
        :func:`hyptest.metrics.agreement.agreement_table` of the same records.
    confidence : float, default 0.95
        Level of the bootstrap intervals (over demo sets, then queries, when
        there are at least 5 demo sets; over (set, query) units otherwise).
    rng : numpy.random.Generator or int, default 0

    Returns
    -------
    pandas.DataFrame
        One row per (model, task, method, n_demos, metric) with ``metric`` in
        :data:`SWEEP_METRICS`, ``estimate``, ``ci_low``, ``ci_high`` and ``n``
        (the number of (set, query) units). ``accuracy`` is the mean over
        orders and seeds per unit; ``order_sd`` the per-query SD of P(gold)
        across orders; the agreement metrics compare each method with the
        reference under the same order (the reference's own row: under
        another order), as in :mod:`hyptest.metrics.agreement`.
    """
    rng = np.random.default_rng(rng)
    keys, parts = _sweep_parts(records, per_query, agreement)
    rows = []
    for frame, columns in parts:
        rows += _rows_for(frame, keys, columns, confidence=confidence, rng=rng)
    out = pd.DataFrame(rows, columns=[*keys, "metric", "estimate", "ci_low", "ci_high", "n"])
    if not out.empty:
        out["n_demos"] = out["n_demos"].astype(int)
    return out


def _sweep_parts(records: pd.DataFrame, per_query: pd.DataFrame, agreement: pd.DataFrame
                 ) -> tuple[list[str], list[tuple[pd.DataFrame, dict[str, str]]]]:
    """The group keys of :func:`n_sweep_table` and its (frame, {column: metric}) parts, in the order it draws."""
    keys = ["model", "task", "method", "n_demos"]
    acc = records.groupby([*_UNIT, "method"], sort=True)["correct"].mean().rename("accuracy").reset_index()
    return keys, [(acc, {"accuracy": "accuracy"}), (per_query, {"sd_gold": "order_sd"}),
                  (agreement, {m: m for m in AGREEMENT_METRICS})]


def n_sweep_draws(records: pd.DataFrame, per_query: pd.DataFrame, agreement: pd.DataFrame, *,
                  confidence: float = 0.95) -> int | None:
    """How many uniforms :func:`n_sweep_table` draws from its generator, without drawing them; None if unknown.

    The table's intervals are cluster bootstraps (over demo sets) when a
    group has at least 5 of them: :func:`hyptest.stats.bootstrap.bootstrap_ci`
    then draws ``n_resamples × K × (1 + largest cluster)`` uniforms, one
    64-bit output each, whatever their values. A caller that does not use
    the table but draws from the same generator after it can advance the
    generator by this count (``bit_generator.advance``, PCG64) and get the
    same numbers as after computing the table. None when some interval
    would be an ordinary bootstrap (SciPy draws integers, whose count
    depends on their values): compute the table then.
    """
    from ..stats.bootstrap import _validate_bootstrap

    keys, parts = _sweep_parts(records, per_query, agreement)
    total = 0
    for frame, columns in parts:
        for _, group in frame.groupby(list(keys), sort=True):  # _rows_for's groups and columns, in its order
            for column in columns:
                if column not in group.columns:
                    continue
                values = group[column].to_numpy(float)  # _mean_ci's tests, in its order
                clusters = group["demo_set"].to_numpy()
                ok = np.isfinite(values)
                values = values[ok]
                if len(values) < 2 or np.ptp(values) == 0:
                    continue  # no interval drawn
                if len(np.unique(clusters[ok])) < 5:
                    return None
                xa, _, _, n, _, codes, _, _ = _validate_bootstrap(values, "mean", confidence, _SWEEP_RESAMPLES,
                                                                  "percentile", clusters[ok], None, 0)
                if np.all(xa == xa[0]):
                    continue  # bootstrap_ci's degenerate case: no draws
                sizes = np.bincount(codes)
                total += n * int(sizes.size) * (1 + int(sizes.max()))
    return total


def checkpoint_table(sweep: pd.DataFrame, groups: Mapping[str, Sequence[str]], *,
                     metrics: Sequence[str] = ("accuracy", "order_sd")) -> pd.DataFrame:
    """Rows of the N-sweep table for the checkpoints of each model, in their listed order.

    Parameters
    ----------
    sweep : pandas.DataFrame
        From :func:`n_sweep_table`.
    groups : mapping
        Base model name -> the names of its checkpoints' models, in order
        (``Study.checkpoint_groups()``).
    metrics : sequence of str
        The metrics kept.

    Returns
    -------
    pandas.DataFrame
        ``group``, ``checkpoint`` (the label after ``@``), ``position``
        (0-based in the listed order) and the sweep columns.
    """
    frames = []
    for group, names in groups.items():
        for position, name in enumerate(names):
            part = sweep[(sweep["model"] == name) & sweep["metric"].isin(list(metrics))]
            if part.empty:
                continue
            label = name.split("@", 1)[1] if "@" in name else name
            frames.append(part.assign(group=group, checkpoint=label, position=position))
    columns = ["group", "checkpoint", "position", *sweep.columns]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def trajectory_table(records: pd.DataFrame, *, reference: str = "icl", k: int = 10, confidence: float = 0.95,
                     rng: np.random.Generator | int = 0) -> pd.DataFrame:
    """How each trained method approaches the reference (ICL) step by step.

    Parameters
    ----------
    records : pandas.DataFrame
        Long-format records of *all* steps (units collected with
        ``record_steps`` hold step 0 = before training, then one step per
        optimisation step).
    reference : str, default "icl"
        The method compared with, under the same order.
    k : int, default 10
        Top-k size of Token Overlap.
    confidence : float, default 0.95
    rng : numpy.random.Generator or int, default 0

    Returns
    -------
    pandas.DataFrame
        One row per (model, task, n_demos, method, step, metric) for the
        methods with more than one recorded step, ``metric`` in
        :data:`TRAJECTORY_METRICS`: the label-word JS divergence and the top-k
        Token Overlap with the reference under the same order, the mean
        P(gold) and the accuracy; ``estimate``, ``ci_low``, ``ci_high``
        (bootstrap over (set, query) units of the mean over orders and seeds).
        Empty when no method recorded its steps.
    """
    rng = np.random.default_rng(rng)
    columns = ["model", "task", "n_demos", "method", "step", "metric", "estimate", "ci_low", "ci_high", "n"]
    if "step" not in records.columns:
        return pd.DataFrame(columns=columns)
    steps = records.groupby("method")["step"].nunique()
    traced = [m for m in steps.index if steps[m] > 1 and m != reference]
    if not traced:
        return pd.DataFrame(columns=columns)
    ref = final_step_rows(records[records["method"] == reference])
    keys = [*_UNIT, "order_id"]
    rows: list[dict[str, Any]] = []
    for method in traced:
        other = records[records["method"] == method]
        joined = ref.merge(other, on=keys, suffixes=("_a", "_b"))
        if joined.empty:
            continue
        cols = ("topk_ids", "topk_probs", "label_probs")
        a = joined[[f"{c}_a" for c in cols]].set_axis(list(cols), axis=1)
        b = joined[[f"{c}_b" for c in cols]].set_axis(list(cols), axis=1)
        values = pair_metrics(a, b, k)
        long = joined[[*_UNIT, "order_id", "seed_b", "step_b"]].rename(columns={"seed_b": "seed", "step_b": "step"})
        long = long.assign(label_js_to_icl=values["label_js"], token_overlap_to_icl=values["token_overlap"],
                           p_gold=joined["p_gold_b"].to_numpy(float),
                           accuracy=joined["correct_b"].to_numpy(float))
        per_unit = long.groupby([*_UNIT, "step"], sort=True)[list(TRAJECTORY_METRICS)].mean().reset_index()
        per_unit["method"] = method
        rows += _rows_for(per_unit, ["model", "task", "n_demos", "method", "step"],
                          {m: m for m in TRAJECTORY_METRICS}, confidence=confidence, rng=rng)
    out = pd.DataFrame(rows, columns=columns)
    if not out.empty:
        out[["n_demos", "step"]] = out[["n_demos", "step"]].astype(int)
    return out


def closest_to_reference(trajectories: pd.DataFrame, final: pd.DataFrame, family: Callable[[str], str]
                         ) -> pd.DataFrame:
    """The method (grid member) and step of each family closest to ICL in label-word JS divergence.

    Parameters
    ----------
    trajectories : pandas.DataFrame
        From :func:`trajectory_table` (may be empty).
    final : pandas.DataFrame
        Final-step ``label_js`` rows of :func:`n_sweep_table`, used for the
        methods without a recorded trajectory (their only step is the last).
    family : callable
        Method name -> the family it was expanded from (``Study.method_family``).

    Returns
    -------
    pandas.DataFrame
        One row per (model, task, n_demos, family): ``method``, ``step``
        (None where only the final step is known), ``label_js_to_icl``,
        ``ci_low``, ``ci_high``, and ``n_candidates`` (members x steps looked at).
        The choice is by point estimate; its interval does not account for the
        selection (it is optimistic by construction, which favours GD).
    """
    cand = []
    if not trajectories.empty:
        t = trajectories[trajectories["metric"] == "label_js_to_icl"]
        cand.append(t[["model", "task", "n_demos", "method", "step", "estimate", "ci_low", "ci_high"]])
    if not final.empty:
        f = final[final["metric"] == "label_js"]
        traced = set(trajectories["method"]) if not trajectories.empty else set()
        f = f[~f["method"].isin(traced)]
        cand.append(f[["model", "task", "n_demos", "method", "estimate", "ci_low", "ci_high"]].assign(step=None))
    columns = ["model", "task", "n_demos", "family", "method", "step", "label_js_to_icl", "ci_low", "ci_high",
               "n_candidates"]
    if not cand:
        return pd.DataFrame(columns=columns)
    all_rows = pd.concat(cand, ignore_index=True)
    all_rows["family"] = all_rows["method"].map(family)
    rows = []
    for (model, task, n_demos, fam), group in all_rows.groupby(["model", "task", "n_demos", "family"], sort=True):
        best = group.loc[group["estimate"].astype(float).idxmin()]
        step = best["step"]
        rows.append({"model": model, "task": task, "n_demos": int(n_demos), "family": fam, "method": best["method"],
                     "step": None if step is None or pd.isna(step) else int(step),
                     "label_js_to_icl": float(best["estimate"]), "ci_low": float(best["ci_low"]),
                     "ci_high": float(best["ci_high"]), "n_candidates": int(len(group))})
    return pd.DataFrame(rows, columns=columns)


def vocab_order_per_query(records: pd.DataFrame) -> pd.DataFrame:
    """Order sensitivity over the whole vocabulary per (set, query) (Shen et al., Figure 4).

    Per (model, task, N, method, demo set, seed, query): the per-token standard
    deviation across orders summed over the vocabulary
    (:func:`hyptest.metrics.overlap.vocab_order_sensitivity`, from the stored
    top-k), and the bound on the error the top-k truncation can cause;
    averaged over training seeds.

    Returns
    -------
    pandas.DataFrame
        ``model``, ``task``, ``n_demos``, ``demo_set``, ``query_id``,
        ``method``, ``value``, ``bound``, ``top_k``. Queries not scored under
        every order of their set are left out.
    """
    per: list[dict[str, Any]] = []
    group_keys = ["model", "task", "n_demos", "method", "demo_set", "seed"]
    # the groups are made of the keys and each row's position (``_row``), not of the list cells: the top-k
    # cells are stacked once (RowLists) when they are uniform, and each group's rows are picked from that
    cells = records[["topk_ids", "topk_probs"]]
    lists = RowLists.stack(cells, ("topk_ids", "topk_probs"))
    ids_cells = cells["topk_ids"].to_numpy()
    records = records[[*group_keys, "query_id", "order_id"]].assign(_row=np.arange(len(records)))
    for key, group in records.groupby(group_keys, sort=True):
        if group["order_id"].nunique() < 2:
            continue
        # every cell is as wide as the stacked arrays when they exist
        k = int(lists.arrays["topk_ids"].shape[1]) if lists is not None else \
            int(min(map(len, ids_cells[group["_row"].to_numpy()])))
        if k == 0:
            continue
        group = group.sort_values(["query_id", "order_id"])
        n_orders = group["order_id"].nunique()
        # the queries scored under every order (a NaN query_id is in no group: left out, as isin left it)
        group = group[group.groupby("query_id")["order_id"].transform("nunique").to_numpy() == n_orders]
        queries = group["query_id"].unique()
        if len(queries) == 0:
            continue
        rows = group["_row"].to_numpy()
        if lists is not None:  # the same arrays as stacking the group's cells cut to k
            ids = np.ascontiguousarray(lists.arrays["topk_ids"][rows, :k]).reshape(len(queries), n_orders, k)
            probs = np.ascontiguousarray(lists.arrays["topk_probs"][rows, :k].astype(float, copy=False)
                                         ).reshape(len(queries), n_orders, k)
        else:
            ids = stack_rows([v[:k] for v in ids_cells[rows]]).reshape(len(queries), n_orders, k)
            probs = stack_rows([v[:k] for v in cells["topk_probs"].to_numpy()[rows]], dtype=float
                               ).reshape(len(queries), n_orders, k)
        res = vocab_order_sensitivity(ids, probs)
        for q, value, bound in zip(queries, np.atleast_1d(res.value), np.atleast_1d(res.error_bound)):
            per.append({**dict(zip(group_keys, key)), "query_id": q, "value": float(value),
                        "bound": float(bound), "top_k": k})
    columns = [*_UNIT, "method", "value", "bound", "top_k"]
    if not per:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(per).groupby([*_UNIT, "method"], sort=True).agg(
        value=("value", "mean"), bound=("bound", "mean"), top_k=("top_k", "min")).reset_index()[columns]


def vocab_order_table(records: pd.DataFrame, *, confidence: float = 0.95,
                      rng: np.random.Generator | int = 0, per_query: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean vocabulary order sensitivity per method, with a bootstrap interval.

    Averages :func:`vocab_order_per_query` over (set, query) units; pass it as
    ``per_query`` when it was already computed from ``records`` (it is then
    not computed again).

    Returns
    -------
    pandas.DataFrame
        ``model``, ``task``, ``n_demos``, ``method``, ``estimate``,
        ``ci_low``, ``ci_high``, ``bound`` (the mean truncation bound: the
        full-vocabulary value lies within ``estimate ± bound``), ``top_k``, ``n``.
    """
    rng = np.random.default_rng(rng)
    frame = vocab_order_per_query(records) if per_query is None else per_query
    columns = ["model", "task", "n_demos", "method", "estimate", "ci_low", "ci_high", "bound", "top_k", "n"]
    rows = []
    for (model, task, n_demos, method), group in frame.groupby(["model", "task", "n_demos", "method"], sort=True):
        est, lo, hi = _mean_ci(group["value"].to_numpy(), group["demo_set"].to_numpy(), confidence=confidence,
                               rng=rng)
        rows.append({"model": model, "task": task, "n_demos": int(n_demos), "method": method, "estimate": est,
                     "ci_low": lo, "ci_high": hi, "bound": float(group["bound"].mean()),
                     "top_k": int(group["top_k"].min()), "n": int(len(group))})
    return pd.DataFrame(rows, columns=columns)
