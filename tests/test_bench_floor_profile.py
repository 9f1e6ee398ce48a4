"""benchmarks/_floor.py's profile on the tiny model: every category it names is reached, and nothing stays patched.

bench_gd.py and bench_icl.py print this profile after their timings; it wraps hyptest's internals by
name, so a renamed or moved function must fail here, not at the end of a ten-minute benchmark.
"""

from __future__ import annotations

import itertools

import torch

from hyptest.collect import gd, losses, scoring
from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.gd import TrainingExample, train_orders
from hyptest.collect.scoring import score_prompts, score_queries
from hyptest.study import AdamMethod

from ._benchmarks import load_benchmark


def test_profile_reaches_every_category_and_unpatches(tiny_lm, sentiment):
    floor = load_benchmark("_floor")
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    examples = [TrainingExample(*map(tuple, enc.training_example(d))) for d in sentiment.demos[:3]]
    orders = [[examples[i] for i in p] for p in itertools.permutations(range(3))]
    queries = [enc.prompt_ids([], q) for q in sentiment.queries[:3]]
    demos = list(sentiment.demos[:3])
    before = {(owner, name): getattr(owner, name) for owner, name in [
        (gd, "training_loss"), (losses, "lm_head_logits"), (scoring, "lm_head_logits"), (scoring, "_extend"),
        (torch, "log_softmax"), (torch.Tensor, "backward"), (gd._TrainingState, "restore")]}
    prof = floor.Profile()
    with floor.profiled(tiny_lm.model, prof):
        for _ in train_orders(tiny_lm.model, orders, AdamMethod(kind="adam", learning_rate=1e-3), seed=0,
                              max_snapshots=1):
            score_queries(tiny_lm.model, [], queries, enc.label_ids(), top_k=3)
        list(score_prompts(tiny_lm.model, [enc.order_prompts([demos[i] for i in p], list(sentiment.queries[:3]))
                                           for p in itertools.permutations(range(3))], enc.label_ids(), top_k=3))
    for category in (floor.TRAIN_FWD, floor.BACKWARD, floor.OPTIM, floor.HEAD, floor.SOFTMAX, floor.SNAPSHOT,
                     floor.SCORE_FWD):
        assert prof.calls[category] > 0, category
    # 3! orders of 3 demos: the step trie has 3 + 6 + 6 = 15 nodes, each parameter steps once per node
    n_params = sum(1 for _ in tiny_lm.model.parameters())
    assert prof.calls[floor.OPTIM] >= 15 * n_params
    assert all(getattr(owner, name) is fn for (owner, name), fn in before.items())
