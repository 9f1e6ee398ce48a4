"""Run lm-evaluation-harness as its CLI does (``lm-eval ... --log_samples --output_path``), offline.

Used by ``tests/test_importers_lm_eval.py`` and by ``benchmarks/lm_eval_report.py``; the harness writes
``<out>/<model_name_sanitized>/samples_<task>_<date>.jsonl`` and ``results_<date>.json``, exactly the
files ``hyptest reanalyse`` reads.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def _offline_in(folder: Path) -> Iterator[None]:
    """No hub, and the working directory where the task YAMLs' relative data_files resolve."""
    saved = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    cwd = os.getcwd()
    os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_harness(pretrained: Path, tasks: Sequence[str], include_path: Path, seeds: Sequence[int], out: Path, *,
                num_fewshot: int, batch_size: int = 8, limit: int | None = None) -> list[Path]:
    """One harness run per few-shot seed, each into its own output folder; returns those folders."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    folders = []
    with _offline_in(include_path):
        manager = TaskManager(include_path=str(include_path))
        for seed in seeds:
            folder = out / f"fewshot_seed_{seed}"
            tracker = EvaluationTracker(output_path=str(folder))
            results = lm_eval.simple_evaluate(
                model="hf", model_args=f"pretrained={pretrained},dtype=float32", tasks=list(tasks),
                num_fewshot=num_fewshot, fewshot_random_seed=seed, log_samples=True, task_manager=manager,
                device="cpu", batch_size=batch_size, limit=limit, evaluation_tracker=tracker)
            samples = results.pop("samples")
            tracker.save_results_aggregated(results=results, samples=samples)
            for task in results["configs"]:
                tracker.save_results_samples(task_name=task, samples=samples[task])
            folders.append(folder)
    return folders


def replay_sampler(pool: list[dict[str, Any]], n_docs: int, n: int, seed: int) -> list[list[dict[str, Any]]]:
    """The demos lm-eval's default sampler gives each doc, replayed with the standard library.

    lm-eval 0.4 (``lm_eval.api.samplers.ContextSampler``): one ``random.Random(fewshot_seed)`` per task,
    ``rnd.sample(pool, n)`` once per doc in doc order (the few-shot split is not the test split here).
    """
    rnd = random.Random(seed)
    return [rnd.sample(pool, n) for _ in range(n_docs)]
