"""Self-contained HTML report for a hyptest run.

The report is a single HTML file: inline CSS, inline SVG figures, no scripts,
no external resources.  All values that come from the run (model and task
names, study text, provenance) are autoescaped by Jinja2; only the SVG strings
built by :mod:`hyptest.report.svg` (which escape their own text) are inserted
as :class:`markupsafe.Markup`.

Public API
----------
render_report
    Build the HTML text from a ``results`` dict, the per-query frame and,
    optionally, the per-order frame.
write_report
    Render and write ``report.html`` atomically into a run directory.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from hyptest.report import svg

from .views.agreement import _agreement_view  # noqa: F401
from .views.bayes import RANK_PLOT_VAR, _bayes_view  # noqa: F401
from .views.comparison import _comparison_view, _is_threshold, _role, banner_text, effect_text, headline_text  # noqa: F401
from .views.dai import DAI_METRICS, _dai_view, _untrained_view  # noqa: F401
from .views.descriptive import (  # noqa: F401
    CHECKPOINT_METRICS,
    N_SWEEP_METRICS,
    TRAJECTORY_METRICS,
    _checkpoints_view,
    _n_sweep_view,
    _sparsity_view,
    _trajectories_view,
    _vocab_view,
)
from .views.format import _as_float, _group_key, _pct, _rows, _scalar, _sort_key, fmt_ci, fmt_num, fmt_p, fmt_ratio  # noqa: F401
from .views.methods import _families_view, _margins_view, _resampling_figures, _resampling_view  # noqa: F401
from .views.names import (  # noqa: F401
    _ESTIMATE_LEGEND,
    AGREEMENT_METRICS,
    ANALYSIS_NAMES,
    ANALYSIS_ORDER,
    DEFAULT_METHOD_ORDER,
    METHOD_NAMES,
    PRIMARY_ANALYSIS,
    VERDICT_PHRASES,
    _adjust_name,
    _methods_order,
    analysis_display,
    method_display,
    verdict_phrase,
)
from .views.order import SCATTER_MAX_POINTS, _accuracy_table, _order_sensitivity_groups, order_pairs  # noqa: F401
from .views.provenance import DATA_FILE_DESCRIPTIONS, _data_files, _provenance_view, _version  # noqa: F401
from .views.verdicts import _VERDICT_RANK, _others_text, _verdict_tables  # noqa: F401

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


def _adaptive_view(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The adaptive section (confidence sequences, stopping points); None for fixed runs."""
    from .adaptive_view import adaptive_view

    return adaptive_view(results)


def render_report(
    results: dict,
    per_query: pd.DataFrame,
    *,
    study_text: str,
    per_order: pd.DataFrame | None = None,
) -> str:
    """Render the self-contained HTML report.

    Parameters
    ----------
    results : dict
        The analysis results (the content of ``results.json``): keys
        ``study``, ``comparisons``, ``order_sensitivity``, ``accuracy`` and,
        optionally, ``null_distributions`` (comparison index as str ->
        bootstrap draws of the row's statistic, drawn as resampling
        distributions), ``agreement`` (rows of
        model, task, n_demos, method and the :data:`AGREEMENT_METRICS`;
        the reference method's row is its agreement with itself under
        another order), ``margins`` (analysis, kind, value, margin, source),
        ``families`` (family, role, size, adjust, alpha, analyses,
        n_resamples), ``bayes`` (one entry per
        (model, task, N): file, converged, reason, order_invariant, sampler,
        wall_time_s, posteriors ``{method: {"counts", "edges"}}`` and
        diagnostics), ``provenance`` and ``data_files``.  Optional
        sections, each shown only when its key holds rows: ``n_sweep``
        (:func:`_n_sweep_view`), ``trajectories`` and ``closest_to_icl``
        (:func:`_trajectories_view`), ``checkpoints``
        (:func:`_checkpoints_view`), ``vocab_order_sensitivity``
        (:func:`_vocab_view`), ``dai`` (``{"comparisons", "correctness"}``;
        else comparison rows carrying ``layer``, as written by
        ``hyptest reanalyse``, and ``correctness``; :func:`_dai_view`) and
        ``sparsity`` (:func:`_sparsity_view`).  Missing keys are
        rendered as empty sections or ``"—"``; unknown keys are ignored.
        Comparison rows of any analysis are listed in the verdict table,
        one table per role (confirmatory, exploratory, Bayesian), grouped by
        method; only confirmatory rows get a banner (every row does when
        there is none).  Missing fields read
        ``"—"`` and a verdict outside :data:`VERDICT_PHRASES` gets a neutral
        style.
    per_query : pandas.DataFrame
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

    References
    ----------
    .. [1] Shen, Mishra & Khashabi (2023), Do pretrained Transformers learn
       in-context by gradient descent? arXiv:2310.08540.
    .. [2] Kruschke (2018), Rejecting or accepting parameter values in
       Bayesian estimation. AMPPS 1(2), 270-280.
    """
    return _render(results, per_query, study_text=study_text, per_order=per_order, run_dir=None)


def _render(
    results: Mapping[str, Any] | None,
    per_query: pd.DataFrame | None,
    *,
    study_text: str | None,
    per_order: pd.DataFrame | None,
    run_dir: pathlib.Path | None,
) -> str:
    results = dict(results or {})
    study = results.get("study") if isinstance(results.get("study"), Mapping) else {}
    prov = results.get("provenance") if isinstance(results.get("provenance"), Mapping) else {}
    comparisons = _rows(results, "comparisons")
    alpha = _as_float(study.get("alpha"))
    if alpha is None and isinstance(study.get("analysis"), Mapping):
        alpha = _as_float(study["analysis"].get("alpha"))

    analysis_spec = study.get("analysis") if isinstance(study.get("analysis"), Mapping) else {}
    bayes_slices = _rows(results, "bayes")

    seen: list[str] = []
    for frame in (per_query, per_order):
        if isinstance(frame, pd.DataFrame) and "method" in frame.columns:
            seen.extend(str(m) for m in pd.unique(frame["method"].astype(str)))
    for key in ("order_sensitivity", "accuracy", "agreement"):
        seen.extend(str(r.get("method")) for r in _rows(results, key) if r.get("method") is not None)
    for c in comparisons:
        seen.extend(str(c[k]) for k in ("method_a", "method_b") if c.get(k) is not None)
    for sl in bayes_slices:
        if isinstance(sl.get("posteriors"), Mapping):
            seen.extend(str(m) for m in sl["posteriors"])
    methods_order = _methods_order(study, seen)
    colors = svg.method_colors(m for m in methods_order if m in set(seen))

    invariant_by_key: dict[tuple[str, str, Any], list[str]] = {}
    for sl in bayes_slices:
        inv = sl.get("order_invariant")
        if isinstance(inv, Sequence) and not isinstance(inv, str):
            invariant_by_key[_group_key(sl.get("model"), sl.get("task"), sl.get("n_demos"))] = [
                str(m) for m in inv
            ]
    views = [
        _comparison_view(
            i, c, invariant=invariant_by_key.get(_group_key(c.get("model"), c.get("task"), c.get("n_demos")), ()),
        )
        for i, c in enumerate(comparisons)
    ]
    counts: dict[str, int] = {}
    for v in views:
        counts[v["verdict_word"]] = counts.get(v["verdict_word"], 0) + 1
    # headline verdicts: the confirmatory family (every row when a file has none)
    banners = sorted(
        [v for v in views if v["primary"]] or views,
        key=lambda v: (
            *_sort_key(v["key"]),
            methods_order.index(v["method_b"]) if v["method_b"] in methods_order else len(methods_order),
            v["index"],
        ),
    )
    for v in banners:
        v["others"] = _others_text(views, v) if v["primary"] else ""

    tests = sorted({str(c.get("test")) for c in comparisons if c.get("test")})
    finished = prov.get("finished") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    pv = _provenance_view(prov)

    other_study = [
        (str(k), _scalar(v))
        for k, v in study.items()
        if k not in ("name",) and not isinstance(v, (Mapping, list, tuple))
        and not (v is None or (isinstance(v, str) and not v.strip()))
    ]

    os_groups = _order_sensitivity_groups(results, per_query, methods_order, per_order=per_order, colors=colors)
    resampling_figures = _resampling_figures(results, comparisons, views)
    bayes = _bayes_view(results, comparisons, methods_order, colors, run_dir)
    reference = str(analysis_spec.get("reference") or "icl")
    agreement = _agreement_view(results, comparisons, methods_order, colors, reference)
    n_sweep = _n_sweep_view(results, methods_order, colors, reference)
    trajectories = _trajectories_view(results, methods_order, colors, reference)
    checkpoints = _checkpoints_view(results, methods_order, colors)
    vocab = _vocab_view(results, methods_order, colors)
    dai = _dai_view(results, comparisons)
    untrained = _untrained_view(results)
    sparsity = _sparsity_view(results)

    # where each verdict-table row's details are
    os_anchor = {g["label_key"]: g["anchor"] for g in os_groups}
    bayes_anchor = {sl["key"]: sl["anchor"] for sl in bayes["slices"]}
    agreement_anchor = {g["key"]: g["anchor"] for g in agreement["groups"]}
    figure_anchor = {n["key"]: n["anchor"] for n in resampling_figures}
    for v in views:
        a = v["analysis_key"]
        if v["role"] == "bayesian" and v["key"] in bayes_anchor:
            v["detail_href"] = "#" + bayes_anchor[v["key"]]
        elif str(v["index"]) in figure_anchor:
            v["detail_href"] = "#" + figure_anchor[str(v["index"])]
        elif a in AGREEMENT_METRICS and v["key"] in agreement_anchor:
            v["detail_href"] = "#" + agreement_anchor[v["key"]]
        elif v["key"] in os_anchor:
            v["detail_href"] = "#" + os_anchor[v["key"]]

    analyses_present = [a for a in ANALYSIS_ORDER if any(v["analysis_key"] == a for v in views)]
    verdict_tables = _verdict_tables(views, methods_order)
    families = _families_view(results, comparisons)
    margins = _margins_view(results, comparisons)
    bayes_rows = [c for c in comparisons if _role(c) == "bayesian"]
    rope = next((_as_float(c.get("rope")) for c in bayes_rows if _as_float(c.get("rope")) is not None),
                _as_float(analysis_spec.get("rope")))
    rho0 = next((_as_float(c.get("null_value")) for c in comparisons if _is_threshold(c)),
                _as_float(analysis_spec.get("alignment_rho0")))
    bayes_scale = next((str(c.get("scale")) for c in bayes_rows if c.get("scale")), "")
    adjusts = sorted({_adjust_name(c.get("adjust_method")) for c in comparisons if c.get("adjust_method")})

    # a reanalysis shows only the sections that apply to its format (a study shows every section, empty ones say so)
    imported = results.get("import") if isinstance(results.get("import"), Mapping) else {}
    run_format = str(study.get("format") or imported.get("format") or "")
    reanalysed = run_format in ("dai", "summaries")
    accuracy = _accuracy_table(results, methods_order)
    context = {
        "title": str(study.get("name") or "hyptest study"),
        "run_format": run_format,
        "show_order_sensitivity": bool(os_groups) or not reanalysed,
        "show_accuracy": bool(accuracy) or not reanalysed,
        "has_confirmatory": any(v["primary"] for v in views),
        "has_margins": bool(margins.get("items")) or any(c.get("margin") is not None for c in comparisons),
        "skipped_analyses": [{"name": str(s.get("name") or s.get("analysis") or ""), "reason": str(s.get("reason") or "")}
                             for s in _rows(results, "skipped_analyses")],
        "version": _version(prov),
        "generated": str(finished),
        "study_fields": other_study,
        "alpha": fmt_num(alpha) if alpha is not None else "the study's α",
        "comparisons": views,
        "banners": banners,
        "verdict_tables": verdict_tables,
        "has_bayes_rows": bool(bayes_rows),
        "analyses_present": analyses_present,
        "estimate_legend": list(
            dict.fromkeys(_ESTIMATE_LEGEND[a] for a in analyses_present if a in _ESTIMATE_LEGEND)
        ),
        "verdict_counts": sorted(counts.items(), key=lambda kv: _VERDICT_RANK.get(kv[0], len(_VERDICT_RANK))),
        "order_sensitivity": os_groups,
        "accuracy": accuracy,
        "resampling_figures": resampling_figures,
        "bayes": bayes,
        "agreement": agreement,
        "n_sweep": n_sweep,
        "trajectories": trajectories,
        "adaptive": _adaptive_view(results),
        "checkpoints": checkpoints,
        "vocab": vocab,
        "dai": dai,
        "untrained": untrained,
        "sparsity": sparsity,
        "families": families,
        "margins": margins,
        "resampling": _resampling_view(comparisons),
        "rope": fmt_num(rope) if rope is not None else "",
        "rho0": fmt_num(rho0) if rho0 is not None and "order_alignment" in analyses_present else "",
        "bayes_scale": bayes_scale,
        "adjust": " / ".join(adjusts) if adjusts else "Holm",
        "provenance": pv,
        "has_provenance": bool(prov),
        "data_files": _data_files(results, run_dir),
        "study_text": "" if study_text is None else str(study_text),
        "tests": tests,
        "study_json": json.dumps(study, indent=2, sort_keys=True, default=str) if study else "",
        "layer_causal": _layer_causal_methods(study, per_order),
    }
    return _environment().get_template("report.html.j2").render(**context)


def _layer_causal_methods(study: Mapping[str, Any], per_order: pd.DataFrame | None) -> list[str]:
    """Names of the study's layer-causal GD methods (from the study, else from ``per_order``'s kinds)."""
    raw = study.get("methods") if isinstance(study, Mapping) else None
    names = [str(m.get("name") or m.get("kind")) for m in raw if isinstance(m, Mapping)
             and m.get("kind") == "layer_causal_gd"] if isinstance(raw, list) else []
    if not names and isinstance(per_order, pd.DataFrame) and {"method", "method_kind"} <= set(per_order.columns):
        names = sorted(set(per_order.loc[per_order["method_kind"] == "layer_causal_gd", "method"].astype(str)))
    return names


def write_report(
    run_dir: pathlib.Path,
    results: dict,
    per_query: pd.DataFrame,
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
    results : dict
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
    Only here (not in :func:`render_report`) the Bayes section gets its rank
    plots: for every slice whose ``file`` exists in ``run_dir`` and can be
    read with ArviZ, the per-chain rank histograms of ``sd_query``
    (:func:`hyptest.stats._arviz.rank_plot_data`); otherwise the plot is left
    out without a message.

    Returns
    -------
    pathlib.Path
        Path of the written ``report.html``.
    """
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if per_order is None and (run_dir / "per_order.parquet").is_file():
        per_order = pd.read_parquet(run_dir / "per_order.parquet")
    text = _render(results, per_query, study_text=study_text, per_order=per_order, run_dir=run_dir)
    from .._util import atomic_write_bytes

    target = run_dir / "report.html"
    atomic_write_bytes(target, text.encode("utf-8"))  # temp file, fsync, rename; mode by the umask
    return target
