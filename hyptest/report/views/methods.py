"""The statistical-methods section: resampling distributions, families, margins, resampling schemes."""

from __future__ import annotations

from typing import Any

import numpy as np
from markupsafe import Markup

from hyptest.contract import ComparisonRow, FamilyRow, MarginRow

from .. import figures
from .comparison import _ci_level_text, _is_threshold, _log_factor, _margin_text
from .format import _as_float, analysis_spec, fmt_ci, fmt_num
from .names import _adjust_name, _verdict_word, analysis_display


def resampling_figures(
    draws: dict[str, list[float | None]], comparisons: list[ComparisonRow], views: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One figure per entry of ``null_distributions`` (keys: comparison index; null: an infinite draw).

    The entries are the bootstrap draws of each row's statistic; the figure
    marks the estimate, the null value (ρ₀ for order alignment), the
    equivalence margin around it and the interval the verdict used.
    """
    out = []

    def order(k: Any) -> tuple:
        s = str(k)
        return (0, int(s)) if s.isdigit() else (1, s)

    for k in sorted(draws, key=order):
        arr = np.asarray(draws[k], dtype=float).ravel()  # null reads NaN: not counted among the finite draws
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
                    figures.resampling_distribution_plot(
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


def families_view(families: list[FamilyRow], comparisons: list[ComparisonRow]) -> list[dict[str, Any]]:
    """The families in words; derived from the rows with a p-value when the results list none."""
    fams: list[FamilyRow] = list(families)
    if not fams:
        derived: dict[str, FamilyRow] = {}
        for c in comparisons:
            if _as_float(c.p_value) is None:
                continue
            f = derived.setdefault(c.family, FamilyRow.model_construct(
                family=c.family, role=c.role, size=0, adjust=c.get("adjust_method"), analyses=[]))
            f.size += 1
            if c.analysis not in f.analyses:
                f.analyses.append(c.analysis)
        fams = list(derived.values())
    return [{
        "name": f.family,
        "role": f.role,
        "size": f"{f.size} comparison{'' if f.size == 1 else 's'}",
        "adjust": _adjust_name(f.adjust) if f.adjust else "",
        "alpha": fmt_num(f.alpha) if _as_float(f.get("alpha")) is not None else "",
        "label": ", ".join(analysis_display(a) for a in f.analyses) or analysis_display(f.family),
        "n_resamples": fmt_num(f.n_resamples) if _as_float(f.get("n_resamples")) is not None else "",
    } for f in fams]


def margins_view(margins: list[MarginRow], comparisons: list[ComparisonRow]) -> dict[str, Any]:
    """The declared margins in words, and the analyses that have none."""
    items = []
    ratios, rope = set(), None
    for r in margins:
        v, m = _as_float(r.value), _as_float(r.margin)
        if r.kind == "ratio" and v is not None:
            ratios.add(round(v, 9))
            text = f"SD ratio within [1/{fmt_num(v)}, {fmt_num(v)}]" + (
                f" (±{fmt_num(m)} on the estimate's log scale)" if m is not None else "")
        elif r.kind == "rho0" and v is not None:
            text = f"ρ₀ = {fmt_num(v)}: different if r lies below it, equivalent if above it (equivalence predicts r = 1)"
        elif r.kind == "rope" and m is not None:
            rope = v
            text = f"ROPE ±{fmt_num(m)} on the log SD ratio" + (
                f", i.e. ratio within [1/{fmt_num(v)}, {fmt_num(v)}]" if v is not None else "")
        elif m is not None:
            text = f"±{fmt_num(m)}"
        else:
            text = "no equivalence test: can be different, never equivalent"
        items.append({"name": analysis_display(r.analysis), "text": text, "source": r.source or ""})
    none = list(dict.fromkeys(analysis_display(c.analysis) for c in comparisons
                              if c.rule == "two_sided" and _as_float(c.margin) is None))
    return {"items": items, "none": ", ".join(none),
            "rope_is_ratio": rope is not None and round(rope, 9) in ratios}


def resampling_view(comparisons: list[ComparisonRow]) -> list[dict[str, Any]]:
    """Each distinct resampling scheme of the rows (plain words) with the analyses that used it."""
    by_text: dict[str, list[str]] = {}
    for c in comparisons:
        text = c.get("resampling")
        if text and c.role != "bayesian":
            names = by_text.setdefault(str(text), [])
            name = analysis_display(c.analysis)
            if name not in names:
                names.append(name)
    return [{"text": t, "analyses": ", ".join(a)} for t, a in by_text.items()]


def methods_context(families: list[FamilyRow], margins: list[MarginRow], comparisons: list[ComparisonRow],
                    study: dict[str, Any], analyses_present: list[str]) -> dict[str, Any]:
    """The statistical-methods section: families, margins, resampling schemes, ROPE, ρ₀, adjustments, tests."""
    spec = analysis_spec(study)
    bayes_rows = [c for c in comparisons if c.role == "bayesian"]
    rope = next((_as_float(c.get("rope")) for c in bayes_rows if _as_float(c.get("rope")) is not None),
                _as_float(spec.get("rope")))
    rho0 = next((_as_float(c.get("null_value")) for c in comparisons if c.rule == "threshold"),
                _as_float(spec.get("alignment_rho0")))
    adjusts = sorted({_adjust_name(c.get("adjust_method")) for c in comparisons if c.get("adjust_method")})
    margin_view = margins_view(margins, comparisons)
    return {
        "families": families_view(families, comparisons),
        "margins": margin_view,
        "has_margins": bool(margin_view["items"]) or any(c.margin is not None for c in comparisons),
        "resampling": resampling_view(comparisons),
        "rope": fmt_num(rope) if rope is not None else "",
        "rho0": fmt_num(rho0) if rho0 is not None and "order_alignment" in analyses_present else "",
        "bayes_scale": next((str(c.get("scale")) for c in bayes_rows if c.get("scale")), ""),
        "adjust": " / ".join(adjusts) if adjusts else "Holm",
        "tests": sorted({str(c.get("test")) for c in comparisons if c.get("test")}),
    }
