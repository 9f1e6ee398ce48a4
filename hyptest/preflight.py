"""Checks before a run: is the run directory writable, and what will the study cost.

``hyptest validate`` prints :func:`estimate_cost`; ``hyptest study`` refuses a
study whose expected wall time exceeds :data:`CONFIRM_SECONDS` unless ``--yes``
is given. The estimate is rough (within a factor of about two on the machine
the rates were measured on): it uses the rates of ``docs/performance.md``,
measured on SmolLM2-135M on a 2-core CPU, scaled by the model's size and this
machine's cores.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .collect.memory import MemoryBudget
from .study import Study, StudyError

__all__ = ["CONFIRM_SECONDS", "CostEstimate", "check_output_dir", "estimate_cost"]

#: Above this expected wall time ``hyptest study`` asks for ``--yes``.
CONFIRM_SECONDS = 2 * 3600.0

# docs/performance.md, SmolLM2-135M, float32, 2 torch threads:
ICL_S_PER_PAIR = 0.057  # ICL, per (order, query), N = 4 short demos (bench_icl.py --scaling)
SCORE_S_PER_PAIR = 0.043  # zero-shot scoring of one query on trained weights (bench_gd.py: 59.2 s - 64 steps)
STEP_S = 0.6  # one optimiser step on all weights, batch 1 (default study end to end: 232 s for 192 steps + scoring)
ZS_S_PER_QUERY = 0.02
REFERENCE_PARAMS = 135e6
REFERENCE_THREADS = 2
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_TINY_PARAMS = 0.05e6  # hidden 32, 2 layers, 257-token vocabulary (fixed overheads dominate: see _MIN_SCALE)
_MIN_SCALE = 0.02


@dataclass
class CostEstimate:
    """What a study will compute, and roughly how long it takes here."""

    units: int = 0
    forward_tokens: int = 0
    optimiser_steps: int = 0
    seconds: float = 0.0
    memory_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for ``hyptest validate``."""
        text = (f"cost: {self.units:,} unit(s), ~{_si(self.forward_tokens)} forward tokens, "
                f"<= {self.optimiser_steps:,} optimiser step(s), expected ~{_duration(self.seconds)} on this "
                f"machine ({_cores()} core(s), CPU rates of docs/performance.md), peak memory ~"
                f"{self.memory_bytes / 2**30:.1f} GiB")
        return text + "".join(f"; {note}" for note in self.notes)


def _si(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _device_type(model: Any) -> str:
    """``cuda`` or ``cpu``: where a model spec will run (``auto`` asks torch, if it is importable)."""
    device = str(getattr(model, "device", "auto") or "auto")
    if device == "auto":
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover - torch is a dependency
            return "cpu"
    return device.split(":")[0]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _model_params(model: Any) -> tuple[float | None, str | None]:
    """Parameter count of a model without loading it (None, note when unknown)."""
    if model.source == "embedded":
        from .models.embedded import embedded_model

        return float(embedded_model(model.embedded_name()).n_parameters), None
    if model.source == "tiny":
        return _TINY_PARAMS, None
    local = Path(model.path).expanduser() if model.path else None
    if local is not None and local.is_dir():
        files = sorted(local.glob("*.safetensors")) or sorted(local.glob("*.bin"))
        size = sum(f.stat().st_size for f in files)
        if size:
            return size / 4, None  # stored in float32 (an upper bound for half-precision files)
    return None, f"model {model.name!r}: size unknown without a download, SmolLM2-135M's rates assumed"


def _tokens(text_chars: float, tiny: bool) -> float:
    return text_chars if tiny else text_chars / 4  # byte-level tokenizer vs ~4 characters per BPE token


def estimate_cost(study: Study, tasks: Mapping[str, Any]) -> CostEstimate:
    """Units, forward tokens, optimiser steps, expected wall time and peak memory of a study.

    Parameters
    ----------
    study : Study
        The validated study.
    tasks : mapping
        Task name -> loaded :class:`hyptest.tasks.Task` (its queries and demo lengths).

    Notes
    -----
    Optimiser steps are an upper bound: orders that share leading demos share
    their SGD/Adam steps. The time is for the CPU; on a GPU it is shorter.
    """
    cost = CostEstimate()
    threads_scale = REFERENCE_THREADS / max(1, min(_cores(), 8))
    demos = study.demos
    for model in study.models:
        params, note = _model_params(model)
        if note:
            cost.notes.append(note)
        params = params or REFERENCE_PARAMS
        scale = max(_MIN_SCALE, params / REFERENCE_PARAMS) * threads_scale
        tiny = model.source == "tiny"
        weights = params * _DTYPE_BYTES.get(model.dtype, 4)
        budget = MemoryBudget.for_device(_device_type(model), study.executor.memory_budget).limit
        peak = weights
        for task_name, task in tasks.items():
            pool = list(getattr(task, "demos", ())) or [None]
            demo_chars = sum(len(task.format_demo(d)) for d in pool if d is not None) / max(1, len(pool))
            queries = list(getattr(task, "queries", ()))
            query_chars = sum(len(task.format_input(q.text)) for q in queries) / max(1, len(queries))
            n_queries = len(queries) if demos.n_queries == "all" else min(int(demos.n_queries), len(queries))
            demo_tok, query_tok = _tokens(demo_chars, tiny), _tokens(query_chars, tiny)
            for n in demos.n_demos:
                orders = math.factorial(n) if demos.n_orders == "all" else min(int(demos.n_orders), math.factorial(n))
                sets_orders = demos.n_sets * orders
                pairs = sets_orders * n_queries
                for method in study.methods:
                    seeds = 1 if method.kind in ("icl", "zs") else len(method.train_seeds)
                    cost.units += sets_orders * seeds
                    if method.kind == "icl":
                        cost.forward_tokens += int(pairs * (n * demo_tok + query_tok))
                        cost.seconds += pairs * ICL_S_PER_PAIR * scale
                        continue
                    if method.kind == "zs":
                        cost.forward_tokens += int(demos.n_sets * n_queries * query_tok)
                        cost.seconds += demos.n_sets * n_queries * ZS_S_PER_QUERY * scale
                        continue
                    per_order = method.steps if method.kind == "gd" else n * method.epochs
                    steps = sets_orders * per_order * seeds
                    cost.optimiser_steps += steps
                    # forward + backward ~ 3 forward passes over the demos of each step
                    demos_per_step = n if method.kind == "gd" else 1
                    cost.forward_tokens += int(steps * demos_per_step * demo_tok * 3 + pairs * seeds * query_tok)
                    cost.seconds += (steps * STEP_S * max(1, demos_per_step / 4) + pairs * seeds * SCORE_S_PER_PAIR) \
                        * scale
                    # the memory budget holds the training state (gradients + Adam's two moments), the entry
                    # weights and the step tree's snapshots (one per depth), as far as it goes; the state always
                    state = 1 + (2 if method.kind == "adam" else 0)
                    wanted = state + 1 + state * min(n * getattr(method, "epochs", 1), 64)
                    if method.params == "all":
                        peak = max(peak, weights + max(weights * state, min(budget, weights * wanted)))
        cost.memory_bytes = max(cost.memory_bytes, int(peak + 512 * 2**20))  # + activations, libraries
    if study.analysis.bayes:
        cost.seconds += 60.0
    return cost


def check_output_dir(location: str | Path) -> None:
    """Refuse a run directory that cannot be created or written.

    URLs (``s3://...``) are not checked here: their store reports its own errors.

    Raises
    ------
    StudyError
        Naming the path and what is wrong with it.
    """
    from .store.run_dir import is_url

    if is_url(location):
        return
    path = Path(location).expanduser()
    if path.exists() and not path.is_dir():
        raise StudyError(f"output_dir: {path} exists and is not a directory")
    probe = path
    while not probe.exists():
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if not probe.is_dir():
        raise StudyError(f"output_dir: cannot create {path}: {probe} is not a directory")
    what = "is not writable" if probe == path else f"cannot be created ({probe} is not writable)"
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StudyError(f"output_dir: {path} {what}")
    try:  # os.access says yes to root everywhere: try it (an empty directory, removed at once)
        os.rmdir(tempfile.mkdtemp(prefix=".hyptest-probe-", dir=probe))
    except OSError as error:
        raise StudyError(f"output_dir: {path} {what}: {error.strerror or error}") from None
