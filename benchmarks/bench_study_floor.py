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
from _floor import best_time, dense_train_step, scoring_floor, scoring_work

from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.gd import TrainingExample, WeightSnapshot, training_schedule
from hyptest.collect.plan import make_plan
from hyptest.models.embedded import DEFAULT_EMBEDDED, load_embedded
from hyptest.study import load_study
from hyptest.tasks import load_builtin_task


def _study_units(path: Path):
    study = load_study(path)
    study = study[0] if isinstance(study, tuple) else study
    tasks = {t.name: load_builtin_task(t.name) for t in study.tasks}
    return study, tasks, make_plan(study, tasks, {m.name: {} for m in study.models}, versions={})


def _by_id(task) -> dict:
    return {ex.id: ex for ex in (*task.demos, *task.queries)}


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


def _padded_batch_step(model, batch: list[TrainingExample], repeats: int) -> tuple[float, float]:
    """Wall and CPU seconds of a plain forward + backward on the ``[N, T_max]`` right-padded batch."""
    base, head = model.get_decoder(), model.get_output_embeddings()
    width = max(len(ex.ids) for ex in batch)
    x = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    rows, cols, toks = [], [], []
    for b, ex in enumerate(batch):
        x[b, : len(ex.ids)] = torch.tensor(ex.ids)
        mask[b, : len(ex.ids)] = 1
        for t in ex.targets:
            rows.append(b)
            cols.append(t - 1)
            toks.append(ex.ids[t])
    rows_t, cols_t, tok = torch.tensor(rows), torch.tensor(cols), torch.tensor(toks)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]

    def forward_backward() -> None:
        for p in params:
            p.grad = None
        hidden = base(input_ids=x, attention_mask=mask, use_cache=False).last_hidden_state[rows_t, cols_t]
        loss = -torch.log_softmax(head(hidden).float(), -1).gather(1, tok[:, None]).mean()
        loss.backward()

    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            forward_backward()
            return best_time(forward_backward, repeats)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
            p.grad = None


def training_steps(units, enc: PromptEncoder, examples: dict, method) -> list[tuple[TrainingExample, ...]]:
    """The batches of the optimisation steps that training ``units`` (one method) must take.

    SGD and Adam share the steps of orders with the same leading demos (a
    step-trie node per demo set, as hyptest's walk); full-batch GD takes
    ``steps`` steps per order (its batches differ in order, so nothing is shared).
    """
    steps: list[tuple[TrainingExample, ...]] = []
    seen: set = set()
    for u in units:
        train = [TrainingExample(*map(tuple, enc.training_example(examples[d]))) for d in u.order]
        schedule = training_schedule(train, method)
        for k in range(1, len(schedule) + 1):
            key = (u.order_id, u.demo_set, k) if method.kind == "gd" else (u.demo_set, tuple(schedule[:k]))
            if key not in seen:
                seen.add(key)
                steps.append(schedule[k - 1])
    return steps


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
                self._single[e], _ = dense_train_step(self.model, e.ids, e.targets, 0.0, self.repeats)
        cost = tuple(sum(self._single[e][c] for e in batch) for c in (0, 1))
        if len(batch) > 1:  # the same demos in another order cost the same: timed once per demo set
            same = tuple(sorted(batch, key=lambda e: e.ids))
            if same not in self._batch:
                self._batch[same] = _padded_batch_step(self.model, list(same), self.repeats)
            cost = tuple(min(cost[c], self._batch[same][c]) for c in (0, 1))
        return cost

    def update(self, method, example: TrainingExample) -> tuple[float, float]:
        kind = "adam" if method.kind == "adam" else "sgd"
        if kind not in self._update:
            if kind == "adam":
                self._update[kind] = _adam_update(self.model, method.learning_rate, self.repeats)
            else:
                _, self._update[kind] = dense_train_step(self.model, example.ids, example.targets, 0.0, self.repeats)
        return self._update[kind]


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
    enc, examples = PromptEncoder(lm.tokenizer, task), _by_id(task)
    rates = _TrainingRates(lm.model, args.repeats)
    seconds: dict[str, tuple[float, float]] = {}
    lines: list[str] = []
    trained_orders = 0
    for name, group in per_method.items():
        print(f"measuring {name} ...", flush=True)
        method = method_of[name]
        if method.kind == "icl":
            queries = [examples[q] for q in group[0].query_ids]
            prompts = [enc.order_prompts([examples[d] for d in u.order], queries).prompts for u in group]
            work = scoring_work(prompts, enc.label_ids(), share_prefixes=True)
            floor = scoring_floor(lm.model, work, repeats=args.repeats)
            seconds[name] = (floor.seconds, floor.cpu_seconds)
            lines.append(f"{name}: {len(group)} orders scored: {floor.describe(work)}")
            continue
        trained_orders += len(group)
        steps = training_steps(group, enc, examples, method)
        fb = [sum(rates.step(b)[c] for b in steps) for c in (0, 1)]
        upd = rates.update(method, steps[0][0])
        snapshot.restore()
        seconds[name] = (fb[0] + len(steps) * upd[0], fb[1] + len(steps) * upd[1])
        lines.append(f"{name}: {len(steps)} training steps ({len(group)} orders): forward+backward "
                     f"{fb[0]:.2f} s + {len(steps)} updates x {upd[0]:.3f} s = {seconds[name][0]:.2f} s")

    qids = [enc.prompt_ids([], examples[q]) for q in units[0].query_ids]
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
