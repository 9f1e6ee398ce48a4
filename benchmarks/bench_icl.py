"""Time hyptest's shared-prefix ICL collector against the naive one-prompt loop.

Both score the same work in the same process: SmolLM2-135M-Instruct (the
embedded model, float32, CPU), the built-in sentiment task, one demo set of
N = 4 in all 24 orders, 32 held-out queries, 2 label words, top-20. The naive
loop is what research code does: it builds each whole prompt string, tokenises
it, and runs one full forward pass per prompt with logits over the whole
sequence and vocabulary, reading the label words at the last position (as
``tests/_naive.py``); hyptest tokenises the same whole prompts and walks their
token trie (``hyptest.collect.scoring.score_prompts``). On a shared
machine the load changes by the minute, so the work is timed per subtree of
orders sharing their first demo, hyptest and naive back to back, and summed
(best of the repeats per subtree). Run from the repository root:

    python benchmarks/bench_icl.py            # full: 24 orders x 32 queries
    python benchmarks/bench_icl.py --quick    # smoke test: 6 orders x 8 queries
    python benchmarks/bench_icl.py --scaling  # also: hyptest time vs orders and queries
    python benchmarks/bench_icl.py --model gemma3-270m --quick  # the optional Gemma 3 270M (same work)

It also reports the cost against the machine's floor (``_floor.py``). The
work that must be computed: the distinct tokens of the token trie of the
orders' shared prompt prefixes (each order's longest common prompt prefix;
every shared stretch once), plus for every (order, query) its suffix tokens
(the prompt after that prefix, and the label words' context tokens; none for
one-token labels), plus one LM-head row per position whose distribution is
read. Dense throughput, measured in the same run at the same shapes, in
inference mode: a plain ``[1, L]`` forward (L = the mean prefix length) for
the trie tokens; plain ``[rows, width]`` forwards after a ready cache of the
prefix length (one order's suffix tokens packed into rows of 128; only the
forward timed) for the suffix tokens; the LM head on one order's head rows.
The floor's seconds = each count / its rate, summed; ``floor_ratio`` =
hyptest's wall time (the one in ``ratio``: summed over the timed subtrees) /
the floor of the same orders (also printed in process CPU time, steadier on a
shared machine). A profile of one more hyptest call on those orders
(``_floor.profiled``: hyptest's internals wrapped by monkeypatching,
exclusive wall time per category) says where the rest goes.

The last line printed is machine-readable:

    RESULT icl ratio=<naive_time/hyptest_time> max_abs_diff=<max |p_hyptest - p_naive|> floor_ratio=<wall/floor>
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from _floor import ORDER, Profile, profiled, scoring_floor, scoring_work
from _subtrees import time_by_subtree, timed as _timed
from _naive_collect import max_prob_diff, naive_order_scores
from _workload import scored_label_logprobs, sentiment_workload

from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.scoring import reuse_freed_memory
from hyptest.models.embedded import DEFAULT_EMBEDDED, EMBEDDED_MODELS, load_embedded

N_DEMOS = 4
TOP_K = 20


def _setup(n_orders: int, n_queries: int, *, lexicographic: bool = True):
    return sentiment_workload(N_DEMOS, n_orders, n_queries, lexicographic=lexicographic)


def _ours(lm, enc, orders, queries):
    return scored_label_logprobs(lm.model, [enc.order_prompts(o, queries) for o in orders], enc.label_ids(), TOP_K)


def _naive(lm, enc, orders, queries):
    return naive_order_scores(lm.model, lm.tokenizer, enc.task, orders, queries, TOP_K)


def _scaling(lm, enc, repeats: int) -> None:
    print("\nhyptest ICL collector, wall time (s, best of %d) vs orders and queries;" % repeats)
    print("orders drawn as a study draws them (order 0 as drawn, the rest at random); N = 4, 2 labels, top-20")
    sizes_o, sizes_q = (2, 6, 24), (8, 32)
    table = {}
    for n_o in sizes_o:
        for n_q in sizes_q:
            _, orders, queries = _setup(n_o, n_q, lexicographic=False)
            table[n_o, n_q] = min(_timed(lambda: _ours(lm, enc, orders, queries))[0] for _ in range(repeats))
    print("| orders | " + " | ".join(f"{q} queries" for q in sizes_q) + " | s per (order, query) at 32 |")
    print("| ---: | " + " | ".join("---:" for _ in sizes_q) + " | ---: |")
    for n_o in sizes_o:
        cells = " | ".join(f"{table[n_o, q]:.2f}" for q in sizes_q)
        print(f"| {n_o} | {cells} | {table[n_o, 32] / (n_o * 32):.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 orders x 8 queries (smoke test)")
    parser.add_argument("--model", default=DEFAULT_EMBEDDED, choices=sorted(EMBEDDED_MODELS),
                        help="embedded model (default %(default)s; gemma3-270m needs its packages installed)")
    parser.add_argument("--scaling", action="store_true", help="also print hyptest time vs orders and queries")
    parser.add_argument("--repeats", type=int, default=3, help="hyptest runs (best kept)")
    parser.add_argument("--naive-repeats", type=int, default=1, help="naive runs (best kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--subtrees", type=int, default=None,
                        help="time only the first K subtrees of orders sharing their first demo (each is the same "
                             "kind of work; the naive loop takes ~8 min per subtree on 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = reuse_freed_memory()  # as UnitRunner does on CPU; process-wide, so the naive loop gets it too

    started = time.perf_counter()
    lm = load_embedded(args.model, device="cpu")
    print(f"model: {args.model} loaded in {time.perf_counter() - started:.1f} s")
    n_orders, n_queries = (6, 8) if args.quick else (24, 32)
    task, orders, queries = _setup(n_orders, n_queries)
    enc = PromptEncoder(lm.tokenizer, task)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at start, "
          f"glibc keeps freed memory: {tuned} (both loops)")
    title = EMBEDDED_MODELS[args.model].title
    print(f"work: {title} float32 CPU, sentiment, N={N_DEMOS}, {n_orders} orders x {n_queries} queries x "
          f"{len(enc.label_ids())} labels, top-{TOP_K}")
    _ours(lm, enc, orders[:1], queries[:2])  # warm-up

    # The work is cut into the subtrees of orders that share their first demo (6 orders each, 4 of them
    # for N = 4). hyptest shares nothing across subtrees (the head is empty), so the sum over subtrees is
    # the full job. Each subtree runs hyptest and naive back to back, so load changes on a shared
    # machine hit both alike; the best of the repeats is kept per subtree.
    res = time_by_subtree(orders, (len(queries), len(enc.label_ids())),
                          lambda part: _ours(lm, enc, part, queries), lambda part: _naive(lm, enc, part, queries),
                          repeats=args.repeats, naive_repeats=args.naive_repeats, subtrees=args.subtrees)
    ours, naive, timed = res.ours, res.naive, res.timed
    t_ours, t_naive, c_ours, c_naive = res.wall_ours, res.wall_naive, res.cpu_ours, res.cpu_naive
    chosen, subtrees = range(res.n_chosen), range(res.n_subtrees)
    one_call = min(_timed(lambda: _ours(lm, enc, orders, queries))[0] for _ in range(args.repeats))
    work = scoring_work([enc.order_prompts(orders[i], queries).prompts for i in res.timed], enc.label_ids())
    floor = scoring_floor(lm.model, work, repeats=args.repeats + 2)
    prof, part = Profile(), [orders[i] for i in res.timed]
    with profiled(lm.model, prof):
        wall_prof = _timed(lambda: _ours(lm, enc, part, queries))[0]
    print(f"timed {len(timed)} of {len(orders)} orders ({len(chosen)} of {len(subtrees)} subtrees)")
    diff = max_prob_diff(ours[timed], naive[timed])
    print(f"hyptest score_prompts: {t_ours:.2f} s wall summed over subtrees (best of {args.repeats} each), "
          f"cpu {c_ours:.2f} s; all {len(orders)} orders in one call: {one_call:.2f} s")
    print(f"naive loop:           {t_naive:.2f} s wall summed over subtrees (best of {args.naive_repeats} each), "
          f"cpu {c_naive:.2f} s")
    print(f"ratio (wall) {t_naive / t_ours:.2f}, ratio (process cpu time) {c_naive / c_ours:.2f}")
    print(f"floor: {floor.seconds:.2f} s = {floor.describe(work)}")
    print(f"floor_ratio = {t_ours:.2f} s / {floor.seconds:.2f} s = {t_ours / floor.seconds:.2f}; in process cpu "
          f"time {c_ours:.2f} s / {floor.cpu_seconds:.2f} s = {c_ours / floor.cpu_seconds:.2f}")
    print(f"\nwhere hyptest's time goes (one more call, the {len(part)} timed orders, profiled: exclusive wall time):")
    print(prof.table(wall_prof, ORDER))
    if args.scaling:
        _scaling(lm, enc, repeats=2)
    print(f"RESULT icl ratio={t_naive / t_ours:.2f} max_abs_diff={diff:.2e} floor_ratio={t_ours / floor.seconds:.2f}")


if __name__ == "__main__":
    main()
