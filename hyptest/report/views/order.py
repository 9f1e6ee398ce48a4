"""The order-sensitivity section: strip plots, the per-order scatter, the accuracy table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from ..._util import as_run
from .. import figures
from .format import _DASH, _as_float, _context_label, _group_key, _sort_key, analysis_spec, fmt_ci, fmt_num
from .names import method_display

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
    # one key per distinct (model, task, n_demos), made from that combination's first row: iterating the
    # (Arrow-backed) columns row by row took seconds on a few hundred thousand rows
    codes = out.groupby(["model", "task", "n_demos"], dropna=False, sort=False).ngroup().to_numpy()
    _, first = np.unique(codes, return_index=True)
    keys = np.empty(len(first), dtype=object)
    for i, (m, t, n) in enumerate(zip(out["model"].iloc[first], out["task"].iloc[first],
                                      out["n_demos"].iloc[first], strict=True)):
        keys[i] = _group_key(m, t, n)
    out["_key"] = keys[codes]
    out["method"] = out["method"].astype(str)
    return out


def _split(frame: pd.DataFrame | None) -> dict[tuple[str, str, Any], pd.DataFrame]:
    """Rows of a keyed frame per group key (one pass, not one scan per group)."""
    if frame is None:
        return {}
    index = frame.groupby("_key", sort=False).indices
    # a group's rows are usually one run of the frame: a slice (no copy of its string columns), the same rows
    return {k: frame.iloc[as_run(idx)] for k, idx in index.items()}


def _scatter_methods(
    po: pd.DataFrame, study: Mapping[str, Any], methods_order: list[str]
) -> tuple[str | None, list[str]]:
    """Pick the reference (ICL) method and the gradient-based methods of a per-order frame."""
    names = set(po["method"].unique())
    present = [m for m in methods_order if m in names]
    kinds: dict[str, str] = {}
    if "method_kind" in po.columns:
        first = ~po["method"].duplicated()  # each method's kind is that of its first row
        for m, k in zip(po.loc[first, "method"], po.loc[first, "method_kind"].astype(str), strict=True):
            kinds.setdefault(m, k.lower())
    else:
        kinds = {m: m.lower() for m in present}
    icl = [m for m in present if kinds.get(m) == "icl"]
    wanted = analysis_spec(study).get("reference")
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


def order_sensitivity_view(
    rows: list[dict[str, Any]],
    study: dict[str, Any],
    per_query: pd.DataFrame | None,
    methods_order: list[str],
    *,
    per_order: pd.DataFrame | None = None,
    colors: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One group per (model, task, N) of the summary rows or the frames: strip plot, scatter, summary table."""
    keys: dict[tuple[str, str, Any], None] = {}
    pq = _with_key(per_query, ("model", "task", "n_demos", "method"))
    po = _with_key(per_order, _PER_ORDER_NEEDED)
    for frame in (pq, po):
        if frame is not None:
            for k in frame["_key"].drop_duplicates():  # in order of first appearance
                keys.setdefault(k, None)
    if pq is None:
        pq = pd.DataFrame(columns=["model", "task", "n_demos", "method", "sd_gold", "_key"])
    for r in rows:
        keys.setdefault(_group_key(r.get("model"), r.get("task"), r.get("n_demos")), None)
    pq_by_key, po_by_key = _split(pq if len(pq) else None), _split(po)
    return [
        _order_group(gi, key, [r for r in rows if _group_key(r.get("model"), r.get("task"), r.get("n_demos")) == key],
                     pq_by_key.get(key, pq.iloc[:0]), po_by_key.get(key), study, methods_order, colors)
        for gi, key in enumerate(sorted(keys, key=_sort_key))
    ]


def _order_group(gi: int, key: tuple[str, str, Any], rows: list[dict[str, Any]], sub: pd.DataFrame,
                 po: pd.DataFrame | None, study: dict[str, Any], methods_order: list[str],
                 colors: dict[str, str] | None) -> dict[str, Any]:
    """One (model, task, N): the strip plot of the per-query SDs with the summary, the scatter, the table."""
    order = [m for m in methods_order if m in {str(r.get("method")) for r in rows}]
    rows = sorted(rows, key=lambda r: order.index(str(r.get("method"))) if str(r.get("method")) in order
                  else len(order))
    summary = pd.DataFrame(
        [{"method": str(r.get("method")), "mean_sd_gold": _as_float(r.get("mean_sd_gold")),
          "ci_low": _as_float(r.get("ci_low")), "ci_high": _as_float(r.get("ci_high"))}
         for r in rows if _as_float(r.get("mean_sd_gold")) is not None],
        columns=["method", "mean_sd_gold", "ci_low", "ci_high"],
    )
    label = _context_label(key[0] or None, key[1] or None, key[2])
    figure = None
    if len(sub) and "sd_gold" in sub.columns:
        figure = Markup(figures.order_sensitivity_plot(
            sub, methods_order=methods_order, title=f"Order sensitivity — {label}",
            summary=summary.astype({"ci_low": float, "ci_high": float, "mean_sd_gold": float}), colors=colors,
        ))
    table = [
        {"method": str(r.get("method")), "method_name": method_display(r.get("method")),
         "mean_sd_gold": fmt_num(r.get("mean_sd_gold")), "ci": fmt_ci(r.get("ci_low"), r.get("ci_high")),
         "mean_sd_labels": fmt_num(r.get("mean_sd_labels")), "max_spread": fmt_num(r.get("max_spread")),
         "n_queries": fmt_num(r.get("n_queries"))}
        for r in rows
    ]
    methods_here = {str(r.get("method")) for r in rows} | (set(sub["method"].astype(str)) if len(sub) else set())
    return {"anchor": f"os-{gi}", "label_key": key, "label": label, "figure": figure, "table": table,
            "scatter": _scatter_view(po, study, methods_order, label, colors), "has_gd": "gd" in methods_here}


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
    figure = figures.order_scatter_plot(
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


def accuracy_view(rows: list[dict[str, Any]], methods_order: list[str]) -> list[dict[str, Any]]:
    """The accuracy table, by (model, task, N) and method."""

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
