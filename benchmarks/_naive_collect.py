"""Naive collectors, written the way published ICL-vs-GD code usually is: the benchmarks' baseline.

* ICL: one full forward pass per (prompt, label word), ``model(ids).logits`` over
  the whole sequence and vocabulary, log-softmax in float64 (as ``tests/_naive.py``).
* GD: ``copy.deepcopy`` of the pretrained model per order, a straight training
  loop whose loss takes the full logits, then the naive ICL scorer zero-shot.

Shared by ``bench_icl.py``, ``bench_gd.py`` and ``bench_study.py``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

try:
    import hyptest  # noqa: F401
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def naive_label_logprobs(model: Any, prefix_ids: Sequence[int], query_ids: Sequence[Sequence[int]],
                         label_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """log P(label | prefix + query): one full forward per (query, label), full logits."""
    out = np.zeros((len(query_ids), len(label_ids)))
    device = next(model.parameters()).device
    with torch.no_grad():
        for i, q in enumerate(query_ids):
            for j, lab in enumerate(label_ids):
                ids = list(prefix_ids) + list(q) + list(lab)
                logits = model(torch.tensor([ids], device=device)).logits[0].double()
                logp = torch.log_softmax(logits, dim=-1)
                start = len(ids) - len(lab)
                out[i, j] = sum(float(logp[start + k - 1, tok]) for k, tok in enumerate(lab))
    return out


def naive_scores(model: Any, prefix_ids: Sequence[int], query_ids: Sequence[Sequence[int]],
                 label_ids: Sequence[Sequence[int]], top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label log-probs and next-token top-k, one full forward per (query, label), full logits.

    The top-k comes from the first label's forward pass (its logits after the
    query), so the naive loop does no more forward passes than it has to.
    """
    logprobs = np.zeros((len(query_ids), len(label_ids)))
    top_ids = np.zeros((len(query_ids), top_k), dtype=np.int64)
    top_probs = np.zeros((len(query_ids), top_k))
    device = next(model.parameters()).device
    with torch.no_grad():
        for i, q in enumerate(query_ids):
            for j, lab in enumerate(label_ids):
                ids = list(prefix_ids) + list(q) + list(lab)
                logits = model(torch.tensor([ids], device=device)).logits[0].double()
                logp = torch.log_softmax(logits, dim=-1)
                start = len(ids) - len(lab)
                logprobs[i, j] = sum(float(logp[start + k - 1, tok]) for k, tok in enumerate(lab))
                if j == 0:
                    top = torch.topk(logp[start - 1], top_k)
                    top_ids[i] = top.indices.cpu().numpy()
                    top_probs[i] = torch.exp(top.values).cpu().numpy()
    return logprobs, top_ids, top_probs


def naive_topk(model: Any, prefix_ids: Sequence[int], query: Sequence[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the next-token distribution after prefix + query (one more full forward)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(torch.tensor([list(prefix_ids) + list(query)], device=device)).logits[0, -1].double()
    top = torch.topk(torch.softmax(logits, -1), k)
    return top.indices.cpu().numpy(), top.values.cpu().numpy()


def _example_loss(model: Any, ids: Sequence[int], targets: Sequence[int]) -> Any:
    device = next(model.parameters()).device
    logits = model(torch.tensor([list(ids)], device=device)).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -sum(logp[t - 1, ids[t]] for t in targets)


def naive_train(pretrained: Any, examples: Sequence[tuple[Sequence[int], Sequence[int]]], method: Any,
                *, seed: int = 0) -> Any:
    """A deep copy of ``pretrained`` trained on ``examples`` (in order) with full-logit losses."""
    model = copy.deepcopy(pretrained)
    torch.manual_seed(seed)
    params = list(model.parameters())
    if method.kind in {"gd", "sgd"}:
        optimizer = torch.optim.SGD(params, lr=method.learning_rate)
    else:
        optimizer = torch.optim.Adam(params, lr=method.learning_rate, betas=tuple(method.betas), eps=method.eps)
    if method.kind == "gd":
        schedule = [list(examples)] * method.steps
    else:
        schedule = [[ex] for _ in range(method.epochs) for ex in examples]
    for batch in schedule:
        optimizer.zero_grad(set_to_none=True)
        loss = sum(_example_loss(model, ids, targets) for ids, targets in batch) / len(batch)
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model


def max_prob_diff(a_logprobs: np.ndarray, b_logprobs: np.ndarray) -> float:
    """Largest |difference| in probability: raw P(label word | prompt) and renormalised over the labels."""
    def renorm(x: np.ndarray) -> np.ndarray:
        p = np.exp(x - x.max(axis=-1, keepdims=True))
        return p / p.sum(axis=-1, keepdims=True)

    raw = np.abs(np.exp(a_logprobs) - np.exp(b_logprobs)).max()
    return float(max(raw, np.abs(renorm(a_logprobs) - renorm(b_logprobs)).max()))
