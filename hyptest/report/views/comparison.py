"""One comparison row in words: its effect, interval, p-value, margin and verdict."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from hyptest.contract import ComparisonRow

from .format import _DASH, _as_float, _context_label, _group_key, _pct, fmt_ci, fmt_num, fmt_p, fmt_ratio
from .names import (
    _BAYES,
    AGREEMENT_METRICS,
    PRIMARY_ANALYSIS,
    SHORT_METHOD_NAMES,
    _analysis_display,
    _verdict_class,
    _verdict_word,
    method_display,
    verdict_phrase,
)


def _log_factor(comp: Mapping[str, Any]) -> float | None:
    """For rows on a log-ratio scale, ``f`` with SD ratio = exp(estimate / f) (2 for variances); else None."""
    scale = str(comp.get("scale") or "")
    if "log" not in scale or "ratio" not in scale:
        return None
    return 2.0 if "variance" in scale else 1.0


def _exp(x: Any, f: float) -> float | None:
    v = _as_float(x)
    if v is None:
        return None
    return math.inf if v / f > 700 else math.exp(v / f)


def _is_threshold(comp: Mapping[str, Any]) -> bool:
    return comp.get("rule") == "threshold"


def _ci_level_text(comp: Mapping[str, Any]) -> str:
    """The level of the printed interval, as used by the verdict (``"98.3%"``, or the one-sided pair)."""
    if _is_threshold(comp):
        low, high = _pct(comp.get("eq_level")), _pct(1 - (_as_float(comp.get("level_difference")) or math.nan))
        return f"one-sided {low} / {high}" if low and high else ""
    return _pct(comp.get("ci_level"))


def _ratio_ci(comp: Mapping[str, Any], low: str = "ci_low", high: str = "ci_high") -> str:
    """A log-scale interval of a ratio row as ratios (``"[0.8, 1.1]"``); ``""`` for other rows."""
    f = _log_factor(comp)
    if f is None or (_as_float(comp.get(low)) is None and _as_float(comp.get(high)) is None):
        return ""
    return fmt_ci(_exp(comp.get(low), f), _exp(comp.get(high), f))


def _margin_text(comp: Mapping[str, Any]) -> str | None:
    """The margin a row's verdict used, in words: ``"[1/1.25, 1.25]"``, ``"±0.02"``, ρ₀ as a number; None if none."""
    if _is_threshold(comp):
        return fmt_num(comp.get("null_value")) if _as_float(comp.get("null_value")) is not None else None
    m = _as_float(comp.get("margin"))
    f = _log_factor(comp)
    ratio = _as_float(comp.get("margin_ratio"))
    if ratio is None and f is not None and m is not None:
        ratio = math.exp(m / f)
    if ratio is not None and f is not None:
        return f"[1/{fmt_num(ratio)}, {fmt_num(ratio)}]"
    return f"±{fmt_num(abs(m))}" if m is not None else None


def _min_margin_text(comp: Mapping[str, Any]) -> str:
    """``"equivalence would be declared at a margin of [1/219, 219]"`` for rows not declared equivalent."""
    m = _as_float(comp.get("min_equivalence_margin"))
    if m is None or not math.isfinite(m) or comp.get("verdict") in ("equivalent", "negligible"):
        return ""
    f = _log_factor(comp)
    if f is not None:
        r = _exp(m, f)
        what = f"[1/{fmt_num(r)}, {fmt_num(r)}]"
    else:
        what = f"±{fmt_num(m)}"
    return f"equivalence would be declared at a margin of {what}"


def _pair_text(comp: Mapping[str, Any], *, short: bool = False) -> str:
    names = [
        SHORT_METHOD_NAMES.get(str(comp.get(k)).lower(), str(comp.get(k))) if short else method_display(comp.get(k))
        for k in ("method_a", "method_b")
        if comp.get(k) is not None
    ]
    return " vs ".join(names) if names else _DASH


def _infinite_sign(comp: Mapping[str, Any], invariant: Iterable[str] = ()) -> int:
    """+1 / -1 when a Bayesian row's log ratio is +∞ / -∞ (an order-invariant method), else 0.

    The results file stores ±∞ as ``null``; the sign is recovered from the
    slice's ``order_invariant`` list (``invariant``) or the row's note.
    """
    v = comp.get("estimate")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isinf(float(v)):
        return 1 if v > 0 else -1
    if not str(comp.get("analysis")).startswith(_BAYES) or _as_float(v) is not None:
        return 0
    inv = {str(m) for m in invariant}
    b_inv, a_inv = str(comp.get("method_b")) in inv, str(comp.get("method_a")) in inv
    if b_inv and not a_inv:
        return 1
    if a_inv and not b_inv:
        return -1
    note = str(comp.get("note") or "").replace(" ", "").lower()
    if "=-inf" in note:
        return -1
    if "=inf" in note or "=+inf" in note:
        return 1
    return 0


_DELTA_ANALYSES = frozenset({"order_sensitivity", "order_sensitivity_labels", "order_sensitivity_vocab",
                             *AGREEMENT_METRICS})


def effect_text(comp: Mapping[str, Any], *, order_invariant: Iterable[str] = ()) -> str:
    """Plain-words estimate and interval of a comparison, worded for its scale.

    Parameters
    ----------
    comp : mapping
        One entry of ``results["comparisons"]``.
    order_invariant : iterable of str, optional
        Methods whose order SD the Bayesian model fixed at 0 (the slice's
        ``order_invariant`` list), so that a ``null`` estimate reads ``+∞``.

    Returns
    -------
    str
        Rows on a log-ratio scale: ``"ratio 0.8 [0.7, 0.95] (log -0.22
        [-0.36, -0.05], 98.3% CI)"`` (the interval at the level the verdict
        used, as ratios beside the log values); differences: ``"Δ = 0.031
        [0.02, 0.04] (98.3% CI)"``; order alignment: ``"r = 0.45, bounds
        [0.39, 0.51] (one-sided 95% / 97.5%)"``; Bayesian rows: ``"log SD
        ratio posterior mean -0.4, 94% HDI [-0.9, 0.1], P(in ROPE) = 0.3"``
        (``"log SD ratio = +∞ (order SD fixed at 0)"`` for an
        order-invariant method).  Plain text (to be escaped).
    """
    analysis = str(comp.get("analysis")) if comp.get("analysis") is not None else ""
    est = fmt_num(comp.get("estimate"))
    ci = fmt_ci(comp.get("ci_low"), comp.get("ci_high"))
    level = _ci_level_text(comp)
    if analysis.startswith(_BAYES):
        sign = _infinite_sign(comp, order_invariant)
        if sign:
            return f"log SD ratio = {'+∞' if sign > 0 else '-∞'} (order SD fixed at 0)"
        hdi = f"{level} HDI" if level else "HDI"
        text = f"log SD ratio posterior mean {est}" + (f", {hdi} {ci}" if ci != _DASH else "")
        if _as_float(comp.get("p_rope")) is not None:
            text += f", P(in ROPE) = {fmt_num(comp.get('p_rope'))}"
        return text
    if _is_threshold(comp) or analysis == "order_alignment":
        return f"r = {est}" + (f", bounds {ci}" if ci != _DASH else "") + (f" ({level})" if level else "")
    f = _log_factor(comp)
    level_part = f", {level} CI" if level else ""
    if f is not None:
        ratio = _exp(comp.get("estimate"), f)
        rci = _ratio_ci(comp)
        return (f"ratio {fmt_num(ratio)}" + (f" {rci}" if rci != _DASH else "")
                + f" (log {est}" + (f" {ci}" if ci != _DASH else "") + f"{level_part})")
    if analysis == "log_variance_ratio":
        label = "log variance ratio "
    elif comp.get("rule") == "two_sided" or analysis in _DELTA_ANALYSES or not analysis:
        label = "Δ = "
    else:
        label = "estimate "
    return f"{label}{est}" + (f" {ci}" if ci != _DASH else "") + (f" ({level} CI)" if level else "")


def _equivalence_text(comp: Mapping[str, Any]) -> str:
    """The TOST interval against the margin, or the margin at which equivalence would be declared."""
    if comp.get("rule") != "two_sided":
        return ""
    margin = _margin_text(comp)
    eq = _ratio_ci(comp, "eq_low", "eq_high") or fmt_ci(comp.get("eq_low"), comp.get("eq_high"))
    bits = []
    if margin is not None and eq != _DASH:
        what = "as ratios " if _log_factor(comp) is not None else ""
        bits.append(f"{_pct(comp.get('eq_level'))} equivalence interval {what}{eq} vs margin {margin}".strip())
    elif margin is None:
        bits.append("no margin declared")
    least = _min_margin_text(comp)
    if least:
        bits.append(least)
    return "; ".join(bits)


def banner_text(comp: Mapping[str, Any]) -> str:
    """One-line plain-words verdict for a comparison.

    Parameters
    ----------
    comp : mapping
        One entry of ``results["comparisons"]``.

    Returns
    -------
    str
        E.g. ``"sentiment · N=4 · smollm2-135m — ICL vs SGD in order
        sensitivity: different: … (different). ratio 0.5 [0.4, 0.6] (log
        -0.69 [-0.9, -0.5], 98.3% CI); p_adj = 0.003 (holm, family of 3);
        90% equivalence interval as ratios [0.42, 0.58] vs margin [1/1.25,
        1.25]; equivalence would be declared at a margin of [1/2.4, 2.4]"``.
        Plain text (to be escaped).
    """
    head = _context_label(comp.get("model"), comp.get("task"), comp.get("n_demos"))
    verdict = comp.get("verdict") or "inconclusive"
    analysis = comp.get("analysis")
    phrase = verdict_phrase(verdict, _margin_text(comp), analysis)
    text = (
        f"{head} — {_pair_text(comp)} in {_analysis_display(analysis)}: "
        f"{phrase} ({_verdict_word(verdict)})."
    )
    return text + " " + _stats_text(comp)


def _p_text(comp: Mapping[str, Any]) -> str:
    if comp.get("p_adjusted") is not None and _as_float(comp.get("p_adjusted")) is not None:
        adj = comp.get("adjust_method")
        size = _as_float(comp.get("family_size"))
        how = ", ".join(x for x in (str(adj) if adj else "", f"family of {int(size)}" if size else "") if x)
        return f"p_adj{_eq(fmt_p(comp.get('p_adjusted')))}" + (f" ({how})" if how else "")
    if _as_float(comp.get("p_value")) is not None:
        return f"p{_eq(fmt_p(comp.get('p_value')))}"
    return ""


def _stats_text(comp: Mapping[str, Any], invariant: Iterable[str] = ()) -> str:
    """Estimate with its interval, p-value and the equivalence statement of a row, ``"; "``-separated."""
    stats = [effect_text(comp, order_invariant=invariant), _p_text(comp), _equivalence_text(comp)]
    if comp.get("rule") is None and _log_factor(comp) is None and _as_float(comp.get("ratio")) is not None \
            and str(comp.get("analysis") or PRIMARY_ANALYSIS) in _DELTA_ANALYSES:
        stats.insert(1, f"ratio {fmt_ratio(comp.get('ratio'))}")  # old files: the ratio of the means
    return "; ".join(s for s in stats if s)


def _eq(value: str) -> str:
    """``" = 0.03"``, or ``" < 1e-4"`` for a bound (never ``"= < 1e-4"``)."""
    return f" {value}" if value.startswith(("<", ">")) else f" = {value}"


def headline_text(comp: Mapping[str, Any]) -> str:
    """Short plain-words verdict for a banner (the numbers follow it).

    Parameters
    ----------
    comp : mapping
        One entry of ``results["comparisons"]``.

    Returns
    -------
    str
        E.g. ``"ICL vs full-batch GD · order sensitivity · sentiment · N=4 ·
        smollm2-135m: different: the interval excludes the null value,
        equivalence not shown"``.  Plain text (to be escaped).
    """
    where = _context_label(comp.get("model"), comp.get("task"), comp.get("n_demos"))
    verdict = comp.get("verdict") or "inconclusive"
    phrase = verdict_phrase(verdict, _margin_text(comp), comp.get("analysis"))
    return f"{_pair_text(comp)} · {_analysis_display(comp.get('analysis'))} · {where}: {phrase}"


def comparison_view(i: int, comp: ComparisonRow, *, invariant: Iterable[str] = ()) -> dict[str, Any]:
    """Row ``i`` in words and numbers, for the banners, the verdict tables and the details list.

    ``invariant``: the methods whose order SD the Bayesian model of the row's
    slice fixed at 0 (a null Bayesian estimate then reads ±∞).
    """
    verdict = comp.verdict or "inconclusive"
    analysis = comp.analysis
    role = comp.role
    margin = _margin_text(comp)
    sign = _infinite_sign(comp, invariant)
    estimate = fmt_num(comp.get("estimate"))
    if sign:
        estimate = "+∞" if sign > 0 else "-∞"
    f = _log_factor(comp)
    if f is not None and not sign:
        ratio = fmt_num(_exp(comp.get("estimate"), f)) + (f" {_ratio_ci(comp)}" if _ratio_ci(comp) != _DASH else "")
    elif role == "bayesian" or _is_threshold(comp):
        ratio = _DASH
    else:
        ratio = fmt_ratio(comp.get("ratio"))  # ratio of the two means
    two_sided = comp.get("rule") == "two_sided"
    p_adj = comp.get("p_adjusted")
    return {
        "index": i,
        "anchor": f"comparison-{i}",
        "banner_anchor": f"banner-{i}",
        "key": _group_key(comp.model, comp.task, comp.n_demos),
        "analysis_key": analysis,
        "role": role,
        "primary": role == "confirmatory",
        "method_a": comp.method_a,
        "method_b": comp.method_b,
        "context": _context_label(comp.get("model"), comp.get("task"), comp.get("n_demos")),
        "pair": _pair_text(comp),
        "pair_short": _pair_text(comp, short=True),
        "analysis": _analysis_display(comp.get("analysis")) if comp.get("analysis") else _DASH,
        "scale": str(comp.get("scale") or ""),
        "estimate": estimate,
        "ci": "" if sign else fmt_ci(comp.get("ci_low"), comp.get("ci_high")),
        "ci_level": "" if sign or fmt_ci(comp.get("ci_low"), comp.get("ci_high")) == _DASH else _ci_level_text(comp),
        "ci_kind": "HDI" if role == "bayesian" else "bounds" if _is_threshold(comp) else "CI",
        "ci_method": comp.get("ci_method") or _DASH,
        "ratio": ratio,
        "eq": fmt_ci(comp.get("eq_low"), comp.get("eq_high")) if two_sided and margin is not None else _DASH,
        "eq_level": _pct(comp.get("eq_level")) if two_sided and margin is not None else "",
        "least_margin": _min_margin_text(comp),
        "p_value": fmt_p(comp.get("p_value")),
        "p_adjusted": fmt_p(p_adj) if p_adj is not None else fmt_p(comp.get("p_value")),
        "p_adjusted_is_raw": p_adj is None and _as_float(comp.get("p_value")) is not None,
        "p_equivalence": fmt_p(comp.get("p_equivalence_adjusted")),
        "p_rope": fmt_num(comp.get("p_rope")),
        "adjust_method": comp.get("adjust_method") or _DASH,
        "family": str(comp.get("family") or ""),
        "family_size": fmt_num(comp.get("family_size")),
        "test": comp.get("test") or _DASH,
        "n": fmt_num(comp.get("n")),
        "margin": margin or _DASH,
        "margin_kind": ("ROPE " if role == "bayesian" else "ρ₀ = " if _is_threshold(comp) else "") if margin else "",
        "margin_source": comp.get("margin_source") or "",
        "verdict": str(verdict),
        "verdict_word": _verdict_word(verdict),
        "verdict_class": _verdict_class(comp.get("decision") or verdict),  # a reworded view keeps decide's word
        "phrase": verdict_phrase(verdict, margin, analysis),
        "effect": effect_text(comp, order_invariant=invariant),
        "stats": _stats_text(comp, invariant),
        "banner": banner_text(comp),
        "headline": headline_text(comp),
        "summary": comp.get("summary") or "",
        "note": comp.get("note") or "",
        "detail_href": None,
        "pair_anchor": None,
        "others": "",
    }
