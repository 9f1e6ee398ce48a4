"""The ``experiment: momentum_attention`` study: schema, resumable run, verdict and report.

A study file with ``experiment: momentum_attention`` trains, for every seed in
``seeds``, two transformers from scratch on in-context linear regression with
the same budget, the same initial weights and the same data stream: one with
standard attention ("plain") and one with Dai et al.'s momentum attention
("momentum", coefficient ``momentum.eta``; see
:mod:`hyptest.validation.momentum_attention`). Each (variant, seed) training
run is a unit: finished units are stored as JSON curves plus safetensors
weights under ``units/``, unfinished ones keep a checkpoint under
``checkpoints/`` and resume from it, bitwise.

The verdict on "momentum improves ICL" comes from :func:`hyptest.results.decide`:
the confirmatory statistic of seed ``s`` is the mean over ``k = 1..K-1``
demonstrations of ``log(MSE_momentum(k) / MSE_plain(k))`` on a fixed held-out
set, and the seeds are the paired units of an exact sign-flip test
(:class:`~hyptest.stats.order_resampling.SignFlipDistribution`) with an
equivalence margin declared in the study file. The log ratios at a few
pre-declared ``k`` form an exploratory family.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from .. import __version__
from .._util import atomic_write_bytes, atomic_write_text, stable_hash
from ..study import MAX_NESTING, MAX_SEED, StudyError, _format_validation_error, _nesting_depth, _Strict, read_study_file
from . import momentum_attention as ma

__all__ = ["EXPERIMENT", "MomentumStudy", "MomentumRun", "analyse", "load_momentum_study", "parse_momentum_study",
           "plan_units", "run_momentum_study"]

EXPERIMENT = "momentum_attention"
#: Version of the training code; part of every unit key. Bump it when a change can alter a stored number.
TRAINER_VERSION = "1"
VARIANTS = ("plain", "momentum")
MAX_SEEDS = 20  # the exact sign-flip test enumerates 2**seeds sign patterns

Seed = Annotated[int, Field(ge=0, lt=MAX_SEED)]


class RegressionSpec(_Strict):
    """The in-context task: linear regression in ``d`` dimensions, ``n_points`` (x, y) pairs per sequence."""

    d: int = Field(default=5, ge=1, le=64)
    n_points: int = Field(default=11, ge=2, le=128)
    noise_sd: float = Field(default=0.0, ge=0, le=10)


class TransformerSpec(_Strict):
    """The model: a pre-LayerNorm causal transformer (the same for both variants)."""

    layers: int = Field(default=2, ge=1, le=12)
    heads: int = Field(default=4, ge=1, le=16)
    d_model: int = Field(default=64, ge=4, le=512)
    mlp_ratio: int = Field(default=4, ge=1, le=8)
    positions: Literal["learned", "rotary"] = "learned"

    @model_validator(mode="after")
    def _heads_divide(self) -> "TransformerSpec":
        if self.d_model % self.heads:
            raise ValueError(f"`d_model`: must be divisible by `heads` ({self.heads}), got {self.d_model}")
        if self.positions == "rotary" and (self.d_model // self.heads) % 2:
            raise ValueError(f"`positions`: rotary positions need an even head dimension, d_model / heads = "
                             f"{self.d_model // self.heads}")
        return self


class MomentumSpec(_Strict):
    """Dai et al.'s momentum coefficient ``eta`` (in (0, 1); 0 would make the variants identical)."""

    eta: float = Field(default=0.9, gt=0, lt=1)


class TrainingSpec(_Strict):
    """The training budget, the same for both variants (AdamW, warm-up then cosine decay)."""

    steps: int = Field(default=3000, ge=1, le=100_000)
    batch: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=1e-3, gt=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    warmup_steps: int = Field(default=200, ge=0, le=100_000)
    grad_clip: float = Field(default=1.0, ge=0, le=1000)
    checkpoint_every: int = Field(default=500, ge=1, le=100_000)
    log_every: int = Field(default=100, ge=1, le=100_000)

    @model_validator(mode="after")
    def _warmup_within(self) -> "TrainingSpec":
        if self.warmup_steps > self.steps:
            raise ValueError(f"`warmup_steps`: cannot exceed `steps` ({self.steps}), got {self.warmup_steps}")
        return self


class EvaluationSpec(_Strict):
    """The held-out evaluation set: ``n_sequences`` sequences drawn from the study's root seed."""

    n_sequences: int = Field(default=2000, ge=16, le=100_000)


class MomentumAnalysisSpec(_Strict):
    """The decision: level, equivalence margin (a ratio of ICL losses) and the exploratory ``k``.

    ``margin_ratio``: momentum and plain are "equivalent" when the geometric
    mean of ``MSE_momentum / MSE_plain`` over ``k = 1..K-1`` lies within
    ``[1 / margin_ratio, margin_ratio]`` (TOST on the log scale).
    ``k_exploratory``: numbers of demonstrations whose log ratio is tested on
    its own (an exploratory family, Holm); default ``[1, d, K - 1]``.
    """

    alpha: float = Field(default=0.05, gt=0, lt=1)
    margin_ratio: float = Field(default=1.1, gt=1, le=10)
    k_exploratory: list[Annotated[int, Field(ge=0, le=127)]] | None = Field(default=None, max_length=16)
    adjust: Literal["holm", "bonferroni", "bh"] = "holm"

    @field_validator("k_exploratory")
    @classmethod
    def _unique_k(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"values must be unique, got {value}")
        return value


class MomentumStudy(_Strict):
    """A validated ``experiment: momentum_attention`` study file."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    experiment: Literal["momentum_attention"]
    description: str = ""
    seed: Seed = 0
    seeds: list[Seed] = Field(default_factory=lambda: list(range(8)), min_length=2, max_length=MAX_SEEDS)
    output_dir: str | None = None
    task: RegressionSpec = Field(default_factory=RegressionSpec)
    model: TransformerSpec = Field(default_factory=TransformerSpec)
    momentum: MomentumSpec = Field(default_factory=MomentumSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    analysis: MomentumAnalysisSpec = Field(default_factory=MomentumAnalysisSpec)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        dupes = sorted({s for s in value if value.count(s) > 1})
        if dupes:
            raise ValueError(f"values must be unique, repeated: {', '.join(map(str, dupes))}")
        return value

    @model_validator(mode="after")
    def _k_in_range(self) -> "MomentumStudy":
        bad = [k for k in self.k_exploratory() if not 0 <= k < self.task.n_points]
        if bad:
            raise ValueError(f"`analysis.k_exploratory`: k must lie in 0..{self.task.n_points - 1} "
                             f"(task.n_points - 1), got {bad}")
        return self

    def k_exploratory(self) -> list[int]:
        """The pre-declared k of the exploratory family (default ``1, d, K-1`` within range)."""
        if self.analysis.k_exploratory is not None:
            return list(self.analysis.k_exploratory)
        K = self.task.n_points
        return sorted({k for k in (1, self.task.d, K - 1) if 1 <= k < K})

    def variant_config(self, variant: str) -> ma.ModelConfig:
        """The model of a variant ("plain": eta 0; "momentum": ``momentum.eta``)."""
        m = self.model
        return ma.ModelConfig(d=self.task.d, n_points=self.task.n_points, layers=m.layers, heads=m.heads,
                              d_model=m.d_model, mlp_ratio=m.mlp_ratio, positions=m.positions,
                              eta=0.0 if variant == "plain" else self.momentum.eta)

    def training_config(self) -> ma.TrainConfig:
        t = self.training
        return ma.TrainConfig(steps=t.steps, batch=t.batch, lr=t.lr, weight_decay=t.weight_decay,
                              warmup_steps=t.warmup_steps, grad_clip=t.grad_clip, noise_sd=self.task.noise_sd,
                              checkpoint_every=t.checkpoint_every, log_every=t.log_every)


def parse_momentum_study(data: Any, *, source: str = "<study>") -> MomentumStudy:
    """Validate a parsed mapping as a momentum-attention study.

    Raises
    ------
    StudyError
        One line per problem, each naming the field path.
    """
    if not isinstance(data, dict):
        raise StudyError(f"{source}: a study file must be a YAML mapping, got {type(data).__name__}")
    if _nesting_depth(data) > MAX_NESTING:
        raise StudyError(f"{source}: the study file is nested too deeply to be a study")
    try:
        return MomentumStudy.model_validate(data)
    except ValidationError as error:
        raise StudyError(_format_validation_error(error, source)) from None


def load_momentum_study(path: str | Path) -> tuple[MomentumStudy, str]:
    """Read and validate a momentum-attention study file; return it and its text."""
    data, text = study_data(path)
    return parse_momentum_study(data, source=str(path)), text


# --------------------------------------------------------------------------- #
# Units
# --------------------------------------------------------------------------- #
def _torch_version() -> str:
    import torch

    return torch.__version__


def plan_units(study: MomentumStudy) -> list[dict[str, Any]]:
    """One unit per (variant, seed): its descriptor and content key (everything that shapes its numbers)."""
    base = {
        "experiment": EXPERIMENT, "trainer": TRAINER_VERSION, "torch": _torch_version(), "numpy": np.__version__,
        "task": study.task.model_dump(mode="json"), "model": study.model.model_dump(mode="json"),
        "training": study.training.model_dump(mode="json", exclude={"checkpoint_every"}),
        "evaluation": {**study.evaluation.model_dump(mode="json"), "seed": study.seed},
    }
    units = []
    for variant in VARIANTS:
        eta = 0.0 if variant == "plain" else study.momentum.eta
        for seed in study.seeds:
            desc = {**base, "variant": variant, "eta": eta, "train_seed": seed}
            units.append({"key": stable_hash(desc, length=24), "variant": variant, "eta": eta, "seed": seed})
    return units


def run_unit(study: MomentumStudy, unit: dict[str, Any], run_dir: Path,
             on_steps: Callable[[int], None] | None = None, progress_every: int = 25) -> dict[str, Any]:
    """Train and evaluate one unit; write ``units/<key>.safetensors`` then ``units/<key>.json`` (the commit)."""
    import json

    from safetensors.torch import save

    key = unit["key"]
    cfg = study.variant_config(unit["variant"])
    result = ma.train_unit(cfg, study.training_config(), unit["seed"], checkpoint_dir=run_dir / "checkpoints" / key,
                           on_steps=on_steps, progress_every=progress_every)
    model = ma.Transformer(cfg)
    model.load_state_dict(result.state_dict)
    X, y = ma.evaluation_set(study.seed, study.evaluation.n_sequences, study.task.n_points, study.task.d,
                             study.task.noise_sd)
    with ma.single_thread():
        curve = ma.icl_loss_curve(model, X, y)
    atomic_write_bytes(run_dir / "units" / f"{key}.safetensors", save(result.state_dict))
    record = {**unit, "icl_loss": [float(v) for v in curve], "train_loss": result.loss_log,
              "n_parameters": result.n_parameters, "wall_s": round(result.wall_s, 3),
              "resumed_from_step": result.resumed_from, "weights": f"units/{key}.safetensors"}
    atomic_write_text(run_dir / "units" / f"{key}.json", json.dumps(record, indent=1) + "\n")
    return record


def _worker(args: tuple[dict, dict, str, Any]) -> dict[str, Any]:  # pragma: no cover - runs in a subprocess
    data, unit, run_dir, queue = args
    study = MomentumStudy.model_validate(data)
    return run_unit(study, unit, Path(run_dir), on_steps=(lambda n: queue.put(n)) if queue is not None else None)


# --------------------------------------------------------------------------- #
# Run
# --------------------------------------------------------------------------- #
class MomentumRun:
    """What :func:`run_momentum_study` did: the run directory, units run and reused, the results."""

    def __init__(self, run_dir: Path, n_units: int, n_reused: int, results: dict[str, Any]) -> None:
        self.run_dir, self.n_units, self.n_reused, self.results = run_dir, n_units, n_reused, results


def default_run_dir(study: MomentumStudy) -> Path:
    """``output_dir`` from the study file, else ``reports/<study name>``."""
    return Path(study.output_dir) if study.output_dir else Path("reports") / study.name


def run_momentum_study(study: MomentumStudy, study_text: str, *, out_dir: str | Path | None = None,
                       workers: int | None = None, progress: bool = True, force: bool = False,
                       wait: bool = False, on_wait: Callable[[str], None] | None = None) -> MomentumRun:
    """Train every missing unit (resuming checkpoints), decide, and write results.json and report.html.

    Parameters
    ----------
    study : MomentumStudy
    study_text : str
        The study file's text (kept in the manifest and the report).
    out_dir : path, optional
        Run directory (a local folder); default :func:`default_run_dir`.
    workers : int, optional
        Training processes, one CPU thread each (default: the CPU count, at
        most the number of units). The numbers do not depend on it.
    progress : bool
        Show a tqdm bar of training steps on stderr.
    force : bool
        Run even if the directory holds another study: its results are moved
        into ``previous-<timestamp>/`` first.
    wait : bool
        Wait for another writer of the directory instead of failing.

    Raises
    ------
    hyptest.store.StoreError
        Another writer holds the directory, or it holds another study and ``force`` is false.
    StudyError
        The run directory is a URL (checkpoints need a local folder).
    """
    from ..store import RunDir
    from ..store.run_dir import StoreError, is_url

    location = out_dir or default_run_dir(study)
    if is_url(location):
        raise StudyError(f"output_dir: {location} is a URL; the momentum experiment checkpoints to a local folder")
    run = RunDir(Path(location))
    lock = run.lock().acquire(wait=wait, on_wait=on_wait)
    try:
        run.makedirs()
        run.remove_stale_temp_files()
        note = _claim(run, study, force=force, error=StoreError)
        return _run_locked(study, study_text, Path(run.path), workers=workers, progress=progress,
                           notes=[n for n in (lock.note, note) if n])
    finally:
        lock.release()


def _claim(run: Any, study: MomentumStudy, *, force: bool, error: type[Exception]) -> str | None:
    if not run.exists("manifest.json"):
        return None
    try:
        old = run.read_json("manifest.json")
        same = old.get("experiment") == EXPERIMENT and old["study"] == _settings(study)
        old_name = old["study"]["name"]
    except Exception:
        same, old_name = False, None
    if same:
        return None
    what = (f"another study ({old_name!r})" if old_name != study.name else
            f"study {old_name!r} with other settings") if old_name is not None else "an unreadable manifest.json"
    if not force:
        raise error(f"run directory {run.location} holds {what}; use --out for a new directory, or --force to move "
                    "its results aside (into previous-<timestamp>/ inside it) and run this study there")
    moved = run.move_aside(keep_units=old_name == study.name)
    return f"--force: the earlier results in this directory ({what}) were moved to {moved}"


def _settings(study: MomentumStudy) -> dict[str, Any]:
    """The study as stored in the manifest, without the keys that cannot change a number."""
    out = study.model_dump(mode="json")
    out.pop("output_dir", None)
    out["training"].pop("checkpoint_every", None)
    return out


def _run_locked(study: MomentumStudy, study_text: str, run_dir: Path, *, workers: int | None, progress: bool,
                notes: list[str]) -> MomentumRun:
    import json

    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    units = plan_units(study)
    manifest = {"hyptest_version": __version__, "experiment": EXPERIMENT, "study": _settings(study),
                "study_text": study_text, "units": units, "started": started.isoformat(timespec="seconds")}
    atomic_write_text(run_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    done = [u for u in units if (run_dir / "units" / f"{u['key']}.json").is_file()]
    todo = [u for u in units if u not in done]
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    bar = _progress_bar(progress, total=len(todo) * study.training.steps, units=len(todo), reused=len(done))
    try:
        if n_workers == 1 or len(todo) <= 1:
            for unit in todo:
                run_unit(study, unit, run_dir, on_steps=bar.update)
        else:
            _run_parallel(study, todo, run_dir, n_workers, bar)
    finally:
        bar.close()
    if (run_dir / "checkpoints").is_dir() and not any((run_dir / "checkpoints").iterdir()):
        (run_dir / "checkpoints").rmdir()
    train_s = time.perf_counter() - t0
    records = [json.loads((run_dir / "units" / f"{u['key']}.json").read_text(encoding="utf-8")) for u in units]
    results = analyse(study, records)
    results["provenance"] = _provenance(started, train_s, time.perf_counter() - t0, n_workers, len(units),
                                        len(done), notes, records)
    results["provenance"]["earlier_calls"] = _earlier_calls(run_dir) if done else []
    results["study_text"] = study_text
    atomic_write_text(run_dir / "results.json", json.dumps(_clean(results), indent=1, allow_nan=False) + "\n")
    from .momentum_report import write_report

    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))  # what readers see: inf is null
    write_report(run_dir, results)
    return MomentumRun(run_dir, len(units), len(done), results)


def _run_parallel(study: MomentumStudy, todo: list[dict], run_dir: Path, n_workers: int, bar: Any) -> None:
    import multiprocessing as mp
    import queue as _queue
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        q = manager.Queue()
        data = study.model_dump(mode="json")
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            pending = {pool.submit(_worker, (data, unit, str(run_dir), q)) for unit in todo}
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                while True:
                    try:
                        bar.update(q.get_nowait())
                    except _queue.Empty:
                        break
                for future in finished:
                    future.result()  # re-raise a worker's error here


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(show: bool, *, total: int, units: int, reused: int) -> Any:
    if not show or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="step", desc=f"training {units} unit(s), {reused} reused", dynamic_ncols=True,
                smoothing=0.1)


def _provenance(started: _dt.datetime, train_s: float, total_s: float, workers: int, n_units: int, n_reused: int,
                notes: list[str], records: list[dict]) -> dict[str, Any]:
    from ..provenance import library_versions

    return {
        "hyptest_version": __version__, "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "libraries": library_versions(), "workers": workers, "torch_threads_per_unit": 1,
        "started": started.isoformat(timespec="seconds"),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": {"train": round(train_s, 2), "total": round(total_s, 2),
                        "per_unit_mean": round(float(np.mean([r["wall_s"] for r in records])), 2),
                        "per_unit_sum": round(float(np.sum([r["wall_s"] for r in records])), 2)},
        "n_units": n_units, "n_units_reused": n_reused, "notes": notes,
    }


def _earlier_calls(run_dir: Path) -> list[dict[str, Any]]:
    """The calls that trained the reused units, as the previous ``results.json`` recorded them (newest last)."""
    import json

    try:
        previous = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["provenance"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    keep = ("started", "finished", "wall_time_s", "n_units", "n_units_reused", "workers", "load_average", "cpu_count")
    return [*previous.get("earlier_calls", []), {k: previous.get(k) for k in keep}]


def _clean(value: Any) -> Any:
    from .._util import clean_for_json

    return clean_for_json(value)


# --------------------------------------------------------------------------- #
# Analysis
# --------------------------------------------------------------------------- #
def _log_ratios(study: MomentumStudy, records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per seed (in ``study.seeds`` order): plain curve, momentum curve, log ratio per k, shapes (S, K)."""
    by = {(r["variant"], r["seed"]): np.asarray(r["icl_loss"], dtype=float) for r in records}
    plain = np.stack([by[("plain", s)] for s in study.seeds])
    mom = np.stack([by[("momentum", s)] for s in study.seeds])
    return plain, mom, np.log(mom) - np.log(plain)


def analyse(study: MomentumStudy, records: list[dict]) -> dict[str, Any]:
    """Curves, the optimum, the comparisons and their verdicts from the finished units.

    Returns a JSON-ready dict: ``curves`` (per variant and seed), ``optimum``
    (Bayes-optimal ICL loss per k on the same evaluation set), ``summary``
    (per variant and k: mean, min, max over seeds), ``comparisons`` (rows of
    :func:`hyptest.results.decide`), ``families``, ``per_seed`` (the paired
    statistics) and ``budget``.
    """
    from ..results import CONFIRMATORY, Comparison, decide
    from ..stats.order_resampling import SignFlipDistribution

    a = study.analysis
    plain, mom, log_ratio = _log_ratios(study, records)
    K = study.task.n_points
    ks = np.arange(1, K)
    per_seed = log_ratio[:, 1:].mean(axis=1)
    margin = math.log(a.margin_ratio)
    model_name = (f"transformer {study.model.layers}L d_model={study.model.d_model} {study.model.heads}h "
                  f"({study.model.positions} positions)")
    task_name = f"linear regression d={study.task.d} K={K} noise={study.task.noise_sd:g}"
    common = dict(model=model_name, task=task_name, method_a="plain", method_b=f"momentum eta={study.momentum.eta:g}",
                  null_value=0.0, margin=margin, margin_ratio=a.margin_ratio,
                  margin_source=f"study file: analysis.margin_ratio = {a.margin_ratio:g}",
                  resampling=f"exact sign-flip test over {len(study.seeds)} training seeds (paired: the same "
                             "initial weights and training batches for both variants)",
                  test="sign-flip (exact)", n=len(study.seeds))

    def sampler(values: np.ndarray) -> Callable[[int, np.random.Generator], Any]:
        return lambda n, rng: SignFlipDistribution(values)

    comps = [Comparison(
        n_demos=None, analysis="icl_loss_log_ratio", family=CONFIRMATORY, estimate=float(per_seed.mean()),
        scale=f"mean over k = 1..{K - 1} of log(MSE momentum / MSE plain), mean over seeds; < 0: momentum better",
        sampler=sampler(per_seed), mean_a=float(plain[:, 1:].mean()), mean_b=float(mom[:, 1:].mean()),
        ratio=float(math.exp(per_seed.mean())), **common)]
    for k in study.k_exploratory():
        values = log_ratio[:, k]
        comps.append(Comparison(
            n_demos=int(k), analysis="icl_loss_log_ratio_at_k", family="icl_loss_at_k",
            estimate=float(values.mean()), scale=f"log(MSE momentum / MSE plain) at k = {k}, mean over seeds",
            sampler=sampler(values), mean_a=float(plain[:, k].mean()), mean_b=float(mom[:, k].mean()),
            ratio=float(math.exp(values.mean())), **common))
    table, _ = decide(comps, alpha=a.alpha, adjust=a.adjust, seed=study.seed)
    table["direction"] = np.where(table["estimate"] < 0, "momentum better", "plain better")
    X, y = ma.evaluation_set(study.seed, study.evaluation.n_sequences, K, study.task.d, study.task.noise_sd)
    optimum = ((ma.optimal_predictions(X, y, study.task.noise_sd) - y) ** 2).mean(axis=0) / study.task.d
    zero = (y ** 2).mean(axis=0) / study.task.d
    curves = {v: {str(s): c.tolist() for s, c in zip(study.seeds, arr)} for v, arr in (("plain", plain),
                                                                                        ("momentum", mom))}
    summary = []
    for variant, arr in (("plain", plain), ("momentum", mom)):
        for k in range(K):
            summary.append({"variant": variant, "k": k, "mean": float(arr[:, k].mean()),
                            "min": float(arr[:, k].min()), "max": float(arr[:, k].max()),
                            "sd": float(arr[:, k].std(ddof=1))})
    train_loss = {v: {str(r["seed"]): r["train_loss"] for r in records if r["variant"] == v} for v in VARIANTS}
    families = []
    for family, rows in table.groupby("family", sort=False):
        families.append({"family": family, "role": str(rows["role"].iloc[0]), "size": int(len(rows)),
                         "adjust": a.adjust, "alpha": a.alpha, "analyses": sorted(rows["analysis"].unique()),
                         "n_resamples": None})
    n_params = {r["variant"]: r["n_parameters"] for r in records}
    return {
        "experiment": EXPERIMENT,
        "study": study.model_dump(mode="json"),
        "comparisons": [{**row, "n_demos": c.n_demos}  # ints (pandas made the column float around the None)
                        for row, c in zip(table.astype(object).where(table.notna(), None).to_dict("records"), comps)],
        "families": families,
        "per_seed": [{"seed": s, "mean_log_ratio": float(v)} for s, v in zip(study.seeds, per_seed)],
        "curves": curves, "optimum": optimum.tolist(), "zero_predictor": zero.tolist(), "summary": summary,
        "train_loss": train_loss, "k": list(range(K)), "k_confirmatory": ks.tolist(),
        "k_exploratory": study.k_exploratory(), "n_parameters": n_params,
        "budget": {**study.training.model_dump(mode="json"), "optimizer": "AdamW (betas 0.9, 0.999; eps 1e-8)",
                   "schedule": "linear warm-up, then cosine decay to 0", "seeds": list(study.seeds),
                   "sequences_seen_per_unit": study.training.steps * study.training.batch},
        "sign_flip_floor": {"one_sided": 1 / 2 ** len(study.seeds), "two_sided": 2 / 2 ** len(study.seeds)},
    }


def study_data(path: str | Path) -> tuple[Any, str]:
    """The parsed YAML of a study file and its text (:class:`StudyError` on unreadable or malformed files)."""
    return read_study_file(path)


def describe_cost(study: MomentumStudy) -> str:
    """A rough cost line for ``hyptest validate`` (measured ~15 ms per step of the default shape on one core)."""
    units = 2 * len(study.seeds)
    m = study.model
    tokens_per_step = study.training.batch * 2 * study.task.n_points
    flops = 6 * tokens_per_step * m.layers * (4 * m.d_model ** 2 + 2 * m.mlp_ratio * m.d_model ** 2)
    seconds = units * study.training.steps * flops / 25e9
    return (f"{units} training runs x {study.training.steps} steps (batch {study.training.batch}): about "
            f"{seconds / 60:.1f} CPU-minutes on one core (divide by the number of cores)")
