"""The distribution-agreement section: tables and grouped bar charts per metric."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from hyptest.contract import ComparisonRow

from .. import figures
from .format import _as_float, _context_label, _group_key, _scalar, _sort_key, analysis_spec, fmt_ci, fmt_num, fmt_p
from .names import AGREEMENT_METRICS, SHORT_METHOD_NAMES, _verdict_class, _verdict_word, method_display

_Key = tuple[tuple[str, str, Any], str, str]  # ((model, task, N), method, metric)


def agreement_view(
    rows: list[dict[str, Any]],
    study: dict[str, Any],
    comparisons: list[ComparisonRow],
    methods_order: list[str],
    colors: dict[str, str],
    default_reference: str,
) -> dict[str, Any]:
    """Distribution-agreement tables per (model, task, N) and one grouped bar chart per metric.

    Values come from the ``agreement`` rows (``method == reference`` is the
    reference-vs-reference row under another order); missing values are
    taken from the matching comparison rows (``mean_a`` for the reference,
    ``mean_b`` for the method).
    """
    spec = analysis_spec(study)
    values, comps, reference = _agreement_values(rows, comparisons, str(spec.get("reference") or default_reference))
    if not values:
        return {"groups": [], "figures": [], "metrics": []}
    keys = sorted({k for k, _, _ in values}, key=_sort_key)
    metric_views = _metric_views([m for m in AGREEMENT_METRICS if any(mm == m for _, _, mm in values)],
                                 spec.get("overlap_k"))
    ref_name = SHORT_METHOD_NAMES.get(reference.lower(), reference)
    groups = [_agreement_group(gi, key, values, comps, metric_views, methods_order, colors, reference, ref_name)
              for gi, key in enumerate(keys)]
    return {"groups": groups, "figures": _agreement_figures(keys, values, metric_views, methods_order, colors,
                                                            reference, ref_name),
            "metrics": metric_views, "reference": method_display(reference), "ref_short": ref_name}


def _agreement_values(rows: list[dict[str, Any]], comparisons: list[ComparisonRow], reference: str
                      ) -> tuple[dict[_Key, float], dict[_Key, tuple[int, ComparisonRow]], str]:
    """Each (group, method, metric)'s agreement, its comparison row, and the reference the rows compare with."""
    values: dict[_Key, float] = {}
    for r in rows:
        key = _group_key(r.get("model"), r.get("task"), r.get("n_demos"))
        for metric in AGREEMENT_METRICS:
            v = _as_float(r.get(metric))
            if v is not None and r.get("method") is not None:
                values[(key, str(r.get("method")), metric)] = v
    comps: dict[_Key, tuple[int, ComparisonRow]] = {}
    for i, c in enumerate(comparisons):
        if c.analysis not in AGREEMENT_METRICS or c.method_b is None:
            continue
        key = _group_key(c.model, c.task, c.n_demos)
        a, b = str(c.method_a or reference), str(c.method_b)
        reference = a
        comps[(key, b, c.analysis)] = (i, c)
        for m, col in ((a, "mean_a"), (b, "mean_b")):
            v = _as_float(c.get(col))
            if v is not None:
                values.setdefault((key, m, c.analysis), v)
    return values, comps, reference


def _metric_views(metrics: list[str], k_top: Any) -> list[dict[str, Any]]:
    """Name (with the top-k or the unit), arrow and better direction of each metric."""
    out = []
    for m in metrics:
        name, higher = AGREEMENT_METRICS[m]
        if m in ("token_overlap", "overlap_cosine") and k_top is not None:
            name = f"{name} (top-{_scalar(k_top)})"
        if m in ("label_js", "label_kl"):
            name = f"{name} (nats)"
        out.append({"key": m, "name": name, "arrow": "↑" if higher else "↓", "better": "higher" if higher else "lower"})
    return out


def _agreement_cell(v: float | None, found: tuple[int, ComparisonRow] | None) -> dict[str, Any]:
    """A table cell: the value, and the comparison's difference, verdict and adjusted p when there is one."""
    cell = {"value": fmt_num(v), "delta": "", "verdict_word": "", "verdict_class": "", "p_adjusted": "",
            "anchor": None}
    if found is not None:
        i, c = found
        verdict = c.verdict or "inconclusive"
        cell.update(
            delta=f"Δ = {fmt_num(c.estimate)} {fmt_ci(c.ci_low, c.ci_high)}",
            verdict_word=_verdict_word(verdict),
            verdict_class=_verdict_class(verdict),
            p_adjusted=fmt_p(c.p_adjusted) if c.p_adjusted is not None else "",
            anchor=f"comparison-{i}",
        )
    return cell


def _agreement_group(gi: int, key: tuple[str, str, Any], values: dict[_Key, float],
                     comps: dict[_Key, tuple[int, ComparisonRow]], metric_views: list[dict[str, Any]],
                     methods_order: list[str], colors: dict[str, str], reference: str, ref_name: str
                     ) -> dict[str, Any]:
    """The table of one (model, task, N): the reference's row first, then the methods in the report's order."""
    present = {meth for (k, meth, _) in values if k == key}
    order = [m for m in methods_order if m in present] + sorted(present - set(methods_order))
    order = ([reference] if reference in present else []) + [m for m in order if m != reference]
    rows = []
    for meth in order:
        is_ref = meth == reference
        cells = [_agreement_cell(values.get((key, meth, mv["key"])), comps.get((key, meth, mv["key"])))
                 for mv in metric_views]
        label = (f"{ref_name} vs {ref_name} (another order)" if is_ref
                 else f"{ref_name} vs {SHORT_METHOD_NAMES.get(meth.lower(), meth)} (same order)")
        rows.append({"method": meth, "label": label, "is_ref": is_ref, "cells": cells,
                     "color": colors.get(meth, "#444444")})
    return {"anchor": f"agreement-{gi}", "key": key, "label": _context_label(key[0] or None, key[1] or None, key[2]),
            "rows": rows}


def _agreement_figures(keys: list[tuple[str, str, Any]], values: dict[_Key, float], metric_views: list[dict[str, Any]],
                       methods_order: list[str], colors: dict[str, str], reference: str, ref_name: str
                       ) -> list[dict[str, Any]]:
    """One grouped bar chart per metric: groups on the x axis, one bar per method."""
    series = [reference] + [m for m in methods_order if m != reference
                            and any(meth == m for _, meth, _ in values)]
    series += sorted({meth for _, meth, _ in values} - set(series))
    labels = {m: (f"{ref_name} vs {ref_name} (another order)" if m == reference
                  else f"{ref_name} vs {SHORT_METHOD_NAMES.get(m.lower(), m)}") for m in series}
    glabels = [_context_label(k[0] or None, k[1] or None, k[2]) for k in keys]
    charts = []
    for mv in metric_views:
        vals = {(gl, meth): values[(k, meth, mv["key"])]
                for k, gl in zip(keys, glabels, strict=True) for meth in series
                if (k, meth, mv["key"]) in values}
        charts.append({"metric": mv["name"], "figure": Markup(figures.grouped_bar_chart(
            glabels, series, vals,
            title=f"{mv['name'][:1].upper()}{mv['name'][1:]} {mv['arrow']}",
            y_label=mv["name"].split(" (")[0],
            series_labels=labels, colors=colors, reference=reference,
            width=max(400, 80 + len(keys) * (len(series) * 30 + 26)),
        ))})
    return charts
