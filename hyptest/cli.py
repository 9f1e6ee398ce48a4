"""Command line: ``hyptest study|validate|models|report|power|calibrate|reanalyse|export``.

A thin shell: parse, call one public function, render progress and errors.
Errors in the user's input exit with status 2 and one clear message, no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
from rich.console import Console

from .names import SHORT_METHOD_NAMES

if TYPE_CHECKING:
    from .collect.executors import Executor
    from .study import ExecutorSpec

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="hyptest: does in-context learning behave like gradient descent? Collect, test, decide, report.",
)
_err = Console(stderr=True)
_out = Console()


def _fail(message: str, code: int = 2) -> None:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .models import ModelError
    from .store import StoreError
    from .study import StudyError
    from .tasks import TaskError

    return (StudyError, TaskError, ModelError, StoreError)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@app.command()
def validate(study_file: Path = typer.Argument(..., help="Study YAML file.")) -> None:
    """Check a study file (schema, tasks, sizes, run directory) without running it; print its cost."""
    from .workflows.study import default_run_dir, load_tasks
    from .preflight import check_output_dir, estimate_cost
    from .study import load_study

    if _validate_experiment(study_file):
        return
    try:
        study, _ = load_study(study_file)
        tasks = load_tasks(study, base_dir=study_file.parent)
        check_output_dir(default_run_dir(study))
    except _user_errors() as error:
        _fail(_escape(str(error)))
    n_methods = sum(1 if study.method(n).kind == "icl" else len(study.method(n).train_seeds)
                    for n in study.method_names())
    orders = study.demos.n_orders
    _out.print(
        f"{study_file}: ok — {len(study.models)} model(s), {len(tasks)} task(s), N in {study.demos.n_demos}, "
        f"{study.demos.n_sets} demo set(s) x {orders} orders, {n_methods} method run(s) per order",
        highlight=False,
    )
    _out.print(_escape(estimate_cost(study, tasks).describe()), highlight=False)


@app.command()
def study(
    study_file: Path = typer.Argument(..., help="Study YAML file."),
    out: Optional[str] = typer.Option(
        None, "--out", "-o",
        help="Run directory: a path or an fsspec URL such as s3://bucket/runs/x (default: reports/<study name>)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all cores)."),
    executor: Optional[str] = typer.Option(
        None, "--executor",
        help='Who collects the units: local (this process) or ray (a Ray cluster; pip install "hyptest[ray]"). '
             "Default: the study file's executor.kind, else local."),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster address: auto, HEAD:6379 or ray://HEAD:10001 (with --executor ray)."),
    ray_workers: Optional[int] = typer.Option(
        None, "--ray-workers", min=1, help="Number of Ray workers (default: as many as the cluster holds)."),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="Run even when the cost estimate (see `hyptest validate`) exceeds 2 hours."),
    wait: bool = typer.Option(
        False, "--wait", help="If another process is writing to the run directory, wait for it instead of exiting."),
    force: bool = typer.Option(
        False, "--force",
        help="Run even if the run directory holds another study (or this one with other settings): its results "
             "are first moved into previous-<timestamp>/ inside it."),
    memory_budget: Optional[str] = typer.Option(
        None, "--memory-budget",
        help="What training state, snapshots, caches and batches may hold per process, e.g. 2GB or 1.5GiB; beyond "
             "it hyptest recomputes instead (same numbers, slower). Default: the study's executor.memory_budget, "
             "else 1.5 GiB on CPU and 8 GiB on a GPU. The model's weights come on top."),
) -> None:
    """Run a study: collect (resuming finished units), test, and write the report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .collect.ray_executor import RayExecutorError
    from .workflows.study import run_study
    from .study import load_study

    if _run_experiment(study_file, out, threads, wait=wait, force=force):
        return
    try:
        spec, text = load_study(study_file)
        if memory_budget is not None:
            from .collect.memory import parse_bytes

            try:
                budget = parse_bytes(memory_budget, what="--memory-budget")
            except ValueError as error:
                _fail(_escape(str(error)))
            spec = spec.model_copy(update={"executor": spec.executor.model_copy(update={"memory_budget": budget})})
        _preflight(spec, study_file, out, yes)
    except _user_errors() as error:
        _fail(_escape(str(error)))
    runner = _make_executor(spec.executor, executor, address, ray_workers)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("units · {task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_err, transient=False) as bar:
        task_id = bar.add_task("collecting", total=None, rate="")
        state = {"t0": None, "start": 0}

        def report(done: int, total: int, description: str) -> None:
            import time

            if state["t0"] is None:
                state["t0"], state["start"] = time.perf_counter(), done
            elapsed = time.perf_counter() - state["t0"]
            made = done - state["start"]
            rate = f"{made / elapsed:.2f} units/s" if made and elapsed > 0 else ""
            bar.update(task_id, completed=done, total=total, description=_escape(description), rate=rate)

        try:
            summary = run_study(spec, text, out_dir=out, base_dir=study_file.parent, progress=report, threads=threads,
                                executor=runner, wait=wait, force=force,
                                on_wait=lambda message: bar.console.print(f"[yellow]{_escape(message)}[/]"))
        except _user_errors() as error:
            bar.stop()
            _fail(_escape(str(error)))
        except OSError as error:  # a write no store call wrapped: still one line naming the file
            bar.stop()
            from .store.run_dir import write_error_text

            _fail(_escape(write_error_text(error.filename or out or "the run directory", error)))
        except RayExecutorError as error:
            bar.stop()
            _fail(_escape(str(error)), code=1)
        except KeyboardInterrupt:
            bar.stop()
            _fail("interrupted; finished units are kept — rerun the same command to resume", code=130)
    _render_summary(summary.results, summary.run_dir, summary.n_units, summary.n_reused)


def _experiment_study(study_file: Path) -> tuple[object, str] | None:
    """The validated study and text of a study file with a top-level ``experiment:`` key, else None."""
    from .validation import experiment_of
    from .validation.momentum_study import parse_momentum_study, study_data

    data, text = study_data(study_file)
    if experiment_of(data) is None:
        return None
    return parse_momentum_study(data, source=str(study_file)), text


def _validate_experiment(study_file: Path) -> bool:
    """``hyptest validate`` of an experiment study (hyptest.validation); False for an ICL-vs-GD study."""
    from .preflight import check_output_dir
    from .validation.momentum_study import default_run_dir, describe_cost

    try:
        found = _experiment_study(study_file)
        if found is None:
            return False
        spec = found[0]
        check_output_dir(default_run_dir(spec))  # type: ignore[arg-type]
    except _user_errors() as error:
        _fail(_escape(str(error)))
    _out.print(f"{study_file}: ok — experiment {spec.experiment}, {len(spec.seeds)} seeds x 2 variants "  # type: ignore[attr-defined]
               f"(plain, momentum eta={spec.momentum.eta:g})", highlight=False)  # type: ignore[attr-defined]
    _out.print(_escape(describe_cost(spec)), highlight=False)  # type: ignore[arg-type]
    return True


def _run_experiment(study_file: Path, out: Optional[str], threads: Optional[int], *, wait: bool, force: bool) -> bool:
    """``hyptest study`` of an experiment study: train (resuming), decide, report; False for an ICL-vs-GD study."""
    from .preflight import check_output_dir
    from .validation.momentum_study import default_run_dir, run_momentum_study

    try:
        found = _experiment_study(study_file)
        if found is None:
            return False
        spec, text = found
        check_output_dir(out or default_run_dir(spec))  # type: ignore[arg-type]
        run = run_momentum_study(spec, text, out_dir=out, workers=threads, wait=wait, force=force,  # type: ignore[arg-type]
                                 on_wait=lambda message: _err.print(f"[yellow]{_escape(message)}[/]"))
    except _user_errors() as error:
        _fail(_escape(str(error)))
    except KeyboardInterrupt:
        _fail("interrupted; finished units and checkpoints are kept — rerun the same command to resume", code=130)
    for row in run.results["comparisons"]:
        k = "mean over k" if row["n_demos"] is None else f"k = {row['n_demos']}"
        _out.print(_escape(f"{row['family']}: momentum vs plain, {k}: log ratio {_short(row['estimate'])} "
                           f"[{'-inf' if row['ci_low'] is None else _short(row['ci_low'])}, {_short(row['ci_high'])}], "
                           f"p_adj {row['p_adjusted']:.2g}: "
                           f"{row['verdict']} ({row['direction']})"), highlight=False)
    wall = run.results["provenance"]["wall_time_s"]
    _out.print(f"{run.n_units} units ({run.n_reused} reused) · wall time {wall['total']:.1f} s · report: "
               f"{_escape(str(run.run_dir / 'report.html'))}", highlight=False)
    return True


def _preflight(spec: object, study_file: Path, out: Optional[str], yes: bool) -> None:
    """Refuse an unwritable run directory, and a study above the cost threshold without ``--yes``."""
    from .workflows.study import default_run_dir, load_tasks
    from .preflight import CONFIRM_SECONDS, check_output_dir, estimate_cost
    from .study import StudyError

    check_output_dir(out or default_run_dir(spec))
    if yes:
        return
    cost = estimate_cost(spec, load_tasks(spec, base_dir=study_file.parent))
    if cost.seconds > CONFIRM_SECONDS:
        raise StudyError(f"{study_file}: this study is expected to take ~{cost.seconds / 3600:.1f} h on this machine "
                         f"(over {CONFIRM_SECONDS / 3600:g} h): {cost.describe()}. Pass --yes to run it anyway, "
                         "or make it smaller")


def _make_executor(chosen: ExecutorSpec, name: Optional[str], address: Optional[str],
                   ray_workers: Optional[int]) -> Executor:
    """The executor from --executor/--address/--ray-workers, else from the study file's ``executor`` block."""
    from .collect.ray_executor import make_executor

    kind = name or chosen.kind
    same = chosen.kind == kind  # the study file's options apply only to the executor it names
    options = {}
    if kind == "ray" and same:
        options = {"num_cpus_per_worker": chosen.num_cpus_per_worker, "num_gpus_per_worker": chosen.num_gpus_per_worker,
                   "memory_per_worker": chosen.memory_per_worker, "max_retries": chosen.max_retries}
    try:
        return make_executor(
            kind,
            address=address if address is not None else (chosen.address if same else None),
            num_workers=ray_workers if ray_workers is not None else (chosen.num_workers if same else None),
            **options,
        )
    except (ValueError, TypeError, ImportError) as error:
        _fail(_escape(str(error).replace("`address`", "--address").replace("`num_workers`", "--ray-workers")
                      .replace("`executor`", "--executor")))


def _short(value: object) -> str:
    if value is None:
        return "inf"
    number = float(value)  # type: ignore[arg-type]
    return f"{number:.3g}" if abs(number) < 1e4 else f"{number:.1e}"


def _render_summary(results: dict, run_dir: Path | str, n_units: int, n_reused: int) -> None:
    from rich.table import Table

    table = Table(title="Theorem-1 check, confirmatory family: order sensitivity of ICL vs each method "
                        "(log ratio of mean order SDs, interval at the level the verdict used; Bayes rows: "
                        "per-query SD ratio, HDI; exploratory analyses in the report)", title_justify="left")
    for column in ("task · N", "vs", "log ratio [CI]", "ratio", "p_adj", "verdict"):
        table.add_column(column, overflow="fold")
    colours = {"different": "red", "equivalent": "green", "negligible": "yellow", "inconclusive": "white"}
    shown = {"bayes_order_variance": " (Bayes)", "bayes_order_variance_pooled": " (Bayes, pooled)"}
    for row in results["comparisons"]:
        if row.get("family") != "confirmatory" and row["analysis"] not in shown:
            continue
        if str(row.get("family", "")).startswith("untrained control: "):
            continue  # an untrained control's rows are in the report's secondary tables
        p_adj = row.get("p_adjusted")
        suffix = shown.get(row["analysis"], "" if row["analysis"] == "order_sensitivity" else f" ({row['analysis']})")
        table.add_row(
            _escape(f"{row['task']} · {row['n_demos'] if row['n_demos'] is not None else 'all'}"),
            _escape(SHORT_METHOD_NAMES.get(row["method_b"], row["method_b"]) + suffix),
            f"{_short(row['estimate'])} [{_short(row['ci_low'])}, {_short(row['ci_high'])}]",
            _short(row.get("ratio")),
            "—" if p_adj is None else f"{p_adj:.2g}",
            f"[{colours.get(row['verdict'], 'white')}]{row['verdict']}[/]",
        )
    _out.print(table)
    for warning in results["provenance"].get("warnings", []):
        _out.print(f"[yellow]warning:[/] {_escape(warning)}")
    wall = results["provenance"].get("wall_time_s", {})
    _out.print(
        f"{n_units} units ({n_reused} reused) · wall time {wall.get('total', float('nan')):.1f} s · "
        f"report: {run_dir / 'report.html' if isinstance(run_dir, Path) else f'{run_dir}/report.html'}",
        highlight=False,
    )


@app.command()
def power(
    study_file: Path = typer.Argument(..., help="Study YAML file (its design and decision settings are simulated)."),
    pilot: Optional[Path] = typer.Option(None, help="A pilot run directory (uses its per_order.parquet)."),
    sd_icl: Optional[float] = typer.Option(None, help="Reference (ICL) order SD on the logit scale of P(gold)."),
    sd_gd: Optional[float] = typer.Option(None, help="Order SD of every compared method, logit scale."),
    between_query_sd: Optional[float] = typer.Option(None, help="Between-query SD, logit scale (default: pilot, "
                                                               "else 1)."),
    simulations: int = typer.Option(200, help="Simulated studies per scenario (the ratio search uses half)."),
    n_resamples: Optional[int] = typer.Option(None, "--n-resamples",
                                              help="Resamples per simulated decision (default max(1000, 20 m/alpha))."),
    seed: int = typer.Option(0, help="Root seed of the simulations."),
) -> None:
    """Simulate the study's confirmatory decision: power, P(equivalent) at ratio 1, minimum detectable ratio."""
    from rich.table import Table

    from .workflows.power import power_table
    from .study import load_study

    try:
        spec, _ = load_study(study_file)
        report = power_table(spec, pilot_dir=pilot, sd_icl=sd_icl, sd_gd=sd_gd, between_query_sd=between_query_sd,
                             n_simulations=simulations, n_resamples=n_resamples, seed=seed)
    except (ValueError, FileNotFoundError, *_user_errors()) as error:
        _fail(_escape(str(error)))
    d = report.design
    orders = "/".join(str(s.n_orders) for s in d.slices)
    out = Table(title=f"Power of the Theorem-1 check ({d.n_sets} sets x {orders} orders x {d.n_queries} queries; "
                      f"family m = {d.family_size}, {d.adjust}, alpha {d.alpha:g}; {d.test})", title_justify="left")
    for column in ("vs", "order SD ICL (logit)", "order SD method (logit)", "ratio (logit)", "ratio (P(gold))", "P(different)",
                   "P(equivalent)"):
        out.add_column(column)

    def _ci(p: float, low: float, high: float) -> str:
        return f"{p:.2f} [{low:.2f}, {high:.2f}]"

    for row in report.table.itertuples():
        out.add_row(_escape(row.method), f"{row.sd_icl_logit:.3g}", f"{row.sd_method_logit:.3g}",
                    f"{row.ratio_logit:.3g}", f"{row.ratio_p_gold:.3g}",
                    _ci(row.p_different, row.p_different_low, row.p_different_high),
                    _ci(row.p_equivalent, row.p_equivalent_low, row.p_equivalent_high))
    _out.print(out)
    n0 = report.null
    mdr = report.mdr
    _out.print(f"True ratio 1 (every method at σ_ICL): P(equivalent) "
               f"{_ci(n0['p_equivalent'], n0['p_equivalent_low'], n0['p_equivalent_high'])}, false P(different) "
               f"{_ci(n0['p_different'], n0['p_different_low'], n0['p_different_high'])} per comparison, "
               f"{n0['familywise_different']:.3f} family-wise.", highlight=False)
    _out.print(f"Minimum detectable ratio σ_ICL/σ_method (logit) at {mdr['target_power']:.0%} power: "
               f"{mdr['ratio']:.3g} [{mdr['low']:.3g}, {mdr['high']:.3g}] (Monte-Carlo interval at the grid's "
               f"resolution); ≈ {mdr['ratio_p_gold']:.3g} on the P(gold) scale the decision uses.", highlight=False)
    n_search = int(report.curve["n_simulations"].iloc[-1])
    _out.print(f"{simulations} simulated studies per scenario, {n_search} per ratio searched; "
               f"{d.n_resamples} resamples per decision (the study uses {spec.analysis.n_resamples}); intervals: "
               "Wilson 95 %. σ on the logit scale of P(gold).", highlight=False)
    for note in d.notes:
        _out.print(_escape(note), highlight=False)


@app.command()
def reanalyse(
    path: Path = typer.Argument(..., help="A long-format file (.csv/.tsv/.jsonl/.parquet), Dai et al.'s "
                                          "ana_rlt folder, run summaries (.json/.jsonl, or a folder), or "
                                          "lm-eval --log_samples output (a samples_*.jsonl or a folder)."),
    format: str = typer.Option("auto", "--format", help="auto | long | dai | summaries | lm_eval."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default reports/reanalyse_<name>)."),
    map_file: Optional[Path] = typer.Option(None, "--map", help="Mapping YAML (see docs/reanalyse.md)."),
    column: Optional[List[str]] = typer.Option(None, "--column", help="THEIRS=OURS column rename; repeatable."),
    label: Optional[List[str]] = typer.Option(None, "--label", help="A label name, in order; repeatable."),
    method_kind: Optional[List[str]] = typer.Option(None, "--method-kind", help="METHOD=KIND (icl|gd|sgd|adam)."),
    strict: bool = typer.Option(True, "--strict/--skip-bad", help="Stop at the first bad rows, or skip and count them."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Root seed of the analysis (default 0)."),
    n_resamples: Optional[int] = typer.Option(None, "--n-resamples", help="Permutation and bootstrap resamples."),
    pattern: Optional[str] = typer.Option(
        None, "--pattern", help="Run summaries: a regex with named groups searched in each file name; the groups "
                                "are the run's settings (default: key-value fragments of the names, e.g. seed_3)."),
    cluster_by: Optional[List[str]] = typer.Option(
        None, "--cluster-by", help="Run summaries: settings whose combinations are the independent units, "
                                   "e.g. task,seed (repeatable; `run`: every run its own unit)."),
) -> None:
    """Run the statistical layer on outputs that others logged; write results.json and report.html."""
    from .importers import mapping_from_options
    from .workflows.reanalyse import reanalyse as run_reanalyse

    overrides: dict = {}
    if seed is not None:
        overrides["seed"] = seed
    if n_resamples is not None:
        overrides["analysis"] = {"n_resamples": n_resamples}
    target = out or Path("reports") / f"reanalyse_{path.stem or path.name}"
    try:
        mapping = mapping_from_options(map_file, columns=column or (), labels=label or (), methods=method_kind or (),
                                       pattern=pattern, cluster_by=cluster_by or None)
        run_dir = run_reanalyse(path, out_dir=target, format=format, mapping=mapping, strict=strict,
                                study_overrides=overrides or None)
    except (ValueError, FileNotFoundError, *_user_errors()) as error:  # ImportProblems, StudyError are ValueErrors
        _fail(_escape(str(error)))
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    warnings = results.get("provenance", {}).get("warnings", [])
    for warning in warnings:  # every one (units, untested metrics, weak baselines, notes); skipped ones below
        if not str(warning).startswith("not analysed:"):
            _out.print(_escape(str(warning)), highlight=False)
    for skipped in results.get("skipped_analyses") or []:  # what was not analysed, and why
        _out.print(f"[yellow]not analysed:[/] {_escape(str(skipped.get('name') or skipped.get('analysis')))}: "
                   f"{_escape(str(skipped.get('reason')))}", highlight=False)
    verdicts: dict[str, int] = {}
    for row in results.get("comparisons", []):
        verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
    counts = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    _out.print(f"{len(results.get('comparisons', []))} comparison(s): {counts or 'none'}", highlight=False)
    sided = [r for r in results.get("comparisons", []) if r.get("verdict") == "different" and r.get("direction")]
    if any("supports_similarity" in r for r in sided):  # Dai: only a metric above its baseline supports the claim
        above = sum(bool(r.get("supports_similarity")) for r in sided)
        _out.print(f"of the {len(sided)} different: {above} above the baseline (support ICL–FT similarity), "
                   f"{len(sided) - above} below it (no support)", highlight=False)
    _out.print(f"report: {_escape(str(run_dir / 'report.html'))}", highlight=False)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory (written by `hyptest study` or `hyptest reanalyse`)."),
    to: Path = typer.Option(..., "--to", help="Destination: .csv (lists as JSON strings), .jsonl or .parquet."),
) -> None:
    """Write a run's records in the long format (readable by `hyptest reanalyse`)."""
    from .workflows.reanalyse import export_run

    try:
        dest = export_run(run_dir, to)
    except (ValueError, *_user_errors()) as error:
        _fail(_escape(str(error)))
    _out.print(f"wrote {_escape(str(dest))}", highlight=False)


@app.command()
def models() -> None:
    """List the models hyptest can load here."""
    from rich.table import Table

    from .models import available_models

    table = Table(title="models")
    for column in ("name", "source", "status", "notes"):
        table.add_column(column)
    for row in available_models():
        table.add_row(*(_escape(row[c]) for c in ("name", "source", "status", "notes")))
    _out.print(table)


@app.command()
def report(
    run_dir: str = typer.Argument(..., help="A run directory (a path or an fsspec URL) written by `hyptest study`."),
) -> None:
    """Rebuild report.html of a run directory from its stored results, without recomputing."""
    from .workflows.study import rebuild_report

    try:
        from .validation.momentum_report import experiment_run

        path = experiment_run(run_dir) or rebuild_report(run_dir)
    except (ValueError, *_user_errors()) as error:  # ResultsVersionError, a results.json off the contract
        _fail(_escape(str(error)))
    _out.print(f"report: {path}", highlight=False)


@app.command()
def calibrate(
    n_sims: int = typer.Option(200, "--n-sims", min=1, help="Simulated families per (ρ, family size, scenario)."),
    family_sizes: str = typer.Option("1,20,150", "--family-sizes", help="Comparisons per family, comma-separated."),
    design: str = typer.Option("default", "--design", help="default | shen (study shapes, see docs/calibration.md)."),
    seed: int = typer.Option(0, "--seed", help="Root seed."),
    rho: str = typer.Option("0,0.8", "--rho", help="Correlations of ICL's and the methods' order factors."),
    n_resamples: int = typer.Option(10000, "--n-resamples", min=1000, help="decide()'s n_resamples (the budget is "
                                    "max(this, ceil(20 m / alpha)))."),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="Worker processes (default: all cores)."),
    missing: float = typer.Option(0.0, "--missing", min=0.0, max=0.99, help="Probability that a (set, query) slot "
                                  "is missing in a method, as in imported logs (compared on the complete slots)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the table as markdown to this file."),
) -> None:
    """Calibrate the confirmatory decision (order_comparison + decide) on simulated studies."""
    from rich.table import Table

    from .validation.calibration import DESIGNS, calibrate as run_calibration, markdown_table

    try:
        sizes = [int(x) for x in family_sizes.split(",") if x.strip()]
        rhos = [float(x) for x in rho.split(",") if x.strip()]
    except ValueError:
        _fail(f"--family-sizes and --rho take comma-separated numbers, got {family_sizes!r} and {rho!r}")
    if design not in DESIGNS:
        _fail(f"--design must be one of {', '.join(DESIGNS)}, got {design!r}")
    if not sizes or min(sizes) < 1 or not rhos or not all(-1 < r < 1 for r in rhos):
        _fail("--family-sizes must be positive integers and --rho values in (-1, 1)")
    with _err.status("simulating") as status:
        table = run_calibration(design, family_sizes=sizes, n_sims=n_sims, rhos=rhos, seed=seed,
                                n_resamples=n_resamples, n_jobs=jobs, missing=missing,
                                progress=lambda done, total, label: status.update(f"{done}/{total} {label}"))
    view = Table(title=f"Calibration of the confirmatory decision, design {design} ({DESIGNS[design].description})",
                 title_justify="left")
    for column in ("ρ", "m", "true ratio", "quantity", "per", "rate [MC 95%]", "n", "nominal"):
        view.add_column(column)
    for r in table.itertuples():
        view.add_row(f"{r.rho:g}", str(r.family_size), "all SD 0" if r.true_ratio is None or r.true_ratio != r.true_ratio
                     else f"{r.true_ratio:g}", r.quantity, r.unit,
                     f"{r.rate:.3f} [{r.mc_low:.3f}, {r.mc_high:.3f}]", str(r.n),
                     "—" if r.nominal is None or r.nominal != r.nominal else f"{r.nominal:.3g}")
    _out.print(view)
    if out is not None:
        out.write_text(markdown_table(table), encoding="utf-8")
        _out.print(f"wrote {_escape(str(out))}", highlight=False)


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
