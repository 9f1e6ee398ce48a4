"""The default study's floor: the work it must compute, at this machine's dense rates.

Issue 15 asks for ``studies/order_sensitivity.yaml`` in at most 120 s. This
script says whether any collector could get there on this machine: it counts
the work the study's 64 units must compute (from the study's own plan, demo
sets, orders and queries, tokenised as whole prompts) and divides each piece
by the throughput of a plain dense pass of its shape, measured here (as
``bench_icl.py`` and ``bench_gd.py`` do, with ``_floor.py``):

* ICL: the token trie of the 16 orders' shared prompt prefixes, every
  (order, query) suffix and the LM-head rows (``scoring_work`` /
  ``scoring_floor``);
* SGD and Adam (batch 1, in prompt order): one training step per node of each
  demo set's step trie (orders sharing leading demos share their first steps,
  as hyptest does), each a plain forward + backward on ``[1, T]`` plus one
  fused update (``torch._foreach_add_`` for SGD; ``torch.optim.Adam`` with
  ``fused=True`` for Adam, torch's fastest);
* full-batch GD: ``steps`` steps per order (nothing to share: each order's
  batch is its own), each the cheaper of a padded ``[N, T_max]`` forward +
  backward and N plain ``[1, T]`` ones, plus a fused update;
* after every GD-family order, its 32 zero-shot prompts scored.

It does not run the study: ``--run DIR`` reads the collection time of a
finished run from its ``results.json`` (``provenance.wall_time_s.collect``)
to print the ratio. The last line:

    RESULT study_floor ratio=<collect_s/floor_s> floor_s=<s> collect_s=<s>

Run from the repository root:

    python benchmarks/bench_study_floor.py --run reports/order_sensitivity
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

import torch
from _floor import (
    best_time,
    dense_batch_step,
    dense_train_step,
    scoring_floor,
    scoring_work,
    step_trie_steps,
)

from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.gd import TrainingExample, WeightSnapshot, training_schedule
from hyptest.collect.plan import make_plan
from hyptest.models.embedded import DEFAULT_EMBEDDED, load_embedded
from hyptest.study import load_study
from hyptest.tasks import load_builtin_task


def _study_units(path: Path):
    study, _ = load_study(path)
    tasks = {t.name: load_builtin_task(t.name) for t in study.tasks}
    return study, tasks, make_plan(study, tasks, {m.name: {} for m in study.models}, versions={})


def _adam_update(model, lr: float, repeats: int) -> tuple[float, float]:
    """Wall and CPU seconds of one ``torch.optim.Adam(fused=True)`` step over every parameter (grads set)."""
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt = torch.optim.Adam(params, lr=lr, fused=True)
    opt.step()  # allocates the moments
    t = best_time(opt.step, repeats)
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
            p.grad = None
    return t


def training_steps(units, enc: PromptEncoder, task, method) -> list[tuple[TrainingExample, ...]]:
    """The batches of the optimisation steps that training ``units`` (one method) must take.

    One step per node of each demo set's step trie, as hyptest's walk takes
    them: SGD and Adam share the steps of orders with the same leading demos;
    full-batch GD's batches list the demos in each order's own order, so its
    orders share nothing.
    """
    by_set: dict[int, list] = defaultdict(list)
    for u in units:
        train = [TrainingExample(*map(tuple, enc.training_example(task.example(d)))) for d in u.order]
        by_set[u.demo_set].append(training_schedule(train, method))
    return [step for schedules in by_set.values() for step in step_trie_steps(schedules)]


class _TrainingRates:
    """Dense seconds (wall, CPU) of forward + backward per batch and of one update per optimiser, timed once each."""

    def __init__(self, model, repeats: int) -> None:
        self.model, self.repeats = model, repeats
        self._single: dict[TrainingExample, tuple[float, float]] = {}
        self._batch: dict[tuple[TrainingExample, ...], tuple[float, float]] = {}
        self._update: dict[str, tuple[float, float]] = {}

    def step(self, batch: tuple[TrainingExample, ...]) -> tuple[float, float]:
        for e in batch:
            if e not in self._single:
                self._single[e], update = dense_train_step(self.model, e.ids, e.targets, 0.0, self.repeats)
                best = self._update.get("sgd", update)
                self._update["sgd"] = (min(best[0], update[0]), min(best[1], update[1]))
        cost = tuple(sum(self._single[e][c] for e in batch) for c in (0, 1))
        if len(batch) > 1:  # the same demos in another order cost the same: timed once per demo set
            same = tuple(sorted(batch, key=lambda e: e.ids))
            if same not in self._batch:
                self._batch[same] = dense_batch_step(self.model, [(e.ids, e.targets) for e in same], self.repeats)
            cost = tuple(min(cost[c], self._batch[same][c]) for c in (0, 1))
        return cost

    def update(self, method) -> tuple[float, float]:
        """The fused update's seconds: Adam's, or the SGD update timed with the steps (call :meth:`step` first)."""
        if method.kind != "adam":
            return self._update["sgd"]
        if "adam" not in self._update:
            self._update["adam"] = _adam_update(self.model, method.learning_rate, self.repeats)
        return self._update["adam"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="studies/order_sensitivity.yaml")
    parser.add_argument("--run", default=None, help="a finished run directory of that study (for the ratio)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    study, tasks, units = _study_units(Path(args.study))
    (model_spec,) = study.models
    if model_spec.source != "embedded" or model_spec.dtype != "float32" or len(tasks) != 1:
        raise SystemExit("this floor is for one task on the embedded model in float32 (the default study)")
    lm = load_embedded(DEFAULT_EMBEDDED)
    snapshot = WeightSnapshot(lm.model)
    method_of = {m.name or m.kind: m for m in study.methods}
    per_method: dict[str, list] = defaultdict(list)
    for u in units:
        per_method[u.method].append(u)
    if set(per_method) - set(method_of):
        raise SystemExit(f"methods without a plain name (sweeps?) are not counted here: {set(per_method) - set(method_of)}")
    (task,) = tasks.values()
    enc = PromptEncoder(lm.tokenizer, task)
    rates = _TrainingRates(lm.model, args.repeats)
    seconds: dict[str, tuple[float, float]] = {}
    lines: list[str] = []
    trained_orders = 0
    for name, group in per_method.items():
        print(f"measuring {name} ...", flush=True)
        method = method_of[name]
        if method.kind == "icl":
            queries = [task.example(q) for q in group[0].query_ids]
            prompts = [enc.order_prompts([task.example(d) for d in u.order], queries).prompts for u in group]
            work = scoring_work(prompts, enc.label_ids(), share_prefixes=True)
            floor = scoring_floor(lm.model, work, repeats=args.repeats)
            seconds[name] = (floor.seconds, floor.cpu_seconds)
            lines.append(f"{name}: {len(group)} orders scored: {floor.describe(work)}")
            continue
        trained_orders += len(group)
        steps = training_steps(group, enc, task, method)
        fb = [sum(rates.step(b)[c] for b in steps) for c in (0, 1)]
        upd = rates.update(method)
        snapshot.restore()
        seconds[name] = (fb[0] + len(steps) * upd[0], fb[1] + len(steps) * upd[1])
        lines.append(f"{name}: {len(steps)} training steps ({len(group)} orders): forward+backward "
                     f"{fb[0]:.2f} s + {len(steps)} updates x {upd[0]:.3f} s = {seconds[name][0]:.2f} s")

    qids = [enc.prompt_ids([], task.example(q)) for q in units[0].query_ids]
    work = scoring_work([qids] * trained_orders, enc.label_ids(), share_prefixes=False)
    floor = scoring_floor(lm.model, work, repeats=args.repeats)
    seconds["scoring after training"] = (floor.seconds, floor.cpu_seconds)
    lines.append(f"scoring after training: {trained_orders} orders x {len(qids)} zero-shot prompts: "
                 f"{floor.describe(work)}")
    _report(args, units, lines, seconds)


def _report(args, units, lines: list[str], seconds: dict[str, tuple[float, float]]) -> None:
    floor_s = sum(s[0] for s in seconds.values())
    floor_cpu = sum(s[1] for s in seconds.values())
    print(f"study: {args.study}, {len(units)} units; SmolLM2-135M float32 CPU, {args.threads} torch threads")
    for line in lines:
        print("  " + line)
    print("| part | floor s (wall) | floor s (cpu) |")
    print("| --- | ---: | ---: |")
    for name, (w, c) in seconds.items():
        print(f"| {name} | {w:.2f} | {c:.2f} |")
    print(f"| **collection floor** | {floor_s:.2f} | {floor_cpu:.2f} |")
    if args.run:
        results = json.loads((Path(args.run) / "results.json").read_text())
        wall = results["provenance"]["wall_time_s"]
        collect, total = float(wall["collect"]), float(wall["total"])
        print(f"run {args.run}: collect {collect:.2f} s, total {total:.2f} s (load, stages, analysis: "
              f"{total - collect:.2f} s)")
        print(f"RESULT study_floor ratio={collect / floor_s:.2f} floor_s={floor_s:.2f} collect_s={collect:.2f}")
    else:
        print(f"RESULT study_floor floor_s={floor_s:.2f}")


if __name__ == "__main__":
    main()
