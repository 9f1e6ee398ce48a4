"""The hierarchical-Bayes section: posteriors, diagnostics and rank plots per (model, task, N) slice.

Draws what the analysis wrote into each ``bayes`` entry of the results
(:class:`hyptest.contract.BayesSlice`): the posterior histograms, the
diagnostics against the run's convergence gate (``bayes_gate``) and the
per-chain rank histograms (``rank_plot``); it computes none of them.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from markupsafe import Markup

from hyptest.contract import BayesGate, BayesSlice, ComparisonRow, Diagnostic, RankPlot

from .. import figures
from .format import _as_float, _context_label, _group_key, _scalar, _seconds, _sort_key, analysis_spec, fmt_ci, fmt_num
from .names import (
    _BAYES,
    SHORT_METHOD_NAMES,
    _short_method,
    _verdict_class,
    _verdict_word,
    method_display,
    verdict_phrase,
)
from .provenance import _run_link

__all__ = ["RANK_PLOT_VAR", "bayes_view"]

#: Posterior variable whose rank plots the Bayes section shows (the analysis computes them).
RANK_PLOT_VAR = "sd_query"


def _hdi_and_mean(
    comp: ComparisonRow | None, diag: Mapping[str, Diagnostic], method: str
) -> tuple[float | None, float | None, float | None]:
    """A method's HDI and posterior mean: from its comparison row, else from the ``log_ratio`` diagnostics."""
    lo, hi, mean = (None, None, None) if comp is None else (_as_float(comp.ci_low), _as_float(comp.ci_high),
                                                            _as_float(comp.estimate))
    d = diag.get(f"log_ratio[{method}]")
    if lo is None or hi is None:
        lo, hi = (_as_float(d.hdi_low), _as_float(d.hdi_high)) if d is not None else (None, None)
    if mean is None:
        mean = _as_float(d.mean) if d is not None else None
    finite = [x for x in (lo, hi, mean) if x is None or math.isfinite(x)]
    if len(finite) < 3:
        return None, None, None
    return lo, hi, mean


def _count(x: float | None) -> str:
    return f"{x:.0f}" if x is not None and math.isfinite(x) else fmt_num(x)


def _diagnostics_view(rows: list[Diagnostic], gate: BayesGate) -> list[dict[str, Any]]:
    """The diagnostics table; a value outside the gate (or missing) is flagged."""
    out = []
    for r in rows:
        r_hat, bulk, tail = _as_float(r.r_hat), _as_float(r.ess_bulk), _as_float(r.ess_tail)
        bad_r = r_hat is None or not math.isfinite(r_hat) or r_hat > gate.r_hat_max
        bad_b = bulk is None or not math.isfinite(bulk) or bulk < gate.ess_min
        bad_t = tail is None or not math.isfinite(tail) or tail < gate.ess_min
        level = _as_float(r.hdi_prob)
        out.append({
            "parameter": r.parameter,
            "mean": fmt_num(r.mean),
            "sd": fmt_num(r.sd),
            "hdi": fmt_ci(r.hdi_low, r.hdi_high),
            "hdi_level": f"{fmt_num(100 * level)}%" if level is not None else "",
            "r_hat": f"{r_hat:.3f}" if r_hat is not None and math.isfinite(r_hat) else fmt_num(r_hat),
            "ess_bulk": _count(bulk),
            "ess_tail": _count(tail),
            "bad_r_hat": bad_r,
            "bad_ess_bulk": bad_b,
            "bad_ess_tail": bad_t,
            "flagged": bad_r or bad_b or bad_t,
        })
    return out


def _bayes_sentence(
    comp: ComparisonRow | None,
    *,
    invariant: bool,
    hdi: tuple[float | None, float | None],
    mean: float | None,
    hdi_level: str,
    rope: float | None,
    converged: bool,
) -> str:
    """One plain sentence per method of a Bayesian slice."""
    verdict = (comp.verdict if comp is not None else None) or ("did_not_converge" if not converged else None)
    rope_txt = f" ±{fmt_num(rope)}" if rope is not None else ""
    if invariant:
        text = "order SD fixed at 0: order-invariant by construction; log ratio = +∞"
        p_rope = _as_float(comp.get("p_rope")) if comp is not None else None
        if p_rope is not None:
            text += f"; P(in ROPE{rope_txt}) = {fmt_num(p_rope)}"
    else:
        bits = []
        p_rope = _as_float(comp.get("p_rope")) if comp is not None else None
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


def bayes_view(
    slices: list[BayesSlice],
    gate: BayesGate,
    study: dict[str, Any],
    comparisons: list[ComparisonRow],
    methods_order: list[str],
    colors: dict[str, str],
    run_dir: pathlib.Path | None,
) -> dict[str, Any]:
    """The hierarchical-Bayes section: one entry per (model, task, N) slice, in (model, task, N) order."""
    spec = analysis_spec(study)
    rows = [(i, c) for i, c in enumerate(comparisons) if c.analysis == _BAYES]
    rope_default = _as_float(spec.get("rope"))
    hdi_default = _as_float(spec.get("hdi_prob"))
    for _, c in rows:
        rope_default = rope_default if rope_default is not None else _as_float(c.get("rope"))
        hdi_default = hdi_default if hdi_default is not None else _as_float(c.ci_level)
    ordered = sorted(slices, key=lambda sl: _sort_key(_group_key(sl.model, sl.task, sl.n_demos)))
    defaults = {"rope": rope_default, "hdi": hdi_default, "reference": str(spec.get("reference") or "icl")}
    return {
        "slices": [_slice_view(j, sl, rows, gate, defaults, methods_order, colors, run_dir)
                   for j, sl in enumerate(ordered)],
        "rope": fmt_num(rope_default) if rope_default is not None else "",
        "rope_is_log125": rope_default is not None and abs(rope_default - math.log(1.25)) < 1e-9,
        "hdi_level": f"{fmt_num(100 * hdi_default)}%" if hdi_default is not None else "94%",
        "rhat_max": fmt_num(gate.r_hat_max),
        "ess_min": fmt_num(gate.ess_min),
        "has_rows": bool(rows),
    }


def _slice_view(j: int, sl: BayesSlice, rows: list[tuple[int, ComparisonRow]], gate: BayesGate,
                defaults: dict[str, Any], methods_order: list[str], colors: dict[str, str],
                run_dir: pathlib.Path | None) -> dict[str, Any]:
    """One slice: its methods' posteriors and sentences, diagnostics, sampler, file and rank plots."""
    key = _group_key(sl.model, sl.task, sl.n_demos)
    label = _context_label(key[0] or None, key[1] or None, key[2])
    mine = [(i, c) for i, c in rows if _group_key(c.model, c.task, c.n_demos) == key]
    diag = {d.parameter: d for d in sl.diagnostics}
    converged = sl.converged is not False
    reference = next((str(c.method_a) for _, c in mine if c.method_a is not None), defaults["reference"])
    methods = list(dict.fromkeys([str(c.method_b) for _, c in mine if c.method_b is not None]
                                 + list(sl.posteriors) + sl.order_invariant))
    methods.sort(key=lambda m: methods_order.index(m) if m in methods_order else len(methods_order))
    rope = next((_as_float(c.get("rope")) for _, c in mine if _as_float(c.get("rope")) is not None),
                defaults["rope"])
    level = next((_as_float(c.ci_level) for _, c in mine if _as_float(c.ci_level) is not None), None)
    if level is None:
        level = next((_as_float(d.hdi_prob) for d in diag.values() if _as_float(d.hdi_prob) is not None),
                     defaults["hdi"])
    hdi_level = f"{fmt_num(100 * level)}%" if level is not None else ""
    ref_name = SHORT_METHOD_NAMES.get(reference.lower(), reference)
    by_method = {str(c.method_b): (i, c) for i, c in mine}
    shared = {"sl": sl, "diag": diag, "converged": converged, "rope": rope, "level": level, "hdi_level": hdi_level,
              "ref_name": ref_name, "colors": colors}
    dv = _diagnostics_view(sl.diagnostics, gate)
    wall = _as_float(sl.wall_time_s)
    return {
        "anchor": f"bayes-{j}",
        "key": key,
        "label": label,
        "converged": converged,
        "reason": str(sl.reason or "").strip(),
        "sampler": _scalar(sl.sampler) if sl.sampler is not None else "",
        "wall_time": _seconds(wall) if wall is not None else "",
        "file": _run_link(sl.file, run_dir),
        "reference": method_display(reference),
        "ref_short": ref_name,
        "methods": [_method_view(m, by_method.get(m), shared) for m in methods],
        "invariant_names": ", ".join(method_display(m) for m in sl.order_invariant),
        "diagnostics": dv,
        "n_flagged": sum(d["flagged"] for d in dv),
        "hdi_level": hdi_level,
        "rope": fmt_num(rope) if rope is not None else "",
        "rank": _rank_view(sl.rank_plot, colors, label),
    }


def _method_view(m: str, found: tuple[int, ComparisonRow] | None, shared: dict[str, Any]) -> dict[str, Any]:
    """One method of a slice: its posterior figure, its sentence and its verdict."""
    sl: BayesSlice = shared["sl"]
    index, comp = found if found is not None else (None, None)
    is_inv = m in sl.order_invariant
    lo, hi, mean = _hdi_and_mean(comp, shared["diag"], m) if not is_inv else (None, None, None)
    name = SHORT_METHOD_NAMES.get(m.lower(), m)
    ref_name, rope, colors = shared["ref_name"], shared["rope"], shared["colors"]
    post = sl.posteriors.get(m)
    figure = None
    if post is not None and not is_inv:
        figure = Markup(figures.posterior_plot(
            post.counts, post.edges, title=f"{ref_name} vs {name}",
            hdi=(lo, hi) if lo is not None and hi is not None else None, hdi_prob=shared["level"], rope=rope,
            mean=mean, color=colors.get(m, "#444444"),
            x_label=f"log(SD {ref_name} / SD {name}), per-query SD across orders",
        ))
    verdict = (comp.verdict if comp is not None else None) or ("did_not_converge" if not shared["converged"] else "")
    return {
        "method": m,
        "name": method_display(m),
        "color": colors.get(m, "#444444"),
        "invariant": is_inv,
        "figure": figure,
        "sentence": _bayes_sentence(comp, invariant=is_inv, hdi=(lo, hi), mean=mean, hdi_level=shared["hdi_level"],
                                    rope=rope, converged=shared["converged"]),
        "verdict": str(verdict),
        "verdict_word": _verdict_word(verdict) if verdict else "",
        "verdict_class": _verdict_class(verdict),
        "note": str((comp.note if comp is not None else None) or ""),
        "comparison_anchor": f"comparison-{index}" if index is not None else None,
    }


def _rank_view(rank: RankPlot | None, colors: dict[str, str], label: str) -> dict[str, Any] | None:
    """The rank plots of a slice's per-query SD across orders, from the histograms the analysis wrote; None without."""
    if rank is None:
        return None
    counts = np.asarray(rank.counts)
    if counts.ndim != 3 or counts.size == 0:
        return None
    var = rank.var_name
    methods = [lbl[len(var) + 1:-1] if lbl.startswith(var + "[") else lbl for lbl in rank.labels]
    labels = [f"SD_query {_short_method(m)}" for m in methods]
    figure = figures.rank_plot(counts, labels, float(rank.expected),
                           title=f"Rank plots of the per-query SD across orders — {label}",
                           colors=[colors.get(m, "#0072B2") for m in methods])
    return {"figure": Markup(figure), "n_chains": int(counts.shape[1]), "n_bins": int(counts.shape[2]),
            "n_draws": int(round(float(rank.expected) * counts.shape[2]))}
