"""Run units (ICL, zero-shot or a GD method, one order each) and turn their scores into rows.

A work group (every pending order and seed of one model, task, N, demo set and
method) runs as one walk over the orders' prefix tree: ICL shares the KV cache
of the prompts' common token prefixes (each prompt is tokenised as one whole
string; :func:`~hyptest.collect.scoring.score_prompts`), SGD
and Adam share their common first steps
(:func:`~hyptest.collect.gd.train_orders`). Zero-shot (``zs``) scores the
queries once and gives every order's unit the same rows. Each unit's rows are
yielded as soon as its order is done.

A GD method with ``record_steps`` stores its scores before training (``step``
0) and after every optimisation step (1..K); a state shared by several orders
(their common first steps) is scored once. The unit's answer is then the rows
with the largest ``step`` (:func:`hyptest.records.final_step_rows`).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from ..models import LoadedModel
from ..tasks import Task
from .encoding import PromptEncoder
from .gd import TrainingExample, WeightSnapshot, train_orders, trainable_parameters
from .plan import Unit
from .memory import MemoryBudget, largest_tensor_bytes
from .scoring import QueryScores, return_freed_memory, reuse_freed_memory, set_tf32, score_prompts

__all__ = ["COLLECTOR_VERSION", "UnitRunner", "scores_to_frame"]

#: Version of hyptest's collectors (prompt encoding, scoring, training); part of every unit key.
#: Bump it whenever a change to hyptest/collect/ can change a stored number.
COLLECTOR_VERSION = "5"


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
    """Runs units of one model, reusing its weights snapshot across GD units.

    Parameters
    ----------
    lm : LoadedModel
        The model, tokenizer and device.
    tasks : dict
        Loaded tasks by name.
    study : Study
        The validated study (methods, ``top_k``).
    batch_size : int, optional
        Packed query rows per forward pass; default automatic (token budget and
        the room in the memory budget; halved on out-of-memory).
    allow_tf32 : bool, default False
        Allow TF32 float32 matmuls on CUDA (see :func:`~hyptest.collect.scoring.set_tf32`);
        set explicitly either way when the runner is made.
    tune_malloc : bool, default True
        On CPU, let glibc reuse a training step's freed buffers under 64 MiB
        and keep up to the largest parameter's size of them
        (:func:`~hyptest.collect.scoring.reuse_freed_memory`), and give it back after each walk
        (:func:`~hyptest.collect.scoring.return_freed_memory`); process-wide.
    memory_budget : int or str, optional
        Bytes that the training state, snapshots, prefix-cache copies and scoring batches may hold
        (:class:`~hyptest.collect.memory.MemoryBudget`); default the study's
        ``executor.memory_budget``, else
        :data:`~hyptest.collect.memory.DEFAULT_BUDGET` for the model's device.
        The training state (gradients, optimizer state) is counted and held
        even beyond it; the model's own weights are not counted.
    """

    def __init__(self, lm: LoadedModel, tasks: dict[str, Task], study: Any, *, batch_size: int | None = None,
                 allow_tf32: bool = False, tune_malloc: bool = True, memory_budget: Any = None) -> None:
        self.lm = lm
        self.tasks = tasks
        self.study = study
        self.batch_size = batch_size
        if memory_budget is None:  # the study's executor block, else the device's default
            memory_budget = getattr(getattr(study, "executor", None), "memory_budget", None)
        self.memory_budget = MemoryBudget.for_device(lm.device, memory_budget)
        self._encoders: dict[str, PromptEncoder] = {}
        self._snapshot: WeightSnapshot | None = None
        set_tf32(allow_tf32)
        self._trim = tune_malloc and str(lm.device).startswith("cpu")
        if self._trim:
            return_freed_memory()  # what loading the model and tokenizer freed goes back before the run
            # the parameters step one by one inside the backward pass, so a step's buffers are a few of
            # the largest parameter's size at most: blocks under 64 MiB (every SmolLM2 parameter but the
            # 113 MB embedding) are reused from the heap step after step, larger ones (the embedding's
            # gradient and Adam's temporaries of its size) get their own mapping and leave no hole
            # between the optimizer's moments when freed; the heap keeps up to that size free at its top
            largest = largest_tensor_bytes(lm.model.parameters())
            reuse_freed_memory(keep_bytes=min(2 << 30, largest + (64 << 20)), map_from=64 << 20)
        for name in study.method_names():  # a bad `params` / `layer` fails now, not after hours
            method = study.method(name)
            if getattr(method, "params", "all") != "all":
                trainable_parameters(lm.model, method)

    def memory_summary(self) -> dict[str, Any]:
        """The budget, the most it had planned at once, what did not fit, and where the entry weights are."""
        return {**self.memory_budget.summary(),
                "entry_weights": "none" if self._snapshot is None else
                ("disk" if self._snapshot.on_disk else "memory")}

    def close(self) -> None:
        """Free the entry-weights snapshot (its memory reservation or its temporary file)."""
        if self._snapshot is not None:
            self._snapshot.close()
            self._snapshot = None

    def encoder(self, task: Task) -> PromptEncoder:
        """The cached prompt encoder of a task."""
        if task.name not in self._encoders:
            self._encoders[task.name] = PromptEncoder(self.lm.tokenizer, task)
        return self._encoders[task.name]

    def _score_orders(self, task: Task, orders: Sequence[Sequence[str]],
                      query_ids: Sequence[str]) -> Iterator[tuple[int, QueryScores]]:
        """Score the queries after each order's demos: every prompt tokenised as one whole string."""
        enc = self.encoder(task)
        queries = [task.example(q) for q in query_ids]
        return score_prompts(
            self.lm.model,
            [enc.order_prompts([task.example(i) for i in order], queries) for order in orders],
            enc.label_ids(),
            top_k=self.study.analysis.top_k,
            batch_size=self.batch_size,
            device=self.lm.device,
            memory_budget=self.memory_budget,
        )

    def run(self, unit: Unit) -> pd.DataFrame:
        """Collect one unit and return its rows (the same bits as inside its work group)."""
        ((_, rows),) = self.run_group([unit])
        return rows

    def run_group(self, units: Sequence[Unit]) -> Iterator[tuple[Unit, pd.DataFrame]]:
        """Collect the units of one work group (one demo set and method, many orders).

        Yields each unit with its rows as soon as it is done, so the caller can
        store it before the next one starts. Units are yielded in the order the
        prefix-tree walk finishes them, not in the order given. Units that do not
        share a task, method and query list are run as separate walks.
        """
        walks: dict[tuple[Any, ...], list[Unit]] = {}
        for unit in units:
            seed = 0 if unit.method_kind in ("icl", "zs") else unit.seed
            walks.setdefault((unit.task, unit.method, unit.query_ids, seed), []).append(unit)
        for (task_name, method_name, query_ids, seed), members in walks.items():
            task = self.tasks[task_name]
            method = self.study.method(method_name)
            if method.kind == "icl":
                for index, scores in self._score_orders(task, [u.order for u in members], query_ids):
                    yield members[index], scores_to_frame(members[index], task, scores, step=0)
            elif method.kind == "zs":
                ((_, scores),) = self._score_orders(task, [()], query_ids)  # no demos: once for every order
                for unit in members:
                    yield unit, scores_to_frame(unit, task, scores, step=0)
            else:
                yield from self._train_group(task, method, members, seed)
            if self._trim:
                return_freed_memory()  # what this walk freed is not reused by the next one: unmap it

    def _train_group(self, task: Task, method: Any, members: list[Unit], seed: int) -> Iterator[
            tuple[Unit, pd.DataFrame]]:
        if self._snapshot is None:
            self._snapshot = WeightSnapshot(self.lm.model, self.memory_budget)
        enc = self.encoder(task)
        loss = getattr(method, "loss", "label")
        orders = [[TrainingExample(*map(tuple, enc.training_example(task.example(i), loss=loss))) for i in u.order]
                  for u in members]
        query_ids = members[0].query_ids

        def score(_step: int) -> QueryScores:
            ((_, scores),) = self._score_orders(task, [()], query_ids)
            return scores

        record = bool(getattr(method, "record_steps", False))
        self._snapshot.restore()
        walk = train_orders(self.lm.model, orders, method, seed=seed, device=self.lm.device,
                            snapshot=self._snapshot, observe=score if record else None,
                            memory_budget=self.memory_budget)
        try:
            for index, losses, *trail in walk:
                unit = members[index]
                if record:
                    frames = [scores_to_frame(unit, task, s, step=k) for k, s in enumerate(trail[0])]
                    yield unit, pd.concat(frames, ignore_index=True)
                else:
                    yield unit, scores_to_frame(unit, task, score(len(losses)), step=len(losses))
        finally:
            walk.close()  # puts the pretrained weights back
