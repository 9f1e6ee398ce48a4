"""The descriptive sections: N sweep, trajectories, checkpoints, vocabulary, weight sparsity."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from markupsafe import Markup

from .. import figures
from .format import (
    _DASH,
    _as_float,
    _context_label,
    _est_ci,
    _group_key,
    _n_demos_key,
    _num_sort,
    _point,
    _scalar,
    _sort_key,
    fmt_ci,
    fmt_num,
)
from .names import AGREEMENT_METRICS, _short_method, method_display

#: ``n_sweep`` metric -> (display name, y axis label with units).
N_SWEEP_METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "accuracy (share correct, 0–1)"),
    "order_sd": ("order sensitivity", "mean std of P(gold) across orders"),
    "token_overlap": ("token overlap", "share of top-k tokens shared (0–1)"),
    "overlap_cosine": ("overlap cosine", "cosine on shared top-k (−1–1)"),
    "label_js": ("label JS divergence", "JS divergence (nats)"),
    "label_kl": ("label KL divergence", "KL(ICL ‖ method) (nats)"),
}

#: ``trajectories`` metric -> (display name, y axis label with units).
TRAJECTORY_METRICS: dict[str, tuple[str, str]] = {
    "label_js_to_icl": ("label JS divergence to ICL", "JS divergence (nats)"),
    "token_overlap_to_icl": ("token overlap with ICL", "share of top-k tokens shared (0–1)"),
    "p_gold": ("P(gold)", "probability of the gold label (0–1)"),
    "accuracy": ("accuracy", "accuracy (share correct, 0–1)"),
}

#: ``checkpoints`` metric -> (display name, y axis label with units).
CHECKPOINT_METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "accuracy (share correct, 0–1)"),
    "order_sd": ("order sensitivity", "mean std of P(gold) across orders"),
}


def _metric_names(table: Mapping[str, tuple[str, str]], metric: str) -> tuple[str, str]:
    """(display name, y label) of a metric; unknown metrics read as their name."""
    if metric in table:
        return table[metric]
    name = metric.replace("_", " ")
    return name, name


def _ordered_metrics(table: Mapping[str, Any], present: Iterable[str]) -> list[str]:
    present = list(dict.fromkeys(present))
    return [m for m in table if m in present] + [m for m in present if m not in table]


def _ordered_methods(present: Iterable[str], methods_order: Sequence[str], reference: str | None = None) -> list[str]:
    """Methods in the report's order, the reference first, grid members after their family."""
    present = list(dict.fromkeys(str(m) for m in present))

    def rank(m: str) -> tuple:
        fam = figures.method_family(m)
        i = methods_order.index(m) if m in methods_order else (
            methods_order.index(fam) if fam in methods_order else len(methods_order))
        return (0 if m == reference else 1, i, fam, 0 if m == fam else 1, present.index(m))

    return sorted(present, key=rank)


def n_sweep_view(
    rows: list[dict[str, Any]], methods_order: list[str], colors: dict[str, str], reference: str
) -> dict[str, Any] | None:
    """Figures and tables of the ``n_sweep`` rows, one per (model, task); None without rows.

    Reads ``model``, ``task``, ``method``, ``n_demos``, ``metric``,
    ``estimate``, ``ci_low`` and ``ci_high`` of each row.
    """
    rows = [r for r in rows if r.get("metric") is not None and r.get("method") is not None]
    if not rows:
        return None
    ref = _short_method(reference)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((_scalar(r.get("model")), _scalar(r.get("task"))), []).append(r)
    out = []
    for gi, (key, grp) in enumerate(sorted(groups.items())):
        ns = _num_sort(r.get("n_demos") for r in grp)
        cats = [fmt_num(n) for n in ns]
        metrics = _ordered_metrics(N_SWEEP_METRICS, (str(r["metric"]) for r in grp))
        methods = _ordered_methods((str(r["method"]) for r in grp), methods_order, reference)
        cols = figures.family_colors(methods, colors)
        panels, table = [], []
        for metric in metrics:
            name, y_label = _metric_names(N_SWEEP_METRICS, metric)
            mine = [r for r in grp if str(r["metric"]) == metric]
            series: dict[str, list[figures.SeriesPoint]] = {}
            for r in mine:
                series.setdefault(str(r["method"]), []).append(_point(fmt_num(_n_demos_key(r.get("n_demos"))), r))
            agreement = metric in AGREEMENT_METRICS
            note = f"{ref}: vs {ref}, another order · others: vs {ref}, same order" if agreement else ""
            panels.append(figures.Panel(title=name, y_label=y_label, series=series, note=note))
            for m in methods:
                cells = {fmt_num(_n_demos_key(r.get("n_demos"))): _est_ci(r) for r in mine if str(r["method"]) == m}
                if not cells:
                    continue
                label = method_display(m)
                if agreement:
                    label = (f"{ref} vs {ref} (another order)" if m == reference
                             else f"{_short_method(m)} vs {ref} (same order)")
                table.append({"metric": name, "method": m, "label": label, "color": cols.get(m, "#444444"),
                              "cells": [cells.get(c, _DASH) for c in cats]})
        title = f"N sweep — {key[1]} · {key[0]}"
        figure = figures.line_panels(
            panels, title=title, x_label="N (demonstrations per prompt)", categories=cats,
            interval="whiskers", series_order=methods,
            series_labels={m: method_display(m) for m in methods}, colors=cols, panel_width=340,
        )
        out.append({"anchor": f"n-sweep-{gi}", "label": f"{key[1]} · {key[0]}", "figure": Markup(figure),
                    "ns": cats, "table": table})
    return {"groups": out, "reference": method_display(reference), "ref_short": ref}


def _reference_value(
    traj: list[dict[str, Any]], accuracy: list[dict[str, Any]], key: tuple[str, str, Any], metric: str,
    reference: str
) -> float | None:
    """The reference's (ICL's) value of ``metric`` for a trajectory group.

    Taken from the group's rows of the reference method (the last step), else
    from the ``accuracy`` rows (``accuracy`` or ``mean_p_gold``).
    """
    own = [r for r in traj if str(r.get("method")) == reference and str(r.get("metric")) == metric
           and _as_float(r.get("estimate")) is not None]
    if own:
        last = max(own, key=lambda r: _as_float(r.get("step")) or 0.0)
        return _as_float(last.get("estimate"))
    column = {"accuracy": "accuracy", "p_gold": "mean_p_gold"}.get(metric)
    if column is None:
        return None
    for r in accuracy:
        if (str(r.get("method")) == reference
                and _group_key(r.get("model"), r.get("task"), r.get("n_demos")) == key):
            return _as_float(r.get(column))
    return None


def trajectories_view(
    trajectories: list[dict[str, Any]], closest: list[dict[str, Any]], accuracy: list[dict[str, Any]],
    methods_order: list[str], colors: dict[str, str], reference: str
) -> dict[str, Any] | None:
    """Figures per (model, task, N) of the ``trajectories`` rows and the ``closest_to_icl`` table.

    Reads ``model``, ``task``, ``n_demos``, ``method``, ``step``, ``metric``,
    ``estimate``, ``ci_low`` and ``ci_high`` of ``trajectories`` rows, and
    ``model``, ``task``, ``n_demos``, ``family``, ``method``, ``step``,
    ``label_js_to_icl``, ``ci_low`` and ``ci_high`` of ``closest_to_icl``
    rows; None when both are missing.
    """
    traj = [r for r in trajectories if r.get("metric") is not None and r.get("method") is not None]
    if not traj and not closest:
        return None
    ref = _short_method(reference)
    groups: dict[tuple[str, str, Any], list[dict[str, Any]]] = {}
    for r in traj:
        groups.setdefault(_group_key(r.get("model"), r.get("task"), r.get("n_demos")), []).append(r)
    out = []
    for gi, key in enumerate(sorted(groups, key=_sort_key)):
        grp = groups[key]
        label = _context_label(key[0] or None, key[1] or None, key[2])
        metrics = _ordered_metrics(TRAJECTORY_METRICS, (str(r["metric"]) for r in grp))
        methods = _ordered_methods((str(r["method"]) for r in grp if str(r["method"]) != reference), methods_order)
        cols = figures.family_colors(methods, colors)
        panels, table = [], []
        for metric in metrics:
            name, y_label = _metric_names(TRAJECTORY_METRICS, metric)
            mine = [r for r in grp if str(r["metric"]) == metric and str(r["method"]) != reference]
            series: dict[str, list[figures.SeriesPoint]] = {}
            for r in mine:
                if _as_float(r.get("step")) is not None:
                    series.setdefault(str(r["method"]), []).append(_point(_as_float(r.get("step")), r))
            hlines = []
            if metric in ("p_gold", "accuracy"):
                v = _reference_value(grp, accuracy, key, metric, reference)
                if v is not None:
                    hlines.append((v, f"{ref} (no training)"))
            panels.append(figures.Panel(title=name, y_label=y_label, series=series, hlines=hlines))
            for m in methods:
                pts = sorted((r for r in mine if str(r["method"]) == m and _as_float(r.get("step")) is not None),
                             key=lambda r: _as_float(r.get("step")))
                if not pts:
                    continue
                first, last = pts[0], pts[-1]
                table.append({"metric": name, "method": m, "color": cols.get(m, "#444444"),
                              "first_step": fmt_num(_n_demos_key(first.get("step"))), "first": _est_ci(first),
                              "last_step": fmt_num(_n_demos_key(last.get("step"))), "last": _est_ci(last),
                              "reference": fmt_num(hlines[0][0]) if hlines else ""})
        figure = figures.line_panels(
            panels, title=f"Training trajectories — {label}", x_label="optimisation step (0 = before training)",
            interval="band", series_order=methods, series_labels={m: method_display(m) for m in methods},
            colors=cols, max_columns=2, panel_width=380,
        )
        out.append({"anchor": f"trajectory-{gi}", "label": label, "figure": Markup(figure), "table": table})
    closest_rows = []
    for r in sorted(closest, key=lambda r: (*_sort_key(_group_key(r.get("model"), r.get("task"), r.get("n_demos"))),
                                           str(r.get("family")))):
        closest_rows.append({
            "context": _context_label(r.get("model"), r.get("task"), r.get("n_demos")),
            "family": _scalar(r.get("family")), "method": method_display(r.get("method")),
            "step": fmt_num(_n_demos_key(r.get("step"))),
            "value": _est_ci(r, "label_js_to_icl"),
        })
    return {"groups": out, "closest": closest_rows, "reference": method_display(reference), "ref_short": ref}


def checkpoints_view(
    rows: list[dict[str, Any]], methods_order: list[str], colors: dict[str, str]
) -> dict[str, Any] | None:
    """One figure per base model (``group``) of the ``checkpoints`` rows; None without rows.

    Reads ``group``, ``checkpoint``, ``model``, ``task``, ``n_demos``,
    ``method``, ``metric``, ``estimate``, ``ci_low`` and ``ci_high``.  The
    checkpoints keep the order in which they are listed.
    """
    rows = [r for r in rows
            if r.get("checkpoint") is not None and r.get("metric") is not None and r.get("method") is not None]
    if not rows:
        return None
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_scalar(r.get("group")), []).append(r)
    out = []
    for gi, (group, grp) in enumerate(groups.items()):
        cats = list(dict.fromkeys(_scalar(r.get("checkpoint")) for r in grp))
        models = {c: _scalar(r.get("model")) for r in grp for c in [_scalar(r.get("checkpoint"))]}
        methods = _ordered_methods((str(r["method"]) for r in grp), methods_order)
        cols = figures.family_colors(methods, colors)
        slices = list(dict.fromkeys((_scalar(r.get("task")), _n_demos_key(r.get("n_demos"))) for r in grp))
        metrics = _ordered_metrics(CHECKPOINT_METRICS, (str(r["metric"]) for r in grp))
        panels, table = [], []
        for task, n in slices:
            for metric in metrics:
                mine = [r for r in grp if str(r["metric"]) == metric and _scalar(r.get("task")) == task
                        and _n_demos_key(r.get("n_demos")) == n]
                if not mine:
                    continue
                name, y_label = _metric_names(CHECKPOINT_METRICS, metric)
                series: dict[str, list[figures.SeriesPoint]] = {}
                for r in mine:
                    series.setdefault(str(r["method"]), []).append(_point(_scalar(r.get("checkpoint")), r))
                where = f"{task} · N={fmt_num(n)}"
                panels.append(figures.Panel(title=f"{name} · {where}", y_label=y_label, series=series))
                for m in methods:
                    cells = {_scalar(r.get("checkpoint")): _est_ci(r) for r in mine if str(r["method"]) == m}
                    if cells:
                        table.append({"where": where, "metric": name, "method": method_display(m),
                                      "color": cols.get(m, "#444444"), "cells": [cells.get(c, _DASH) for c in cats]})
        figure = figures.line_panels(
            panels, title=f"Checkpoints of {group}", x_label="checkpoint (in listed order)", categories=cats,
            interval="whiskers", series_order=methods, series_labels={m: method_display(m) for m in methods},
            colors=cols, max_columns=2, panel_width=max(340, 70 + 60 * len(cats)),
        )
        out.append({"anchor": f"checkpoints-{gi}", "group": group, "figure": Markup(figure),
                    "checkpoints": [{"label": c, "model": models.get(c, _DASH)} for c in cats], "table": table})
    return {"groups": out}


def vocab_view(rows: list[dict[str, Any]], methods_order: list[str], colors: dict[str, str]) -> dict[str, Any] | None:
    """Bar chart and table of the ``vocab_order_sensitivity`` rows; None without rows.

    Reads ``model``, ``task``, ``n_demos``, ``method``, ``estimate``,
    ``ci_low``, ``ci_high`` and ``bound``.
    """
    rows = [r for r in rows if r.get("method") is not None]
    if not rows:
        return None
    keys = sorted({_group_key(r.get("model"), r.get("task"), r.get("n_demos")) for r in rows}, key=_sort_key)
    methods = _ordered_methods((str(r["method"]) for r in rows), methods_order)
    cols = figures.family_colors(methods, colors)
    glabels = {k: _context_label(k[0] or None, k[1] or None, k[2]) for k in keys}
    values = {}
    for r in rows:
        v = _as_float(r.get("estimate"))
        if v is not None:
            values[(glabels[_group_key(r.get("model"), r.get("task"), r.get("n_demos"))], str(r["method"]))] = v
    figure = figures.grouped_bar_chart(
        [glabels[k] for k in keys], methods, values,
        title="Order sensitivity over the vocabulary",
        y_label="Σ over tokens of std across orders",
        series_labels={m: method_display(m) for m in methods}, colors=cols,
        width=max(420, 80 + len(keys) * (len(methods) * 30 + 26)),
    )
    table = []
    for r in sorted(rows, key=lambda r: (*_sort_key(_group_key(r.get("model"), r.get("task"), r.get("n_demos"))),
                                        methods.index(str(r["method"])))):
        table.append({"context": _context_label(r.get("model"), r.get("task"), r.get("n_demos")),
                      "method": method_display(r.get("method")), "color": cols.get(str(r["method"]), "#444444"),
                      "estimate": fmt_num(r.get("estimate")), "ci": fmt_ci(r.get("ci_low"), r.get("ci_high")),
                      "bound": fmt_num(r.get("bound"))})
    return {"figure": Markup(figure), "table": table}


def sparsity_view(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One figure per model of the ``sparsity`` rows; None without rows.

    Reads ``model``, ``layer``, ``matrix``, ``threshold``, ``relative`` and
    ``sparsity`` (a share in [0, 1]).
    """
    rows = [r for r in rows
            if r.get("matrix") is not None and _as_float(r.get("layer")) is not None]
    if not rows:
        return None
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_scalar(r.get("model")), []).append(r)
    out = []
    for gi, (model, grp) in enumerate(sorted(groups.items())):
        matrices = list(dict.fromkeys(str(r["matrix"]) for r in grp))
        cols = figures.method_colors(matrices)
        settings = list(dict.fromkeys((_as_float(r.get("threshold")), bool(r.get("relative"))) for r in grp))
        panels, table, captions = [], [], []
        for thr, rel in settings:
            what = (f"|w| < {fmt_num(thr)} × max |w| of the matrix" if rel else f"|w| < {fmt_num(thr)}")
            captions.append(what + (" (relative to the matrix's largest |w|)" if rel else " (absolute)"))
            mine = [r for r in grp if _as_float(r.get("threshold")) == thr and bool(r.get("relative")) == rel]
            series: dict[str, list[figures.SeriesPoint]] = {}
            for r in mine:
                series.setdefault(str(r["matrix"]), []).append(
                    figures.SeriesPoint(x=_as_float(r.get("layer")), y=_as_float(r.get("sparsity"))))
            # the axis follows the data (shares of 0.005 were drawn on a 0-1 axis) and includes 0
            panels.append(figures.Panel(title=what, y_label="share of entries below threshold", series=series,
                                    y_min=0.0))
            for mtx in matrices:
                vals = [(int(_as_float(r.get("layer"))), _as_float(r.get("sparsity"))) for r in mine
                        if str(r["matrix"]) == mtx and _as_float(r.get("sparsity")) is not None]
                if not vals:
                    continue
                lo = min(vals, key=lambda t: t[1])
                hi = max(vals, key=lambda t: t[1])
                table.append({"setting": what, "matrix": mtx, "color": cols[mtx], "n_layers": len(vals),
                              "mean": fmt_num(sum(v for _, v in vals) / len(vals)),
                              "min": f"{fmt_num(lo[1])} (layer {lo[0]})", "max": f"{fmt_num(hi[1])} (layer {hi[0]})"})
        figure = figures.line_panels(
            panels, title=f"Weight sparsity by layer — {model}", x_label="layer (0-based)", interval="whiskers",
            series_order=matrices, colors=cols, max_columns=2, panel_width=380,
        )
        out.append({"anchor": f"sparsity-{gi}", "model": model, "figure": Markup(figure), "table": table,
                    "captions": captions})
    return {"groups": out}
