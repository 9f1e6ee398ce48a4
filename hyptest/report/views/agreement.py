"""The distribution-agreement section: tables and grouped bar charts per metric."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from .. import svg
from .format import _as_float, _context_label, _group_key, _rows, _scalar, _sort_key, fmt_ci, fmt_num, fmt_p
from .names import AGREEMENT_METRICS, SHORT_METHOD_NAMES, _verdict_class, _verdict_word, method_display


def _agreement_view(
    results: Mapping[str, Any],
    comparisons: list[dict[str, Any]],
    methods_order: list[str],
    colors: dict[str, str],
    default_reference: str,
) -> dict[str, Any]:
    """Distribution-agreement tables per (model, task, N) and one grouped bar chart per metric.

    Values come from ``results["agreement"]`` (``method == reference`` is the
    reference-vs-reference row under another order); missing values are
    taken from the matching comparison rows (``mean_a`` for the reference,
    ``mean_b`` for the method).
    """
    study = results.get("study") if isinstance(results.get("study"), Mapping) else {}
    analysis = study.get("analysis") if isinstance(study.get("analysis"), Mapping) else {}
    reference = str(analysis.get("reference") or default_reference)
    values: dict[tuple[tuple[str, str, Any], str, str], float] = {}
    for r in _rows(results, "agreement"):
        key = _group_key(r.get("model"), r.get("task"), r.get("n_demos"))
        for metric in AGREEMENT_METRICS:
            v = _as_float(r.get(metric))
            if v is not None and r.get("method") is not None:
                values[(key, str(r.get("method")), metric)] = v
    comps: dict[tuple[tuple[str, str, Any], str, str], tuple[int, dict[str, Any]]] = {}
    for i, c in enumerate(comparisons):
        metric = str(c.get("analysis"))
        if metric not in AGREEMENT_METRICS or c.get("method_b") is None:
            continue
        key = _group_key(c.get("model"), c.get("task"), c.get("n_demos"))
        a, b = str(c.get("method_a") or reference), str(c.get("method_b"))
        reference = a
        comps[(key, b, metric)] = (i, c)
        for m, col in ((a, "mean_a"), (b, "mean_b")):
            v = _as_float(c.get(col))
            if v is not None:
                values.setdefault((key, m, metric), v)
    if not values:
        return {"groups": [], "figures": [], "metrics": []}
    keys = sorted({k for k, _, _ in values}, key=_sort_key)
    metrics = [m for m in AGREEMENT_METRICS if any(mm == m for _, _, mm in values)]
    ref_name = SHORT_METHOD_NAMES.get(reference.lower(), reference)
    k_top = analysis.get("overlap_k")
    metric_views = []
    for m in metrics:
        name, higher = AGREEMENT_METRICS[m]
        if m in ("token_overlap", "overlap_cosine") and k_top is not None:
            name = f"{name} (top-{_scalar(k_top)})"
        if m in ("label_js", "label_kl"):
            name = f"{name} (nats)"
        metric_views.append({"key": m, "name": name, "arrow": "↑" if higher else "↓",
                             "better": "higher" if higher else "lower"})
    groups = []
    for gi, key in enumerate(keys):
        present = {meth for (k, meth, _) in values if k == key}
        order = [m for m in methods_order if m in present] + sorted(present - set(methods_order))
        order = ([reference] if reference in present else []) + [m for m in order if m != reference]
        rows = []
        for meth in order:
            is_ref = meth == reference
            cells = []
            for mv in metric_views:
                v = values.get((key, meth, mv["key"]))
                found = comps.get((key, meth, mv["key"]))
                cell = {"value": fmt_num(v), "delta": "", "verdict_word": "", "verdict_class": "",
                        "p_adjusted": "", "anchor": None}
                if found is not None:
                    i, c = found
                    verdict = c.get("verdict") or "inconclusive"
                    cell.update(
                        delta=f"Δ = {fmt_num(c.get('estimate'))} {fmt_ci(c.get('ci_low'), c.get('ci_high'))}",
                        verdict_word=_verdict_word(verdict),
                        verdict_class=_verdict_class(verdict),
                        p_adjusted=fmt_p(c.get("p_adjusted")) if c.get("p_adjusted") is not None else "",
                        anchor=f"comparison-{i}",
                    )
                cells.append(cell)
            label = (f"{ref_name} vs {ref_name} (another order)" if is_ref
                     else f"{ref_name} vs {SHORT_METHOD_NAMES.get(meth.lower(), meth)} (same order)")
            rows.append({"method": meth, "label": label, "is_ref": is_ref, "cells": cells,
                         "color": colors.get(meth, "#444444")})
        groups.append({"anchor": f"agreement-{gi}", "key": key,
                       "label": _context_label(key[0] or None, key[1] or None, key[2]), "rows": rows})
    series = [reference] + [m for m in methods_order if m != reference
                            and any(meth == m for _, meth, _ in values)]
    series += sorted({meth for _, meth, _ in values} - set(series))
    labels = {m: (f"{ref_name} vs {ref_name} (another order)" if m == reference
                  else f"{ref_name} vs {SHORT_METHOD_NAMES.get(m.lower(), m)}") for m in series}
    figures = []
    for mv in metric_views:
        glabels = [_context_label(k[0] or None, k[1] or None, k[2]) for k in keys]
        vals = {(gl, meth): values[(k, meth, mv["key"])]
                for k, gl in zip(keys, glabels, strict=True) for meth in series
                if (k, meth, mv["key"]) in values}
        figures.append(
            {
                "metric": mv["name"],
                "figure": Markup(
                    svg.grouped_bar_chart(
                        glabels, series, vals,
                        title=f"{mv['name'][:1].upper()}{mv['name'][1:]} {mv['arrow']}",
                        y_label=mv["name"].split(" (")[0],
                        series_labels=labels, colors=colors, reference=reference,
                        width=max(400, 80 + len(keys) * (len(series) * 30 + 26)),
                    )
                ),
            }
        )
    return {"groups": groups, "figures": figures, "metrics": metric_views,
            "reference": method_display(reference), "ref_short": ref_name}
