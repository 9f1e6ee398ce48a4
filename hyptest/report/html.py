"""Self-contained HTML report for a hyptest run.

The report is a single HTML file: inline CSS, inline SVG figures, no scripts,
no external resources.  All values that come from the run (model and task
names, study text, provenance) are autoescaped by Jinja2; only the SVG strings
built by :mod:`hyptest.report.figures` (which escape their own text) are inserted
as :class:`markupsafe.Markup`.

The report only draws: every number comes from the typed results
(:class:`hyptest.contract.Results`, validated once, here, when given as the
content of ``results.json``) and the run's per-query and per-order frames.
Each section's view is built in its own module of :mod:`hyptest.report.views`;
this module assembles them (:func:`page_context`) and fills the template.

Public API
----------
render_report
    Build the HTML text from the results, the per-query frame and,
    optionally, the per-order frame.
write_report
    Render and write ``report.html`` atomically into a run directory.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from hyptest.contract import Results, read_results

from .views.adaptive import adaptive_view
from .views.agreement import agreement_view
from .views.bayes import RANK_PLOT_VAR, bayes_view
from .views.comparison import banner_text, effect_text, headline_text
from .views.dai import DAI_METRICS, dai_view, untrained_view
from .views.descriptive import (
    CHECKPOINT_METRICS,
    N_SWEEP_METRICS,
    TRAJECTORY_METRICS,
    checkpoints_view,
    n_sweep_view,
    sparsity_view,
    trajectories_view,
    vocab_view,
)
from .views.format import analysis_spec, fmt_ci, fmt_num, fmt_p, fmt_ratio
from .views.header import header_view, method_palette
from .views.methods import methods_context, resampling_figures
from .views.names import (
    AGREEMENT_METRICS,
    ANALYSIS_NAMES,
    ANALYSIS_ORDER,
    DEFAULT_METHOD_ORDER,
    METHOD_NAMES,
    PRIMARY_ANALYSIS,
    VERDICT_PHRASES,
    analysis_display,
    method_display,
    verdict_phrase,
)
from .views.order import SCATTER_MAX_POINTS, accuracy_view, order_pairs, order_sensitivity_view
from .views.provenance import DATA_FILE_DESCRIPTIONS, data_files_view, provenance_view
from .views.verdicts import comparison_views, link_details, verdicts_context

__all__ = [
    "render_report",
    "write_report",
    "fmt_num",
    "fmt_p",
    "fmt_ci",
    "fmt_ratio",
    "method_display",
    "verdict_phrase",
    "banner_text",
    "headline_text",
    "analysis_display",
    "effect_text",
    "METHOD_NAMES",
    "ANALYSIS_ORDER",
    "PRIMARY_ANALYSIS",
    "AGREEMENT_METRICS",
    "ANALYSIS_NAMES",
    "VERDICT_PHRASES",
    "DATA_FILE_DESCRIPTIONS",
    "DEFAULT_METHOD_ORDER",
    "SCATTER_MAX_POINTS",
    "order_pairs",
    "N_SWEEP_METRICS",
    "TRAJECTORY_METRICS",
    "CHECKPOINT_METRICS",
    "DAI_METRICS",
    "RANK_PLOT_VAR",
]


def _defang(value: Any) -> Any:
    """Jinja ``finalize`` hook: escape plain values and neutralise ``://``.

    Values that are already markup (the SVG figures) pass through unchanged.
    Everything else is HTML-escaped and every ``://`` is written as
    ``&#58;//``, so text such as a model's source URL reads the same in a
    browser but the document source contains no literal ``http://``/``https://``
    (and nothing is ever a fetchable resource).
    """
    if value is None or hasattr(value, "__html__"):
        return value
    return Markup(str(escape(str(value))).replace("://", "&#58;//"))


@functools.lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        finalize=_defang,
        loader=PackageLoader("hyptest.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


def render_report(
    results: Results | Mapping[str, Any],
    per_query: pd.DataFrame | None,
    *,
    study_text: str,
    per_order: pd.DataFrame | None = None,
) -> str:
    """Render the self-contained HTML report.

    Parameters
    ----------
    results : hyptest.contract.Results or mapping
        The analysis results: a :class:`~hyptest.contract.Results`, or the
        content of ``results.json``, validated here with
        :func:`hyptest.contract.read_results` (older schema versions are
        migrated; content off the contract raises :class:`ValueError` naming
        the field).  The report draws what they hold and computes nothing:
        the verdict tables and banners (``comparisons``; one table per role,
        grouped by method; only confirmatory rows get a banner, every row
        does when there is none), the order-sensitivity and accuracy tables,
        the resampling distributions (``null_distributions``), the
        distribution agreement (``agreement``), the Bayesian slices
        (``bayes``: posteriors, diagnostics against ``bayes_gate``, the rank
        plots in ``rank_plot``), the families and margins, provenance and data
        files, and, each only when it holds rows, ``n_sweep``,
        ``trajectories`` and ``closest_to_icl``, ``checkpoints``,
        ``vocab_order_sensitivity``, ``dai`` (else comparison rows carrying
        ``layer``, as written by ``hyptest reanalyse``, and ``correctness``),
        ``sparsity`` and ``adaptive``.  Missing fields read ``"—"`` and a
        verdict outside :data:`VERDICT_PHRASES` gets a neutral style.
    per_query : pandas.DataFrame or None
        Long frame with columns ``model``, ``task``, ``n_demos``, ``method``,
        ``demo_set``, ``query_id``, ``sd_gold`` and ``sd_labels``; one row per
        (demo set, query) unit and method.  Used for the strip plots.
    study_text : str
        Verbatim text of the study file, shown in a ``<pre>`` block.
    per_order : pandas.DataFrame, optional
        Long frame with columns ``model``, ``task``, ``n_demos``, ``method``,
        ``method_kind``, ``demo_set``, ``order_id``, ``seed``, ``step``,
        ``query_id`` and ``p_gold``; one row per unit and query (the content
        of ``per_order.parquet``).  When given, every (model, task, N) gets a
        scatter of ICL's P(gold) against each gradient-based method's on the
        same (demo set, order, query) (see :func:`order_pairs`); at most
        :data:`SCATTER_MAX_POINTS` points per panel are drawn.

    Returns
    -------
    str
        A complete HTML document with inline CSS and inline SVG, no scripts
        and no external URLs (the SVG namespace excepted).  Every value taken
        from ``results``/``per_query``/``per_order``/``study_text`` is
        HTML-escaped.  Files of the run directory (data files, the Bayesian
        NetCDF files) are linked by relative path only.

    Raises
    ------
    ValueError
        ``results`` given as a mapping do not follow the results contract
        (the message names the field; a newer schema version raises
        :class:`hyptest.contract.ResultsVersionError`).

    References
    ----------
    .. [1] Shen, Mishra & Khashabi (2023), Do pretrained Transformers learn
       in-context by gradient descent? arXiv:2310.08540.
    .. [2] Kruschke (2018), Rejecting or accepting parameter values in
       Bayesian estimation. AMPPS 1(2), 270-280.
    """
    return _draw(_as_results(results), per_query, study_text=study_text, per_order=per_order, run_dir=None)


def _as_results(results: Results | Mapping[str, Any]) -> Results:
    """``results`` as a validated :class:`Results` (validated here when given as a mapping)."""
    return results if isinstance(results, Results) else read_results(dict(results))


def _draw(
    res: Results,
    per_query: pd.DataFrame | None,
    *,
    study_text: str | None,
    per_order: pd.DataFrame | None,
    run_dir: pathlib.Path | None,
) -> str:
    """The report's HTML: every section's view of ``res``, filled into the template."""
    context = page_context(res, per_query, study_text=study_text, per_order=per_order, run_dir=run_dir)
    return _environment().get_template("report.html.j2").render(**context)


def page_context(
    res: Results,
    per_query: pd.DataFrame | None,
    *,
    study_text: str | None,
    per_order: pd.DataFrame | None,
    run_dir: pathlib.Path | None,
) -> dict[str, Any]:
    """What the template draws: the header, the verdicts, each section's view, the methods and provenance."""
    methods_order, colors = method_palette(res, per_query, per_order)
    views = comparison_views(res.comparisons, res.bayes)
    reference = str(analysis_spec(res.study).get("reference") or "icl")
    sections = {
        "order_sensitivity": order_sensitivity_view(res.order_sensitivity, res.study, per_query, methods_order,
                                                    per_order=per_order, colors=colors),
        "accuracy": accuracy_view(res.accuracy, methods_order),
        "resampling_figures": resampling_figures(res.null_distributions, res.comparisons, views),
        "bayes": bayes_view(res.bayes, res.bayes_gate, res.study, res.comparisons, methods_order, colors, run_dir),
        "agreement": agreement_view(res.agreement, res.study, res.comparisons, methods_order, colors, reference),
        "n_sweep": n_sweep_view(res.n_sweep, methods_order, colors, reference),
        "trajectories": trajectories_view(res.trajectories, res.closest_to_icl, res.accuracy, methods_order, colors,
                                          reference),
        "adaptive": adaptive_view(res.adaptive),
        "checkpoints": checkpoints_view(res.checkpoints, methods_order, colors),
        "vocab": vocab_view(res.vocab_order_sensitivity, methods_order, colors),
        "dai": dai_view(res.dai, res.correctness, res.comparisons),
        "untrained": untrained_view(res.dai),
        "sparsity": sparsity_view(res.sparsity),
    }
    link_details(views, sections["order_sensitivity"], sections["bayes"]["slices"], sections["agreement"]["groups"],
                 sections["resampling_figures"])
    verdicts = verdicts_context(views, methods_order)
    header = header_view(res, study_text, per_order)
    reanalysed = header["run_format"] in ("dai", "summaries")
    return {
        **header, **verdicts, **sections,
        # a reanalysis shows only the sections that apply to its format (a study shows every section)
        "show_order_sensitivity": bool(sections["order_sensitivity"]) or not reanalysed,
        "show_accuracy": bool(sections["accuracy"]) or not reanalysed,
        **methods_context(res.families, res.margins, res.comparisons, res.study, verdicts["analyses_present"]),
        "provenance": provenance_view(res.provenance),
        "has_provenance": True,
        "data_files": data_files_view(res.data_files, run_dir),
    }


def write_report(
    run_dir: pathlib.Path,
    results: Results | Mapping[str, Any],
    per_query: pd.DataFrame | None,
    study_text: str,
    per_order: pd.DataFrame | None = None,
) -> pathlib.Path:
    """Render the report and write ``run_dir / "report.html"`` atomically.

    The HTML goes through :func:`hyptest._util.atomic_write_bytes` (temporary
    file, ``fsync``, :func:`os.replace`, mode by the umask): on any error the
    previous report (if any) is left untouched.

    Parameters
    ----------
    run_dir : pathlib.Path
        Run directory (created if missing).
    results : hyptest.contract.Results or mapping
        See :func:`render_report`.  Entries of ``results["data_files"]`` that
        do not exist in ``run_dir`` are listed as missing instead of linked.
    per_query : pandas.DataFrame
        See :func:`render_report`.
    study_text : str
        See :func:`render_report`.
    per_order : pandas.DataFrame, optional
        See :func:`render_report`.  When None and ``run_dir`` holds
        ``per_order.parquet`` (the pipeline writes it before the report),
        that file is read instead; without either the scatter figures are
        left out.

    Notes
    -----
    The rank plots of the Bayes section are drawn from each slice's
    ``rank_plot`` (computed by the analysis); a results file written before
    that field has none, and ``hyptest report`` computes them from the
    slice's NetCDF file before rendering
    (:func:`hyptest.workflows.study.complete_results`).

    Returns
    -------
    pathlib.Path
        Path of the written ``report.html``.

    Raises
    ------
    ValueError
        ``results`` do not follow the results contract (nothing is written).
    """
    res = _as_results(results)  # before anything is written: results off the contract leave the folder as it was
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if per_order is None and (run_dir / "per_order.parquet").is_file():
        per_order = pd.read_parquet(run_dir / "per_order.parquet")
    text = _draw(res, per_query, study_text=study_text, per_order=per_order, run_dir=run_dir)
    from .._util import atomic_write_bytes

    target = run_dir / "report.html"
    atomic_write_bytes(target, text.encode("utf-8"))  # temp file, fsync, rename; mode by the umask
    return target
