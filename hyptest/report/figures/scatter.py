"""Small-multiple scatter of the reference method's P(gold) against each gradient-based method's."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .canvas import data_range, drawing, message_svg, style_axes
from .colors import method_colors

__all__ = ["order_scatter_plot", "subsample_index"]


def subsample_index(n: int, max_points: int) -> np.ndarray:
    """Deterministic subsample of ``range(n)`` of at most ``max_points`` indices.

    Parameters
    ----------
    n : int
        Number of items.
    max_points : int
        Largest number of indices to keep (at least 1).

    Returns
    -------
    numpy.ndarray
        Sorted integer indices: all of ``range(n)`` when ``n <= max_points``,
        otherwise ``max_points`` indices drawn without replacement from a
        generator created afresh as ``np.random.default_rng(0)`` (so the
        same input always gives the same figure).
    """
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(n, size=max(int(max_points), 1), replace=False))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN with fewer than 3 points or a constant input."""
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def order_scatter_plot(
    pairs: pd.DataFrame,
    *,
    methods: Sequence[str],
    title: str,
    reference: str = "icl",
    reference_label: str = "ICL",
    method_labels: dict[str, str] | None = None,
    colors: dict[str, str] | None = None,
    max_points: int = 3000,
    panel_width: int = 250,
    max_columns: int = 4,
) -> str:
    """Small-multiple scatter of the reference's P(gold) against each method's.

    One panel per method in ``methods``: each point is one (demo set, order,
    query) for which both the reference (ICL) and the method have a
    probability of the gold label; x is the reference's probability and y the
    method's.  Both axes of a panel share one range, fitted to the data within
    ``[0, 1]`` (see :func:`hyptest.report.figures.canvas.data_range`), so the
    dashed diagonal ``y = x`` marks exact agreement.

    Parameters
    ----------
    pairs : pandas.DataFrame
        Long frame with columns ``method``, ``x`` (reference P(gold)) and
        ``y`` (the method's P(gold)), one row per (demo set, order, query) and
        method, already restricted to a single (model, task, n_demos) group.
        Rows with a non-finite ``x`` or ``y`` are dropped.
    methods : sequence of str
        Panel order; methods with no rows still get a panel that says so.
    title : str
        Figure title.
    reference : str, optional
        Name of the reference method, used for the x-axis colour.
    reference_label : str, optional
        Display name of the reference in the x-axis label (default ``"ICL"``).
    method_labels : dict of str to str, optional
        Display name per method for the panel titles (default: the name).
    colors : dict of str to str, optional
        Colour per method (see :func:`method_colors`).
    max_points : int, optional
        Most points drawn per panel (default 3000); larger panels show a
        deterministic subsample (:func:`subsample_index`) and say so.
    panel_width : int, optional
        Width of one panel in pixels (default 250); panels are square.
    max_columns : int, optional
        Panels per row before wrapping (default 4).

    Returns
    -------
    str
        Inline SVG with one ``<g class="panel" data-method=... data-xlim=...
        data-ylim=...>`` per method (its plotting area is the ``class="frame"``
        rectangle); each drawn pair is one ``class="pt"`` marker inside the
        panel's ``<g class="pts">``, and each panel has one
        ``class="diagonal"`` line.  A panel's header gives the number of pairs
        and their Pearson correlation ``r`` (on all pairs, not only the drawn
        ones).
    """
    methods = [str(m) for m in methods]
    labels = method_labels or {}
    df = pairs if pairs is not None else pd.DataFrame(columns=["method", "x", "y"])
    if not {"method", "x", "y"} <= set(df.columns):
        df = pd.DataFrame(columns=["method", "x", "y"])
    if not methods:
        return message_svg("no gradient-based method to compare", title=title, kind="order-scatter")
    cols = {**method_colors([reference, *methods]), **(colors or {})}
    ncol = min(len(methods), max(int(max_columns), 1))
    nrow = math.ceil(len(methods) / ncol)
    pad_left, pad_right, pad_top, pad_bottom = 52.0, 14.0, 34.0, 44.0
    plot = panel_width - pad_left - pad_right
    panel_height = pad_top + plot + pad_bottom
    head = 34.0
    width, height = ncol * panel_width + 10, head + nrow * panel_height + 8
    method_col = df["method"].astype(str) if len(df) else pd.Series([], dtype=str)
    with drawing(width, height, title) as sk:
        for i, m in enumerate(methods):
            ox, oy = 5.0 + (i % ncol) * panel_width, head + (i // ncol) * panel_height
            sub = df.loc[method_col == m] if len(df) else df
            x = pd.to_numeric(sub["x"], errors="coerce").to_numpy(dtype=float) if len(sub) else np.empty(0)
            y = pd.to_numeric(sub["y"], errors="coerce").to_numpy(dtype=float) if len(sub) else np.empty(0)
            ok = np.isfinite(x) & np.isfinite(y)
            x, y = x[ok], y[ok]
            keep = subsample_index(int(x.size), max_points)
            xs, ys = x[keep], y[keep]
            color, name = cols.get(m, "#444444"), labels.get(m, m)
            lim = data_range(np.concatenate([x, y]), floor=0.0, ceiling=1.0, pad=0.04)
            ax = sk.axes(ox + pad_left, oy + pad_top, plot, plot)
            style_axes(ax, grid="both", frame=True)
            ax.set_facecolor("#fbfbfc")
            ax.set_xlim(*lim)
            ax.set_ylim(*lim)
            ax.xaxis.set_major_locator(_locator())
            ax.yaxis.set_major_locator(_locator())
            ax.tick_params(labelsize=9)
            sk.tag(ax, "panel", method=m, xlim=f"{lim[0]:.6g} {lim[1]:.6g}", ylim=f"{lim[0]:.6g} {lim[1]:.6g}")
            sk.tag(ax.patch, "frame")
            ax.set_title(name, color=color, pad=16)
            (diag,) = ax.plot(lim, lim, color="#777777", lw=1.2, ls=(0, (4, 3)))
            sk.tag(diag, "diagonal")
            small = xs.size <= 500
            (pts,) = ax.plot(xs, ys, "o", ls="none", ms=4.8 if small else 3.2, mfc=color, mec=color, mew=0.4,
                             alpha=0.55 if small else 0.3)
            sk.tag(pts, "pts", child_class="pt")
            if x.size == 0:
                ax.text(0.5, 0.5, "no paired data", transform=ax.transAxes, ha="center", va="center",
                        color="#666666")
            else:
                r = _pearson(x, y)
                shown = f"{xs.size} of {x.size} pairs (subsample)" if xs.size < x.size else f"n = {x.size}"
                ax.text(0.5, 1.015, shown + (f" · r = {r:.2f}" if math.isfinite(r) else ""),
                        transform=ax.transAxes, ha="center", va="bottom", fontsize=9.5, color="#555555")
            ax.set_xlabel(f"{reference_label} P(gold)", color=cols.get(reference, "#222222"), fontsize=10.5)
            ax.set_ylabel(f"{m} P(gold)", color=color, fontsize=10.5)
            sk.tag(ax.xaxis.label, "x-label")
            sk.tag(ax.yaxis.label, "y-label")
        return sk.svg(title=title, kind="order-scatter")


def _locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10])
