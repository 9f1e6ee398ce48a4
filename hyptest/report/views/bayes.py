"""The hierarchical-Bayes section: posteriors, diagnostics and rank plots per (model, task, N) slice."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from markupsafe import Markup

from hyptest.stats.bayes import ESS_MIN, RHAT_MAX  # the convergence gate the diagnostics table highlights

from .. import svg
from .format import _as_float, _context_label, _group_key, _rows, _scalar, _seconds, _sort_key, fmt_ci, fmt_num
from .names import (
    _BAYES,
    SHORT_METHOD_NAMES,
    _short_method,
    _verdict_class,
    _verdict_word,
    method_display,
    verdict_phrase,
)
from .provenance import _is_relative_path, _run_link


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
