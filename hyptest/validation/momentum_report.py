"""The self-contained HTML report of a momentum-attention run (figure, verdict table, method note).

Rendered from ``results.json`` alone by a Jinja2 template with autoescaping;
the figures are inline SVG from :func:`hyptest.report.figures.line_panels` (their
text is escaped there), so the file opens offline and fetches nothing.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from .._util import atomic_write_text

__all__ = ["experiment_run", "figures", "render_report", "write_report"]

COLORS = {"plain": "#0072B2", "momentum": "#D55E00", "momentum vs plain": "#D55E00"}


@functools.lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(loader=PackageLoader("hyptest.report", "templates"),
                       autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _band(summary: list[dict], variant: str) -> list[Any]:
    from ..report.figures import SeriesPoint

    return [SeriesPoint(x=row["k"], y=row["mean"], lo=row["min"], hi=row["max"])
            for row in summary if row["variant"] == variant]


def figures(results: dict[str, Any]) -> dict[str, str]:
    """The report's SVG figures: ICL loss vs k (with the optimum), the per-k log ratio, the training loss."""
    import numpy as np

    from ..report.figures import Panel, SeriesPoint, line_panels

    summary = results["summary"]
    eta = results["study"]["momentum"]["eta"]
    loss = Panel(title="ICL loss on the held-out set", y_label="MSE / d", y_min=0.0,
                 series={"plain": _band(summary, "plain"), "momentum": _band(summary, "momentum")},
                 ref_lines={"Bayes-optimal (least squares / ridge)": list(enumerate(results["optimum"])),
                            "predict 0": list(enumerate(results["zero_predictor"]))},
                 note="line: mean over seeds; band: min–max over seeds")
    ratios = np.stack([np.log(np.asarray(results["curves"]["momentum"][s])) -
                       np.log(np.asarray(results["curves"]["plain"][s])) for s in results["curves"]["plain"]])
    ratio = Panel(title="Paired log ratio per k", y_label="log(MSE momentum / MSE plain)",
                  series={"momentum vs plain": [SeriesPoint(x=k, y=float(ratios[:, k].mean()),
                                                            lo=float(ratios[:, k].min()), hi=float(ratios[:, k].max()))
                                                for k in range(ratios.shape[1])]},
                  hlines=[(0.0, "no difference")], note="< 0: momentum better; band: min–max over seeds")
    train = Panel(title="Training loss (mean over seeds)", y_label="training MSE / d", series={}, y_min=0.0)
    for variant in ("plain", "momentum"):
        logs = list(results["train_loss"][variant].values())
        steps = [s for s, _ in logs[0]]
        values = np.array([[v for _, v in log] for log in logs])
        train.series[variant] = [SeriesPoint(x=s, y=float(values[:, i].mean()), lo=float(values[:, i].min()),
                                             hi=float(values[:, i].max())) for i, s in enumerate(steps)]
    labels = {"plain": "plain attention", "momentum": f"momentum attention (η = {eta:g})",
              "momentum vs plain": f"momentum (η = {eta:g}) vs plain"}
    main = line_panels([loss, ratio], title="ICL loss vs number of demonstrations k", x_label="k (demonstrations)",
                       interval="band", colors=COLORS, series_labels=labels, interval_label="min–max over seeds",
                       panel_width=470, panel_height=320, max_columns=2)
    training = line_panels([train], title="Training loss", x_label="step", interval="band", colors=COLORS,
                           series_labels=labels, interval_label="min–max over seeds", panel_width=470,
                           panel_height=260)
    return {"loss": main, "training": training}


def render_report(results: dict[str, Any]) -> str:
    """The report's HTML text from a ``results`` dict (as in ``results.json``)."""
    figs = {name: Markup(svg) for name, svg in figures(results).items()}  # line_panels escapes every text
    confirmatory = [r for r in results["comparisons"] if r["family"] == "confirmatory"]
    exploratory = [r for r in results["comparisons"] if r["family"] != "confirmatory"]
    by_k = {}
    for row in results["summary"]:
        by_k.setdefault(row["k"], {})[row["variant"]] = row
    table_k = [{"k": k, "plain": v["plain"], "momentum": v["momentum"], "optimum": results["optimum"][k]}
               for k, v in sorted(by_k.items())]
    return _environment().get_template("momentum_attention.html.j2").render(
        r=results, figs=figs, primary=confirmatory[0] if confirmatory else None, confirmatory=confirmatory,
        exploratory=exploratory, table_k=table_k, fmt=_fmt)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != value:
            return "—"
        if value in (float("inf"), float("-inf")):
            return "∞" if value > 0 else "−∞"
        return f"{value:.{digits}g}"
    return str(value)


def write_report(run_dir: str | Path, results: dict[str, Any] | None = None) -> Path:
    """Write ``report.html`` into ``run_dir`` (from ``results`` or its ``results.json``) atomically."""
    run_dir = Path(run_dir)
    if results is None:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    else:
        results = json.loads(json.dumps(results, default=str))  # what a reader of results.json sees
    return atomic_write_text(run_dir / "report.html", render_report(results))


def experiment_run(run_dir: str | Path) -> Path | None:
    """Rewrite the report of a momentum-attention run directory; None when ``run_dir`` holds another kind of run."""
    from ..store.run_dir import is_url

    if is_url(run_dir):
        return None
    path = Path(run_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("experiment") != "momentum_attention":
        return None
    return write_report(run_dir)
