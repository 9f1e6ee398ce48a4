"""Self-contained HTML report for a hyptest run.

The report is a single HTML file: inline CSS, inline SVG figures, no scripts,
no external resources.  All values that come from the run (model and task
names, study text, provenance) are autoescaped by Jinja2; only the SVG strings
built by :mod:`hyptest.report.svg` (which escape their own text) are inserted
as :class:`markupsafe.Markup`.

Public API
----------
render_report
    Build the HTML text from a ``results`` dict, the per-query frame and,
    optionally, the per-order frame.
write_report
    Render and write ``report.html`` atomically into a run directory.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from hyptest.report import svg

__all__ = [
    "render_report",
    "write_report",
    "fmt_num",
    "fmt_p",
    "fmt_ci",
    "fmt_ratio",
    "method_display",
    "verdict_phrase",
    "banner_text",
    "headline_text",
    "analysis_display",
    "METHOD_NAMES",
    "ANALYSIS_NAMES",
    "VERDICT_PHRASES",
    "DATA_FILE_DESCRIPTIONS",
    "DEFAULT_METHOD_ORDER",
    "SCATTER_MAX_POINTS",
    "order_pairs",
]

#: Plain-words display names of the known methods.
METHOD_NAMES: dict[str, str] = {
    "icl": "ICL",
    "gd": "full-batch GD",
    "sgd": "SGD (batch 1, in order)",
    "adam": "Adam (batch 1, in order)",
}

#: Verdict word -> plain-words phrase (``{margin}`` is filled in when known).
VERDICT_PHRASES: dict[str, str] = {
    "different": "equivalence rejected",
    "equivalent": "equivalent within margin ±{margin}",
    "negligible": "different but negligible (inside margin)",
    "inconclusive": "inconclusive: equivalence not rejected, not shown",
    "did_not_converge": "did not converge: no decision",
}

#: Analysis name (``results["comparisons"][i]["analysis"]``) -> plain words.
#: Unknown analyses are shown with underscores replaced by spaces.
ANALYSIS_NAMES: dict[str, str] = {
    "order_sensitivity": "order sensitivity",
    "label_order_sensitivity": "order sensitivity of the label distribution",
    "tost_order_sensitivity": "order sensitivity, TOST",
    "order_alignment": "order alignment",
    "bayes_order_variance": "order variance, Bayesian",
}

#: Short method names for the verdict table (the banners use :data:`METHOD_NAMES`).
SHORT_METHOD_NAMES: dict[str, str] = {"icl": "ICL", "gd": "GD", "sgd": "SGD", "adam": "Adam"}

#: Known files of a run directory -> what they hold (shown beside the links).
DATA_FILE_DESCRIPTIONS: dict[str, str] = {
    "per_query.parquet": "order sensitivity per (demo set, query) unit and method",
    "per_order.parquet": "P(gold) per (unit, query): every demo set, order, method",
    "results.json": "every number in this report (comparisons, summaries, provenance)",
    "manifest.json": "study, planned units and their keys, model identities",
    "units/": "raw records, one Parquet file per collected unit",
}

#: Stages of ``provenance["wall_time_s"]`` in display order, with descriptions.
_STAGES: dict[str, str] = {
    "load_models": "load model weights",
    "collect": "run ICL and fine-tuning on every unit",
    "analyse": "metrics, statistics, report",
    "total": "whole run",
}

#: Column order of methods in figures and tables.
DEFAULT_METHOD_ORDER: tuple[str, ...] = ("icl", "gd", "sgd", "adam")

_DASH = "—"
_P_FLOOR = 1e-4


# --------------------------------------------------------------------------- #
# Formatting helpers
# --------------------------------------------------------------------------- #
def _as_float(x: Any) -> float | None:
    """Convert to float; ``None`` for missing, non-numeric or NaN values."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if math.isnan(v):
        return None
    return v


def fmt_num(x: Any, sig: int = 3) -> str:
    """Format a number with ``sig`` significant digits.

    Parameters
    ----------
    x : object
        Number (or ``None``/NaN/non-numeric).
    sig : int, optional
        Significant digits (default 3).

    Returns
    -------
    str
        ``"—"`` for missing values, ``"∞"``/``"-∞"`` for infinities, integers
        as integers, otherwise ``format(x, f".{sig}g")`` (e.g. ``"0.031"``,
        ``"12.3"``, ``"1.23e-05"``).
    """
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    v = _as_float(x)
    if v is None:
        return _DASH if not isinstance(x, str) or not x else str(x)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v == 0:
        return "0"
    return f"{v:.{sig}g}"


def fmt_p(p: Any) -> str:
    """Format a p-value.

    Parameters
    ----------
    p : object
        p-value or ``None``.

    Returns
    -------
    str
        ``"—"`` when missing, ``"< 1e-4"`` below ``1e-4``, otherwise three
        significant digits (``"0.0004"``, ``"0.0312"``, ``"1"``).
    """
    v = _as_float(p)
    if v is None:
        return _DASH
    if v < _P_FLOOR:
        return "< 1e-4"
    return f"{v:.3g}"


def fmt_ci(lo: Any, hi: Any) -> str:
    """Format a confidence interval as ``"[lo, hi]"`` (``"—"`` if both missing)."""
    if _as_float(lo) is None and _as_float(hi) is None:
        return _DASH
    return f"[{fmt_num(lo)}, {fmt_num(hi)}]"


def fmt_ratio(r: Any) -> str:
    """Format a ratio of means as ``"12.3×"``; ``"∞"`` or ``"—"`` when undefined."""
    v = _as_float(r)
    if v is None:
        return _DASH
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{fmt_num(v)}×"


def method_display(method: Any) -> str:
    """Plain-words name of a method (``"gd"`` -> ``"full-batch GD"``)."""
    if method is None:
        return _DASH
    return METHOD_NAMES.get(str(method).lower(), str(method))


def verdict_phrase(verdict: Any, margin: Any = None) -> str:
    """Plain-words phrase for a verdict word.

    Parameters
    ----------
    verdict : str
        One of ``different``, ``equivalent``, ``negligible``,
        ``inconclusive``; anything else is returned as given.
    margin : float, optional
        Equivalence margin, shown in the ``equivalent`` phrase.

    Returns
    -------
    str
        E.g. ``"equivalence rejected"`` or ``"equivalent within margin ±0.01"``.
    """
    word = str(verdict).lower() if verdict is not None else "inconclusive"
    phrase = VERDICT_PHRASES.get(word)
    if phrase is None:
        return str(verdict)
    if "{margin}" in phrase:
        m = _as_float(margin)
        if m is None:
            return "equivalent within margin"
        return phrase.format(margin=fmt_num(abs(m)))
    return phrase


def _verdict_class(verdict: Any) -> str:
    word = str(verdict).lower() if verdict is not None else ""
    return word if word in VERDICT_PHRASES else "unknown"


def _verdict_word(verdict: Any) -> str:
    """Short display form of a verdict (``did_not_converge`` -> ``did not converge``)."""
    return str(verdict).replace("_", " ")


def analysis_display(analysis: Any) -> str:
    """Plain-words name of an analysis (``"tost_order_sensitivity"`` -> ``"order sensitivity, TOST"``).

    Parameters
    ----------
    analysis : str or None
        Analysis name of a comparison row.

    Returns
    -------
    str
        The :data:`ANALYSIS_NAMES` entry, else the name with underscores as
        spaces; ``"the outcome"`` when missing.
    """
    if analysis is None or (isinstance(analysis, float) and math.isnan(analysis)):
        return "the outcome"
    return ANALYSIS_NAMES.get(str(analysis), str(analysis).replace("_", " "))


_analysis_display = analysis_display


def _pair_text(comp: Mapping[str, Any], *, short: bool = False) -> str:
    names = [
        SHORT_METHOD_NAMES.get(str(comp[k]).lower(), str(comp[k])) if short else method_display(comp[k])
        for k in ("method_a", "method_b")
        if comp.get(k) is not None
    ]
    return " vs ".join(names) if names else _DASH


def _context_label(model: Any, task: Any, n_demos: Any) -> str:
    bits = []
    if task is not None:
        bits.append(str(task))
    if n_demos is not None:
        bits.append(f"N={fmt_num(n_demos)}")
    if model is not None:
        bits.append(str(model))
    return " · ".join(bits) if bits else "(unlabelled)"


def banner_text(comp: Mapping[str, Any]) -> str:
    """One-line plain-words verdict for a comparison.

    Parameters
    ----------
    comp : mapping
        One entry of ``results["comparisons"]``.

    Returns
    -------
    str
        E.g. ``"sentiment · N=4 · smollm2-135m — ICL vs full-batch GD in order
        sensitivity: equivalence rejected (different). Δ = 0.031 [0.02, 0.04],
        ratio 12.3×, p_adj = 0.0004 (holm)"``.  Plain text (to be escaped).
    """
    head = _context_label(comp.get("model"), comp.get("task"), comp.get("n_demos"))
    verdict = comp.get("verdict") or "inconclusive"
    phrase = verdict_phrase(verdict, comp.get("margin"))
    text = (
        f"{head} — {_pair_text(comp)} in {_analysis_display(comp.get('analysis'))}: "
        f"{phrase} ({verdict})."
    )
    stats = [f"Δ = {fmt_num(comp.get('estimate'))} {fmt_ci(comp.get('ci_low'), comp.get('ci_high'))}"]
    if _as_float(comp.get("ratio")) is not None:
        stats.append(f"ratio {fmt_ratio(comp.get('ratio'))}")
    if "p_adjusted" in comp and comp.get("p_adjusted") is not None:
        adj = comp.get("adjust_method")
        stats.append(f"p_adj = {fmt_p(comp.get('p_adjusted'))}" + (f" ({adj})" if adj else ""))
    elif comp.get("p_value") is not None:
        stats.append(f"p = {fmt_p(comp.get('p_value'))}")
    return text + " " + ", ".join(stats)


def headline_text(comp: Mapping[str, Any]) -> str:
    """Short plain-words verdict for a banner (the numbers are in the table below it).

    Parameters
    ----------
    comp : mapping
        One entry of ``results["comparisons"]``.

    Returns
    -------
    str
        E.g. ``"ICL vs full-batch GD · order sensitivity · sentiment · N=4 ·
        smollm2-135m: equivalence rejected"``.  Plain text (to be escaped).
    """
    where = _context_label(comp.get("model"), comp.get("task"), comp.get("n_demos"))
    verdict = comp.get("verdict") or "inconclusive"
    return (
        f"{_pair_text(comp)} · {_analysis_display(comp.get('analysis'))} · {where}: "
        f"{verdict_phrase(verdict, comp.get('margin'))}"
    )


# --------------------------------------------------------------------------- #
# View model
# --------------------------------------------------------------------------- #
def _n_demos_key(x: Any) -> Any:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None if x is None else str(x)
    if math.isnan(f):
        return None
    return int(f) if f.is_integer() else f


def _group_key(model: Any, task: Any, n_demos: Any) -> tuple[str, str, Any]:
    return (
        "" if model is None else str(model),
        "" if task is None else str(task),
        _n_demos_key(n_demos),
    )


def _sort_key(key: tuple[str, str, Any]) -> tuple:
    n = key[2]
    return (key[0], key[1], (0, n) if isinstance(n, (int, float)) else (1, str(n)))


def _methods_order(study: Mapping[str, Any], seen: Iterable[str]) -> list[str]:
    order: list[str] = []
    raw = study.get("methods") if isinstance(study, Mapping) else None
    if isinstance(raw, Mapping):
        raw = list(raw.keys())
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        for m in raw:
            name = m.get("name") if isinstance(m, Mapping) else m
            if name is not None and str(name) not in order:
                order.append(str(name))
    for m in DEFAULT_METHOD_ORDER:
        if m not in order:
            order.append(m)
    for m in seen:
        if str(m) not in order:
            order.append(str(m))
    return order


def _rows(results: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    val = results.get(key)
    if not isinstance(val, Sequence) or isinstance(val, str):
        return []
    return [dict(r) for r in val if isinstance(r, Mapping)]


def _comparison_view(i: int, comp: Mapping[str, Any], alpha: float | None) -> dict[str, Any]:
    verdict = comp.get("verdict") or "inconclusive"
    return {
        "index": i,
        "anchor": f"comparison-{i}",
        "context": _context_label(comp.get("model"), comp.get("task"), comp.get("n_demos")),
        "model": comp.get("model") if comp.get("model") is not None else _DASH,
        "task": comp.get("task") if comp.get("task") is not None else _DASH,
        "n_demos": fmt_num(comp.get("n_demos")),
        "pair": _pair_text(comp),
        "pair_short": _pair_text(comp, short=True),
        "analysis": _analysis_display(comp.get("analysis")) if comp.get("analysis") else _DASH,
        "estimate": fmt_num(comp.get("estimate")),
        "ci": fmt_ci(comp.get("ci_low"), comp.get("ci_high")),
        "ci_level": (
            f"{fmt_num(100 * _as_float(comp.get('ci_level')))}%"
            if _as_float(comp.get("ci_level")) is not None
            else _DASH
        ),
        "ci_method": comp.get("ci_method") or _DASH,
        "ratio": fmt_ratio(comp.get("ratio")),
        "p_value": fmt_p(comp.get("p_value")),
        "p_adjusted": fmt_p(comp.get("p_adjusted")),
        "adjust_method": comp.get("adjust_method") or _DASH,
        "test": comp.get("test") or _DASH,
        "n": fmt_num(comp.get("n")),
        "margin": fmt_num(comp.get("margin")),
        "margin_source": comp.get("margin_source") or "",
        "verdict": str(verdict),
        "verdict_word": _verdict_word(verdict),
        "verdict_class": _verdict_class(verdict),
        "phrase": verdict_phrase(verdict, comp.get("margin")),
        "banner": banner_text(comp),
        "headline": headline_text(comp),
        "summary": comp.get("summary") or "",
        "alpha": alpha,
    }


#: Columns per_order needs for the ICL-vs-GD scatter.
_PER_ORDER_NEEDED = ("model", "task", "n_demos", "method", "demo_set", "order_id", "query_id", "p_gold")
_PAIR_KEY = ["demo_set", "order_id", "query_id"]
#: Most points drawn per scatter panel (a deterministic subsample beyond that).
SCATTER_MAX_POINTS = 3000


def _with_key(frame: pd.DataFrame | None, needed: Iterable[str]) -> pd.DataFrame | None:
    """Copy of ``frame`` with a ``_key`` column of group keys; None if unusable."""
    if not isinstance(frame, pd.DataFrame) or not len(frame) or not set(needed) <= set(frame.columns):
        return None
    out = frame.copy()
    out["_key"] = [
        _group_key(m, t, n) for m, t, n in zip(out["model"], out["task"], out["n_demos"], strict=True)
    ]
    out["method"] = out["method"].astype(str)
    return out


def _split(frame: pd.DataFrame | None) -> dict[tuple[str, str, Any], pd.DataFrame]:
    """Rows of a keyed frame per group key (one pass, not one scan per group)."""
    if frame is None:
        return {}
    index = frame.groupby("_key", sort=False).indices
    return {k: frame.iloc[idx] for k, idx in index.items()}


def _scatter_methods(
    po: pd.DataFrame, study: Mapping[str, Any], methods_order: list[str]
) -> tuple[str | None, list[str]]:
    """Pick the reference (ICL) method and the gradient-based methods of a per-order frame."""
    present = [m for m in methods_order if m in set(po["method"])]
    kinds: dict[str, str] = {}
    if "method_kind" in po.columns:
        for m, k in zip(po["method"], po["method_kind"].astype(str), strict=True):
            kinds.setdefault(m, k.lower())
    else:
        kinds = {m: m.lower() for m in present}
    icl = [m for m in present if kinds.get(m) == "icl"]
    analysis = study.get("analysis") if isinstance(study.get("analysis"), Mapping) else {}
    wanted = analysis.get("reference")
    if wanted is not None and str(wanted) in icl:
        reference = str(wanted)
    elif icl:
        reference = icl[0]
    else:
        return None, []
    return reference, [m for m in present if kinds.get(m) != "icl"]


def order_pairs(per_order: pd.DataFrame, reference: str, methods: Sequence[str]) -> pd.DataFrame:
    """Pair the reference's P(gold) with each method's on the same (demo set, order, query).

    Parameters
    ----------
    per_order : pandas.DataFrame
        Rows of one (model, task, n_demos) group with columns ``method``,
        ``demo_set``, ``order_id``, ``query_id``, ``p_gold`` and optionally
        ``step`` and ``seed``.
    reference : str
        Method on the x axis (ICL).
    methods : sequence of str
        Methods on the y axis.

    Returns
    -------
    pandas.DataFrame
        Columns ``method``, ``demo_set``, ``order_id``, ``query_id``, ``x``
        (the reference's P(gold)) and ``y`` (the method's P(gold)); one row
        per (method, demo set, order, query) present for both methods.  When
        a unit has several ``step`` values only the last is used; several
        ``seed`` values of one (method, demo set, order, query) are averaged.
    """
    po = per_order
    if "step" in po.columns:
        cols = ["method", *_PAIR_KEY] + (["seed"] if "seed" in po.columns else [])
        last = po.groupby(cols, dropna=False)["step"].transform("max")
        po = po[po["step"] == last]
    agg = po.groupby(["method", *_PAIR_KEY], dropna=False, sort=True)["p_gold"].mean().reset_index()
    ref = agg[agg["method"] == reference].drop(columns="method").rename(columns={"p_gold": "x"})
    parts = []
    for m in methods:
        other = agg[agg["method"] == m].drop(columns="method").rename(columns={"p_gold": "y"})
        merged = ref.merge(other, on=_PAIR_KEY, how="inner")
        merged.insert(0, "method", m)
        parts.append(merged)
    if not parts:
        return pd.DataFrame(columns=["method", *_PAIR_KEY, "x", "y"])
    return pd.concat(parts, ignore_index=True)


def _order_sensitivity_groups(
    results: Mapping[str, Any],
    per_query: pd.DataFrame | None,
    methods_order: list[str],
    *,
    per_order: pd.DataFrame | None = None,
    colors: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    os_rows = _rows(results, "order_sensitivity")
    study = results.get("study") if isinstance(results.get("study"), Mapping) else {}
    keys: dict[tuple[str, str, Any], None] = {}
    pq = _with_key(per_query, ("model", "task", "n_demos", "method"))
    po = _with_key(per_order, _PER_ORDER_NEEDED)
    for frame in (pq, po):
        if frame is not None:
            for k in frame["_key"]:
                keys.setdefault(k, None)
    if pq is None:
        pq = pd.DataFrame(columns=["model", "task", "n_demos", "method", "sd_gold", "_key"])
    for r in os_rows:
        keys.setdefault(_group_key(r.get("model"), r.get("task"), r.get("n_demos")), None)

    pq_by_key, po_by_key = _split(pq if len(pq) else None), _split(po)
    groups = []
    for gi, key in enumerate(sorted(keys, key=_sort_key)):
        sub = pq_by_key.get(key, pq.iloc[:0])
        rows = [r for r in os_rows if _group_key(r.get("model"), r.get("task"), r.get("n_demos")) == key]
        order = [m for m in methods_order if m in {str(r.get("method")) for r in rows}]
        rows.sort(
            key=lambda r: order.index(str(r.get("method")))
            if str(r.get("method")) in order
            else len(order)
        )
        summary = pd.DataFrame(
            [
                {
                    "method": str(r.get("method")),
                    "mean_sd_gold": _as_float(r.get("mean_sd_gold")),
                    "ci_low": _as_float(r.get("ci_low")),
                    "ci_high": _as_float(r.get("ci_high")),
                }
                for r in rows
                if _as_float(r.get("mean_sd_gold")) is not None
            ],
            columns=["method", "mean_sd_gold", "ci_low", "ci_high"],
        )
        label = _context_label(key[0] or None, key[1] or None, key[2])
        figure = None
        if len(sub) and "sd_gold" in sub.columns:
            figure = Markup(
                svg.order_sensitivity_plot(
                    sub,
                    methods_order=methods_order,
                    title=f"Order sensitivity — {label}",
                    summary=summary.astype({"ci_low": float, "ci_high": float, "mean_sd_gold": float}),
                    colors=colors,
                )
            )
        scatter = _scatter_view(po_by_key.get(key), study, methods_order, label, colors)
        table = [
            {
                "method": str(r.get("method")),
                "method_name": method_display(r.get("method")),
                "mean_sd_gold": fmt_num(r.get("mean_sd_gold")),
                "ci": fmt_ci(r.get("ci_low"), r.get("ci_high")),
                "mean_sd_labels": fmt_num(r.get("mean_sd_labels")),
                "max_spread": fmt_num(r.get("max_spread")),
                "n_queries": fmt_num(r.get("n_queries")),
            }
            for r in rows
        ]
        methods_here = {str(r.get("method")) for r in rows} | (
            set(sub["method"].astype(str)) if len(sub) else set()
        )
        groups.append(
            {
                "anchor": f"os-{gi}",
                "label": label,
                "figure": figure,
                "table": table,
                "scatter": scatter,
                "has_gd": "gd" in methods_here,
            }
        )
    return groups


def _scatter_view(
    po: pd.DataFrame | None,
    study: Mapping[str, Any],
    methods_order: list[str],
    label: str,
    colors: dict[str, str] | None,
) -> dict[str, Any] | None:
    """The ICL-vs-GD per-order scatter of one group, or None without per-order data."""
    if po is None or not len(po):
        return None
    reference, methods = _scatter_methods(po, study, methods_order)
    if reference is None or not methods:
        return None
    pairs = order_pairs(po, reference, methods)
    n_pairs = {m: int((pairs["method"] == m).sum()) for m in methods}
    figure = svg.order_scatter_plot(
        pairs,
        methods=methods,
        title=f"{method_display(reference)} vs gradient-based P(gold) per order — {label}",
        reference=reference,
        reference_label=method_display(reference),
        method_labels={m: method_display(m) for m in methods},
        colors=colors,
        max_points=SCATTER_MAX_POINTS,
    )
    return {
        "figure": Markup(figure),
        "reference": method_display(reference),
        "methods": ", ".join(method_display(m) for m in methods),
        "subsampled": any(n > SCATTER_MAX_POINTS for n in n_pairs.values()),
        "max_points": SCATTER_MAX_POINTS,
        "has_gd": any(
            str(k).lower() == "gd"
            for k in (po.loc[po["method"].isin(methods), "method_kind"] if "method_kind" in po.columns else methods)
        ),
    }


def _accuracy_table(results: Mapping[str, Any], methods_order: list[str]) -> list[dict[str, Any]]:
    rows = _rows(results, "accuracy")

    def key(r: Mapping[str, Any]) -> tuple:
        m = str(r.get("method"))
        return (
            *_sort_key(_group_key(r.get("model"), r.get("task"), r.get("n_demos"))),
            methods_order.index(m) if m in methods_order else len(methods_order),
        )

    out = []
    for r in sorted(rows, key=key):
        out.append(
            {
                "model": r.get("model") if r.get("model") is not None else _DASH,
                "task": r.get("task") if r.get("task") is not None else _DASH,
                "n_demos": fmt_num(r.get("n_demos")),
                "method": method_display(r.get("method")),
                "accuracy": fmt_num(r.get("accuracy")),
                "n": fmt_num(r.get("n")),
            }
        )
    return out


def _null_figures(
    results: Mapping[str, Any], comparisons: list[dict[str, Any]], views: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    nulls = results.get("null_distributions")
    if not isinstance(nulls, Mapping):
        return []
    out = []

    def order(k: Any) -> tuple:
        s = str(k)
        return (0, int(s)) if s.isdigit() else (1, s)

    for k in sorted(nulls, key=order):
        values = nulls[k]
        try:
            arr = np.asarray(values, dtype=float).ravel()
        except (TypeError, ValueError):
            continue
        idx = int(str(k)) if str(k).isdigit() else None
        comp = comparisons[idx] if idx is not None and idx < len(comparisons) else {}
        view = views[idx] if idx is not None and idx < len(views) else None
        title = f"Null distribution — comparison {k}"
        if view is not None:
            title = f"#{k}: {view['context']} — {view['pair']}"
        observed = _as_float(comp.get("estimate"))
        out.append(
            {
                "key": str(k),
                "anchor": f"null-{k}",
                "title": title,
                "observed": fmt_num(observed),
                "p_value": fmt_p(comp.get("p_value")) if comp else _DASH,
                "n_draws": int(np.isfinite(arr).sum()),
                "figure": Markup(
                    svg.null_distribution_plot(
                        arr, observed if observed is not None else float("nan"), title=title
                    )
                ),
            }
        )
    return out


def _scalar(v: Any) -> str:
    if v is None:
        return _DASH
    if isinstance(v, float):
        return fmt_num(v, sig=6)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={_scalar(x)}" for k, x in v.items()) or _DASH
    if isinstance(v, (list, tuple)):
        return ", ".join(_scalar(x) for x in v) or _DASH
    return str(v)


_PROV_ORDER = (
    "hyptest_version",
    "python",
    "platform",
    "machine",
    "cpu_count",
    "device",
    "torch_threads",
    "seeds",
    "started",
    "finished",
    "n_units",
    "n_units_reused",
    "tasks",
    "run_dir",
)
_PROV_LABELS = {
    "hyptest_version": "hyptest",
    "cpu_count": "CPU cores",
    "torch_threads": "torch threads",
    "n_units": "units",
    "n_units_reused": "units reused",
    "run_dir": "run directory",
    "tasks": "task data (hash)",
}
_PROV_SPECIAL = {"libraries", "models", "wall_time_s", "warnings"}


def _seconds(v: Any) -> str:
    f = _as_float(v)
    if f is None:
        return _scalar(v)
    if f >= 600:
        return f"{f / 60:.1f} min"
    return f"{f:.2f} s" if f < 10 else f"{f:.1f} s"


def _model_view(m: Any) -> dict[str, Any]:
    if not isinstance(m, Mapping):
        return {"name": _scalar(m), "source": _DASH, "hashes": [], "extra": ""}
    sha = m.get("sha256")
    hashes: list[tuple[str, str]] = []
    if isinstance(sha, Mapping):
        hashes = [(str(k), _scalar(v)) for k, v in sha.items()]
    elif sha is not None:
        hashes = [(_scalar(m.get("file")) if m.get("file") is not None else "", _scalar(sha))]
    skip = {"name", "source", "sha256"} | ({"file"} if not isinstance(sha, Mapping) and sha is not None else set())
    extra = {k: v for k, v in m.items() if k not in skip}
    return {
        "name": _scalar(m.get("name")),
        "source": _scalar(m.get("source")),
        "hashes": hashes,
        "extra": _scalar(extra) if extra else "",
    }


def _provenance_view(prov: Mapping[str, Any]) -> dict[str, Any]:
    fields = []
    for k in _PROV_ORDER:
        if k in prov:
            fields.append((_PROV_LABELS.get(k, k), _scalar(prov[k])))
    for k, v in prov.items():
        if k not in _PROV_ORDER and k not in _PROV_SPECIAL:
            fields.append((str(k), _scalar(v)))
    libs = prov.get("libraries")
    libraries = (
        [(str(k), _scalar(v)) for k, v in sorted(libs.items(), key=lambda kv: str(kv[0]).lower())]
        if isinstance(libs, Mapping)
        else []
    )
    raw_models = prov.get("models")
    models = []
    if isinstance(raw_models, Mapping):
        raw_models = [{"name": k, **v} if isinstance(v, Mapping) else {"name": k, "source": v}
                      for k, v in raw_models.items()]
    if isinstance(raw_models, Sequence) and not isinstance(raw_models, str):
        models = [_model_view(m) for m in raw_models]
    wt = prov.get("wall_time_s")
    wall = []
    if isinstance(wt, Mapping):
        names = [k for k in _STAGES if k in wt] + [str(k) for k in wt if k not in _STAGES]
        for k in names:
            wall.append({"stage": k, "time": _seconds(wt[k]), "what": _STAGES.get(k, ""),
                         "total": k == "total"})
    warns = prov.get("warnings")
    if isinstance(warns, str):
        warnings = [warns]
    elif isinstance(warns, Sequence):
        warnings = [str(w) for w in warns]
    else:
        warnings = []
    return {
        "fields": fields,
        "libraries": libraries,
        "models": models,
        "models_extra": any(m["extra"] for m in models),
        "wall": wall,
        "warnings": warnings,
    }


def _is_relative_path(p: str) -> bool:
    """True for a relative path without a URL scheme, host or parent escape."""
    if not p or p.startswith(("/", "\\")) or "\\" in p:
        return False
    parts = urlsplit(p)
    if parts.scheme or parts.netloc:
        return False
    return ".." not in pathlib.PurePosixPath(p).parts


def _data_files(results: Mapping[str, Any], run_dir: pathlib.Path | None = None) -> list[dict[str, Any]]:
    raw = results.get("data_files")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, Sequence):
        return []
    out = []
    for f in raw:
        s = str(f)
        ok = _is_relative_path(s)
        missing = bool(ok and run_dir is not None and not (run_dir / s).exists())
        out.append(
            {
                "name": s,
                "href": quote(s, safe="/") if ok else None,
                "what": DATA_FILE_DESCRIPTIONS.get(s, DATA_FILE_DESCRIPTIONS.get(s.rstrip("/") + "/", "")),
                "missing": missing,
            }
        )
    return out


def _version(prov: Mapping[str, Any]) -> str:
    v = prov.get("hyptest_version")
    if v:
        return str(v)
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("hyptest")
        except PackageNotFoundError:
            return "unknown"
    except ImportError:  # pragma: no cover
        return "unknown"


def _defang(value: Any) -> Any:
    """Jinja ``finalize`` hook: escape plain values and neutralise ``://``.

    Values that are already markup (the SVG figures) pass through unchanged.
    Everything else is HTML-escaped and every ``://`` is written as
    ``&#58;//``, so text such as a model's source URL reads the same in a
    browser but the document source contains no literal ``http://``/``https://``
    (and nothing is ever a fetchable resource).
    """
    if value is None or hasattr(value, "__html__"):
        return value
    return Markup(str(escape(str(value))).replace("://", "&#58;//"))


@functools.lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        finalize=_defang,
        loader=PackageLoader("hyptest.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


def render_report(
    results: dict,
    per_query: pd.DataFrame,
    *,
    study_text: str,
    per_order: pd.DataFrame | None = None,
) -> str:
    """Render the self-contained HTML report.

    Parameters
    ----------
    results : dict
        The analysis results (the content of ``results.json``): keys
        ``study``, ``comparisons``, ``order_sensitivity``, ``accuracy`` and,
        optionally, ``null_distributions``, ``provenance`` and ``data_files``.
        Missing keys are rendered as empty sections or ``"—"``; unknown keys
        are ignored.  Comparison rows of any analysis are shown (see
        :data:`ANALYSIS_NAMES`); missing fields read ``"—"`` and a verdict
        outside :data:`VERDICT_PHRASES` gets a neutral banner.
    per_query : pandas.DataFrame
        Long frame with columns ``model``, ``task``, ``n_demos``, ``method``,
        ``demo_set``, ``query_id``, ``sd_gold`` and ``sd_labels``; one row per
        (demo set, query) unit and method.  Used for the strip plots.
    study_text : str
        Verbatim text of the study file, shown in a ``<pre>`` block.
    per_order : pandas.DataFrame, optional
        Long frame with columns ``model``, ``task``, ``n_demos``, ``method``,
        ``method_kind``, ``demo_set``, ``order_id``, ``seed``, ``step``,
        ``query_id`` and ``p_gold``; one row per unit and query (the content
        of ``per_order.parquet``).  When given, every (model, task, N) gets a
        scatter of ICL's P(gold) against each gradient-based method's on the
        same (demo set, order, query) (see :func:`order_pairs`); at most
        :data:`SCATTER_MAX_POINTS` points per panel are drawn.

    Returns
    -------
    str
        A complete HTML document with inline CSS and inline SVG, no scripts
        and no external URLs (the SVG namespace excepted).  Every value taken
        from ``results``/``per_query``/``per_order``/``study_text`` is
        HTML-escaped.
    """
    return _render(results, per_query, study_text=study_text, per_order=per_order, run_dir=None)


def _render(
    results: Mapping[str, Any] | None,
    per_query: pd.DataFrame | None,
    *,
    study_text: str | None,
    per_order: pd.DataFrame | None,
    run_dir: pathlib.Path | None,
) -> str:
    results = dict(results or {})
    study = results.get("study") if isinstance(results.get("study"), Mapping) else {}
    prov = results.get("provenance") if isinstance(results.get("provenance"), Mapping) else {}
    comparisons = _rows(results, "comparisons")
    alpha = _as_float(study.get("alpha"))
    if alpha is None and isinstance(study.get("analysis"), Mapping):
        alpha = _as_float(study["analysis"].get("alpha"))

    seen: list[str] = []
    for frame in (per_query, per_order):
        if isinstance(frame, pd.DataFrame) and "method" in frame.columns:
            seen.extend(str(m) for m in pd.unique(frame["method"].astype(str)))
    for key in ("order_sensitivity", "accuracy"):
        seen.extend(str(r.get("method")) for r in _rows(results, key) if r.get("method") is not None)
    for c in comparisons:
        seen.extend(str(c[k]) for k in ("method_a", "method_b") if c.get(k) is not None)
    methods_order = _methods_order(study, seen)
    colors = svg.method_colors(m for m in methods_order if m in set(seen))

    views = [_comparison_view(i, c, alpha) for i, c in enumerate(comparisons)]
    counts: dict[str, int] = {}
    for v in views:
        counts[v["verdict_word"]] = counts.get(v["verdict_word"], 0) + 1
    adjust_methods = sorted({str(c.get("adjust_method")) for c in comparisons if c.get("adjust_method")})
    ci_levels = sorted({fmt_num(100 * v) for c in comparisons if (v := _as_float(c.get("ci_level")))})
    ci_desc = "; ".join(
        sorted(
            {
                " ".join(x for x in (v["ci_level"], v["ci_method"]) if x != _DASH)
                for v in views
                if v["ci_level"] != _DASH or v["ci_method"] != _DASH
            }
        )
    )
    tests = sorted({str(c.get("test")) for c in comparisons if c.get("test")})
    finished = prov.get("finished") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    pv = _provenance_view(prov)

    other_study = [
        (str(k), _scalar(v))
        for k, v in study.items()
        if k not in ("name",) and not isinstance(v, (Mapping, list, tuple))
        and not (v is None or (isinstance(v, str) and not v.strip()))
    ]

    context = {
        "title": str(study.get("name") or "hyptest study"),
        "version": _version(prov),
        "generated": str(finished),
        "study_fields": other_study,
        "alpha": fmt_num(alpha) if alpha is not None else "the study's α",
        "comparisons": views,
        "verdict_counts": [(k, n) for k, n in counts.items()],
        "common_context": _common(v["context"] for v in views),
        "common_analysis": _common(v["analysis"] for v in views),
        "order_sensitivity": _order_sensitivity_groups(
            results, per_query, methods_order, per_order=per_order, colors=colors
        ),
        "accuracy": _accuracy_table(results, methods_order),
        "nulls": _null_figures(results, comparisons, views),
        "provenance": pv,
        "has_provenance": bool(prov),
        "data_files": _data_files(results, run_dir),
        "study_text": "" if study_text is None else str(study_text),
        "adjust_methods": ", ".join(adjust_methods) if adjust_methods else "holm",
        "ci_level": (ci_levels[0] if len(ci_levels) == 1 else "95"),
        "tests": tests,
        "ci_desc": ci_desc,
        "study_json": json.dumps(study, indent=2, sort_keys=True, default=str) if study else "",
    }
    return _environment().get_template("report.html.j2").render(**context)


def _common(values: Iterable[str]) -> str | None:
    """The single value shared by all items, or None when they differ (or there are none)."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def write_report(
    run_dir: pathlib.Path,
    results: dict,
    per_query: pd.DataFrame,
    study_text: str,
    per_order: pd.DataFrame | None = None,
) -> pathlib.Path:
    """Render the report and write ``run_dir / "report.html"`` atomically.

    The HTML is written to a temporary file in ``run_dir``, flushed and
    ``fsync``-ed, then moved into place with :func:`os.replace`; on any error
    the temporary file is removed and the previous report (if any) is left
    untouched.

    Parameters
    ----------
    run_dir : pathlib.Path
        Run directory (created if missing).
    results : dict
        See :func:`render_report`.  Entries of ``results["data_files"]`` that
        do not exist in ``run_dir`` are listed as missing instead of linked.
    per_query : pandas.DataFrame
        See :func:`render_report`.
    study_text : str
        See :func:`render_report`.
    per_order : pandas.DataFrame, optional
        See :func:`render_report`.  When None and ``run_dir`` holds
        ``per_order.parquet`` (the pipeline writes it before the report),
        that file is read instead; without either the scatter figures are
        left out.

    Returns
    -------
    pathlib.Path
        Path of the written ``report.html``.
    """
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if per_order is None and (run_dir / "per_order.parquet").is_file():
        per_order = pd.read_parquet(run_dir / "per_order.parquet")
    text = _render(results, per_query, study_text=study_text, per_order=per_order, run_dir=run_dir)
    target = run_dir / "report.html"
    fd, tmp_name = tempfile.mkstemp(dir=run_dir, prefix=".report.html.", suffix=".tmp")
    tmp = pathlib.Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename durable; best effort (not supported everywhere)
        dfd = os.open(run_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return target
