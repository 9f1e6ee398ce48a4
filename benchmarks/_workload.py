"""The ICL benchmarks' shared workload: the sentiment task's demo set, queries and orders, and scoring over orders.

``bench_icl.py``, ``bench_gd.py`` and ``bench_gpu_icl.py`` time the same kind of work: one label-balanced
demo set of the built-in sentiment task (seeded), held-out queries, and orders of the demos, either the
first permutations in lexicographic order or drawn as a study draws them (order 0 as drawn, the rest at
random).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from hyptest.collect.plan import sample_demo_sets, sample_orders, sample_queries
from hyptest.collect.scoring import score_prompts
from hyptest.tasks import load_builtin_task


def sentiment_workload(n_demos: int, n_orders: int, n_queries: int, *, lexicographic: bool = True,
                       seed: int = 0) -> tuple[Any, list[list[Any]], list[Any]]:
    """``(task, orders, queries)``: ``n_orders`` orders of one demo set of ``n_demos``, and ``n_queries`` queries."""
    task = load_builtin_task("sentiment")
    demos = sample_demo_sets(task, n_demos, 1, seed=seed, balanced=True)[0]
    queries = sample_queries(task, n_queries, seed=seed)
    if lexicographic:
        perms = list(itertools.islice(itertools.permutations(range(n_demos)), n_orders))
    else:  # as a study samples them (order 0 = as drawn, the rest at random)
        perms = sample_orders(n_demos, n_orders, rng=np.random.default_rng(seed))
    return task, [[demos[i] for i in p] for p in perms], queries


def scored_label_logprobs(model: Any, prompts: Sequence[Any], label_ids: Sequence[Sequence[int]],
                          top_k: int) -> np.ndarray:
    """hyptest's scorer (``score_prompts``) over every order's prompts: label log-probs, [orders, queries, labels]."""
    out = dict(score_prompts(model, prompts, label_ids, top_k=top_k))
    return np.stack([out[i].label_logprobs for i in range(len(prompts))])
