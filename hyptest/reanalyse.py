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
    Per-run, per-layer metric values and baselines -> paired comparisons per
    layer and pooled over layers, clustered (:func:`test_summaries`).

Dai and summaries rows are :class:`hyptest.results.Comparison` objects,
decided by :func:`hyptest.results.decide` like a study's: one family per
metric (no confirmatory family: these formats carry no order-sensitivity
quantity), margins only where declared.

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
from dataclasses import dataclass, field, replace
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .contract import SCHEMA_VERSION, read_results
from . import __version__
from ._util import atomic_write_bytes, atomic_write_text
from .analysis import control_family, paired_unit_sampler  # paired per-unit differences: bootstrap within strata, or sign flips
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
from .importers.lm_eval import read_lm_eval
from .importers.long import ImportResult
from .importers.dai import DaiTaskReader, _not_found
from .metrics.dai import kendall_attention, kendall_random_baseline, simam, simaou, simaou_random_baseline
from .metrics.summaries import baseline_strength
from .results import CONFIRMATORY, Comparison, decide
from .stats.order_resampling import BootstrapDistribution
from .store import RECORD_COLUMNS, RunDir
from .study import MarginSpec, Study, parse_study
from .summary_units import UnitPlan, plan_units

__all__ = [
    "COMPARISON_COLUMNS",
    "DaiValues",
    "NO_CONFIRMATORY",
    "SummariesAnalysis",
    "analyse_summaries",
    "dai_comparisons",
    "dai_metric_values",
    "export_run",
    "layers_by_direction",
    "layers_different",
    "reanalyse",
    "synthetic_study",
    "test_summaries",
    "with_direction",
]

#: Columns of the comparisons tables of :func:`dai_comparisons` and :func:`test_summaries`: the columns of
#: :func:`hyptest.results.decide` with ``layer``, ``baseline_name`` and ``baseline`` after ``analysis``.
COMPARISON_COLUMNS: list[str] = [
    "model", "task", "n_demos", "method_a", "method_b", "analysis", "layer", "baseline_name", "baseline", "family",
    "role", "rule", "estimate", "statistic", "scale", "null_value", "mean_a", "mean_b", "ratio", "n", "margin",
    "margin_ratio", "margin_source", "resolution", "resampling", "test", "ci_low", "ci_high", "ci_level",
    "ci_method", "eq_low", "eq_high", "eq_level", "p_value", "p_adjusted", "p_equivalence",
    "p_equivalence_adjusted", "level_difference", "level_equivalence", "family_size", "n_resamples",
    "min_equivalence_margin", "min_equivalence_ratio", "verdict", "note", "adjust_method",
]
_ADJUST: tuple[str, ...] = ("holm", "bonferroni", "bh")
_IDENTITY = ["model", "task", "method", "n_demos", "demo_set", "order_id", "seed"]
_DAI_BASELINES = {"simaou": "random-update SimAOU", "simam": "ICL vs ZS map (ZSL SimAM)",
                  "kendall": "random attention weights", "kendall_demo_token": "random attention weights",
                  "kendall_demo_example": "random attention weights", "rec2ftp": "P(ICL right | ZS wrong, FT wrong)"}
_DAI_NAMES = {"rec2ftp": "Rec2FTP", "simaou": "SimAOU", "simam": "SimAM", "kendall": "Kendall",
              "kendall_demo_token": "Kendall (demo tokens)", "kendall_demo_example": "Kendall (demo examples)"}
_LIST_COLUMNS = ("order", "labels", "label_logprobs", "label_probs", "topk_ids", "topk_probs")
#: The exact sign-flip test enumerates 2**n sign patterns: used when 2**n <= n_resamples and n <= this.
_EXACT_MAX_UNITS = 16
#: Rec2FTP's two-sample bootstrap needs at least this many examples in each group for a verdict.
_REC2FTP_MIN_GROUP = 10
#: Dai et al.'s claim for every metric: ICL resembles FT more than the baseline does, so metric > baseline.
CLAIMED_DIRECTION = "greater"
#: Why these formats have no confirmatory family (results.json and docs).
NO_CONFIRMATORY = ("no confirmatory family: these formats carry no order-sensitivity quantity (Theorem 1's), so every "
                   "metric-vs-baseline comparison is secondary (exploratory), adjusted within its metric's family")


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TestOptions:
    alpha: float
    n_resamples: int
    adjust: str
    seed: int
    margins: dict[str, MarginSpec]


def _generator(rng: object) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, Integral) and not isinstance(rng, bool) and int(rng) >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"`rng` must be a numpy.random.Generator or a non-negative integer seed, got {rng!r}")


def _validate_options(alpha: object, confidence: object, n_resamples: object, adjust: object, rng: object,
                      margins: object = None) -> _TestOptions:
    for name, value in (("alpha", alpha), ("confidence", confidence)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < 1:
            raise ValueError(f"`{name}` must be a number in (0, 1), got {value!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, Integral) or int(n_resamples) < 1:
        raise ValueError(f"`n_resamples` must be a positive integer, got {n_resamples!r}")
    if adjust not in _ADJUST:
        raise ValueError(f"`adjust` must be one of {', '.join(_ADJUST)}, got {adjust!r}")
    gen = _generator(rng)
    # decide() derives every row's stream from one integer seed and the row's key
    seed = int(rng) if isinstance(rng, Integral) else int(gen.integers(2**63))
    return _TestOptions(float(alpha), int(n_resamples), str(adjust), seed, _margins(margins))


def _margins(margins: object) -> dict[str, MarginSpec]:
    """Declared absolute margins per metric (``{metric: {absolute: x}}``); ratio margins do not apply."""
    if margins is None:
        return {}
    if not isinstance(margins, Mapping):
        raise TypeError(f"`margins` must map a metric to {{absolute: x}}, got {margins!r}")
    out: dict[str, MarginSpec] = {}
    for name, spec in margins.items():
        if spec is None:
            continue
        m = spec if isinstance(spec, MarginSpec) else MarginSpec.model_validate(spec)
        if m.absolute is None:
            raise ValueError(f"margins.{name}: give an `absolute` margin (on the metric's own scale, metric − "
                             "baseline); a `ratio` margin applies to the order-SD analyses of a study only")
        out[str(name)] = m
    return out


# ---------------------------------------------------------------------------
# metric vs baseline, shared by the Dai and summaries analyses
# ---------------------------------------------------------------------------


def _paired_sampler(d: np.ndarray, n_resamples: int):
    """(sampler, exact): exact sign flips over the units when 2**n <= n_resamples, else a paired bootstrap."""
    n = len(d)
    if n <= _EXACT_MAX_UNITS and 2 ** n <= n_resamples:
        return paired_unit_sampler(d, np.arange(n), True), True  # each unit its own cluster: flips its difference
    return paired_unit_sampler(d, np.zeros(n, dtype=int), False), False  # one stratum: resample units


def _vs_baseline(values: np.ndarray, baseline: np.ndarray, *, context: dict[str, Any], analysis: str,
                 layer: int | None, baseline_name: str, family: str, opts: _TestOptions, unit: str, name: str,
                 what: str, extra: dict[str, Any] | None = None) -> Comparison:
    """Metric − baseline over the independent units (finite pairs), as a two-sided Comparison."""
    values = np.asarray(values, dtype=float)
    baseline = np.asarray(baseline, dtype=float)
    ok = np.isfinite(values) & np.isfinite(baseline)
    m, b = values[ok], baseline[ok]
    d = m - b
    margin = opts.margins.get(analysis)
    common: dict[str, Any] = {
        **context, "analysis": analysis, "family": family, "rule": "two_sided",
        "scale": f"difference of means ({name} − {baseline_name}){what}", "null_value": 0.0,
        "estimate": float(d.mean()) if len(d) else float("nan"),
        "mean_a": float(m.mean()) if len(m) else None, "mean_b": float(b.mean()) if len(b) else None,
        "n": int(ok.sum()),
        "margin": float(margin.absolute) if margin is not None else None,
        "margin_source": (f"declared: analysis.margins.{analysis} = absolute {margin.absolute:g}"
                          if margin is not None else None),
        "extra": {"layer": layer, "baseline_name": baseline_name,
                  "baseline": float(b.mean()) if len(b) else float("nan"), **(extra or {})},
    }
    if ok.sum() < 2:
        return Comparison(**common, not_estimable=f"fewer than 2 {unit} with a defined value",
                          test="not testable", resampling="none")
    sampler, exact = _paired_sampler(d, opts.n_resamples)
    tost = " + TOST" if margin is not None else ""
    if exact:
        resampling = f"exact sign-flip test over the {len(d)} {unit} (each unit's difference flipped)"
        test = f"paired exact sign-flip test of {name} − baseline over {unit}{tost}"
    else:
        resampling = f"paired bootstrap: the {len(d)} {unit} resampled, metric and baseline together"
        test = f"paired bootstrap of {name} − baseline over {unit}{tost}"
    return Comparison(**common, sampler=sampler, resampling=resampling, test=test)


def _decide(comparisons: list[Comparison], opts: _TestOptions, front: list[str] | None = None) -> pd.DataFrame:
    """The shared decision layer on these comparisons; columns in :data:`COMPARISON_COLUMNS` order."""
    if not comparisons:
        return pd.DataFrame(columns=[*(front or []), *COMPARISON_COLUMNS])
    table, _ = decide(comparisons, alpha=opts.alpha, adjust=opts.adjust, n_resamples=opts.n_resamples,
                      seed=opts.seed)
    table["layer"] = pd.Series([None if x is None or pd.isna(x) else int(x) for x in table["layer"]],
                               index=table.index, dtype=object)
    front = [c for c in (front or []) if c not in COMPARISON_COLUMNS]
    rest = [c for c in table.columns if c not in COMPARISON_COLUMNS and c not in front]
    return table[front + [c for c in COMPARISON_COLUMNS if c in table.columns] + rest]


def _family_name(metric: str) -> str:
    """A metric's family; a metric that happens to be called "confirmatory" does not join that family."""
    return f"metric {metric}" if metric == CONFIRMATORY else str(metric)


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
        order) uses child ``t`` of ``rng.spawn(n_tasks)``, which spawns three
        streams: SimAOU's random updates, Kendall's random weights and (logs
        with ``demo_attn``) the demo-token Kendall's random weights, drawn
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
    gen = _generator(rng)
    tasks = find_dai_tasks(path, ft_setting=ft_setting)
    if not tasks:
        raise ValueError(_not_found(path, ft_setting))
    log = ProblemLog()
    frames = []
    correctness = []
    n_read = n_skipped = 0
    notes = [f"fine-tuning (FT) read from the '{ft_setting}' setting",
             f"SimAOU baseline: random update directions ({simaou_baseline})"]
    demo_streams = []
    for task, child in zip(tasks, gen.spawn(len(tasks))):
        # a third stream per task for the demo-token Kendall: each task's draws depend on its own position
        # only, not on how many tasks (models: e.g. untrained controls) the logs hold
        g_aou, g_kendall, g_demo = child.spawn(3)
        demo_streams.append(g_demo)
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

        frames.append(kendall_demo_values(path, rng=demo_streams))
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
    n_resamples: int = 10000,
    adjust: str = "holm",
    rng: np.random.Generator | int = 0,
    margins: Mapping[str, Any] | None = None,
    controls: Iterable[str] = (),
) -> pd.DataFrame:
    """Test every Dai metric against its baseline, per layer and averaged over layers.

    Every row is a :class:`hyptest.results.Comparison` and the verdicts come
    from :func:`hyptest.results.decide`, the decision layer of a study.

    Parameters
    ----------
    values : DaiValues
        From :func:`dai_metric_values`.
    alpha : float, default 0.05
        Family-wise level of each family (FDR with ``adjust="bh"``).
    confidence : float, default 0.95
        Validated but not used: each interval is at the level its verdict
        used (see :func:`hyptest.results.decide`).
    n_resamples : int, default 10000
        Minimum Monte-Carlo resamples (a family of ``m`` gets at least
        ``ceil(20 m / alpha)``); also decides the test: the exact sign-flip
        test over examples when ``2**n <= n_resamples`` (and ``n <= 16``),
        else the paired bootstrap over examples.
    adjust : {"holm", "bonferroni", "bh"}, default "holm"
        Adjustment within each family: one family per metric (its rows over
        every (model, task) and layer, the layer means included); Rec2FTP is
        a family of its own.  There is no confirmatory family
        (:data:`NO_CONFIRMATORY`).
    rng : numpy.random.Generator or int, default 0
        The root seed of :func:`~hyptest.results.decide` (a Generator gives
        one integer seed); each row's stream derives from it and the row's key.
    margins : mapping, optional
        Declared equivalence margins, ``{metric: {"absolute": x}}`` on the
        scale metric − baseline (e.g. ``{"simaou": {"absolute": 0.05}}``);
        without one a row can be "different" but never "equivalent".
    controls : iterable of str, optional
        Models that are untrained controls (:meth:`hyptest.study.Study.controls`):
        their rows form families of their own (``untrained control: <metric>``),
        so adding a control changes no row of a trained model.

    Returns
    -------
    pandas.DataFrame
        :data:`COMPARISON_COLUMNS`: the columns of
        :func:`~hyptest.results.decide` (``estimate`` = mean over examples of
        metric − baseline, with ``ci_low``/``ci_high`` at ``ci_level``, the
        level its verdict used; ``mean_a`` = the metric's mean, ``mean_b`` =
        the baseline's; ``family``, ``role`` "exploratory", ``p_value``,
        ``p_adjusted``, ``verdict`` ...) plus ``layer`` (0-based; None for
        Rec2FTP and for the mean over layers), ``baseline_name`` and
        ``baseline`` (= ``mean_b``).  ``method_a`` is "icl", ``method_b``
        "ft", ``n`` the examples (for Rec2FTP the ZS-wrong, FT-right ones).
        After ``verdict`` (:func:`with_direction`): ``direction`` (the side
        of the baseline the metric lies on, "greater" or "less"),
        ``claimed_direction`` ("greater": the similarity claim needs metric
        > baseline) and ``supports_similarity`` (True only for a
        ``different`` row whose interval lies above the baseline; a metric
        significantly *below* its baseline is ``different`` with direction
        "less" and does not support the claim).

    Notes
    -----
    The layer-averaged row takes, per example, the mean over layers of the
    metric and of the baseline, then tests those (an example with an
    undefined value at any layer is left out of it).  Rec2FTP = P(ICL right
    | ZS wrong, FT right); its baseline is P(ICL right | ZS wrong, FT
    wrong): if ICL's fixes had nothing to do with FT's, the two would be
    equal.  It is compared by a two-sample bootstrap that resamples examples
    within each of the two groups; with fewer than 10 examples in a group
    the row is "not_estimable".
    """
    opts = _validate_options(alpha, confidence, n_resamples, adjust, rng, margins)
    controls = set(controls)
    comparisons: list[Comparison] = []
    keys = sorted(set(zip(values.correctness["model"], values.correctness["task"])))
    for model, task in keys:
        family = control_family if model in controls else _family_name
        context = {"model": model, "task": task, "n_demos": None, "method_a": "icl", "method_b": "ft"}
        c = values.correctness[(values.correctness["model"] == model) & (values.correctness["task"] == task)]
        rec = _rec2ftp_comparison(c, context, opts)
        rec.family = family("rec2ftp")
        comparisons.append(rec)
        v = values.values[(values.values["model"] == model) & (values.values["task"] == task)]
        for analysis in ("simaou", "simam", "kendall", "kendall_demo_token", "kendall_demo_example"):
            sub = v[v["analysis"] == analysis]
            if sub.empty:
                continue
            value = sub.pivot(index="example", columns="layer", values="value").sort_index()
            base = sub.pivot(index="example", columns="layer", values="baseline").sort_index()
            common = {"context": context, "analysis": analysis, "baseline_name": _DAI_BASELINES[analysis],
                      "family": family(analysis), "opts": opts, "unit": "examples",
                      "name": _DAI_NAMES[analysis]}
            for layer in value.columns:
                comparisons.append(_vs_baseline(value[layer].to_numpy(), base[layer].to_numpy(), layer=int(layer),
                                                what=f", layer {int(layer)}", **common))
            comparisons.append(_vs_baseline(value.to_numpy().mean(axis=1), base.to_numpy().mean(axis=1), layer=None,
                                            what=", averaged over layers per example", **common))
    return with_direction(_decide(comparisons, opts), CLAIMED_DIRECTION)


def with_direction(table: pd.DataFrame, claimed: str = CLAIMED_DIRECTION) -> pd.DataFrame:
    """Add the side of the baseline each row lies on, and whether that supports the claim.

    Parameters
    ----------
    table : pandas.DataFrame
        Decided rows (from :func:`hyptest.results.decide`) with ``estimate``,
        ``null_value``, ``ci_low``, ``ci_high``, ``p_value`` and ``verdict``.
    claimed : {"greater", "less"}, default "greater"
        The side the claim needs: Dai et al.'s similarity claim needs the
        metric above its baseline (estimate = metric − baseline > 0).

    Returns
    -------
    pandas.DataFrame
        A copy with ``direction``, ``claimed_direction`` and
        ``supports_similarity`` right after ``verdict``:

        * ``direction``: ``"greater"`` or ``"less"``, the side of the null
          value (0: metric = baseline) the estimate lies on; None when it is
          exactly there or undefined.
        * ``supports_similarity``: True exactly when the verdict is
          ``different`` and the interval at the level the verdict used lies
          entirely on the claimed side; False for every other tested row (a
          significant difference on the other side, an inconclusive,
          equivalent or negligible row); None for a row without a test.

    Notes
    -----
    The test stays two-sided (the verdict is :func:`~hyptest.results.decide`'s);
    reading a significant two-sided test by the side its interval lies on is
    a directional decision whose chance of naming the wrong side is at most
    half the row's level.
    """
    if claimed not in ("greater", "less"):
        raise ValueError(f"`claimed` must be 'greater' or 'less', got {claimed!r}")
    out = table.copy()
    direction: list[str | None] = []
    supports: list[bool | None] = []
    for row in out.to_dict("records"):
        null = float(row.get("null_value") or 0.0)
        est = _finite(row.get("estimate"))
        direction.append(None if est is None or est == null else ("greater" if est > null else "less"))
        if _finite(row.get("p_value")) is None:
            supports.append(None)
            continue
        supports.append(bool(row.get("verdict") == "different" and _interval_side(row) == claimed))
    at = list(out.columns).index("verdict") + 1 if "verdict" in out.columns else len(out.columns)
    out.insert(at, "direction", pd.Series(direction, index=out.index, dtype=object))
    out.insert(at + 1, "claimed_direction", claimed)
    out.insert(at + 2, "supports_similarity", pd.Series(supports, index=out.index, dtype=object))
    return out


def _interval_side(row: Mapping[str, Any]) -> str | None:
    """"greater" / "less" when the row's interval lies entirely above / below its null value, else None."""
    null = float(row.get("null_value") or 0.0)
    low, high = row.get("ci_low"), row.get("ci_high")
    low = None if low is None else float(low)
    high = None if high is None else float(high)
    if low is not None and low > null:  # NaN compares False
        return "greater"
    if high is not None and high < null:
        return "less"
    return None


def _finite(value: Any) -> float | None:
    """`value` as a float, or None when it is missing or not finite."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def layers_by_direction(comparisons: pd.DataFrame) -> dict[tuple[Any, Any, Any], dict[str, list[int]]]:
    """Per (model, task, analysis): the layers significantly above and below the baseline.

    Parameters
    ----------
    comparisons : pandas.DataFrame
        Rows with ``layer``, ``verdict``, ``ci_low``, ``ci_high`` and
        ``null_value`` (e.g. from :func:`dai_comparisons`).

    Returns
    -------
    dict
        ``(model, task, analysis)`` -> ``{"layers_above": [...],
        "layers_below": [...]}``: the 0-based layers whose verdict is
        ``different`` with the interval above / below the null value.
    """
    out: dict[tuple[Any, Any, Any], dict[str, list[int]]] = {}
    for row in comparisons.to_dict("records"):
        if row.get("layer") is None or (isinstance(row["layer"], float) and math.isnan(row["layer"])):
            continue
        entry = out.setdefault((row["model"], row["task"], row["analysis"]), {"layers_above": [], "layers_below": []})
        side = _interval_side(row) if row.get("verdict") == "different" else None
        if side is not None:
            entry["layers_above" if side == "greater" else "layers_below"].append(int(row["layer"]))
    return out


def _rec2ftp_comparison(c: pd.DataFrame, context: dict[str, Any], opts: _TestOptions) -> Comparison:
    """P(ICL right | ZS wrong, FT right) − P(ICL right | ZS wrong, FT wrong), two independent groups."""
    zs, ft, icl = (c[k].to_numpy(bool) for k in ("zs_correct", "ft_correct", "icl_correct"))
    fixed, other = ~zs & ft, ~zs & ~ft
    x, y = icl[fixed].astype(float), icl[other].astype(float)
    counts = f"{int(x.sum())}/{len(x)} vs {int(y.sum())}/{len(y)}"
    margin = opts.margins.get("rec2ftp")
    common: dict[str, Any] = {
        **context, "analysis": "rec2ftp", "family": _family_name("rec2ftp"), "rule": "two_sided",
        "scale": "difference of proportions: P(ICL right | ZS wrong, FT right) − P(ICL right | ZS wrong, FT wrong)",
        "estimate": float(x.mean() - y.mean()) if len(x) and len(y) else float("nan"),
        "mean_a": float(x.mean()) if len(x) else None, "mean_b": float(y.mean()) if len(y) else None,
        "n": int(fixed.sum()),
        "margin": float(margin.absolute) if margin is not None else None,
        "margin_source": (f"declared: analysis.margins.rec2ftp = absolute {margin.absolute:g}"
                          if margin is not None else None),
        "extra": {"layer": None, "baseline_name": _DAI_BASELINES["rec2ftp"],
                  "baseline": float(y.mean()) if len(y) else float("nan"), "n_baseline": int(other.sum())},
    }
    if min(len(x), len(y)) < _REC2FTP_MIN_GROUP:
        return Comparison(**common, test="not testable", resampling="none",
                          not_estimable=(f"ICL right in {counts} ZS-wrong examples (FT right vs FT wrong): the "
                                         f"two-sample bootstrap needs at least {_REC2FTP_MIN_GROUP} examples in "
                                         "each group"))

    def sample(n: int, rng: np.random.Generator) -> BootstrapDistribution:
        wx = rng.multinomial(len(x), np.full(len(x), 1 / len(x)), size=n)
        wy = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=n)
        return BootstrapDistribution(wx @ x / len(x) - wy @ y / len(y))

    tost = " + TOST" if margin is not None else ""
    return Comparison(**common, sampler=sample,
                      resampling=f"two-sample bootstrap: examples resampled within each group ({counts})",
                      test=("two-sample bootstrap of ICL correctness, FT right vs FT wrong among ZS-wrong "
                            f"examples{tost}"))


# ---------------------------------------------------------------------------
# run-level summaries
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SummariesAnalysis:
    """What :func:`analyse_summaries` found.

    Attributes
    ----------
    comparisons : pandas.DataFrame
        As :func:`test_summaries` returns it.
    units : hyptest.summary_units.UnitPlan
        The independent units and how they were found.
    baselines : list of dict
        Per (group, metric): :func:`hyptest.metrics.summaries.baseline_strength`
        of its baseline, with ``analysis``, ``baseline_name``, the group's
        settings and ``stronger`` (what was done instead, or None).
    untested : list of dict
        ``analysis`` and ``reason`` for every list that has no comparison.
    """

    comparisons: pd.DataFrame
    units: UnitPlan
    baselines: list[dict[str, Any]]
    untested: list[dict[str, Any]]


#: What the layer-permutation rows compare with (see analyse_summaries).
LAYER_PERMUTATION = "layer permutation: the unit's mean over its layers"


def analyse_summaries(
    summaries: SummariesImport | pd.DataFrame,
    *,
    cluster_by: Iterable[str] | None = None,
    group_by: Iterable[str] | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 10000,
    adjust: str = "holm",
    rng: np.random.Generator | int = 0,
    margins: Mapping[str, Any] | None = None,
    stronger_baselines: bool = True,
) -> SummariesAnalysis:
    """Test run-level metrics against their baselines, with the units, baselines and untested lists explained.

    Parameters
    ----------
    summaries, cluster_by, group_by, alpha, confidence, n_resamples, adjust, rng, margins
        As in :func:`test_summaries`.
    stronger_baselines : bool, default True
        For a metric whose baseline is weak (nearly constant across units, or
        at the metric's floor 0; :func:`hyptest.metrics.summaries.baseline_strength`),
        add the layer-permutation comparison (below).

    Returns
    -------
    SummariesAnalysis

    Notes
    -----
    **Units** come from :func:`hyptest.summary_units.plan_units` (stated,
    inferred, checked for shared passes).  **Layer permutation**: for a
    weak baseline, each layer's metric is also compared with the unit's mean
    of the metric over all its layers, which is the expected value at that
    layer if the unit's layers were randomly permuted.  The row (analysis
    ``"layer permutation: <metric>"``, a family of its own) asks whether the
    metric at that layer exceeds (or falls short of) the metric's own level
    in the same unit: anything that raises the metric at every layer alike
    (a shared direction of all updates, the scale of the vectors) cancels.
    The pooled row is 0 by construction and is not tested.
    """
    opts = _validate_options(alpha, confidence, n_resamples, adjust, rng, margins)
    table = summaries.table if isinstance(summaries, SummariesImport) else summaries
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"`summaries` must be a SummariesImport or a DataFrame, got {type(summaries).__name__}")
    needed = ["run", "metric", "baseline_name", "layer", "value", "baseline"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"`summaries` lacks the column(s) {missing}; use read_run_summaries")
    groups = list(group_by or [])
    plan = plan_units(table, cluster_by=None if cluster_by is None else list(cluster_by), group_by=groups)
    table = table.assign(_unit=table["run"].map(plan.unit))
    unit = f"units ({plan.n_units} from {plan.n_runs} runs; see results['units'])"
    comparisons: list[Comparison] = []
    assessed: list[dict[str, Any]] = []
    untested: list[dict[str, Any]] = []
    if isinstance(summaries, SummariesImport):
        untested += [{"analysis": k, "reason": v} for k, v in summaries.untested.items()]
    grouped = table.groupby(groups, sort=True, dropna=False) if groups else [((), table)]
    for key, group in grouped:
        key = key if isinstance(key, tuple) else (key,)
        context = dict(zip(groups, key))
        for name in ("model", "task"):
            if name not in context:
                values = group[name].dropna().unique() if name in group.columns else []
                context[name] = values[0] if len(values) == 1 else None
        context.update({"n_demos": None, "method_a": None, "method_b": None})
        row_context = {k: context[k] for k in ("model", "task", "n_demos", "method_a", "method_b")}
        group_columns = {k: _plain(v) for k, v in context.items() if k not in row_context}
        for metric in pd.unique(group["metric"]):
            sub = group[group["metric"] == metric]
            base_name = " / ".join(map(str, pd.unique(sub["baseline_name"])))
            per_layer = sub.groupby(["_unit", "layer"], sort=True)[["value", "baseline"]].mean().reset_index()
            common = {"context": row_context, "analysis": str(metric), "baseline_name": base_name,
                      "family": _family_name(str(metric)), "opts": opts, "unit": unit, "name": str(metric)}
            for layer in sorted(per_layer["layer"].unique()):
                at = per_layer[per_layer["layer"] == layer]
                comparisons.append(_vs_baseline(
                    at["value"].to_numpy(), at["baseline"].to_numpy(), layer=int(layer),
                    what=f", layer {int(layer)}, unit means", **common,
                    extra={**group_columns, "n_runs": int(sub.loc[sub["layer"] == layer, "run"].nunique())}))
            per_run = sub.groupby(["run", "_unit"], sort=True)[["value", "baseline"]].mean()
            pooled = per_run.reset_index().groupby("_unit", sort=True)[["value", "baseline"]].mean()
            comparisons.append(_vs_baseline(
                pooled["value"].to_numpy(), pooled["baseline"].to_numpy(), layer=None,
                what=", run means over layers, then unit means", **common,
                extra={**group_columns, "n_runs": int(sub["run"].nunique())}))
            if len(pooled) < 2:
                continue
            constant = base_name.startswith("constant ")
            strength = baseline_strength(pooled["value"].to_numpy(), pooled["baseline"].to_numpy())
            entry = {**group_columns, "analysis": str(metric), "baseline_name": base_name, **strength,
                     "declared_constant": constant, "stronger": None}
            if constant:  # a declared number: its spread is 0 by construction, and the user chose it
                entry.update(weak=False, reasons=[])
            wide = per_layer.pivot(index="_unit", columns="layer", values="value").dropna(axis=0, how="any")
            if entry["weak"] and stronger_baselines and wide.shape[1] >= 3 and len(wide) >= 2:
                entry["stronger"] = (f"{LAYER_PERMUTATION}: each layer's {metric} minus the unit's mean {metric} "
                                     f"over its {wide.shape[1]} layers (the expected value at a layer if the unit's "
                                     f"layers were randomly permuted), over the {len(wide)} units; analysis "
                                     f"'layer permutation: {metric}', a family of its own")
                level = wide.mean(axis=1).to_numpy()
                name = f"layer permutation: {metric}"
                for layer in wide.columns:
                    comparisons.append(_vs_baseline(
                        wide[layer].to_numpy(), level, layer=int(layer), context=row_context, analysis=name,
                        baseline_name=LAYER_PERMUTATION, family=_family_name(name), opts=opts, unit=unit,
                        name=str(metric), what=f", layer {int(layer)} vs the unit's layer mean",
                        extra={**group_columns,
                               "n_runs": int(sub.loc[sub["layer"] == layer, "run"].nunique())}))
            assessed.append(entry)
    out = _decide(comparisons, opts, front=groups)
    if "n_runs" not in out.columns:
        out["n_runs"] = pd.Series(dtype=object)
    return SummariesAnalysis(out, plan, assessed, untested)


def test_summaries(
    summaries: SummariesImport | pd.DataFrame,
    *,
    cluster_by: Iterable[str] | None = None,
    group_by: Iterable[str] | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 10000,
    adjust: str = "holm",
    rng: np.random.Generator | int = 0,
    margins: Mapping[str, Any] | None = None,
    stronger_baselines: bool = False,
) -> pd.DataFrame:
    """Test run-level metrics against their baselines, per layer and pooled over layers.

    Every row is a :class:`hyptest.results.Comparison` and the verdicts come
    from :func:`hyptest.results.decide`, the decision layer of a study.

    Parameters
    ----------
    summaries : SummariesImport or pandas.DataFrame
        From :func:`hyptest.importers.read_run_summaries` (or its ``table``).
    cluster_by : iterable of str, optional
        Settings whose combinations are the independent units (clusters).
        Default: ``task`` and ``seed`` where present (and not in `group_by`);
        without them every run is its own cluster.  ``[]`` (or ``["run"]``)
        also makes every run a cluster.  Runs that the data show to share a
        pass are merged in any case (:func:`hyptest.summary_units.plan_units`).
    group_by : iterable of str, optional
        Settings tested separately (e.g. ``["model"]``); default none.
    alpha, confidence, n_resamples, adjust, rng, margins
        As in :func:`dai_comparisons` (``margins`` keyed by the metric's name).
    stronger_baselines : bool, default False
        Add the layer-permutation rows for weak baselines (see
        :func:`analyse_summaries`, where this defaults to True).

    Returns
    -------
    pandas.DataFrame
        The `group_by` columns, :data:`COMPARISON_COLUMNS` and ``n_runs``.
        ``analysis`` is the metric's key, ``baseline_name`` its baseline's
        key, ``layer`` the 0-based layer or None for the pooled row;
        ``estimate`` the mean over clusters of metric − baseline, ``mean_a``
        / ``mean_b`` the metric's / baseline's; ``n`` counts clusters;
        ``method_a``/``method_b`` are None and ``model``/``task`` are the
        group's (or the only value in the data, else None).

    Notes
    -----
    Runs that share a cluster (e.g. several orders or learning rates of one
    (task, seed)) are not independent, so each cluster is first averaged:
    per layer, the mean over its runs of the metric and of the baseline.
    Clusters are then the units: the exact sign-flip test over clusters when
    ``2**k <= n_resamples`` (and ``k <= 16``), else the paired bootstrap over
    clusters.  With ``k`` clusters the smallest two-sided exact p-value is
    ``2 / 2**k``; the row's note says when that cannot reach the level its
    family needs.  The pooled row averages each run over its layers first,
    then clusters.  Each metric is a family (its layers x groups, pooled
    rows included), adjusted on its own; there is no confirmatory family
    (:data:`NO_CONFIRMATORY`).
    """
    return analyse_summaries(summaries, cluster_by=cluster_by, group_by=group_by, alpha=alpha,
                             confidence=confidence, n_resamples=n_resamples, adjust=adjust, rng=rng,
                             margins=margins, stronger_baselines=stronger_baselines).comparisons


test_summaries.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


def layers_different(comparisons: pd.DataFrame, group_by: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Per (group, model, task, analysis): the layers whose verdict is "different".

    Parameters
    ----------
    comparisons : pandas.DataFrame
        From :func:`dai_comparisons` or :func:`test_summaries`.
    group_by : iterable of str, optional
        The `group_by` columns of :func:`test_summaries`: each group gets its
        own entries (its layers are never merged with another group's).

    Returns
    -------
    list of dict
        The `group_by` settings, ``model``, ``task``, ``analysis``,
        ``layers_different`` (0-based layers) and ``n_layers``, for every
        analysis with per-layer rows.
    """
    groups = list(group_by or [])
    missing = [g for g in groups if g not in comparisons.columns]
    if missing:
        raise ValueError(f"`group_by`: {missing} are not columns of the comparisons")
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in comparisons.to_dict("records"):
        if row.get("layer") is None:
            continue
        key = (*(_plain(row[g]) for g in groups), row["model"], row["task"], row["analysis"])
        entry = found.setdefault(key, {**{g: _plain(row[g]) for g in groups}, "model": row["model"],
                                       "task": row["task"], "analysis": row["analysis"],
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
              overrides: Mapping[str, Any] | None, imported: ImportResult | None = None, fmt: str = "long",
              import_extra: Mapping[str, Any] | None = None) -> None:
    from .pipeline import analyse_run, rebuild_report

    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    # records already converted by another importer (lm_eval) take the same path from here on
    imported = read_long(path, mapping=mapping, strict=strict, as_table=True) if imported is None else imported
    records = imported.records
    if records.empty:
        raise ImportProblems(imported.problems or [Problem(str(path), None, "no data rows")],
                             hint=f"no usable row in {path} ({imported.n_rows_read} read, "
                                  f"{imported.n_rows_skipped} skipped)")
    description = (f"Reanalysis of {path} ({fmt} format). Models, tasks and methods are names read from the file, "
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
    units, trajectory = _write_units(out, records, analysed.to_numpy(), imported.table)
    order = ["model", "task", "n_demos", "method", "demo_set", "order_id", "seed", "step"]
    units.sort(key=lambda u: tuple(u[c] for c in order))
    study_dump = study.model_dump(mode="json")
    study_text = ("# synthetic study written by `hyptest reanalyse`: " + description + "\n"
                  + yaml.safe_dump(study_dump, sort_keys=False))
    import_info = {"source": str(path), "format": fmt, "n_rows_read": imported.n_rows_read,
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
    # the analysis reads the units back from the store: keep only what is needed after it
    records = records[["topk_ids"]]
    imported = replace(imported, records=records.iloc[:0], table=None)
    _release_memory()
    analyse_run(out.path, timings={"import": import_s}, report=False,  # rendered once, below, with the import
                extra_provenance={"started": started.isoformat(timespec="seconds"), "import": import_info})
    results = out.read_json("results.json")
    skipped = _skipped_token_analyses(records, results)
    warnings = _import_warnings(path, imported.n_rows_read, imported.n_rows_skipped, imported.problems, notes)
    # right after the import line: what was not analysed, and why (the CLI prints these too)
    warnings[1:1] = [f"not analysed: {s['name']} ({s['analysis']}): {s['reason']}" for s in skipped]
    notes += [f"{s['name']} not analysed: {s['reason']}" for s in skipped]
    results["provenance"]["warnings"] = warnings + list(results["provenance"].get("warnings", []))
    results["import"] = {**import_info, "notes": notes, **dict(import_extra or {})}
    if skipped:
        results["skipped_analyses"] = list(results.get("skipped_analyses") or []) + skipped
    if "import_problems.json" not in results.get("data_files", []):
        results.setdefault("data_files", []).append("import_problems.json")
    out.write_json("results.json", results)
    read_results(out.read_json("results.json"))
    rebuild_report(out.path)


def _write_units(out: RunDir, records: pd.DataFrame, analysed: np.ndarray, table: Any | None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write each unit's rows to the store; the manifest's unit descriptors (analysed units, earlier steps).

    Units are written from a pyarrow Table (``read_long(..., as_table=True)``;
    built from `records` otherwise), several at a time: each write is atomic
    and fsynced, and the waits overlap. String columns may be dictionary
    encoded; the files do not store the Arrow schema, so they read back as
    plain strings, as units written from a DataFrame do.
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    if table is None:
        table = pa.Table.from_pandas(records[list(RECORD_COLUMNS)], preserve_index=False)
    codes, keys = pd.factorize(records["unit_key"].to_numpy())  # numbered by first appearance
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(keys) + 1))

    def write(u: int) -> None:
        buffer = io.BytesIO()
        pq.write_table(table.take(pa.array(order[bounds[u]:bounds[u + 1]])), buffer, store_schema=False)
        out.write_bytes(f"units/{keys[u]}.parquet", buffer.getvalue())

    with ThreadPoolExecutor(max_workers=min(8, max(len(keys), 1))) as pool:
        list(pool.map(write, range(len(keys))))
    firsts = order[bounds[:-1]]
    columns = {c: records[c].to_numpy()[firsts] for c in (*_IDENTITY, "method_kind", "step", "order")}
    units, trajectory = [], []
    for u, key in enumerate(keys):
        descriptor = {"key": str(key), **{c: _plain(columns[c][u]) for c in (*_IDENTITY, "method_kind", "step")},
                      "order": [str(x) for x in columns["order"][u]]}
        (units if bool(analysed[firsts[u]]) else trajectory).append(descriptor)
    return units, trajectory


def _release_memory() -> None:
    """Hand memory freed by the import back to the system before the analysis reads the units.

    pyarrow's pool (mimalloc or jemalloc) and glibc's heap keep freed blocks
    for reuse, so without this the import's peak stays resident under the
    analysis. A no-op where the C library is not glibc.
    """
    import ctypes
    import ctypes.util
    import gc
    import platform

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # pragma: no cover - another libc
            pass


#: The analyses that compare top-k next-token distributions (long format: ``topk_ids``, ``topk_probs``).
_TOKEN_ANALYSES = {"token_overlap": "Token Overlap", "overlap_cosine": "Overlap Cosine"}


def _skipped_token_analyses(records: pd.DataFrame, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The token analyses a long file without (enough) top-k lists could not give, with the reason."""
    n_rows = len(records)
    widths = records["topk_ids"].map(len)
    k = int((results.get("study") or {}).get("analysis", {}).get("overlap_k") or 0)
    short = int((widths < max(k, 1)).sum())
    if not short:
        return []
    done = {r.get("analysis") for r in results.get("comparisons", [])}
    where = ("every comparison" if not done & set(_TOKEN_ANALYSES) else
             "the comparisons whose rows lack them (the others are tested)")
    none = not int(widths.max() or 0)
    why = (f"{short} of {n_rows} rows have no top-k lists (topk_ids, topk_probs)" if none
           else f"{short} of {n_rows} rows have fewer than {k} top-k tokens (topk_ids, topk_probs)")
    return [{"analysis": key, "name": name,
             "reason": (f"{why}; it compares the {'top-k' if none else f'top-{k}'} next-token distributions, so it is "
                        f"skipped for "
                        f"{where}. The label-distribution agreement (label JS, label KL) and the order analyses "
                        "use the label probabilities and are unaffected.")}
            for key, name in _TOKEN_ANALYSES.items()]


def _lm_eval_run(path: Path, out: RunDir, *, mapping: ColumnMapping, strict: bool,
                 overrides: Mapping[str, Any] | None) -> None:
    """lm-eval sample logs: one record per (run, doc), then the long format's analysis, unchanged."""
    if mapping != ColumnMapping():
        raise ValueError("a mapping (--map, --column, --label, --method-kind, ...) does not apply to lm-eval logs: "
                         "their fields are fixed by the harness")
    imported = read_lm_eval(path, strict=strict)
    if imported.result.records.empty:
        raise ImportProblems(imported.result.problems or [Problem(str(path), None, "no usable line")],
                             hint=f"no usable line in {path} ({imported.result.n_rows_read} read)")
    out.path.mkdir(parents=True, exist_ok=True)
    out.write_json("lm_eval_demos.json", imported.demos)
    _long_run(path, out, mapping=mapping, strict=strict, overrides=overrides, imported=imported.result,
              fmt="lm_eval", import_extra={"lm_eval": {"design": imported.design, "runs": imported.runs,
                                                       "demos_file": "lm_eval_demos.json"}})


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
    unknown += sorted(f"analysis.{k}" for k in set(analysis) - {"alpha", "n_resamples", "adjust", "margins"})
    if unknown:
        hint = ""
        if {"analysis.margin", "analysis.alignment_margin"} & set(unknown):
            hint = ("; margins are declared per metric before the data, never derived from it: "
                    "analysis.margins: {<metric>: {absolute: x}}")
        elif "analysis.confidence" in unknown:
            hint = "; intervals are at the level each verdict used, so there is no separate confidence level"
        raise ValueError(f"`study_overrides`: {unknown} do not apply to this format; accepted: seed, name, "
                         "description, analysis.{alpha, n_resamples, adjust, margins}" + hint)
    return {"alpha": analysis.get("alpha", 0.05), "n_resamples": analysis.get("n_resamples", 10000),
            "adjust": analysis.get("adjust", "holm"), "margins": analysis.get("margins"),
            "rng": overrides.get("seed", 0)}


def _provenance(path: Path, started: _dt.datetime, seconds: float, warnings: list[str],
                info: dict[str, Any]) -> dict[str, Any]:
    from .provenance import library_versions

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


_VIEW_VERDICTS = {
    "equivalent": "within the declared margin of its baseline",
    "inconclusive": "not distinguished from its baseline",
    "not_estimable": "not estimable",
}
#: A significant difference, by the side of the baseline its interval lies on.
_VIEW_SIDES = {
    ("different", "greater"): "above its baseline",
    ("different", "less"): "below its baseline",
    ("negligible", "greater"): "negligibly above its baseline (inside the declared margin)",
    ("negligible", "less"): "negligibly below its baseline (inside the declared margin)",
}


def _view_verdict(row: Mapping[str, Any]) -> str:
    """The verdict as the report words it: a significant difference says which side of the baseline."""
    verdict = str(row.get("verdict"))
    side = _interval_side(row) if verdict in ("different", "negligible") else None
    if side is not None:
        return _VIEW_SIDES[(verdict, side)]
    if verdict == "different":  # not reached while "different" means the interval excludes 0
        return "differs from its baseline"
    return _VIEW_VERDICTS.get(verdict, verdict)


def _similarity_text(row: Mapping[str, Any], fmt: str) -> str:
    """What a row says about ICL–FT similarity (Dai: the claim needs the metric above its baseline)."""
    verdict, side = row.get("verdict"), _interval_side(row)
    if fmt != "dai" or verdict not in ("different", "negligible") or side is None:
        return ""
    if verdict == "negligible":
        return (" The difference is real but inside the declared margin, so it is no evidence of ICL–FT similarity "
                "that matters.")
    if side == "greater":
        return " The metric lies above its baseline: evidence that ICL resembles FT beyond this baseline."
    return (" The metric lies below its baseline: no evidence of ICL–FT similarity (the claim needs the metric "
            "above its baseline).")


def _report_view(comparisons: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """Comparison rows as the report shows them: the difference from the baseline and its side, in words."""
    out = []
    for row in comparisons:
        view = dict(row)
        name = _DAI_NAMES.get(row["analysis"], str(row["analysis"])) if fmt == "dai" else str(row["analysis"])
        where = "averaged over layers" if row.get("layer") is None else f"layer {row['layer']}"
        if row["analysis"] == "rec2ftp":
            where = "examples ZS got wrong"
        view["analysis"] = f"{name} minus its baseline ({row['baseline_name']}), {where}"
        # estimate is already metric − baseline (what the verdict is about); the report's Dai figure
        # shifts it back by the baseline, reading these keys
        view["difference"] = row.get("estimate")
        view["difference_ci_low"], view["difference_ci_high"] = row.get("ci_low"), row.get("ci_high")
        if fmt == "summaries":
            view["method_a"], view["method_b"] = row["analysis"], row["baseline_name"]
            # group_by settings join the task label, so the report never merges two groups' layers
            group = [f"{k} = {v}" for k, v in row.items() if k not in COMPARISON_COLUMNS and k != "n_runs"]
            if group:
                view["task"] = " · ".join([str(row["task"])] * (row.get("task") is not None) + group)
        view["verdict"] = _view_verdict(row)
        view["decision"] = row["verdict"]  # decide's word, for the report's colours
        level = row.get("ci_level")
        view["summary"] = (f"{name} {_fmt(row.get('mean_a'))} vs {row['baseline_name']} {_fmt(row.get('mean_b'))}, "
                           f"difference {_fmt(row.get('estimate'))} [{_fmt(row.get('ci_low'))}, "
                           f"{_fmt(row.get('ci_high'))}]"
                           + (f" ({float(level):.4g} interval, the level the verdict used)" if level is not None
                              and not (isinstance(level, float) and math.isnan(level)) else "")
                           + f", over n = {row.get('n')}; p_adj = {_fmt(row.get('p_adjusted'))} "
                           f"({row.get('family_size')} in family {row.get('family')}). {row.get('test') or ''}"
                           + (f". {row['note']}" if row.get("note") else "")
                           + _similarity_text(row, fmt))
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
        "schema_version": SCHEMA_VERSION,
        "study": study,
        "comparisons": rows,
        **extra,
        "families": _families(comparisons, settings, fmt),
        "provenance": _provenance(path, started, seconds, warnings, info),
        "data_files": ["results.json", values_name, "import_problems.json"],
    }
    out.write_json("results.json", results)
    results = out.read_json("results.json")
    read_results(results)
    view = {**results, "comparisons": _report_view(results["comparisons"], fmt)}
    text = (f"# hyptest reanalyse ({fmt}) of {path}\n" + yaml.safe_dump(study, sort_keys=False))
    write_report(out.path, view, pd.DataFrame(), text)


def _families(comparisons: pd.DataFrame, settings: dict[str, Any], fmt: str) -> list[dict[str, Any]]:
    """One entry per family (a metric), as a study's results.json lists them."""
    out = []
    if comparisons.empty:
        return out
    members = ("every (model, task) x layer, the layer mean included" if fmt == "dai"
               else "every group x layer, the pooled row included")
    for family, rows in comparisons.groupby("family", sort=False):
        testable = rows[rows["p_value"].notna()]
        out.append({
            "family": family, "role": str(rows["role"].iloc[0]), "size": int(len(testable)),
            "adjust": settings["adjust"] if len(testable) else None, "alpha": settings["alpha"],
            "analyses": sorted(map(str, rows["analysis"].unique())),
            "n_resamples": (int(testable["n_resamples"].max()) if testable["n_resamples"].notna().any() else None),
            "description": f"{family} vs its baseline: {members}; {NO_CONFIRMATORY}",
        })
    return out


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
                     {"layers_different": _with_layer_sides(layers_different(comparisons), comparisons),
                      "correctness": values.correctness_rates().to_dict("records")},
                     overrides.get("name", f"reanalyse_{path.name}"),
                     overrides.get("description", f"Dai et al. metrics reanalysed from {path}"))


def _with_layer_sides(entries: list[dict[str, Any]], comparisons: pd.DataFrame) -> list[dict[str, Any]]:
    """``layers_different`` entries with ``layers_above`` / ``layers_below`` (:func:`layers_by_direction`)."""
    sides = layers_by_direction(comparisons)
    empty: dict[str, list[int]] = {"layers_above": [], "layers_below": []}
    return [{**e, **sides.get((e.get("model"), e.get("task"), e.get("analysis")), empty)} for e in entries]


def _finite(value: Any) -> Any:
    """JSON-safe: non-finite floats become None."""
    value = _plain(value)
    return None if isinstance(value, float) and not math.isfinite(value) else value


_BASELINE_KEYS = frozenset({"analysis", "baseline_name", "metric_mean", "metric_sd", "baseline_mean", "baseline_sd",
                            "spread_ratio", "floor_ratio", "weak", "reasons", "declared_constant", "stronger"})


def _summaries_messages(analysis: SummariesAnalysis, imported: SummariesImport) -> list[str]:
    """What a reader of a summaries run must know: units, untested lists, weak baselines (console and report)."""
    units = analysis.units
    source = {"pattern": "settings from `pattern`", "names": "settings read from the file and folder names",
              "none": "no settings in the file names"}[imported.settings_source]
    out = [f"units: {units.n_units} independent unit(s) from {units.n_runs} run(s); {units.how} ({source}: "
           f"{', '.join(imported.settings) or 'none'})"]
    out += [f"units check: {c}" for c in units.checks]
    out += [f"WARNING: {w}" for w in units.warnings]
    out += [f"not tested: {u['analysis']}: {u['reason']}" for u in analysis.untested]
    for b in analysis.baselines:
        if b["weak"]:
            where = "".join(f", {k} = {v}" for k, v in b.items() if k not in _BASELINE_KEYS)
            text = f"weak baseline: {b['baseline_name']!r} of {b['analysis']}{where}: " + "; ".join(b["reasons"])
            text += (f". Also reported against a stronger baseline: {b['stronger']}" if b["stronger"] else
                     ". No stronger baseline could be derived (fewer than 3 layers)")
            out.append(text)
    return out


def _summaries_run(path: Path, out: RunDir, *, mapping: ColumnMapping, strict: bool,
                   overrides: Mapping[str, Any] | None) -> None:
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    settings = _test_settings(overrides)
    imported = read_run_summaries(path, pattern=mapping.pattern, pairs=mapping.pairs or None, strict=strict)
    if imported.table.empty:
        raise ImportProblems(imported.problems or [Problem(str(path), None, "no run")],
                             hint=f"no usable run in {path}")
    analysis = analyse_summaries(imported, cluster_by=mapping.cluster_by, group_by=mapping.group_by, **settings)
    comparisons = analysis.comparisons
    out.path.mkdir(parents=True, exist_ok=True)
    out.write_json("import_problems.json", [_problem_json(p) for p in imported.problems])
    info = {"source": str(path), "format": "summaries", "n_runs_read": imported.n_runs_read,
            "n_runs_skipped": imported.n_runs_skipped, "n_problems": len(imported.problems),
            "settings": imported.settings, "settings_from": imported.settings_source}
    warnings = [f"read {imported.n_runs_read} run(s) from {path}; {imported.n_runs_skipped} skipped because of "
                "problems"]
    warnings += [f"import problem: {p}" for p in imported.problems[:20]]
    warnings += _summaries_messages(analysis, imported)
    warnings += [f"import note: {n}" for n in imported.notes if not n.startswith("per-layer lists not tested")]
    overrides = dict(overrides or {})
    _write_table_run(path, out, "summaries", comparisons, imported.table, "summaries.parquet", settings, started,
                     time.perf_counter() - t0, warnings, info,
                     {"units": analysis.units.as_dict(), "untested": analysis.untested,
                      "baselines": [{k: _finite(v) for k, v in b.items()} for b in analysis.baselines],
                      "layers_different": layers_different(comparisons, group_by=mapping.group_by)},
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
    format : {"auto", "long", "dai", "summaries", "lm_eval"}, default "auto"
        ``"auto"`` calls :func:`hyptest.importers.detect_format`.  ``lm_eval``:
        lm-evaluation-harness ``--log_samples`` output (a samples file or a
        folder of runs), read by :func:`hyptest.importers.read_lm_eval` and
        analysed as the long format.
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
        ``seed`` and ``analysis.{alpha, n_resamples, adjust, margins}``
        (margins declared per metric as ``{metric: {"absolute": x}}``).

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
    if fmt not in ("long", "dai", "summaries", "lm_eval"):
        raise ValueError(f"`format` must be 'auto', 'long', 'dai', 'summaries' or 'lm_eval', got {format!r}")
    if not isinstance(strict, (bool, np.bool_)):
        raise TypeError(f"`strict` must be True or False, got {strict!r}")
    if study_overrides is not None and not isinstance(study_overrides, Mapping):
        raise TypeError(f"`study_overrides` must be a mapping, got {type(study_overrides).__name__}")
    cmap = load_mapping(mapping)
    out = RunDir(out_dir)
    run = {"long": _long_run, "dai": _dai_run, "summaries": _summaries_run, "lm_eval": _lm_eval_run}[fmt]
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
