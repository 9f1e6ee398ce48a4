"""The floor under a collector's cost, and where its time goes: shared by ``bench_icl.py`` and ``bench_gd.py``.

*Floor.* The work that must be computed, divided by the dense throughput of
plain forward (and backward) passes measured in the same process at the same
shapes. It is what the machine would take if nothing but that work were done,
each piece at the speed of a plain dense pass of its shape: no cache copies,
masks, snapshots, optimiser bookkeeping or Python. ``floor_ratio`` = the
collector's wall time / the floor's seconds (1.0 = at the floor). The scoring
rates run on the model's device and dtype; on CUDA each timed call is
synchronised before and after (``bench_gpu_icl.py``).

*Profile.* :class:`Profile` wraps hyptest's internals by monkeypatching
(module attributes, a class method, global optimiser hooks; all undone on
exit; no behaviour changes) and charges each call's wall time *exclusively*
to the innermost wrapped call, so the categories add up; the rest of the wall
time is Python, numpy and tensor bookkeeping between the wrapped calls.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# --------------------------------------------------------------------------- the work that must be computed


def _continuations(label_ids: Sequence[Sequence[int]]) -> tuple[int, int]:
    """(label-context tokens to run, LM-head rows) per prompt: the label words as a token tree.

    A label word's later tokens need the outputs after its earlier ones, so the
    distinct proper prefixes of the label words (the empty one = the prompt's
    last token) are the positions where the head must run; the non-empty ones
    are tokens to run after the prompt.
    """
    prefixes = {tuple(lab[:j]) for lab in label_ids for j in range(len(lab))}
    return len(prefixes) - 1, len(prefixes)


@dataclass(frozen=True)
class ScoringWork:
    """Tokens and LM-head rows that scoring prompts must compute.

    Attributes
    ----------
    prefix_tokens : int
        Distinct tokens of the token trie of the orders' shared prefixes (each
        order's longest common prompt prefix, at most all but the shortest
        prompt's last token): every shared stretch counted once.
    suffix_tokens : int
        Over every (order, query): the prompt's tokens after its order's
        shared prefix, plus the label words' context tokens (a one-token label
        adds none).
    head_rows : int
        Over every (order, query): the positions whose next-token distribution
        is needed (the prompt's last token, which also gives the top-k, and the
        label words' inner prefixes).
    prefix_lengths : list of int
        Each order's shared-prefix length.
    suffix_per_order : list of int
        Each order's suffix tokens.
    """

    prefix_tokens: int
    suffix_tokens: int
    head_rows: int
    prefix_lengths: list[int]
    suffix_per_order: list[int]


def scoring_work(orders: Sequence[Sequence[Sequence[int]]], label_ids: Sequence[Sequence[int]], *,
                 share_prefixes: bool = True) -> ScoringWork:
    """Count the work of scoring every prompt of every order (``orders[i]`` = order i's prompts' ids).

    ``share_prefixes=False`` counts each order's shared prefix in full (orders
    scored under different weights, as after each trained order in GD).
    """
    extra, head = _continuations(label_ids)
    trie: set[tuple[int, ...]] = set()
    prefix_total, lengths, suffixes, suffix_total, rows = 0, [], [], 0, 0
    for prompts in orders:
        first = prompts[0]
        shared = min(len(p) for p in prompts) - 1
        for p in prompts[1:]:
            n = 0
            while n < shared and first[n] == p[n]:
                n += 1
            shared = n
        lengths.append(shared)
        if share_prefixes:
            trie.update(tuple(first[:i]) for i in range(1, shared + 1))
        else:
            prefix_total += shared
        own = sum(len(p) - shared + extra for p in prompts)
        suffixes.append(own)
        suffix_total += own
        rows += head * len(prompts)
    return ScoringWork(len(trie) if share_prefixes else prefix_total, suffix_total, rows, lengths, suffixes)


# --------------------------------------------------------------------------- dense throughput


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Best wall seconds and best process CPU seconds of ``repeats`` calls of ``fn``."""
    wall = cpu = math.inf
    for _ in range(repeats):
        sync_cuda()
        w, c = time.perf_counter(), time.process_time()
        fn()
        sync_cuda()
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return wall, cpu


def sync_cuda() -> None:
    """Wait for queued CUDA work (a no-op unless CUDA is in use), so host clocks time the device's work."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _per_second(count: float, seconds: tuple[float, float]) -> tuple[float, float]:
    return count / seconds[0], count / seconds[1]


def _ids(n_rows: int, width: int, vocab: int, seed: int, device: Any = "cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(100, min(vocab, 30000), (n_rows, width), generator=gen).to(device)


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def dense_prefix_rate(model: Any, length: int, repeats: int) -> tuple[float, float]:
    """Tokens per wall second and per process CPU second of a plain ``[1, length]`` decoder forward (inference mode, no cache, causal)."""
    base, vocab = model.get_decoder(), model.config.vocab_size
    ids = _ids(1, max(1, length), vocab, 1, _device(model))
    with torch.inference_mode():
        base(input_ids=ids, use_cache=False)  # warm-up
        t = best_time(lambda: base(input_ids=ids, use_cache=False), repeats)
    return _per_second(ids.numel(), t)


def dense_rows_rate(model: Any, n_rows: int, width: int, n_prefix: int, repeats: int) -> tuple[float, float]:
    """Tokens per wall and per CPU second of a plain ``[n_rows, width]`` decoder forward after a cache of ``n_prefix`` tokens per row.

    The cache (one per row, as a batch of prompts would have) is built before
    the timer and cropped back after each pass; only the forward is timed, with
    the default causal mask, so each token attends to ``n_prefix`` + its row's
    earlier tokens: the attention length the packed suffix rows really have.
    """
    base, vocab = model.get_decoder(), model.config.vocab_size
    ids = _ids(n_rows, width, vocab, 2, _device(model))
    with torch.inference_mode():
        if n_prefix > 0:
            from hyptest.collect.scoring import _cache_kwarg, _output_cache

            arg = _cache_kwarg(base)  # `cache` in transformers >= 5.x, `past_key_values` before
            cache = _output_cache(base(input_ids=_ids(n_rows, n_prefix, vocab, 3, _device(model)), use_cache=True))

            def run() -> None:
                base(input_ids=ids, use_cache=True, **{arg: cache})
                cache.crop(-width)  # back to the prefix (a negative count removes that many tokens)
        else:
            def run() -> None:
                base(input_ids=ids, use_cache=False)
        run()  # warm-up
        t = best_time(run, repeats)
    return _per_second(ids.numel(), t)


def dense_head_rate(model: Any, n_rows: int, repeats: int) -> tuple[float, float]:
    """Rows per wall and per CPU second of the plain LM head (``get_output_embeddings()``) on ``[n_rows, hidden]``."""
    head = model.get_output_embeddings()
    hidden = torch.randn(max(1, n_rows), head.weight.shape[1], generator=torch.Generator().manual_seed(4)).to(
        device=head.weight.device, dtype=head.weight.dtype)
    with torch.inference_mode():
        head(hidden)
        t = best_time(lambda: head(hidden), repeats)
    return _per_second(hidden.shape[0], t)


@dataclass(frozen=True)
class ScoringFloor:
    """Seconds of the scoring floor (wall; ``cpu_seconds`` from CPU-time rates) and the wall rates."""

    seconds: float
    cpu_seconds: float
    prefix_s: float
    suffix_s: float
    head_s: float
    prefix_rate: float
    suffix_rate: float
    head_rate: float

    def describe(self, work: ScoringWork) -> str:
        return (f"{work.prefix_tokens} prefix-trie tokens / {self.prefix_rate:.0f} tok/s = {self.prefix_s:.2f} s; "
                f"{work.suffix_tokens} suffix tokens / {self.suffix_rate:.0f} tok/s = {self.suffix_s:.2f} s; "
                f"{work.head_rows} LM-head rows / {self.head_rate:.0f} rows/s = {self.head_s:.2f} s")


def scoring_floor(model: Any, work: ScoringWork, *, row_tokens: int = 128, repeats: int = 5) -> ScoringFloor:
    """The floor of ``work`` at dense rates measured now, at the shapes of the work.

    Prefix: a ``[1, L]`` forward, L = the mean shared-prefix length. Suffix:
    ``[rows, width]`` rows after a cache of the mean prefix length, ``rows`` x
    ``width`` = one order's suffix tokens packed into rows of ``row_tokens``
    (``width`` = their mean length per row). Head: one order's head rows.
    """
    n_orders = len(work.prefix_lengths)
    mean_prefix = round(sum(work.prefix_lengths) / n_orders)
    per_order = sum(work.suffix_per_order) / n_orders
    n_rows = max(1, math.ceil(per_order / row_tokens))
    width = max(1, round(per_order / n_rows))
    prefix = dense_prefix_rate(model, mean_prefix, repeats) if work.prefix_tokens else (math.inf, math.inf)
    suffix = dense_rows_rate(model, n_rows, width, mean_prefix, repeats)
    head = dense_head_rate(model, max(1, round(work.head_rows / n_orders)), repeats)
    counts = (work.prefix_tokens, work.suffix_tokens, work.head_rows)
    wall = [n / rate[0] for n, rate in zip(counts, (prefix, suffix, head))]
    cpu = sum(n / rate[1] for n, rate in zip(counts, (prefix, suffix, head)))
    return ScoringFloor(sum(wall), cpu, *wall, prefix[0], suffix[0], head[0])


def step_trie_steps(schedules: Iterable[Sequence[Any]]) -> list[Any]:
    """The batch of every distinct step-trie node of ``schedules`` (each a list of batches), in first-visit order.

    Schedules with the same first k batches share their first k steps, as
    :func:`hyptest.collect.gd.train_orders` takes them.
    """
    seen: set[tuple[Any, ...]] = set()
    steps: list[Any] = []
    for schedule in schedules:
        for k in range(1, len(schedule) + 1):
            prefix = tuple(schedule[:k])
            if prefix not in seen:
                seen.add(prefix)
                steps.append(schedule[k - 1])
    return steps


def dense_train_step(model: Any, ids: Sequence[int], targets: Sequence[int], lr: float, repeats: int
                     ) -> tuple[tuple[float, float], tuple[float, float]]:
    """(forward + backward, optimiser step), each as (wall, CPU) seconds, of one plain SGD step on ``[1, len(ids)]``.

    Every parameter trains; the loss is the negative log-likelihood of the
    target tokens with the LM head on their predicting positions only (what
    the step must compute); the update is one fused ``p -= lr * grad`` over all
    parameters (``torch._foreach_add_``). The parameters CHANGE: restore them
    afterwards (e.g. ``WeightSnapshot.restore``).
    """
    return _timed_step(model, [(ids, targets)], lr, repeats)


def dense_batch_step(model: Any, examples: Sequence[tuple[Sequence[int], Sequence[int]]], repeats: int
                     ) -> tuple[float, float]:
    """(wall, CPU) seconds of a plain forward + backward on the right-padded ``[len(examples), T_max]`` batch.

    ``examples`` are ``(ids, targets)`` pairs; the loss is as in
    :func:`dense_train_step`, summed over the batch. The weights do not change.
    """
    return _timed_step(model, examples, None, repeats)[0]


def _timed_step(model: Any, examples: Sequence[tuple[Sequence[int], Sequence[int]]], lr: float | None,
                repeats: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Forward + backward timing (and, unless ``lr`` is None, the fused SGD update's) on the padded batch."""
    base, head = model.get_decoder(), model.get_output_embeddings()
    params = [p for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    width = max(len(ids) for ids, _ in examples)
    x = torch.zeros(len(examples), width, dtype=torch.long)
    mask = torch.zeros(len(examples), width, dtype=torch.long)
    rows, cols, toks = [], [], []
    for b, (ids, targets) in enumerate(examples):
        x[b, : len(ids)] = torch.tensor(list(ids))
        mask[b, : len(ids)] = 1
        rows += [b] * len(targets)
        cols += [t - 1 for t in targets]
        toks += [ids[t] for t in targets]
    rows_t, cols_t, tok = torch.tensor(rows), torch.tensor(cols), torch.tensor(toks)
    # a batch of one length needs no mask (the plain causal path, as a [1, T] step runs)
    kwargs = {} if bool(mask.all()) else {"attention_mask": mask}

    def forward_backward() -> None:
        for p in params:
            p.grad = None
        hidden = base(input_ids=x, use_cache=False, **kwargs).last_hidden_state[rows_t, cols_t]
        loss = -torch.log_softmax(head(hidden).float(), -1).gather(1, tok[:, None]).sum()
        loss.backward()

    def update() -> None:
        with torch.no_grad():
            torch._foreach_add_(params, [p.grad for p in params], alpha=-lr)

    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            forward_backward()  # warm-up
            t_fb = best_time(forward_backward, repeats)
            t_opt = best_time(update, repeats) if lr is not None else (math.nan, math.nan)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
            p.grad = None
    return t_fb, t_opt


# --------------------------------------------------------------------------- profile


class Profile:
    """Exclusive wall seconds and call counts per category of wrapped functions.

    A wrapped call's time is charged to its category minus the time of wrapped
    calls inside it (those are charged to theirs), so the categories never
    double-count and ``wall - sum`` is the time spent outside every wrapped call.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []  # [category, start, time of wrapped children]

    def enter(self, category: str | Callable[[str | None], str]) -> None:
        if callable(category):  # named after the enclosing wrapped call
            category = category(self._stack[-1][0] if self._stack else None)
        self._stack.append([category, time.perf_counter(), 0.0])

    def exit(self) -> None:
        category, start, children = self._stack.pop()
        spent = time.perf_counter() - start
        self.seconds[category] += spent - children
        if not self._stack or self._stack[-1][0] != category:  # a call inside one of its own kind is not counted
            self.calls[category] += 1
        if self._stack:
            self._stack[-1][2] += spent

    def wrap(self, fn: Callable[..., Any], category: str | Callable[[str | None], str]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.enter(category)
            try:
                return fn(*args, **kwargs)
            finally:
                self.exit()

        return timed

    @contextlib.contextmanager
    def patch(self, owner: Any, name: str, category: str | Callable[[str | None], str]) -> Iterator[None]:
        """Wrap ``owner.name`` (a module, class or instance attribute) for the duration of the block."""
        own = name in vars(owner)
        original = vars(owner)[name] if own else getattr(owner, name)
        if isinstance(original, (staticmethod, classmethod)):
            raise TypeError(f"cannot wrap {name}: {type(original).__name__}")
        setattr(owner, name, self.wrap(getattr(owner, name) if not isinstance(owner, type) else original, category))
        try:
            yield
        finally:
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)

    @contextlib.contextmanager
    def optimizer_steps(self, category: str) -> Iterator[None]:
        """Charge every ``torch.optim`` step (global step hooks) to ``category``."""
        from torch.optim.optimizer import (
            register_optimizer_step_post_hook,
            register_optimizer_step_pre_hook,
        )

        pre = register_optimizer_step_pre_hook(lambda *_: self.enter(category))
        post = register_optimizer_step_post_hook(lambda *_: self.exit())
        try:
            yield
        finally:
            pre.remove()
            post.remove()

    def table(self, wall: float, order: Sequence[str], rest: str = "rest: Python, numpy, tensor bookkeeping"
              ) -> str:
        """A markdown table: each category's seconds, share of ``wall`` and calls, then the rest."""
        lines = ["| where | s | % of wall | calls |", "| --- | ---: | ---: | ---: |"]
        for cat in list(order) + sorted(set(self.seconds) - set(order)):
            if cat in self.seconds:
                s = self.seconds[cat]
                lines.append(f"| {cat} | {s:.2f} | {100 * s / wall:.1f} | {self.calls[cat]} |")
        other = wall - sum(self.seconds.values())
        lines.append(f"| {rest} | {other:.2f} | {100 * other / wall:.1f} | |")
        lines.append(f"| **wall** | {wall:.2f} | 100.0 | |")
        return "\n".join(lines)


#: profile categories, in table order
PREFIX_FWD = "forward: shared prompt prefixes (trie stretches)"
SCORE_FWD = "forward: scoring rows"
TRAIN_FWD = "forward: training loss (decoder)"
BACKWARD = "backward"
HEAD = "LM head"
SOFTMAX = "log-softmax / top-k"
COPIES = "cache copies (deepcopy, batch_repeat_interleave)"
BATCHES = "building batches (ids, masks)"
OPTIM = "optimiser step"
SNAPSHOT = "snapshot / restore (weights, optimiser, RNG)"
ORDER = [PREFIX_FWD, SCORE_FWD, TRAIN_FWD, BACKWARD, HEAD, SOFTMAX, COPIES, BATCHES, OPTIM, SNAPSHOT]


@contextlib.contextmanager
def profiled(model: Any, prof: Profile) -> Iterator[Profile]:
    """Instrument hyptest's collectors on ``model`` for the duration of the block (no behaviour change)."""
    from transformers.cache_utils import Cache

    from hyptest.collect import gd, losses, scoring

    base = model.get_decoder()
    timed_copy = types.SimpleNamespace(deepcopy=prof.wrap(copy.deepcopy, COPIES))
    saved_copy = scoring.copy
    with contextlib.ExitStack() as stack:
        stack.enter_context(prof.patch(base, "forward", lambda outer: outer if outer in (PREFIX_FWD, TRAIN_FWD)
                                       else SCORE_FWD))
        stack.enter_context(prof.patch(scoring, "_extend", PREFIX_FWD))
        stack.enter_context(prof.patch(gd, "training_loss", TRAIN_FWD))
        stack.enter_context(prof.patch(scoring, "lm_head_logits", HEAD))
        stack.enter_context(prof.patch(losses, "lm_head_logits", HEAD))
        stack.enter_context(prof.patch(torch, "log_softmax", SOFTMAX))
        stack.enter_context(prof.patch(torch, "topk", SOFTMAX))
        stack.enter_context(prof.patch(torch.Tensor, "backward", BACKWARD))
        stack.enter_context(prof.patch(Cache, "batch_repeat_interleave", COPIES))
        stack.enter_context(prof.patch(scoring._QueryPlan, "_make_batch", BATCHES))
        stack.enter_context(prof.patch(gd._TrainingState, "__init__", SNAPSHOT))
        stack.enter_context(prof.patch(gd._TrainingState, "restore", SNAPSHOT))
        stack.enter_context(prof.patch(gd.WeightSnapshot, "restore", SNAPSHOT))
        stack.enter_context(prof.optimizer_steps(OPTIM))
        scoring.copy = timed_copy
        try:
            yield prof
        finally:
            scoring.copy = saved_copy
