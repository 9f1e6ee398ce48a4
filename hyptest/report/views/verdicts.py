"""The verdict tables: comparison rows grouped by role and compared pair."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .format import _common, _sort_key
from .names import ROLES, VERDICT_PHRASES, _analysis_rank


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


def _verdict_tables(views: list[dict[str, Any]], methods_order: list[str]) -> list[dict[str, Any]]:
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
