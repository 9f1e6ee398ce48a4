"""Score label words after a prompt prefix, sharing the prefix's KV cache.

For one prefix (BOS + demos) and many queries, the prefix is run once; every
query (and, for multi-token label words, every distinct label context) runs as
one row of a right-padded batch against a copy of that cache. The LM head is
applied only at the positions that are scored.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["QueryScores", "lm_head_logits", "score_queries"]


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


def _cache_kwarg(module: Any) -> str:
    """Name of the cache argument: ``cache`` in transformers >= 5.x, ``past_key_values`` before."""
    import inspect

    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(output: Any) -> Any:
    cache = getattr(output, "past_key_values", None)
    return cache if cache is not None else getattr(output, "cache", None)


def lm_head_logits(model: Any, hidden: Any) -> Any:
    """Apply the model's output head (and final soft-capping, if any) to hidden states."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        import torch

        logits = torch.tanh(logits / cap) * cap
    return logits


@dataclass(frozen=True)
class _Row:
    query: int
    context: tuple[int, ...]
    # (label index, offset in context of the position predicting each label token)
    targets: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]
    topk_at: int | None


def _rows(query_ids: Sequence[Sequence[int]], label_ids: Sequence[Sequence[int]]) -> list[_Row]:
    rows: list[_Row] = []
    for qi, q in enumerate(query_ids):
        by_context: dict[tuple[int, ...], list[tuple[int, tuple[tuple[int, int], ...]]]] = {}
        for li, lab in enumerate(label_ids):
            context = tuple(q) + tuple(lab[:-1])
            positions = tuple((len(q) - 1 + j, tok) for j, tok in enumerate(lab))
            by_context.setdefault(context, []).append((li, positions))
        # the shortest context (the bare query, when any label is one token) carries the top-k
        for i, (context, targets) in enumerate(sorted(by_context.items(), key=lambda kv: len(kv[0]))):
            rows.append(_Row(qi, context, tuple(targets), len(q) - 1 if i == 0 else None))
    return rows


def score_queries(
    model: Any,
    prefix_ids: Sequence[int],
    query_ids: Sequence[Sequence[int]],
    label_ids: Sequence[Sequence[int]],
    *,
    top_k: int = 20,
    batch_size: int = 32,
    device: str = "cpu",
) -> QueryScores:
    """Score every label word for every query after a shared prefix.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM in eval mode.
    prefix_ids : sequence of int
        Ids before each query (may be empty).
    query_ids : sequence of sequence of int
        Ids of each query's input.
    label_ids : sequence of sequence of int
        Ids of each label word (multi-token words are summed).
    top_k : int
        Number of next-token probabilities kept.
    batch_size : int
        Rows per forward pass.
    device : str
        Device of the model.

    Returns
    -------
    QueryScores
    """
    import torch

    n_q, n_l = len(query_ids), len(label_ids)
    if any(len(q) == 0 for q in query_ids):
        raise ValueError("every query must have at least one token")
    logprobs = np.full((n_q, n_l), np.nan)
    top_ids = np.zeros((n_q, top_k), dtype=np.int64)
    top_probs = np.zeros((n_q, top_k), dtype=np.float64)
    rows = _rows(query_ids, label_ids)
    base = model.get_decoder()
    cache_arg = _cache_kwarg(base)
    with torch.inference_mode():
        cache = None
        n_prefix = len(prefix_ids)
        if n_prefix:
            prefix = torch.tensor([list(prefix_ids)], device=device)
            cache = _output_cache(base(input_ids=prefix, use_cache=True))
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            width = max(len(r.context) for r in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long, device=device)
            mask = torch.zeros((len(batch), n_prefix + width), dtype=torch.long, device=device)
            mask[:, :n_prefix] = 1
            for b, row in enumerate(batch):
                ids[b, : len(row.context)] = torch.tensor(row.context, device=device)
                mask[b, n_prefix : n_prefix + len(row.context)] = 1
            kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": cache is not None}
            if cache is not None:
                batch_cache = copy.deepcopy(cache)
                batch_cache.batch_repeat_interleave(len(batch))
                kwargs[cache_arg] = batch_cache
            hidden = base(**kwargs).last_hidden_state
            # gather only the scored positions
            sel_b: list[int] = []
            sel_t: list[int] = []
            for b, row in enumerate(batch):
                for _, positions in row.targets:
                    for pos, _tok in positions:
                        sel_b.append(b)
                        sel_t.append(pos)
                if row.topk_at is not None:
                    sel_b.append(b)
                    sel_t.append(row.topk_at)
            logits = lm_head_logits(model, hidden[sel_b, sel_t]).float()
            logp = torch.log_softmax(logits, dim=-1).double().cpu().numpy()
            k = 0
            for row in batch:
                for li, positions in row.targets:
                    total = 0.0
                    for _pos, tok in positions:
                        total += logp[k, tok]
                        k += 1
                    logprobs[row.query, li] = total
                if row.topk_at is not None:
                    order = np.argsort(-logp[k])[:top_k]
                    top_ids[row.query] = order
                    top_probs[row.query] = np.exp(logp[k, order])
                    k += 1
    return QueryScores(label_logprobs=logprobs, topk_ids=top_ids, topk_probs=top_probs)
