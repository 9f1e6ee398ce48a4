"""Tiny, dependency-free SVG plotting for the hyptest HTML report.

Every function here is pure: it takes data and returns an SVG document as a
string.  All text that reaches the SVG is escaped with :func:`html.escape`, and
the only URL that appears in the output is the SVG namespace
(``http://www.w3.org/2000/svg``).  The output is well-formed XML, so it can be
parsed with :func:`xml.etree.ElementTree.fromstring` and inlined into HTML.

Figures
-------
order_sensitivity_plot
    Per-query order sensitivity (std of P(gold) across demonstration orders),
    one column per method, jittered points plus mean and 95% CI.
resampling_distribution_plot
    Histogram of the bootstrap distribution of a statistic with the estimate,
    the null value, the equivalence margin and the interval the verdict used.
order_scatter_plot
    Small multiples: the reference method's P(gold) (ICL) against each
    gradient-based method's P(gold), one point per (demo set, order, query).
posterior_plot
    Histogram of posterior draws (given as counts and bin edges) with the
    HDI, the region of practical equivalence (ROPE) and a line at 0.
grouped_bar_chart
    Bars per group (e.g. per (model, task, N)) and series (methods), with a
    reference series drawn as a dashed line across its group.
line_panels
    Small multiples of lines with 95% CI whiskers or bands, one line per
    series (method, matrix), a categorical or numeric x axis, optional
    dashed reference lines and marked points.
rank_plot
    Per-chain rank histograms of MCMC draws (one panel per parameter, one
    row of bars per chain), the convergence check of Vehtari et al. (2021).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "PALETTE",
    "EXTRA_COLORS",
    "SVG_NS",
    "method_colors",
    "nice_ticks",
    "format_tick",
    "order_sensitivity_plot",
    "resampling_distribution_plot",
    "order_scatter_plot",
    "posterior_plot",
    "grouped_bar_chart",
    "subsample_index",
    "shade",
    "family_colors",
    "method_family",
    "SeriesPoint",
    "Panel",
    "line_panels",
    "rank_plot",
]

#: The SVG namespace; the only URL that appears in generated SVG.
SVG_NS = "http://www.w3.org/2000/svg"

#: Fixed colours for the known methods (Okabe–Ito, colour-blind safe).
PALETTE: dict[str, str] = {
    "icl": "#D55E00",  # vermillion
    "gd": "#0072B2",  # blue
    "sgd": "#009E73",  # bluish green
    "adam": "#CC79A7",  # reddish purple
    "zs": "#7F7F7F",  # grey: the no-demo baseline
}

#: Colours handed out, in order, to methods not in :data:`PALETTE`.
EXTRA_COLORS: tuple[str, ...] = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#8C6D31",  # brown
    "#666666",  # grey
    "#F0E442",  # yellow
    "#000000",  # black
)

_FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif\""


def _esc(text: object) -> str:
    """Escape any object's string form for use in SVG text or attributes.

    Besides :func:`html.escape`, ``://`` is written as ``&#58;//`` so that no
    literal URL other than the SVG namespace appears in the output.
    """
    return html.escape(str(text), quote=True).replace("://", "&#58;//")


def _num(x: float) -> str:
    """Format a coordinate compactly (two decimals, no trailing zeros)."""
    if not math.isfinite(x):
        return "0"
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """Assign a consistent colour to each method.

    Parameters
    ----------
    methods : iterable of str
        Method names, in display order.

    Returns
    -------
    dict of str to str
        Colour (``#RRGGBB``) per method.  Known methods (``icl``, ``gd``,
        ``sgd``, ``adam``) always get their fixed :data:`PALETTE` colour;
        unknown methods get the next unused colour of :data:`EXTRA_COLORS`
        (cycling if there are more methods than colours).
    """
    out: dict[str, str] = {}
    k = 0
    for m in methods:
        if m in out:
            continue
        key = str(m).lower()
        if key in PALETTE:
            out[m] = PALETTE[key]
        else:
            out[m] = EXTRA_COLORS[k % len(EXTRA_COLORS)]
            k += 1
    return out


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Return "nice" tick positions covering ``[lo, hi]``.

    Parameters
    ----------
    lo, hi : float
        Data range.  Non-finite or degenerate ranges are widened.
    n : int, optional
        Approximate number of intervals (default 5).

    Returns
    -------
    list of float
        Increasing tick values; the first is ``<= lo`` and the last ``>= hi``.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi < lo:
        lo, hi = hi, lo
    span = hi - lo
    if span <= 0:
        span = abs(hi) if hi != 0 else 1.0
        lo, hi = lo - span / 2 if lo != 0 else 0.0, hi + span / 2
        span = hi - lo
    raw = span / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = 10.0 * mag
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * mag >= raw * (1 - 1e-9):
            step = m * mag
            break
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    count = int(round((stop - start) / step)) + 1
    ticks = [start + i * step for i in range(max(count, 2))]
    # Clean tiny float noise such as 0.30000000000000004 (12 significant digits, so that ticks of a
    # range of 1e-13 stay distinct: rounding to 12 decimals made them all 0)
    return [0.0 if abs(t) < step * 1e-9 else float(f"{t:.12g}") for t in ticks]


def format_tick(value: float, step: float) -> str:
    """Format a tick label with just enough decimals for the tick step.

    Parameters
    ----------
    value : float
        Tick value.
    step : float
        Distance between neighbouring ticks.

    Returns
    -------
    str
        Label such as ``"0.025"``, ``"10"`` or ``"2e-06"``.
    """
    if step <= 0 or not math.isfinite(step):
        return f"{value:.3g}"
    if abs(value) < step * 1e-9:
        return "0"
    decimals = 0
    while decimals < 12 and abs(round(step, decimals) - step) > step * 1e-6:
        decimals += 1
    if decimals > 5 or abs(value) >= 1e6:
        return f"{value:.3g}"
    return f"{value:.{decimals}f}"


def _svg_open(width: int, height: int, title: str, css_class: str) -> list[str]:
    return [
        f'<svg xmlns="{SVG_NS}" class="{_esc(css_class)}" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="xMidYMid meet" {_FONT} font-size="12">',
        f"<title>{_esc(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2:.0f}" y="22" text-anchor="middle" font-size="14" '
        f'font-weight="600" fill="#222">{_esc(title)}</text>',
    ]


def _y_axis(
    parts: list[str],
    ticks: Sequence[float],
    to_y: Callable[[float], float],
    left: float,
    right: float,
    label: str,
    top: float,
    bottom: float,
    label_x: float = 16.0,
) -> None:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    parts.append('<g class="y-axis">')
    for t in ticks:
        y = to_y(t)
        parts.append(
            f'<line x1="{_num(left)}" y1="{_num(y)}" x2="{_num(right)}" y2="{_num(y)}" '
            f'stroke="#e3e3e3" stroke-width="1"/>'
        )
        parts.append(
            f'<line x1="{_num(left - 4)}" y1="{_num(y)}" x2="{_num(left)}" y2="{_num(y)}" '
            f'stroke="#444" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{_num(left - 7)}" y="{_num(y + 4)}" text-anchor="end" '
            f'fill="#333">{_esc(format_tick(t, step))}</text>'
        )
    parts.append(
        f'<line x1="{_num(left)}" y1="{_num(top)}" x2="{_num(left)}" y2="{_num(bottom)}" '
        f'stroke="#444" stroke-width="1"/>'
    )
    cy = (top + bottom) / 2
    parts.append(
        f'<text class="y-label" x="{_num(label_x)}" y="{_num(cy)}" text-anchor="middle" fill="#222" '
        f'transform="rotate(-90 {_num(label_x)} {_num(cy)})">{_esc(label)}</text>'
    )
    parts.append("</g>")


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
        Figure title (escaped).
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
        Colour per method, so that several figures share one assignment
        (see :func:`method_colors`); methods missing from it get
        :func:`method_colors`' choice.

    Returns
    -------
    str
        SVG document.  Each finite value is drawn as one
        ``<circle class="pt" .../>``; the mean is a ``<path class="mean">``
        diamond and the CI a ``<line class="ci">``.

    Notes
    -----
    Jitter is deterministic: it is drawn from ``np.random.default_rng(0)``
    created afresh on every call, column by column in display order.
    """
    parts = _svg_open(width, height, title, "hyptest-fig order-sensitivity")
    df = per_query if per_query is not None else pd.DataFrame(columns=["method", value_col])
    if "method" not in df.columns or value_col not in df.columns:
        df = pd.DataFrame(columns=["method", value_col])

    present = [str(m) for m in pd.unique(df["method"].astype(str))] if len(df) else []
    methods = [m for m in methods_order if m in present]
    methods += [m for m in present if m not in methods]
    colors = {**method_colors(methods), **(colors or {})}
    summ = _summary_lookup(summary)

    values: dict[str, np.ndarray] = {}
    stats: dict[str, tuple[float, float, float]] = {}
    for m in methods:
        v = pd.to_numeric(df.loc[df["method"].astype(str) == m, value_col], errors="coerce")
        v = v.to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        values[m] = v
        if m in summ:
            stats[m] = summ[m]
        elif v.size:
            mean = float(v.mean())
            if v.size > 1:
                se = float(v.std(ddof=1)) / math.sqrt(v.size)
                stats[m] = (mean, mean - 1.96 * se, mean + 1.96 * se)
            else:
                stats[m] = (mean, float("nan"), float("nan"))

    left, right, top, bottom = 78.0, width - 20.0, 40.0, height - 58.0
    if not methods:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            f'fill="#666">no per-query data</text>'
        )
        parts.append("</svg>")
        return "\n".join(parts)

    all_vals = [x for v in values.values() for x in v.tolist()]
    for mean, lo, hi in stats.values():
        all_vals.extend(x for x in (mean, lo, hi) if math.isfinite(x))
    vmin = min(all_vals) if all_vals else 0.0
    vmax = max(all_vals) if all_vals else 1.0
    ticks = nice_ticks(min(0.0, vmin), vmax if vmax > 0 else 1e-3)
    y0, y1 = ticks[0], ticks[-1]

    def to_y(v: float) -> float:
        return bottom - (v - y0) / (y1 - y0) * (bottom - top)

    _y_axis(parts, ticks, to_y, left, right, y_label, top, bottom)
    parts.append(
        f'<line x1="{_num(left)}" y1="{_num(bottom)}" x2="{_num(right)}" y2="{_num(bottom)}" '
        f'stroke="#444" stroke-width="1"/>'
    )

    rng = np.random.default_rng(0)
    colw = (right - left) / len(methods)
    radius = 2.6 if max(len(v) for v in values.values()) <= 400 else 1.8
    for i, m in enumerate(methods):
        cx = left + (i + 0.5) * colw
        px = cx - 0.08 * colw
        v = values[m]
        jit = rng.uniform(-0.2, 0.2, size=v.size) * colw
        color = colors[m]
        parts.append(f'<g class="method" data-method="{_esc(m)}">')
        for x, val in zip(px + jit, v, strict=True):
            parts.append(
                f'<circle class="pt" cx="{_num(x)}" cy="{_num(to_y(val))}" r="{radius}" '
                f'fill="{color}" fill-opacity="0.5" stroke="{color}" stroke-opacity="0.8" '
                f'stroke-width="0.5"/>'
            )
        if m in stats:
            mean, lo, hi = stats[m]
            mx = cx + 0.3 * colw
            if math.isfinite(lo) and math.isfinite(hi):
                ylo, yhi = to_y(lo), to_y(hi)
                parts.append(
                    f'<line class="ci" x1="{_num(mx)}" y1="{_num(ylo)}" x2="{_num(mx)}" '
                    f'y2="{_num(yhi)}" stroke="#111" stroke-width="1.6"/>'
                )
                for yy in (ylo, yhi):
                    parts.append(
                        f'<line class="ci-cap" x1="{_num(mx - 5)}" y1="{_num(yy)}" '
                        f'x2="{_num(mx + 5)}" y2="{_num(yy)}" stroke="#111" stroke-width="1.6"/>'
                    )
            my = to_y(mean)
            parts.append(
                f'<path class="mean" d="M {_num(mx)} {_num(my - 6)} L {_num(mx + 6)} {_num(my)} '
                f'L {_num(mx)} {_num(my + 6)} L {_num(mx - 6)} {_num(my)} Z" fill="{color}" '
                f'stroke="#111" stroke-width="1.2"/>'
            )
        parts.append(
            f'<text class="xlabel" x="{_num(cx)}" y="{_num(bottom + 18)}" text-anchor="middle" '
            f'fill="{color}" font-weight="600">{_esc(m)}</text>'
        )
        parts.append(
            f'<text x="{_num(cx)}" y="{_num(bottom + 33)}" text-anchor="middle" '
            f'fill="#555" font-size="11">n = {v.size}</text>'
        )
        parts.append("</g>")
    parts.append(
        f'<text x="{_num(right)}" y="{height - 8}" text-anchor="end" fill="#555" font-size="11">'
        f"points: queries (jittered) · diamond: mean · bar: 95% CI</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


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
        Observed statistic: a dashed line (``line.estimate``).
    title, x_label : str
        Figure title and x axis label (escaped).
    null_value : float, optional
        The value of no difference (or the threshold ρ₀): a solid line (``line.null``).
    margin : float, optional
        Half-width of the equivalence region around ``null_value``: two dotted
        lines (``line.margin``) at ``null_value ± margin``.
    interval : (float, float), optional
        The interval the verdict used: a bar under the axis (``line.interval``);
        infinite ends are clipped to the axis.
    bins : int, optional
        Number of histogram bins over the range of ``draws`` (default 40).
    width, height : int, optional
        Nominal size in pixels; the SVG has a matching ``viewBox`` and scales.

    Returns
    -------
    str
        SVG document with one ``<rect class="bar">`` per bin.
    """
    parts = _svg_open(width, height, title, "hyptest-fig resampling-distribution")
    arr = np.asarray(draws, dtype=float).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            f'fill="#666">no resampling draws available</text>'
        )
        parts.append("</svg>")
        return "\n".join(parts)

    def finite(v: Any) -> float | None:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return f if math.isfinite(f) else None

    est, null, half = finite(estimate), finite(null_value), finite(margin)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        pad = abs(lo) * 0.05 if lo != 0 else 0.5
        lo, hi = lo - pad, hi + pad
    counts, edges = np.histogram(arr, bins=bins, range=(lo, hi))
    marks = [v for v in (est, null) if v is not None]
    if null is not None and half is not None:
        marks += [null - half, null + half]
    xlo, xhi = min([lo, *marks]), max([hi, *marks])
    xticks = nice_ticks(xlo, xhi, 6)
    yticks = nice_ticks(0.0, float(counts.max()) if counts.max() > 0 else 1.0, 4)

    left, right, top, bottom = 70.0, width - 30.0, 52.0, height - 58.0
    x0, x1 = xticks[0], xticks[-1]
    y0, y1 = yticks[0], yticks[-1]

    def to_x(v: float) -> float:
        return left + (min(max(v, x0), x1) - x0) / (x1 - x0) * (right - left)

    def to_y(v: float) -> float:
        return bottom - (v - y0) / (y1 - y0) * (bottom - top)

    _y_axis(parts, yticks, to_y, left, right, "count", top, bottom)
    xstep = xticks[1] - xticks[0]
    parts.append('<g class="x-axis">')
    parts.append(
        f'<line x1="{_num(left)}" y1="{_num(bottom)}" x2="{_num(right)}" y2="{_num(bottom)}" '
        f'stroke="#444" stroke-width="1"/>'
    )
    for t in xticks:
        x = to_x(t)
        parts.append(
            f'<line x1="{_num(x)}" y1="{_num(bottom)}" x2="{_num(x)}" y2="{_num(bottom + 4)}" '
            f'stroke="#444" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{_num(x)}" y="{_num(bottom + 17)}" text-anchor="middle" '
            f'fill="#333">{_esc(format_tick(t, xstep))}</text>'
        )
    parts.append(
        f'<text x="{_num((left + right) / 2)}" y="{height - 8}" text-anchor="middle" '
        f'fill="#222">{_esc(x_label)}</text>'
    )
    parts.append("</g>")

    parts.append('<g class="bars">')
    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        xa, xb = to_x(float(a)), to_x(float(b))
        yc = to_y(float(c))
        parts.append(
            f'<rect class="bar" x="{_num(xa)}" y="{_num(yc)}" width="{_num(max(xb - xa - 0.5, 0.5))}" '
            f'height="{_num(bottom - yc)}" fill="#bfcbd9"/>'
        )
    parts.append("</g>")

    if interval is not None:
        a, b = (float(v) if v is not None else math.nan for v in interval)
        if not (math.isnan(a) and math.isnan(b)):
            xa = to_x(a) if not math.isnan(a) else left
            xb = to_x(b) if not math.isnan(b) else right
            parts.append(
                f'<line class="interval" x1="{_num(xa)}" y1="{_num(bottom + 28)}" x2="{_num(xb)}" '
                f'y2="{_num(bottom + 28)}" stroke="#1d1d1f" stroke-width="4"/>'
            )
    if null is not None and half is not None:
        for v in (null - half, null + half):
            x = to_x(v)
            parts.append(
                f'<line class="margin" x1="{_num(x)}" y1="{_num(top)}" x2="{_num(x)}" y2="{_num(bottom)}" '
                f'stroke="#2e7d32" stroke-width="1.5" stroke-dasharray="2 3"/>'
            )
    if null is not None:
        x = to_x(null)
        parts.append(
            f'<line class="null" x1="{_num(x)}" y1="{_num(top)}" x2="{_num(x)}" y2="{_num(bottom)}" '
            f'stroke="#444" stroke-width="1.5"/>'
        )
    if est is not None:
        ox = to_x(est)
        anchor = "end" if ox > (left + right) / 2 else "start"
        dx = -5 if anchor == "end" else 5
        parts.append(
            f'<line class="estimate" x1="{_num(ox)}" y1="{_num(top)}" x2="{_num(ox)}" '
            f'y2="{_num(bottom)}" stroke="#C62828" stroke-width="2" stroke-dasharray="5 3"/>'
        )
        parts.append(
            f'<text x="{_num(ox + dx)}" y="{_num(top + 12)}" text-anchor="{anchor}" '
            f'fill="#C62828" font-weight="600">estimate = {_esc(f"{est:.3g}")}</text>'
        )
    parts.append(
        f'<text x="{_num(right)}" y="{_num(top - 10)}" text-anchor="end" fill="#555" '
        f'font-size="11">{arr.size} resampling draws, {bins} bins</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


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
    method's.  Both axes run over ``[0, 1]`` and the dashed diagonal ``y = x``
    marks exact agreement.

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
        Figure title (escaped).
    reference : str, optional
        Name of the reference method, used for the x-axis colour (default
        ``"icl"``).
    reference_label : str, optional
        Display name of the reference in the x-axis label (default ``"ICL"``).
    method_labels : dict of str to str, optional
        Display name per method for the panel titles (default: the name).
    colors : dict of str to str, optional
        Colour per method (see :func:`method_colors`), so that every figure of
        a report uses the same colour for a method.
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
        SVG document with one ``<g class="panel" data-method=...>`` per
        method; each drawn pair is one ``<circle class="pt" .../>`` inside
        the panel's ``<g class="pts">`` (which carries the method's colour),
        and each panel has one ``<line class="diagonal">``.  A panel's header
        gives the number of pairs and their Pearson correlation ``r``
        (computed on all pairs, not only the drawn ones).
    """
    methods = [str(m) for m in methods]
    labels = method_labels or {}
    df = pairs if pairs is not None else pd.DataFrame(columns=["method", "x", "y"])
    if not {"method", "x", "y"} <= set(df.columns):
        df = pd.DataFrame(columns=["method", "x", "y"])
    cols = {**method_colors([reference, *methods]), **(colors or {})}

    n_panels = max(len(methods), 1)
    ncol = min(n_panels, max(int(max_columns), 1))
    nrow = math.ceil(n_panels / ncol)
    pad_left, pad_right, pad_top, pad_bottom = 52.0, 14.0, 34.0, 44.0
    plot = panel_width - pad_left - pad_right
    panel_height = pad_top + plot + pad_bottom
    head = 34.0
    width = int(ncol * panel_width + 10)
    height = int(head + nrow * panel_height + 8)
    parts = _svg_open(width, height, title, "hyptest-fig order-scatter")
    if not methods:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            f'fill="#666">no gradient-based method to compare</text>'
        )
        parts.append("</svg>")
        return "\n".join(parts)

    ticks = [(0.0, "0"), (0.25, "0.25"), (0.5, "0.5"), (0.75, "0.75"), (1.0, "1")]
    method_col = df["method"].astype(str) if len(df) else pd.Series([], dtype=str)
    for i, m in enumerate(methods):
        ox = 5.0 + (i % ncol) * panel_width
        oy = head + (i // ncol) * panel_height
        left, top = ox + pad_left, oy + pad_top
        right, bottom = left + plot, top + plot

        def to_x(v: float, left: float = left) -> float:
            return left + v * plot

        def to_y(v: float, bottom: float = bottom) -> float:
            return bottom - v * plot

        sub = df.loc[method_col == m] if len(df) else df
        x = pd.to_numeric(sub["x"], errors="coerce").to_numpy(dtype=float) if len(sub) else np.empty(0)
        y = pd.to_numeric(sub["y"], errors="coerce").to_numpy(dtype=float) if len(sub) else np.empty(0)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        n_all = int(x.size)
        keep = subsample_index(n_all, max_points)
        xs, ys = x[keep], y[keep]
        color = cols.get(m, "#444444")
        name = labels.get(m, m)

        parts.append(f'<g class="panel" data-method="{_esc(m)}">')
        parts.append(
            f'<text x="{_num((left + right) / 2)}" y="{_num(oy + 14)}" text-anchor="middle" '
            f'fill="{color}" font-weight="600">{_esc(name)}</text>'
        )
        parts.append(
            f'<rect x="{_num(left)}" y="{_num(top)}" width="{_num(plot)}" height="{_num(plot)}" '
            f'fill="#fbfbfc" stroke="#444" stroke-width="1"/>'
        )
        for t, label in ticks:
            gx, gy = to_x(t), to_y(t)
            parts.append(
                f'<line x1="{_num(gx)}" y1="{_num(top)}" x2="{_num(gx)}" y2="{_num(bottom)}" '
                f'stroke="#e3e3e3" stroke-width="1"/>'
                f'<line x1="{_num(left)}" y1="{_num(gy)}" x2="{_num(right)}" y2="{_num(gy)}" '
                f'stroke="#e3e3e3" stroke-width="1"/>'
            )
            parts.append(
                f'<text x="{_num(gx)}" y="{_num(bottom + 14)}" text-anchor="middle" fill="#333" '
                f'font-size="10">{label}</text>'
                f'<text x="{_num(left - 4)}" y="{_num(gy + 3.5)}" text-anchor="end" fill="#333" '
                f'font-size="10">{label}</text>'
            )
        parts.append(
            f'<line class="diagonal" x1="{_num(to_x(0))}" y1="{_num(to_y(0))}" '
            f'x2="{_num(to_x(1))}" y2="{_num(to_y(1))}" stroke="#777" stroke-width="1.2" '
            f'stroke-dasharray="4 3"/>'
        )
        radius = 2.4 if xs.size <= 500 else 1.6
        opacity = 0.55 if xs.size <= 500 else 0.3
        # style once on the group: keeps a 3000-point panel near 150 kB
        parts.append(
            f'<g class="pts" fill="{color}" fill-opacity="{opacity}" stroke="{color}" '
            f'stroke-opacity="0.8" stroke-width="0.4">'
        )
        cxs = left + np.clip(xs, 0.0, 1.0) * plot
        cys = bottom - np.clip(ys, 0.0, 1.0) * plot
        parts.extend(
            f'<circle class="pt" cx="{_num(cx)}" cy="{_num(cy)}" r="{radius}"/>'
            for cx, cy in zip(cxs.tolist(), cys.tolist(), strict=True)
        )
        parts.append("</g>")
        if n_all == 0:
            parts.append(
                f'<text x="{_num((left + right) / 2)}" y="{_num((top + bottom) / 2)}" '
                f'text-anchor="middle" fill="#666">no paired data</text>'
            )
        else:
            r = _pearson(x, y)
            shown = f"{xs.size} of {n_all} pairs (subsample)" if xs.size < n_all else f"n = {n_all}"
            stat = shown + (f" · r = {r:.2f}" if math.isfinite(r) else "")
            parts.append(
                f'<text class="stat" x="{_num((left + right) / 2)}" y="{_num(top - 6)}" '
                f'text-anchor="middle" fill="#555" font-size="10">{_esc(stat)}</text>'
            )
        parts.append(
            f'<text x="{_num((left + right) / 2)}" y="{_num(bottom + 32)}" text-anchor="middle" '
            f'fill="{cols.get(reference, "#222")}" font-size="11">{_esc(reference_label)} P(gold)</text>'
        )
        cy_mid = (top + bottom) / 2
        lx = ox + 13
        parts.append(
            f'<text x="{_num(lx)}" y="{_num(cy_mid)}" text-anchor="middle" fill="{color}" '
            f'font-size="11" transform="rotate(-90 {_num(lx)} {_num(cy_mid)})">'
            f"{_esc(m)} P(gold)</text>"
        )
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


def _x_axis(
    parts: list[str],
    ticks: Sequence[float],
    to_x: Callable[[float], float],
    left: float,
    right: float,
    bottom: float,
    label: str,
    label_y: float,
) -> None:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    parts.append('<g class="x-axis">')
    parts.append(
        f'<line x1="{_num(left)}" y1="{_num(bottom)}" x2="{_num(right)}" y2="{_num(bottom)}" '
        f'stroke="#444" stroke-width="1"/>'
    )
    for t in ticks:
        x = to_x(t)
        parts.append(
            f'<line x1="{_num(x)}" y1="{_num(bottom)}" x2="{_num(x)}" y2="{_num(bottom + 4)}" '
            f'stroke="#444" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{_num(x)}" y="{_num(bottom + 16)}" text-anchor="middle" '
            f'fill="#333" font-size="11">{_esc(format_tick(t, step))}</text>'
        )
    parts.append(
        f'<text class="x-label" x="{_num((left + right) / 2)}" y="{_num(label_y)}" '
        f'text-anchor="middle" fill="#222">{_esc(label)}</text>'
    )
    parts.append("</g>")


def posterior_plot(
    counts: Sequence[float],
    edges: Sequence[float],
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
        Figure title (escaped).
    hdi : (float, float), optional
        Highest-density interval; drawn as a bar under the histogram, and the
        bins inside it are drawn darker.  Non-finite ends are ignored.
    hdi_prob : float, optional
        Probability mass of the HDI (e.g. 0.94), used in its label.
    rope : float, optional
        Half-width of the region of practical equivalence ``[-rope, rope]``,
        drawn as a grey band over the whole plot height.
    mean : float, optional
        Posterior mean, marked with a small triangle under the axis line.
    color : str, optional
        Colour of the bars and the HDI bar (the method's colour).
    x_label : str, optional
        X axis label.
    width, height : int, optional
        Nominal size in pixels; the SVG has a matching ``viewBox`` and scales.

    Returns
    -------
    str
        SVG document with one ``<rect class="bar">`` per bin (``data-in-hdi``
        says whether its centre lies in the HDI), a ``<rect class="rope">``
        when ``rope`` is given, a ``<line class="zero">`` and a
        ``<line class="hdi">`` when ``hdi`` is given.  Counts and edges that
        do not match (``len(edges) != len(counts) + 1``) or are not finite
        give a figure that says no posterior is available.
    """
    parts = _svg_open(width, height, title, "hyptest-fig posterior")
    try:
        c = np.asarray(counts, dtype=float).ravel()
        e = np.asarray(edges, dtype=float).ravel()
    except (TypeError, ValueError):
        c, e = np.empty(0), np.empty(0)
    ok = (
        c.size > 0
        and e.size == c.size + 1
        and bool(np.all(np.isfinite(c)))
        and bool(np.all(np.isfinite(e)))
        and bool(np.all(np.diff(e) > 0))
    )
    if not ok:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            f'fill="#666">no posterior draws available</text>'
        )
        parts.append("</svg>")
        return "\n".join(parts)

    r = float(rope) if rope is not None and math.isfinite(float(rope)) and float(rope) > 0 else None
    lo_h = hi_h = None
    if hdi is not None:
        a, b = (float(v) if v is not None else float("nan") for v in hdi)
        if math.isfinite(a) and math.isfinite(b):
            lo_h, hi_h = min(a, b), max(a, b)
    xs = [float(e[0]), float(e[-1]), 0.0]
    if r is not None:
        xs += [-r, r]
    if lo_h is not None:
        xs += [lo_h, hi_h]
    xticks = nice_ticks(min(xs), max(xs), 5)
    total = float(c.sum())
    dens = c if total <= 0 else c / total
    ymax = float(dens.max()) if dens.max() > 0 else 1.0
    left, right, top, bottom = 18.0, width - 18.0, 44.0, height - 64.0
    x0, x1 = xticks[0], xticks[-1]

    def to_x(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (right - left)

    def to_y(v: float) -> float:
        return bottom - v / (ymax * 1.08) * (bottom - top)

    if r is not None:
        xa, xb = to_x(-r), to_x(r)
        if xb - xa < 2:
            mid = (xa + xb) / 2
            xa, xb = mid - 1, mid + 1
        parts.append(
            f'<rect class="rope" x="{_num(xa)}" y="{_num(top)}" width="{_num(xb - xa)}" '
            f'height="{_num(bottom - top)}" fill="#9e9e9e" fill-opacity="0.28"/>'
        )
    parts.append('<g class="bars">')
    for cnt, d, a, b in zip(c, dens, e[:-1], e[1:], strict=True):
        centre = (a + b) / 2
        inside = lo_h is not None and lo_h <= centre <= hi_h
        xa, xb = to_x(float(a)), to_x(float(b))
        yc = to_y(float(d))
        opacity = "0.85" if inside or lo_h is None else "0.35"
        parts.append(
            f'<rect class="bar" x="{_num(xa)}" y="{_num(yc)}" width="{_num(max(xb - xa - 0.4, 0.4))}" '
            f'height="{_num(bottom - yc)}" fill="{_esc(color)}" fill-opacity="{opacity}" '
            f'data-in-hdi="{int(inside)}" data-count="{int(round(cnt))}"/>'
        )
    parts.append("</g>")
    zx = to_x(0.0)
    parts.append(
        f'<line class="zero" x1="{_num(zx)}" y1="{_num(top - 4)}" x2="{_num(zx)}" y2="{_num(bottom)}" '
        f'stroke="#222" stroke-width="1.2" stroke-dasharray="4 3"/>'
    )
    _x_axis(parts, xticks, to_x, left, right, bottom, x_label, height - 8)
    if lo_h is not None:
        ya = bottom + 31
        ha, hb = to_x(lo_h), to_x(hi_h)
        label = f"{_fmt_pct(hdi_prob)} HDI" if hdi_prob is not None else "HDI"
        parts.append(
            f'<line class="hdi" x1="{_num(ha)}" y1="{_num(ya)}" x2="{_num(hb)}" y2="{_num(ya)}" '
            f'stroke="{_esc(color)}" stroke-width="4" stroke-linecap="butt"/>'
        )
        for xx in (ha, hb):
            parts.append(
                f'<line x1="{_num(xx)}" y1="{_num(ya - 5)}" x2="{_num(xx)}" y2="{_num(ya + 5)}" '
                f'stroke="{_esc(color)}" stroke-width="1.6"/>'
            )
        # label beside the bar, on the side with more room
        if right - hb >= ha - left:
            lx, anchor = hb + 6, "start"
        else:
            lx, anchor = ha - 6, "end"
        parts.append(
            f'<text x="{_num(lx)}" y="{_num(ya + 3.5)}" text-anchor="{anchor}" fill="#333" '
            f'font-size="10">{_esc(label)}</text>'
        )
    if mean is not None and math.isfinite(float(mean)):
        mx = to_x(float(mean))
        parts.append(
            f'<path class="mean" d="M {_num(mx)} {_num(bottom - 1)} L {_num(mx - 5)} {_num(bottom - 9)} '
            f'L {_num(mx + 5)} {_num(bottom - 9)} Z" fill="#111"/>'
        )
    legend = []
    if r is not None:
        legend.append(f"grey band: ROPE ±{r:.3g}")
    legend.append("dashed: 0")
    if mean is not None and math.isfinite(float(mean)):
        legend.append("▼ mean")
    parts.append(
        f'<text x="{_num(right)}" y="{_num(top - 8)}" text-anchor="end" fill="#555" '
        f'font-size="10">{_esc(" · ".join(legend))}</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _bar_label(v: float) -> str:
    """Value label of a bar: three significant digits, no exponent above 1e-3."""
    if v == 0:
        return "0"
    if abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.3g}"


def _fmt_pct(p: float | None) -> str:
    """Format a probability as a percentage (``0.94`` -> ``"94%"``)."""
    if p is None or not math.isfinite(float(p)):
        return ""
    return f"{100 * float(p):.3g}%"


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
        Cluster labels along the x axis (escaped), in order.  A label is
        written one line per ``" · "``-separated part, each part cut to the
        cluster's width (the full label is the text's ``<title>``).
    series : sequence of str
        Series keys (e.g. method names) in bar order within a cluster.
    values : dict of (str, str) to float
        Bar heights keyed by ``(group, series)``; missing or non-finite
        values leave a gap.
    title, y_label : str
        Figure title and y axis label (escaped).
    series_labels : dict of str to str, optional
        Legend label per series (default: the key).
    colors : dict of str to str, optional
        Colour per series (see :func:`method_colors`).
    reference : str, optional
        Series drawn as the reference: its bar is outlined, and a dashed
        line at its value runs across the whole cluster, so the other bars
        read against it.
    width : int, optional
        Nominal width; by default it grows with the number of bars.
    height : int, optional
        Nominal height in pixels (default 280), plus 12 per extra line of
        the longest group label.

    Returns
    -------
    str
        SVG document with one ``<rect class="bar" data-group=... data-series=...>``
        per finite value and one ``<line class="reference">`` per cluster
        that has a reference value.  The y axis starts at 0.
    """
    groups = [str(g) for g in groups]
    series = [str(s) for s in series]
    labels = series_labels or {}
    cols = {**method_colors(series), **(colors or {})}
    n_bars = max(len(series), 1)
    bar_w = 30.0
    cluster_w = n_bars * bar_w + 26.0
    left, right_pad, top = 62.0, 14.0, 40.0
    if width is None:
        width = int(max(360.0, left + right_pad + max(len(groups), 1) * cluster_w))
    item_w = 24.0 + 5.8 * max((len(str(labels.get(s, s))) for s in series), default=10)
    per_row = max(1, int((width - 20.0) // item_w))
    legend_rows = math.ceil(len(series) / per_row) if series else 0
    label_lines = max((len(str(g).split(" · ")) for g in groups), default=1)
    height = int(height + 12 * (label_lines - 1))
    bottom = height - 46.0 - 16.0 * legend_rows - 12.0 * (label_lines - 1)
    right = width - right_pad
    parts = _svg_open(width, height, title, "hyptest-fig grouped-bars")
    finite = [float(v) for v in values.values() if v is not None and math.isfinite(float(v))]
    if not groups or not series or not finite:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            f'fill="#666">no values</text>'
        )
        parts.append("</svg>")
        return "\n".join(parts)
    yticks = nice_ticks(min(0.0, min(finite)), max(max(finite), 1e-12), 4)
    y0, y1 = yticks[0], yticks[-1]

    def to_y(v: float) -> float:
        return bottom - (v - y0) / (y1 - y0) * (bottom - top)

    _y_axis(parts, yticks, to_y, left, right, y_label, top, bottom)
    parts.append(
        f'<line x1="{_num(left)}" y1="{_num(bottom)}" x2="{_num(right)}" y2="{_num(bottom)}" '
        f'stroke="#444" stroke-width="1"/>'
    )
    slot = (right - left) / len(groups)
    for gi, g in enumerate(groups):
        cx = left + (gi + 0.5) * slot
        start = cx - n_bars * bar_w / 2
        parts.append(f'<g class="cluster" data-group="{_esc(g)}">')
        ref_v = values.get((g, reference)) if reference is not None else None
        for si, s in enumerate(series):
            v = values.get((g, s))
            if v is None or not math.isfinite(float(v)):
                continue
            v = float(v)
            xa = start + si * bar_w + 2
            ya, yb = sorted((to_y(v), to_y(0.0)))
            is_ref = s == reference
            stroke = ' stroke="#111" stroke-width="1.4"' if is_ref else ""
            parts.append(
                f'<rect class="bar{" reference-bar" if is_ref else ""}" x="{_num(xa)}" y="{_num(ya)}" '
                f'width="{_num(bar_w - 4)}" height="{_num(max(yb - ya, 0.5))}" fill="{cols.get(s, "#444")}" '
                f'fill-opacity="{0.55 if is_ref else 0.9}"{stroke} data-group="{_esc(g)}" '
                f'data-series="{_esc(s)}" data-value="{v:.6g}"><title>{_esc(labels.get(s, s))}: '
                f"{_esc(f'{v:.3g}')}</title></rect>"
            )
            parts.append(
                f'<text x="{_num(xa + (bar_w - 4) / 2)}" y="{_num(ya - 3)}" text-anchor="middle" '
                f'fill="#333" font-size="8">{_esc(_bar_label(v))}</text>'
            )
        if ref_v is not None and math.isfinite(float(ref_v)):
            yr = to_y(float(ref_v))
            parts.append(
                f'<line class="reference" x1="{_num(start)}" y1="{_num(yr)}" '
                f'x2="{_num(start + n_bars * bar_w)}" y2="{_num(yr)}" stroke="#111" '
                f'stroke-width="1.2" stroke-dasharray="4 3"/>'
            )
        # the group label, one line per " · " part, each cut to the slot width
        max_chars = max(4, int(slot / 6.2))
        lines = [ln if len(ln) <= max_chars else ln[: max_chars - 1] + "…" for ln in g.split(" · ")]
        tspans = "".join(
            f'<tspan x="{_num(cx)}" dy="{0 if k == 0 else 12}">{_esc(ln)}</tspan>'
            for k, ln in enumerate(lines)
        )
        parts.append(
            f'<text class="group-label" x="{_num(cx)}" y="{_num(bottom + 15)}" text-anchor="middle" '
            f'fill="#222" font-size="11"><title>{_esc(g)}</title>{tspans}</text>'
        )
        parts.append("</g>")
    # legend
    parts.append('<g class="legend">')
    for i, s in enumerate(series):
        lx = 20.0 + (i % per_row) * item_w
        ly = bottom + 32 + 12 * (label_lines - 1) + (i // per_row) * 16
        is_ref = s == reference
        outline = ' stroke="#111"' if is_ref else ""
        parts.append(
            f'<rect x="{_num(lx)}" y="{_num(ly - 9)}" width="10" height="10" fill="{cols.get(s, "#444")}" '
            f'fill-opacity="{0.55 if is_ref else 0.9}"{outline}/>'
            f'<text x="{_num(lx + 14)}" y="{_num(ly)}" fill="#333" font-size="10.5">'
            f"{_esc(labels.get(s, s))}</text>"
        )
    parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- #
# Colours of method families
# --------------------------------------------------------------------------- #
def shade(color: str, amount: float) -> str:
    """Lighten (``amount > 0``) or darken (``amount < 0``) a ``#RRGGBB`` colour.

    Parameters
    ----------
    color : str
        Colour as ``#RRGGBB``; anything else is returned unchanged.
    amount : float
        In ``[-1, 1]``: the share of the way towards white (positive) or
        black (negative).

    Returns
    -------
    str
        The mixed colour as ``#RRGGBB`` (lower case).
    """
    c = str(color)
    if len(c) != 7 or not c.startswith("#"):
        return c
    try:
        rgb = [int(c[i : i + 2], 16) for i in (1, 3, 5)]
    except ValueError:
        return c
    a = max(-1.0, min(1.0, float(amount)))
    target = 255 if a > 0 else 0
    mixed = [round(v + (target - v) * abs(a)) for v in rgb]
    return "#" + "".join(f"{v:02x}" for v in mixed)


def method_family(method: str) -> str:
    """Family of a method name: the part before ``"@"`` (``"sgd@lr=0.0003"`` -> ``"sgd"``)."""
    return str(method).split("@", 1)[0]


def family_colors(methods: Iterable[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Colour per method, where the members of one grid family share a hue.

    Parameters
    ----------
    methods : iterable of str
        Method names in display order.  A grid member is named
        ``"<family>@<setting>"`` (e.g. ``"sgd@lr=0.0003"``).
    base : mapping of str to str, optional
        Colours already assigned (the report's :func:`method_colors`); a
        method found here keeps its colour, and a family found here lends its
        colour to its members.

    Returns
    -------
    dict of str to str
        Colour per method.  A family's colour comes from ``base``, else from
        :func:`method_colors` over the families.  A family with one member
        gets the family colour itself; with several, members (in display
        order) run from darker to lighter shades of it (the bare family name,
        when it is a member, keeps the pure colour).
    """
    base = dict(base or {})
    methods = list(dict.fromkeys(str(m) for m in methods))
    families = list(dict.fromkeys(method_family(m) for m in methods))
    fam_cols = {**method_colors(families), **{f: base[f] for f in families if f in base}}
    out: dict[str, str] = {}
    for fam in families:
        members = [m for m in methods if method_family(m) == fam and m not in base]
        grid = [m for m in members if m != fam]
        if fam in members:
            out[fam] = fam_cols[fam]
        if len(grid) == 1 and fam not in members:
            out[grid[0]] = fam_cols[fam]
        elif grid:
            k = len(grid)
            for i, m in enumerate(grid):
                amount = -0.35 + 0.9 * i / (k - 1) if k > 1 else 0.0
                out[m] = shade(fam_cols[fam], amount)
    out.update({m: base[m] for m in methods if m in base})
    return out


# --------------------------------------------------------------------------- #
# Small multiples of lines
# --------------------------------------------------------------------------- #
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
        Panel heading (escaped).
    y_label : str
        Y axis label, with units (escaped).
    series : dict of str to list of SeriesPoint
        The lines, keyed by series name (e.g. a method).
    hlines : list of (float, str)
        Horizontal dashed reference lines and their labels (e.g. the ICL
        value).
    ref_lines : dict of str to list of (float, float)
        Dashed polylines ``[(x, y), ...]`` keyed by a label (e.g. a baseline
        that changes with the layer); x values follow the axis kind.
    note : str
        A short line under the title (escaped).
    y_min, y_max : float or None
        Values the y axis must include (e.g. 0 and 1 for shares).
    """

    title: str
    y_label: str
    series: dict[str, list[SeriesPoint]] = field(default_factory=dict)
    hlines: list[tuple[float, str]] = field(default_factory=list)
    ref_lines: dict[str, list[tuple[float | str, float]]] = field(default_factory=dict)
    note: str = ""
    y_min: float | None = None
    y_max: float | None = None


def _finite(v: object) -> float | None:
    """``float(v)`` when it is a finite number, else None."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


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
        Figure title (escaped).
    x_label : str
        X axis label of every panel, with units (escaped).
    categories : sequence of str, optional
        When given the x axis is categorical: one evenly spaced slot per
        category in this order (e.g. N = 1, 2, 4, 8 or checkpoint labels);
        points whose ``str(x)`` is not a category are dropped.  Otherwise the
        x axis is numeric with "nice" ticks.
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
        Legend text for the markers of marked points (shown when any point
        is marked).
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
        SVG document.  Each panel is a ``<g class="panel" data-panel=...>``
        with a ``<g class="y-axis">`` (its ``<text class="y-label">``) and a
        ``<g class="x-axis">`` (its ``<text class="x-label">``).  Each series
        in a panel is a ``<g class="series" data-series=...>`` holding one
        ``<circle class="pt">`` per finite point, a ``<path class="line">``
        when it has two or more points, and a ``<line class="ci">`` per
        whisker or one ``<path class="band">`` per run of consecutive
        intervals; marked points get a ``<path class="marked">``.  Each
        horizontal reference is a ``<line class="hline">`` and each
        reference polyline a ``<path class="ref-line">`` (both dashed).
    """
    if interval not in ("whiskers", "band"):
        raise ValueError(f"`interval` must be 'whiskers' or 'band', got {interval!r}")
    labels = dict(series_labels or {})
    cats = [str(c) for c in categories] if categories is not None else None
    names: list[str] = [str(s) for s in (series_order or [])]
    for p in panels:
        for s in p.series:
            if str(s) not in names:
                names.append(str(s))
    present = [n for n in names if any(n in p.series and p.series[n] for p in panels)]
    cols = {**method_colors(present), **dict(colors or {})}
    ref_names = list(dict.fromkeys(k for p in panels for k in p.ref_lines))
    hline_names = list(dict.fromkeys(lbl for p in panels for _, lbl in p.hlines))
    any_marked = any(pt.marked for p in panels for pts in p.series.values() for pt in pts)
    any_interval = any(_finite(pt.lo) is not None and _finite(pt.hi) is not None
                       for p in panels for pts in p.series.values() for pt in pts)

    n_panels = max(len(panels), 1)
    ncol = min(n_panels, max(int(max_columns), 1))
    nrow = math.ceil(n_panels / ncol)
    width = int(ncol * panel_width + 10)
    legend_items = (
        [(n, "series") for n in present]
        + [(n, "hline") for n in hline_names]
        + [(n, "ref") for n in ref_names]
        + ([(marker_label or "marked", "marker")] if any_marked else [])
        + ([(interval_label, "interval")] if any_interval else [])
    )
    item_w = 34.0 + 6.0 * max((len(str(labels.get(n, n))) for n, _ in legend_items), default=8)
    per_row = max(1, int((width - 20.0) // item_w))
    legend_rows = math.ceil(len(legend_items) / per_row)
    head = 34.0
    height = int(head + nrow * panel_height + 12 + 16 * legend_rows)
    parts = _svg_open(width, height, title, "hyptest-fig line-panels")
    if not panels or not present:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            f'fill="#666">no values</text>'
        )
        parts.append("</svg>")
        return "\n".join(parts)

    def key_of(x: object) -> float | str | None:
        if cats is not None:
            return str(x) if str(x) in cats else None
        return _finite(x)

    n_series = len(present)
    for pi, p in enumerate(panels):
        ox = 5.0 + (pi % ncol) * panel_width
        oy = head + (pi // ncol) * panel_height
        left, right = ox + 62.0, ox + panel_width - 12.0
        top, bottom = oy + (40.0 if p.note else 28.0), oy + panel_height - 40.0
        xs: list[float] = []
        ys: list[float] = [v for v in (_finite(p.y_min), _finite(p.y_max)) if v is not None]
        for pts in p.series.values():
            for pt in pts:
                k = key_of(pt.x)
                if k is None:
                    continue
                if isinstance(k, float):
                    xs.append(k)
                ys.extend(v for v in (_finite(pt.y), _finite(pt.lo), _finite(pt.hi)) if v is not None)
        for line in p.ref_lines.values():
            for x, y in line:
                k = key_of(x)
                if k is not None and _finite(y) is not None:
                    if isinstance(k, float):
                        xs.append(k)
                    ys.append(float(y))
        ys.extend(float(y) for y, _ in p.hlines if _finite(y) is not None)
        yticks = nice_ticks(min(ys) if ys else 0.0, max(ys) if ys else 1.0, 4)
        y0, y1 = yticks[0], yticks[-1]

        def to_y(v: float, y0: float = y0, y1: float = y1, top: float = top, bottom: float = bottom) -> float:
            return bottom - (v - y0) / (y1 - y0) * (bottom - top)

        if cats is not None:
            slot = (right - left) / max(len(cats), 1)
            dodge = min(8.0, slot * 0.5 / max(n_series, 1))

            def to_x(v: float | str, si: int = 0, left: float = left, slot: float = slot,
                     dodge: float = dodge) -> float:
                i = cats.index(str(v))
                return left + (i + 0.5) * slot + (si - (n_series - 1) / 2) * dodge
        else:
            xticks = nice_ticks(min(xs) if xs else 0.0, max(xs) if xs else 1.0, 5)
            x0, x1 = xticks[0], xticks[-1]

            def to_x(v: float | str, si: int = 0, left: float = left, right: float = right,
                     x0: float = x0, x1: float = x1) -> float:
                return left + (float(v) - x0) / (x1 - x0) * (right - left)

        parts.append(f'<g class="panel" data-panel="{_esc(p.title)}">')
        parts.append(
            f'<text class="panel-title" x="{_num((left + right) / 2)}" y="{_num(oy + 14)}" '
            f'text-anchor="middle" fill="#222" font-weight="600">{_esc(p.title)}</text>'
        )
        if p.note:
            parts.append(
                f'<text x="{_num((left + right) / 2)}" y="{_num(oy + 27)}" text-anchor="middle" '
                f'fill="#555" font-size="10">{_esc(p.note)}</text>'
            )
        _y_axis(parts, yticks, to_y, left, right, p.y_label, top, bottom, label_x=ox + 14)
        if cats is not None:
            parts.append('<g class="x-axis">')
            parts.append(
                f'<line x1="{_num(left)}" y1="{_num(bottom)}" x2="{_num(right)}" y2="{_num(bottom)}" '
                f'stroke="#444" stroke-width="1"/>'
            )
            max_chars = max(3, int(slot / 6.0))
            for c in cats:
                cx = to_x(c, (n_series - 1) / 2)
                short = c if len(c) <= max_chars else c[: max_chars - 1] + "…"
                parts.append(
                    f'<line x1="{_num(cx)}" y1="{_num(bottom)}" x2="{_num(cx)}" y2="{_num(bottom + 4)}" '
                    f'stroke="#444" stroke-width="1"/>'
                    f'<text class="x-tick" data-category="{_esc(c)}" x="{_num(cx)}" y="{_num(bottom + 16)}" '
                    f'text-anchor="middle" fill="#333" font-size="11"><title>{_esc(c)}</title>{_esc(short)}</text>'
                )
            parts.append(
                f'<text class="x-label" x="{_num((left + right) / 2)}" y="{_num(bottom + 32)}" '
                f'text-anchor="middle" fill="#222">{_esc(x_label)}</text>'
            )
            parts.append("</g>")
        else:
            _x_axis(parts, xticks, to_x, left, right, bottom, x_label, bottom + 32)
        for y, lbl in p.hlines:
            fy = _finite(y)
            if fy is None:
                continue
            yy = to_y(fy)
            parts.append(
                f'<line class="hline" x1="{_num(left)}" y1="{_num(yy)}" x2="{_num(right)}" y2="{_num(yy)}" '
                f'stroke="#111" stroke-width="1.3" stroke-dasharray="6 3" data-label="{_esc(lbl)}">'
                f"<title>{_esc(lbl)}: {_esc(f'{fy:.3g}')}</title></line>"
            )
        for lbl, line in p.ref_lines.items():
            pts = [(key_of(x), _finite(y)) for x, y in line]
            pts = [(k, y) for k, y in pts if k is not None and y is not None]
            if not pts:
                continue
            if cats is None:
                pts.sort(key=lambda t: float(t[0]))
            else:
                pts.sort(key=lambda t: cats.index(str(t[0])))
            coords = [(to_x(k, (n_series - 1) / 2), to_y(y)) for k, y in pts]
            if len(coords) == 1:
                (cx, cy), = coords
                coords = [(cx - 6, cy), (cx + 6, cy)]
            d = " ".join(f"{'M' if i == 0 else 'L'} {_num(a)} {_num(b)}" for i, (a, b) in enumerate(coords))
            parts.append(
                f'<path class="ref-line" d="{d}" fill="none" stroke="#555" stroke-width="1.4" '
                f'stroke-dasharray="5 3" data-label="{_esc(lbl)}"/>'
            )
        for si, name in enumerate(present):
            pts_raw = p.series.get(name) or []
            pts = [(key_of(pt.x), pt) for pt in pts_raw]
            pts = [(k, pt) for k, pt in pts if k is not None and _finite(pt.y) is not None]
            if cats is None:
                pts.sort(key=lambda t: float(t[0]))
            else:
                pts.sort(key=lambda t: cats.index(str(t[0])))
            if not pts:
                continue
            color = cols.get(name, "#444444")
            parts.append(f'<g class="series" data-series="{_esc(name)}">')
            if interval == "band":
                run: list[tuple[float, float, float]] = []
                runs: list[list[tuple[float, float, float]]] = []
                for k, pt in pts:
                    lo, hi = _finite(pt.lo), _finite(pt.hi)
                    if lo is None or hi is None:
                        if run:
                            runs.append(run)
                        run = []
                        continue
                    run.append((to_x(k, si), to_y(lo), to_y(hi)))
                if run:
                    runs.append(run)
                for r in runs:
                    if len(r) == 1:
                        x, ylo, yhi = r[0]
                        r = [(x - 3, ylo, yhi), (x + 3, ylo, yhi)]
                    d = " ".join(f"{'M' if i == 0 else 'L'} {_num(x)} {_num(yhi)}" for i, (x, _, yhi) in enumerate(r))
                    d += " " + " ".join(f"L {_num(x)} {_num(ylo)}" for x, ylo, _ in reversed(r)) + " Z"
                    parts.append(f'<path class="band" d="{d}" fill="{color}" fill-opacity="0.18" stroke="none"/>')
            else:
                for k, pt in pts:
                    lo, hi = _finite(pt.lo), _finite(pt.hi)
                    if lo is None or hi is None:
                        continue
                    x = to_x(k, si)
                    ya, yb = to_y(lo), to_y(hi)
                    parts.append(
                        f'<line class="ci" x1="{_num(x)}" y1="{_num(ya)}" x2="{_num(x)}" y2="{_num(yb)}" '
                        f'stroke="{color}" stroke-width="1.4"/>'
                    )
                    for yy in (ya, yb):
                        parts.append(
                            f'<line class="ci-cap" x1="{_num(x - 3)}" y1="{_num(yy)}" x2="{_num(x + 3)}" '
                            f'y2="{_num(yy)}" stroke="{color}" stroke-width="1.4"/>'
                        )
            coords = [(to_x(k, si), to_y(float(pt.y))) for k, pt in pts]  # type: ignore[arg-type]
            if len(coords) > 1:
                d = " ".join(f"{'M' if i == 0 else 'L'} {_num(a)} {_num(b)}" for i, (a, b) in enumerate(coords))
                parts.append(f'<path class="line" d="{d}" fill="none" stroke="{color}" stroke-width="1.8"/>')
            for (k, pt), (cx, cy) in zip(pts, coords, strict=True):
                lo, hi = _finite(pt.lo), _finite(pt.hi)
                where = k if isinstance(k, str) else f"{k:g}"
                tip = f"{labels.get(name, name)} · {where}: {float(pt.y):.3g}"  # type: ignore[arg-type]
                if lo is not None and hi is not None:
                    tip += f" [{lo:.3g}, {hi:.3g}]"
                parts.append(
                    f'<circle class="pt" cx="{_num(cx)}" cy="{_num(cy)}" r="3" fill="{color}" '
                    f'stroke="#fff" stroke-width="0.8"><title>{_esc(tip)}</title></circle>'
                )
                if pt.marked:
                    my = min(cy, to_y(hi) if hi is not None else cy) - 6
                    parts.append(
                        f'<path class="marked" d="M {_num(cx)} {_num(my)} L {_num(cx - 4.5)} {_num(my - 8)} '
                        f'L {_num(cx + 4.5)} {_num(my - 8)} Z" fill="#C62828" stroke="#111" stroke-width="0.6"/>'
                    )
            parts.append("</g>")
        parts.append("</g>")
    # legend
    parts.append('<g class="legend">')
    ly0 = head + nrow * panel_height + 8
    for i, (name, kind) in enumerate(legend_items):
        lx = 20.0 + (i % per_row) * item_w
        ly = ly0 + (i // per_row) * 16
        if kind == "series":
            c = cols.get(name, "#444")
            sw = (f'<line x1="{_num(lx)}" y1="{_num(ly - 4)}" x2="{_num(lx + 20)}" y2="{_num(ly - 4)}" '
                  f'stroke="{c}" stroke-width="2"/><circle cx="{_num(lx + 10)}" cy="{_num(ly - 4)}" r="3" fill="{c}"/>')
        elif kind in ("hline", "ref"):
            c = "#111" if kind == "hline" else "#555"
            sw = (f'<line x1="{_num(lx)}" y1="{_num(ly - 4)}" x2="{_num(lx + 20)}" y2="{_num(ly - 4)}" '
                  f'stroke="{c}" stroke-width="1.4" stroke-dasharray="5 3"/>')
        elif kind == "marker":
            sw = (f'<path d="M {_num(lx + 10)} {_num(ly)} L {_num(lx + 5.5)} {_num(ly - 8)} '
                  f'L {_num(lx + 14.5)} {_num(ly - 8)} Z" fill="#C62828" stroke="#111" stroke-width="0.6"/>')
        elif interval == "band":
            sw = f'<rect x="{_num(lx)}" y="{_num(ly - 9)}" width="20" height="10" fill="#444" fill-opacity="0.18"/>'
        else:
            sw = (f'<line x1="{_num(lx + 10)}" y1="{_num(ly - 10)}" x2="{_num(lx + 10)}" y2="{_num(ly + 1)}" '
                  f'stroke="#444" stroke-width="1.4"/>')
        parts.append(
            f'{sw}<text x="{_num(lx + 25)}" y="{_num(ly)}" fill="#333" font-size="10.5">'
            f"{_esc(labels.get(name, name) if kind == 'series' else name)}</text>"
        )
    parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


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
        One label per parameter, e.g. ``"sigma_order[icl]"`` (escaped).
    expected : float
        Count per bin of a well-mixed chain (``n_draws / n_bins``); drawn as a
        dashed line in every row.
    title : str
        Figure title (escaped).
    colors : sequence of str, optional
        Bar colour per parameter (e.g. its method's colour).
    panel_width, row_height : int, optional
        Width of a panel and height of one chain's row, in pixels.
    max_columns : int, optional
        Panels per row before wrapping.

    Returns
    -------
    str
        SVG document with one ``<g class="panel" data-parameter=...>`` per
        parameter, one ``<rect class="bar" data-chain=...>`` per (chain, bin)
        and one ``<line class="expected">`` per (parameter, chain).  Bars of a
        row are scaled to ``2 × expected`` (taller bars are clipped at the
        row top and flagged ``data-clipped="1"``).
    """
    arr = np.asarray(counts, dtype=float)
    if arr.ndim != 3 or arr.size == 0 or not np.isfinite(expected) or expected <= 0:
        parts = _svg_open(400, 120, title, "hyptest-fig rank-plot")
        parts.append('<text x="200" y="70" text-anchor="middle" fill="#666">no rank data</text>')
        parts.append("</svg>")
        return "\n".join(parts)
    n_par, n_chains, n_bins = arr.shape
    ncol = min(n_par, max(int(max_columns), 1))
    nrow = math.ceil(n_par / ncol)
    pad_top, pad_bottom, pad_left = 26.0, 40.0, 56.0
    panel_height = pad_top + n_chains * row_height + pad_bottom
    head = 34.0
    width = int(ncol * panel_width + 10)
    height = int(head + nrow * panel_height + 22)
    parts = _svg_open(width, height, title, "hyptest-fig rank-plot")
    cmax = 2.0 * float(expected)
    for pi in range(n_par):
        ox = 5.0 + (pi % ncol) * panel_width
        oy = head + (pi // ncol) * panel_height
        left, right = ox + pad_left, ox + panel_width - 10.0
        top = oy + pad_top
        bottom = top + n_chains * row_height
        color = (colors[pi] if colors is not None and pi < len(colors) else "#0072B2")
        label = str(labels[pi]) if pi < len(labels) else f"parameter {pi}"
        parts.append(f'<g class="panel" data-parameter="{_esc(label)}">')
        parts.append(
            f'<text class="panel-title" x="{_num((left + right) / 2)}" y="{_num(oy + 14)}" '
            f'text-anchor="middle" fill="#222" font-weight="600">{_esc(label)}</text>'
        )
        bw = (right - left) / n_bins
        for c in range(n_chains):
            rb = top + (c + 1) * row_height
            rt = rb - row_height + 3
            parts.append(
                f'<text x="{_num(left - 5)}" y="{_num(rb - row_height / 2 + 4)}" text-anchor="end" '
                f'fill="#333" font-size="10">chain {c}</text>'
            )
            for b in range(n_bins):
                v = float(arr[pi, c, b])
                h = min(v, cmax) / cmax * (rb - rt)
                parts.append(
                    f'<rect class="bar" x="{_num(left + b * bw + 0.3)}" y="{_num(rb - h)}" '
                    f'width="{_num(max(bw - 0.6, 0.4))}" height="{_num(h)}" fill="{_esc(color)}" '
                    f'fill-opacity="0.75" data-chain="{c}" data-count="{int(round(v))}"'
                    f'{" data-clipped=" + chr(34) + "1" + chr(34) if v > cmax else ""}/>'
                )
            ye = rb - float(expected) / cmax * (rb - rt)
            parts.append(
                f'<line class="expected" x1="{_num(left)}" y1="{_num(ye)}" x2="{_num(right)}" y2="{_num(ye)}" '
                f'stroke="#111" stroke-width="1" stroke-dasharray="4 3"/>'
            )
            parts.append(
                f'<line x1="{_num(left)}" y1="{_num(rb)}" x2="{_num(right)}" y2="{_num(rb)}" '
                f'stroke="#bbb" stroke-width="0.8"/>'
            )
        cy = (top + bottom) / 2
        parts.append(
            f'<text class="y-label" x="{_num(ox + 12)}" y="{_num(cy)}" text-anchor="middle" fill="#222" '
            f'font-size="11" transform="rotate(-90 {_num(ox + 12)} {_num(cy)})">draws per bin, by chain</text>'
        )
        parts.append('<g class="x-axis">')
        parts.append(
            f'<text x="{_num(left)}" y="{_num(bottom + 13)}" text-anchor="start" fill="#333" '
            f'font-size="10">lowest</text>'
            f'<text x="{_num(right)}" y="{_num(bottom + 13)}" text-anchor="end" fill="#333" '
            f'font-size="10">highest</text>'
        )
        parts.append(
            f'<text class="x-label" x="{_num((left + right) / 2)}" y="{_num(bottom + 28)}" text-anchor="middle" '
            f'fill="#222" font-size="11">rank among all chains\' draws ({n_bins} bins)</text>'
        )
        parts.append("</g>")
        parts.append("</g>")
    parts.append(
        f'<text x="{width - 10}" y="{height - 8}" text-anchor="end" fill="#555" font-size="10">'
        f"dashed: {_esc(f'{expected:.3g}')} draws per bin, the height of every bar if the chains mix well</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)
