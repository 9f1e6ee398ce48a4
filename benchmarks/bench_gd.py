"""Time hyptest's shared-step SGD collector against the naive deepcopy-per-order loop.

Both do the same work in the same process: SmolLM2-135M-Instruct (embedded,
float32, CPU), the built-in sentiment task, one demo set of N = 4 in all 24
orders; for each order, SGD (batch 1, lr 3e-4, one epoch over the demos in
order) from the pretrained weights, then 32 held-out queries scored zero-shot
(2 label words, top-20).

* naive, as published code does: ``copy.deepcopy`` of the pretrained model per
  order, a straight loop whose loss takes the full logits, then one full
  forward per (query, label word);
* hyptest: ``UnitRunner``'s path: weights restored in place, the orders' shared
  first steps taken once (``train_orders``), queries scored in packed batches
  with the LM head only at scored positions (``score_orders``).

Runs are interleaved and the best of each is kept. Run from the repository root:

    python benchmarks/bench_gd.py            # 24 orders x 32 queries
    python benchmarks/bench_gd.py --quick    # smoke test: 3 orders x 8 queries

The last line printed is machine-readable:

    RESULT gd ratio=<naive_time/hyptest_time> max_abs_diff=<max |p_hyptest - p_naive|>
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time

import numpy as np
import torch

from _naive_collect import max_prob_diff, naive_scores, naive_train

from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.gd import TrainingExample, WeightSnapshot, train_orders
from hyptest.collect.plan import sample_demo_sets, sample_queries
from hyptest.collect.scoring import reuse_freed_memory, score_queries
from hyptest.models.embedded import load_embedded
from hyptest.study import SGDMethod
from hyptest.tasks import load_builtin_task

N_DEMOS = 4
TOP_K = 20
METHOD = SGDMethod(kind="sgd", learning_rate=3e-4, epochs=1)


def _setup(n_orders: int, n_queries: int):
    task = load_builtin_task("sentiment")
    demos = sample_demo_sets(task, N_DEMOS, 1, seed=0, balanced=True)[0]
    queries = sample_queries(task, n_queries, seed=0)
    perms = list(itertools.permutations(range(N_DEMOS)))[:n_orders]
    return task, [[demos[i] for i in p] for p in perms], queries


def _ours(lm, enc, orders, queries, snapshot):
    qids, labels = [enc.query_ids(q) for q in queries], enc.label_ids()
    train = [[TrainingExample(*map(tuple, enc.training_example(d))) for d in o] for o in orders]
    out = {}
    for index, _losses in train_orders(lm.model, train, METHOD, seed=0, device=lm.device, snapshot=snapshot):
        out[index] = score_queries(lm.model, enc.head_ids(), qids, labels, top_k=TOP_K).label_logprobs
    return np.stack([out[i] for i in range(len(orders))])


def _naive(lm, enc, orders, queries):
    qids, labels = [enc.query_ids(q) for q in queries], enc.label_ids()
    out = []
    for order in orders:
        model = naive_train(lm.model, [enc.training_example(d) for d in order], METHOD, seed=0)
        out.append(naive_scores(model, enc.head_ids(), qids, labels, TOP_K)[0])
        del model
    return np.stack(out)


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 orders x 8 queries (smoke test)")
    parser.add_argument("--repeats", type=int, default=2, help="hyptest runs (best kept)")
    parser.add_argument("--naive-repeats", type=int, default=1, help="naive runs (best kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = reuse_freed_memory()  # as UnitRunner does on CPU; process-wide, so the naive loop gets it too

    lm = load_embedded(device="cpu")
    n_orders, n_queries = (3, 8) if args.quick else (24, 32)
    task, orders, queries = _setup(n_orders, n_queries)
    enc = PromptEncoder(lm.tokenizer, task)
    snapshot = WeightSnapshot(lm.model)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at start, "
          f"glibc keeps freed memory: {tuned} (both loops)")
    print(f"work: SmolLM2-135M float32 CPU, sentiment, N={N_DEMOS}, SGD lr={METHOD.learning_rate} batch 1, "
          f"{n_orders} orders, then {n_queries} queries x {len(enc.label_ids())} labels zero-shot, top-{TOP_K}")
    _ours(lm, enc, orders[:1], queries[:2], snapshot)  # warm-up

    schedule = [w for i in range(max(args.repeats, args.naive_repeats))
                for w, k in (("ours", args.repeats), ("naive", args.naive_repeats)) if i < k]
    ours_t, naive_t = [], []
    ours = naive = None
    for which in schedule:
        if which == "ours":
            w, c, ours = _timed(lambda: _ours(lm, enc, orders, queries, snapshot))
            ours_t.append((w, c))
        else:
            w, c, naive = _timed(lambda: _naive(lm, enc, orders, queries))
            naive_t.append((w, c))
        print(f"  {which:5s} wall {w:8.2f} s  cpu {c:8.2f} s  (load {os.getloadavg()[0]:.1f})", flush=True)
    best_o, best_n = min(w for w, _ in ours_t), min(w for w, _ in naive_t)
    cpu_o, cpu_n = min(c for _, c in ours_t), min(c for _, c in naive_t)
    diff = max_prob_diff(ours, naive)
    moved = max_prob_diff(ours[0], score_queries(lm.model, enc.head_ids(), [enc.query_ids(q) for q in queries],
                                                 enc.label_ids(), top_k=TOP_K).label_logprobs)
    print(f"hyptest train_orders + score_queries: {best_o:.2f} s wall (best of {len(ours_t)}), cpu {cpu_o:.2f} s")
    print(f"naive deepcopy + loop + full logits:  {best_n:.2f} s wall (best of {len(naive_t)}), cpu {cpu_n:.2f} s")
    print(f"ratio (wall) {best_n / best_o:.2f}, ratio (process cpu time) {cpu_n / cpu_o:.2f}")
    print(f"training moved the probabilities by up to {moved:.2e} (so the comparison is not vacuous)")
    print(f"RESULT gd ratio={best_n / best_o:.2f} max_abs_diff={diff:.2e}")


if __name__ == "__main__":
    main()
