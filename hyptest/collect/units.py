"""Run one unit (ICL or a GD method, one order) and turn its scores into rows."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from ..models import LoadedModel
from ..tasks import Task
from .encoding import PromptEncoder
from .gd import TrainingExample, WeightSnapshot, train_in_place
from .plan import Unit
from .scoring import QueryScores, score_queries

__all__ = ["UnitRunner", "scores_to_frame"]


def scores_to_frame(unit: Unit, task: Task, scores: QueryScores, *, step: int) -> pd.DataFrame:
    """Long-format rows of one unit (one per query)."""
    logp = scores.label_logprobs
    shifted = logp - logp.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = task.labels
    golds = [task.example(q).label for q in unit.query_ids]
    gold_idx = np.array([labels.index(g) for g in golds])
    pred_idx = probs.argmax(axis=1)
    n = len(unit.query_ids)
    return pd.DataFrame(
        {
            "unit_key": [unit.key] * n,
            "model": [unit.model] * n,
            "task": [unit.task] * n,
            "method": [unit.method] * n,
            "method_kind": [unit.method_kind] * n,
            "n_demos": np.full(n, unit.n_demos, dtype=np.int64),
            "demo_set": np.full(n, unit.demo_set, dtype=np.int64),
            "order_id": np.full(n, unit.order_id, dtype=np.int64),
            "order": [list(unit.order)] * n,
            "seed": np.full(n, unit.seed, dtype=np.int64),
            "step": np.full(n, step, dtype=np.int64),
            "query_id": list(unit.query_ids),
            "gold": golds,
            "labels": [list(labels)] * n,
            "label_logprobs": [list(map(float, r)) for r in logp],
            "label_probs": [list(map(float, r)) for r in probs],
            "p_gold": probs[np.arange(n), gold_idx],
            "pred": [labels[i] for i in pred_idx],
            "correct": pred_idx == gold_idx,
            "topk_ids": [list(map(int, r)) for r in scores.topk_ids],
            "topk_probs": [list(map(float, r)) for r in scores.topk_probs],
        }
    )


class UnitRunner:
    """Runs units of one model, reusing its weights snapshot across GD units."""

    def __init__(self, lm: LoadedModel, tasks: dict[str, Task], study: Any, *, batch_size: int = 32) -> None:
        self.lm = lm
        self.tasks = tasks
        self.study = study
        self.batch_size = batch_size
        self._encoders: dict[str, PromptEncoder] = {}
        self._snapshot: WeightSnapshot | None = None

    def encoder(self, task: Task) -> PromptEncoder:
        """The cached prompt encoder of a task."""
        if task.name not in self._encoders:
            self._encoders[task.name] = PromptEncoder(self.lm.tokenizer, task)
        return self._encoders[task.name]

    def _score(self, task: Task, demo_ids: Sequence[str], query_ids: Sequence[str]) -> QueryScores:
        enc = self.encoder(task)
        return score_queries(
            self.lm.model,
            enc.prefix_ids([task.example(i) for i in demo_ids]),
            [enc.query_ids(task.example(q)) for q in query_ids],
            enc.label_ids(),
            top_k=self.study.analysis.top_k,
            batch_size=self.batch_size,
            device=self.lm.device,
        )

    def run(self, unit: Unit) -> pd.DataFrame:
        """Collect one unit and return its rows."""
        task = self.tasks[unit.task]
        method = self.study.method(unit.method)
        if method.kind == "icl":
            return scores_to_frame(unit, task, self._score(task, unit.order, unit.query_ids), step=0)
        if self._snapshot is None:
            self._snapshot = WeightSnapshot(self.lm.model)
        enc = self.encoder(task)
        examples = [TrainingExample(*map(tuple, enc.training_example(task.example(i)))) for i in unit.order]
        self._snapshot.restore()
        try:
            losses = train_in_place(self.lm.model, examples, method, seed=unit.seed, device=self.lm.device)
            scores = self._score(task, (), unit.query_ids)
        finally:
            self._snapshot.restore()
        return scores_to_frame(unit, task, scores, step=len(losses))


    def run_group(self, units: Sequence[Unit]) -> Iterator[tuple[Unit, pd.DataFrame]]:
        """Collect the units of one work group (one demo set and method, many orders).

        Yields each unit with its rows as soon as it is done, so the caller can
        store it before the next one starts.
        """
        for unit in units:
            yield unit, self.run(unit)
