"""The verdict tables: comparison rows grouped by role and compared pair."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hyptest.contract import BayesSlice, ComparisonRow

from .comparison import comparison_view
from .format import _common, _group_key, _sort_key
from .names import _ESTIMATE_LEGEND, AGREEMENT_METRICS, ANALYSIS_ORDER, ROLES, VERDICT_PHRASES, _analysis_rank

__all__ = ["comparison_views", "link_details", "verdict_tables", "verdicts_context"]


def comparison_views(comparisons: list[ComparisonRow], bayes: list[BayesSlice]) -> list[dict[str, Any]]:
    """One view per comparison row, in the rows' order; a Bayesian row knows its slice's order-invariant methods."""
    invariant = {_group_key(sl.model, sl.task, sl.n_demos): sl.order_invariant for sl in bayes}
    return [comparison_view(i, c, invariant=invariant.get(_group_key(c.model, c.task, c.n_demos), ()))
            for i, c in enumerate(comparisons)]


def verdicts_context(views: list[dict[str, Any]], methods_order: list[str]) -> dict[str, Any]:
    """The verdicts at a glance: banners, the tables per role, the verdict counts and the estimates' legend."""
    counts: dict[str, int] = {}
    for v in views:
        counts[v["verdict_word"]] = counts.get(v["verdict_word"], 0) + 1
    # headline verdicts: the confirmatory family (every row when a file has none)
    banners = sorted(
        [v for v in views if v["primary"]] or views,
        key=lambda v: (*_sort_key(v["key"]), methods_order.index(v["method_b"]) if v["method_b"] in methods_order
                       else len(methods_order), v["index"]),
    )
    for v in banners:
        v["others"] = _others_text(views, v) if v["primary"] else ""
    analyses_present = [a for a in ANALYSIS_ORDER if any(v["analysis_key"] == a for v in views)]
    return {
        "comparisons": views,
        "banners": banners,
        "verdict_tables": verdict_tables(views, methods_order),
        "has_confirmatory": any(v["primary"] for v in views),
        "has_bayes_rows": any(v["role"] == "bayesian" for v in views),
        "analyses_present": analyses_present,
        "estimate_legend": list(dict.fromkeys(_ESTIMATE_LEGEND[a] for a in analyses_present if a in _ESTIMATE_LEGEND)),
        "verdict_counts": sorted(counts.items(), key=lambda kv: _VERDICT_RANK.get(kv[0], len(_VERDICT_RANK))),
    }


def link_details(views: list[dict[str, Any]], order_groups: list[dict[str, Any]], bayes_slices: list[dict[str, Any]],
                 agreement_groups: list[dict[str, Any]], figures: list[dict[str, Any]]) -> None:
    """Point each verdict-table row at its details: its Bayes slice, resampling figure, agreement or order group."""
    os_anchor = {g["label_key"]: g["anchor"] for g in order_groups}
    bayes_anchor = {sl["key"]: sl["anchor"] for sl in bayes_slices}
    agreement_anchor = {g["key"]: g["anchor"] for g in agreement_groups}
    figure_anchor = {n["key"]: n["anchor"] for n in figures}
    for v in views:
        if v["role"] == "bayesian" and v["key"] in bayes_anchor:
            v["detail_href"] = "#" + bayes_anchor[v["key"]]
        elif str(v["index"]) in figure_anchor:
            v["detail_href"] = "#" + figure_anchor[str(v["index"])]
        elif v["analysis_key"] in AGREEMENT_METRICS and v["key"] in agreement_anchor:
            v["detail_href"] = "#" + agreement_anchor[v["key"]]
        elif v["key"] in os_anchor:
            v["detail_href"] = "#" + os_anchor[v["key"]]


def _glance_groups(views: list[dict[str, Any]], methods_order: list[str], prefix: str = "pair"
                   ) -> list[dict[str, Any]]:
    """Verdict-table rows grouped by compared pair (method), every analysis inside.

    Groups follow the method order of the study; inside a group the rows are
    ordered by (model, task, N), then :data:`ANALYSIS_ORDER`.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for v in views:
        groups.setdefault((v["method_a"] or "", v["method_b"] or ""), []).append(v)

    def mkey(pair: tuple[str, str]) -> tuple:
        b = pair[1]
        return (methods_order.index(b) if b in methods_order else len(methods_order), b, pair[0])

    out = []
    for gi, pair in enumerate(sorted(groups, key=mkey)):
        rows = sorted(
            groups[pair],
            key=lambda v: (*_sort_key(v["key"]), _analysis_rank(v["analysis_key"]), v["index"]),
        )
        counts: dict[str, int] = {}
        for v in rows:
            counts[v["verdict_word"]] = counts.get(v["verdict_word"], 0) + 1
            v["pair_anchor"] = f"{prefix}-{gi}"
        out.append(
            {
                "anchor": f"{prefix}-{gi}",
                "pair": rows[0]["pair"],
                "pair_short": rows[0]["pair_short"],
                "method": pair[1],
                "rows": rows,
                "counts": _count_text(counts),
            }
        )
    return out


_VERDICT_RANK = {w.replace("_", " "): i for i, w in enumerate(VERDICT_PHRASES)}


def _count_text(counts: Mapping[str, int]) -> str:
    """``{"different": 3, "inconclusive": 1}`` -> ``"3 different · 1 inconclusive"`` (verdict order)."""
    keys = sorted(counts, key=lambda k: (_VERDICT_RANK.get(k, len(_VERDICT_RANK)), k))
    return " · ".join(f"{counts[k]} {k}" for k in keys)


def _others_text(views: list[dict[str, Any]], v: dict[str, Any]) -> str:
    """E.g. ``"+6 exploratory and Bayesian rows: 5 different · 1 inconclusive"`` for a banner."""
    counts: dict[str, int] = {}
    roles: dict[str, None] = {}
    for o in views:
        if o is v or o["primary"] or o["key"] != v["key"]:
            continue
        if (o["method_a"], o["method_b"]) != (v["method_a"], v["method_b"]):
            continue
        roles.setdefault(o["role"], None)
        counts[o["verdict_word"]] = counts.get(o["verdict_word"], 0) + 1
    n = sum(counts.values())
    if not n:
        return ""
    kinds = " and ".join(r for r in ROLES if r in roles)
    return f"+{n} {kinds} {'row' if n == 1 else 'rows'}: " + _count_text(counts)


def verdict_tables(views: list[dict[str, Any]], methods_order: list[str]) -> list[dict[str, Any]]:
    """One verdict table per role (confirmatory, exploratory, Bayesian), each grouped by pair."""
    out = []
    for role, heading in ROLES.items():
        rows = [v for v in views if v["role"] == role]
        if not rows:
            continue
        counts: dict[str, int] = {}
        for v in rows:
            counts[v["verdict_word"]] = counts.get(v["verdict_word"], 0) + 1
        common_analysis = _common(v["analysis"] for v in rows)
        common_context = _common(v["context"] for v in rows)
        bayes = role == "bayesian"
        out.append({
            "role": role,
            "id": f"verdicts-{role}",
            "heading": heading,
            "groups": _glance_groups(rows, methods_order, prefix=f"pair-{role}"),
            "n": len(rows),
            "counts": _count_text(counts),
            "common_analysis": common_analysis,
            "common_context": common_context,
            "bayes": bayes,
            "n_columns": (7 if bayes else 9) + (not common_analysis) + (not common_context),
            "notes": [(v["index"], v["anchor"], v["note"]) for v in sorted(rows, key=lambda v: v["index"])
                      if v["note"]],
        })
    return out
