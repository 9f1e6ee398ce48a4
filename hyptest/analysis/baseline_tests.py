"""Tests of metrics against their baselines: Dai et al.'s metrics and per-run summary metrics.

The statistics of ``hyptest reanalyse`` for the ``dai`` and ``summaries``
formats, and of a study's Dai stage: :func:`dai_metric_values` turns Dai et
al.'s logs into per-example, per-layer metric values; :func:`dai_comparisons`
tests each metric against its baseline, per layer and averaged over layers;
:func:`analyse_summaries` / :func:`test_summaries` do the same for per-run
summaries, clustered by run. Every row is a :class:`hyptest.results.Comparison`
decided by :func:`hyptest.results.decide`: one family per metric (no
confirmatory family: these formats carry no order-sensitivity quantity),
margins only where declared.

(Moved out of :mod:`hyptest.workflows.reanalyse`, which imports it and re-exports its
public names, so that the study's pipeline can use these statistics without
importing the reanalysis workflow, which imports the pipeline.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .order import control_family, paired_unit_sampler  # paired per-unit differences: bootstrap within strata, or sign flips
from ..importers import (
    Problem,
    SummariesImport,
    find_dai_tasks,
)
from ..importers._problems import ProblemLog
from ..importers.dai import DaiTaskReader, _not_found
from ..metrics.dai import kendall_attention, kendall_random_baseline, simam, simaou, simaou_random_baseline
from ..metrics.summaries import baseline_strength
from ..results import CONFIRMATORY, Comparison, decide
from ..stats.order_resampling import BootstrapDistribution
from ..study import MarginSpec
from .summary_units import UnitPlan, plan_units

from .._util import python_scalar as _plain
from ..names import DAI_NAMES  # re-exported: hyptest.analysis.baseline_tests.DAI_NAMES keeps working
from .._validation import validate_choice, validate_count, validate_probability, validate_rng

__all__ = [
    "CLAIMED_DIRECTION",
    "COMPARISON_COLUMNS",
    "DAI_NAMES",
    "DaiValues",
    "LAYER_PERMUTATION",
    "NO_CONFIRMATORY",
    "REC2FTP_MIN_GROUP",
    "SummariesAnalysis",
    "analyse_summaries",
    "dai_comparisons",
    "dai_metric_values",
    "layers_by_direction",
    "layers_different",
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
_DAI_BASELINES = {"simaou": "random-update SimAOU", "simam": "ICL vs ZS map (ZSL SimAM)",
                  "kendall": "random attention weights", "kendall_demo_token": "random attention weights",
                  "kendall_demo_example": "random attention weights", "rec2ftp": "P(ICL right | ZS wrong, FT wrong)"}
#: The exact sign-flip test enumerates 2**n sign patterns: used when 2**n <= n_resamples and n <= this.
_EXACT_MAX_UNITS = 16
#: Rec2FTP's two-sample bootstrap needs at least this many examples in each group for a verdict.
REC2FTP_MIN_GROUP = 10
#: Dai et al.'s claim for every metric: ICL resembles FT more than the baseline does, so metric > baseline.
CLAIMED_DIRECTION = "greater"
#: Why these formats have no confirmatory family (results.json and docs).
NO_CONFIRMATORY = ("no confirmatory family: these formats carry no order-sensitivity quantity (Theorem 1's), so every "
                   "metric-vs-baseline comparison is secondary (exploratory), adjusted within its metric's family")


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionOptions:
    """The validated settings of a metric-vs-baseline family: what :func:`~hyptest.results.decide` needs.

    Attributes
    ----------
    alpha : float
        Level of each test.
    n_resamples : int
        Resamples per comparison.
    adjust : str
        Multiplicity adjustment (``holm``, ``bonferroni`` or ``bh``).
    seed : int
        The one integer seed every row's stream is derived from.
    margins : dict of str to MarginSpec
        Declared absolute equivalence margins per metric.
    """

    alpha: float
    n_resamples: int
    adjust: str
    seed: int
    margins: dict[str, MarginSpec]


#: What an absolute margin of the Dai and summaries analyses is a difference of.
_BASELINE_MARGIN_HINT = ("on the metric's own scale, metric − baseline); a `ratio` margin applies to the order-SD "
                         "analyses of a study only")


def decision_options(alpha: object, n_resamples: object, adjust: object, rng: object, margins: object = None, *,
                     confidence: object = 0.95, margin_hint: str = _BASELINE_MARGIN_HINT) -> DecisionOptions:
    """Validate the settings shared by the metric-vs-baseline analyses (Dai, summaries, untrained control).

    Parameters
    ----------
    alpha, confidence : float
        Levels in (0, 1).
    n_resamples : int
        A positive number of resamples.
    adjust : {"holm", "bonferroni", "bh"}
        The multiplicity adjustment.
    rng : numpy.random.Generator or int
        A Generator (one integer seed is drawn from it) or a non-negative seed.
    margins : mapping, optional
        ``{metric: {absolute: x}}``; ratio-only margins are refused.
    margin_hint : str
        The rest of the refusal of a margin without ``absolute``: what it is a difference of.

    Returns
    -------
    DecisionOptions

    Raises
    ------
    TypeError, ValueError
        For a bad setting, naming it.
    """
    validate_probability(alpha, "alpha")
    validate_probability(confidence, "confidence")
    b = validate_count(n_resamples, "n_resamples")
    adj = validate_choice(adjust, "adjust", _ADJUST)
    gen = validate_rng(rng, allow_none=False)
    # decide() derives every row's stream from one integer seed and the row's key
    seed = int(rng) if isinstance(rng, Integral) else int(gen.integers(2**63))
    return DecisionOptions(float(alpha), b, adj, seed, _margins(margins, margin_hint))  # type: ignore[arg-type]


def _margins(margins: object, hint: str) -> dict[str, MarginSpec]:
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
            raise ValueError(f"margins.{name}: give an `absolute` margin ({hint}")
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
                 layer: int | None, baseline_name: str, family: str, opts: DecisionOptions, unit: str, name: str,
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


def _decide(comparisons: list[Comparison], opts: DecisionOptions, front: list[str] | None = None) -> pd.DataFrame:
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
    gen = validate_rng(rng, allow_none=False)
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
        from .dai_demo import kendall_demo_values  # logs written by hyptest's own Dai collector

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
    opts = decision_options(alpha, n_resamples, adjust, rng, margins, confidence=confidence)
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
                      "name": DAI_NAMES[analysis]}
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


def _rec2ftp_comparison(c: pd.DataFrame, context: dict[str, Any], opts: DecisionOptions) -> Comparison:
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
    if min(len(x), len(y)) < REC2FTP_MIN_GROUP:
        return Comparison(**common, test="not testable", resampling="none",
                          not_estimable=(f"ICL right in {counts} ZS-wrong examples (FT right vs FT wrong): the "
                                         f"two-sample bootstrap needs at least {REC2FTP_MIN_GROUP} examples in "
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
    units : hyptest.analysis.summary_units.UnitPlan
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
    **Units** come from :func:`hyptest.analysis.summary_units.plan_units` (stated,
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
    opts = decision_options(alpha, n_resamples, adjust, rng, margins, confidence=confidence)
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
        pass are merged in any case (:func:`hyptest.analysis.summary_units.plan_units`).
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
