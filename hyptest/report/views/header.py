"""The report's header: title, study, version, date, and the method order and colours every figure shares."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

import pandas as pd

from hyptest.contract import Results

from .. import figures
from .format import _DASH, _as_float, _scalar, analysis_spec, fmt_num
from .names import _methods_order

__all__ = ["header_view", "method_palette"]


def method_palette(res: Results, per_query: pd.DataFrame | None,
                   per_order: pd.DataFrame | None) -> tuple[list[str], dict[str, str]]:
    """The methods in the report's order (the study's, then the known ones, then any other) and their colours.

    Colours go to the methods that appear in the frames, the summary tables,
    the comparison rows or the Bayesian posteriors, so that every figure
    draws a method in the same colour.
    """
    seen: list[str] = []
    for frame in (per_query, per_order):
        if isinstance(frame, pd.DataFrame) and "method" in frame.columns:
            seen.extend(str(m) for m in pd.unique(frame["method"].astype(str)))
    for rows in (res.order_sensitivity, res.accuracy, res.agreement):
        seen.extend(str(r.get("method")) for r in rows if r.get("method") is not None)
    for c in res.comparisons:
        seen.extend(str(m) for m in (c.method_a, c.method_b) if m is not None)
    for sl in res.bayes:
        seen.extend(str(m) for m in sl.posteriors)
    methods_order = _methods_order(res.study, seen)
    return methods_order, figures.method_colors(m for m in methods_order if m in set(seen))


def header_view(res: Results, study_text: str | None, per_order: pd.DataFrame | None) -> dict[str, Any]:
    """Title, format, version, date, the study's scalar fields and text, α, skipped analyses."""
    study = res.study
    alpha = _as_float(study.get("alpha"))
    if alpha is None:
        alpha = _as_float(analysis_spec(study).get("alpha"))
    finished = res.provenance.get("finished") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "title": str(study.get("name") or "hyptest study"),
        "run_format": str(study.get("format") or res.import_.get("format") or ""),
        "skipped_analyses": [{"name": str(s.get("name") or s.get("analysis") or ""), "reason": str(s.get("reason") or "")}
                             for s in res.skipped_analyses],
        "version": res.provenance.hyptest_version or _DASH,
        "generated": str(finished),
        "study_fields": [(str(k), _scalar(v)) for k, v in study.items()
                         if k != "name" and not isinstance(v, (dict, list, tuple))
                         and not (v is None or (isinstance(v, str) and not v.strip()))],
        "alpha": fmt_num(alpha) if alpha is not None else "the study's α",
        "study_text": "" if study_text is None else str(study_text),
        "study_json": json.dumps(study, indent=2, sort_keys=True, default=str) if study else "",
        "layer_causal": _layer_causal_methods(study, per_order),
    }


def _layer_causal_methods(study: dict[str, Any], per_order: pd.DataFrame | None) -> list[str]:
    """Names of the study's layer-causal GD methods (from the study, else from ``per_order``'s kinds)."""
    raw = study.get("methods")
    names = [str(m.get("name") or m.get("kind")) for m in raw if isinstance(m, dict)
             and m.get("kind") == "layer_causal_gd"] if isinstance(raw, list) else []
    if not names and isinstance(per_order, pd.DataFrame) and {"method", "method_kind"} <= set(per_order.columns):
        names = sorted(set(per_order.loc[per_order["method_kind"] == "layer_causal_gd", "method"].astype(str)))
    return names
