"""Naive collectors, written the way published ICL-vs-GD code usually is: the benchmarks' baseline.

* ICL: each whole prompt string built with ``str.join`` / f-strings from the
  task's template, tokenised as one string, one full forward pass per prompt
  (``model(ids).logits`` over the whole sequence and vocabulary, log-softmax in
  float64), the label words read at the last position (as ``tests/_naive.py``).
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


def prompt_string(task: Any, demos: Sequence[Any], query: Any) -> str:
    """The whole prompt string, written out as research code does (not via hyptest's encoder)."""
    head = f"{task.instruction}{task.demo_separator}" if task.instruction else ""
    shots = "".join(f"{task.input_template.replace('{text}', d.text)}{task.label_words[d.label]}{task.demo_separator}"
                    for d in demos)
    return head + shots + task.input_template.replace("{text}", query.text)


def whole_prompt_ids(tokenizer: Any, task: Any, demos: Sequence[Any], queries: Sequence[Any]) -> list[list[int]]:
    """``tokenizer(prompt)`` of each query's whole prompt string (default special tokens, BOS where added)."""
    return [list(tokenizer(prompt_string(task, demos, q)).input_ids) for q in queries]


def label_word_ids(tokenizer: Any, task: Any) -> list[list[int]]:
    """Each label word tokenised on its own (no special tokens), in ``task.labels`` order."""
    return [list(tokenizer(task.label_words[lab], add_special_tokens=False).input_ids) for lab in task.labels]


def naive_scores(model: Any, prompts: Sequence[Sequence[int]], label_ids: Sequence[Sequence[int]],
                 top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label log-probs and next-token top-k: ONE full forward per prompt, full logits.

    The label words' first tokens and the top-k are read from the logits at the
    prompt's last position; a multi-token label word alone gets one more
    forward pass (prompt + its tokens) for its later tokens.
    """
    logprobs = np.zeros((len(prompts), len(label_ids)))
    top_ids = np.zeros((len(prompts), top_k), dtype=np.int64)
    top_probs = np.zeros((len(prompts), top_k))
    device = next(model.parameters()).device
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            prompt = list(prompt)
            logits = model(torch.tensor([prompt], device=device)).logits[0].double()
            last = torch.log_softmax(logits[-1], dim=-1)
            top = torch.topk(last, top_k)
            top_ids[i] = top.indices.cpu().numpy()
            top_probs[i] = torch.exp(top.values).cpu().numpy()
            for j, lab in enumerate(label_ids):
                if len(lab) == 1:
                    logprobs[i, j] = float(last[lab[0]])
                    continue
                ids = prompt + list(lab)
                logp = torch.log_softmax(model(torch.tensor([ids], device=device)).logits[0].double(), dim=-1)
                logprobs[i, j] = sum(float(logp[len(prompt) + k - 1, tok]) for k, tok in enumerate(lab))
    return logprobs, top_ids, top_probs


def naive_prompt_scores(model: Any, tokenizer: Any, task: Any, demos: Sequence[Any], queries: Sequence[Any],
                        top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The research loop: build each whole prompt string, tokenise it, one forward per prompt."""
    return naive_scores(model, whole_prompt_ids(tokenizer, task, demos, queries), label_word_ids(tokenizer, task),
                        top_k)


def naive_order_scores(model: Any, tokenizer: Any, task: Any, orders: Sequence[Sequence[Any]],
                       queries: Sequence[Any], top_k: int) -> np.ndarray:
    """:func:`naive_prompt_scores`' label log-probs of each order: [orders, queries, labels]."""
    return np.stack([naive_prompt_scores(model, tokenizer, task, o, queries, top_k)[0] for o in orders])


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
