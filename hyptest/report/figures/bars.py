"""Bar figures: grouped bars per (group, series), and per-chain rank histograms of MCMC draws."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .canvas import Sketch, data_range, drawing, finite, message_svg, style_axes, wrap_label
from .colors import method_colors

__all__ = ["grouped_bar_chart", "rank_plot"]


def _bar_label(v: float) -> str:
    """Value label of a bar: three significant digits, no exponent above 1e-3."""
    if v == 0:
        return "0"
    if abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.3g}"


def _legend(sk: Sketch, items: Sequence[tuple[str, str, bool]], *, top: float, item_w: float, per_row: int) -> None:
    """A row-wrapped legend of coloured squares (outlined for the reference) under the plot."""
    for i, (label, color, outlined) in enumerate(items):
        lx, ly = 20.0 + (i % per_row) * item_w, top + (i // per_row) * 16
        sk.rect(lx, ly - 9, 10, 10, facecolor=color, alpha=0.55 if outlined else 0.9,
                edgecolor="#111111" if outlined else "none", lw=1.0)
        sk.text(lx + 14, ly, label, fontsize=10.5, color="#333333")


def grouped_bar_chart(
    groups: Sequence[str],
    series: Sequence[str],
    values: dict[tuple[str, str], float],
    *,
    title: str,
    y_label: str,
    series_labels: dict[str, str] | None = None,
    colors: dict[str, str] | None = None,
    reference: str | None = None,
    width: int | None = None,
    height: int = 280,
) -> str:
    """Grouped bar chart: one cluster of bars per group, one bar per series.

    Parameters
    ----------
    groups : sequence of str
        Cluster labels along the x axis, in order.  A label is written one
        line per ``" · "``-separated part, each part cut to the cluster's
        width (the full label is the tooltip).
    series : sequence of str
        Series keys (e.g. method names) in bar order within a cluster.
    values : dict of (str, str) to float
        Bar heights keyed by ``(group, series)``; missing or non-finite
        values leave a gap.
    title, y_label : str
        Figure title and y axis label.
    series_labels : dict of str to str, optional
        Legend label per series (default: the key).
    colors : dict of str to str, optional
        Colour per series (see :func:`method_colors`).
    reference : str, optional
        Series drawn as the reference: its bar is outlined, and a dashed
        line at its value runs across the whole cluster.
    width : int, optional
        Nominal width; by default it grows with the number of bars.
    height : int, optional
        Nominal height in pixels (default 280), plus 12 per extra line of
        the longest group label.

    Returns
    -------
    str
        Inline SVG with one ``class="bar"`` (``"bar reference-bar"`` for the
        reference) per finite value, carrying ``data-group``,
        ``data-series``, ``data-value`` and a tooltip, and one
        ``class="reference"`` line per cluster with a reference value.  The
        y axis starts at 0 (or below, for negative values).
    """
    groups = [str(g) for g in groups]
    series = [str(s) for s in series]
    labels = series_labels or {}
    cols = {**method_colors(series), **(colors or {})}
    n_bars = max(len(series), 1)
    bar_w, cluster_w, left, right_pad, top = 30.0, n_bars * 30.0 + 26.0, 62.0, 14.0, 40.0
    if width is None:
        width = int(max(360.0, left + right_pad + max(len(groups), 1) * cluster_w))
    item_w = 24.0 + 6.2 * max((len(str(labels.get(s, s))) for s in series), default=10)
    per_row = max(1, int((width - 20.0) // item_w))
    legend_rows = math.ceil(len(series) / per_row) if series else 0
    label_lines = max((len(g.split(" · ")) for g in groups), default=1)
    height = int(height + 12 * (label_lines - 1))
    bottom = height - 46.0 - 16.0 * legend_rows - 12.0 * (label_lines - 1)
    finite_vals = [f for f in (finite(v) for v in values.values()) if f is not None]
    if not groups or not series or not finite_vals:
        return message_svg("no values", title=title, kind="grouped-bars", width=width, height=height)
    with drawing(width, height, title) as sk:
        ax = sk.axes(left, top, width - right_pad - left, bottom - top)
        style_axes(ax)
        lo, hi = data_range(finite_vals, include=[0.0], pad=0.1)
        ax.set_ylim(min(lo, 0.0), hi)
        ax.set_ylabel(wrap_label(y_label, bottom - top))
        sk.tag(ax.yaxis.label, "y-label")
        slot_px = (width - right_pad - left) / len(groups)
        unit = 1.0 / slot_px  # data units per pixel: one group is one unit wide
        ax.set_xlim(-0.5, len(groups) - 0.5)
        max_chars = max(4, int(slot_px / 6.6))
        ticks = []
        for gi, g in enumerate(groups):
            start = gi - n_bars * bar_w * unit / 2
            for si, s in enumerate(series):
                v = finite(values.get((g, s)))
                if v is None:
                    continue
                is_ref = s == reference
                (bar,) = ax.bar(start + (si * bar_w + 2) * unit, v, width=(bar_w - 4) * unit, align="edge",
                                color=cols.get(s, "#444444"), alpha=0.55 if is_ref else 0.9,
                                edgecolor="#111111" if is_ref else "none", lw=1.4 if is_ref else 0)
                sk.tag(bar, "bar reference-bar" if is_ref else "bar", title=f"{labels.get(s, s)}: {v:.3g}",
                       group=g, series=s, value=f"{v:.6g}")
                ax.annotate(_bar_label(v), (start + (si * bar_w + bar_w / 2) * unit, max(v, 0.0)),
                            xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=8,
                            color="#333333")
            ref_v = finite(values.get((g, reference))) if reference is not None else None
            if ref_v is not None:
                (ln,) = ax.plot([start, start + n_bars * bar_w * unit], [ref_v, ref_v], color="#111111", lw=1.2,
                                ls=(0, (4, 3)))
                sk.tag(ln, "reference", group=g, value=f"{ref_v:.6g}")
            ticks.append("\n".join(ln if len(ln) <= max_chars else ln[: max_chars - 1] + "…"
                                   for ln in g.split(" · ")))
        ax.set_xticks(range(len(groups)), ticks, fontsize=10.5, color="#222222")
        ax.tick_params(axis="x", length=0)
        for t, g in zip(ax.xaxis.get_major_ticks(), groups, strict=True):
            sk.tag(t.label1, "group-label", title=g, group=g)
        _legend(sk, [(str(labels.get(s, s)), cols.get(s, "#444444"), s == reference) for s in series],
                top=bottom + 32 + 12 * (label_lines - 1), item_w=item_w, per_row=per_row)
        return sk.svg(title=title, kind="grouped-bars")


def rank_plot(
    counts: np.ndarray,
    labels: Sequence[str],
    expected: float,
    *,
    title: str,
    colors: Sequence[str] | None = None,
    panel_width: int = 280,
    row_height: int = 30,
    max_columns: int = 3,
) -> str:
    """Per-chain rank histograms: one panel per parameter, one row of bars per chain.

    Parameters
    ----------
    counts : numpy.ndarray
        Shape ``(n_parameters, n_chains, n_bins)``: draws of each chain per
        bin of the ranks pooled over chains (from
        :func:`hyptest.stats._arviz.rank_plot_data`).
    labels : sequence of str
        One label per parameter, e.g. ``"sigma_order[icl]"``.
    expected : float
        Count per bin of a well-mixed chain (``n_draws / n_bins``): a dashed
        line in every row.
    title : str
        Figure title.
    colors : sequence of str, optional
        Bar colour per parameter (e.g. its method's colour).
    panel_width, row_height : int, optional
        Width of a panel and height of one chain's row, in pixels.
    max_columns : int, optional
        Panels per row before wrapping.

    Returns
    -------
    str
        Inline SVG with one ``<g class="panel" data-parameter=...>`` per
        parameter, one ``class="bar"`` per (chain, bin) (``data-chain``,
        ``data-count``, a tooltip) and one ``class="expected"`` line per
        (parameter, chain).  Every row's axis runs from 0 to ``2 × expected``;
        taller bars are cut at the row top and flagged ``data-clipped="1"``.
    """
    arr = np.asarray(counts, dtype=float)
    if arr.ndim != 3 or arr.size == 0 or not np.isfinite(expected) or expected <= 0:
        return message_svg("no rank data", title=title, kind="rank-plot")
    n_par, n_chains, n_bins = arr.shape
    ncol = min(n_par, max(int(max_columns), 1))
    nrow = math.ceil(n_par / ncol)
    pad_top, pad_bottom, pad_left = 26.0, 40.0, 66.0
    panel_height = pad_top + n_chains * row_height + pad_bottom
    head = 34.0
    width, height = ncol * panel_width + 10, head + nrow * panel_height + 22
    cmax = 2.0 * float(expected)
    with drawing(width, height, title) as sk:
        for pi in range(n_par):
            ox, oy = 5.0 + (pi % ncol) * panel_width, head + (pi // ncol) * panel_height
            left, right = ox + pad_left, ox + panel_width - 10.0
            color = colors[pi] if colors is not None and pi < len(colors) else "#0072B2"
            label = str(labels[pi]) if pi < len(labels) else f"parameter {pi}"
            group = ("panel", "data-parameter", label)
            sk.tag(sk.text((left + right) / 2, oy + 14, label, ha="center", fontweight="bold", color="#222222"),
                   "panel-title", wrap=group)
            for c in range(n_chains):
                ax = sk.axes(left, oy + pad_top + c * row_height + 3, right - left, row_height - 3)
                ax.set_xlim(0, n_bins)
                ax.set_ylim(0, cmax)
                ax.set_axis_off()
                sk.tag(ax, "chain-row", wrap=group, chain=c)
                row = arr[pi, c]
                bars = ax.bar(np.arange(n_bins) + 0.02, np.minimum(row, cmax), width=0.96, align="edge", color=color,
                              alpha=0.75)
                for b, (bar, v) in enumerate(zip(bars, row.tolist(), strict=True)):
                    sk.tag(bar, "bar", title=f"chain {c}, bin {b + 1}: {int(round(v))} draws", chain=c,
                           count=int(round(v)), clipped="1" if v > cmax else None)
                sk.tag(ax.axhline(expected, color="#111111", lw=1, ls=(0, (4, 3))), "expected")
                ax.axhline(0, color="#bbbbbb", lw=0.8)
                sk.tag(sk.text(left - 5, oy + pad_top + (c + 0.5) * row_height + 4, f"chain {c}", ha="right",
                               fontsize=10, color="#333333"), "chain-label", wrap=group)
            bottom = oy + pad_top + n_chains * row_height
            sk.tag(sk.text(ox + 10, (oy + pad_top + bottom) / 2, "draws per bin, by chain", ha="center",
                           va="center", rotation=90, fontsize=9.5, color="#222222"), "y-label", wrap=group)
            sk.tag(sk.text(left, bottom + 13, "lowest", fontsize=10, color="#333333"), "x-tick", wrap=group)
            sk.tag(sk.text(right, bottom + 13, "highest", ha="right", fontsize=10, color="#333333"), "x-tick",
                   wrap=group)
            sk.tag(sk.text((left + right) / 2, bottom + 28, f"rank among all chains' draws ({n_bins} bins)",
                           ha="center", fontsize=10.5, color="#222222"), "x-label", wrap=group)
        sk.text(width - 10, height - 8, f"dashed: {expected:.3g} draws per bin, the height of every bar if the "
                "chains mix well", ha="right", fontsize=10, color="#555555")
        return sk.svg(title=title, kind="rank-plot")
