"""Small multiples of lines with intervals (N sweeps, trajectories, checkpoints, layers, adaptive runs)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy

from .canvas import Sketch, add_line, data_range, drawing, finite, message_svg, style_axes, wrap_label
from .colors import method_colors

__all__ = ["SeriesPoint", "Panel", "line_panels"]

_MARK = "#C62828"


@dataclass
class SeriesPoint:
    """One point of a series in :func:`line_panels`.

    Attributes
    ----------
    x : float or str
        Position: a number on a numeric axis, or a category (compared as a
        string) on a categorical axis.
    y : float or None
        Estimate; missing or non-finite values leave a gap.
    lo, hi : float or None
        Ends of the interval (whisker or band); ignored unless both finite.
    marked : bool
        Draw a marker (a triangle) above the point, e.g. a layer whose
        verdict is "different".
    """

    x: float | str
    y: float | None
    lo: float | None = None
    hi: float | None = None
    marked: bool = False


@dataclass
class Panel:
    """One panel of :func:`line_panels`.

    Attributes
    ----------
    title : str
        Panel heading.
    y_label : str
        Y axis label, with units.
    series : dict of str to list of SeriesPoint
        The lines, keyed by series name (e.g. a method).
    hlines : list of (float, str)
        Horizontal dashed reference lines and their labels (e.g. the ICL value).
    ref_lines : dict of str to list of (float, float)
        Dashed polylines ``[(x, y), ...]`` keyed by a label (e.g. a baseline
        that changes with the layer); x values follow the axis kind.
    note : str
        A short line under the title.
    y_min, y_max : float or None
        Values the y axis must include; when every value lies on their side
        the axis also stops there (0 for shares and losses: no margin below 0).
    """

    title: str
    y_label: str
    series: dict[str, list[SeriesPoint]] = field(default_factory=dict)
    hlines: list[tuple[float, str]] = field(default_factory=list)
    ref_lines: dict[str, list[tuple[float | str, float]]] = field(default_factory=dict)
    note: str = ""
    y_min: float | None = None
    y_max: float | None = None


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "…"


def line_panels(
    panels: Sequence[Panel],
    *,
    title: str,
    x_label: str,
    categories: Sequence[str] | None = None,
    interval: str = "whiskers",
    series_order: Sequence[str] | None = None,
    series_labels: Mapping[str, str] | None = None,
    colors: Mapping[str, str] | None = None,
    marker_label: str = "",
    interval_label: str = "95% CI",
    panel_width: int = 300,
    panel_height: int = 230,
    max_columns: int = 3,
) -> str:
    """Small multiples of lines with intervals, one line per series.

    Parameters
    ----------
    panels : sequence of Panel
        The panels, in display order (wrapped after ``max_columns``).
    title : str
        Figure title.
    x_label : str
        X axis label of every panel, with units.
    categories : sequence of str, optional
        When given the x axis is categorical: one evenly spaced slot per
        category in this order; points whose ``str(x)`` is not a category are
        dropped.  Otherwise the x axis is numeric.
    interval : {"whiskers", "band"}, optional
        Draw each point's ``[lo, hi]`` as a whisker with caps (default) or as
        a translucent band along the line.
    series_order : sequence of str, optional
        Order of the series in the legend and drawing order; series not
        listed follow in order of first appearance.
    series_labels : mapping of str to str, optional
        Legend label per series (default: the name).
    colors : mapping of str to str, optional
        Colour per series (see :func:`method_colors`, :func:`family_colors`).
    marker_label : str, optional
        Legend text for the markers of marked points.
    interval_label : str, optional
        Legend text of the intervals (default ``"95% CI"``); shown only when
        some point has an interval.
    panel_width, panel_height : int, optional
        Size of one panel in pixels.
    max_columns : int, optional
        Panels per row before wrapping (default 3).

    Returns
    -------
    str
        Inline SVG.  Each panel is a ``<g class="panel" data-panel=...
        data-ylim=...>`` (its axis labels have class ``x-label`` and
        ``y-label``; a categorical axis's tick labels ``x-tick`` with
        ``data-category``).  Each series in a panel is a ``<g class="series"
        data-series=...>`` holding one ``class="pt"`` marker per finite point
        (its tooltip: series, x, value and interval), a ``class="line"`` when
        it has two or more points, and a ``class="ci"`` per whisker or one
        ``class="band"`` per run of consecutive intervals; marked points get a
        ``class="marked"``.  Horizontal references are ``class="hline"`` and
        reference polylines ``class="ref-line"`` (both dashed, with
        ``data-label``).  The y axis fits the values, intervals and
        references of its panel (plus ``y_min``/``y_max``).
    """
    if interval not in ("whiskers", "band"):
        raise ValueError(f"`interval` must be 'whiskers' or 'band', got {interval!r}")
    labels = dict(series_labels or {})
    cats = [str(c) for c in categories] if categories is not None else None
    names: list[str] = [str(s) for s in (series_order or [])]
    for p in panels:
        names += [str(s) for s in p.series if str(s) not in names]
    present = [n for n in names if any(n in p.series and p.series[n] for p in panels)]
    cols = {**method_colors(present), **dict(colors or {})}
    any_marked = any(pt.marked for p in panels for pts in p.series.values() for pt in pts)
    any_interval = any(finite(pt.lo) is not None and finite(pt.hi) is not None
                       for p in panels for pts in p.series.values() for pt in pts)
    legend = ([(labels.get(n, n), "series", cols.get(n, "#444444")) for n in present]
              + [(n, "hline", "#111111") for n in dict.fromkeys(lbl for p in panels for _, lbl in p.hlines)]
              + [(n, "ref", "#555555") for n in dict.fromkeys(k for p in panels for k in p.ref_lines)]
              + ([(marker_label or "marked", "marker", _MARK)] if any_marked else [])
              + ([(interval_label, interval, "#444444")] if any_interval else []))
    ncol = min(max(len(panels), 1), max(int(max_columns), 1))
    nrow = math.ceil(max(len(panels), 1) / ncol)
    width = ncol * panel_width + 10
    item_w = 34.0 + 6.2 * max((len(str(t)) for t, _, _ in legend), default=8)
    per_row = max(1, int((width - 20.0) // item_w))
    head = 34.0
    height = head + nrow * panel_height + 12 + 16 * math.ceil(len(legend) / per_row)
    if not panels or not present:
        return message_svg("no values", title=title, kind="line-panels", width=width, height=min(height, 160))
    with drawing(width, height, title) as sk:
        for pi, p in enumerate(panels):
            ox, oy = 5.0 + (pi % ncol) * panel_width, head + (pi // ncol) * panel_height
            top, bottom = oy + (40.0 if p.note else 28.0), oy + panel_height - 40.0
            y_label = wrap_label(p.y_label, bottom - top)
            left = ox + 50.0 + 13.0 * y_label.count("\n") + 12.0
            right = ox + panel_width - 12.0
            ax = sk.axes(left, top, right - left, bottom - top)
            _panel(sk, ax, p, cats=cats, present=present, cols=cols, labels=labels, interval=interval,
                   y_label=y_label, x_label=x_label, width_px=right - left,
                   height_px=bottom - top)
        _legend(sk, legend, top=head + nrow * panel_height + 8, item_w=item_w, per_row=per_row)
        return sk.svg(title=title, kind="line-panels")


def _panel(sk: Sketch, ax: Axes, p: Panel, *, cats: list[str] | None, present: list[str], cols: Mapping[str, str],
           labels: Mapping[str, str], interval: str, y_label: str, x_label: str, width_px: float,
           height_px: float) -> None:
    """Draw one panel of :func:`line_panels` on ``ax``."""
    style_axes(ax)

    def key_of(x: object) -> float | str | None:
        if cats is not None:
            return str(x) if str(x) in cats else None
        return finite(x)

    xs: list[float] = []
    ys: list[float] = []
    for pts in p.series.values():
        for pt in pts:
            k = key_of(pt.x)
            if k is not None and finite(pt.y) is not None:
                xs += [k] if isinstance(k, float) else []
                ys += [v for v in (finite(pt.y), finite(pt.lo), finite(pt.hi)) if v is not None]
    for line in p.ref_lines.values():
        for x, y in line:
            k = key_of(x)
            if k is not None and finite(y) is not None:
                xs += [k] if isinstance(k, float) else []
                ys.append(float(y))
    ys += [float(y) for y, _ in p.hlines if finite(y) is not None]
    y_min, y_max = finite(p.y_min), finite(p.y_max)
    ylim = data_range(ys, include=[v for v in (y_min, y_max) if v is not None],
                      floor=y_min if y_min is not None and all(y >= y_min for y in ys) else None,
                      ceiling=y_max if y_max is not None and all(y <= y_max for y in ys) else None)
    if any(pt.marked for pts in p.series.values() for pt in pts):  # room for the markers above the points
        ylim = (ylim[0], ylim[1] + (ylim[1] - ylim[0]) * 16.0 / max(height_px - 16.0, 1.0))
    ax.set_ylim(*ylim)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    n_series = len(present)
    if cats is not None:
        ax.set_xlim(-0.5, len(cats) - 0.5)
        slot_px = width_px / max(len(cats), 1)
        dodge = min(8.0, slot_px * 0.5 / max(n_series, 1)) / slot_px

        def to_x(k: float | str, si: float = 0.0) -> float:
            return cats.index(str(k)) + (si - (n_series - 1) / 2) * dodge  # type: ignore[union-attr]

        ax.set_xticks(range(len(cats)), [_cut(c, max(3, int(slot_px / 6.5))) for c in cats])
        for t, c in zip(ax.xaxis.get_major_ticks(), cats, strict=True):
            sk.tag(t.label1, "x-tick", title=c, category=c)
    else:
        lo, hi = data_range(xs, pad=0.04)
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10], integer=all(float(x).is_integer() for x in xs)))

        def to_x(k: float | str, si: float = 0.0) -> float:
            return float(k)

    px = (ax.get_xlim()[1] - ax.get_xlim()[0]) / width_px  # data units per pixel along x
    sk.tag(ax, "panel", panel=p.title, ylim=f"{ylim[0]:.6g} {ylim[1]:.6g}")
    chars = int(width_px / 6.8)
    sk.tag(ax.set_title(_cut(p.title, chars), pad=16 if p.note else 6), "panel-title", title=p.title)
    if p.note:
        ax.text(0.5, 1.02, _cut(p.note, int((width_px + 50) / 5.4)), transform=ax.transAxes, ha="center", va="bottom",
                fontsize=9.5, color="#555555")
    ax.set_ylabel(y_label, fontsize=10.5)
    sk.tag(ax.yaxis.label, "y-label")
    ax.set_xlabel(x_label, fontsize=10.5)
    sk.tag(ax.xaxis.label, "x-label")
    for y, lbl in p.hlines:
        fy = finite(y)
        if fy is not None:
            sk.tag(ax.axhline(fy, color="#111111", lw=1.3, ls=(0, (6, 3))), "hline", title=f"{lbl}: {fy:.3g}",
                   label=lbl, value=f"{fy:.6g}")
    for lbl, line in p.ref_lines.items():
        pts = [(key_of(x), finite(y)) for x, y in line]
        pts = [(k, y) for k, y in pts if k is not None and y is not None]
        if not pts:
            continue
        pts.sort(key=lambda t: cats.index(str(t[0])) if cats is not None else float(t[0]))  # type: ignore[arg-type]
        rx = [to_x(k, (n_series - 1) / 2) for k, _ in pts]
        ry = [y for _, y in pts]
        if len(rx) == 1:
            rx, ry = [rx[0] - 6 * px, rx[0] + 6 * px], ry * 2
        (ln,) = ax.plot(rx, ry, color="#555555", lw=1.4, ls=(0, (5, 3)))
        sk.tag(ln, "ref-line", label=lbl)
    for si, name in enumerate(present):
        _series(sk, ax, name, si, p.series.get(name) or [], key_of=key_of, to_x=to_x, cats=cats, px=px,
                color=cols.get(name, "#444444"), label=labels.get(name, name), interval=interval)


def _series(sk: Sketch, ax: Axes, name: str, si: int, raw: list[SeriesPoint], *, key_of, to_x, cats, px: float,
            color: str, label: str, interval: str) -> None:
    """One series of a panel: intervals, line, points with tooltips, markers; all in one ``g.series``."""
    pts = [(key_of(pt.x), pt) for pt in raw]
    pts = [(k, pt) for k, pt in pts if k is not None and finite(pt.y) is not None]
    if not pts:
        return
    pts.sort(key=lambda t: cats.index(str(t[0])) if cats is not None else float(t[0]))
    group = ("series", "data-series", name)
    if interval == "band":
        runs: list[list[tuple[float, float, float]]] = [[]]
        for k, pt in pts:
            lo, hi = finite(pt.lo), finite(pt.hi)
            if lo is None or hi is None:
                runs.append([])
            else:
                runs[-1].append((to_x(k, si), lo, hi))
        for run in (r for r in runs if r):
            if len(run) == 1:
                x, lo, hi = run[0]
                run = [(x - 3 * px, lo, hi), (x + 3 * px, lo, hi)]
            band = ax.fill_between([r[0] for r in run], [r[1] for r in run], [r[2] for r in run], color=color,
                                   alpha=0.18, lw=0)
            sk.tag(band, "band", wrap=group)
    else:
        for k, pt in pts:
            lo, hi = finite(pt.lo), finite(pt.hi)
            if lo is not None and hi is not None:
                ci = add_line(ax, [to_x(k, si)] * 2, [lo, hi], color=color, lw=1.4, marker="_", ms=6, mew=1.4)
                sk.tag(ci, "ci", wrap=group, low=f"{lo:.6g}", high=f"{hi:.6g}")
    if len(pts) > 1:
        (ln,) = ax.plot([to_x(k, si) for k, _ in pts], [float(pt.y) for _, pt in pts], color=color, lw=1.8)
        sk.tag(ln, "line", wrap=group)
    # one line of markers for the points (one artist per point made big reports slow); each marker gets its tooltip
    tips = []
    for k, pt in pts:
        lo, hi = finite(pt.lo), finite(pt.hi)
        where = k if isinstance(k, str) else f"{k:g}"
        tip = f"{label} · {where}: {float(pt.y):.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None
                                                           else "")
        tips.append({"title": tip, "x": where, "y": f"{float(pt.y):.6g}"})
    dots = add_line(ax, [to_x(k, si) for k, _ in pts], [float(pt.y) for _, pt in pts], ls="none", marker="o", ms=6,
                    mfc=color, mec="#ffffff", mew=0.8)
    sk.tag(dots, "pts", child_class="pt", children=tips, wrap=group)
    above = offset_copy(ax.transData, fig=sk.fig, y=9, units="points")
    for k, pt in pts:
        if pt.marked:
            hi = finite(pt.hi)
            y = float(pt.y)  # type: ignore[arg-type]
            top = max(y, hi) if hi is not None and interval == "whiskers" else y
            mk = add_line(ax, [to_x(k, si)], [top], ls="none", marker="v", ms=8, mfc=_MARK, mec="#111111",
                          mew=0.6, transform=above, clip_on=False)
            sk.tag(mk, "marked", wrap=group)


def _legend(sk: Sketch, items: list[tuple[str, str, str]], *, top: float, item_w: float, per_row: int) -> None:
    """The legend under the panels: a swatch per series, reference, marker and interval kind."""
    for i, (text, kind, color) in enumerate(items):
        lx, ly = 20.0 + (i % per_row) * item_w, top + 8 + (i // per_row) * 16
        if kind == "series":
            sk.line([lx, lx + 20], [ly - 4, ly - 4], color=color, lw=2)
            sk.line([lx + 10], [ly - 4], marker="o", ms=6, mfc=color, mec=color)
        elif kind in ("hline", "ref"):
            sk.line([lx, lx + 20], [ly - 4, ly - 4], color=color, lw=1.4, ls=(0, (5, 3)))
        elif kind == "marker":
            sk.line([lx + 10], [ly - 4], marker="v", ms=8, mfc=color, mec="#111111", mew=0.6)
        elif kind == "band":
            sk.rect(lx, ly - 9, 20, 10, facecolor="#444444", alpha=0.18, lw=0)
        else:
            sk.line([lx + 10, lx + 10], [ly - 10, ly + 1], color=color, lw=1.4)
        sk.text(lx + 25, ly, text, fontsize=10, color="#333333")
