"""The report's figures, drawn with matplotlib and written as deterministic inline SVG.

Every function takes data and returns one ``<svg>`` element as a string, ready
to be inlined into the HTML report.  Figures are drawn with matplotlib's object
API (:class:`matplotlib.figure.Figure` and the SVG backend, never ``pyplot``)
on one shared canvas, :mod:`~hyptest.report.figures.canvas`, which also holds
the one rule that scales an axis to its data
(:func:`~hyptest.report.figures.canvas.data_range`) and writes the SVG the same
way on every run (no date, fixed hash salt, text as text).  Tooltips (a
``<title>`` per point or bar), classes and ``data-*`` attributes are added to
matplotlib's SVG after it is written (:meth:`Sketch.tag`).

Figures
-------
order_sensitivity_plot
    Per-query order sensitivity, one column per method, with mean and 95% CI.
resampling_distribution_plot
    Histogram of a bootstrap distribution with the estimate, null value,
    equivalence margin and the interval the verdict used.
order_scatter_plot
    Small multiples: the reference's P(gold) against each gradient-based method's.
posterior_plot
    Histogram of posterior draws with the HDI, the ROPE and a line at 0.
grouped_bar_chart
    Bars per group and series, the reference series as a dashed line.
line_panels
    Small multiples of lines with CI whiskers or bands (:class:`Panel`, :class:`SeriesPoint`).
rank_plot
    Per-chain rank histograms of MCMC draws.
"""

from .bars import grouped_bar_chart, rank_plot
from .canvas import SVG_NS, data_range
from .colors import EXTRA_COLORS, PALETTE, family_colors, method_colors, method_family, shade
from .distributions import order_sensitivity_plot, posterior_plot, resampling_distribution_plot
from .lines import Panel, SeriesPoint, line_panels
from .scatter import order_scatter_plot, subsample_index

__all__ = [
    "PALETTE",
    "EXTRA_COLORS",
    "SVG_NS",
    "data_range",
    "method_colors",
    "shade",
    "family_colors",
    "method_family",
    "order_sensitivity_plot",
    "resampling_distribution_plot",
    "order_scatter_plot",
    "posterior_plot",
    "grouped_bar_chart",
    "subsample_index",
    "SeriesPoint",
    "Panel",
    "line_panels",
    "rank_plot",
]
