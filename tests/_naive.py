"""Naive reference implementations used by the tests (one prompt at a time, full forward)."""

from __future__ import annotations

import numpy as np
import torch


def prompt_string(task, demos, query):
    """The whole prompt string, written out independently of hyptest's encoder (research-code style)."""
    head = f"{task.instruction}{task.demo_separator}" if task.instruction else ""
    shots = "".join(f"{task.input_template.replace('{text}', d.text)}{task.label_words[d.label]}{task.demo_separator}"
                    for d in demos)
    return head + shots + task.input_template.replace("{text}", query.text)


def whole_prompt_ids(tokenizer, task, demos, queries):
    """``tokenizer(prompt)`` (default special tokens) of each query's whole prompt string."""
    return [list(tokenizer(prompt_string(task, demos, q)).input_ids) for q in queries]


def label_word_ids(tokenizer, task):
    """Each label word tokenised on its own, without special tokens."""
    return [list(tokenizer(task.label_words[lab], add_special_tokens=False).input_ids) for lab in task.labels]


def naive_label_logprobs(model, prefix_ids, query_ids, label_ids):
    """log P(label | prefix + query): ONE full forward per prompt, label logits read at its last position.

    A multi-token label word needs its own forward pass (prompt + label tokens) for its later tokens.
    """
    out = np.zeros((len(query_ids), len(label_ids)))
    with torch.no_grad():
        for i, q in enumerate(query_ids):
            prompt = list(prefix_ids) + list(q)
            last = torch.log_softmax(model(torch.tensor([prompt])).logits[0, -1].double(), dim=-1)
            for j, lab in enumerate(label_ids):
                if len(lab) == 1:
                    out[i, j] = float(last[lab[0]])
                    continue
                ids = prompt + list(lab)
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
                out[i, j] = sum(float(logp[len(prompt) + k - 1, tok]) for k, tok in enumerate(lab))
    return out


def naive_prompt_logprobs(model, tokenizer, task, demos, queries):
    """log P(label word | whole prompt) for each query: strings built here, one forward per prompt."""
    return naive_label_logprobs(model, [], whole_prompt_ids(tokenizer, task, demos, queries),
                                label_word_ids(tokenizer, task))


def naive_topk(model, prefix_ids, query, k):
    with torch.no_grad():
        logits = model(torch.tensor([list(prefix_ids) + list(query)])).logits[0, -1].double()
    probs = torch.softmax(logits, -1)
    top = torch.topk(probs, k)
    return top.indices.numpy(), top.values.numpy()


def example_loss(model, ids, targets):
    logits = model(torch.tensor([list(ids)])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -sum(logp[t - 1, ids[t]] for t in targets)


def _params(model, names):
    """The parameters called ``names`` (all of them when None), in that order."""
    if names is None:
        return list(model.parameters())
    named = dict(model.named_parameters())
    return [named[n] for n in names]


def manual_sgd(model, examples, lr, epochs=1, *, names=None, loss_fn=example_loss):
    """Plain SGD, batch 1, in order; only the parameters called ``names`` move (all when None)."""
    params = _params(model, names)
    for _ in range(epochs):
        for ids, targets in examples:
            loss = loss_fn(model, ids, targets)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p -= lr * g


def manual_full_batch_gd(model, examples, lr, steps, *, names=None, loss_fn=example_loss):
    """Full-batch GD on the mean of the per-example losses; only ``names`` move (all when None)."""
    params = _params(model, names)
    for _ in range(steps):
        loss = sum(loss_fn(model, ids, t) for ids, t in examples) / len(examples)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lr * g


def manual_adam(model, examples, lr, betas=(0.9, 0.999), eps=1e-8, epochs=1, *, names=None):
    """Adam written out from Kingma & Ba (2015), Algorithm 1; only ``names`` move (all when None)."""
    params = _params(model, names)
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    b1, b2 = betas
    t = 0
    for _ in range(epochs):
        for ids, targets in examples:
            t += 1
            grads = torch.autograd.grad(example_loss(model, ids, targets), params)
            with torch.no_grad():
                for p, g, mi, vi in zip(params, grads, m, v):
                    mi.mul_(b1).add_((1 - b1) * g)
                    vi.mul_(b2).add_((1 - b2) * g * g)
                    m_hat = mi / (1 - b1**t)
                    v_hat = vi / (1 - b2**t)
                    p -= lr * m_hat / (v_hat.sqrt() + eps)
