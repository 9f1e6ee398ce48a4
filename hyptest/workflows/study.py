"""The study pipeline: plan -> collect -> store -> metrics -> statistics -> report.

Each stage reads only what the previous one wrote to the run directory, so
``analyse_run`` and ``rebuild_report`` can rerun the later stages alone.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..contract import SCHEMA_VERSION, Results, migrate, read_results
from ..provenance import library_versions, package_version
from .. import __version__
from ..collect.plan import Unit, make_plan
from ..collect.units import COLLECTOR_VERSION
from ..analysis.order import run_analyses
from ..metrics import accuracy_table
from ..stats.bootstrap import bootstrap_ci
from ..store import RunDir
from ..store.run_dir import StoreError, is_url
from ..study import Study, check_feasible
from ..collect.stages import run_model_stages
from ..names import AGREEMENT_METRICS, RATIO_ANALYSES, SENTENCE_METHOD_NAMES
from ..records import final_step_rows
from ..analysis.descriptive import (checkpoint_table, closest_to_reference, n_sweep_draws, n_sweep_table,
                                     trajectory_table, vocab_order_table)
from ..tasks import Task, task_from_spec

__all__ = ["RunSummary", "analyse_run", "default_run_dir", "load_tasks", "plan_study", "rebuild_report", "run_study"]

Progress = Callable[[int, int, str], None]

#: Libraries whose version can change collected numbers; part of every unit key.
_KEY_LIBRARIES = ("torch", "transformers")
#: Null-distribution values kept in results.json per comparison (for the report's histogram).
_NULL_KEEP = 1000
#: Analyses whose permutation null distribution is kept for the report's histograms.
_NULL_ANALYSES = {*RATIO_ANALYSES, "order_alignment"}
#: Columns of per_order.parquet: P(gold) of every (unit, query), for the report's scatter plots.
_PER_ORDER_COLUMNS = ["model", "task", "n_demos", "method", "method_kind", "demo_set", "order_id", "seed",
                      "step", "query_id", "p_gold"]


@dataclass
class RunSummary:
    """What a study run did."""

    run_dir: Path | str
    n_units: int
    n_reused: int
    results: dict[str, Any] = field(repr=False)


def default_run_dir(study: Study) -> Path | str:
    """``output_dir`` from the study file, else ``reports/<study name>``."""
    if study.output_dir and is_url(study.output_dir):
        return study.output_dir  # an fsspec URL: Path() would collapse its "//"
    return Path(study.output_dir) if study.output_dir else Path("reports") / study.name


def load_tasks(study: Study, *, base_dir: Path | None = None) -> dict[str, Task]:
    """Load every task of a study and check the sizes the study asks for."""
    tasks = {spec.name: task_from_spec(spec, base_dir=base_dir) for spec in study.tasks}
    check_feasible(
        study,
        {name: len(t.demos) for name, t in tasks.items()},
        {name: len(t.queries) for name, t in tasks.items()},
    )
    return tasks


def plan_study(study: Study, tasks: dict[str, Task]) -> tuple[list[Unit], dict[str, dict[str, Any]]]:
    """The units of a study and the identities of its models."""
    from ..models import model_identity

    identities = {m.name: model_identity(m) for m in study.models}
    # adaptive collection plans its units round by round (hyptest/workflows/adaptive.py)
    units = make_plan(study, tasks, identities, versions=unit_versions(study)) \
        if study.collection.mode == "fixed" else []
    return units, identities


def unit_versions(study: Study) -> dict[str, str]:
    """Library and collector versions (and devices) that every unit key of a study hashes."""
    from ..models.base import resolve_device

    keyed = {name: package_version(name) for name in _KEY_LIBRARIES}
    devices = sorted({resolve_device(m.device) if m.source != "tiny" else "cpu" for m in study.models})
    return {**keyed, "collector": COLLECTOR_VERSION, "device": ",".join(devices)}


def run_study(
    study: Study,
    study_text: str,
    *,
    out_dir: str | Path | None = None,
    base_dir: Path | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
    executor: Any = None,
    wait: bool = False,
    force: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> RunSummary:
    """Collect every missing unit of a study, then analyse and report.

    The run directory is locked for the whole run (one writer per directory,
    see :mod:`hyptest.store.lock`); the analysis uses this run's manifest as
    built in memory, never one re-read from disk.

    Parameters
    ----------
    study : Study
        The validated study.
    study_text : str
        The study file's text, kept in the manifest and the report.
    out_dir : path, optional
        Run directory; default :func:`default_run_dir`.
    base_dir : path, optional
        Directory that relative task paths are resolved against.
    progress : callable, optional
        Called as ``progress(done, total, description)`` after every unit.
    threads : int, optional
        Torch CPU threads (default: all cores).
    executor : hyptest.collect.executors.Executor, optional
        Who runs the work groups; default the local executor.
    wait : bool, default False
        When another process holds the run directory: wait for it (calling
        ``on_wait(message)`` once) instead of raising.
    force : bool, default False
        Run even if the directory holds another study's results (another name,
        or the same name with other settings): they are first moved into
        ``previous-<timestamp>/`` inside it (``units/`` stays when the name is
        the same: its files are content-addressed and some may be reused).

    Returns
    -------
    RunSummary

    Raises
    ------
    hyptest.store.StoreError
        When another process holds the directory (``LockError``), when it holds
        another study and ``force`` is false, or when a file cannot be written.
    """
    run = RunDir(out_dir or default_run_dir(study))
    lock = run.lock().acquire(wait=wait, on_wait=on_wait)
    try:
        return _run_locked(study, study_text, run, lock, base_dir=base_dir, progress=progress, threads=threads,
                           executor=executor, force=force)
    finally:
        lock.release()


def _json_round_trip(payload: dict[str, Any]) -> dict[str, Any]:
    import json

    from .._util import clean_for_json, json_default

    return json.loads(json.dumps(clean_for_json(payload), default=json_default))


def _same_study(old: dict[str, Any], study: Study) -> bool:
    """Whether a manifest's study is this study (``output_dir`` and ``executor`` do not change results)."""
    try:
        previous = Study.model_validate(old["study"]).model_dump(mode="json")
    except Exception:  # an older or damaged manifest: not provably the same study
        return False
    current = study.model_dump(mode="json")
    for key in ("output_dir", "executor"):
        previous.pop(key, None)
        current.pop(key, None)
    return previous == current


def _claim_run_dir(run: RunDir, study: Study, *, force: bool) -> str | None:
    """Refuse a directory holding another study unless ``force``; then move its results aside. A note or None."""
    if not run.exists("manifest.json"):
        return None
    try:
        old = run.read_json("manifest.json")
        old_name = old["study"]["name"]
    except Exception:  # StoreError (bad JSON), KeyError, TypeError: not a manifest we can read
        old, old_name = {}, None
    if old and _same_study(old, study):
        return None
    what = (f"another study ({old_name!r})" if old_name != study.name else
            f"study {old_name!r} with other settings") if old_name is not None else "an unreadable manifest.json"
    if not force:
        raise StoreError(
            f"run directory {run.location} holds {what}; use --out for a new directory, or --force to move its "
            "results aside (into previous-<timestamp>/ inside it) and run this study there"
        )
    moved = run.move_aside(keep_units=old_name == study.name)
    return f"--force: the earlier results in this directory ({what}) were moved to {moved}"


def _run_locked(study: Study, study_text: str, run: RunDir, lock: Any, *, base_dir: Path | None,
                progress: Progress | None, threads: int | None, executor: Any, force: bool) -> RunSummary:
    import torch

    from ..collect.executors import LocalExecutor, group_units

    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    tasks = load_tasks(study, base_dir=base_dir)
    units, identities = plan_study(study, tasks)
    run.makedirs()
    run.remove_stale_temp_files()  # only a killed writer leaves them, and we hold the lock
    lock_notes = [n for n in (lock.note, _claim_run_dir(run, study, force=force)) if n]
    todo = [u for u in units if not run.has_unit(u.key)]
    n_reused = len(units) - len(todo)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    manifest = {
        "hyptest_version": __version__,
        "study": study.model_dump(mode="json"),
        "study_text": study_text,
        "models": identities,
        "tasks": {name: t.content_hash() for name, t in tasks.items()},
        "units": [u.describe() for u in units],
        "started": started.isoformat(timespec="seconds"),
    }
    run.write_json("manifest.json", manifest)
    manifest = _json_round_trip(manifest)  # the analysis sees exactly what the file says, from memory
    done = n_reused
    if progress:
        progress(done, len(units), "reused finished units" if n_reused else "starting")
    executor = executor or LocalExecutor()

    def store(unit: Unit, rows: pd.DataFrame) -> None:
        nonlocal done
        run.write_unit(unit.key, rows)
        done += 1
        if progress:
            progress(done, len(units), f"{unit.task} N={unit.n_demos} {unit.method} set {unit.demo_set}")

    if study.collection.mode == "adaptive":  # rounds until the confirmatory verdicts are decided
        from .adaptive import run_adaptive_rounds

        units, n_reused, manifest = run_adaptive_rounds(study, tasks, identities, unit_versions(study), run,
                                                        executor, store, manifest)
    else:
        executor.run(group_units(todo), study=study, tasks=tasks, on_unit=store)
    load_time = float(getattr(executor, "load_seconds", 0.0))
    collect_s = time.perf_counter() - t0
    t_stage = time.perf_counter()
    stage_notes = run_model_stages(study, tasks, run, identities,
                                   progress=(lambda text: progress(done, len(units), text)) if progress else None)
    stage_s = time.perf_counter() - t_stage
    results = analyse_run(
        run.path if run.is_local else str(run.path),
        timings={"load_models": load_time, "collect": collect_s, "model_stages": stage_s},
        manifest=manifest,
        extra_provenance={
            "stage_notes": [*lock_notes, *stage_notes],
            "started": started.isoformat(timespec="seconds"),
            "n_units": len(units),
            "n_units_reused": n_reused,
            "torch_threads": torch.get_num_threads(),
            "memory": _memory_provenance(executor),
        },
    )
    return RunSummary(run.path, len(units), n_reused, results)


def _memory_provenance(executor: Any) -> dict[str, Any]:
    """Peak resident memory of this process and, per model collected here, what the memory budget held."""
    from ..collect.memory import peak_resident_bytes

    peak = peak_resident_bytes()
    out: dict[str, Any] = {"peak_resident_bytes": peak, "peak_resident_gb": round(peak / 1e9, 3)}
    budgets = getattr(executor, "memory", None)
    if budgets:
        out["budget"] = budgets
    else:
        out["note"] = "units collected by other processes (or reused): their memory is not in this figure"
    return out


def _summary_rows(per_query: pd.DataFrame, *, confidence: float, rng: np.random.Generator) -> list[dict[str, Any]]:
    rows = []
    for (model, task, n_demos, method), group in per_query.groupby(["model", "task", "n_demos", "method"]):
        values = group["sd_gold"].dropna().to_numpy(float)
        ci_low = ci_high = float("nan")
        if len(values) >= 2:
            boot = bootstrap_ci(values, confidence=confidence, n_resamples=4999, rng=rng)
            ci_low, ci_high = boot.ci_low, boot.ci_high
        rows.append(
            {
                "model": model, "task": task, "n_demos": int(n_demos), "method": method,
                "mean_sd_gold": float(values.mean()) if len(values) else float("nan"),
                "ci_low": float(ci_low), "ci_high": float(ci_high),
                "mean_sd_labels": float(group["sd_labels"].mean()),
                "max_spread": float(group["spread"].max()),
                "n_queries": int(len(group)),
            }
        )
    return rows


def _warnings(study: Study, per_query: pd.DataFrame, accuracy: pd.DataFrame) -> list[str]:
    out = []
    gd_names = [n for n in study.method_names() if study.method(n).kind == "gd"]
    for name in gd_names:
        spread = per_query.loc[per_query["method"] == name, "spread"].max()
        if spread > 1e-3:
            out.append(
                f"full-batch GD '{name}' moved by {spread:.2g} across orders; it should be order-invariant "
                "up to float rounding (check the collector)"
            )
    controls = study.controls()
    for row in accuracy.itertuples():
        if row.accuracy <= 0.5 and row.method == study.analysis.reference and row.model not in controls:
            out.append(
                f"{row.method} accuracy on {row.task} (N={row.n_demos}, {row.model}) is {row.accuracy:.2f}: "
                "near chance, so order effects may reflect noise more than learning"
            )
    return out


def analyse_run(
    run_dir: str | Path,
    *,
    timings: dict[str, float] | None = None,
    extra_provenance: dict[str, Any] | None = None,
    manifest: dict[str, Any] | None = None,
    report: bool = True,
    all_steps: pd.DataFrame | None = None,
    before_write: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Compute metrics, statistics and verdicts from a run directory's units.

    Writes ``per_query.parquet``, ``results.json`` and (unless ``report`` is
    False, for a caller that adds to the results and renders afterwards)
    ``report.html``, and returns the results dictionary. ``manifest`` is the
    run's manifest as its writer holds it (what :func:`run_study` passes);
    without it, ``manifest.json`` is read, under the directory's writer lock.
    ``all_steps`` is the rows of the manifest's ``units`` as their writer
    holds them, in the order, dtypes and cells that ``RunDir.read_units``
    would return (what ``hyptest reanalyse`` passes, writing the unit files
    from them meanwhile); without it, the unit files are read.
    ``before_write`` is called once everything is computed, before the first
    file is written (``hyptest reanalyse`` waits there for its unit files:
    ``results.json`` never exists before they all do).
    """
    run = RunDir(run_dir)
    with run.lock().acquire():  # a no-op inside run_study, which holds it already
        return _analyse_locked(run, timings=timings, extra_provenance=extra_provenance, manifest=manifest,
                               report=report, all_steps=all_steps, before_write=before_write)


def _analyse_locked(run: RunDir, *, timings: dict[str, float] | None, extra_provenance: dict[str, Any] | None,
                    manifest: dict[str, Any] | None, report: bool = True,
                    all_steps: pd.DataFrame | None = None,
                    before_write: Callable[[], None] | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    if manifest is None:
        manifest = run.read_json("manifest.json")
    study = Study.model_validate(manifest["study"])
    if all_steps is None:
        all_steps = run.read_units(u["key"] for u in manifest["units"])
    records = final_step_rows(all_steps)  # a unit's answer is its last step; earlier steps feed the trajectories
    output = run_analyses(records, study)
    per_query, comparisons, nulls = output.per_query, output.comparisons, output.nulls
    accuracy = accuracy_table(records)
    rng = np.random.default_rng([study.seed, 11])
    a = study.analysis
    null_json = _kept_nulls(nulls, comparisons)
    comparisons["summary"] = [_summary_text(row) for row in comparisons.to_dict("records")]
    timings = dict(timings or {})
    timings["analyse"] = time.perf_counter() - t0
    timings["total"] = timings.get("collect", 0.0) + timings.get("model_stages", 0.0) + timings["analyse"]
    provenance = _provenance(run, study, manifest, timings, extra_provenance)
    provenance["warnings"] = _warnings(study, per_query, accuracy) + output.notes + list(
        provenance.get("stage_notes", []))
    if before_write is not None:
        before_write()
    bayes_files = _write_bayes(run, output.bayes)
    descriptive = _descriptive_tables(run, study, records, all_steps, output)
    descriptive["dai"] = _dai_results(run, study)
    results = {
        "schema_version": SCHEMA_VERSION,
        "study": {**manifest["study"], "methods": study.method_names()},
        "comparisons": comparisons.to_dict("records"),
        "order_sensitivity": _summary_rows(per_query, confidence=a.confidence, rng=rng),
        "accuracy": accuracy.to_dict("records"),
        "agreement": _agreement_summary(output.agreement),
        "margins": output.margins,
        "families": _family_summary(comparisons, a),
        "null_distributions": null_json,
        "provenance": provenance,
        "bayes": _bayes_summary(output.bayes),
        "bayes_gate": _bayes_gate(),
        "adaptive": output.adaptive,
        **descriptive,
        "data_files": ["manifest.json", "per_query.parquet", "per_order.parquet", "agreement.parquet",
                       "results.json", *bayes_files, *(["sparsity.parquet"] if run.exists("sparsity.parquet")
                                                      else []), "units/"],
    }
    per_order = records[_PER_ORDER_COLUMNS]
    run.write_parquet("per_query.parquet", per_query)
    run.write_parquet("agreement.parquet", output.agreement)
    run.write_parquet("per_order.parquet", per_order)
    run.write_json("results.json", results)
    results = run.read_json("results.json")  # what readers of the file see: NaN/inf became null
    typed = read_results(results)  # the analysis writes what the results contract says (a ValueError names the field)
    if report:
        _write_report(run, typed, per_query, manifest["study_text"])  # validated once: the report draws it as is
    return results


def _kept_nulls(nulls: dict[int, np.ndarray], comparisons: pd.DataFrame) -> dict[str, list[float]]:
    """Up to ``_NULL_KEEP`` draws (a fixed subsample) of the null distribution of each order comparison row."""
    keep_rng = np.random.default_rng(0)
    null_json = {}
    for index, null in nulls.items():
        if len(null) == 0 or comparisons["analysis"].iloc[index] not in _NULL_ANALYSES:
            continue
        sample = null if len(null) <= _NULL_KEEP else keep_rng.choice(null, _NULL_KEEP, replace=False)
        null_json[str(index)] = [float(f"{v:.6g}") for v in sample]
    return null_json


def _provenance(run: RunDir, study: Study, manifest: dict[str, Any], timings: dict[str, float],
                extra_provenance: dict[str, Any] | None) -> dict[str, Any]:
    """The provenance block of ``results.json``: versions, machine, inputs, seeds, times (kept from a previous one)."""
    finished = _dt.datetime.now(_dt.timezone.utc)
    previous = {}
    if run.exists("results.json") and not extra_provenance:
        previous = run.read_json("results.json").get("provenance", {})
    provenance = {
        **previous,
        "hyptest_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        # a caller that ran no model says where the analysis ran (a reanalysis: the CPU, without importing torch)
        "device": (extra_provenance or {}).get("device") or _device_text(),
        "libraries": library_versions(),
        "models": [{"name": name, **ident} for name, ident in manifest["models"].items()],
        "tasks": manifest["tasks"],
        "seeds": {"root": study.seed},
        "started": (extra_provenance or {}).get("started", previous.get("started", manifest.get("started"))),
        "finished": finished.isoformat(timespec="seconds"),
        "wall_time_s": {**previous.get("wall_time_s", {}), **{k: round(v, 2) for k, v in timings.items()}},
        "run_dir": run.location,
        **(extra_provenance or {}),
    }
    wall = provenance["wall_time_s"]
    wall["total"] = round(wall.get("collect", 0.0) + wall.get("model_stages", 0.0) + wall.get("analyse", 0.0), 2)
    return provenance


def _records_json(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _descriptive_tables(run: RunDir, study: Study, records: pd.DataFrame, all_steps: pd.DataFrame,
                        output: Any) -> dict[str, Any]:
    """The N sweep, trajectories, closest-to-ICL, vocabulary, checkpoint and sparsity tables for results.json."""
    a = study.analysis
    rng = np.random.default_rng([study.seed, 13])
    groups = study.checkpoint_groups()
    start = rng.bit_generator.state

    def sweep_from(generator: np.random.Generator) -> pd.DataFrame:
        return n_sweep_table(records, output.per_query, output.agreement, confidence=a.confidence, rng=generator)

    # the N sweep is shown for several N, and feeds the checkpoints and closest-to-ICL tables; a single-N run
    # with none of them only needs the generator where the sweep would have left it (the same later draws)
    draws = None if records["n_demos"].nunique() > 1 or groups else n_sweep_draws(
        records, output.per_query, output.agreement, confidence=a.confidence)
    sweep = sweep_from(rng) if draws is None else None
    if draws is not None:
        rng.bit_generator.advance(draws)
    trajectories = trajectory_table(all_steps, reference=a.reference, k=a.overlap_k, confidence=a.confidence,
                                    rng=rng)
    family = study.method_family
    show_closest = not trajectories.empty or len(set(map(family, study.method_names()))) < len(study.method_names())
    closest = pd.DataFrame()
    if show_closest:
        if sweep is None:  # drawn from where the generator was before the trajectories
            replay = np.random.Generator(np.random.PCG64())
            replay.bit_generator.state = start
            sweep = sweep_from(replay)
        # GD's best case: trained models only (step >= 1; step 0 is the pretrained model, i.e. zero-shot)
        baselines = {a.reference, *(n for n in study.method_names() if study.method(n).kind == "zs")}
        closest = closest_to_reference(
            trajectories[trajectories["step"] >= 1] if not trajectories.empty else trajectories,
            sweep[~sweep["method"].isin(baselines)], family)
    out: dict[str, Any] = {
        "n_sweep": _records_json(sweep) if sweep is not None and sweep["n_demos"].nunique() > 1 else [],
        "trajectories": _records_json(trajectories),
        "closest_to_icl": _records_json(closest) if show_closest else [],
        "vocab_order_sensitivity": _records_json(vocab_order_table(  # per query: computed once, by run_analyses
            records, confidence=a.confidence, rng=rng, per_query=output.vocab)),
    }
    checkpoints = checkpoint_table(sweep, groups) if groups else pd.DataFrame()
    out["checkpoints"] = _records_json(checkpoints) if not checkpoints.empty else []
    out["sparsity"] = (_records_json(run.read_parquet("sparsity.parquet")) if run.exists("sparsity.parquet")
                       else [])
    return out


def _dai_results(run: RunDir, study: Study) -> dict[str, Any]:
    """Dai et al.'s metrics from the run's own ``dai/`` logs, each tested against its baseline (own Holm family)."""
    logs = Path(str(run.path)) / "dai"
    if not run.is_local or not (logs / "ana_rlt").is_dir():
        return {}
    from ..analysis.baseline_tests import dai_comparisons, dai_metric_values

    a = study.analysis
    controls = study.controls()
    values = dai_metric_values(logs, rng=study.seed)
    comparisons = dai_comparisons(values, alpha=a.alpha, n_resamples=a.n_resamples, adjust=a.adjust, rng=study.seed,
                                  controls=controls)
    run.write_parquet("dai_values.parquet", values.values)
    out: dict[str, Any] = {"comparisons": _records_json(comparisons),
                           "correctness": _records_json(values.correctness_rates()), "notes": values.notes}
    families = comparisons
    if controls:
        from ..analysis.untrained_control import dai_vs_untrained, untrained_layer_table, untrained_statements

        margins = {k: m.model_dump() for k, m in study.dai.margins_vs_untrained.items()} if study.dai else None
        vs = dai_vs_untrained(values, controls, alpha=a.alpha, n_resamples=a.n_resamples, adjust=a.adjust,
                              rng=study.seed, margins=margins)
        out["vs_untrained"] = _records_json(vs)
        out["untrained_layers"] = _records_json(untrained_layer_table(values, controls))
        out["untrained_statements"] = untrained_statements(vs, comparisons, controls)
        out["controls"] = [{"model": name, "control_of": of, "init_seed": seed}
                           for name, (of, seed) in controls.items()]
        families = pd.concat([comparisons, vs], ignore_index=True) if len(vs) else comparisons
    out["families"] = _family_summary(families, a)
    return out


def _write_report(run: RunDir, results: Results, per_query: pd.DataFrame, study_text: str) -> Path | str:
    """Write report.html: atomically in place on local folders, through the store on fsspec URLs."""
    from ..report import render_report, write_report

    if run.is_local:
        try:
            path = write_report(run.path, results, per_query, study_text)
            from .._util import current_umask

            os.chmod(path, 0o666 & ~current_umask())  # its writer's mkstemp made it 0600
            return path
        except OSError as error:
            from ..store.run_dir import StoreError, write_error_text

            raise StoreError(write_error_text(Path(run.path) / "report.html", error)) from None
    per_order = run.read_parquet("per_order.parquet") if run.exists("per_order.parquet") else None
    return run.write_text("report.html", render_report(results, per_query, study_text=study_text,
                                                       per_order=per_order))


def _slice_name(key: tuple[Any, Any, int]) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"bayes_{key[0]}_{key[1]}_N{key[2]}") + ".nc"


def _write_bayes(run: RunDir, fits: dict[tuple[Any, Any, int], Any]) -> list[str]:
    """Each slice's posterior as NetCDF: serialised in memory, then written atomically like every file."""
    from ..stats._arviz import netcdf_bytes

    names = []
    for key, fit in fits.items():
        if fit.idata is None:
            continue
        name = _slice_name(key)
        run.write_bytes(name, netcdf_bytes(fit.idata))
        names.append(name)
    return names


def _bayes_gate() -> dict[str, float]:
    """The convergence gate the Bayesian fits were held to (the report's diagnostics table highlights it)."""
    from ..stats.bayes import ESS_MIN, RHAT_MAX

    return {"r_hat_max": float(RHAT_MAX), "ess_min": float(ESS_MIN)}


def _bayes_summary(fits: dict[tuple[Any, Any, int], Any]) -> list[dict[str, Any]]:
    """Per slice: diagnostics, sampler, timing, a histogram of each log-ratio posterior, the chains' rank plots."""
    from ..analysis.bayes_ranks import rank_plot

    out = []
    for key, fit in fits.items():
        posteriors = {}
        for method, draws in fit.log_ratio_draws.items():
            draws = np.asarray(draws, dtype=float)
            draws = draws[np.isfinite(draws)]
            if draws.size == 0:
                continue
            counts, edges = np.histogram(draws, bins=40)
            posteriors[method] = {"counts": counts.tolist(), "edges": [float(e) for e in edges]}
        diagnostics = fit.diagnostics.replace([np.inf, -np.inf], np.nan).to_dict("records") \
            if fit.diagnostics is not None else []
        out.append({
            "model": key[0], "task": key[1], "n_demos": key[2], "file": _slice_name(key) if fit.idata is not None else None,
            "converged": bool(fit.converged), "reason": fit.reason, "order_invariant": list(fit.order_invariant),
            "sampler": getattr(fit, "sampler", None), "wall_time_s": getattr(fit, "wall_time_s", None),
            "posteriors": posteriors, "diagnostics": diagnostics,
            "rank_plot": rank_plot(fit.idata) if fit.idata is not None else None,
        })
    return out


def complete_results(run_dir: str | Path, results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with what a ``results.json`` of an older hyptest lacks and the report draws, computed here.

    The report only draws: since the rank plots of the Bayesian slices are
    computed by the analysis (``rank_plot`` of each ``bayes`` entry), a
    results file written before them has none.  For each slice without the
    key whose NetCDF ``file`` lies inside ``run_dir``, they are computed from
    that file (:func:`hyptest.analysis.bayes_ranks.rank_plot_from_file`; None
    when it cannot be read, and the report leaves the figure out, as before).
    Everything else is returned as given; ``results`` is not modified.
    """
    slices = results.get("bayes") if isinstance(results, dict) else None
    if not isinstance(slices, list) or all(not isinstance(s, dict) or "rank_plot" in s for s in slices):
        return results
    from ..analysis.bayes_ranks import rank_plot_from_file

    root = Path(run_dir).resolve()
    completed = []
    for sl in slices:
        if isinstance(sl, dict) and "rank_plot" not in sl:
            path = (root / str(sl["file"])).resolve() if isinstance(sl.get("file"), str) and sl["file"] else None
            inside = path is not None and path.is_relative_to(root) and path.is_file()
            sl = {**sl, "rank_plot": rank_plot_from_file(path) if inside else None}
        completed.append(sl)
    return {**results, "bayes": completed}


def rebuild_report(run_dir: str | Path) -> Path | str:
    """Rewrite ``report.html`` from ``results.json`` and ``per_query.parquet`` without recomputing the analysis.

    A ``results.json`` written before the rank plots were part of it gets them from the run's NetCDF files
    (:func:`complete_results`).
    """
    run = RunDir(run_dir)
    with run.lock().acquire():
        results = migrate(run.read_json("results.json"))  # refuses a newer schema version
        if run.is_local:  # an older results.json: the rank plots from the run's NetCDF files
            results = complete_results(run.path, results)
        typed = read_results(results)
        manifest = run.read_json("manifest.json")
        per_query = run.read_parquet("per_query.parquet")  # StoreError "... is missing; run `hyptest study` again"
        return _write_report(run, typed, per_query, manifest["study_text"])


def _family_summary(comparisons: pd.DataFrame, a: Any) -> list[dict[str, Any]]:
    """One entry per family: its role, size, adjustment and Monte-Carlo budget."""
    out = []
    if comparisons.empty:
        return out
    for family, rows in comparisons.groupby("family", sort=False):
        testable = rows[rows["p_value"].notna()]
        out.append({
            "family": family, "role": str(rows["role"].iloc[0]), "size": int(len(testable)),
            "adjust": a.adjust if len(testable) else None, "alpha": a.alpha,
            "analyses": sorted(rows["analysis"].unique()),
            "n_resamples": (int(testable["n_resamples"].max()) if testable["n_resamples"].notna().any() else None),
        })
    order = {"confirmatory": 0, "exploratory": 1, "bayesian": 2}
    return sorted(out, key=lambda f: (order.get(f["role"], 3), f["family"]))


def _agreement_summary(agreement: pd.DataFrame) -> list[dict[str, Any]]:
    metrics = [m for m in AGREEMENT_METRICS if m in agreement.columns]
    grouped = agreement.groupby(["model", "task", "n_demos", "method"])[metrics].mean().reset_index()
    return grouped.to_dict("records")


def _summary_text(row: dict[str, Any]) -> str:
    a = SENTENCE_METHOD_NAMES.get(row["method_a"], row["method_a"])
    b = SENTENCE_METHOD_NAMES.get(row["method_b"], row["method_b"])
    n = f"over {row['n']} (demo set, query) units"
    analysis = row["analysis"]
    if analysis in {"order_sensitivity", "order_sensitivity_labels"}:
        what = "P(gold)" if analysis == "order_sensitivity" else "the label distribution"
        ratio = f"; ratio {row['ratio']:.3g}" if row.get("ratio") is not None and np.isfinite(row["ratio"]) else ""
        return f"Mean std across orders of {what}: {a} {row['mean_a']:.3g} vs {b} {row['mean_b']:.3g}{ratio} {n}."
    if analysis == "log_variance_ratio":
        return (f"Per-(demo set, query) log variance ratio of P(gold) across orders, {a} / {b}: mean "
                f"{row['estimate']:.3g} {n}.")
    if analysis.startswith("bayes_order_variance"):
        where = "pooled over slices" if analysis.endswith("pooled") else n
        return (f"Posterior of the log ratio of per-query SDs across orders, {a} / {b}, {where}: mean "
                f"{row['estimate']:.3g}, HDI [{row['ci_low']:.3g}, {row['ci_high']:.3g}], P(in ROPE) "
                f"{row.get('p_rope')}.")
    if analysis == "order_alignment":
        return (f"Correlation of per-order effects of {a} and {b} under the same orders: r = {row['estimate']:.3g} "
                f"(bounds {row['ci_low']:.3g}, {row['ci_high']:.3g}); equivalence predicts r = 1, declared "
                f"threshold ρ₀ = {row['null_value']:.3g}.")
    label = {"token_overlap": "Token overlap", "overlap_cosine": "Overlap cosine", "label_js": "JS divergence",
             "label_kl": "KL divergence (ICL || method)"}
    return (f"{label.get(analysis, analysis)} with {a} under another order {row['mean_a']:.3g} vs with {b} "
            f"under the same order {row['mean_b']:.3g} {n}.")


def _device_text() -> str:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return "unknown"
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return cpu_text()


def cpu_text() -> str:
    """``cpu (N cores)``: provenance's device where no model runs on an accelerator (no torch import)."""
    return f"cpu ({os.cpu_count()} cores)"
