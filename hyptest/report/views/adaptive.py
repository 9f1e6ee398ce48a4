"""The report's view of an adaptive run: confidence sequences against units collected, and stopping points.

Reads the ``adaptive`` rows of the results (written by :func:`hyptest.analysis.adaptive.adaptive_comparisons`):
per confirmatory comparison its clipped per-set statistics ``x``, running
``estimate``, confidence sequence ``cs_low``/``cs_high`` at ``cs_level``,
``stop_sets``, ``status``, ``verdict``, ``units_per_set``, ``margin`` and
``bound``. Figures reuse :func:`hyptest.report.figures.line_panels` (every
string escaped there); the rows are plain strings for the autoescaping
template.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from .. import figures

__all__ = ["adaptive_view"]


def _fmt(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—"
    return f"{f:.{digits}g}" if math.isfinite(f) else "—"


def adaptive_view(adaptive: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Figure and table of the adaptive section; None when the run was not adaptive.

    x: units collected for the comparison (reference + method, cumulative over
    demo sets); y: the running mean of the clipped per-set log ratio with its
    confidence sequence as a band; dashed lines at 0 and ±margin; the last
    point (the stopping point) is marked.
    """
    items = [t for t in adaptive if t.get("x")]
    if not items:
        return None
    panels = []
    rows = []
    for t in items:
        per_set = 2 * int(t.get("orders_per_set") or 0) if not t.get("units_per_set") else \
            int(t["orders_per_set"]) + int(t["units_per_set"])
        est, low, high = t.get("estimate") or [], t.get("cs_low") or [], t.get("cs_high") or []
        points = [figures.SeriesPoint(x=(i + 1) * per_set, y=est[i], lo=low[i], hi=high[i], marked=i == len(est) - 1)
                  for i in range(len(est))]
        margin = t.get("margin")
        hlines = [(0.0, "no difference")]
        if margin is not None:
            hlines += [(float(margin), "+margin"), (-float(margin), "−margin")]
        name = f"{t['method_a']} vs {t['method_b']}"
        title = f"{t['model']} · {t['task']} · N={t['n_demos']} · {name}"
        if t.get("analysis") != "order_sensitivity":
            title += f" · {t['analysis']}"
        panels.append(figures.Panel(title=title, y_label="log ratio (clipped, per set)", series={name: points},
                                hlines=hlines))
        rows.append({
            "context": f"{t['model']} · {t['task']} · N={t['n_demos']}", "comparison": name,
            "analysis": str(t.get("analysis")), "verdict": str(t.get("verdict")), "status": str(t.get("status")),
            "sets": str(t.get("stop_sets")), "units": str(int(t.get("stop_sets") or 0) * per_set),
            "estimate": _fmt(est[-1]) if est else "—",
            "cs": f"[{_fmt(low[-1])}, {_fmt(high[-1])}]" if low else "—",
            "e_difference": _fmt((t.get("e_difference") or [math.nan])[-1]),
            "e_equivalence": _fmt((t.get("e_equivalence") or [math.nan])[-1]),
        })
    level = items[0].get("cs_level")
    figure = figures.line_panels(panels, title="Adaptive collection: confidence sequences", x_label="units collected",
                             interval="band", marker_label="stopping point",
                             interval_label=f"{_fmt(level, 4)} confidence sequence", max_columns=2,
                             panel_width=380)
    return {"figure": Markup(figure), "rows": rows, "level": _fmt(level, 4)}
