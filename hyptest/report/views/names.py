"""Plain-words names of methods, analyses and verdicts, and the orders the report shows them in."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hyptest.names import METHOD_NAMES, SHORT_METHOD_NAMES  # one home for display names

from .format import _DASH, _as_float, fmt_num


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


#: Column order of methods in figures and tables.
DEFAULT_METHOD_ORDER: tuple[str, ...] = ("icl", "zs", "gd", "sgd", "adam", "layer_causal_gd")


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


def _methods_order(study: Mapping[str, Any], seen: Iterable[str]) -> list[str]:
    order: list[str] = []
    raw = study.get("methods")
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


def _analysis_rank(analysis: Any) -> int:
    a = str(analysis) if analysis is not None else PRIMARY_ANALYSIS
    return ANALYSIS_ORDER.index(a) if a in ANALYSIS_ORDER else len(ANALYSIS_ORDER)


def _short_method(m: str) -> str:
    return SHORT_METHOD_NAMES.get(str(m).lower(), str(m))


def _adjust_name(adjust: Any) -> str:
    return _ADJUST_NAMES.get(str(adjust).lower(), str(adjust)) if adjust else "Holm"
