"""The Dai et al. section: metrics by layer against their baselines, and the untrained control."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from hyptest.contract import ComparisonRow, DaiSection

from .. import figures
from .format import _DASH, _as_float, _est_ci, _point, _scalar, fmt_num, fmt_p
from .names import _verdict_word

#: Dai et al. (2023) analyses -> (display name, y axis label); Rec2FTP has no layer.
DAI_METRICS: dict[str, tuple[str, str]] = {
    "simaou": ("SimAOU", "cosine similarity of attention-output updates"),
    "simam": ("SimAM", "cosine similarity of attention maps"),
    "kendall": ("Kendall", "Kendall's τ of attention weights"),
    "kendall_demo_token": ("Kendall (demo tokens)", "Kendall's τ of attention to demo tokens"),
    "kendall_demo_example": ("Kendall (demo examples)", "Kendall's τ of attention to demos"),
    "rec2ftp": ("Rec2FTP", "P(ICL right | ZS wrong, FT right)"),
}


def _dai_metric(row: Mapping[str, Any]) -> str | None:
    """The Dai analysis of a row: its key, or the key whose display name starts the (reworded) analysis."""
    a = str(row.get("analysis") or "")
    if a.lower() in DAI_METRICS:
        return a.lower()
    for k, (name, _) in sorted(DAI_METRICS.items(), key=lambda item: -len(item[1][0])):  # longest name first
        if a.startswith(name + " ") or a == name:
            return k
    return None


def _differs(verdict: Any) -> bool:
    """True for a verdict that says the metric differs from its baseline (either side)."""
    return str(verdict or "").strip().lower().startswith(("differ", "above", "below"))


def _side_of(low: Any, high: Any, null: float | None) -> str | None:
    """"greater" / "less" when the interval [low, high] lies entirely above / below `null`."""
    lo, hi = _as_float(low), _as_float(high)
    if null is None:
        return None
    if lo is not None and lo > null:
        return "greater"
    if hi is not None and hi < null:
        return "less"
    return None


def _dai_side(r: Mapping[str, Any]) -> str | None:
    """The side of its baseline a significant Dai row lies on (None when not significant).

    Read from the row as it came, before :func:`_dai_rows` shifts it: a row
    decided on metric − baseline (``rule`` two_sided with both means, or a
    ``hyptest reanalyse`` view with ``difference``) is above when its interval
    lies above 0; an older row that holds the metric's own interval is above
    when that interval lies above the baseline.
    """
    if not _differs(r.get("verdict")):
        return None
    if "difference" in r:
        side = _side_of(r.get("difference_ci_low"), r.get("difference_ci_high"), 0.0)
        diff = _as_float(r.get("difference"))
    elif r.get("rule") == "two_sided" and r.get("mean_a") is not None and r.get("mean_b") is not None:
        side = _side_of(r.get("ci_low"), r.get("ci_high"), _as_float(r.get("null_value")) or 0.0)
        diff = _as_float(r.get("estimate"))
    else:
        base = _as_float(r.get("baseline"))
        side = _side_of(r.get("ci_low"), r.get("ci_high"), base)
        est = _as_float(r.get("estimate"))
        diff = None if est is None or base is None else est - base
    if side is None and diff is not None and diff != 0:  # no usable interval: the estimate's side
        side = "greater" if diff > 0 else "less"
    return side


#: How the Dai table words a significant row, by side (the similarity claim needs "above").
_DAI_SIDE_WORDS = {"greater": "above its baseline", "less": "below its baseline"}


def _dai_rows(dai: DaiSection, comparisons: list[ComparisonRow]) -> tuple[list[dict[str, Any]], bool]:
    """Dai rows in one shape, and whether they were read from a ``hyptest reanalyse`` view.

    ``dai.comparisons`` (a study's own Dai logs) are used as given.  Otherwise the
    comparison rows that carry a ``layer`` key and a Dai analysis are used;
    rows reworded by ``hyptest reanalyse`` (``estimate`` = the difference
    from the baseline, ``difference`` kept) are turned back into the metric:
    estimate = baseline + difference, and the interval is the difference's
    CI shifted by the baseline.
    """
    shifted = False
    if dai.comparisons:
        rows = []
        for r in dai.comparisons:
            metric = _dai_metric(r)
            if metric is None:
                continue
            r = {**r, "_metric": metric, "_side": _dai_side(r)}
            base, value = _as_float(r.get("mean_b")), _as_float(r.get("mean_a"))
            if r.get("rule") == "two_sided" and base is not None and value is not None:
                # decided on metric − baseline: draw the metric, its interval shifted by the baseline
                lo, hi = _as_float(r.get("ci_low")), _as_float(r.get("ci_high"))
                r.update(estimate=value, ci_low=None if lo is None else base + lo,
                         ci_high=None if hi is None else base + hi)
                shifted = True
            rows.append(r)
        return rows, shifted
    rows = []
    for c in comparisons:
        if "layer" not in c or "baseline" not in c:
            continue
        metric = _dai_metric(c)
        if metric is None:
            continue
        r = {**c.model_dump(exclude_unset=True), "_metric": metric, "_side": _dai_side(c)}
        if "difference" in c and str(c.get("analysis") or "").lower() not in DAI_METRICS:
            base = _as_float(c.get("baseline"))
            diff = _as_float(c.get("difference"))
            lo, hi = _as_float(c.get("difference_ci_low")), _as_float(c.get("difference_ci_high"))
            r["estimate"] = None if base is None or diff is None else base + diff
            r["ci_low"] = None if base is None or lo is None else base + lo
            r["ci_high"] = None if base is None or hi is None else base + hi
            shifted = True
        rows.append(r)
    return rows, shifted


def dai_view(dai: DaiSection, correctness: list[dict[str, Any]], comparisons: list[ComparisonRow]
             ) -> dict[str, Any] | None:
    """Dai et al. metrics by layer per (model, task), the layer-averaged table and correctness.

    Reads ``model``, ``task``, ``analysis``, ``layer``, ``estimate``,
    ``ci_low``, ``ci_high``, ``baseline``, ``baseline_name``, ``p_value``,
    ``p_adj`` (or ``p_adjusted``) and ``verdict`` of
    ``dai.comparisons`` (else of the comparison rows with a ``layer``, as
    ``hyptest reanalyse`` writes them), and ``model``, ``task``,
    ``zs_correct``, ``ft_correct``, ``icl_correct`` of ``dai.correctness``
    (else of ``correctness``, a reanalysis's).  None without Dai rows.
    """
    rows, shifted = _dai_rows(dai, comparisons)
    correctness = dai.correctness or correctness
    if not rows and not correctness:
        return None
    color = "#0072B2"
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((_scalar(r.get("model")), _scalar(r.get("task"))), []).append(r)
    out = []
    for gi, (key, grp) in enumerate(sorted(groups.items())):
        panels = []
        counts = []
        for metric in (m for m in DAI_METRICS if m != "rec2ftp"):
            by_layer = [r for r in grp if r["_metric"] == metric and _as_float(r.get("layer")) is not None]
            if not by_layer:
                continue
            name, y_label = DAI_METRICS[metric]
            # marked: the layers whose metric lies significantly above its baseline, the side the claim needs
            pts = [_point(_as_float(r.get("layer")), r, marked=r.get("_side") == "greater") for r in by_layer]
            baseline_name = next((str(r.get("baseline_name")) for r in by_layer if r.get("baseline_name")), "baseline")
            base = [(_as_float(r.get("layer")), _as_float(r.get("baseline"))) for r in by_layer]
            panels.append(figures.Panel(title=name, y_label=y_label, series={name: pts},
                                    ref_lines=({f"baseline: {baseline_name}": base}
                                               if any(b is not None for _, b in base) else {}),
                                    note=f"dashed: {baseline_name}"))
            diff_layers = sorted(int(_as_float(r.get("layer"))) for r in by_layer if _differs(r.get("verdict")))
            above = sorted(int(_as_float(r.get("layer"))) for r in by_layer if r.get("_side") == "greater")
            below = sorted(int(_as_float(r.get("layer"))) for r in by_layer if r.get("_side") == "less")
            counts.append({"metric": name, "n": len(by_layer), "k": len(diff_layers),
                           "layers": ", ".join(str(x) for x in diff_layers) or "none",
                           "n_above": len(above), "above": ", ".join(map(str, above)) or "none",
                           "n_below": len(below), "below": ", ".join(map(str, below)) or "none"})
        figure = None
        if panels:
            figure = Markup(figures.line_panels(
                panels, title=f"Dai et al. metrics by layer — {key[1]} · {key[0]}", x_label="layer (0-based)",
                interval="band", colors={p.title: color for p in panels},
                series_labels={p.title: f"{p.title} (estimate)" for p in panels},
                marker_label="above its baseline (adjusted p < α): supports ICL–FT similarity",
                interval_label="CI of the difference, around the estimate" if shifted else "95% CI",
            ))
        table = []
        for r in sorted((r for r in grp if _as_float(r.get("layer")) is None),
                        key=lambda r: list(DAI_METRICS).index(r["_metric"])):
            p_adj = r.get("p_adj") if r.get("p_adj") is not None else r.get("p_adjusted")
            verdict = r.get("verdict") or "inconclusive"
            if r.get("_side") in _DAI_SIDE_WORDS and str(verdict).lower() == "different":  # decide's word: say the side
                verdict = _DAI_SIDE_WORDS[r["_side"]]
            table.append({
                "metric": DAI_METRICS[r["_metric"]][0],
                "where": "examples ZS got wrong" if r["_metric"] == "rec2ftp" else "averaged over layers",
                "estimate": _est_ci(r), "baseline": fmt_num(r.get("baseline")),
                "baseline_name": _scalar(r.get("baseline_name")) if r.get("baseline_name") is not None else _DASH,
                "p_value": fmt_p(r.get("p_value")), "p_adj": fmt_p(p_adj),
                "verdict": _verdict_word(verdict), "differs": _differs(verdict),
                "supports": r.get("_side") == "greater",
            })
        out.append({"anchor": f"dai-{gi}", "label": f"{key[1]} · {key[0]}", "figure": figure,
                    "table": table, "layer_counts": counts})
    corr = [{"model": _scalar(r.get("model")), "task": _scalar(r.get("task")),
             "zs": fmt_num(r.get("zs_correct")), "ft": fmt_num(r.get("ft_correct")),
             "icl": fmt_num(r.get("icl_correct"))}
            for r in sorted(correctness, key=lambda r: (_scalar(r.get("model")), _scalar(r.get("task"))))]
    return {"groups": out, "correctness": corr, "shifted": shifted}


#: Colours of the untrained-control figure: the trained model and its untrained control.
_UNTRAINED_COLORS = {"trained": "#0072B2", "untrained": "#999999"}


def untrained_view(dai: DaiSection) -> dict[str, Any] | None:
    """Dai metrics of each trained model against its untrained control (Deutch et al. 2024); None without one.

    Reads ``untrained_statements`` (one sentence per
    metric), ``vs_untrained`` (rows of :func:`hyptest.analysis.untrained_control.dai_vs_untrained`;
    the layer-averaged ones and Rec2FTP form the table, the per-layer ones
    mark the figure) and ``untrained_layers`` (per layer: the trained mean and
    the controls' seed means, min and max), and ``controls``.
    """
    rows, layers, statements = dai.vs_untrained, dai.untrained_layers, dai.untrained_statements
    if not rows and not statements:
        return None
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (_scalar(r.get("model")), _scalar(r.get("task")))
        groups.setdefault(key, {"rows": [], "layers": [], "statements": []})["rows"].append(r)
    for r in layers:
        key = (_scalar(r.get("model")), _scalar(r.get("task")))
        groups.setdefault(key, {"rows": [], "layers": [], "statements": []})["layers"].append(r)
    for r in statements:
        key = (_scalar(r.get("model")), _scalar(r.get("task")))
        groups.setdefault(key, {"rows": [], "layers": [], "statements": []})["statements"].append(r)
    controls = [{"model": _scalar(c.get("model")), "of": _scalar(c.get("control_of")),
                 "seed": _scalar(c.get("init_seed"))} for c in dai.controls]
    return {"groups": [_untrained_group(gi, key, g) for gi, (key, g) in enumerate(sorted(groups.items()))],
            "controls": controls}


def _untrained_group(gi: int, key: tuple[str, str], g: dict[str, Any]) -> dict[str, Any]:
    """One (model, task): the figure by layer, the layer-averaged table, the statements, the resampling scheme."""
    panels = []
    for metric in (m for m in DAI_METRICS if m != "rec2ftp"):
        per_layer = sorted((r for r in g["layers"] if r.get("analysis") == metric),
                           key=lambda r: _as_float(r.get("layer")) or 0.0)
        if not per_layer:
            continue
        higher = {int(_as_float(r.get("layer"))) for r in g["rows"] if r.get("analysis") == metric
                  and _as_float(r.get("layer")) is not None and r.get("direction") == "trained higher"}
        trained = [figures.SeriesPoint(x=_as_float(r.get("layer")), y=_as_float(r.get("trained")),
                                   marked=int(_as_float(r.get("layer"))) in higher) for r in per_layer]
        untrained = [figures.SeriesPoint(x=_as_float(r.get("layer")), y=_as_float(r.get("untrained")),
                                     lo=_as_float(r.get("untrained_min")), hi=_as_float(r.get("untrained_max")))
                     for r in per_layer]
        name, y_label = DAI_METRICS[metric]
        seeds = int(_as_float(per_layer[0].get("n_seeds")) or 0)
        panels.append(figures.Panel(title=name, y_label=y_label,
                                series={"trained": trained, "untrained": untrained},
                                note=f"{len(higher)} of {len(per_layer)} layers: trained higher"
                                + (f" · {seeds} seeds" if seeds else "")))
    figure = None
    if panels:
        figure = Markup(figures.line_panels(
            panels, title=f"Trained vs untrained control by layer — {key[1]} · {key[0]}",
            x_label="layer (0-based)", interval="band", colors=_UNTRAINED_COLORS,
            series_labels={"trained": f"{key[0]} (trained)",
                           "untrained": "untrained control: mean of the seeds (band: min–max of the seed means)"},
            marker_label="trained significantly higher than untrained (per-layer family, adjusted p < α)",
            interval_label="min–max over control seeds"))
    table = []
    order = list(DAI_METRICS)
    for r in sorted((r for r in g["rows"] if _as_float(r.get("layer")) is None),
                    key=lambda r: order.index(str(r.get("analysis"))) if r.get("analysis") in order else 99):
        metric = str(r.get("analysis"))
        seed_means = r.get("seed_means") if isinstance(r.get("seed_means"), list) else []
        seeds = r.get("seeds") if isinstance(r.get("seeds"), list) else []
        verdict = r.get("verdict") or "inconclusive"
        word = _verdict_word(verdict)
        if verdict == "different" and r.get("direction"):
            word = f"{word}: {r.get('direction')}"
        table.append({
            "metric": DAI_METRICS.get(metric, (metric, ""))[0],
            "where": "examples ZS got wrong, FT right" if metric == "rec2ftp" else "averaged over layers",
            "trained": fmt_num(r.get("mean_a")), "untrained": fmt_num(r.get("mean_b")),
            "seeds": ", ".join(f"s{s}: {fmt_num(m)}" for s, m in zip(seeds, seed_means)) or _DASH,
            "difference": _est_ci(r), "margin": fmt_num(r.get("margin")) if r.get("margin") is not None else _DASH,
            "p_adj": fmt_p(r.get("p_adjusted")), "verdict": word,
            "tells_apart": r.get("direction") == "trained higher",
        })
    resampling = next((str(r.get("resampling")) for r in g["rows"] if r.get("resampling") not in (None, "none")),
                      "")
    return {"anchor": f"untrained-{gi}", "label": f"{key[1]} · {key[0]}", "figure": figure, "table": table,
            "statements": [{"text": str(s.get("text")), "tells_apart": s.get("tells_apart")}
                           for s in g["statements"]], "resampling": resampling}
