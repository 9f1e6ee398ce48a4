"""Self-contained HTML report for hyptest runs.

Public API
----------
render_report
    Render the report HTML from a ``results`` dict and the per-query frame.
write_report
    Render and atomically write ``report.html`` into a run directory.

The figures are drawn by the dependency-free :mod:`hyptest.report.svg`.
"""

from hyptest.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
