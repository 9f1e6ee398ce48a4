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
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from hyptest.report import figures as svg
from hyptest.stats.bayes import ESS_MIN, RHAT_MAX  # the convergence gate the diagnostics table highlights

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
    "effect_text",
    "METHOD_NAMES",
    "ANALYSIS_ORDER",
    "PRIMARY_ANALYSIS",
    "AGREEMENT_METRICS",
    "ANALYSIS_NAMES",
    "VERDICT_PHRASES",
    "DATA_FILE_DESCRIPTIONS",
    "DEFAULT_METHOD_ORDER",
    "SCATTER_MAX_POINTS",
    "order_pairs",
    "N_SWEEP_METRICS",
    "TRAJECTORY_METRICS",
    "CHECKPOINT_METRICS",
    "DAI_METRICS",
    "RANK_PLOT_VAR",
]

#: Plain-words display names of the known methods.
METHOD_NAMES: dict[str, str] = {
    "icl": "ICL",
    "gd": "full-batch GD",
    "sgd": "SGD (batch 1, in order)",
    "adam": "Adam (batch 1, in order)",
    "layer_causal_gd": "layer-causal GD (Deutch et al.; batch 1, in order)",
    "zs": "zero-shot (no demos)",
}

#: Verdict word -> plain-words phrase (``{margin}`` is filled in when known).
VERDICT_PHRASES: dict[str, str] = {
    "different": "different: the interval excludes the null value, equivalence not shown",
    "equivalent": "equivalent within the margin {margin}",
    "negligible": "different but negligible (inside the margin)",
    "inconclusive": "inconclusive: neither a difference nor equivalence shown",
    "not_estimable": "not estimable in this design: no decision",
    "did_not_converge": "did not converge: no decision",
}

#: Analysis name (``results["comparisons"][i]["analysis"]``) -> plain words.
#: Unknown analyses are shown with underscores replaced by spaces.
ANALYSIS_NAMES: dict[str, str] = {
    "order_sensitivity": "order sensitivity",
    "order_sensitivity_labels": "order sensitivity of the label distribution",
    "log_variance_ratio": "log variance ratio",
    "order_alignment": "order alignment",
    "token_overlap": "token overlap",
    "overlap_cosine": "overlap cosine",
    "label_js": "label JS divergence",
    "label_kl": "label KL divergence",
    "order_sensitivity_vocab": "order sensitivity over the vocabulary",
    "bayes_order_variance": "order variance, Bayesian",
    "bayes_order_variance_pooled": "order variance, Bayesian, pooled over slices",
}

#: Display order of the analyses inside a group of the verdict table; unknown
#: analyses come after these, in order of appearance.
ANALYSIS_ORDER: tuple[str, ...] = tuple(ANALYSIS_NAMES)

#: The analysis taken as confirmatory in results files whose rows carry no ``role``.
PRIMARY_ANALYSIS = "order_sensitivity"

#: Distribution-agreement metrics -> (display name, whether higher means more agreement).
AGREEMENT_METRICS: dict[str, tuple[str, bool]] = {
    "token_overlap": ("token overlap", True),
    "overlap_cosine": ("overlap cosine", True),
    "label_js": ("label JS divergence", False),
    "label_kl": ("label KL divergence, reference ‖ method", False),
}

_BAYES = "bayes_order_variance"

#: Roles of the comparison rows, in the order the report shows them, with their headings.
ROLES: dict[str, str] = {
    "confirmatory": "Confirmatory family",
    "exploratory": "Exploratory (secondary families, adjusted within each family)",
    "bayesian": "Bayesian (HDI + ROPE, outside the p-value families)",
}

#: Verdict phrases of analyses whose decision rule is not the two-sided one.
_ANALYSIS_PHRASES: dict[str, dict[str, str]] = {
    _BAYES: {
        "different": "HDI outside the ROPE: the order SDs differ",
        "equivalent": "HDI inside the ROPE {margin}: practically equivalent",
        "inconclusive": "HDI overlaps the ROPE: no decision",
    },
    "order_alignment": {
        "different": "upper bound of r below ρ₀ = {margin}",
        "equivalent": "lower bound of r above ρ₀ = {margin}",
        "inconclusive": "bounds of r straddle ρ₀ = {margin}",
    },
}

#: Analysis -> (estimate label, what the estimate is), for the legend under the verdict tables.
_ESTIMATE_LEGEND: dict[str, tuple[str, str]] = {
    "order_sensitivity": (
        "order sensitivity",
        "log of the ratio of the mean per-query SD of P(gold) across orders, A / B (0: equally order-sensitive); "
        "the ratio column is its exponential",
    ),
    "order_sensitivity_labels": (
        "labels", "the same for the SD of the label distribution across orders",
    ),
    "log_variance_ratio": (
        "log variance ratio",
        "mean over (demo set, query) of the log ratio of the variances of P(gold) across orders, A / B; "
        "the ratio column is the matching SD ratio, exp(estimate / 2)",
    ),
    "order_alignment": (
        "r",
        "correlation of the per-order effects of A and B under the same orders (equivalence predicts r = 1); "
        "bounds are one-sided, compared with the declared ρ₀",
    ),
    "order_sensitivity_vocab": (
        "vocabulary",
        "difference A − B of the per-token SD across orders summed over the vocabulary (Shen et al., Fig. 4), "
        "from the stored top-k; the row's note bounds the truncation error",
    ),
    **{
        m: (
            "agreement",
            "agreement of A with itself under another order minus its agreement with B under the same order",
        )
        for m in AGREEMENT_METRICS
    },
    _BAYES: (
        "Bayesian",
        "posterior mean of the log ratio of the per-query SD across orders, A / B, and its HDI; "
        "P(ROPE) is the posterior mass inside the ROPE",
    ),
}

#: Names of the multiplicity adjustments.
_ADJUST_NAMES: dict[str, str] = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "Benjamini–Hochberg"}

#: Short method names for the verdict table (the banners use :data:`METHOD_NAMES`).
SHORT_METHOD_NAMES: dict[str, str] = {"icl": "ICL", "zs": "ZS", "gd": "GD", "sgd": "SGD", "adam": "Adam",
                                      "layer_causal_gd": "LC-GD"}

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
DEFAULT_METHOD_ORDER: tuple[str, ...] = ("icl", "zs", "gd", "sgd", "adam", "layer_causal_gd")

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


def verdict_phrase(verdict: Any, margin: Any = None, analysis: Any = None) -> str:
    """Plain-words phrase for a verdict word.

    Parameters
    ----------
    verdict : str
        One of ``different``, ``equivalent``, ``negligible``,
        ``inconclusive``, ``not_estimable``, ``did_not_converge``; anything
        else is returned as given.
    margin : float or str, optional
        The margin the verdict used: a number (shown as ``±x``; for
        ``order_alignment`` the threshold ρ₀, shown as is) or a ready text
        such as ``"[1/1.25, 1.25]"``.
    analysis : str, optional
        Analysis of the row.  The Bayesian rows (HDI + ROPE) and
        ``order_alignment`` (one-sided bounds of r against ρ₀) have their own
        phrases; other analyses use :data:`VERDICT_PHRASES`.

    Returns
    -------
    str
        E.g. ``"equivalent within the margin [1/1.25, 1.25]"`` or
        ``"upper bound of r below ρ₀ = 0.9"``.
    """
    word = str(verdict).lower() if verdict is not None else "inconclusive"
    key = _BAYES if str(analysis).startswith(_BAYES) else str(analysis)
    special = _ANALYSIS_PHRASES.get(key, {}) if analysis is not None else {}
    phrase = special.get(word) or VERDICT_PHRASES.get(word)
    if phrase is None:
        return str(verdict)
    if "{margin}" not in phrase:
        return phrase
    if isinstance(margin, str) and margin:
        text = margin
    else:
        m = _as_float(margin)
        text = None if m is None else fmt_num(m) if key == "order_alignment" else f"±{fmt_num(abs(m))}"
    if text is None:
        return phrase.replace(" = {margin}", "").replace(" {margin}", "")
    return phrase.format(margin=text)


def _verdict_class(verdict: Any) -> str:
    word = str(verdict).lower() if verdict is not None else ""
    return word if word in VERDICT_PHRASES else "unknown"


def _verdict_word(verdict: Any) -> str:
    """Short display form of a verdict (``did_not_converge`` -> ``did not converge``)."""
    return str(verdict).replace("_", " ")


def analysis_display(analysis: Any) -> str:
    """Plain-words name of an analysis (``"log_variance_ratio"`` -> ``"log variance ratio"``).

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


def _role(comp: Mapping[str, Any]) -> str:
    """``confirmatory`` / ``exploratory`` / ``bayesian``: the row's own, else from its analysis (old files)."""
    role = comp.get("role")
    if role in ROLES:
        return str(role)
    analysis = str(comp.get("analysis") or PRIMARY_ANALYSIS)
    if analysis.startswith(_BAYES):
        return "bayesian"
    return "confirmatory" if analysis == PRIMARY_ANALYSIS else "exploratory"


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


def _pct(level: Any) -> str:
    """0.9833 -> ``"98.3%"``; ``""`` when missing."""
    v = _as_float(level)
    return f"{fmt_num(100 * v)}%" if v is not None else ""


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


def _analysis_rank(analysis: Any) -> int:
    a = str(analysis) if analysis is not None else PRIMARY_ANALYSIS
    return ANALYSIS_ORDER.index(a) if a in ANALYSIS_ORDER else len(ANALYSIS_ORDER)


def _comparison_view(i: int, comp: Mapping[str, Any], *, invariant: Iterable[str] = ()) -> dict[str, Any]:
    verdict = comp.get("verdict") or "inconclusive"
    analysis = str(comp.get("analysis")) if comp.get("analysis") is not None else None
    role = _role(comp)
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
        "key": _group_key(comp.get("model"), comp.get("task"), comp.get("n_demos")),
        "analysis_key": analysis,
        "role": role,
        "primary": role == "confirmatory",
        "method_a": None if comp.get("method_a") is None else str(comp.get("method_a")),
        "method_b": None if comp.get("method_b") is None else str(comp.get("method_b")),
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
                "label_key": key,
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


def _run_link(name: Any, run_dir: pathlib.Path | None) -> dict[str, Any] | None:
    """A file of the run directory as a relative link (or plain text when unsafe or missing)."""
    if name is None or not str(name).strip():
        return None
    s = str(name)
    ok = _is_relative_path(s)
    missing = bool(ok and run_dir is not None and not (run_dir / s).exists())
    return {"name": s, "href": quote(s, safe="/") if ok and not missing else None, "missing": missing}


def _hdi_and_mean(
    comp: Mapping[str, Any], diag: Mapping[str, Mapping[str, Any]], method: str
) -> tuple[float | None, float | None, float | None]:
    lo, hi, mean = (_as_float(comp.get(k)) for k in ("ci_low", "ci_high", "estimate"))
    d = diag.get(f"log_ratio[{method}]", {})
    if lo is None or hi is None:
        lo, hi = _as_float(d.get("hdi_low")), _as_float(d.get("hdi_high"))
    if mean is None:
        mean = _as_float(d.get("mean"))
    finite = [x for x in (lo, hi, mean) if x is None or math.isfinite(x)]
    if len(finite) < 3:
        return None, None, None
    return lo, hi, mean


def _diagnostics_view(rows: Any) -> list[dict[str, Any]]:
    if not isinstance(rows, Sequence) or isinstance(rows, str):
        return []
    out = []
    for r in rows:
        if not isinstance(r, Mapping):
            continue
        r_hat, bulk, tail = (_as_float(r.get(k)) for k in ("r_hat", "ess_bulk", "ess_tail"))
        bad_r = r_hat is None or not math.isfinite(r_hat) or r_hat > RHAT_MAX
        bad_b = bulk is None or not math.isfinite(bulk) or bulk < ESS_MIN
        bad_t = tail is None or not math.isfinite(tail) or tail < ESS_MIN
        level = _as_float(r.get("hdi_prob"))
        out.append(
            {
                "parameter": _scalar(r.get("parameter")),
                "mean": fmt_num(r.get("mean")),
                "sd": fmt_num(r.get("sd")),
                "hdi": fmt_ci(r.get("hdi_low"), r.get("hdi_high")),
                "hdi_level": f"{fmt_num(100 * level)}%" if level is not None else "",
                "r_hat": f"{r_hat:.3f}" if r_hat is not None and math.isfinite(r_hat) else fmt_num(r_hat),
                "ess_bulk": f"{bulk:.0f}" if bulk is not None and math.isfinite(bulk) else fmt_num(bulk),
                "ess_tail": f"{tail:.0f}" if tail is not None and math.isfinite(tail) else fmt_num(tail),
                "bad_r_hat": bad_r,
                "bad_ess_bulk": bad_b,
                "bad_ess_tail": bad_t,
                "flagged": bad_r or bad_b or bad_t,
            }
        )
    return out


def _bayes_sentence(
    comp: Mapping[str, Any] | None,
    *,
    invariant: bool,
    hdi: tuple[float | None, float | None],
    mean: float | None,
    hdi_level: str,
    rope: float | None,
    converged: bool,
) -> str:
    """One plain sentence per method of a Bayesian slice."""
    verdict = (comp or {}).get("verdict") or ("did_not_converge" if not converged else None)
    rope_txt = f" ±{fmt_num(rope)}" if rope is not None else ""
    if invariant:
        text = "order SD fixed at 0: order-invariant by construction; log ratio = +∞"
        p_rope = _as_float((comp or {}).get("p_rope"))
        if p_rope is not None:
            text += f"; P(in ROPE{rope_txt}) = {fmt_num(p_rope)}"
    else:
        bits = []
        p_rope = _as_float((comp or {}).get("p_rope"))
        if p_rope is not None:
            bits.append(f"P(in ROPE{rope_txt}) = {fmt_num(p_rope)}")
        if mean is not None:
            bits.append(f"posterior mean {fmt_num(mean)}")
        if hdi[0] is not None and hdi[1] is not None:
            bits.append(f"{hdi_level} HDI {fmt_ci(*hdi)}".strip())
        text = "; ".join(bits) if bits else "no posterior summary recorded"
    if verdict is None:
        return text + "."
    phrase = verdict_phrase(verdict, rope, _BAYES)
    if str(verdict) == "did_not_converge":
        return f"{text} → did not converge: no decision."
    return f"{text} → {_verdict_word(verdict)} ({phrase})."


def _bayes_view(
    results: Mapping[str, Any],
    comparisons: list[dict[str, Any]],
    methods_order: list[str],
    colors: dict[str, str],
    run_dir: pathlib.Path | None,
) -> dict[str, Any]:
    """The hierarchical-Bayes section: one entry per (model, task, N) slice."""
    slices = _rows(results, "bayes")
    study = results.get("study") if isinstance(results.get("study"), Mapping) else {}
    analysis = study.get("analysis") if isinstance(study.get("analysis"), Mapping) else {}
    rows = [c for c in comparisons if str(c.get("analysis")) == _BAYES]
    rope_default = _as_float(analysis.get("rope"))
    hdi_default = _as_float(analysis.get("hdi_prob"))
    for c in rows:
        rope_default = rope_default if rope_default is not None else _as_float(c.get("rope"))
        hdi_default = hdi_default if hdi_default is not None else _as_float(c.get("ci_level"))
    out = []
    for j, sl in enumerate(sorted(slices, key=lambda r: _sort_key(
            _group_key(r.get("model"), r.get("task"), r.get("n_demos"))))):
        key = _group_key(sl.get("model"), sl.get("task"), sl.get("n_demos"))
        label = _context_label(key[0] or None, key[1] or None, key[2])
        mine = [c for c in rows if _group_key(c.get("model"), c.get("task"), c.get("n_demos")) == key]
        invariant_raw = sl.get("order_invariant")
        invariant = (
            [str(m) for m in invariant_raw]
            if isinstance(invariant_raw, Sequence) and not isinstance(invariant_raw, str)
            else []
        )
        posteriors = sl.get("posteriors") if isinstance(sl.get("posteriors"), Mapping) else {}
        diag_rows = sl.get("diagnostics") if isinstance(sl.get("diagnostics"), Sequence) else []
        diag = {str(d.get("parameter")): d for d in diag_rows if isinstance(d, Mapping)}
        converged = bool(sl.get("converged")) if sl.get("converged") is not None else True
        reference = next((str(c.get("method_a")) for c in mine if c.get("method_a") is not None),
                         str(analysis.get("reference") or "icl"))
        methods = list(dict.fromkeys(
            [str(c.get("method_b")) for c in mine if c.get("method_b") is not None]
            + [str(m) for m in posteriors] + invariant
        ))
        methods.sort(key=lambda m: methods_order.index(m) if m in methods_order else len(methods_order))
        by_method = {str(c.get("method_b")): c for c in mine}
        rope = next((_as_float(c.get("rope")) for c in mine if _as_float(c.get("rope")) is not None),
                    rope_default)
        level = next((_as_float(c.get("ci_level")) for c in mine if _as_float(c.get("ci_level")) is not None),
                     None)
        if level is None:
            level = next((_as_float(d.get("hdi_prob")) for d in diag.values()
                          if _as_float(d.get("hdi_prob")) is not None), hdi_default)
        hdi_level = f"{fmt_num(100 * level)}%" if level is not None else ""
        ref_name = SHORT_METHOD_NAMES.get(reference.lower(), reference)
        method_views = []
        for m in methods:
            comp = by_method.get(m)
            is_inv = m in invariant
            lo, hi, mean = _hdi_and_mean(comp or {}, diag, m) if not is_inv else (None, None, None)
            name = SHORT_METHOD_NAMES.get(m.lower(), m)
            post = posteriors.get(m) if isinstance(posteriors.get(m), Mapping) else None
            figure = None
            if post is not None and not is_inv:
                figure = Markup(
                    svg.posterior_plot(
                        post.get("counts") or [],
                        post.get("edges") or [],
                        title=f"{ref_name} vs {name}",
                        hdi=(lo, hi) if lo is not None and hi is not None else None,
                        hdi_prob=level,
                        rope=rope,
                        mean=mean,
                        color=colors.get(m, "#444444"),
                        x_label=f"log(SD {ref_name} / SD {name}), per-query SD across orders",
                    )
                )
            verdict = (comp or {}).get("verdict") or ("did_not_converge" if not converged else "")
            method_views.append(
                {
                    "method": m,
                    "name": method_display(m),
                    "color": colors.get(m, "#444444"),
                    "invariant": is_inv,
                    "figure": figure,
                    "sentence": _bayes_sentence(
                        comp, invariant=is_inv, hdi=(lo, hi),
                        mean=mean, hdi_level=hdi_level, rope=rope, converged=converged,
                    ),
                    "verdict": str(verdict),
                    "verdict_word": _verdict_word(verdict) if verdict else "",
                    "verdict_class": _verdict_class(verdict),
                    "note": str((comp or {}).get("note") or ""),
                    "comparison_anchor": (
                        f"comparison-{comparisons.index(comp)}" if comp is not None else None
                    ),
                }
            )
        wall = _as_float(sl.get("wall_time_s"))
        dv = _diagnostics_view(diag_rows)
        out.append(
            {
                "anchor": f"bayes-{j}",
                "key": key,
                "label": label,
                "converged": converged,
                "reason": str(sl.get("reason") or "").strip(),
                "sampler": _scalar(sl.get("sampler")) if sl.get("sampler") is not None else "",
                "wall_time": _seconds(wall) if wall is not None else "",
                "file": _run_link(sl.get("file"), run_dir),
                "reference": method_display(reference),
                "ref_short": ref_name,
                "methods": method_views,
                "invariant_names": ", ".join(method_display(m) for m in invariant),
                "diagnostics": dv,
                "n_flagged": sum(d["flagged"] for d in dv),
                "hdi_level": hdi_level,
                "rope": fmt_num(rope) if rope is not None else "",
                "rank": _rank_view(sl, run_dir, colors, label),
            }
        )
    return {
        "slices": out,
        "rope": fmt_num(rope_default) if rope_default is not None else "",
        "rope_is_log125": rope_default is not None and abs(rope_default - math.log(1.25)) < 1e-9,
        "hdi_level": f"{fmt_num(100 * hdi_default)}%" if hdi_default is not None else "94%",
        "rhat_max": fmt_num(RHAT_MAX),
        "ess_min": fmt_num(ESS_MIN),
        "has_rows": bool(rows),
    }


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


# --------------------------------------------------------------------------- #
# Further analyses: N sweep, trajectories, checkpoints, vocabulary-level order
# sensitivity, Dai et al. metrics by layer, weight sparsity, rank plots
# --------------------------------------------------------------------------- #
#: ``results["n_sweep"]`` metric -> (display name, y axis label with units).
N_SWEEP_METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "accuracy (share correct, 0–1)"),
    "order_sd": ("order sensitivity", "mean std of P(gold) across orders"),
    "token_overlap": ("token overlap", "share of top-k tokens shared (0–1)"),
    "overlap_cosine": ("overlap cosine", "cosine on shared top-k (−1–1)"),
    "label_js": ("label JS divergence", "JS divergence (nats)"),
    "label_kl": ("label KL divergence", "KL(ICL ‖ method) (nats)"),
}

#: ``results["trajectories"]`` metric -> (display name, y axis label with units).
TRAJECTORY_METRICS: dict[str, tuple[str, str]] = {
    "label_js_to_icl": ("label JS divergence to ICL", "JS divergence (nats)"),
    "token_overlap_to_icl": ("token overlap with ICL", "share of top-k tokens shared (0–1)"),
    "p_gold": ("P(gold)", "probability of the gold label (0–1)"),
    "accuracy": ("accuracy", "accuracy (share correct, 0–1)"),
}

#: ``results["checkpoints"]`` metric -> (display name, y axis label with units).
CHECKPOINT_METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "accuracy (share correct, 0–1)"),
    "order_sd": ("order sensitivity", "mean std of P(gold) across orders"),
}

#: Dai et al. (2023) analyses -> (display name, y axis label); Rec2FTP has no layer.
DAI_METRICS: dict[str, tuple[str, str]] = {
    "simaou": ("SimAOU", "cosine similarity of attention-output updates"),
    "simam": ("SimAM", "cosine similarity of attention maps"),
    "kendall": ("Kendall", "Kendall's τ of attention weights"),
    "kendall_demo_token": ("Kendall (demo tokens)", "Kendall's τ of attention to demo tokens"),
    "kendall_demo_example": ("Kendall (demo examples)", "Kendall's τ of attention to demos"),
    "rec2ftp": ("Rec2FTP", "P(ICL right | ZS wrong, FT right)"),
}


def _metric_names(table: Mapping[str, tuple[str, str]], metric: str) -> tuple[str, str]:
    """(display name, y label) of a metric; unknown metrics read as their name."""
    if metric in table:
        return table[metric]
    name = metric.replace("_", " ")
    return name, name


def _ordered_metrics(table: Mapping[str, Any], present: Iterable[str]) -> list[str]:
    present = list(dict.fromkeys(present))
    return [m for m in table if m in present] + [m for m in present if m not in table]


def _ordered_methods(present: Iterable[str], methods_order: Sequence[str], reference: str | None = None) -> list[str]:
    """Methods in the report's order, the reference first, grid members after their family."""
    present = list(dict.fromkeys(str(m) for m in present))

    def rank(m: str) -> tuple:
        fam = svg.method_family(m)
        i = methods_order.index(m) if m in methods_order else (
            methods_order.index(fam) if fam in methods_order else len(methods_order))
        return (0 if m == reference else 1, i, fam, 0 if m == fam else 1, present.index(m))

    return sorted(present, key=rank)


def _short_method(m: str) -> str:
    return SHORT_METHOD_NAMES.get(str(m).lower(), str(m))


def _est_ci(r: Mapping[str, Any], est: str = "estimate") -> str:
    """``"0.81 [0.78, 0.84]"``, or only the estimate when there is no interval."""
    ci = fmt_ci(r.get("ci_low"), r.get("ci_high"))
    return fmt_num(r.get(est)) + ("" if ci == _DASH else f" {ci}")


def _point(x: Any, r: Mapping[str, Any], est: str = "estimate", *, marked: bool = False) -> svg.SeriesPoint:
    return svg.SeriesPoint(x=x, y=_as_float(r.get(est)), lo=_as_float(r.get("ci_low")),
                           hi=_as_float(r.get("ci_high")), marked=marked)


def _num_sort(values: Iterable[Any]) -> list[Any]:
    """Distinct values, numbers first in increasing order, then the rest as text."""
    vals = list(dict.fromkeys(_n_demos_key(v) for v in values))
    return sorted(vals, key=lambda v: (0, v) if isinstance(v, (int, float)) else (1, str(v)))


def _n_sweep_view(
    results: Mapping[str, Any], methods_order: list[str], colors: dict[str, str], reference: str
) -> dict[str, Any] | None:
    """Figures and tables of ``results["n_sweep"]``, one per (model, task); None without rows.

    Reads ``model``, ``task``, ``method``, ``n_demos``, ``metric``,
    ``estimate``, ``ci_low`` and ``ci_high`` of each row.
    """
    rows = [r for r in _rows(results, "n_sweep") if r.get("metric") is not None and r.get("method") is not None]
    if not rows:
        return None
    ref = _short_method(reference)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((_scalar(r.get("model")), _scalar(r.get("task"))), []).append(r)
    out = []
    for gi, (key, grp) in enumerate(sorted(groups.items())):
        ns = _num_sort(r.get("n_demos") for r in grp)
        cats = [fmt_num(n) for n in ns]
        metrics = _ordered_metrics(N_SWEEP_METRICS, (str(r["metric"]) for r in grp))
        methods = _ordered_methods((str(r["method"]) for r in grp), methods_order, reference)
        cols = svg.family_colors(methods, colors)
        panels, table = [], []
        for metric in metrics:
            name, y_label = _metric_names(N_SWEEP_METRICS, metric)
            mine = [r for r in grp if str(r["metric"]) == metric]
            series: dict[str, list[svg.SeriesPoint]] = {}
            for r in mine:
                series.setdefault(str(r["method"]), []).append(_point(fmt_num(_n_demos_key(r.get("n_demos"))), r))
            agreement = metric in AGREEMENT_METRICS
            note = f"{ref}: vs {ref}, another order · others: vs {ref}, same order" if agreement else ""
            panels.append(svg.Panel(title=name, y_label=y_label, series=series, note=note))
            for m in methods:
                cells = {fmt_num(_n_demos_key(r.get("n_demos"))): _est_ci(r) for r in mine if str(r["method"]) == m}
                if not cells:
                    continue
                label = method_display(m)
                if agreement:
                    label = (f"{ref} vs {ref} (another order)" if m == reference
                             else f"{_short_method(m)} vs {ref} (same order)")
                table.append({"metric": name, "method": m, "label": label, "color": cols.get(m, "#444444"),
                              "cells": [cells.get(c, _DASH) for c in cats]})
        title = f"N sweep — {key[1]} · {key[0]}"
        figure = svg.line_panels(
            panels, title=title, x_label="N (demonstrations per prompt)", categories=cats,
            interval="whiskers", series_order=methods,
            series_labels={m: method_display(m) for m in methods}, colors=cols, panel_width=340,
        )
        out.append({"anchor": f"n-sweep-{gi}", "label": f"{key[1]} · {key[0]}", "figure": Markup(figure),
                    "ns": cats, "table": table})
    return {"groups": out, "reference": method_display(reference), "ref_short": ref}


def _reference_value(
    traj: list[dict[str, Any]], results: Mapping[str, Any], key: tuple[str, str, Any], metric: str, reference: str
) -> float | None:
    """The reference's (ICL's) value of ``metric`` for a trajectory group.

    Taken from the group's rows of the reference method (the last step), else
    from ``results["accuracy"]`` (``accuracy`` or ``mean_p_gold``).
    """
    own = [r for r in traj if str(r.get("method")) == reference and str(r.get("metric")) == metric
           and _as_float(r.get("estimate")) is not None]
    if own:
        last = max(own, key=lambda r: _as_float(r.get("step")) or 0.0)
        return _as_float(last.get("estimate"))
    column = {"accuracy": "accuracy", "p_gold": "mean_p_gold"}.get(metric)
    if column is None:
        return None
    for r in _rows(results, "accuracy"):
        if (str(r.get("method")) == reference
                and _group_key(r.get("model"), r.get("task"), r.get("n_demos")) == key):
            return _as_float(r.get(column))
    return None


def _trajectories_view(
    results: Mapping[str, Any], methods_order: list[str], colors: dict[str, str], reference: str
) -> dict[str, Any] | None:
    """Figures per (model, task, N) of ``results["trajectories"]`` and the ``closest_to_icl`` table.

    Reads ``model``, ``task``, ``n_demos``, ``method``, ``step``, ``metric``,
    ``estimate``, ``ci_low`` and ``ci_high`` of ``trajectories`` rows, and
    ``model``, ``task``, ``n_demos``, ``family``, ``method``, ``step``,
    ``label_js_to_icl``, ``ci_low`` and ``ci_high`` of ``closest_to_icl``
    rows; None when both are missing.
    """
    traj = [r for r in _rows(results, "trajectories") if r.get("metric") is not None and r.get("method") is not None]
    closest = _rows(results, "closest_to_icl")
    if not traj and not closest:
        return None
    ref = _short_method(reference)
    groups: dict[tuple[str, str, Any], list[dict[str, Any]]] = {}
    for r in traj:
        groups.setdefault(_group_key(r.get("model"), r.get("task"), r.get("n_demos")), []).append(r)
    out = []
    for gi, key in enumerate(sorted(groups, key=_sort_key)):
        grp = groups[key]
        label = _context_label(key[0] or None, key[1] or None, key[2])
        metrics = _ordered_metrics(TRAJECTORY_METRICS, (str(r["metric"]) for r in grp))
        methods = _ordered_methods((str(r["method"]) for r in grp if str(r["method"]) != reference), methods_order)
        cols = svg.family_colors(methods, colors)
        panels, table = [], []
        for metric in metrics:
            name, y_label = _metric_names(TRAJECTORY_METRICS, metric)
            mine = [r for r in grp if str(r["metric"]) == metric and str(r["method"]) != reference]
            series: dict[str, list[svg.SeriesPoint]] = {}
            for r in mine:
                if _as_float(r.get("step")) is not None:
                    series.setdefault(str(r["method"]), []).append(_point(_as_float(r.get("step")), r))
            hlines = []
            if metric in ("p_gold", "accuracy"):
                v = _reference_value(grp, results, key, metric, reference)
                if v is not None:
                    hlines.append((v, f"{ref} (no training)"))
            panels.append(svg.Panel(title=name, y_label=y_label, series=series, hlines=hlines))
            for m in methods:
                pts = sorted((r for r in mine if str(r["method"]) == m and _as_float(r.get("step")) is not None),
                             key=lambda r: _as_float(r.get("step")))
                if not pts:
                    continue
                first, last = pts[0], pts[-1]
                table.append({"metric": name, "method": m, "color": cols.get(m, "#444444"),
                              "first_step": fmt_num(_n_demos_key(first.get("step"))), "first": _est_ci(first),
                              "last_step": fmt_num(_n_demos_key(last.get("step"))), "last": _est_ci(last),
                              "reference": fmt_num(hlines[0][0]) if hlines else ""})
        figure = svg.line_panels(
            panels, title=f"Training trajectories — {label}", x_label="optimisation step (0 = before training)",
            interval="band", series_order=methods, series_labels={m: method_display(m) for m in methods},
            colors=cols, max_columns=2, panel_width=380,
        )
        out.append({"anchor": f"trajectory-{gi}", "label": label, "figure": Markup(figure), "table": table})
    closest_rows = []
    for r in sorted(closest, key=lambda r: (*_sort_key(_group_key(r.get("model"), r.get("task"), r.get("n_demos"))),
                                           str(r.get("family")))):
        closest_rows.append({
            "context": _context_label(r.get("model"), r.get("task"), r.get("n_demos")),
            "family": _scalar(r.get("family")), "method": method_display(r.get("method")),
            "step": fmt_num(_n_demos_key(r.get("step"))),
            "value": _est_ci(r, "label_js_to_icl"),
        })
    return {"groups": out, "closest": closest_rows, "reference": method_display(reference), "ref_short": ref}


def _checkpoints_view(
    results: Mapping[str, Any], methods_order: list[str], colors: dict[str, str]
) -> dict[str, Any] | None:
    """One figure per base model (``group``) of ``results["checkpoints"]``; None without rows.

    Reads ``group``, ``checkpoint``, ``model``, ``task``, ``n_demos``,
    ``method``, ``metric``, ``estimate``, ``ci_low`` and ``ci_high``.  The
    checkpoints keep the order in which they are listed.
    """
    rows = [r for r in _rows(results, "checkpoints")
            if r.get("checkpoint") is not None and r.get("metric") is not None and r.get("method") is not None]
    if not rows:
        return None
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_scalar(r.get("group")), []).append(r)
    out = []
    for gi, (group, grp) in enumerate(groups.items()):
        cats = list(dict.fromkeys(_scalar(r.get("checkpoint")) for r in grp))
        models = {c: _scalar(r.get("model")) for r in grp for c in [_scalar(r.get("checkpoint"))]}
        methods = _ordered_methods((str(r["method"]) for r in grp), methods_order)
        cols = svg.family_colors(methods, colors)
        slices = list(dict.fromkeys((_scalar(r.get("task")), _n_demos_key(r.get("n_demos"))) for r in grp))
        metrics = _ordered_metrics(CHECKPOINT_METRICS, (str(r["metric"]) for r in grp))
        panels, table = [], []
        for task, n in slices:
            for metric in metrics:
                mine = [r for r in grp if str(r["metric"]) == metric and _scalar(r.get("task")) == task
                        and _n_demos_key(r.get("n_demos")) == n]
                if not mine:
                    continue
                name, y_label = _metric_names(CHECKPOINT_METRICS, metric)
                series: dict[str, list[svg.SeriesPoint]] = {}
                for r in mine:
                    series.setdefault(str(r["method"]), []).append(_point(_scalar(r.get("checkpoint")), r))
                where = f"{task} · N={fmt_num(n)}"
                panels.append(svg.Panel(title=f"{name} · {where}", y_label=y_label, series=series))
                for m in methods:
                    cells = {_scalar(r.get("checkpoint")): _est_ci(r) for r in mine if str(r["method"]) == m}
                    if cells:
                        table.append({"where": where, "metric": name, "method": method_display(m),
                                      "color": cols.get(m, "#444444"), "cells": [cells.get(c, _DASH) for c in cats]})
        figure = svg.line_panels(
            panels, title=f"Checkpoints of {group}", x_label="checkpoint (in listed order)", categories=cats,
            interval="whiskers", series_order=methods, series_labels={m: method_display(m) for m in methods},
            colors=cols, max_columns=2, panel_width=max(340, 70 + 60 * len(cats)),
        )
        out.append({"anchor": f"checkpoints-{gi}", "group": group, "figure": Markup(figure),
                    "checkpoints": [{"label": c, "model": models.get(c, _DASH)} for c in cats], "table": table})
    return {"groups": out}


def _vocab_view(results: Mapping[str, Any], methods_order: list[str], colors: dict[str, str]) -> dict[str, Any] | None:
    """Bar chart and table of ``results["vocab_order_sensitivity"]``; None without rows.

    Reads ``model``, ``task``, ``n_demos``, ``method``, ``estimate``,
    ``ci_low``, ``ci_high`` and ``bound``.
    """
    rows = [r for r in _rows(results, "vocab_order_sensitivity") if r.get("method") is not None]
    if not rows:
        return None
    keys = sorted({_group_key(r.get("model"), r.get("task"), r.get("n_demos")) for r in rows}, key=_sort_key)
    methods = _ordered_methods((str(r["method"]) for r in rows), methods_order)
    cols = svg.family_colors(methods, colors)
    glabels = {k: _context_label(k[0] or None, k[1] or None, k[2]) for k in keys}
    values = {}
    for r in rows:
        v = _as_float(r.get("estimate"))
        if v is not None:
            values[(glabels[_group_key(r.get("model"), r.get("task"), r.get("n_demos"))], str(r["method"]))] = v
    figure = svg.grouped_bar_chart(
        [glabels[k] for k in keys], methods, values,
        title="Order sensitivity over the vocabulary",
        y_label="Σ over tokens of std across orders",
        series_labels={m: method_display(m) for m in methods}, colors=cols,
        width=max(420, 80 + len(keys) * (len(methods) * 30 + 26)),
    )
    table = []
    for r in sorted(rows, key=lambda r: (*_sort_key(_group_key(r.get("model"), r.get("task"), r.get("n_demos"))),
                                        methods.index(str(r["method"])))):
        table.append({"context": _context_label(r.get("model"), r.get("task"), r.get("n_demos")),
                      "method": method_display(r.get("method")), "color": cols.get(str(r["method"]), "#444444"),
                      "estimate": fmt_num(r.get("estimate")), "ci": fmt_ci(r.get("ci_low"), r.get("ci_high")),
                      "bound": fmt_num(r.get("bound"))})
    return {"figure": Markup(figure), "table": table}


def _dai_metric(row: Mapping[str, Any]) -> str | None:
    """The Dai analysis of a row: its key, or the key whose display name starts the (reworded) analysis."""
    a = str(row.get("analysis") or "")
    if a.lower() in DAI_METRICS:
        return a.lower()
    for k, (name, _) in sorted(DAI_METRICS.items(), key=lambda item: -len(item[1][0])):  # longest name first
        if a.startswith(name + " ") or a == name:
            return k
    return None


def _differs(verdict: Any) -> bool:
    """True for a verdict that says the metric differs from its baseline (either side)."""
    return str(verdict or "").strip().lower().startswith(("differ", "above", "below"))


def _side_of(low: Any, high: Any, null: float | None) -> str | None:
    """"greater" / "less" when the interval [low, high] lies entirely above / below `null`."""
    lo, hi = _as_float(low), _as_float(high)
    if null is None:
        return None
    if lo is not None and lo > null:
        return "greater"
    if hi is not None and hi < null:
        return "less"
    return None


def _dai_side(r: Mapping[str, Any]) -> str | None:
    """The side of its baseline a significant Dai row lies on (None when not significant).

    Read from the row as it came, before :func:`_dai_rows` shifts it: a row
    decided on metric − baseline (``rule`` two_sided with both means, or a
    ``hyptest reanalyse`` view with ``difference``) is above when its interval
    lies above 0; an older row that holds the metric's own interval is above
    when that interval lies above the baseline.
    """
    if not _differs(r.get("verdict")):
        return None
    if "difference" in r:
        side = _side_of(r.get("difference_ci_low"), r.get("difference_ci_high"), 0.0)
        diff = _as_float(r.get("difference"))
    elif r.get("rule") == "two_sided" and r.get("mean_a") is not None and r.get("mean_b") is not None:
        side = _side_of(r.get("ci_low"), r.get("ci_high"), _as_float(r.get("null_value")) or 0.0)
        diff = _as_float(r.get("estimate"))
    else:
        base = _as_float(r.get("baseline"))
        side = _side_of(r.get("ci_low"), r.get("ci_high"), base)
        est = _as_float(r.get("estimate"))
        diff = None if est is None or base is None else est - base
    if side is None and diff is not None and diff != 0:  # no usable interval: the estimate's side
        side = "greater" if diff > 0 else "less"
    return side


#: How the Dai table words a significant row, by side (the similarity claim needs "above").
_DAI_SIDE_WORDS = {"greater": "above its baseline", "less": "below its baseline"}


def _dai_rows(results: Mapping[str, Any], comparisons: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """Dai rows in one shape, and whether they were read from a ``hyptest reanalyse`` view.

    ``results["dai"]["comparisons"]`` is used as given.  Otherwise the
    comparison rows that carry a ``layer`` key and a Dai analysis are used;
    rows reworded by ``hyptest reanalyse`` (``estimate`` = the difference
    from the baseline, ``difference`` kept) are turned back into the metric:
    estimate = baseline + difference, and the interval is the difference's
    CI shifted by the baseline.
    """
    dai = results.get("dai") if isinstance(results.get("dai"), Mapping) else None
    shifted = False
    if dai is not None and _rows(dai, "comparisons"):
        rows = []
        for r in _rows(dai, "comparisons"):
            metric = _dai_metric(r)
            if metric is None:
                continue
            r = {**r, "_metric": metric, "_side": _dai_side(r)}
            base, value = _as_float(r.get("mean_b")), _as_float(r.get("mean_a"))
            if r.get("rule") == "two_sided" and base is not None and value is not None:
                # decided on metric − baseline: draw the metric, its interval shifted by the baseline
                lo, hi = _as_float(r.get("ci_low")), _as_float(r.get("ci_high"))
                r.update(estimate=value, ci_low=None if lo is None else base + lo,
                         ci_high=None if hi is None else base + hi)
                shifted = True
            rows.append(r)
        return rows, shifted
    rows = []
    for c in comparisons:
        if "layer" not in c or "baseline" not in c:
            continue
        metric = _dai_metric(c)
        if metric is None:
            continue
        r = dict(c, _metric=metric, _side=_dai_side(c))
        if "difference" in c and str(c.get("analysis") or "").lower() not in DAI_METRICS:
            base = _as_float(c.get("baseline"))
            diff = _as_float(c.get("difference"))
            lo, hi = _as_float(c.get("difference_ci_low")), _as_float(c.get("difference_ci_high"))
            r["estimate"] = None if base is None or diff is None else base + diff
            r["ci_low"] = None if base is None or lo is None else base + lo
            r["ci_high"] = None if base is None or hi is None else base + hi
            shifted = True
        rows.append(r)
    return rows, shifted


def _dai_view(results: Mapping[str, Any], comparisons: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Dai et al. metrics by layer per (model, task), the layer-averaged table and correctness.

    Reads ``model``, ``task``, ``analysis``, ``layer``, ``estimate``,
    ``ci_low``, ``ci_high``, ``baseline``, ``baseline_name``, ``p_value``,
    ``p_adj`` (or ``p_adjusted``) and ``verdict`` of
    ``results["dai"]["comparisons"]`` (else of the comparison rows with a
    ``layer``), and ``model``, ``task``, ``zs_correct``, ``ft_correct``,
    ``icl_correct`` of ``results["dai"]["correctness"]`` (else
    ``results["correctness"]``).  None without Dai rows.
    """
    rows, shifted = _dai_rows(results, comparisons)
    dai = results.get("dai") if isinstance(results.get("dai"), Mapping) else {}
    correctness = _rows(dai, "correctness") or _rows(results, "correctness")
    if not rows and not correctness:
        return None
    color = "#0072B2"
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((_scalar(r.get("model")), _scalar(r.get("task"))), []).append(r)
    out = []
    for gi, (key, grp) in enumerate(sorted(groups.items())):
        panels = []
        counts = []
        for metric in (m for m in DAI_METRICS if m != "rec2ftp"):
            by_layer = [r for r in grp if r["_metric"] == metric and _as_float(r.get("layer")) is not None]
            if not by_layer:
                continue
            name, y_label = DAI_METRICS[metric]
            # marked: the layers whose metric lies significantly above its baseline, the side the claim needs
            pts = [_point(_as_float(r.get("layer")), r, marked=r.get("_side") == "greater") for r in by_layer]
            baseline_name = next((str(r.get("baseline_name")) for r in by_layer if r.get("baseline_name")), "baseline")
            base = [(_as_float(r.get("layer")), _as_float(r.get("baseline"))) for r in by_layer]
            panels.append(svg.Panel(title=name, y_label=y_label, series={name: pts},
                                    ref_lines=({f"baseline: {baseline_name}": base}
                                               if any(b is not None for _, b in base) else {}),
                                    note=f"dashed: {baseline_name}"))
            diff_layers = sorted(int(_as_float(r.get("layer"))) for r in by_layer if _differs(r.get("verdict")))
            above = sorted(int(_as_float(r.get("layer"))) for r in by_layer if r.get("_side") == "greater")
            below = sorted(int(_as_float(r.get("layer"))) for r in by_layer if r.get("_side") == "less")
            counts.append({"metric": name, "n": len(by_layer), "k": len(diff_layers),
                           "layers": ", ".join(str(x) for x in diff_layers) or "none",
                           "n_above": len(above), "above": ", ".join(map(str, above)) or "none",
                           "n_below": len(below), "below": ", ".join(map(str, below)) or "none"})
        figure = None
        if panels:
            figure = Markup(svg.line_panels(
                panels, title=f"Dai et al. metrics by layer — {key[1]} · {key[0]}", x_label="layer (0-based)",
                interval="band", colors={p.title: color for p in panels},
                series_labels={p.title: f"{p.title} (estimate)" for p in panels},
                marker_label="above its baseline (adjusted p < α): supports ICL–FT similarity",
                interval_label="CI of the difference, around the estimate" if shifted else "95% CI",
            ))
        table = []
        for r in sorted((r for r in grp if _as_float(r.get("layer")) is None),
                        key=lambda r: list(DAI_METRICS).index(r["_metric"])):
            p_adj = r.get("p_adj") if r.get("p_adj") is not None else r.get("p_adjusted")
            verdict = r.get("verdict") or "inconclusive"
            if r.get("_side") in _DAI_SIDE_WORDS and str(verdict).lower() == "different":  # decide's word: say the side
                verdict = _DAI_SIDE_WORDS[r["_side"]]
            table.append({
                "metric": DAI_METRICS[r["_metric"]][0],
                "where": "examples ZS got wrong" if r["_metric"] == "rec2ftp" else "averaged over layers",
                "estimate": _est_ci(r), "baseline": fmt_num(r.get("baseline")),
                "baseline_name": _scalar(r.get("baseline_name")) if r.get("baseline_name") is not None else _DASH,
                "p_value": fmt_p(r.get("p_value")), "p_adj": fmt_p(p_adj),
                "verdict": _verdict_word(verdict), "differs": _differs(verdict),
                "supports": r.get("_side") == "greater",
            })
        out.append({"anchor": f"dai-{gi}", "label": f"{key[1]} · {key[0]}", "figure": figure,
                    "table": table, "layer_counts": counts})
    corr = [{"model": _scalar(r.get("model")), "task": _scalar(r.get("task")),
             "zs": fmt_num(r.get("zs_correct")), "ft": fmt_num(r.get("ft_correct")),
             "icl": fmt_num(r.get("icl_correct"))}
            for r in sorted(correctness, key=lambda r: (_scalar(r.get("model")), _scalar(r.get("task"))))]
    return {"groups": out, "correctness": corr, "shifted": shifted}


#: Colours of the untrained-control figure: the trained model and its untrained control.
_UNTRAINED_COLORS = {"trained": "#0072B2", "untrained": "#999999"}


def _untrained_view(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """Dai metrics of each trained model against its untrained control (Deutch et al. 2024); None without one.

    Reads ``results["dai"]``: ``untrained_statements`` (one sentence per
    metric), ``vs_untrained`` (rows of :func:`hyptest.analysis.untrained_control.dai_vs_untrained`;
    the layer-averaged ones and Rec2FTP form the table, the per-layer ones
    mark the figure) and ``untrained_layers`` (per layer: the trained mean and
    the controls' seed means, min and max), and ``controls``.
    """
    dai = results.get("dai") if isinstance(results.get("dai"), Mapping) else {}
    rows = _rows(dai, "vs_untrained")
    layers = _rows(dai, "untrained_layers")
    statements = _rows(dai, "untrained_statements")
    if not rows and not statements:
        return None
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (_scalar(r.get("model")), _scalar(r.get("task")))
        groups.setdefault(key, {"rows": [], "layers": [], "statements": []})["rows"].append(r)
    for r in layers:
        key = (_scalar(r.get("model")), _scalar(r.get("task")))
        groups.setdefault(key, {"rows": [], "layers": [], "statements": []})["layers"].append(r)
    for r in statements:
        key = (_scalar(r.get("model")), _scalar(r.get("task")))
        groups.setdefault(key, {"rows": [], "layers": [], "statements": []})["statements"].append(r)
    out = []
    for gi, (key, g) in enumerate(sorted(groups.items())):
        panels = []
        for metric in (m for m in DAI_METRICS if m != "rec2ftp"):
            per_layer = sorted((r for r in g["layers"] if r.get("analysis") == metric),
                               key=lambda r: _as_float(r.get("layer")) or 0.0)
            if not per_layer:
                continue
            higher = {int(_as_float(r.get("layer"))) for r in g["rows"] if r.get("analysis") == metric
                      and _as_float(r.get("layer")) is not None and r.get("direction") == "trained higher"}
            trained = [svg.SeriesPoint(x=_as_float(r.get("layer")), y=_as_float(r.get("trained")),
                                       marked=int(_as_float(r.get("layer"))) in higher) for r in per_layer]
            untrained = [svg.SeriesPoint(x=_as_float(r.get("layer")), y=_as_float(r.get("untrained")),
                                         lo=_as_float(r.get("untrained_min")), hi=_as_float(r.get("untrained_max")))
                         for r in per_layer]
            name, y_label = DAI_METRICS[metric]
            seeds = int(_as_float(per_layer[0].get("n_seeds")) or 0)
            panels.append(svg.Panel(title=name, y_label=y_label,
                                    series={"trained": trained, "untrained": untrained},
                                    note=f"{len(higher)} of {len(per_layer)} layers: trained higher"
                                    + (f" · {seeds} seeds" if seeds else "")))
        figure = None
        if panels:
            figure = Markup(svg.line_panels(
                panels, title=f"Trained vs untrained control by layer — {key[1]} · {key[0]}",
                x_label="layer (0-based)", interval="band", colors=_UNTRAINED_COLORS,
                series_labels={"trained": f"{key[0]} (trained)",
                               "untrained": "untrained control: mean of the seeds (band: min–max of the seed means)"},
                marker_label="trained significantly higher than untrained (per-layer family, adjusted p < α)",
                interval_label="min–max over control seeds"))
        table = []
        order = list(DAI_METRICS)
        for r in sorted((r for r in g["rows"] if _as_float(r.get("layer")) is None),
                        key=lambda r: order.index(str(r.get("analysis"))) if r.get("analysis") in order else 99):
            metric = str(r.get("analysis"))
            seed_means = r.get("seed_means") if isinstance(r.get("seed_means"), list) else []
            seeds = r.get("seeds") if isinstance(r.get("seeds"), list) else []
            verdict = r.get("verdict") or "inconclusive"
            word = _verdict_word(verdict)
            if verdict == "different" and r.get("direction"):
                word = f"{word}: {r.get('direction')}"
            table.append({
                "metric": DAI_METRICS.get(metric, (metric, ""))[0],
                "where": "examples ZS got wrong, FT right" if metric == "rec2ftp" else "averaged over layers",
                "trained": fmt_num(r.get("mean_a")), "untrained": fmt_num(r.get("mean_b")),
                "seeds": ", ".join(f"s{s}: {fmt_num(m)}" for s, m in zip(seeds, seed_means)) or _DASH,
                "difference": _est_ci(r), "margin": fmt_num(r.get("margin")) if r.get("margin") is not None else _DASH,
                "p_adj": fmt_p(r.get("p_adjusted")), "verdict": word,
                "tells_apart": r.get("direction") == "trained higher",
            })
        resampling = next((str(r.get("resampling")) for r in g["rows"] if r.get("resampling") not in (None, "none")),
                          "")
        out.append({"anchor": f"untrained-{gi}", "label": f"{key[1]} · {key[0]}", "figure": figure, "table": table,
                    "statements": [{"text": str(s.get("text")), "tells_apart": s.get("tells_apart")}
                                   for s in g["statements"]], "resampling": resampling})
    controls = [{"model": _scalar(c.get("model")), "of": _scalar(c.get("control_of")),
                 "seed": _scalar(c.get("init_seed"))} for c in _rows(dai, "controls")]
    return {"groups": out, "controls": controls}


def _sparsity_view(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """One figure per model of ``results["sparsity"]``; None without rows.

    Reads ``model``, ``layer``, ``matrix``, ``threshold``, ``relative`` and
    ``sparsity`` (a share in [0, 1]).
    """
    rows = [r for r in _rows(results, "sparsity")
            if r.get("matrix") is not None and _as_float(r.get("layer")) is not None]
    if not rows:
        return None
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_scalar(r.get("model")), []).append(r)
    out = []
    for gi, (model, grp) in enumerate(sorted(groups.items())):
        matrices = list(dict.fromkeys(str(r["matrix"]) for r in grp))
        cols = svg.method_colors(matrices)
        settings = list(dict.fromkeys((_as_float(r.get("threshold")), bool(r.get("relative"))) for r in grp))
        panels, table, captions = [], [], []
        for thr, rel in settings:
            what = (f"|w| < {fmt_num(thr)} × max |w| of the matrix" if rel else f"|w| < {fmt_num(thr)}")
            captions.append(what + (" (relative to the matrix's largest |w|)" if rel else " (absolute)"))
            mine = [r for r in grp if _as_float(r.get("threshold")) == thr and bool(r.get("relative")) == rel]
            series: dict[str, list[svg.SeriesPoint]] = {}
            for r in mine:
                series.setdefault(str(r["matrix"]), []).append(
                    svg.SeriesPoint(x=_as_float(r.get("layer")), y=_as_float(r.get("sparsity"))))
            # the axis follows the data (shares of 0.005 were drawn on a 0-1 axis) and includes 0
            panels.append(svg.Panel(title=what, y_label="share of entries below threshold", series=series,
                                    y_min=0.0))
            for mtx in matrices:
                vals = [(int(_as_float(r.get("layer"))), _as_float(r.get("sparsity"))) for r in mine
                        if str(r["matrix"]) == mtx and _as_float(r.get("sparsity")) is not None]
                if not vals:
                    continue
                lo = min(vals, key=lambda t: t[1])
                hi = max(vals, key=lambda t: t[1])
                table.append({"setting": what, "matrix": mtx, "color": cols[mtx], "n_layers": len(vals),
                              "mean": fmt_num(sum(v for _, v in vals) / len(vals)),
                              "min": f"{fmt_num(lo[1])} (layer {lo[0]})", "max": f"{fmt_num(hi[1])} (layer {hi[0]})"})
        figure = svg.line_panels(
            panels, title=f"Weight sparsity by layer — {model}", x_label="layer (0-based)", interval="whiskers",
            series_order=matrices, colors=cols, max_columns=2, panel_width=380,
        )
        out.append({"anchor": f"sparsity-{gi}", "model": model, "figure": Markup(figure), "table": table,
                    "captions": captions})
    return {"groups": out}


#: Posterior variable whose rank plots the Bayes section shows.
RANK_PLOT_VAR = "sd_query"


def _rank_view(sl: Mapping[str, Any], run_dir: pathlib.Path | None, colors: dict[str, str], label: str
               ) -> dict[str, Any] | None:
    """Rank plot of ``sd_query`` (the compared per-query SD across orders) from a slice's NetCDF file, or None.

    None (silently) without a run directory, when ``sl["file"]`` is not a
    safe relative path or does not exist, when ArviZ cannot be imported, or
    when the file cannot be read or has no ``sd_query`` (files of older runs).
    """
    name = sl.get("file")
    if run_dir is None or name is None or not _is_relative_path(str(name)):
        return None
    path = pathlib.Path(run_dir) / str(name)
    if not path.is_file():
        return None
    try:
        from hyptest.stats._arviz import from_netcdf, rank_plot_data

        idata = from_netcdf(path)
        rh = rank_plot_data(idata, RANK_PLOT_VAR)
    except Exception:  # noqa: BLE001 - optional figure: any failure (no arviz, bad file) skips it
        return None
    counts = np.asarray(rh.counts)
    if counts.ndim != 3 or counts.size == 0:
        return None
    methods = [lbl[len(RANK_PLOT_VAR) + 1:-1] if lbl.startswith(RANK_PLOT_VAR + "[") else lbl for lbl in rh.labels]
    labels = [f"SD_query {_short_method(m)}" for m in methods]
    figure = svg.rank_plot(counts, labels, float(rh.expected), title=f"Rank plots of the per-query SD across orders — {label}",
                           colors=[colors.get(m, "#0072B2") for m in methods])
    return {"figure": Markup(figure), "n_chains": int(counts.shape[1]), "n_bins": int(counts.shape[2]),
            "n_draws": int(round(float(rh.expected) * counts.shape[2]))}


def _adjust_name(adjust: Any) -> str:
    return _ADJUST_NAMES.get(str(adjust).lower(), str(adjust)) if adjust else "Holm"


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
    from ..provenance import package_version

    return package_version("hyptest")


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


def _adaptive_view(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The adaptive section (confidence sequences, stopping points); None for fixed runs."""
    from .adaptive_view import adaptive_view

    return adaptive_view(results)


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
        optionally, ``null_distributions`` (comparison index as str ->
        bootstrap draws of the row's statistic, drawn as resampling
        distributions), ``agreement`` (rows of
        model, task, n_demos, method and the :data:`AGREEMENT_METRICS`;
        the reference method's row is its agreement with itself under
        another order), ``margins`` (analysis, kind, value, margin, source),
        ``families`` (family, role, size, adjust, alpha, analyses,
        n_resamples), ``bayes`` (one entry per
        (model, task, N): file, converged, reason, order_invariant, sampler,
        wall_time_s, posteriors ``{method: {"counts", "edges"}}`` and
        diagnostics), ``provenance`` and ``data_files``.  Optional
        sections, each shown only when its key holds rows: ``n_sweep``
        (:func:`_n_sweep_view`), ``trajectories`` and ``closest_to_icl``
        (:func:`_trajectories_view`), ``checkpoints``
        (:func:`_checkpoints_view`), ``vocab_order_sensitivity``
        (:func:`_vocab_view`), ``dai`` (``{"comparisons", "correctness"}``;
        else comparison rows carrying ``layer``, as written by
        ``hyptest reanalyse``, and ``correctness``; :func:`_dai_view`) and
        ``sparsity`` (:func:`_sparsity_view`).  Missing keys are
        rendered as empty sections or ``"—"``; unknown keys are ignored.
        Comparison rows of any analysis are listed in the verdict table,
        one table per role (confirmatory, exploratory, Bayesian), grouped by
        method; only confirmatory rows get a banner (every row does when
        there is none).  Missing fields read
        ``"—"`` and a verdict outside :data:`VERDICT_PHRASES` gets a neutral
        style.
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
        HTML-escaped.  Files of the run directory (data files, the Bayesian
        NetCDF files) are linked by relative path only.

    References
    ----------
    .. [1] Shen, Mishra & Khashabi (2023), Do pretrained Transformers learn
       in-context by gradient descent? arXiv:2310.08540.
    .. [2] Kruschke (2018), Rejecting or accepting parameter values in
       Bayesian estimation. AMPPS 1(2), 270-280.
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

    analysis_spec = study.get("analysis") if isinstance(study.get("analysis"), Mapping) else {}
    bayes_slices = _rows(results, "bayes")

    seen: list[str] = []
    for frame in (per_query, per_order):
        if isinstance(frame, pd.DataFrame) and "method" in frame.columns:
            seen.extend(str(m) for m in pd.unique(frame["method"].astype(str)))
    for key in ("order_sensitivity", "accuracy", "agreement"):
        seen.extend(str(r.get("method")) for r in _rows(results, key) if r.get("method") is not None)
    for c in comparisons:
        seen.extend(str(c[k]) for k in ("method_a", "method_b") if c.get(k) is not None)
    for sl in bayes_slices:
        if isinstance(sl.get("posteriors"), Mapping):
            seen.extend(str(m) for m in sl["posteriors"])
    methods_order = _methods_order(study, seen)
    colors = svg.method_colors(m for m in methods_order if m in set(seen))

    invariant_by_key: dict[tuple[str, str, Any], list[str]] = {}
    for sl in bayes_slices:
        inv = sl.get("order_invariant")
        if isinstance(inv, Sequence) and not isinstance(inv, str):
            invariant_by_key[_group_key(sl.get("model"), sl.get("task"), sl.get("n_demos"))] = [
                str(m) for m in inv
            ]
    views = [
        _comparison_view(
            i, c, invariant=invariant_by_key.get(_group_key(c.get("model"), c.get("task"), c.get("n_demos")), ()),
        )
        for i, c in enumerate(comparisons)
    ]
    counts: dict[str, int] = {}
    for v in views:
        counts[v["verdict_word"]] = counts.get(v["verdict_word"], 0) + 1
    # headline verdicts: the confirmatory family (every row when a file has none)
    banners = sorted(
        [v for v in views if v["primary"]] or views,
        key=lambda v: (
            *_sort_key(v["key"]),
            methods_order.index(v["method_b"]) if v["method_b"] in methods_order else len(methods_order),
            v["index"],
        ),
    )
    for v in banners:
        v["others"] = _others_text(views, v) if v["primary"] else ""

    tests = sorted({str(c.get("test")) for c in comparisons if c.get("test")})
    finished = prov.get("finished") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    pv = _provenance_view(prov)

    other_study = [
        (str(k), _scalar(v))
        for k, v in study.items()
        if k not in ("name",) and not isinstance(v, (Mapping, list, tuple))
        and not (v is None or (isinstance(v, str) and not v.strip()))
    ]

    os_groups = _order_sensitivity_groups(results, per_query, methods_order, per_order=per_order, colors=colors)
    resampling_figures = _resampling_figures(results, comparisons, views)
    bayes = _bayes_view(results, comparisons, methods_order, colors, run_dir)
    reference = str(analysis_spec.get("reference") or "icl")
    agreement = _agreement_view(results, comparisons, methods_order, colors, reference)
    n_sweep = _n_sweep_view(results, methods_order, colors, reference)
    trajectories = _trajectories_view(results, methods_order, colors, reference)
    checkpoints = _checkpoints_view(results, methods_order, colors)
    vocab = _vocab_view(results, methods_order, colors)
    dai = _dai_view(results, comparisons)
    untrained = _untrained_view(results)
    sparsity = _sparsity_view(results)

    # where each verdict-table row's details are
    os_anchor = {g["label_key"]: g["anchor"] for g in os_groups}
    bayes_anchor = {sl["key"]: sl["anchor"] for sl in bayes["slices"]}
    agreement_anchor = {g["key"]: g["anchor"] for g in agreement["groups"]}
    figure_anchor = {n["key"]: n["anchor"] for n in resampling_figures}
    for v in views:
        a = v["analysis_key"]
        if v["role"] == "bayesian" and v["key"] in bayes_anchor:
            v["detail_href"] = "#" + bayes_anchor[v["key"]]
        elif str(v["index"]) in figure_anchor:
            v["detail_href"] = "#" + figure_anchor[str(v["index"])]
        elif a in AGREEMENT_METRICS and v["key"] in agreement_anchor:
            v["detail_href"] = "#" + agreement_anchor[v["key"]]
        elif v["key"] in os_anchor:
            v["detail_href"] = "#" + os_anchor[v["key"]]

    analyses_present = [a for a in ANALYSIS_ORDER if any(v["analysis_key"] == a for v in views)]
    verdict_tables = _verdict_tables(views, methods_order)
    families = _families_view(results, comparisons)
    margins = _margins_view(results, comparisons)
    bayes_rows = [c for c in comparisons if _role(c) == "bayesian"]
    rope = next((_as_float(c.get("rope")) for c in bayes_rows if _as_float(c.get("rope")) is not None),
                _as_float(analysis_spec.get("rope")))
    rho0 = next((_as_float(c.get("null_value")) for c in comparisons if _is_threshold(c)),
                _as_float(analysis_spec.get("alignment_rho0")))
    bayes_scale = next((str(c.get("scale")) for c in bayes_rows if c.get("scale")), "")
    adjusts = sorted({_adjust_name(c.get("adjust_method")) for c in comparisons if c.get("adjust_method")})

    # a reanalysis shows only the sections that apply to its format (a study shows every section, empty ones say so)
    imported = results.get("import") if isinstance(results.get("import"), Mapping) else {}
    run_format = str(study.get("format") or imported.get("format") or "")
    reanalysed = run_format in ("dai", "summaries")
    accuracy = _accuracy_table(results, methods_order)
    context = {
        "title": str(study.get("name") or "hyptest study"),
        "run_format": run_format,
        "show_order_sensitivity": bool(os_groups) or not reanalysed,
        "show_accuracy": bool(accuracy) or not reanalysed,
        "has_confirmatory": any(v["primary"] for v in views),
        "has_margins": bool(margins.get("items")) or any(c.get("margin") is not None for c in comparisons),
        "skipped_analyses": [{"name": str(s.get("name") or s.get("analysis") or ""), "reason": str(s.get("reason") or "")}
                             for s in _rows(results, "skipped_analyses")],
        "version": _version(prov),
        "generated": str(finished),
        "study_fields": other_study,
        "alpha": fmt_num(alpha) if alpha is not None else "the study's α",
        "comparisons": views,
        "banners": banners,
        "verdict_tables": verdict_tables,
        "has_bayes_rows": bool(bayes_rows),
        "analyses_present": analyses_present,
        "estimate_legend": list(
            dict.fromkeys(_ESTIMATE_LEGEND[a] for a in analyses_present if a in _ESTIMATE_LEGEND)
        ),
        "verdict_counts": sorted(counts.items(), key=lambda kv: _VERDICT_RANK.get(kv[0], len(_VERDICT_RANK))),
        "order_sensitivity": os_groups,
        "accuracy": accuracy,
        "resampling_figures": resampling_figures,
        "bayes": bayes,
        "agreement": agreement,
        "n_sweep": n_sweep,
        "trajectories": trajectories,
        "adaptive": _adaptive_view(results),
        "checkpoints": checkpoints,
        "vocab": vocab,
        "dai": dai,
        "untrained": untrained,
        "sparsity": sparsity,
        "families": families,
        "margins": margins,
        "resampling": _resampling_view(comparisons),
        "rope": fmt_num(rope) if rope is not None else "",
        "rho0": fmt_num(rho0) if rho0 is not None and "order_alignment" in analyses_present else "",
        "bayes_scale": bayes_scale,
        "adjust": " / ".join(adjusts) if adjusts else "Holm",
        "provenance": pv,
        "has_provenance": bool(prov),
        "data_files": _data_files(results, run_dir),
        "study_text": "" if study_text is None else str(study_text),
        "tests": tests,
        "study_json": json.dumps(study, indent=2, sort_keys=True, default=str) if study else "",
        "layer_causal": _layer_causal_methods(study, per_order),
    }
    return _environment().get_template("report.html.j2").render(**context)


def _layer_causal_methods(study: Mapping[str, Any], per_order: pd.DataFrame | None) -> list[str]:
    """Names of the study's layer-causal GD methods (from the study, else from ``per_order``'s kinds)."""
    raw = study.get("methods") if isinstance(study, Mapping) else None
    names = [str(m.get("name") or m.get("kind")) for m in raw if isinstance(m, Mapping)
             and m.get("kind") == "layer_causal_gd"] if isinstance(raw, list) else []
    if not names and isinstance(per_order, pd.DataFrame) and {"method", "method_kind"} <= set(per_order.columns):
        names = sorted(set(per_order.loc[per_order["method_kind"] == "layer_causal_gd", "method"].astype(str)))
    return names


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

    The HTML goes through :func:`hyptest._util.atomic_write_bytes` (temporary
    file, ``fsync``, :func:`os.replace`, mode by the umask): on any error the
    previous report (if any) is left untouched.

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

    Notes
    -----
    Only here (not in :func:`render_report`) the Bayes section gets its rank
    plots: for every slice whose ``file`` exists in ``run_dir`` and can be
    read with ArviZ, the per-chain rank histograms of ``sd_query``
    (:func:`hyptest.stats._arviz.rank_plot_data`); otherwise the plot is left
    out without a message.

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
    from .._util import atomic_write_bytes

    target = run_dir / "report.html"
    atomic_write_bytes(target, text.encode("utf-8"))  # temp file, fsync, rename; mode by the umask
    return target
