"""Run hyptest's statistical layer on outputs that others logged.

``reanalyse(path, out_dir=...)`` reads one of three formats (see
``docs/reanalyse.md``) and writes a run directory:

``long``
    Rows in the long format -> ``units/<key>.parquet`` + ``manifest.json``
    with a synthetic study, then :func:`hyptest.pipeline.analyse_run`, so
    ``results.json`` and ``report.html`` are exactly those of a study.
``dai``
    Dai et al.'s logs -> Rec2FTP, SimAOU, SimAM and Kendall per layer and
    averaged over layers, each against its baseline (:func:`dai_comparisons`).
``summaries``
    Per-run, per-layer metric values and baselines -> paired tests per layer
    and pooled over layers, clustered (:func:`test_summaries`).

``export_run(run_dir, dest)`` writes a run's records as tidy CSV, JSONL or
Parquet (the long format; :func:`hyptest.importers.read_long` reads it back).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from . import __version__
from ._util import atomic_write_bytes, atomic_write_text
from .importers import (
    ColumnMapping,
    ImportProblems,
    Problem,
    SummariesImport,
    detect_format,
    find_dai_tasks,
    load_mapping,
    read_long,
    read_run_summaries,
)
from .importers._problems import ProblemLog
from .importers.dai import DaiTaskReader, _not_found
from .metrics.dai import kendall_attention, kendall_random_baseline, simam, simaou, simaou_random_baseline
from .metrics.summaries import metric_vs_baseline, metric_with_ci
from .stats.multiplicity import adjust_pvalues
from .stats.permutation import two_sample_permutation_test
from .store import RECORD_COLUMNS, RunDir
from .study import Study, parse_study

__all__ = [
    "COMPARISON_COLUMNS",
    "DaiValues",
    "dai_comparisons",
    "dai_metric_values",
    "export_run",
    "layers_different",
    "reanalyse",
    "synthetic_study",
    "test_summaries",
]

#: Columns of the comparisons tables of :func:`dai_comparisons` and :func:`test_summaries`.
COMPARISON_COLUMNS: list[str] = [
    "model", "task", "n_demos", "method_a", "method_b", "analysis", "layer", "estimate", "ci_low", "ci_high",
    "ci_level", "ci_method", "baseline_name", "baseline", "difference", "difference_ci_low",
    "difference_ci_high", "p_value", "p_adjusted", "adjust_method", "family_size", "verdict", "test", "n",
]
_ADJUST: tuple[str, ...] = ("holm", "bonferroni", "bh")
_IDENTITY = ["model", "task", "method", "n_demos", "demo_set", "order_id", "seed"]
_DAI_BASELINES = {"simaou": "random-update SimAOU", "simam": "ICL vs ZS map (ZSL SimAM)",
                  "kendall": "random attention weights", "kendall_demo_token": "random attention weights",
                  "kendall_demo_example": "random attention weights", "rec2ftp": "P(ICL right | ZS wrong, FT wrong)"}
_DAI_NAMES = {"rec2ftp": "Rec2FTP", "simaou": "SimAOU", "simam": "SimAM", "kendall": "Kendall",
              "kendall_demo_token": "Kendall (demo tokens)", "kendall_demo_example": "Kendall (demo examples)"}
_LIST_COLUMNS = ("order", "labels", "label_logprobs", "label_probs", "topk_ids", "topk_probs")


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TestOptions:
    alpha: float
    confidence: float
    n_resamples: int
    adjust: str
    rng: np.random.Generator


def _validate_options(alpha: object, confidence: object, n_resamples: object, adjust: object,
                      rng: object) -> _TestOptions:
    for name, value in (("alpha", alpha), ("confidence", confidence)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < 1:
            raise ValueError(f"`{name}` must be a number in (0, 1), got {value!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, Integral) or int(n_resamples) < 1:
        raise ValueError(f"`n_resamples` must be a positive integer, got {n_resamples!r}")
    if adjust not in _ADJUST:
        raise ValueError(f"`adjust` must be one of {', '.join(_ADJUST)}, got {adjust!r}")
    if isinstance(rng, np.random.Generator):
        gen = rng
    elif isinstance(rng, Integral) and not isinstance(rng, bool) and int(rng) >= 0:
        gen = np.random.default_rng(int(rng))
    else:
        raise TypeError(f"`rng` must be a numpy.random.Generator or a non-negative integer seed, got {rng!r}")
    return _TestOptions(float(alpha), float(confidence), int(n_resamples), str(adjust), gen)


# ---------------------------------------------------------------------------
# metric vs baseline, shared by the Dai and summaries analyses
# ---------------------------------------------------------------------------


def _vs_baseline_row(values: np.ndarray, baseline: np.ndarray, *, opts: _TestOptions, unit: str,
                     what: str) -> dict[str, Any]:
    """Mean with CI, and the paired test against the baseline, over finite pairs."""
    values = np.asarray(values, dtype=float)
    baseline = np.asarray(baseline, dtype=float)
    ok = np.isfinite(values) & np.isfinite(baseline)
    m, b = values[ok], baseline[ok]
    row: dict[str, Any] = {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                           "ci_level": opts.confidence, "ci_method": f"bootstrap (percentile, {unit})",
                           "baseline": float(b.mean()) if len(b) else float("nan"),
                           "difference": float("nan"), "difference_ci_low": float("nan"),
                           "difference_ci_high": float("nan"), "p_value": float("nan"), "n": int(ok.sum())}
    ci_rng, test_rng = opts.rng.spawn(2)
    if ok.sum() < 2:
        row["estimate"] = float(m.mean()) if len(m) else float("nan")
        row["test"] = f"not testable: fewer than 2 {unit} with a defined value"
        return row
    ci = metric_with_ci(m, confidence=opts.confidence, n_resamples=opts.n_resamples, rng=ci_rng)
    vs = metric_vs_baseline(m, b, confidence=opts.confidence, n_resamples=opts.n_resamples, rng=test_rng)
    exact = bool(vs["exact"].iloc[0])
    kind = "exact" if exact else f"{opts.n_resamples} resamples"
    row.update({
        "estimate": float(ci["statistic"].iloc[0]), "ci_low": float(ci["ci_low"].iloc[0]),
        "ci_high": float(ci["ci_high"].iloc[0]), "difference": float(vs["statistic"].iloc[0]),
        "difference_ci_low": float(vs["ci_low"].iloc[0]), "difference_ci_high": float(vs["ci_high"].iloc[0]),
        "p_value": float(vs["pvalue"].iloc[0]),
        "test": f"paired sign-flip permutation test of {what} over {unit} ({kind})",
    })
    return row


def _finalise(rows: list[dict[str, Any]], opts: _TestOptions) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    for column in COMPARISON_COLUMNS:
        if column not in table.columns:
            table[column] = None
    p = table["p_value"].to_numpy(float)
    table["p_adjusted"] = adjust_pvalues(p, method=opts.adjust) if len(p) else p
    table["adjust_method"] = opts.adjust
    table["family_size"] = int(np.isfinite(p).sum())
    table["verdict"] = np.where(table["p_adjusted"].to_numpy(float) < opts.alpha, "different", "inconclusive")
    extra = [c for c in table.columns if c not in COMPARISON_COLUMNS]
    table = table[COMPARISON_COLUMNS + extra]
    table["layer"] = pd.Series([None if pd.isna(x) else int(x) for x in table["layer"]], index=table.index,
                               dtype=object)
    return table


# ---------------------------------------------------------------------------
# Dai et al.'s logs
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaiValues:
    """Per-example values of the Dai metrics (from :func:`dai_metric_values`).

    Attributes
    ----------
    values : pandas.DataFrame
        One row per (model, task, analysis, example, layer): ``value`` (the
        metric, ICL vs FT) and ``baseline`` (its baseline on the same
        example and layer); ``analysis`` in simaou, simam, kendall.
    correctness : pandas.DataFrame
        One row per (model, task, example): ``zs_correct``, ``ft_correct``,
        ``icl_correct``.
    problems : list of Problem
    n_examples_read, n_examples_skipped : int
    notes : list of str
    """

    values: pd.DataFrame
    correctness: pd.DataFrame
    problems: list[Problem]
    n_examples_read: int
    n_examples_skipped: int
    notes: list[str] = field(default_factory=list)

    def correctness_rates(self) -> pd.DataFrame:
        """Share of examples each setting gets right, per (model, task)."""
        columns = ["zs_correct", "ft_correct", "icl_correct"]
        return self.correctness.groupby(["model", "task"])[columns].mean().reset_index()


def dai_metric_values(
    path: str | Path,
    *,
    ft_setting: str = "ftzs",
    strict: bool = True,
    rng: np.random.Generator | int = 0,
    simaou_baseline: str = "normal",
) -> DaiValues:
    """Compute the Dai metrics per example and layer from Dai et al.'s logs, streaming.

    Parameters
    ----------
    path : str or Path
        ``ana_rlt`` (or a folder holding it, a model folder or a task folder).
    ft_setting : {"ftzs", "ft"}, default "ftzs"
        The setting read as fine-tuning (FT); ``ftzs``, as in Dai et al.'s
        ``compute_sim.py`` (see :mod:`hyptest.importers.dai`).
    strict : bool, default True
        Raise :class:`hyptest.importers.ImportProblems` on problems; else
        skip bad examples and count them.
    rng : numpy.random.Generator or int, default 0
        Source of the random baselines.  Task ``t`` (in sorted (model, task)
        order) uses child ``t`` of ``rng.spawn(n_tasks)``, which spawns two
        streams: SimAOU's random updates and Kendall's random weights, drawn
        one example at a time in file order.
    simaou_baseline : {"normal", "uniform"}, default "normal"
        Random update direction (see
        :func:`hyptest.metrics.dai.simaou_random_baseline`): ``"normal"`` is
        centred on 0; ``"uniform"`` is what the reference code draws.

    Returns
    -------
    DaiValues

    Notes
    -----
    Per example and layer, with ZS = ``zs``, FT = `ft_setting`, ICL = ``icl``:

    * **SimAOU**: :func:`~hyptest.metrics.dai.simaou` of
      ``self_attn_out_hiddens`` (each state scaled to unit length, then the
      cosine of ICL − ZS and FT − ZS); baseline: the cosine of ICL − ZS with
      a random direction.
    * **SimAM**: :func:`~hyptest.metrics.dai.simam` of ``attn_map`` (cosine
      over positions of the pre-softmax scores, per head, then the mean over
      heads); baseline: the same between ICL and ZS (Dai et al.'s "ZSL
      SimAM", ``SimAMResult.icl_zs``).
    * **Kendall**: :func:`~hyptest.metrics.dai.kendall_attention` of the
      head-averaged ``attn_map`` of ICL and FT over its positions; baseline:
      ICL against i.i.d. uniform weights.  ``attn_map`` covers the zero-shot
      prompt's positions, so this is the rank agreement of the two attention
      patterns there, not Dai et al.'s Kendall over demonstration tokens
      (which needs the ``attn_map_ctx`` and ``attn_q`` keys of
      ``compute_training_example_attn.py``).
    * **Rec2FTP** (in ``correctness``): from ``gold_label == pred_label``.
    """
    if simaou_baseline not in ("normal", "uniform"):
        raise ValueError(f"`simaou_baseline` must be 'normal' or 'uniform', got {simaou_baseline!r}")
    opts = _validate_options(0.05, 0.95, 1, "holm", rng)
    tasks = find_dai_tasks(path, ft_setting=ft_setting)
    if not tasks:
        raise ValueError(_not_found(path, ft_setting))
    log = ProblemLog()
    frames = []
    correctness = []
    n_read = n_skipped = 0
    notes = [f"fine-tuning (FT) read from the '{ft_setting}' setting",
             f"SimAOU baseline: random update directions ({simaou_baseline})"]
    for task, child in zip(tasks, opts.rng.spawn(len(tasks))):
        g_aou, g_kendall = child.spawn(2)
        reader = DaiTaskReader(task, ft_setting=ft_setting, log=log, strict=strict)
        per: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"simaou": [], "simam": [], "kendall": []}
        index = []
        for ex in reader:
            h, a = ex.hidden, ex.attn
            per["simaou"].append((simaou(h["icl"], h["ft"], h["zs"]),
                                  simaou_random_baseline(h["icl"], h["zs"], rng=g_aou,
                                                         distribution=simaou_baseline)))
            sm = simam(a["icl"], a["ft"], a["zs"])
            per["simam"].append((sm.icl_ft, sm.icl_zs))
            icl_avg, ft_avg = a["icl"].mean(axis=1), a["ft"].mean(axis=1)
            per["kendall"].append((kendall_attention(icl_avg, ft_avg),
                                   kendall_random_baseline(icl_avg, rng=g_kendall)))
            index.append(ex.index)
            correctness.append({"model": task.model, "task": task.task, "example": ex.index,
                                "zs_correct": ex.correct["zs"], "ft_correct": ex.correct["ft"],
                                "icl_correct": ex.correct["icl"]})
        n_read += reader.n_read
        n_skipped += reader.n_skipped
        if not index:
            continue
        for analysis, pairs in per.items():
            value = np.stack([p[0] for p in pairs])  # (n, layers)
            base = np.stack([p[1] for p in pairs])
            n, n_layers = value.shape
            frames.append(pd.DataFrame({
                "model": task.model, "task": task.task, "analysis": analysis,
                "example": np.repeat(index, n_layers), "layer": np.tile(np.arange(n_layers), n),
                "value": value.ravel(), "baseline": base.ravel(),
            }))
    if frames and _has_demo_attention(tasks, ft_setting):
        from .dai_collect import kendall_demo_values  # logs written by hyptest's own Dai collector

        frames.append(kendall_demo_values(path, rng=opts.rng.spawn(1)[0]))
        notes.append("Kendall over demonstration tokens (Dai et al.'s compute_training_example_attn.py) from the "
                     "logs' demo_attn keys: kendall_demo_token, kendall_demo_example")
    values = (pd.concat(frames, ignore_index=True) if frames else
              pd.DataFrame(columns=["model", "task", "analysis", "example", "layer", "value", "baseline"]))
    correct = pd.DataFrame(correctness, columns=["model", "task", "example", "zs_correct", "ft_correct",
                                                 "icl_correct"])
    return DaiValues(values, correct, log.problems(), n_read, n_skipped, notes)


def _has_demo_attention(tasks: list[Any], ft_setting: str) -> bool:
    """Whether every task's icl and FT logs carry ``demo_attn`` (hyptest's Dai collector writes it)."""
    import json

    for task in tasks:
        for setting in ("icl", ft_setting):
            try:
                with open(task.path / setting / "record_info.jsonl", "rb") as fh:
                    first = fh.readline()
                if b'"demo_attn"' not in first or "demo_attn" not in json.loads(first):
                    return False
            except (OSError, ValueError):
                return False
    return True


def dai_comparisons(
    values: DaiValues,
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    adjust: str = "holm",
    rng: np.random.Generator | int = 0,
) -> pd.DataFrame:
    """Test every Dai metric against its baseline, per layer and averaged over layers.

    Parameters
    ----------
    values : DaiValues
        From :func:`dai_metric_values`.
    alpha : float, default 0.05
        Level of the verdicts (on Holm-adjusted p-values).
    confidence : float, default 0.95
        Level of the bootstrap intervals.
    n_resamples : int, default 9999
        Bootstrap and permutation resamples (the sign-flip test is exact when
        ``2**n <= n_resamples``).
    adjust : {"holm", "bonferroni", "bh"}, default "holm"
        Adjustment across the whole table: every (model, task) x metric x
        layer, the layer-averaged rows and Rec2FTP included.
    rng : numpy.random.Generator or int, default 0
        Source of the resamples; each row draws from its own spawned stream,
        in table order.

    Returns
    -------
    pandas.DataFrame
        :data:`COMPARISON_COLUMNS`: ``model``, ``task``, ``n_demos`` (None),
        ``method_a`` ("icl"), ``method_b`` ("ft"), ``analysis`` (rec2ftp,
        simaou, simam, kendall), ``layer`` (0-based; None for Rec2FTP and
        for the mean over layers), ``estimate`` (mean over examples, for
        Rec2FTP the ratio) with ``ci_low``/``ci_high`` (percentile bootstrap
        over examples, :func:`~hyptest.metrics.summaries.metric_with_ci`),
        ``baseline_name`` and ``baseline`` (its mean), ``difference`` =
        estimate − baseline with its bootstrap CI, ``p_value`` (paired
        sign-flip test, :func:`~hyptest.metrics.summaries.metric_vs_baseline`;
        for Rec2FTP a two-sample permutation test), ``p_adjusted``,
        ``adjust_method``, ``family_size``, ``verdict`` ("different" when
        ``p_adjusted < alpha``, else "inconclusive"), ``test`` and ``n``
        (examples; for Rec2FTP the denominator).

    Notes
    -----
    The layer-averaged row takes, per example, the mean over layers of the
    metric and of the baseline, then tests those (an example with an
    undefined value at any layer is left out of it).  Rec2FTP = P(ICL right
    | ZS wrong, FT right); its baseline is P(ICL right | ZS wrong, FT
    wrong): if ICL's fixes had nothing to do with FT's, the two would be
    equal, so the two-sample permutation test of ICL correctness between
    those two groups of examples tests the overlap.  Its difference CI is
    not computed (NaN).
    """
    opts = _validate_options(alpha, confidence, n_resamples, adjust, rng)
    rows: list[dict[str, Any]] = []
    keys = sorted(set(zip(values.correctness["model"], values.correctness["task"])))
    for model, task in keys:
        context = {"model": model, "task": task, "n_demos": None, "method_a": "icl", "method_b": "ft"}
        c = values.correctness[(values.correctness["model"] == model) & (values.correctness["task"] == task)]
        rows.append({**context, **_rec2ftp_row(c, opts)})
        v = values.values[(values.values["model"] == model) & (values.values["task"] == task)]
        for analysis in ("simaou", "simam", "kendall", "kendall_demo_token", "kendall_demo_example"):
            sub = v[v["analysis"] == analysis]
            if sub.empty:
                continue
            value = sub.pivot(index="example", columns="layer", values="value").sort_index()
            base = sub.pivot(index="example", columns="layer", values="baseline").sort_index()
            what = f"{_DAI_NAMES[analysis]} - baseline"
            for layer in value.columns:
                row = _vs_baseline_row(value[layer].to_numpy(), base[layer].to_numpy(), opts=opts,
                                       unit="examples", what=what)
                rows.append({**context, "analysis": analysis, "layer": int(layer),
                             "baseline_name": _DAI_BASELINES[analysis], **row})
            row = _vs_baseline_row(value.to_numpy().mean(axis=1), base.to_numpy().mean(axis=1), opts=opts,
                                   unit="examples", what=f"{what}, averaged over layers per example")
            rows.append({**context, "analysis": analysis, "layer": None,
                         "baseline_name": _DAI_BASELINES[analysis], **row})
    if not rows:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    return _finalise(rows, opts)


def _rec2ftp_row(c: pd.DataFrame, opts: _TestOptions) -> dict[str, Any]:
    zs, ft, icl = (c[k].to_numpy(bool) for k in ("zs_correct", "ft_correct", "icl_correct"))
    fixed, other = ~zs & ft, ~zs & ~ft
    x, y = icl[fixed].astype(float), icl[other].astype(float)
    ci_rng, test_rng = opts.rng.spawn(2)
    row: dict[str, Any] = {
        "analysis": "rec2ftp", "layer": None, "estimate": float(x.mean()) if len(x) else float("nan"),
        "ci_low": float("nan"), "ci_high": float("nan"), "ci_level": opts.confidence,
        "ci_method": "bootstrap (percentile, examples ZS wrong and FT right)",
        "baseline_name": _DAI_BASELINES["rec2ftp"], "baseline": float(y.mean()) if len(y) else float("nan"),
        "difference_ci_low": float("nan"), "difference_ci_high": float("nan"), "p_value": float("nan"),
        "n": int(fixed.sum()),
    }
    row["difference"] = row["estimate"] - row["baseline"]
    if len(x) >= 2:
        ci = metric_with_ci(x, confidence=opts.confidence, n_resamples=opts.n_resamples, rng=ci_rng)
        row["ci_low"], row["ci_high"] = float(ci["ci_low"].iloc[0]), float(ci["ci_high"].iloc[0])
    counts = f"{int(x.sum())}/{len(x)} vs {int(y.sum())}/{len(y)}"
    if len(x) and len(y):
        test = two_sample_permutation_test(x, y, n_resamples=opts.n_resamples, rng=test_rng)
        kind = "exact" if test.exact else f"{opts.n_resamples} resamples"
        row["p_value"] = float(test.pvalue)
        row["test"] = (f"two-sample permutation test of ICL correctness, ZS-wrong examples FT fixed vs not "
                       f"fixed ({counts}; {kind})")
    else:
        row["test"] = f"not testable: a group of ZS-wrong examples is empty ({counts})"
    return row


# ---------------------------------------------------------------------------
# run-level summaries
# ---------------------------------------------------------------------------


def test_summaries(
    summaries: SummariesImport | pd.DataFrame,
    *,
    cluster_by: Iterable[str] | None = None,
    group_by: Iterable[str] | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    adjust: str = "holm",
    rng: np.random.Generator | int = 0,
) -> pd.DataFrame:
    """Test run-level metrics against their baselines, per layer and pooled over layers.

    Parameters
    ----------
    summaries : SummariesImport or pandas.DataFrame
        From :func:`hyptest.importers.read_run_summaries` (or its ``table``).
    cluster_by : iterable of str, optional
        Settings whose combinations are the independent units (clusters).
        Default: ``task`` and ``seed`` where present (and not in `group_by`);
        without them every run is its own cluster.  ``[]`` also makes every
        run a cluster.
    group_by : iterable of str, optional
        Settings tested separately (e.g. ``["model"]``); default none.
    alpha, confidence, n_resamples, adjust, rng
        As in :func:`dai_comparisons`.

    Returns
    -------
    pandas.DataFrame
        :data:`COMPARISON_COLUMNS` plus the `group_by` columns and
        ``n_runs``.  ``analysis`` is the metric's key, ``baseline_name`` its
        baseline's key, ``layer`` the 0-based layer or None for the pooled
        row; ``n`` counts clusters; ``method_a``/``method_b`` are None and
        ``model``/``task`` are the group's (or the only value in the data,
        else None).

    Notes
    -----
    Runs that share a cluster (e.g. several orders or learning rates of one
    (task, seed)) are not independent, so each cluster is first averaged:
    per layer, the mean over its runs of the metric and of the baseline.
    The paired sign-flip test (:func:`~hyptest.metrics.summaries.metric_vs_baseline`)
    and the bootstrap CIs then treat clusters as the units: valid when
    clusters are exchangeable, at the price of power when there are few of
    them (with ``k`` clusters the smallest two-sided exact p-value is
    ``2 / 2**k``).  The pooled row averages each run over its layers first,
    then clusters.  All rows (metrics x layers x groups, pooled rows
    included) form one family for `adjust`; ``verdict`` "different" marks
    the layers whose metric differs from the baseline.
    """
    opts = _validate_options(alpha, confidence, n_resamples, adjust, rng)
    table = summaries.table if isinstance(summaries, SummariesImport) else summaries
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"`summaries` must be a SummariesImport or a DataFrame, got {type(summaries).__name__}")
    needed = ["run", "metric", "baseline_name", "layer", "value", "baseline"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"`summaries` lacks the column(s) {missing}; use read_run_summaries")
    groups = list(group_by or [])
    for name in groups:
        if name not in table.columns:
            raise ValueError(f"`group_by`: {name!r} is not a setting of the runs ({_settings(table)})")
    if cluster_by is None:
        clusters = [c for c in ("task", "seed") if c in table.columns and c not in groups] or ["run"]
    else:
        clusters = list(cluster_by) or ["run"]
        for name in clusters:
            if name not in table.columns:
                raise ValueError(f"`cluster_by`: {name!r} is not a setting of the runs ({_settings(table)})")
    unit = "clusters (" + ", ".join(clusters) + ")"
    rows = []
    grouped = table.groupby(groups, sort=True, dropna=False) if groups else [((), table)]
    for key, group in grouped:
        key = key if isinstance(key, tuple) else (key,)
        context = dict(zip(groups, key))
        for name in ("model", "task"):
            if name not in context:
                values = group[name].dropna().unique() if name in group.columns else []
                context[name] = values[0] if len(values) == 1 else None
        context.update({"n_demos": None, "method_a": None, "method_b": None})
        for metric in pd.unique(group["metric"]):
            sub = group[group["metric"] == metric]
            base_name = " / ".join(map(str, pd.unique(sub["baseline_name"])))
            per_layer = sub.groupby([*clusters, "layer"], sort=True, dropna=False)[["value", "baseline"]].mean()
            per_layer = per_layer.reset_index()
            what = f"{metric} - {base_name}"
            for layer in sorted(per_layer["layer"].unique()):
                at = per_layer[per_layer["layer"] == layer]
                row = _vs_baseline_row(at["value"].to_numpy(), at["baseline"].to_numpy(), opts=opts, unit=unit,
                                       what=f"{what} (cluster means)")
                rows.append({**context, "analysis": metric, "layer": int(layer), "baseline_name": base_name,
                             **row, "n_runs": int(sub.loc[sub["layer"] == layer, "run"].nunique())})
            run_keys = ["run", *[c for c in clusters if c != "run"]]
            per_run = sub.groupby(run_keys, sort=True, dropna=False)[["value", "baseline"]].mean()
            pooled = per_run.reset_index().groupby(clusters, sort=True, dropna=False)[["value", "baseline"]].mean()
            row = _vs_baseline_row(pooled["value"].to_numpy(), pooled["baseline"].to_numpy(), opts=opts,
                                   unit=unit, what=f"{what} (run means over layers, then cluster means)")
            rows.append({**context, "analysis": metric, "layer": None, "baseline_name": base_name, **row,
                         "n_runs": int(sub["run"].nunique())})
    if not rows:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    out = _finalise(rows, opts)
    front = [c for c in groups if c not in COMPARISON_COLUMNS]
    return out[front + [c for c in out.columns if c not in front]]


test_summaries.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


def _settings(table: pd.DataFrame) -> str:
    fixed = {"file", "line", "run", "metric", "baseline_name", "layer", "value", "baseline"}
    names = [c for c in table.columns if c not in fixed]
    return "settings: " + (", ".join(names) if names else "none")


def layers_different(comparisons: pd.DataFrame) -> list[dict[str, Any]]:
    """Per (model, task, analysis): the layers whose verdict is "different".

    Parameters
    ----------
    comparisons : pandas.DataFrame
        From :func:`dai_comparisons` or :func:`test_summaries`.

    Returns
    -------
    list of dict
        ``model``, ``task``, ``analysis``, ``layers_different`` (0-based
        layers) and ``n_layers``, for every analysis with per-layer rows.
    """
    found: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for row in comparisons.to_dict("records"):
        if row.get("layer") is None:
            continue
        key = (row["model"], row["task"], row["analysis"])
        entry = found.setdefault(key, {"model": row["model"], "task": row["task"], "analysis": row["analysis"],
                                       "layers_different": [], "n_layers": 0})
        entry["n_layers"] += 1
        if row["verdict"] == "different":
            entry["layers_different"].append(int(row["layer"]))
    return list(found.values())


# ---------------------------------------------------------------------------
# the long format -> a run directory like a study's
# ---------------------------------------------------------------------------


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def synthetic_study(
    records: pd.DataFrame,
    *,
    name: str,
    description: str = "",
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Study, list[str]]:
    """A valid study that describes imported records (for ``manifest.json``).

    Parameters
    ----------
    records : pandas.DataFrame
        Records in the store's schema.
    name : str
        Study name (characters outside ``[A-Za-z0-9_.-]`` become ``_``).
    description : str
        Free text.
    overrides : mapping, optional
        Merged into the study (nested keys merge), e.g. ``{"seed": 3,
        "analysis": {"n_resamples": 2000}}``.

    Returns
    -------
    study : Study
    notes : list of str
        What was assumed (method kinds, orders).

    Raises
    ------
    ValueError
        If there is no ICL method (a method of kind icl is the reference).
    hyptest.study.StudyError
        If the overrides make the study invalid (the message names the field).

    Notes
    -----
    Models are declared as ``source: hf`` with their name as ``path``, tasks
    by name only: they are labels, not runnable specifications (the
    description says so).  Methods take their kind from ``method_kind``;
    a method of kind "other" is declared as ``sgd`` (the kind with no
    built-in assumption about order: the study's kind decides only that
    full-batch ``gd`` is expected to be order-invariant and gets no order
    alignment test).  ``train_seeds`` are the seeds seen; ``n_sets``,
    ``n_orders`` (at least 2, the schema's minimum) and ``n_queries`` are
    the largest seen.  ``analysis.top_k`` is the top-k length in the data
    (``overlap_k`` at most 10).
    """
    notes: list[str] = []
    kinds = records.groupby("method", sort=True)["method_kind"].first().to_dict()
    icl = [m for m, k in kinds.items() if k == "icl"]
    if not icl:
        raise ValueError(
            "the records have no ICL method: name a method 'icl', or give its kind under `methods:` in the "
            f"mapping file (methods seen: {', '.join(map(str, kinds))})"
        )
    reference = "icl" if "icl" in icl else icl[0]
    methods = []
    for method in sorted(kinds, key=lambda m: (m != reference, m)):
        kind = kinds[method]
        seeds = sorted(int(s) for s in records.loc[records["method"] == method, "seed"].unique())
        if kind == "other":
            notes.append(f"method {method!r} has no known kind; declared as sgd in the synthetic study "
                         "(kind only decides the GD order-invariance warning and the alignment test)")
            kind = "sgd"
        spec: dict[str, Any] = {"kind": kind, "name": None if method == kind else method}
        if kind != "icl":
            spec["train_seeds"] = seeds
        methods.append(spec)
    per_set = records.groupby(["model", "task", "n_demos", "demo_set"])["order_id"].nunique()
    n_orders = int(per_set.max()) if len(per_set) else 2
    if n_orders < 2:
        notes.append("every demo set has a single order: order sensitivity is undefined (NaN)")
    topk = records["topk_ids"].map(len)
    top_k = int(topk.max()) if len(topk) and topk.max() > 0 else 20
    study: dict[str, Any] = {
        "name": re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "reanalyse",
        "description": description,
        "seed": 0,
        "models": [{"name": str(m), "source": "hf", "path": str(m)} for m in sorted(records["model"].unique())],
        "tasks": [{"name": str(t)} for t in sorted(records["task"].unique())],
        "demos": {
            "n_demos": sorted(int(n) for n in records["n_demos"].unique()),
            "n_sets": int(records.groupby(["model", "task", "n_demos"])["demo_set"].nunique().max()),
            "n_orders": max(2, n_orders),
            "n_queries": int(records.groupby(["model", "task"])["query_id"].nunique().max()),
        },
        "methods": methods,
        "analysis": {"reference": reference, "top_k": top_k, "overlap_k": min(10, top_k)},
    }
    if overrides:
        study = _deep_merge(study, overrides)
    return parse_study(study, source="synthetic study (reanalyse)"), notes


def _long_run(path: Path, out: RunDir, *, mapping: ColumnMapping, strict: bool,
              overrides: Mapping[str, Any] | None) -> None:
    from .pipeline import analyse_run, rebuild_report

    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    imported = read_long(path, mapping=mapping, strict=strict)
    records = imported.records
    if records.empty:
        raise ImportProblems(imported.problems or [Problem(str(path), None, "no data rows")],
                             hint=f"no usable row in {path} ({imported.n_rows_read} read, "
                                  f"{imported.n_rows_skipped} skipped)")
    description = (f"Reanalysis of {path} (long format). Models, tasks and methods are names read from the file, "
                   "not runnable specifications.")
    study, study_notes = synthetic_study(records, name=f"reanalyse_{path.stem}", description=description,
                                         overrides=overrides)
    # the final step of each trajectory is analysed; earlier steps are stored beside it
    last = records.groupby(_IDENTITY, sort=False)["step"].transform("max")
    analysed = records["step"] == last
    notes = list(imported.notes) + study_notes
    if not analysed.all():
        notes.append(f"{int((~analysed).sum())} row(s) of earlier optimisation steps are stored (manifest "
                     "'trajectory_units') but not analysed: the analyses use each trajectory's last step")
    out.path.mkdir(parents=True, exist_ok=True)
    units, trajectory = [], []
    for key, rows in records.groupby("unit_key", sort=False):
        first = rows.iloc[0]
        out.write_unit(str(key), rows.reset_index(drop=True))
        descriptor = {"key": str(key), **{c: _plain(first[c]) for c in (*_IDENTITY, "method_kind", "step")},
                      "order": [str(x) for x in first["order"]]}
        (units if bool(analysed.loc[rows.index[0]]) else trajectory).append(descriptor)
    order = ["model", "task", "n_demos", "method", "demo_set", "order_id", "seed", "step"]
    units.sort(key=lambda u: tuple(u[c] for c in order))
    study_dump = study.model_dump(mode="json")
    study_text = ("# synthetic study written by `hyptest reanalyse`: " + description + "\n"
                  + yaml.safe_dump(study_dump, sort_keys=False))
    import_info = {"source": str(path), "format": "long", "n_rows_read": imported.n_rows_read,
                   "n_rows_skipped": imported.n_rows_skipped, "n_problems": len(imported.problems),
                   "n_rows_stored": int(len(records)), "n_rows_analysed": int(analysed.sum())}
    manifest = {
        "hyptest_version": __version__,
        "study": study_dump,
        "study_text": study_text,
        "models": {m.name: {"source": "imported", "file": str(path)} for m in study.models},
        "tasks": {t.name: "imported" for t in study.tasks},
        "units": units,
        "trajectory_units": trajectory,
        "import": import_info,
        "started": started.isoformat(timespec="seconds"),
    }
    out.write_json("manifest.json", manifest)
    out.write_json("import_problems.json", [_problem_json(p) for p in imported.problems])
    import_s = time.perf_counter() - t0
    try:
        analyse_run(out.path, timings={"import": import_s},
                    extra_provenance={"started": started.isoformat(timespec="seconds"), "import": import_info})
    except Exception as error:
        if (records["topk_ids"].map(len) == 0).any():
            raise ValueError(
                f"{path}: the analysis needs top-k columns (topk_ids, topk_probs) for the token-overlap "
                f"analyses, and some rows have none ({type(error).__name__}: {error})"
            ) from error
        raise
    results = out.read_json("results.json")
    warnings = _import_warnings(path, imported.n_rows_read, imported.n_rows_skipped, imported.problems, notes)
    results["provenance"]["warnings"] = warnings + list(results["provenance"].get("warnings", []))
    results["import"] = {**import_info, "notes": notes}
    if "import_problems.json" not in results.get("data_files", []):
        results.setdefault("data_files", []).append("import_problems.json")
    out.write_json("results.json", results)
    rebuild_report(out.path)


def _import_warnings(path: Path, n_read: int, n_skipped: int, problems: list[Problem],
                     notes: list[str]) -> list[str]:
    out = [f"imported {n_read} row(s) from {path}; {n_skipped} skipped because of problems"
           + (" (listed in import_problems.json)" if problems else "")]
    out += [f"import problem: {p}" for p in problems[:20]]
    if len(problems) > 20:
        out.append(f"... and {len(problems) - 20} more import problem(s) in import_problems.json")
    out += [f"import note: {n}" for n in notes]
    return out


def _problem_json(problem: Problem) -> dict[str, Any]:
    return {"file": problem.file, "line": problem.line, "message": problem.message}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------
# Dai and summaries -> results.json + report
# ---------------------------------------------------------------------------


def _test_settings(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    overrides = dict(overrides or {})
    analysis = dict(overrides.get("analysis") or {})
    unknown = sorted(set(overrides) - {"seed", "analysis", "name", "description"})
    unknown += sorted(f"analysis.{k}" for k in set(analysis) - {"alpha", "confidence", "n_resamples", "adjust"})
    if unknown:
        raise ValueError(f"`study_overrides`: {unknown} do not apply to this format; accepted: seed, name, "
                         "description, analysis.{alpha, confidence, n_resamples, adjust}")
    return {"alpha": analysis.get("alpha", 0.05), "confidence": analysis.get("confidence", 0.95),
            "n_resamples": analysis.get("n_resamples", 9999), "adjust": analysis.get("adjust", "holm"),
            "rng": overrides.get("seed", 0)}


def _provenance(path: Path, started: _dt.datetime, seconds: float, warnings: list[str],
                info: dict[str, Any]) -> dict[str, Any]:
    from .pipeline import library_versions

    return {
        "hyptest_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "libraries": library_versions(),
        "source": str(path),
        "started": started.isoformat(timespec="seconds"),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": {"analyse": round(seconds, 2), "total": round(seconds, 2)},
        "import": info,
        "warnings": warnings,
    }


def _report_view(comparisons: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """Comparison rows as the report shows them: the difference from the baseline, in words."""
    out = []
    for row in comparisons:
        view = dict(row)
        name = _DAI_NAMES.get(row["analysis"], str(row["analysis"])) if fmt == "dai" else str(row["analysis"])
        where = "averaged over layers" if row.get("layer") is None else f"layer {row['layer']}"
        if row["analysis"] == "rec2ftp":
            where = "examples ZS got wrong"
        view["analysis"] = f"{name} minus its baseline ({row['baseline_name']}), {where}"
        view["estimate"] = row.get("difference")
        view["ci_low"], view["ci_high"] = row.get("difference_ci_low"), row.get("difference_ci_high")
        if fmt == "summaries":
            view["method_a"], view["method_b"] = row["analysis"], row["baseline_name"]
        view["verdict"] = ("differs from its baseline" if row["verdict"] == "different"
                           else "not distinguished from its baseline")
        est, base = row.get("estimate"), row.get("baseline")
        view["summary"] = (f"{name} {_fmt(est)} [{_fmt(row.get('ci_low'))}, {_fmt(row.get('ci_high'))}] vs "
                           f"{row['baseline_name']} {_fmt(base)}, over n = {row.get('n')}; "
                           f"p_adj = {_fmt(row.get('p_adjusted'))}. {row.get('test') or ''}")
        out.append(view)
    return out


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{float(value):.3g}"


def _write_table_run(path: Path, out: RunDir, fmt: str, comparisons: pd.DataFrame, values: pd.DataFrame,
                     values_name: str, settings: dict[str, Any], started: _dt.datetime, seconds: float,
                     warnings: list[str], info: dict[str, Any], extra: dict[str, Any],
                     name: str, description: str) -> None:
    from .report import write_report

    out.path.mkdir(parents=True, exist_ok=True)
    out.write_parquet(values_name, values)
    rows = comparisons.to_dict("records")
    study = {"name": re.sub(r"[^A-Za-z0-9_.-]", "_", name), "description": description, "format": fmt,
             "source": str(path), "analysis": {k: v for k, v in settings.items() if k != "rng"},
             "seed": settings["rng"]}
    results = {
        "study": study,
        "comparisons": rows,
        **extra,
        "family": {"size": int(comparisons["p_value"].notna().sum()), "adjust": settings["adjust"],
                   "description": ("every (model, task) x metric x layer, layer means included"
                                   if fmt == "dai" else "every group x metric x layer, pooled rows included")},
        "provenance": _provenance(path, started, seconds, warnings, info),
        "data_files": ["results.json", values_name, "import_problems.json"],
    }
    out.write_json("results.json", results)
    results = out.read_json("results.json")
    view = {**results, "comparisons": _report_view(results["comparisons"], fmt)}
    text = (f"# hyptest reanalyse ({fmt}) of {path}\n" + yaml.safe_dump(study, sort_keys=False))
    write_report(out.path, view, pd.DataFrame(), text)


def _dai_run(path: Path, out: RunDir, *, mapping: ColumnMapping, strict: bool,
             overrides: Mapping[str, Any] | None) -> None:
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    settings = _test_settings(overrides)
    values = dai_metric_values(path, ft_setting=mapping.ft_setting, strict=strict, rng=settings["rng"])
    comparisons = dai_comparisons(values, **settings)
    out.path.mkdir(parents=True, exist_ok=True)
    out.write_json("import_problems.json", [_problem_json(p) for p in values.problems])
    info = {"source": str(path), "format": "dai", "n_examples_read": values.n_examples_read,
            "n_examples_skipped": values.n_examples_skipped, "n_problems": len(values.problems)}
    warnings = [f"read {values.n_examples_read} example(s) from {path}; {values.n_examples_skipped} skipped "
                "because of problems"]
    warnings += [f"import problem: {p}" for p in values.problems[:20]]
    warnings += [f"import note: {n}" for n in values.notes]
    overrides = dict(overrides or {})
    _write_table_run(path, out, "dai", comparisons, values.values, "dai_values.parquet", settings, started,
                     time.perf_counter() - t0, warnings, info,
                     {"layers_different": layers_different(comparisons),
                      "correctness": values.correctness_rates().to_dict("records")},
                     overrides.get("name", f"reanalyse_{path.name}"),
                     overrides.get("description", f"Dai et al. metrics reanalysed from {path}"))


def _summaries_run(path: Path, out: RunDir, *, mapping: ColumnMapping, strict: bool,
                   overrides: Mapping[str, Any] | None) -> None:
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    settings = _test_settings(overrides)
    imported = read_run_summaries(path, pattern=mapping.pattern, pairs=mapping.pairs or None, strict=strict)
    if imported.table.empty:
        raise ImportProblems(imported.problems or [Problem(str(path), None, "no run")],
                             hint=f"no usable run in {path}")
    comparisons = test_summaries(imported, cluster_by=mapping.cluster_by, group_by=mapping.group_by, **settings)
    out.path.mkdir(parents=True, exist_ok=True)
    out.write_json("import_problems.json", [_problem_json(p) for p in imported.problems])
    info = {"source": str(path), "format": "summaries", "n_runs_read": imported.n_runs_read,
            "n_runs_skipped": imported.n_runs_skipped, "n_problems": len(imported.problems),
            "settings": imported.settings}
    warnings = [f"read {imported.n_runs_read} run(s) from {path}; {imported.n_runs_skipped} skipped because of "
                "problems"]
    warnings += [f"import problem: {p}" for p in imported.problems[:20]]
    warnings += [f"import note: {n}" for n in imported.notes]
    overrides = dict(overrides or {})
    _write_table_run(path, out, "summaries", comparisons, imported.table, "summaries.parquet", settings, started,
                     time.perf_counter() - t0, warnings, info,
                     {"layers_different": layers_different(comparisons)},
                     overrides.get("name", f"reanalyse_{path.stem}"),
                     overrides.get("description", f"Run summaries reanalysed from {path}"))


# ---------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------


def reanalyse(
    path: str | Path,
    *,
    out_dir: str | Path,
    format: str = "auto",
    mapping: ColumnMapping | Mapping[str, Any] | str | Path | None = None,
    strict: bool = True,
    study_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Run the statistical layer on outputs that others logged; write a run directory.

    Parameters
    ----------
    path : str or Path
        A long-format file, a Dai et al. log folder, or run summaries (a
        file or a folder).
    out_dir : str or Path
        The run directory to write (created if needed).
    format : {"auto", "long", "dai", "summaries"}, default "auto"
        ``"auto"`` calls :func:`hyptest.importers.detect_format`.
    mapping : ColumnMapping, dict, path or None, optional
        The mapping file (columns, labels, method kinds; pattern, pairs,
        cluster_by, group_by for summaries; ft_setting for Dai logs).
    strict : bool, default True
        Stop at the first batch of bad input (:class:`ImportProblems`); else
        skip bad rows / examples / runs, count them and list them in the
        results' provenance warnings and ``import_problems.json``.
    study_overrides : mapping, optional
        ``long``: merged into the synthetic study (e.g. ``{"seed": 3,
        "analysis": {"n_resamples": 2000}}``); ``dai`` / ``summaries``:
        ``seed`` and ``analysis.{alpha, confidence, n_resamples, adjust}``.

    Returns
    -------
    pathlib.Path
        `out_dir`, holding ``results.json`` and ``report.html``.

    Raises
    ------
    ImportProblems
        Bad input in strict mode, or no usable row at all.
    ValueError
        Unknown or undetectable format, invalid mapping or overrides, no ICL
        method in a long file.
    """
    path = Path(path)
    fmt = detect_format(path, mapping=mapping) if format == "auto" else format
    if fmt not in ("long", "dai", "summaries"):
        raise ValueError(f"`format` must be 'auto', 'long', 'dai' or 'summaries', got {format!r}")
    if not isinstance(strict, (bool, np.bool_)):
        raise TypeError(f"`strict` must be True or False, got {strict!r}")
    if study_overrides is not None and not isinstance(study_overrides, Mapping):
        raise TypeError(f"`study_overrides` must be a mapping, got {type(study_overrides).__name__}")
    cmap = load_mapping(mapping)
    out = RunDir(out_dir)
    run = {"long": _long_run, "dai": _dai_run, "summaries": _summaries_run}[fmt]
    run(path, out, mapping=cmap, strict=bool(strict), overrides=study_overrides)
    return out.path


def export_run(run_dir: str | Path, dest: str | Path) -> Path:
    """Write a run's records in the long format: tidy CSV, JSONL or Parquet.

    Parameters
    ----------
    run_dir : str or Path
        A run directory (``manifest.json`` + ``units/``).
    dest : str or Path
        ``.csv`` (list columns as JSON strings, floats as their shortest
        exact repr), ``.jsonl`` or ``.parquet``.

    Returns
    -------
    pathlib.Path
        `dest`, written atomically.

    Raises
    ------
    ValueError
        If the suffix of `dest` is not one of the three.
    hyptest.store.StoreError
        If the run directory cannot be read.

    Notes
    -----
    Columns are ``hyptest.store.RECORD_COLUMNS``; units listed in the
    manifest's ``units`` (and ``trajectory_units`` of a reanalysed file) are
    exported in manifest order.  :func:`hyptest.importers.read_long` reads
    the file back (``labels`` + ``label_probs`` give the probabilities; the
    derived columns are ignored or recomputed).
    """
    dest = Path(dest)
    suffix = dest.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".parquet"):
        raise ValueError(f"`dest` must end in .csv, .jsonl or .parquet, got {str(dest)!r}")
    run = RunDir(run_dir)
    manifest = run.read_json("manifest.json")
    keys = [u["key"] for u in manifest.get("units", [])] + [u["key"] for u in manifest.get("trajectory_units", [])]
    records = run.read_units(keys)[list(RECORD_COLUMNS)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        buffer = io.BytesIO()
        records.to_parquet(buffer, index=False)
        return atomic_write_bytes(dest, buffer.getvalue())
    rows = (_json_row(r) for r in records.itertuples(index=False, name=None))
    if suffix == ".jsonl":
        text = "".join(json.dumps(dict(zip(RECORD_COLUMNS, r)), allow_nan=True) + "\n" for r in rows)
        return atomic_write_text(dest, text)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RECORD_COLUMNS)
    for row in rows:
        writer.writerow([json.dumps(v) if isinstance(v, list) else ("" if v is None else
                         (repr(v) if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else v))
                         for v in row])
    return atomic_write_text(dest, buffer.getvalue())


def _json_row(row: tuple[Any, ...]) -> list[Any]:
    out = []
    for value in row:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, (list, tuple)):
            value = [v.item() if isinstance(v, np.generic) else v for v in value]
        elif isinstance(value, np.generic):
            value = value.item()
        out.append(value)
    return out
