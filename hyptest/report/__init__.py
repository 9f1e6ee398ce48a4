"""Self-contained HTML report for hyptest runs.

Public API
----------
render_report
    Render the report HTML from the results (a :class:`hyptest.contract.Results`,
    or the content of ``results.json``, validated once), the per-query frame
    and, optionally, the per-order frame (for the ICL-vs-GD scatter plots).
write_report
    Render and atomically write ``report.html`` into a run directory
    (reading ``per_order.parquet`` from it when no per-order frame is given).

The report only draws: each section's view is built in its own module of
:mod:`hyptest.report.views`, :mod:`hyptest.report.html` assembles them, and the
figures are drawn with matplotlib as deterministic inline SVG by
:mod:`hyptest.report.figures`.
"""

from hyptest.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
