"""Score label words after whole prompts, sharing every shared computation.

Prompts arrive as token ids, each the whole-string tokenisation of one
(order, query) prompt (:mod:`hyptest.collect.encoding`); label words are
scored as the prompt's continuation. Two levels of sharing, both exact (they
change no number beyond float rounding):

* **Across orders** (:func:`score_prompts`). The prompts of one order share
  their longest common token prefix; the orders' shared prefixes form a token
  trie whose nodes sit at each order's cut points (its demo boundaries in
  token positions). The KV cache of every trie node is computed once, by
  extending its parent's cache with the node's tokens, and copied only where
  the trie branches. Each order's queries (the rest of each prompt) then run
  against its leaf cache.
* **Across queries and labels** (one leaf). Every query becomes a *segment*: its
  remaining tokens, followed by the label words' context tokens arranged as a
  token tree (labels that share leading tokens share them; a one-token label
  adds no token). Segments are packed into rows with a block-diagonal tree
  attention mask and explicit position ids, so no padding is computed inside a
  row and the query tokens are run once for all labels. Rows run as batches
  against a copy of the leaf cache; the LM head is applied only at the scored
  positions.

Where the model's attention cannot take a custom 4-D mask (implementations
other than ``eager`` and ``sdpa``, or sliding-window attention), each
(query, label context) runs as its own right-padded row instead ("flat" mode).

Every stretch of a shared prefix between two cut points is run as its own
forward pass, and the stretches depend only on the order's own prompts and
cuts, so an order's leaf cache is the same bits whichever other orders are
collected in the same call: a run resumed after a kill reproduces an
uninterrupted one. (Trie nodes are only at cut points, not at every token
where two orders part: the few tokens between a cut and the first differing
token are run once per branch.)

Batch sizes are picked from a per-device token budget and the room left in the
run's memory budget (:class:`~hyptest.collect.memory.MemoryBudget`); an
out-of-memory error halves the batch and retries it. Prefix caches are copied
where the trie branches only while the budget has room; otherwise the branch's
prefix is recomputed stretch by stretch (the same operations, the same bits).
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from .._validation import validate_count
from .memory import MemoryBudget

__all__ = [
    "QueryScores",
    "lm_head_logits",
    "score_orders",
    "score_prompts",
    "return_freed_memory",
    "reuse_freed_memory",
    "score_queries",
    "set_tf32",
]

#: Rows are packed up to this many tokens (or the longest segment, if longer).
ROW_TOKENS = 128
#: Tokens per forward pass that saturate the device; more only costs memory.
TOKEN_BUDGET = {"cpu": 2048, "cuda": 65536}


@dataclass(frozen=True)
class QueryScores:
    """Scores of every query after one prefix.

    Attributes
    ----------
    label_logprobs : np.ndarray, shape (n_queries, n_labels)
        ``log P(label word | prompt)``: sum of the label's token log-probs.
    topk_ids, topk_probs : np.ndarray, shape (n_queries, k)
        Top-k of the next-token distribution after the query.
    """

    label_logprobs: np.ndarray
    topk_ids: np.ndarray
    topk_probs: np.ndarray


# --------------------------------------------------------------------------- precision and devices


def set_tf32(allow: bool = False) -> None:
    """Set whether float32 matrix products on CUDA may use TF32 (default: they may not).

    hyptest keeps TF32 off, so float32 results on a GPU match the CPU to float32
    rounding. This sets the flags explicitly instead of relying on torch's
    defaults (cuDNN convolutions default to TF32). It has no effect on CPU
    results and is harmless on a CPU-only build.

    Parameters
    ----------
    allow : bool, default False
        True allows TF32 for CUDA matmuls and cuDNN; False asks for IEEE float32.
    """
    import torch

    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        value = "tf32" if allow else "ieee"
        matmul.fp32_precision = value
        for backend in (getattr(torch.backends.cudnn, "conv", None), getattr(torch.backends.cudnn, "rnn", None)):
            if backend is not None and hasattr(backend, "fp32_precision"):
                backend.fp32_precision = value
    else:  # pragma: no cover - older torch
        matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow


def reuse_freed_memory(keep_bytes: int = 2 << 30, map_from: int = 1 << 30) -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the kernel.

    Torch's CPU allocator does not cache: every gradient buffer a training step
    frees is unmapped, and the next step's buffer is faulted in again page by
    page (on SmolLM2-135M, with every gradient held at once, about 120,000 page
    faults and a quarter of the backward pass). This sets glibc's
    ``M_MMAP_THRESHOLD`` to ``map_from`` (smaller blocks come from the heap and
    are reused, larger ones are mapped and unmapped on their own) and
    ``M_TRIM_THRESHOLD`` to ``keep_bytes`` (freed memory at the top of the heap
    up to that size stays mapped). Process-wide and harmless to results. A
    no-op returning False where the C library is not glibc.

    Parameters
    ----------
    keep_bytes : int, default 2 GiB
        Free memory glibc may keep mapped at the top of the heap.
    map_from : int, default 1 GiB
        Blocks of at least this size get their own mapping: freeing them
        gives their pages back at once rather than leaving a hole in the heap.

    Returns
    -------
    bool
        Whether glibc accepted both settings.
    """
    import ctypes

    libc = _glibc()
    if libc is None:
        return False
    try:
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, ctypes.c_int(min(int(map_from), 2**31 - 1)))
        ok &= libc.mallopt(m_trim_threshold, ctypes.c_int(min(int(keep_bytes), 2**31 - 1)))
    except AttributeError:  # pragma: no cover - unusual libc
        return False
    return bool(ok)


def return_freed_memory() -> bool:
    """Give the pages of freed memory back to the kernel (glibc's ``malloc_trim(0)``).

    :func:`reuse_freed_memory` keeps freed buffers mapped for the next
    training step; between work groups nothing reuses them, so the collectors
    call this after each walk and the resident memory falls back to what is
    held. A no-op returning False where the C library is not glibc.
    """
    libc = _glibc()
    if libc is None:
        return False
    try:
        return bool(libc.malloc_trim(0))
    except AttributeError:  # pragma: no cover - unusual libc
        return False


@functools.lru_cache(maxsize=1)
def _glibc() -> Any:
    """The process's glibc (a ``ctypes.CDLL``), or None elsewhere; looked up once per process."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:  # pragma: no cover - unusual libc
        return None


def _model_device(model: Any, device: Any) -> Any:
    import torch

    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device


def _model_dtype(model: Any) -> Any:
    return next(model.parameters()).dtype


def available_memory(device: Any) -> int:
    """Free bytes on ``device``: ``cuda.mem_get_info`` on a GPU, ``MemAvailable`` on CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not Linux
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 4 << 30


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error (torch's, or a RuntimeError saying so)."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, oom) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def _release(device: Any) -> None:
    import gc

    import torch

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


@dataclass(frozen=True)
class _Dims:
    elem: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    inter: int


def _dims(model: Any) -> _Dims:
    """The sizes the memory estimates need, from the model's (text) config."""
    cfg = _text_config(model)
    hidden = int(getattr(cfg, "hidden_size", 1024))
    heads = int(getattr(cfg, "num_attention_heads", 16))
    return _Dims(elem=_model_dtype(model).itemsize, hidden=hidden, heads=heads,
                 kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
                 head_dim=int(getattr(cfg, "head_dim", None) or hidden // heads),
                 layers=int(getattr(cfg, "num_hidden_layers", 24)),
                 inter=int(getattr(cfg, "intermediate_size", 4 * hidden)))


def _cache_bytes(model: Any, n_tokens: int) -> int:
    """Bytes of a KV cache of ``n_tokens`` tokens (keys and values of every layer)."""
    d = _dims(model)
    return d.layers * 2 * d.kv_heads * d.head_dim * int(n_tokens) * d.elem


def _row_bytes(model: Any, n_prefix: int, width: int) -> int:
    """Rough peak bytes of one row of ``width`` tokens after ``n_prefix`` cached tokens."""
    d = _dims(model)
    keys = n_prefix + width
    kv = 2 * _cache_bytes(model, keys)  # the repeated cache and its concatenation
    elem, hidden, heads, inter = d.elem, d.hidden, d.heads, d.inter
    per_token = elem * (8 * hidden + 3 * inter) + 4 * heads * keys + elem * keys  # activations, scores, mask
    return kv + width * per_token


# --------------------------------------------------------------------------- model plumbing


def _cache_kwarg(module: Any) -> str:
    """Name of the cache argument: ``cache`` in transformers >= 5.x, ``past_key_values`` before."""
    import inspect

    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(output: Any) -> Any:
    """The cache of a model output: ``cache`` in transformers >= 5.x, ``past_key_values`` before."""
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else getattr(output, "past_key_values", None)


#: The LM head runs on at least this many rows (zero rows pad the selection).
MIN_HEAD_ROWS = 8


def lm_head_logits(model: Any, hidden: Any) -> Any:
    """Apply the model's output head (and final soft-capping, if any) to hidden states.

    A 2-D selection of fewer than :data:`MIN_HEAD_ROWS` rows is padded with zero
    rows for the product and the padding is dropped from the result. With one or
    two rows the CPU BLAS takes a matrix-vector path whose float32 accumulation
    over the vocabulary (in the backward pass) is far less accurate: on
    SmolLM2-135M one SGD step's gradient had a relative error of 1.2e-4 against
    float64 with 1 row, 3.5e-6 with 4 or more rows (the same as the full-logit
    loss). The zero rows change no value and cost nothing measurable.
    """
    rows = hidden.shape[0] if hidden.dim() == 2 else None
    if rows is not None and rows < MIN_HEAD_ROWS:
        import torch

        hidden = torch.cat([hidden, hidden.new_zeros(MIN_HEAD_ROWS - rows, hidden.shape[1])])
    logits = model.get_output_embeddings()(hidden)
    if rows is not None and rows < MIN_HEAD_ROWS:
        logits = logits[:rows]
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        import torch

        logits = torch.tanh(logits / cap) * cap
    return logits


def _accepts(module: Any, name: str) -> bool:
    import inspect

    return name in inspect.signature(module.forward).parameters


def _tree_attention_ok(model: Any) -> bool:
    """Whether the model takes a custom 4-D additive mask and position ids.

    True for eager or sdpa attention without a sliding window, when the decoder
    takes ``position_ids``; otherwise scoring falls back to flat rows.
    """
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    cfg = _text_config(model)
    sliding = getattr(cfg, "sliding_window", None)
    if getattr(cfg, "use_sliding_window", True) is False:
        sliding = None
    return impl in {"eager", "sdpa"} and not sliding and _accepts(model.get_decoder(), "position_ids")


# --------------------------------------------------------------------------- segments and rows


@dataclass(frozen=True)
class _Segment:
    """Tokens scored for one query (tree mode) or one (query, label context) (flat mode)."""

    query: int
    tokens: tuple[int, ...]
    #: index of each token's parent in the segment; -1 attaches it to the prefix
    parents: tuple[int, ...]
    #: position of each token after the prefix (its depth in the token tree)
    depths: tuple[int, ...]
    #: (label index, offset of the token whose output predicts, the predicted token id)
    targets: tuple[tuple[int, int, int], ...]
    #: offset of the last query token when this segment carries the query's top-k
    topk_at: int | None

    def ancestors(self) -> np.ndarray:
        """``a[i, j]``: token ``j`` is token ``i`` or one of its ancestors."""
        n = len(self.tokens)
        anc = np.zeros((n, n), dtype=bool)
        for i, parent in enumerate(self.parents):
            if parent >= 0:
                anc[i] = anc[parent]
            anc[i, i] = True
        return anc


def _tree_segment(qi: int, query: Sequence[int], label_ids: Sequence[Sequence[int]]) -> _Segment:
    tokens = list(query)
    parents = [i - 1 for i in range(len(query))]
    depths = list(range(len(query)))
    last = len(query) - 1
    node: dict[tuple[int, ...], int] = {(): last}
    targets: list[tuple[int, int, int]] = []
    for li, lab in enumerate(label_ids):
        for j, tok in enumerate(lab):
            targets.append((li, node[tuple(lab[:j])], int(tok)))
            if j < len(lab) - 1 and tuple(lab[: j + 1]) not in node:
                parent = node[tuple(lab[:j])]
                node[tuple(lab[: j + 1])] = len(tokens)
                tokens.append(int(tok))
                parents.append(parent)
                depths.append(depths[parent] + 1)
    return _Segment(qi, tuple(tokens), tuple(parents), tuple(depths), tuple(targets), last)


def _flat_segments(qi: int, query: Sequence[int], label_ids: Sequence[Sequence[int]]) -> list[_Segment]:
    by_context: dict[tuple[int, ...], list[tuple[int, int, int]]] = {}
    for li, lab in enumerate(label_ids):
        context = tuple(query) + tuple(lab[:-1])
        by_context.setdefault(context, []).extend(
            (li, len(query) - 1 + j, int(tok)) for j, tok in enumerate(lab)
        )
    out = []
    # the shortest context carries the query's top-k
    for i, (context, targets) in enumerate(sorted(by_context.items(), key=lambda kv: len(kv[0]))):
        n = len(context)
        out.append(_Segment(qi, context, tuple(range(-1, n - 1)), tuple(range(n)), tuple(targets),
                            len(query) - 1 if i == 0 else None))
    return out


def _first_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: the fewest rows of at most ``capacity`` tokens, in practice."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def _balanced(lengths: Sequence[int], n_rows: int) -> list[list[int]]:
    """Longest first, each segment into the row holding the fewest tokens so far (ties: the first row)."""
    rows: list[list[int]] = [[] for _ in range(n_rows)]
    load = [0] * n_rows
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        r = min(range(n_rows), key=lambda r: (load[r], r))
        rows[r].append(i)
        load[r] += lengths[i]
    return rows


def _even_out(lengths: Sequence[int], rows: list[list[int]]) -> list[list[int]]:
    """Narrow the widest row by moving one of its segments to another row, or swapping it for a shorter one.

    Each accepted move or swap leaves the receiving row narrower than the
    widest row was, so the rows' widths, sorted, fall lexicographically and
    the loop ends.
    """
    rows = [list(row) for row in rows]
    load = [sum(lengths[i] for i in row) for row in rows]
    while True:
        w = max(range(len(rows)), key=lambda r: (load[r], -r))
        best: tuple[int, int, int, int | None] | None = None  # (new widest of the pair, row, segment, swapped)
        for r in range(len(rows)):
            if r == w:
                continue
            for a in rows[w]:
                options = [(None, lengths[a])] + [(b, lengths[a] - lengths[b]) for b in rows[r]
                                                  if lengths[b] < lengths[a]]
                for b, shift in options:
                    pair = max(load[w] - shift, load[r] + shift)
                    if pair < load[w] and (best is None or pair < best[0]):
                        best = (pair, r, a, b)
        if best is None:
            return rows
        _, r, a, b = best
        rows[w].remove(a)
        rows[r].append(a)
        load[w] -= lengths[a]
        load[r] += lengths[a]
        if b is not None:
            rows[r].remove(b)
            rows[w].append(b)
            load[r] -= lengths[b]
            load[w] += lengths[b]


def _pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of the segments in each row, widest rows first.

    The number of rows is first-fit decreasing's at ``capacity``. Every row of
    a batch is padded to its widest row (first-fit's rows of 128 left 14 % of
    the default study's scoring slots as padding), so the segments are then
    spread over that many rows: longest first into the emptiest row, then
    single moves and swaps out of the widest row while they narrow it (the
    same from first-fit's rows, kept if narrower: they fit ``capacity``).
    """
    tight = _first_fit(lengths, capacity)
    candidates = [_even_out(lengths, _balanced(lengths, len(tight))), _even_out(lengths, tight)]
    # the second never exceeds ``capacity``; the first wins ties
    rows = min(candidates, key=lambda rows: max(sum(lengths[i] for i in row) for row in rows))
    for row in rows:
        row.sort(key=lambda i: (-lengths[i], i))
    return sorted(rows, key=lambda row: (-sum(lengths[i] for i in row), row))


@dataclass
class _Batch:
    """Tensors of one forward pass over packed rows, for one prefix length."""

    ids: Any
    positions: Any
    mask: Any
    sel_b: Any
    sel_t: Any
    #: for the label entries of the selection: target token, query, label
    target_tok: Any
    label_q: np.ndarray
    label_l: np.ndarray
    n_label: int
    #: queries whose top-k sits at selection index ``n_label + i``
    topk_q: np.ndarray


@dataclass
class _QueryPlan:
    """The segments, rows and (cached) batch tensors of one set of queries and labels."""

    segments: list[_Segment]
    rows: list[list[int]]
    tree: bool
    n_queries: int
    n_labels: int
    _batches: dict[tuple[int, int, int], _Batch] = field(default_factory=dict)

    @classmethod
    def build(cls, query_ids: Sequence[Sequence[int]], label_ids: Sequence[Sequence[int]], *, tree: bool,
              row_tokens: int = ROW_TOKENS) -> "_QueryPlan":
        if tree:
            segments = [_tree_segment(qi, q, label_ids) for qi, q in enumerate(query_ids)]
            lengths = [len(s.tokens) for s in segments]
            rows = _pack(lengths, max(row_tokens, max(lengths)))
        else:
            segments = [s for qi, q in enumerate(query_ids) for s in _flat_segments(qi, q, label_ids)]
            rows = [[i] for i in sorted(range(len(segments)), key=lambda i: (-len(segments[i].tokens), i))]
        return cls(segments, rows, tree, len(query_ids), len(label_ids))

    def width(self, row: list[int]) -> int:
        return sum(len(self.segments[i].tokens) for i in row)

    def batch(self, start: int, stop: int, n_prefix: int, *, device: Any, dtype: Any) -> _Batch:
        key = (start, stop, n_prefix)
        if key not in self._batches:
            self._batches[key] = self._make_batch(self.rows[start:stop], n_prefix, device=device, dtype=dtype)
        return self._batches[key]

    def _make_batch(self, rows: list[list[int]], n_prefix: int, *, device: Any, dtype: Any) -> _Batch:
        import torch

        n_rows = len(rows)
        width = max(self.width(r) for r in rows)
        ids = np.zeros((n_rows, width), dtype=np.int64)
        positions = np.full((n_rows, width), n_prefix, dtype=np.int64)
        if self.tree:
            allowed = np.zeros((n_rows, width, n_prefix + width), dtype=bool)
            allowed[:, :, :n_prefix] = True
            allowed[:, np.arange(width), n_prefix + np.arange(width)] = True  # padding sees itself
        else:
            valid = np.zeros((n_rows, n_prefix + width), dtype=np.int64)
            valid[:, :n_prefix] = 1
        sel_b: list[int] = []
        sel_t: list[int] = []
        target_tok: list[int] = []
        label_q: list[int] = []
        label_l: list[int] = []
        topk: list[tuple[int, int, int]] = []  # (query, b, t)
        for b, row in enumerate(rows):
            offset = 0
            for si in row:
                seg = self.segments[si]
                n = len(seg.tokens)
                ids[b, offset : offset + n] = seg.tokens
                positions[b, offset : offset + n] = n_prefix + np.asarray(seg.depths)
                if self.tree:
                    allowed[b, offset : offset + n, n_prefix + offset : n_prefix + offset + n] = seg.ancestors()
                else:
                    valid[b, n_prefix : n_prefix + n] = 1
                for li, at, tok in seg.targets:
                    sel_b.append(b)
                    sel_t.append(offset + at)
                    target_tok.append(tok)
                    label_q.append(seg.query)
                    label_l.append(li)
                if seg.topk_at is not None:
                    topk.append((seg.query, b, offset + seg.topk_at))
                offset += n
        n_label = len(sel_b)
        sel_b += [b for _, b, _ in topk]
        sel_t += [t for _, _, t in topk]
        if self.tree:
            mask = torch.zeros(allowed.shape, dtype=dtype)
            mask.masked_fill_(~torch.from_numpy(allowed), torch.finfo(dtype).min)
            mask = mask[:, None].to(device)
        else:
            mask = torch.from_numpy(valid).to(device)
        return _Batch(
            ids=torch.from_numpy(ids).to(device),
            positions=torch.from_numpy(positions).to(device),
            mask=mask,
            sel_b=torch.tensor(sel_b, device=device),
            sel_t=torch.tensor(sel_t, device=device),
            target_tok=torch.tensor(target_tok, device=device),
            label_q=np.asarray(label_q, dtype=np.int64),
            label_l=np.asarray(label_l, dtype=np.int64),
            n_label=n_label,
            topk_q=np.asarray([q for q, _, _ in topk], dtype=np.int64),
        )


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class _ScoreArgs:
    head: tuple[int, ...]
    orders: tuple[tuple[tuple[int, ...], ...], ...]
    queries: tuple[tuple[int, ...], ...]
    labels: tuple[tuple[int, ...], ...]
    top_k: int
    batch_size: int | None
    row_tokens: int


def _validate_score_args(head_ids: Any, orders: Any, query_ids: Any, label_ids: Any, top_k: Any,
                         batch_size: Any, row_tokens: Any) -> _ScoreArgs:
    queries = tuple(tuple(int(t) for t in q) for q in query_ids)
    labels = tuple(tuple(int(t) for t in lab) for lab in label_ids)
    if not queries:
        raise ValueError("`query_ids` is empty; give at least one query")
    if any(len(q) == 0 for q in queries):
        raise ValueError("every query must have at least one token (`query_ids` has an empty one)")
    if not labels or any(len(lab) == 0 for lab in labels):
        raise ValueError("`label_ids` must hold at least one label, each of at least one token")
    validate_count(top_k, "top_k")
    validate_count(batch_size, "batch_size", allow_none=True, none_means="automatic")
    validate_count(row_tokens, "row_tokens")
    norm_orders = tuple(tuple(tuple(int(t) for t in piece) for piece in order) for order in orders)
    if not norm_orders:
        raise ValueError("`orders` is empty; give at least one order (an empty order scores after the head)")
    return _ScoreArgs(tuple(int(t) for t in head_ids), norm_orders, queries, labels, int(top_k),
                      None if batch_size is None else int(batch_size), int(row_tokens))


# --------------------------------------------------------------------------- scoring


@dataclass
class _Scorer:
    """Runs a query plan against caches; remembers the batch size after an out-of-memory back-off."""

    model: Any
    plan: _QueryPlan
    top_k: int
    device: Any
    batch_size: int | None
    budget: MemoryBudget
    _rows: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = self.model.get_decoder()
        self.cache_arg = _cache_kwarg(self.base)
        self.pass_positions = self.plan.tree or _accepts(self.base, "position_ids")
        self.dtype = _model_dtype(self.model)
        #: rows per forward pass that were tried and failed with out-of-memory
        self.backoffs: list[int] = []

    def rows_per_batch(self, n_prefix: int) -> int:
        if n_prefix not in self._rows:
            n_rows = len(self.plan.rows)
            if self.batch_size is not None:
                self._rows[n_prefix] = min(self.batch_size, n_rows)
            else:
                width = max(self.plan.width(r) for r in self.plan.rows)
                budget = TOKEN_BUDGET.get(self.device.type, TOKEN_BUDGET["cpu"])
                by_tokens = max(1, budget // width)
                by_memory = self.budget.room() // _row_bytes(self.model, n_prefix, width)
                self._rows[n_prefix] = max(1, min(n_rows, by_tokens, by_memory))
        return self._rows[n_prefix]

    def score(self, cache: Any, n_prefix: int) -> QueryScores:
        """Score every query against ``cache`` (``None`` when the prefix is empty)."""
        import torch

        plan = self.plan
        logprobs = np.zeros((plan.n_queries, plan.n_labels))
        top_ids = np.zeros((plan.n_queries, self.top_k), dtype=np.int64)
        top_probs = np.zeros((plan.n_queries, self.top_k), dtype=np.float64)
        start = 0
        while start < len(plan.rows):
            size = self.rows_per_batch(n_prefix)
            stop = min(start + size, len(plan.rows))
            self.budget.note_transient((stop - start) * _row_bytes(self.model, n_prefix, plan.width(plan.rows[start])))
            try:
                with torch.inference_mode():
                    self._run(plan.batch(start, stop, n_prefix, device=self.device, dtype=self.dtype), cache,
                              logprobs, top_ids, top_probs)
            except Exception as error:  # noqa: BLE001 - only out-of-memory is handled
                if not is_out_of_memory(error) or stop - start == 1:
                    raise
                del error
                self.backoffs.append(stop - start)
                self._rows[n_prefix] = max(1, (stop - start) // 2)
                plan._batches.clear()
                _release(self.device)
                continue
            start = stop
        return QueryScores(label_logprobs=logprobs, topk_ids=top_ids, topk_probs=top_probs)

    def _run(self, batch: _Batch, cache: Any, logprobs: np.ndarray, top_ids: np.ndarray,
             top_probs: np.ndarray) -> None:
        import torch

        n_rows = batch.ids.shape[0]
        kwargs: dict[str, Any] = {"input_ids": batch.ids, "attention_mask": batch.mask, "use_cache": cache is not None}
        if self.pass_positions:  # flat rows start at the prefix length, as the default positions do
            kwargs["position_ids"] = batch.positions
        if cache is not None:
            batch_cache = copy.deepcopy(cache)
            if n_rows > 1:
                batch_cache.batch_repeat_interleave(n_rows)
            kwargs[self.cache_arg] = batch_cache
        hidden = self.base(**kwargs).last_hidden_state
        logits = lm_head_logits(self.model, hidden[batch.sel_b, batch.sel_t])
        logp = torch.log_softmax(logits.double(), dim=-1)
        n = batch.n_label
        values = logp[torch.arange(n, device=logp.device), batch.target_tok].cpu().numpy()
        np.add.at(logprobs, (batch.label_q, batch.label_l), values)
        if len(batch.topk_q):
            k = min(self.top_k, logp.shape[-1])
            top = torch.topk(logp[n:], k, dim=-1)
            top_ids[batch.topk_q, :k] = top.indices.cpu().numpy()
            top_probs[batch.topk_q, :k] = torch.exp(top.values).cpu().numpy()


@dataclass
class _Node:
    children: dict[tuple[int, ...], "_Node"] = field(default_factory=dict)
    leaves: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Order:
    """One order's prompts split into its shared prefix (as chunks) and each query's suffix."""

    chunks: tuple[tuple[int, ...], ...]
    suffixes: tuple[tuple[int, ...], ...]


def _split_order(prompts: Sequence[Sequence[int]], cuts: Sequence[int]) -> _Order:
    """The common prefix of ``prompts`` (at most all but the shortest one's last token), cut at ``cuts``."""
    first = prompts[0]
    shared = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = 0
        limit = min(shared, len(p))
        while n < limit and first[n] == p[n]:
            n += 1
        shared = n
    bounds = [0] + sorted({int(c) for c in cuts if 0 < int(c) < shared}) + [shared]
    chunks = tuple(tuple(first[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a)
    return _Order(chunks, tuple(tuple(p[shared:]) for p in prompts))


def _trie(orders: Sequence[_Order]) -> _Node:
    root = _Node()
    for index, order in enumerate(orders):
        node = root
        for chunk in order.chunks:
            node = node.children.setdefault(chunk, _Node())
        node.leaves.append(index)
    return root


def _extend(scorer: "_Walker", cache: Any, piece: Sequence[int]) -> Any:
    """Run ``piece`` after ``cache`` (mutated in place) and return the cache."""
    import torch

    if not piece:
        return cache
    with torch.inference_mode():
        ids = torch.tensor([list(piece)], device=scorer.device)
        kwargs: dict[str, Any] = {"input_ids": ids, "use_cache": True}
        if cache is not None:
            kwargs[scorer.cache_arg] = cache
        return _output_cache(scorer.base(**kwargs))


@dataclass
class _Walker:
    """The prefix-trie walk: one :class:`_Scorer` per distinct set of query suffixes."""

    model: Any
    orders: list[_Order]
    labels: tuple[tuple[int, ...], ...]
    top_k: int
    device: Any
    batch_size: int | None
    row_tokens: int
    budget: MemoryBudget
    _scorers: dict[tuple[tuple[int, ...], ...], _Scorer] = field(default_factory=dict)
    #: the trie pieces from the root to the node being visited
    _path: list[tuple[int, ...]] = field(default_factory=list)
    #: prefix caches recomputed because a copy did not fit the budget
    recomputed: int = 0

    def __post_init__(self) -> None:
        self.base = self.model.get_decoder()
        self.cache_arg = _cache_kwarg(self.base)
        self.tree = _tree_attention_ok(self.model)

    def scorer(self, suffixes: tuple[tuple[int, ...], ...]) -> _Scorer:
        if suffixes not in self._scorers:
            plan = _QueryPlan.build(suffixes, self.labels, tree=self.tree, row_tokens=self.row_tokens)
            self._scorers[suffixes] = _Scorer(self.model, plan, self.top_k, self.device, self.batch_size,
                                              self.budget)
        return self._scorers[suffixes]

    def walk(self, node: _Node, cache: Any, n_prefix: int) -> Iterator[tuple[int, QueryScores]]:
        if node.leaves:
            done: dict[tuple[tuple[int, ...], ...], QueryScores] = {}
            for index in node.leaves:
                suffixes = self.orders[index].suffixes
                if suffixes not in done:
                    done[suffixes] = self.scorer(suffixes).score(cache, n_prefix)
                yield index, done[suffixes]
        children = list(node.children.items())
        for i, (piece, child) in enumerate(children):
            last = i == len(children) - 1
            held = 0
            if last or cache is None:
                own = cache
            elif self.budget.reserve(nbytes := _cache_bytes(self.model, n_prefix), "prefix cache"):
                own, held = copy.deepcopy(cache), nbytes
            else:  # no room for a copy: run this node's prefix again, stretch by stretch
                own = self._recompute()
            child_cache = _extend(self, own, piece)
            if last:
                cache = None  # the last child owns it now; drop this frame's reference
            self._path.append(piece)
            try:
                yield from self.walk(child, child_cache, n_prefix + len(piece))
            finally:
                self._path.pop()
                del child_cache
                self.budget.release(held, "prefix cache")

    def _recompute(self) -> Any:
        """The cache of the current node, computed again from the root with the same stretches."""
        self.recomputed += 1
        cache = None
        for piece in self._path:
            cache = _extend(self, cache, piece)
        return cache


def _validate_prompts(orders: Any, label_ids: Any, top_k: Any, batch_size: Any, row_tokens: Any
                      ) -> tuple[list[_Order], tuple[tuple[int, ...], ...]]:
    # the label / top_k / batch / row checks are shared with the piecewise entry point
    args = _validate_score_args([], [[]], [[0]], label_ids, top_k, batch_size, row_tokens)
    if not orders:
        raise ValueError("`orders` is empty; give at least one order")
    split = []
    for i, order in enumerate(orders):
        prompts = getattr(order, "prompts", order)
        cuts = getattr(order, "cuts", ())
        prompts = [tuple(int(t) for t in p) for p in prompts]
        if not prompts:
            raise ValueError(f"order {i} has no prompt; give at least one query")
        if any(len(p) == 0 for p in prompts):
            raise ValueError(f"order {i}: every prompt must have at least one token")
        split.append(_split_order(prompts, cuts))
    return split, args.labels


def score_prompts(
    model: Any,
    orders: Sequence[Any],
    label_ids: Sequence[Sequence[int]],
    *,
    top_k: int = 20,
    batch_size: int | None = None,
    row_tokens: int = ROW_TOKENS,
    device: Any = None,
    memory_budget: Any = None,
) -> Iterator[tuple[int, QueryScores]]:
    """Score the label words after whole prompts, sharing the prompts' common token prefixes.

    Each order is a list of prompts (one per query, the token ids the model
    sees) and optional cut points. The prompts of one order share their
    longest common id prefix (at most all but the last token of the shortest
    one); the orders' shared prefixes form a token trie whose nodes sit at each
    order's cut points (demo boundaries): the KV cache of every trie node is
    computed once, as one forward pass per stretch between cuts, and copied
    only where the trie branches. The rest of each prompt (its suffix, at least
    one token) is scored with the label words as its continuation against the
    order's leaf cache, packed as in :func:`score_orders`.

    Because each order's stretches are fixed by its own prompts and cuts, an
    order's scores are the same bits whichever other orders are scored in the
    same call (a resumed run reproduces an uninterrupted one).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM in eval mode.
    orders : sequence of OrderPrompts or of sequence of sequence of int
        Each order's prompts (``prompts``) and cut points (``cuts``), as
        :meth:`hyptest.collect.encoding.PromptEncoder.order_prompts` returns
        them; a plain list of prompts has no cuts (its shared prefix runs as
        one forward pass).
    label_ids : sequence of sequence of int
        Ids of each label word (tokenised on its own); multi-token words are
        scored as the sum of their token log-probs.
    top_k, batch_size, row_tokens, device
        As in :func:`score_orders`.
    memory_budget : MemoryBudget, int or str, optional
        What prefix-cache copies and scoring batches may hold (a
        :class:`~hyptest.collect.memory.MemoryBudget` shared with the caller,
        or a size); default :data:`~hyptest.collect.memory.DEFAULT_BUDGET` for
        the device. Where a copy does not fit, the prefix is recomputed.

    Yields
    ------
    index : int
        Index into ``orders``, in the order the trie walk finishes them.
    scores : QueryScores
        The scores of that order's prompts, in prompt order.

    Raises
    ------
    ValueError
        On no order, an order without prompts, an empty prompt or label, or a
        bad ``top_k`` / ``batch_size`` / ``row_tokens``.
    """
    split, labels = _validate_prompts(orders, label_ids, top_k, batch_size, row_tokens)
    dev = _model_device(model, device)
    walker = _Walker(model, split, labels, int(top_k), dev, None if batch_size is None else int(batch_size),
                     int(row_tokens), MemoryBudget.for_device(dev, memory_budget))
    yield from walker.walk(_trie(split), None, 0)


def score_orders(
    model: Any,
    head_ids: Sequence[int],
    orders: Sequence[Sequence[Sequence[int]]],
    query_ids: Sequence[Sequence[int]],
    label_ids: Sequence[Sequence[int]],
    *,
    top_k: int = 20,
    batch_size: int | None = None,
    row_tokens: int = ROW_TOKENS,
    device: Any = None,
    memory_budget: Any = None,
) -> Iterator[tuple[int, QueryScores]]:
    """Score every query after every order of id pieces: prompts given as concatenated ids.

    The prompt of order ``i`` and query ``q`` is the id sequence ``head_ids +
    orders[i][0] + orders[i][1] + ... + query_ids[q]``, scored by
    :func:`score_prompts` with cuts at the piece boundaries. hyptest's own
    collectors do not build prompts this way (a prompt is tokenised as one
    string, :class:`hyptest.collect.encoding.PromptEncoder`); this is the
    id-level entry point for callers that have ids already.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM in eval mode.
    head_ids : sequence of int
        Ids before every order; may be empty.
    orders : sequence of sequence of sequence of int
        Each order as its pieces; an empty order scores right after the head.
    query_ids : sequence of sequence of int
        Ids of each query (each at least one token).
    label_ids : sequence of sequence of int
        Ids of each label word; multi-token words are scored as the sum of their token log-probs.
    top_k : int, default 20
        Number of next-token probabilities kept after each query.
    batch_size : int, optional
        Packed rows per forward pass. Default: from the device's token budget
        (:data:`TOKEN_BUDGET`) and the room in ``memory_budget``. Halved and
        retried on out-of-memory either way.
    row_tokens : int, default :data:`ROW_TOKENS`
        Tokens per packed row (at least the longest query segment).
    device : str or torch.device, optional
        Device of the model; default the device of its parameters.
    memory_budget : MemoryBudget, int or str, optional
        As in :func:`score_prompts`.

    Yields
    ------
    index : int
        Index into ``orders``, in the order the tree walk finishes them.
    scores : QueryScores
        The scores of that order's prompt.

    Raises
    ------
    ValueError
        On an empty query, label or order list, or a bad ``top_k`` / ``batch_size``.

    See Also
    --------
    score_prompts : whole prompts with cut points.
    score_queries : one prefix.

    Notes
    -----
    Equal to the naive loop (one full forward per prompt, softmax over the full
    logits) up to float rounding: the tests check 1e-6 in probability on a tiny
    float32 model and 1e-4 on SmolLM2-135M.
    """
    args = _validate_score_args(head_ids, orders, query_ids, label_ids, top_k, batch_size, row_tokens)
    built = []
    for order in args.orders:
        prefix = list(args.head)
        cuts = [len(prefix)]
        for piece in order:
            prefix += piece
            cuts.append(len(prefix))
        built.append(_PiecewiseOrder(tuple(tuple(prefix) + q for q in args.queries), tuple(cuts)))
    yield from score_prompts(model, built, args.labels, top_k=args.top_k, batch_size=args.batch_size,
                             row_tokens=args.row_tokens, device=device, memory_budget=memory_budget)


@dataclass(frozen=True)
class _PiecewiseOrder:
    prompts: tuple[tuple[int, ...], ...]
    cuts: tuple[int, ...]


def score_queries(
    model: Any,
    prefix_ids: Sequence[int],
    query_ids: Sequence[Sequence[int]],
    label_ids: Sequence[Sequence[int]],
    *,
    top_k: int = 20,
    batch_size: int | None = None,
    row_tokens: int = ROW_TOKENS,
    device: Any = None,
    memory_budget: Any = None,
) -> QueryScores:
    """Score every label word for every query after one shared prefix.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM in eval mode.
    prefix_ids : sequence of int
        Ids before each query (may be empty); run as one forward pass.
    query_ids : sequence of sequence of int
        Ids of each query's input.
    label_ids : sequence of sequence of int
        Ids of each label word (multi-token words are summed).
    top_k : int, default 20
        Number of next-token probabilities kept.
    batch_size : int, optional
        Packed rows per forward pass; default automatic (see :func:`score_orders`).
    row_tokens : int, default :data:`ROW_TOKENS`
        Tokens per packed row.
    device : str or torch.device, optional
        Device of the model; default the device of its parameters.
    memory_budget : MemoryBudget, int or str, optional
        As in :func:`score_prompts`.

    Returns
    -------
    QueryScores
    """
    ((_, scores),) = score_orders(model, prefix_ids, [[]], query_ids, label_ids, top_k=top_k,
                                  batch_size=batch_size, row_tokens=row_tokens, device=device,
                                  memory_budget=memory_budget)
    return scores
