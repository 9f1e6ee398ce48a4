"""Dai et al.'s metrics of a trained model tested against its untrained control (Deutch et al. 2024).

Deutch, Magar, Natan & Dar (NAACL 2024, "In-context learning and gradient
descent revisited") show that Dai et al.'s similarity metrics (SimAOU, SimAM,
Kendall, Rec2FTP) come out high even for models that cannot do in-context
learning, untrained ones among them. So "SimAOU lies above its random
baseline" is no evidence that the trained model's ICL behaves like fine-tuning
unless the trained model also scores above an untrained model of its
architecture. A study gives a model ``control: untrained``
(:class:`hyptest.study.UntrainedControlSpec`); the Dai stage then writes the
same ZS / ICL / FT records for each control seed, and this module compares
them:

:func:`dai_vs_untrained`
    Per (trained model, demo-set folder) and metric: trained − untrained, the
    untrained value being the mean over the control seeds, for the mean over
    layers (family ``dai_vs_untrained``, with Rec2FTP) and per layer (family
    ``dai_vs_untrained_by_layer``), decided by :func:`hyptest.results.decide`.
:func:`untrained_layer_table`
    Per layer: the trained model's mean, the controls' per-seed means, their
    mean and spread (the report's figure).
:func:`untrained_statements`
    One plain sentence per metric: whether it tells the trained model from an
    untrained one.

Resampling
----------
The examples (queries) are the same for the trained model and every control,
and the control seeds are a sample of untrained initialisations: a crossed
design. The interval therefore resamples both (Owen's "pigeonhole"
bootstrap, 2007): each draw takes ``n`` examples with replacement (the same
ones for the trained model and every control: paired) and ``S`` control seeds
with replacement, independently, and recomputes mean(trained) −
mean(untrained over the drawn seeds and examples). The demo set and its order
are fixed (one set per folder, as in Dai et al.). With few seeds (3 by
default) the seed part of the interval rests on few values: an honest but
coarse account of seed-to-seed variation; with one seed the seeds are fixed
and the interval covers query sampling only (the rows say so).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..names import DAI_NAMES as NAMES
from .baseline_tests import REC2FTP_MIN_GROUP, DecisionOptions, decision_options
from ..results import Comparison, decide
from ..stats.order_resampling import BootstrapDistribution

__all__ = ["FAMILY", "FAMILY_BY_LAYER", "dai_vs_untrained", "untrained_layer_table", "untrained_statements"]

#: The family of the headline rows (mean over layers, and Rec2FTP): one Holm family for every metric.
FAMILY = "dai_vs_untrained"
#: The family of the per-layer rows (adjusted apart, so the headline is not diluted by every layer).
FAMILY_BY_LAYER = "dai_vs_untrained_by_layer"
#: Metrics compared per layer, in report order.
LAYER_METRICS = ("simaou", "simam", "kendall", "kendall_demo_token", "kendall_demo_example")
#: The first columns of :func:`dai_vs_untrained`'s table (the rest as :func:`hyptest.results.decide` gives them).
COLUMNS = ["model", "task", "method_a", "method_b", "analysis", "layer", "family", "role", "rule", "estimate", "scale",
           "null_value", "mean_a", "mean_b", "n", "n_seeds", "seeds", "seed_means", "margin", "margin_source",
           "resampling", "test", "ci_low", "ci_high", "ci_level", "ci_method", "eq_low", "eq_high", "eq_level",
           "p_value", "p_adjusted", "p_equivalence", "p_equivalence_adjusted", "family_size", "n_resamples",
           "min_equivalence_margin", "verdict", "direction", "note", "adjust_method"]


def _options(alpha: Any, n_resamples: Any, adjust: Any, rng: Any, margins: Any) -> DecisionOptions:
    """Validated settings; a clear ValueError / TypeError for a bad one."""
    return decision_options(alpha, n_resamples, adjust, rng, margins,
                            margin_hint="trained − untrained, on the metric's scale)")


def _two_way_sampler(t: np.ndarray, u: np.ndarray):
    """Sampler of mean(t) − mean(u) with examples (paired) and seeds (rows of ``u``) resampled independently."""
    n, s = len(t), u.shape[0]

    def sample(size: int, rng: np.random.Generator) -> BootstrapDistribution:
        w = rng.multinomial(n, np.full(n, 1 / n), size=size).astype(float)  # (B, n) example counts
        v = (rng.multinomial(s, np.full(s, 1 / s), size=size).astype(float) if s > 1
             else np.ones((size, 1)))  # (B, S) seed counts
        trained = w @ t / n
        untrained = np.einsum("bs,sn,bn->b", v, u, w) / (s * n)
        return BootstrapDistribution(trained - untrained)

    return sample


def _resampling_text(n: int, s: int) -> str:
    if s > 1:
        return (f"two-way bootstrap: the {n} examples resampled (the same for the trained model and every control) "
                f"and the {s} control seeds resampled independently")
    return (f"bootstrap over the {n} examples (paired: the same for the trained model and the control); one "
            "control seed, so the spread between untrained initialisations is not in the interval")


def _comparison(t: np.ndarray, u: np.ndarray, *, context: dict[str, Any], analysis: str, layer: int | None,
                family: str, opts: DecisionOptions, seeds: list[int], what: str) -> Comparison:
    """Trained − untrained of one metric on the examples finite in every model."""
    ok = np.isfinite(t) & np.isfinite(u).all(axis=0)
    t, u = t[ok], u[:, ok]
    name = NAMES.get(analysis, analysis)
    margin = opts.margins.get(analysis)
    seed_means = [float(x) for x in u.mean(axis=1)] if ok.any() else [float("nan")] * len(seeds)
    common: dict[str, Any] = {
        **context, "analysis": analysis, "family": family, "rule": "two_sided", "null_value": 0.0,
        "scale": f"difference of means ({name}: trained − untrained, mean over {len(seeds)} control seeds){what}",
        "estimate": float(t.mean() - u.mean()) if ok.any() else float("nan"),
        "mean_a": float(t.mean()) if ok.any() else None, "mean_b": float(u.mean()) if ok.any() else None,
        "n": int(ok.sum()),
        "margin": float(margin.absolute) if margin is not None else None,
        "margin_source": (f"declared: dai.margins_vs_untrained.{analysis} = absolute {margin.absolute:g}"
                          if margin is not None else None),
        "extra": {"layer": layer, "n_seeds": len(seeds), "seeds": list(seeds), "seed_means": seed_means},
    }
    if ok.sum() < 2:
        return Comparison(**common, not_estimable="fewer than 2 examples with a value in the trained model and "
                          "every control", test="not testable", resampling="none")
    tost = " + TOST" if margin is not None else ""
    return Comparison(**common, sampler=_two_way_sampler(t, u), resampling=_resampling_text(len(t), len(seeds)),
                      test=f"two-way bootstrap of {name}, trained − untrained, over examples and control seeds{tost}")


def _rec2ftp(correct: dict[str, pd.DataFrame], trained: str, controls: list[str], *, context: dict[str, Any],
             opts: DecisionOptions, seeds: list[int]) -> Comparison:
    """Rec2FTP = P(ICL right | ZS wrong, FT right), trained − mean over controls, on the shared examples."""
    frames = [correct[m].set_index("example") for m in (trained, *controls)]
    shared = sorted(set.intersection(*(set(f.index) for f in frames)))
    hits, group = [], []  # per model: (ICL right & in group), in group; over the shared examples
    for f in frames:
        f = f.loc[shared]
        zs, ft, icl = (f[k].to_numpy(bool) for k in ("zs_correct", "ft_correct", "icl_correct"))
        g = ~zs & ft
        hits.append((g & icl).astype(float))
        group.append(g.astype(float))
    hits_a, group_a = np.array(hits), np.array(group)  # (1 + S, n)
    sizes = group_a.sum(axis=1)
    rec = np.divide(hits_a.sum(axis=1), sizes, out=np.full(len(sizes), np.nan), where=sizes > 0)
    margin = opts.margins.get("rec2ftp")
    common: dict[str, Any] = {
        **context, "analysis": "rec2ftp", "family": FAMILY, "rule": "two_sided", "null_value": 0.0,
        "scale": (f"difference of proportions (Rec2FTP = P(ICL right | ZS wrong, FT right): trained − untrained, "
                  f"mean over {len(seeds)} control seeds)"),
        "estimate": float(rec[0] - np.mean(rec[1:])), "mean_a": float(rec[0]), "mean_b": float(np.mean(rec[1:])),
        "n": int(sizes[0]),
        "margin": float(margin.absolute) if margin is not None else None,
        "margin_source": (f"declared: dai.margins_vs_untrained.rec2ftp = absolute {margin.absolute:g}"
                          if margin is not None else None),
        "extra": {"layer": None, "n_seeds": len(seeds), "seeds": list(seeds),
                  "seed_means": [float(x) for x in rec[1:]], "group_sizes": [int(x) for x in sizes]},
    }
    if sizes.min() < REC2FTP_MIN_GROUP:
        sizes_text = ", ".join(str(int(x)) for x in sizes)
        return Comparison(**common, test="not testable", resampling="none", not_estimable=(
            f"the examples ZS gets wrong and FT right number {sizes_text} (trained, then each control); the "
            f"bootstrap needs at least {REC2FTP_MIN_GROUP} in every model"))
    n, s = len(shared), len(controls)

    def sample(size: int, rng: np.random.Generator) -> BootstrapDistribution:
        w = rng.multinomial(n, np.full(n, 1 / n), size=size).astype(float)
        v = (rng.multinomial(s, np.full(s, 1 / s), size=size).astype(float) if s > 1 else np.ones((size, 1)))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (w @ hits_a.T) / (w @ group_a.T)  # (B, 1 + S)
        draws = r[:, 0] - (v * r[:, 1:]).sum(axis=1) / s
        return BootstrapDistribution(draws[np.isfinite(draws)])

    tost = " + TOST" if margin is not None else ""
    return Comparison(**common, sampler=sample, resampling=_resampling_text(n, s) + "; Rec2FTP recomputed per draw",
                      test=f"two-way bootstrap of Rec2FTP, trained − untrained, over examples and control seeds{tost}")


def _by_model(values: Any) -> tuple[dict[tuple[str, str], pd.DataFrame], dict[tuple[str, str], pd.DataFrame]]:
    v = {k: g for k, g in values.values.groupby(["model", "task"], sort=False)}
    c = {k: g for k, g in values.correctness.groupby(["model", "task"], sort=False)}
    return v, c


def _pivot(frame: pd.DataFrame, analysis: str) -> pd.DataFrame:
    sub = frame[frame["analysis"] == analysis]
    return sub.pivot(index="example", columns="layer", values="value").sort_index()


def _groups(values: Any, controls: Mapping[str, tuple[str, int]]) -> list[tuple[str, str, list[str], list[int]]]:
    """(trained, task, its controls with records for that task, their seeds), in sorted order."""
    present = set(zip(values.correctness["model"], values.correctness["task"]))
    by_trained: dict[str, list[tuple[int, str]]] = {}
    for name, (trained, seed) in controls.items():
        by_trained.setdefault(trained, []).append((int(seed), name))
    out = []
    for trained in sorted(by_trained):
        members = sorted(by_trained[trained])
        for task in sorted(t for m, t in present if m == trained):
            here = [(seed, name) for seed, name in members if (name, task) in present]
            if here:
                out.append((trained, task, [n for _, n in here], [s for s, _ in here]))
    return out


def dai_vs_untrained(
    values: Any,
    controls: Mapping[str, tuple[str, int]],
    *,
    alpha: float = 0.05,
    n_resamples: int = 10000,
    adjust: str = "holm",
    rng: np.random.Generator | int = 0,
    margins: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Test every Dai metric of each trained model against its untrained control, pooled over control seeds.

    Parameters
    ----------
    values : hyptest.workflows.reanalyse.DaiValues
        From :func:`hyptest.workflows.reanalyse.dai_metric_values` on logs holding the
        trained models and their controls (same demo-set folders, same
        examples).
    controls : mapping
        Control model name -> (trained model name, init seed)
        (:meth:`hyptest.study.Study.controls`).
    alpha, n_resamples, adjust, rng
        As in :func:`hyptest.workflows.reanalyse.dai_comparisons`.
    margins : mapping, optional
        Declared equivalence margins of trained − untrained per metric,
        ``{metric: {"absolute": x}}``; without one a row is "different" or
        "inconclusive", never "equivalent".

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS` first, then the rest of :func:`hyptest.results.decide`'s (``model`` the trained
        model, ``method_a`` "trained", ``method_b`` "untrained"; ``estimate``
        = mean(trained) − mean(untrained), the latter over the examples and
        the control seeds; ``mean_a``/``mean_b`` the two means; ``layer``
        None for the mean over layers and for Rec2FTP), then ``n_seeds``,
        ``seeds``, ``seed_means`` (each control seed's mean) and
        ``direction`` ("trained higher" / "untrained higher" for a
        ``different`` row whose interval lies on that side, else None).
        Families: :data:`FAMILY` (the mean over layers of each metric, and
        Rec2FTP) and :data:`FAMILY_BY_LAYER` (every layer of every metric).
        Empty when no trained model has a control with records.

    Notes
    -----
    The mean over layers is taken per example (an example with an undefined
    value at any layer is left out), in every model, before the difference.
    Rec2FTP is P(ICL right | ZS wrong, FT right) of each model on the shared
    examples; it needs at least 10 examples in that group in every model.
    """
    opts = _options(alpha, n_resamples, adjust, rng, margins)
    by_values, by_correct = _by_model(values)
    comparisons: list[Comparison] = []
    for trained, task, names, seeds in _groups(values, controls):
        context = {"model": trained, "task": task, "n_demos": None, "method_a": "trained", "method_b": "untrained"}
        comparisons.append(_rec2ftp({m: by_correct[(m, task)] for m in (trained, *names)}, trained, names,
                                    context=context, opts=opts, seeds=seeds))
        for analysis in LAYER_METRICS:
            tables = [_pivot(by_values.get((m, task), values.values.iloc[:0]), analysis) for m in (trained, *names)]
            if any(t.empty for t in tables):
                continue
            examples = sorted(set.intersection(*(set(t.index) for t in tables)))
            layers = sorted(set.intersection(*(set(t.columns) for t in tables)))
            if not examples or not layers:
                continue
            cubes = np.stack([t.loc[examples, layers].to_numpy(float) for t in tables])  # (1 + S, n, L)
            common = {"context": context, "analysis": analysis, "opts": opts, "seeds": seeds}
            for j, layer in enumerate(layers):
                comparisons.append(_comparison(cubes[0, :, j], cubes[1:, :, j], layer=int(layer),
                                               family=FAMILY_BY_LAYER, what=f", layer {int(layer)}", **common))
            means = cubes.mean(axis=2)  # NaN at any layer: NaN for the example
            comparisons.append(_comparison(means[0], means[1:], layer=None, family=FAMILY,
                                           what=", averaged over layers per example", **common))
    if not comparisons:
        return pd.DataFrame(columns=COLUMNS)
    table, _ = decide(comparisons, alpha=opts.alpha, adjust=opts.adjust, n_resamples=opts.n_resamples, seed=opts.seed)
    table["layer"] = pd.Series([None if x is None or pd.isna(x) else int(x) for x in table["layer"]],
                               index=table.index, dtype=object)
    direction = []
    for row in table.to_dict("records"):
        low, high = row.get("ci_low"), row.get("ci_high")
        if row.get("verdict") != "different":
            direction.append(None)
        elif low is not None and np.isfinite(low) and low > 0:
            direction.append("trained higher")
        elif high is not None and np.isfinite(high) and high < 0:
            direction.append("untrained higher")
        else:
            direction.append(None)
    table["direction"] = pd.Series(direction, index=table.index, dtype=object)
    return table[[c for c in COLUMNS if c in table.columns] + [c for c in table.columns if c not in COLUMNS]]


def untrained_layer_table(values: Any, controls: Mapping[str, tuple[str, int]]) -> pd.DataFrame:
    """Per (trained model, task, metric, layer): the trained mean and the controls' per-seed means.

    Returns
    -------
    pandas.DataFrame
        Columns ``model`` (the trained model), ``task``, ``analysis``,
        ``layer``, ``trained`` (mean over examples), ``untrained`` (mean of
        the seed means), ``untrained_min``, ``untrained_max``,
        ``untrained_sd`` (spread of the seed means; SD with ddof 1, NaN for
        one seed), ``seed_means``, ``n_seeds``, ``n_examples``.  The
        examples are those shared by the trained model and every control.
    """
    by_values, _ = _by_model(values)
    rows = []
    for trained, task, names, seeds in _groups(values, controls):
        for analysis in LAYER_METRICS:
            tables = [_pivot(by_values.get((m, task), values.values.iloc[:0]), analysis) for m in (trained, *names)]
            if any(t.empty for t in tables):
                continue
            examples = sorted(set.intersection(*(set(t.index) for t in tables)))
            for layer in sorted(set.intersection(*(set(t.columns) for t in tables))):
                cols = [t.loc[examples, layer].to_numpy(float) for t in tables]
                means = [float(np.nanmean(c)) if np.isfinite(c).any() else float("nan") for c in cols]
                seed_means = np.array(means[1:])
                rows.append({
                    "model": trained, "task": task, "analysis": analysis, "layer": int(layer), "trained": means[0],
                    "untrained": float(np.mean(seed_means)), "untrained_min": float(np.min(seed_means)),
                    "untrained_max": float(np.max(seed_means)),
                    "untrained_sd": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else float("nan"),
                    "seed_means": [float(x) for x in seed_means], "seeds": list(seeds), "n_seeds": len(seeds),
                    "n_examples": len(examples)})
    return pd.DataFrame(rows, columns=["model", "task", "analysis", "layer", "trained", "untrained", "untrained_min",
                                       "untrained_max", "untrained_sd", "seed_means", "seeds", "n_seeds",
                                       "n_examples"])


def _num(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—"
    return "—" if not math.isfinite(v) else f"{v:.3g}"


def _baseline_text(metric: str, trained: str, task: str, baseline_rows: list[dict[str, Any]],
                   controls: list[str]) -> str:
    """How the trained model and its controls fare against the metric's classic baseline (layer mean)."""
    def side(model: str) -> str | None:
        for r in baseline_rows:
            if r.get("model") == model and r.get("task") == task and r.get("analysis") == metric \
                    and r.get("layer") is None and r.get("verdict") == "different":
                return r.get("direction")
        return None

    if not any(r.get("analysis") == metric for r in baseline_rows):
        return ""
    above = sum(side(c) == "greater" for c in controls)
    trained_side = {"greater": "lies above", "less": "lies below"}.get(side(trained) or "", "is not told from")
    return (f" Against its classic baseline (mean over layers) the trained model {trained_side} it, and "
            f"{above} of {len(controls)} untrained seeds lie significantly above it.")


def untrained_statements(vs_untrained: pd.DataFrame, baseline_rows: pd.DataFrame | None = None,
                         controls: Mapping[str, tuple[str, int]] | None = None) -> list[dict[str, Any]]:
    """One plain sentence per (trained model, task, metric) from the headline rows of :func:`dai_vs_untrained`.

    Parameters
    ----------
    vs_untrained : pandas.DataFrame
        From :func:`dai_vs_untrained`; the rows of family :data:`FAMILY` are used.
    baseline_rows : pandas.DataFrame, optional
        The metric-vs-classic-baseline rows (:func:`hyptest.workflows.reanalyse.dai_comparisons`,
        with ``direction``) of the trained models and their controls, to add
        how each fares against the classic baseline.
    controls : mapping, optional
        Control name -> (trained model, seed), for that addition.

    Returns
    -------
    list of dict
        ``model``, ``task``, ``analysis``, ``metric`` (display name),
        ``verdict``, ``tells_apart`` (True: trained significantly higher;
        False: not told apart or untrained higher; None: not estimable) and
        ``text``.
    """
    rows = vs_untrained[vs_untrained["family"] == FAMILY].to_dict("records") if len(vs_untrained) else []
    base = baseline_rows.to_dict("records") if baseline_rows is not None and len(baseline_rows) else []
    order = ["rec2ftp", *LAYER_METRICS]
    out = []
    for r in sorted(rows, key=lambda r: (str(r["model"]), str(r["task"]), order.index(r["analysis"])
                                         if r["analysis"] in order else len(order))):
        name = NAMES.get(r["analysis"], r["analysis"])
        seeds = r.get("n_seeds") or 0
        verdict = r.get("verdict")
        means = (f"trained {_num(r.get('mean_a'))} vs untrained {_num(r.get('mean_b'))} (mean of {seeds} "
                 f"seed{'s' if seeds != 1 else ''})")
        level = r.get("ci_level")
        ci = (f"difference {_num(r.get('estimate'))} [{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}]"
              + (f" at {float(level):.3g}" if level is not None and math.isfinite(float(level)) else "")
              + (f", p_adj {_num(r.get('p_adjusted'))}" if r.get("p_adjusted") is not None else ""))
        where = "over examples ZS gets wrong and FT right" if r["analysis"] == "rec2ftp" else "averaged over layers"
        if verdict == "different" and r.get("direction") == "trained higher":
            text, tells = f"{name} tells the trained model from an untrained one ({where}): {means}, {ci}.", True
        elif verdict == "different":
            text = (f"{name} is higher for an untrained model than for the trained one ({where}): {means}, {ci}; "
                    f"so a high {name} is no evidence of what training gave the model.")
            tells = False
        elif verdict == "equivalent":
            text = (f"{name} cannot tell the trained model from an untrained one ({where}): {means}, {ci}; the "
                    f"difference lies within the declared margin ±{_num(r.get('margin'))} (equivalent).")
            tells = False
        elif verdict == "negligible":
            text = (f"{name} tells the trained model from an untrained one only negligibly ({where}): {means}, "
                    f"{ci}, inside the declared margin ±{_num(r.get('margin'))}.")
            tells = False
        elif verdict == "inconclusive":
            absence = ("no equivalence margin was declared, so this is no evidence of a difference rather than "
                       "evidence of equivalence" if r.get("margin") is None else
                       f"nor is it shown within the declared margin ±{_num(r.get('margin'))}")
            text = (f"{name} cannot tell the trained model from an untrained one ({where}): {means}, {ci} "
                    f"(inconclusive; {absence}).")
            tells = False
        else:
            text, tells = f"{name} vs the untrained control: not estimable ({r.get('note') or 'too few units'}).", None
        if controls and r["analysis"] != "rec2ftp":
            mine = [c for c, (t, _) in controls.items() if t == r["model"]]
            text += _baseline_text(r["analysis"], str(r["model"]), str(r["task"]), base, mine)
        out.append({"model": r["model"], "task": r["task"], "analysis": r["analysis"], "metric": name,
                    "verdict": verdict, "tells_apart": tells, "text": text})
    return out
