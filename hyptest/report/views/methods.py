"""The statistical-methods section: resampling distributions, families, margins, resampling schemes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from markupsafe import Markup

from .. import svg
from .comparison import _ci_level_text, _is_threshold, _log_factor, _margin_text, _role
from .format import _as_float, _context_label, _rows, fmt_ci, fmt_num
from .names import _adjust_name, _verdict_word, analysis_display


def _resampling_figures(
    results: Mapping[str, Any], comparisons: list[dict[str, Any]], views: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One figure per entry of ``results["null_distributions"]`` (keys: comparison index).

    The entries are the bootstrap draws of each row's statistic; the figure
    marks the estimate, the null value (ρ₀ for order alignment), the
    equivalence margin around it and the interval the verdict used.
    """
    draws = results.get("null_distributions")
    if not isinstance(draws, Mapping):
        return []
    out = []

    def order(k: Any) -> tuple:
        s = str(k)
        return (0, int(s)) if s.isdigit() else (1, s)

    for k in sorted(draws, key=order):
        try:
            arr = np.asarray(draws[k], dtype=float).ravel()
        except (TypeError, ValueError):
            continue
        idx = int(str(k)) if str(k).isdigit() else None
        comp = comparisons[idx] if idx is not None and idx < len(comparisons) else {}
        view = views[idx] if idx is not None and idx < len(views) else None
        title = f"Resampling distribution — comparison {k}"
        if view is not None:
            title = f"#{k} {view['pair_short']} · {view['analysis']} · {view['context']}"
        estimate = _as_float(comp.get("estimate"))
        null = _as_float(comp.get("null_value"))
        margin = _as_float(comp.get("margin")) if comp.get("rule") == "two_sided" else None
        interval = None
        if _as_float(comp.get("ci_low")) is not None or _as_float(comp.get("ci_high")) is not None:
            interval = (_as_float(comp.get("ci_low")), _as_float(comp.get("ci_high")))
        level = _ci_level_text(comp)
        out.append(
            {
                "key": str(k),
                "anchor": f"resampling-{k}",
                "title": title,
                "analysis": view["analysis"] if view is not None else "",
                "comparison": f"#{k}" if view is not None else "",
                "comparison_anchor": view["anchor"] if view is not None else None,
                "estimate": fmt_num(estimate),
                "null_value": fmt_num(null) if null is not None else "",
                "threshold": _is_threshold(comp),
                "margin": "" if margin is None else str(_margin_text(comp)) + (
                    f" (±{fmt_num(margin)} on this scale)" if _log_factor(comp) is not None else ""),
                "interval": fmt_ci(*interval) if interval else "",
                "level": level,
                "verdict": _verdict_word(comp.get("verdict")) if comp.get("verdict") else "",
                "n_draws": int(np.isfinite(arr).sum()),
                "figure": Markup(
                    svg.resampling_distribution_plot(
                        arr,
                        estimate if estimate is not None else float("nan"),
                        title=title,
                        x_label=str(comp.get("scale") or "statistic"),
                        null_value=null,
                        margin=margin,
                        interval=interval,
                        width=600,
                        height=300,
                    )
                ),
            }
        )
    return out


def _families_view(results: Mapping[str, Any], comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``results["families"]`` in words; from the rows when the key is missing (older results files)."""
    fams = _rows(results, "families")
    if not fams:
        derived: dict[str, dict[str, Any]] = {}
        for c in comparisons:
            if _as_float(c.get("p_value")) is None:
                continue
            named = isinstance(c.get("family"), str)
            name = str(c.get("family")) if named else "all comparisons with a p-value"
            f = derived.setdefault(name, {"family": name, "role": _role(c) if named else "", "size": 0,
                                          "adjust": c.get("adjust_method"), "analyses": []})
            f["size"] += 1
            if c.get("analysis") is not None and c.get("analysis") not in f["analyses"]:
                f["analyses"].append(c.get("analysis"))
        fams = list(derived.values())
    out = []
    for f in fams:
        size = _as_float(f.get("size"))
        n = int(size) if size is not None else None
        analyses = f.get("analyses") if isinstance(f.get("analyses"), Sequence) else []
        out.append({
            "name": str(f.get("family") or ""),
            "role": str(f.get("role") or ""),
            "size": f"{n} comparison{'' if n == 1 else 's'}" if n is not None else "",
            "adjust": _adjust_name(f.get("adjust")) if f.get("adjust") else "",
            "alpha": fmt_num(f.get("alpha")) if _as_float(f.get("alpha")) is not None else "",
            "label": ", ".join(analysis_display(a) for a in analyses if not isinstance(a, Mapping))
            or analysis_display(f.get("family")),
            "n_resamples": fmt_num(f.get("n_resamples")) if _as_float(f.get("n_resamples")) is not None else "",
        })
    return out


def _margins_view(results: Mapping[str, Any], comparisons: list[dict[str, Any]]) -> dict[str, Any]:
    """The declared margins (``results["margins"]``), in words, and the analyses that have none."""
    items = []
    ratios, rope = set(), None
    for r in _rows(results, "margins"):
        kind, v, m = r.get("kind"), _as_float(r.get("value")), _as_float(r.get("margin"))
        if r.get("analysis") is not None:
            name = analysis_display(r.get("analysis"))
        else:  # older files: one margin per (model, task, N)
            name = _context_label(r.get("model"), r.get("task"), r.get("n_demos"))
        if kind == "ratio" and v is not None:
            ratios.add(round(v, 9))
            text = f"SD ratio within [1/{fmt_num(v)}, {fmt_num(v)}]" + (
                f" (±{fmt_num(m)} on the estimate's log scale)" if m is not None else "")
        elif kind == "rho0" and v is not None:
            text = f"ρ₀ = {fmt_num(v)}: different if r lies below it, equivalent if above it (equivalence predicts r = 1)"
        elif kind == "rope" and m is not None:
            rope = v
            text = f"ROPE ±{fmt_num(m)} on the log SD ratio" + (
                f", i.e. ratio within [1/{fmt_num(v)}, {fmt_num(v)}]" if v is not None else "")
        elif m is not None:
            text = f"±{fmt_num(m)}"
        else:
            text = "no equivalence test: can be different, never equivalent"
        items.append({"name": name, "text": text, "source": str(r.get("source") or "")})
    none = list(dict.fromkeys(
        analysis_display(c.get("analysis")) for c in comparisons
        if c.get("rule") == "two_sided" and _as_float(c.get("margin")) is None
    ))
    return {"items": items, "none": ", ".join(none),
            "rope_is_ratio": rope is not None and round(rope, 9) in ratios}


def _resampling_view(comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each distinct resampling scheme of the rows (plain words) with the analyses that used it."""
    by_text: dict[str, list[str]] = {}
    for c in comparisons:
        text = c.get("resampling")
        if text and _role(c) != "bayesian":
            names = by_text.setdefault(str(text), [])
            name = analysis_display(c.get("analysis"))
            if name not in names:
                names.append(name)
    return [{"text": t, "analyses": ", ".join(a)} for t, a in by_text.items()]
