"""Run hyptest's statistical layer on outputs that others logged.

``reanalyse(path, out_dir=...)`` reads one of three formats (see
``docs/reanalyse.md``) and writes a run directory:

``long``
    Rows in the long format -> ``units/<key>.parquet`` + ``manifest.json``
    with a synthetic study, then :func:`hyptest.workflows.study.analyse_run`, so
    ``results.json`` and ``report.html`` are exactly those of a study.
``dai``
    Dai et al.'s logs -> Rec2FTP, SimAOU, SimAM and Kendall per layer and
    averaged over layers, each against its baseline (:func:`dai_comparisons`).
``summaries``
    Per-run, per-layer metric values and baselines -> paired comparisons per
    layer and pooled over layers, clustered (:func:`test_summaries`).

Dai and summaries rows are :class:`hyptest.results.Comparison` objects,
decided by :func:`hyptest.results.decide` like a study's: one family per
metric (no confirmatory family: these formats carry no order-sensitivity
quantity), margins only where declared.

``export_run(run_dir, dest)`` writes a run's records as tidy CSV, JSONL or
Parquet (the long format; :func:`hyptest.importers.read_long` reads it back).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..contract import SCHEMA_VERSION, read_results
from .. import __version__
from .._util import atomic_write_bytes, atomic_write_text
from .._validation import validate_flag
from .._util import python_scalar as _plain
from ..importers import (
    ColumnMapping,
    ImportProblems,
    Problem,
    SummariesImport,
    detect_format,
    load_mapping,
    read_long,
    read_run_summaries,
)
from ..importers.lm_eval import read_lm_eval
from ..importers.long import ImportResult
from ..store import RECORD_COLUMNS, RunDir
from ..study import Study, parse_study

__all__ = [
    "COMPARISON_COLUMNS",
    "DaiValues",
    "NO_CONFIRMATORY",
    "SummariesAnalysis",
    "analyse_summaries",
    "dai_comparisons",
    "dai_metric_values",
    "export_run",
    "layers_by_direction",
    "layers_different",
    "reanalyse",
    "synthetic_study",
    "test_summaries",
    "with_direction",
]

from ..analysis.baseline_tests import (  # noqa: F401 - re-exported: hyptest.workflows.reanalyse.dai_comparisons etc. keep working
    CLAIMED_DIRECTION,
    COMPARISON_COLUMNS,
    LAYER_PERMUTATION,
    NO_CONFIRMATORY,
    DaiValues,
    SummariesAnalysis,
    DAI_NAMES,
    _interval_side,
    analyse_summaries,
    dai_comparisons,
    dai_metric_values,
    layers_by_direction,
    layers_different,
    test_summaries,
    with_direction,
)

_IDENTITY = ["model", "task", "method", "n_demos", "demo_set", "order_id", "seed"]


# ---------------------------------------------------------------------------
# the long format -> a run directory like a study's
# ---------------------------------------------------------------------------


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def synthetic_study(
    records: pd.DataFrame,
    *,
    name: str,
    description: str = "",
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Study, list[str]]:
    """A valid study that describes imported records (for ``manifest.json``).

    Parameters
    ----------
    records : pandas.DataFrame
        Records in the store's schema.
    name : str
        Study name (characters outside ``[A-Za-z0-9_.-]`` become ``_``).
    description : str
        Free text.
    overrides : mapping, optional
        Merged into the study (nested keys merge), e.g. ``{"seed": 3,
        "analysis": {"n_resamples": 2000}}``.

    Returns
    -------
    study : Study
    notes : list of str
        What was assumed (method kinds, orders).

    Raises
    ------
    ValueError
        If there is no ICL method (a method of kind icl is the reference).
    hyptest.study.StudyError
        If the overrides make the study invalid (the message names the field).

    Notes
    -----
    Models are declared as ``source: hf`` with their name as ``path``, tasks
    by name only: they are labels, not runnable specifications (the
    description says so).  Methods take their kind from ``method_kind``;
    a method of kind "other" is declared as ``sgd`` (the kind with no
    built-in assumption about order: the study's kind decides only that
    full-batch ``gd`` is expected to be order-invariant and gets no order
    alignment test).  ``train_seeds`` are the seeds seen; ``n_sets``,
    ``n_orders`` (at least 2, the schema's minimum) and ``n_queries`` are
    the largest seen.  ``analysis.top_k`` is the top-k length in the data
    (``overlap_k`` at most 10).
    """
    notes: list[str] = []
    kinds = records.groupby("method", sort=True)["method_kind"].first().to_dict()
    icl = [m for m, k in kinds.items() if k == "icl"]
    if not icl:
        raise ValueError(
            "the records have no ICL method: name a method 'icl', or give its kind under `methods:` in the "
            f"mapping file (methods seen: {', '.join(map(str, kinds))})"
        )
    reference = "icl" if "icl" in icl else icl[0]
    methods = _declared_methods(records, kinds, reference, notes)
    per_set = records.groupby(["model", "task", "n_demos", "demo_set"])["order_id"].nunique()
    n_orders = int(per_set.max()) if len(per_set) else 2
    if n_orders < 2:
        notes.append("every demo set has a single order: order sensitivity is undefined (NaN)")
    topk = records["topk_ids"].map(len)
    top_k = int(topk.max()) if len(topk) and topk.max() > 0 else 20
    study: dict[str, Any] = {
        "name": re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "reanalyse",
        "description": description,
        "seed": 0,
        "models": [{"name": str(m), "source": "hf", "path": str(m)} for m in sorted(records["model"].unique())],
        "tasks": [{"name": str(t)} for t in sorted(records["task"].unique())],
        "demos": {
            "n_demos": sorted(int(n) for n in records["n_demos"].unique()),
            "n_sets": int(records.groupby(["model", "task", "n_demos"])["demo_set"].nunique().max()),
            "n_orders": max(2, n_orders),
            "n_queries": int(records.groupby(["model", "task"])["query_id"].nunique().max()),
        },
        "methods": methods,
        "analysis": {"reference": reference, "top_k": top_k, "overlap_k": min(10, top_k)},
    }
    if overrides:
        study = _deep_merge(study, overrides)
    return parse_study(study, source="synthetic study (reanalyse)"), notes


def _declared_methods(records: pd.DataFrame, kinds: dict[str, str], reference: str,
                      notes: list[str]) -> list[dict[str, Any]]:
    """The ``methods`` of a synthetic study: the reference first, each with its kind and the seeds seen.

    A method of kind "other" is declared as ``sgd``, with a note appended to ``notes``.
    """
    methods = []
    for method in sorted(kinds, key=lambda m: (m != reference, m)):
        kind = kinds[method]
        seeds = sorted(int(s) for s in records.loc[records["method"] == method, "seed"].unique())
        if kind == "other":
            notes.append(f"method {method!r} has no known kind; declared as sgd in the synthetic study "
                         "(kind only decides the GD order-invariance warning and the alignment test)")
            kind = "sgd"
        spec: dict[str, Any] = {"kind": kind, "name": None if method == kind else method}
        if kind != "icl":
            spec["train_seeds"] = seeds
        methods.append(spec)
    return methods


def _long_run(path: Path, out: RunDir, *, mapping: ColumnMapping, strict: bool,
              overrides: Mapping[str, Any] | None, imported: ImportResult | None = None, fmt: str = "long",
              import_extra: Mapping[str, Any] | None = None) -> None:
    from .study import analyse_run, cpu_text, rebuild_report

    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    # records already converted by another importer (lm_eval) take the same path from here on
    imported = read_long(path, mapping=mapping, strict=strict, as_table=True) if imported is None else imported
    records = imported.records
    if records.empty:
        raise ImportProblems(imported.problems or [Problem(str(path), None, "no data rows")],
                             hint=f"no usable row in {path} ({imported.n_rows_read} read, "
                                  f"{imported.n_rows_skipped} skipped)")
    description = (f"Reanalysis of {path} ({fmt} format). Models, tasks and methods are names read from the file, "
                   "not runnable specifications.")
    study, study_notes = synthetic_study(records, name=f"reanalyse_{path.stem}", description=description,
                                         overrides=overrides)
    # the final step of each trajectory is analysed; earlier steps are stored beside it
    last = records.groupby(_IDENTITY, sort=False)["step"].transform("max")
    analysed = records["step"] == last
    notes = list(imported.notes) + study_notes
    if not analysed.all():
        notes.append(f"{int((~analysed).sum())} row(s) of earlier optimisation steps are stored (manifest "
                     "'trajectory_units') but not analysed: the analyses use each trajectory's last step")
    out.path.mkdir(parents=True, exist_ok=True)
    # records read by read_long (they come with their Arrow table) go to the analysis from memory (see
    # _analysed_rows), so their unit files are written in the background while it runs; other importers'
    # records (lm_eval: list cells) are read back from the unit files, written first
    in_memory = imported.table is not None
    unit_rows = _unit_rows(records)
    units, trajectory, writes = _write_units(out, records, analysed.to_numpy(), imported.table,
                                             background=in_memory, unit_rows=unit_rows)
    order = ["model", "task", "n_demos", "method", "demo_set", "order_id", "seed", "step"]
    units.sort(key=lambda u: tuple(u[c] for c in order))
    import_info = {"source": str(path), "format": fmt, "n_rows_read": imported.n_rows_read,
                   "n_rows_skipped": imported.n_rows_skipped, "n_problems": len(imported.problems),
                   "n_rows_stored": int(len(records)), "n_rows_analysed": int(analysed.sum())}
    manifest = _long_manifest(path, study, description, units, trajectory, import_info, started)
    # like a study's, the manifest is the plan: written before every unit file is; results.json, the mark of a
    # finished run, is written only once they all are (the analysis joins the writes before its first file)
    out.write_json("manifest.json", manifest)
    out.write_json("import_problems.json", [_problem_json(p) for p in imported.problems])
    import_s = time.perf_counter() - t0
    # the rows `RunDir.read_units` would read back from the unit files; keep only what is needed after it
    all_steps = _analysed_rows(records, units, unit_rows) if in_memory else None
    if all_steps is None:
        writes.wait()  # the analysis reads the unit files
    # copies: a slice or a column selection is a view that would keep every column's block (and its cells) alive
    imported = replace(imported, records=records.iloc[:0].copy(), table=None)
    records = records[["topk_ids"]].copy()
    _release_memory()
    try:
        analyse_run(out.path, timings={"import": import_s}, report=False,  # rendered once, below, with the import
                    # no model runs in a reanalysis: the analysis ran on the CPU (torch is not imported to say so)
                    extra_provenance={"started": started.isoformat(timespec="seconds"), "import": import_info,
                                      "device": cpu_text()},
                    all_steps=all_steps, before_write=writes.wait)
        writes.wait()  # (done by then)
    finally:
        writes.cancel()  # the analysis failed: write no further unit (those in flight finish, atomically)
    del all_steps
    _add_import_results(out, path, imported, records, notes, import_info, import_extra)
    rebuild_report(out.path)


def _long_manifest(path: Path, study: Any, description: str, units: list[dict[str, Any]],
                   trajectory: list[dict[str, Any]], import_info: dict[str, Any],
                   started: _dt.datetime) -> dict[str, Any]:
    """The manifest of a reanalysed long file: its synthetic study, units and import summary."""
    study_dump = study.model_dump(mode="json")
    study_text = ("# synthetic study written by `hyptest reanalyse`: " + description + "\n"
                  + yaml.safe_dump(study_dump, sort_keys=False))
    return {
        "hyptest_version": __version__,
        "study": study_dump,
        "study_text": study_text,
        "models": {m.name: {"source": "imported", "file": str(path)} for m in study.models},
        "tasks": {t.name: "imported" for t in study.tasks},
        "units": units,
        "trajectory_units": trajectory,
        "import": import_info,
        "started": started.isoformat(timespec="seconds"),
    }


def _add_import_results(out: RunDir, path: Path, imported: ImportResult, records: pd.DataFrame,
                        notes: list[str], import_info: dict[str, Any],
                        import_extra: Mapping[str, Any] | None) -> None:
    """Add the import's summary, its warnings and the analyses it left out to the run's results.json."""
    results = out.read_json("results.json")
    skipped = _skipped_token_analyses(records, results)
    warnings = _import_warnings(path, imported.n_rows_read, imported.n_rows_skipped, imported.problems, notes)
    # right after the import line: what was not analysed, and why (the CLI prints these too)
    warnings[1:1] = [f"not analysed: {s['name']} ({s['analysis']}): {s['reason']}" for s in skipped]
    notes = notes + [f"{s['name']} not analysed: {s['reason']}" for s in skipped]
    results["provenance"]["warnings"] = warnings + list(results["provenance"].get("warnings", []))
    results["import"] = {**import_info, "notes": notes, **dict(import_extra or {})}
    if skipped:
        results["skipped_analyses"] = list(results.get("skipped_analyses") or []) + skipped
    if "import_problems.json" not in results.get("data_files", []):
        results.setdefault("data_files", []).append("import_problems.json")
    out.write_json("results.json", results)
    read_results(out.read_json("results.json"))


class _UnitWrites:
    """Unit files being written on a thread pool: :meth:`wait` for them, or :meth:`cancel` the rest."""

    def __init__(self, pool: Any, futures: list[Any]) -> None:
        self._pool, self._futures = pool, futures

    def wait(self) -> None:
        """Return once every unit file is written; raise the first failed write's error (in unit order)."""
        if self._pool is None:
            return
        try:
            for future in self._futures:
                future.result()
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Start no further write; wait for those in flight (each is atomic: a unit file is whole or absent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _write_units(out: RunDir, records: pd.DataFrame, analysed: np.ndarray, table: Any | None, *,
                 background: bool = False, unit_rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], _UnitWrites]:
    """Write each unit's rows to the store; the manifest's unit descriptors (analysed units, earlier steps).

    Units are written from a pyarrow Table (``read_long(..., as_table=True)``;
    built from `records` otherwise), several at a time: each write is atomic
    and fsynced, and the waits overlap. String columns may be dictionary
    encoded; the files do not store the Arrow schema, so they read back as
    plain strings, as units written from a DataFrame do. With ``background``
    the writes go on after the return, on 2 threads (encoding Parquet is most
    of their time, and the caller's analysis has the other core): the caller
    must ``wait()`` on the returned handle before it marks the run finished,
    and ``cancel()`` it when it fails; otherwise they are done on return.
    ``unit_rows`` is :func:`_unit_rows` of ``records``, when the caller has it.
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    if table is None:
        table = pa.Table.from_pandas(records[list(RECORD_COLUMNS)], preserve_index=False)
    keys, order, bounds = _unit_rows(records) if unit_rows is None else unit_rows

    def write(u: int) -> None:
        buffer = io.BytesIO()
        pq.write_table(table.take(pa.array(order[bounds[u]:bounds[u + 1]])), buffer, store_schema=False)
        out.write_bytes(f"units/{keys[u]}.parquet", buffer.getvalue())

    pool = ThreadPoolExecutor(max_workers=min(2 if background else 8, max(len(keys), 1)),
                              thread_name_prefix="hyptest-units")
    writes = _UnitWrites(pool, [pool.submit(write, u) for u in range(len(keys))])
    if not background:
        writes.wait()
    firsts = order[bounds[:-1]]
    columns = {c: records[c].to_numpy()[firsts] for c in (*_IDENTITY, "method_kind", "step", "order")}
    units, trajectory = [], []
    for u, key in enumerate(keys):
        descriptor = {"key": str(key), **{c: _plain(columns[c][u]) for c in (*_IDENTITY, "method_kind", "step")},
                      "order": [str(x) for x in columns["order"][u]]}
        (units if bool(analysed[firsts[u]]) else trajectory).append(descriptor)
    return units, trajectory, writes


def _unit_rows(records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each unit's rows: ``(keys, order, bounds)``, unit ``u``'s rows (in file order) ``order[bounds[u]:bounds[u + 1]]``.

    Units are numbered by first appearance of their ``unit_key``.
    """
    codes, keys = pd.factorize(records["unit_key"].to_numpy())
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(keys) + 1))
    return keys, order, bounds


#: Columns of the records that no analysis reads (the unit files keep them): not handed to the analysis.
_NOT_ANALYSED = ("order", "gold", "pred", "label_logprobs")


def _analysed_rows(records: pd.DataFrame, units: list[dict[str, Any]],
                   unit_rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """The rows of ``units`` (the manifest's analysed units), as ``RunDir.read_units`` reads them from their files.

    ``records`` as :func:`hyptest.importers.read_long` returns them (list
    cells are numpy arrays). Units in the order of ``units``, each unit's rows
    in file order, a fresh RangeIndex: the frame ``read_units`` returns for
    the unit files that :func:`_write_units` wrote from ``records`` (the same
    values, dtypes and cell types; tests/test_reanalyse_speed.py checks it),
    less the columns in ``_NOT_ANALYSED``. The cells are shared with
    ``records`` and read-only (``labels`` cells are shared by the rows with
    the same labels); nothing in the analysis writes into a cell. ``unit_rows``
    is :func:`_unit_rows` of ``records``, when the caller has it.
    """
    keys, order, bounds = _unit_rows(records) if unit_rows is None else unit_rows
    where = {str(key): u for u, key in enumerate(keys)}
    parts = [order[bounds[where[unit["key"]]]:bounds[where[unit["key"]] + 1]] for unit in units]
    rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    columns = [c for c in RECORD_COLUMNS if c not in _NOT_ANALYSED]
    return records[columns].take(rows).reset_index(drop=True)


def _release_memory() -> None:
    """Hand memory freed by the import back to the system before the analysis reads the units.

    pyarrow's pool (mimalloc or jemalloc) and glibc's heap keep freed blocks
    for reuse, so without this the import's peak stays resident under the
    analysis. A no-op where the C library is not glibc.
    """
    import ctypes
    import ctypes.util
    import gc
    import platform

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # pragma: no cover - another libc
            pass


#: The analyses that compare top-k next-token distributions (long format: ``topk_ids``, ``topk_probs``).
_TOKEN_ANALYSES = {"token_overlap": "Token Overlap", "overlap_cosine": "Overlap Cosine"}


def _skipped_token_analyses(records: pd.DataFrame, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The token analyses a long file without (enough) top-k lists could not give, with the reason."""
    n_rows = len(records)
    widths = records["topk_ids"].map(len)
    k = int((results.get("study") or {}).get("analysis", {}).get("overlap_k") or 0)
    short = int((widths < max(k, 1)).sum())
    if not short:
        return []
    done = {r.get("analysis") for r in results.get("comparisons", [])}
    where = ("every comparison" if not done & set(_TOKEN_ANALYSES) else
             "the comparisons whose rows lack them (the others are tested)")
    none = not int(widths.max() or 0)
    why = (f"{short} of {n_rows} rows have no top-k lists (topk_ids, topk_probs)" if none
           else f"{short} of {n_rows} rows have fewer than {k} top-k tokens (topk_ids, topk_probs)")
    return [{"analysis": key, "name": name,
             "reason": (f"{why}; it compares the {'top-k' if none else f'top-{k}'} next-token distributions, so it is "
                        f"skipped for "
                        f"{where}. The label-distribution agreement (label JS, label KL) and the order analyses "
                        "use the label probabilities and are unaffected.")}
            for key, name in _TOKEN_ANALYSES.items()]


def _lm_eval_run(path: Path, out: RunDir, *, mapping: ColumnMapping, strict: bool,
                 overrides: Mapping[str, Any] | None) -> None:
    """lm-eval sample logs: one record per (run, doc), then the long format's analysis, unchanged."""
    if mapping != ColumnMapping():
        raise ValueError("a mapping (--map, --column, --label, --method-kind, ...) does not apply to lm-eval logs: "
                         "their fields are fixed by the harness")
    imported = read_lm_eval(path, strict=strict)
    if imported.result.records.empty:
        raise ImportProblems(imported.result.problems or [Problem(str(path), None, "no usable line")],
                             hint=f"no usable line in {path} ({imported.result.n_rows_read} read)")
    out.path.mkdir(parents=True, exist_ok=True)
    out.write_json("lm_eval_demos.json", imported.demos)
    _long_run(path, out, mapping=mapping, strict=strict, overrides=overrides, imported=imported.result,
              fmt="lm_eval", import_extra={"lm_eval": {"design": imported.design, "runs": imported.runs,
                                                       "demos_file": "lm_eval_demos.json"}})


def _import_warnings(path: Path, n_read: int, n_skipped: int, problems: list[Problem],
                     notes: list[str]) -> list[str]:
    out = [f"imported {n_read} row(s) from {path}; {n_skipped} skipped because of problems"
           + (" (listed in import_problems.json)" if problems else "")]
    out += [f"import problem: {p}" for p in problems[:20]]
    if len(problems) > 20:
        out.append(f"... and {len(problems) - 20} more import problem(s) in import_problems.json")
    out += [f"import note: {n}" for n in notes]
    return out


def _problem_json(problem: Problem) -> dict[str, Any]:
    return {"file": problem.file, "line": problem.line, "message": problem.message}


# ---------------------------------------------------------------------------
# Dai and summaries -> results.json + report
# ---------------------------------------------------------------------------


def _test_settings(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    overrides = dict(overrides or {})
    analysis = dict(overrides.get("analysis") or {})
    unknown = sorted(set(overrides) - {"seed", "analysis", "name", "description"})
    unknown += sorted(f"analysis.{k}" for k in set(analysis) - {"alpha", "n_resamples", "adjust", "margins"})
    if unknown:
        hint = ""
        if {"analysis.margin", "analysis.alignment_margin"} & set(unknown):
            hint = ("; margins are declared per metric before the data, never derived from it: "
                    "analysis.margins: {<metric>: {absolute: x}}")
        elif "analysis.confidence" in unknown:
            hint = "; intervals are at the level each verdict used, so there is no separate confidence level"
        raise ValueError(f"`study_overrides`: {unknown} do not apply to this format; accepted: seed, name, "
                         "description, analysis.{alpha, n_resamples, adjust, margins}" + hint)
    return {"alpha": analysis.get("alpha", 0.05), "n_resamples": analysis.get("n_resamples", 10000),
            "adjust": analysis.get("adjust", "holm"), "margins": analysis.get("margins"),
            "rng": overrides.get("seed", 0)}


def _provenance(path: Path, started: _dt.datetime, seconds: float, warnings: list[str],
                info: dict[str, Any]) -> dict[str, Any]:
    from ..provenance import library_versions

    return {
        "hyptest_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "libraries": library_versions(),
        "source": str(path),
        "started": started.isoformat(timespec="seconds"),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": {"analyse": round(seconds, 2), "total": round(seconds, 2)},
        "import": info,
        "warnings": warnings,
    }


_VIEW_VERDICTS = {
    "equivalent": "within the declared margin of its baseline",
    "inconclusive": "not distinguished from its baseline",
    "not_estimable": "not estimable",
}
#: A significant difference, by the side of the baseline its interval lies on.
_VIEW_SIDES = {
    ("different", "greater"): "above its baseline",
    ("different", "less"): "below its baseline",
    ("negligible", "greater"): "negligibly above its baseline (inside the declared margin)",
    ("negligible", "less"): "negligibly below its baseline (inside the declared margin)",
}


def _view_verdict(row: Mapping[str, Any]) -> str:
    """The verdict as the report words it: a significant difference says which side of the baseline."""
    verdict = str(row.get("verdict"))
    side = _interval_side(row) if verdict in ("different", "negligible") else None
    if side is not None:
        return _VIEW_SIDES[(verdict, side)]
    if verdict == "different":  # not reached while "different" means the interval excludes 0
        return "differs from its baseline"
    return _VIEW_VERDICTS.get(verdict, verdict)


def _similarity_text(row: Mapping[str, Any], fmt: str) -> str:
    """What a row says about ICL–FT similarity (Dai: the claim needs the metric above its baseline)."""
    verdict, side = row.get("verdict"), _interval_side(row)
    if fmt != "dai" or verdict not in ("different", "negligible") or side is None:
        return ""
    if verdict == "negligible":
        return (" The difference is real but inside the declared margin, so it is no evidence of ICL–FT similarity "
                "that matters.")
    if side == "greater":
        return " The metric lies above its baseline: evidence that ICL resembles FT beyond this baseline."
    return (" The metric lies below its baseline: no evidence of ICL–FT similarity (the claim needs the metric "
            "above its baseline).")


def _report_view(comparisons: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """Comparison rows as the report shows them: the difference from the baseline and its side, in words."""
    out = []
    for row in comparisons:
        view = dict(row)
        name = DAI_NAMES.get(row["analysis"], str(row["analysis"])) if fmt == "dai" else str(row["analysis"])
        where = "averaged over layers" if row.get("layer") is None else f"layer {row['layer']}"
        if row["analysis"] == "rec2ftp":
            where = "examples ZS got wrong"
        view["analysis"] = f"{name} minus its baseline ({row['baseline_name']}), {where}"
        # estimate is already metric − baseline (what the verdict is about); the report's Dai figure
        # shifts it back by the baseline, reading these keys
        view["difference"] = row.get("estimate")
        view["difference_ci_low"], view["difference_ci_high"] = row.get("ci_low"), row.get("ci_high")
        if fmt == "summaries":
            view["method_a"], view["method_b"] = row["analysis"], row["baseline_name"]
            # group_by settings join the task label, so the report never merges two groups' layers
            group = [f"{k} = {v}" for k, v in row.items() if k not in COMPARISON_COLUMNS and k != "n_runs"]
            if group:
                view["task"] = " · ".join([str(row["task"])] * (row.get("task") is not None) + group)
        view["verdict"] = _view_verdict(row)
        view["decision"] = row["verdict"]  # decide's word, for the report's colours
        level = row.get("ci_level")
        view["summary"] = (f"{name} {_fmt(row.get('mean_a'))} vs {row['baseline_name']} {_fmt(row.get('mean_b'))}, "
                           f"difference {_fmt(row.get('estimate'))} [{_fmt(row.get('ci_low'))}, "
                           f"{_fmt(row.get('ci_high'))}]"
                           + (f" ({float(level):.4g} interval, the level the verdict used)" if level is not None
                              and not (isinstance(level, float) and math.isnan(level)) else "")
                           + f", over n = {row.get('n')}; p_adj = {_fmt(row.get('p_adjusted'))} "
                           f"({row.get('family_size')} in family {row.get('family')}). {row.get('test') or ''}"
                           + (f". {row['note']}" if row.get("note") else "")
                           + _similarity_text(row, fmt))
        out.append(view)
    return out


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{float(value):.3g}"


def _write_table_run(path: Path, out: RunDir, fmt: str, comparisons: pd.DataFrame, values: pd.DataFrame,
                     values_name: str, settings: dict[str, Any], started: _dt.datetime, seconds: float,
                     warnings: list[str], info: dict[str, Any], extra: dict[str, Any],
                     name: str, description: str) -> None:
    from ..report import write_report

    out.path.mkdir(parents=True, exist_ok=True)
    out.write_parquet(values_name, values)
    rows = comparisons.to_dict("records")
    study = {"name": re.sub(r"[^A-Za-z0-9_.-]", "_", name), "description": description, "format": fmt,
             "source": str(path), "analysis": {k: v for k, v in settings.items() if k != "rng"},
             "seed": settings["rng"]}
    results = {
        "schema_version": SCHEMA_VERSION,
        "study": study,
        "comparisons": rows,
        **extra,
        "families": _families(comparisons, settings, fmt),
        "provenance": _provenance(path, started, seconds, warnings, info),
        "data_files": ["results.json", values_name, "import_problems.json"],
    }
    out.write_json("results.json", results)
    results = out.read_json("results.json")
    read_results(results)
    view = {**results, "comparisons": _report_view(results["comparisons"], fmt)}
    text = (f"# hyptest reanalyse ({fmt}) of {path}\n" + yaml.safe_dump(study, sort_keys=False))
    write_report(out.path, view, pd.DataFrame(), text)


def _families(comparisons: pd.DataFrame, settings: dict[str, Any], fmt: str) -> list[dict[str, Any]]:
    """One entry per family (a metric), as a study's results.json lists them."""
    out = []
    if comparisons.empty:
        return out
    members = ("every (model, task) x layer, the layer mean included" if fmt == "dai"
               else "every group x layer, the pooled row included")
    for family, rows in comparisons.groupby("family", sort=False):
        testable = rows[rows["p_value"].notna()]
        out.append({
            "family": family, "role": str(rows["role"].iloc[0]), "size": int(len(testable)),
            "adjust": settings["adjust"] if len(testable) else None, "alpha": settings["alpha"],
            "analyses": sorted(map(str, rows["analysis"].unique())),
            "n_resamples": (int(testable["n_resamples"].max()) if testable["n_resamples"].notna().any() else None),
            "description": f"{family} vs its baseline: {members}; {NO_CONFIRMATORY}",
        })
    return out


def _dai_run(path: Path, out: RunDir, *, mapping: ColumnMapping, strict: bool,
             overrides: Mapping[str, Any] | None) -> None:
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    settings = _test_settings(overrides)
    values = dai_metric_values(path, ft_setting=mapping.ft_setting, strict=strict, rng=settings["rng"])
    comparisons = dai_comparisons(values, **settings)
    out.path.mkdir(parents=True, exist_ok=True)
    out.write_json("import_problems.json", [_problem_json(p) for p in values.problems])
    info = {"source": str(path), "format": "dai", "n_examples_read": values.n_examples_read,
            "n_examples_skipped": values.n_examples_skipped, "n_problems": len(values.problems)}
    warnings = [f"read {values.n_examples_read} example(s) from {path}; {values.n_examples_skipped} skipped "
                "because of problems"]
    warnings += [f"import problem: {p}" for p in values.problems[:20]]
    warnings += [f"import note: {n}" for n in values.notes]
    overrides = dict(overrides or {})
    _write_table_run(path, out, "dai", comparisons, values.values, "dai_values.parquet", settings, started,
                     time.perf_counter() - t0, warnings, info,
                     {"layers_different": _with_layer_sides(layers_different(comparisons), comparisons),
                      "correctness": values.correctness_rates().to_dict("records")},
                     overrides.get("name", f"reanalyse_{path.name}"),
                     overrides.get("description", f"Dai et al. metrics reanalysed from {path}"))


def _with_layer_sides(entries: list[dict[str, Any]], comparisons: pd.DataFrame) -> list[dict[str, Any]]:
    """``layers_different`` entries with ``layers_above`` / ``layers_below`` (:func:`layers_by_direction`)."""
    sides = layers_by_direction(comparisons)
    empty: dict[str, list[int]] = {"layers_above": [], "layers_below": []}
    return [{**e, **sides.get((e.get("model"), e.get("task"), e.get("analysis")), empty)} for e in entries]


def _json_safe(value: Any) -> Any:
    """JSON-safe: non-finite floats become None."""
    value = _plain(value)
    return None if isinstance(value, float) and not math.isfinite(value) else value


_BASELINE_KEYS = frozenset({"analysis", "baseline_name", "metric_mean", "metric_sd", "baseline_mean", "baseline_sd",
                            "spread_ratio", "floor_ratio", "weak", "reasons", "declared_constant", "stronger"})


def _summaries_messages(analysis: SummariesAnalysis, imported: SummariesImport) -> list[str]:
    """What a reader of a summaries run must know: units, untested lists, weak baselines (console and report)."""
    units = analysis.units
    source = {"pattern": "settings from `pattern`", "names": "settings read from the file and folder names",
              "none": "no settings in the file names"}[imported.settings_source]
    out = [f"units: {units.n_units} independent unit(s) from {units.n_runs} run(s); {units.how} ({source}: "
           f"{', '.join(imported.settings) or 'none'})"]
    out += [f"units check: {c}" for c in units.checks]
    out += [f"WARNING: {w}" for w in units.warnings]
    out += [f"not tested: {u['analysis']}: {u['reason']}" for u in analysis.untested]
    for b in analysis.baselines:
        if b["weak"]:
            where = "".join(f", {k} = {v}" for k, v in b.items() if k not in _BASELINE_KEYS)
            text = f"weak baseline: {b['baseline_name']!r} of {b['analysis']}{where}: " + "; ".join(b["reasons"])
            text += (f". Also reported against a stronger baseline: {b['stronger']}" if b["stronger"] else
                     ". No stronger baseline could be derived (fewer than 3 layers)")
            out.append(text)
    return out


def _summaries_run(path: Path, out: RunDir, *, mapping: ColumnMapping, strict: bool,
                   overrides: Mapping[str, Any] | None) -> None:
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    settings = _test_settings(overrides)
    imported = read_run_summaries(path, pattern=mapping.pattern, pairs=mapping.pairs or None, strict=strict)
    if imported.table.empty:
        raise ImportProblems(imported.problems or [Problem(str(path), None, "no run")],
                             hint=f"no usable run in {path}")
    analysis = analyse_summaries(imported, cluster_by=mapping.cluster_by, group_by=mapping.group_by, **settings)
    comparisons = analysis.comparisons
    out.path.mkdir(parents=True, exist_ok=True)
    out.write_json("import_problems.json", [_problem_json(p) for p in imported.problems])
    info = {"source": str(path), "format": "summaries", "n_runs_read": imported.n_runs_read,
            "n_runs_skipped": imported.n_runs_skipped, "n_problems": len(imported.problems),
            "settings": imported.settings, "settings_from": imported.settings_source}
    warnings = [f"read {imported.n_runs_read} run(s) from {path}; {imported.n_runs_skipped} skipped because of "
                "problems"]
    warnings += [f"import problem: {p}" for p in imported.problems[:20]]
    warnings += _summaries_messages(analysis, imported)
    warnings += [f"import note: {n}" for n in imported.notes if not n.startswith("per-layer lists not tested")]
    overrides = dict(overrides or {})
    _write_table_run(path, out, "summaries", comparisons, imported.table, "summaries.parquet", settings, started,
                     time.perf_counter() - t0, warnings, info,
                     {"units": analysis.units.as_dict(), "untested": analysis.untested,
                      "baselines": [{k: _json_safe(v) for k, v in b.items()} for b in analysis.baselines],
                      "layers_different": layers_different(comparisons, group_by=mapping.group_by)},
                     overrides.get("name", f"reanalyse_{path.stem}"),
                     overrides.get("description", f"Run summaries reanalysed from {path}"))


# ---------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------


def reanalyse(
    path: str | Path,
    *,
    out_dir: str | Path,
    format: str = "auto",
    mapping: ColumnMapping | Mapping[str, Any] | str | Path | None = None,
    strict: bool = True,
    study_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Run the statistical layer on outputs that others logged; write a run directory.

    Parameters
    ----------
    path : str or Path
        A long-format file, a Dai et al. log folder, or run summaries (a
        file or a folder).
    out_dir : str or Path
        The run directory to write (created if needed).
    format : {"auto", "long", "dai", "summaries", "lm_eval"}, default "auto"
        ``"auto"`` calls :func:`hyptest.importers.detect_format`.  ``lm_eval``:
        lm-evaluation-harness ``--log_samples`` output (a samples file or a
        folder of runs), read by :func:`hyptest.importers.read_lm_eval` and
        analysed as the long format.
    mapping : ColumnMapping, dict, path or None, optional
        The mapping file (columns, labels, method kinds; pattern, pairs,
        cluster_by, group_by for summaries; ft_setting for Dai logs).
    strict : bool, default True
        Stop at the first batch of bad input (:class:`ImportProblems`); else
        skip bad rows / examples / runs, count them and list them in the
        results' provenance warnings and ``import_problems.json``.
    study_overrides : mapping, optional
        ``long``: merged into the synthetic study (e.g. ``{"seed": 3,
        "analysis": {"n_resamples": 2000}}``); ``dai`` / ``summaries``:
        ``seed`` and ``analysis.{alpha, n_resamples, adjust, margins}``
        (margins declared per metric as ``{metric: {"absolute": x}}``).

    Returns
    -------
    pathlib.Path
        `out_dir`, holding ``results.json`` and ``report.html``.

    Raises
    ------
    ImportProblems
        Bad input in strict mode, or no usable row at all.
    ValueError
        Unknown or undetectable format, invalid mapping or overrides, no ICL
        method in a long file.
    """
    path = Path(path)
    fmt = detect_format(path, mapping=mapping) if format == "auto" else format
    if fmt not in ("long", "dai", "summaries", "lm_eval"):
        raise ValueError(f"`format` must be 'auto', 'long', 'dai', 'summaries' or 'lm_eval', got {format!r}")
    validate_flag(strict, "strict")
    if study_overrides is not None and not isinstance(study_overrides, Mapping):
        raise TypeError(f"`study_overrides` must be a mapping, got {type(study_overrides).__name__}")
    cmap = load_mapping(mapping)
    out = RunDir(out_dir)
    run = {"long": _long_run, "dai": _dai_run, "summaries": _summaries_run, "lm_eval": _lm_eval_run}[fmt]
    run(path, out, mapping=cmap, strict=bool(strict), overrides=study_overrides)
    return out.path


def export_run(run_dir: str | Path, dest: str | Path) -> Path:
    """Write a run's records in the long format: tidy CSV, JSONL or Parquet.

    Parameters
    ----------
    run_dir : str or Path
        A run directory (``manifest.json`` + ``units/``).
    dest : str or Path
        ``.csv`` (list columns as JSON strings, floats as their shortest
        exact repr), ``.jsonl`` or ``.parquet``.

    Returns
    -------
    pathlib.Path
        `dest`, written atomically.

    Raises
    ------
    ValueError
        If the suffix of `dest` is not one of the three.
    hyptest.store.StoreError
        If the run directory cannot be read.

    Notes
    -----
    Columns are ``hyptest.store.RECORD_COLUMNS``; units listed in the
    manifest's ``units`` (and ``trajectory_units`` of a reanalysed file) are
    exported in manifest order.  :func:`hyptest.importers.read_long` reads
    the file back (``labels`` + ``label_probs`` give the probabilities; the
    derived columns are ignored or recomputed).
    """
    dest = Path(dest)
    suffix = dest.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".parquet"):
        raise ValueError(f"`dest` must end in .csv, .jsonl or .parquet, got {str(dest)!r}")
    run = RunDir(run_dir)
    manifest = run.read_json("manifest.json")
    keys = [u["key"] for u in manifest.get("units", [])] + [u["key"] for u in manifest.get("trajectory_units", [])]
    records = run.read_units(keys)[list(RECORD_COLUMNS)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        buffer = io.BytesIO()
        records.to_parquet(buffer, index=False)
        return atomic_write_bytes(dest, buffer.getvalue())
    rows = (_json_row(r) for r in records.itertuples(index=False, name=None))
    if suffix == ".jsonl":
        text = "".join(json.dumps(dict(zip(RECORD_COLUMNS, r)), allow_nan=True) + "\n" for r in rows)
        return atomic_write_text(dest, text)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RECORD_COLUMNS)
    for row in rows:
        writer.writerow([json.dumps(v) if isinstance(v, list) else ("" if v is None else
                         (repr(v) if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else v))
                         for v in row])
    return atomic_write_text(dest, buffer.getvalue())


def _json_row(row: tuple[Any, ...]) -> list[Any]:
    out = []
    for value in row:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, (list, tuple)):
            value = [v.item() if isinstance(v, np.generic) else v for v in value]
        elif isinstance(value, np.generic):
            value = value.item()
        out.append(value)
    return out
