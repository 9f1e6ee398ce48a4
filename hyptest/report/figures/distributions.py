"""Figures of distributions: per-query order sensitivity, resampling draws, posterior draws."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .canvas import add_line, data_range, drawing, finite, message_svg, style_axes
from .colors import method_colors

__all__ = ["order_sensitivity_plot", "resampling_distribution_plot", "posterior_plot"]


def _summary_lookup(summary: pd.DataFrame | None) -> dict[str, tuple[float, float, float]]:
    """Map method -> (mean, ci_low, ci_high) from an optional summary frame."""
    out: dict[str, tuple[float, float, float]] = {}
    if summary is None or len(summary) == 0 or "method" not in summary.columns:
        return out
    mean_col = next((c for c in ("mean_sd_gold", "mean", "estimate") if c in summary.columns), None)
    if mean_col is None:
        return out
    for _, row in summary.iterrows():
        try:
            mean = float(row[mean_col])
            lo = float(row["ci_low"]) if "ci_low" in summary.columns else float("nan")
            hi = float(row["ci_high"]) if "ci_high" in summary.columns else float("nan")
        except (TypeError, ValueError):
            continue
        if math.isfinite(mean):
            out[str(row["method"])] = (mean, lo, hi)
    return out


def order_sensitivity_plot(
    per_query: pd.DataFrame,
    *,
    methods_order: list[str],
    title: str,
    summary: pd.DataFrame | None = None,
    value_col: str = "sd_gold",
    y_label: str = "std of P(gold) across orders",
    width: int = 640,
    height: int = 400,
    colors: dict[str, str] | None = None,
) -> str:
    """Strip plot of per-query order sensitivity, one column per method.

    Parameters
    ----------
    per_query : pandas.DataFrame
        Long frame with at least the columns ``method`` and ``value_col``
        (one row per (demo set, query) unit and method), already restricted to
        a single (model, task, n_demos) group.
    methods_order : list of str
        Column order.  Methods present in the data but absent from this list
        are appended in order of first appearance; listed methods with no data
        are dropped.
    title : str
        Figure title.
    summary : pandas.DataFrame, optional
        Per-method mean and 95% CI with columns ``method``, ``mean_sd_gold``
        (or ``mean``), ``ci_low`` and ``ci_high``.  For methods not covered the
        mean and ``mean ± 1.96·SE`` are computed from the points.
    value_col : str, optional
        Column holding the per-query value (default ``"sd_gold"``).
    y_label : str, optional
        Y axis label.
    width, height : int, optional
        Nominal size in pixels; the SVG has a matching ``viewBox`` and scales.
    colors : dict of str to str, optional
        Colour per method (see :func:`method_colors`); methods missing from it
        get :func:`method_colors`' choice.

    Returns
    -------
    str
        Inline SVG.  Each method is a ``<g class="method" data-method=...>``
        holding a ``<g class="pts">`` with one ``class="pt"`` marker per finite
        value, its mean (``class="mean"``, a diamond, with a tooltip) and its
        CI (``class="ci"``).  The y axis runs from 0 (an SD) to the data.

    Notes
    -----
    Jitter is deterministic: it is drawn from ``np.random.default_rng(0)``
    created afresh on every call, column by column in display order.
    """
    df = per_query if per_query is not None else pd.DataFrame(columns=["method", value_col])
    if "method" not in df.columns or value_col not in df.columns:
        df = pd.DataFrame(columns=["method", value_col])
    present = [str(m) for m in pd.unique(df["method"].astype(str))] if len(df) else []
    methods = [m for m in methods_order if m in present]
    methods += [m for m in present if m not in methods]
    if not methods:
        return message_svg("no per-query data", title=title, kind="order-sensitivity", width=width, height=height)
    colors = {**method_colors(methods), **(colors or {})}
    summ = _summary_lookup(summary)

    values: dict[str, np.ndarray] = {}
    stats: dict[str, tuple[float, float, float]] = {}
    for m in methods:
        v = pd.to_numeric(df.loc[df["method"].astype(str) == m, value_col], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        values[m] = v
        if m in summ:
            stats[m] = summ[m]
        elif v.size:
            mean = float(v.mean())
            se = float(v.std(ddof=1)) / math.sqrt(v.size) if v.size > 1 else float("nan")
            stats[m] = (mean, mean - 1.96 * se, mean + 1.96 * se)

    with drawing(width, height, title) as sk:
        ax = sk.axes(78, 40, width - 98, height - 106)
        style_axes(ax)
        allv = np.concatenate([np.asarray(v, dtype=float) for v in values.values()])
        ax.set_ylim(*data_range(allv, include=[x for s in stats.values() for x in s], floor=0.0))
        ax.set_xlim(-0.5, len(methods) - 0.5)
        ax.set_ylabel(y_label)
        sk.tag(ax.yaxis.label, "y-label")
        ax.set_xticks(range(len(methods)), methods, fontweight="bold", fontsize=11)
        for tick, m in zip(ax.get_xticklabels(), methods, strict=True):
            tick.set_color(colors[m])
        rng = np.random.default_rng(0)
        big = max(v.size for v in values.values()) > 400
        for i, m in enumerate(methods):
            v, color, group = values[m], colors[m], ("method", "data-method", m)
            jit = rng.uniform(-0.2, 0.2, size=v.size)
            (pts,) = ax.plot(i - 0.08 + jit, v, "o", ls="none", ms=3.6 if big else 5.2, mfc=color, mec=color,
                             alpha=0.6, mew=0.5)
            sk.tag(pts, "pts", child_class="pt", wrap=group)
            if m in stats:
                mean, lo, hi = stats[m]
                if math.isfinite(lo) and math.isfinite(hi):
                    ci = add_line(ax, [i + 0.3] * 2, [lo, hi], color="#111111", lw=1.6, marker="_", ms=10, mew=1.6)
                    sk.tag(ci, "ci", wrap=group, low=f"{lo:.6g}", high=f"{hi:.6g}")
                mk = add_line(ax, [i + 0.3], [mean], ls="none", marker="D", ms=8, mfc=color, mec="#111111", mew=1.2)
                ci_txt = f" [{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) and math.isfinite(hi) else ""
                sk.tag(mk, "mean", title=f"{m}: mean {mean:.3g}{ci_txt}, n = {v.size}", wrap=group,
                       value=f"{mean:.6g}")
            sk.tag(ax.annotate(f"n = {v.size}", (i, 0), xycoords=ax.get_xaxis_transform(), xytext=(0, -20),
                               textcoords="offset points", ha="center", va="top", fontsize=10, color="#555555"),
                   "n", wrap=group)
        sk.text(width - 20, height - 8, "points: queries (jittered) · diamond: mean · bar: 95% CI", ha="right",
                fontsize=10, color="#555555")
        return sk.svg(title=title, kind="order-sensitivity")


def resampling_distribution_plot(
    draws: np.ndarray,
    estimate: float,
    *,
    title: str,
    x_label: str = "statistic",
    null_value: float | None = None,
    margin: float | None = None,
    interval: tuple[float, float] | None = None,
    bins: int = 40,
    width: int = 640,
    height: int = 320,
) -> str:
    """Histogram of the resampling (bootstrap) distribution of a statistic.

    Parameters
    ----------
    draws : numpy.ndarray
        Resampled statistics (non-finite values are ignored).
    estimate : float
        Observed statistic: a dashed line (``class="estimate"``).
    title, x_label : str
        Figure title and x axis label.
    null_value : float, optional
        The value of no difference (or the threshold ρ₀): a solid line (``class="null"``).
    margin : float, optional
        Half-width of the equivalence region around ``null_value``: two dotted
        lines (``class="margin"``) at ``null_value ± margin``.
    interval : (float, float), optional
        The interval the verdict used: a bar under the axis (``class="interval"``);
        infinite ends are clipped to the axis.
    bins : int, optional
        Number of histogram bins over the range of ``draws`` (default 40).
    width, height : int, optional
        Nominal size in pixels.

    Returns
    -------
    str
        Inline SVG with one ``class="bar"`` per bin (``data-count``, and a
        tooltip with its range and count).  The x axis covers the draws and
        every marked value.
    """
    arr = np.asarray(draws, dtype=float).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return message_svg("no resampling draws available", title=title, kind="resampling-distribution",
                           width=width, height=height)
    est, null, half = finite(estimate), finite(null_value), finite(margin)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        pad = abs(lo) * 0.05 if lo != 0 else 0.5
        lo, hi = lo - pad, hi + pad
    counts, edges = np.histogram(arr, bins=bins, range=(lo, hi))
    marks = [v for v in (est, null) if v is not None]
    if null is not None and half is not None:
        marks += [null - half, null + half]
    with drawing(width, height, title) as sk:
        ax = sk.axes(70, 52, width - 100, height - 110)
        style_axes(ax)
        x0, x1 = data_range([lo, hi], include=marks)
        ax.set_xlim(x0, x1)
        ax.set_ylim(*data_range(counts.tolist(), floor=0.0))
        ax.set_ylabel("count")
        sk.tag(ax.yaxis.label, "y-label")
        ax.set_xlabel(x_label)
        sk.tag(ax.xaxis.label, "x-label")
        bars = ax.bar(edges[:-1], counts, width=np.diff(edges) * 0.98, align="edge", color="#bfcbd9")
        for bar, c, a, b in zip(bars, counts, edges[:-1], edges[1:], strict=True):
            sk.tag(bar, "bar", title=f"[{a:.3g}, {b:.3g}): {int(c)} draws", count=int(c))
        if interval is not None:
            ia, ib = (finite(v) if v is not None else None for v in interval)
            fa = interval[0] is not None and not (isinstance(interval[0], float) and math.isnan(interval[0]))
            fb = interval[1] is not None and not (isinstance(interval[1], float) and math.isnan(interval[1]))
            if fa or fb:
                xa = min(max(ia, x0), x1) if ia is not None else x0
                xb = min(max(ib, x0), x1) if ib is not None else x1
                (ln,) = ax.plot([xa, xb], [-0.2, -0.2], transform=ax.get_xaxis_transform(), color="#1d1d1f", lw=4,
                                clip_on=False, solid_capstyle="butt")
                sk.tag(ln, "interval", title=f"interval [{_g(interval[0])}, {_g(interval[1])}]")
        if null is not None and half is not None:
            for v in (null - half, null + half):
                sk.tag(ax.axvline(v, color="#2e7d32", lw=1.5, ls=(0, (2, 3))), "margin", value=f"{v:.6g}")
        if null is not None:
            sk.tag(ax.axvline(null, color="#444444", lw=1.5), "null", value=f"{null:.6g}")
        if est is not None:
            sk.tag(ax.axvline(est, color="#C62828", lw=2, ls=(0, (5, 3))), "estimate", value=f"{est:.6g}")
            right = (est - x0) / (x1 - x0) > 0.5
            ax.annotate(f"estimate = {est:.3g}", (est, 0.97), xycoords=ax.get_xaxis_transform(),
                        xytext=(-5 if right else 5, 0), textcoords="offset points", ha="right" if right else "left",
                        va="top", color="#C62828", fontweight="bold")
        sk.text(width - 30, 44, f"{arr.size} resampling draws, {bins} bins", ha="right", fontsize=10,
                color="#555555")
        return sk.svg(title=title, kind="resampling-distribution")


def _g(v: Any) -> str:
    f = finite(v)
    return f"{f:.3g}" if f is not None else str(v)


def _fmt_pct(p: float | None) -> str:
    """Format a probability as a percentage (``0.94`` -> ``"94%"``)."""
    if p is None or not math.isfinite(float(p)):
        return ""
    return f"{100 * float(p):.3g}%"


def posterior_plot(
    counts: Any,
    edges: Any,
    *,
    title: str,
    hdi: tuple[float, float] | None = None,
    hdi_prob: float | None = None,
    rope: float | None = None,
    mean: float | None = None,
    color: str = "#444444",
    x_label: str = "log(SD_query ICL / SD_query method), per-query SD across orders",
    width: int = 420,
    height: int = 250,
) -> str:
    """Histogram of posterior draws with the HDI, the ROPE and a line at 0.

    Parameters
    ----------
    counts : sequence of float
        Number of draws per bin (length ``B``).
    edges : sequence of float
        Bin edges (length ``B + 1``, increasing).
    title : str
        Figure title.
    hdi : (float, float), optional
        Highest-density interval: a bar under the histogram; bins whose centre
        lies inside are drawn darker.  Non-finite ends are ignored.
    hdi_prob : float, optional
        Probability mass of the HDI (e.g. 0.94), used in its label.
    rope : float, optional
        Half-width of the region of practical equivalence ``[-rope, rope]``,
        a grey band over the whole plot height.
    mean : float, optional
        Posterior mean, a small triangle on the axis.
    color : str, optional
        Colour of the bars and the HDI bar (the method's colour).
    x_label : str, optional
        X axis label.
    width, height : int, optional
        Nominal size in pixels.

    Returns
    -------
    str
        Inline SVG (its x axis covers the bins that hold draws and every
        marked value) with one ``class="bar"`` per bin (``data-count``,
        ``data-in-hdi``), a ``class="rope"`` band (``data-low``/``data-high``),
        a ``class="zero"`` line and a ``class="hdi"`` bar (``data-low``,
        ``data-high``).  Counts and edges that do not match or are not finite
        give a figure that says no posterior is available.
    """
    try:
        c = np.asarray(counts, dtype=float).ravel()
        e = np.asarray(edges, dtype=float).ravel()
    except (TypeError, ValueError):
        c, e = np.empty(0), np.empty(0)
    ok = (c.size > 0 and e.size == c.size + 1 and bool(np.all(np.isfinite(c))) and bool(np.all(np.isfinite(e)))
          and bool(np.all(np.diff(e) > 0)))
    if not ok:
        return message_svg("no posterior draws available", title=title, kind="posterior", width=width,
                           height=height)
    r = finite(rope)
    r = r if r is not None and r > 0 else None
    lo_h = hi_h = None
    if hdi is not None:
        a, b = (finite(v) for v in hdi)
        if a is not None and b is not None:
            lo_h, hi_h = min(a, b), max(a, b)
    total = float(c.sum())
    dens = c if total <= 0 else c / total
    with drawing(width, height, title) as sk:
        ax = sk.axes(18, 44, width - 36, height - 108)
        style_axes(ax, grid=None)
        ax.spines["left"].set_visible(False)
        ax.set_yticks([])
        marks = [0.0] + ([-r, r] if r is not None else []) + ([lo_h, hi_h] if lo_h is not None else [])
        nz = np.flatnonzero(c > 0)  # the axis covers the bins that hold draws, not empty edges
        span = [e[nz[0]], e[nz[-1] + 1]] if nz.size else [e[0], e[-1]]
        ax.set_xlim(*data_range(span, include=marks))
        ax.set_ylim(0, float(dens.max()) * 1.08 if dens.max() > 0 else 1.0)
        ax.set_xlabel(x_label, fontsize=10, labelpad=18)
        sk.tag(ax.xaxis.label, "x-label")
        if r is not None:
            sk.tag(ax.axvspan(-r, r, color="#9e9e9e", alpha=0.28, lw=0), "rope", title=f"ROPE ±{r:.3g}",
                   low=f"{-r:.6g}", high=f"{r:.6g}")
        centres = (e[:-1] + e[1:]) / 2
        inside = [lo_h is not None and lo_h <= x <= hi_h for x in centres.tolist()]  # type: ignore[operator]
        bars = ax.bar(e[:-1], dens, width=np.diff(e) * 0.97, align="edge", color=color)
        for bar, cnt, a, b, ins in zip(bars, c, e[:-1], e[1:], inside, strict=True):
            bar.set_alpha(0.85 if ins or lo_h is None else 0.35)
            sk.tag(bar, "bar", title=f"[{a:.3g}, {b:.3g}): {int(round(cnt))} draws", in_hdi=int(ins),
                   count=int(round(cnt)))
        sk.tag(ax.axvline(0.0, color="#222222", lw=1.2, ls=(0, (4, 3))), "zero")
        if lo_h is not None:
            label = f"{_fmt_pct(hdi_prob)} HDI" if hdi_prob is not None else "HDI"
            (ln,) = ax.plot([lo_h, hi_h], [-0.2, -0.2], transform=ax.get_xaxis_transform(), color=color, lw=4,
                            clip_on=False, solid_capstyle="butt", marker="|", ms=10, mew=1.6)
            sk.tag(ln, "hdi", title=f"{label} [{lo_h:.3g}, {hi_h:.3g}]", low=f"{lo_h:.6g}", high=f"{hi_h:.6g}")
            x0, x1 = ax.get_xlim()
            room_right = x1 - hi_h >= lo_h - x0  # type: ignore[operator]
            ax.annotate(label, (hi_h if room_right else lo_h, -0.2), xycoords=ax.get_xaxis_transform(),
                        xytext=(7 if room_right else -7, 0), textcoords="offset points",
                        ha="left" if room_right else "right", va="center", fontsize=10, color="#333333")
        m = finite(mean)
        if m is not None:
            (mk,) = ax.plot([m], [0.035], "v", transform=ax.get_xaxis_transform(), ms=8, color="#111111",
                            clip_on=False)
            sk.tag(mk, "mean", title=f"posterior mean {m:.3g}", value=f"{m:.6g}")
        legend = ([f"grey band: ROPE ±{r:.3g}"] if r is not None else []) + ["dashed: 0"]
        if m is not None:
            legend.append("▼ mean")
        sk.text(width - 18, 38, " · ".join(legend), ha="right", fontsize=10, color="#555555")
        return sk.svg(title=title, kind="posterior")
