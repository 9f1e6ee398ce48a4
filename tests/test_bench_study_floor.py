"""benchmarks/bench_study_floor.py counts the training steps hyptest really takes (tiny model).

The study floor charges one dense step per optimisation step it counts; if the count disagreed with
the steps hyptest's walk takes, the floor would be wrong. The reference is hyptest's own training
run, observed from outside: the number of training-loss evaluations of ``train_orders``.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from hyptest.collect import gd
from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.gd import TrainingExample, train_orders
from hyptest.study import AdamMethod, GDMethod, SGDMethod

from ._benchmarks import load_benchmark


@pytest.mark.parametrize("method", [SGDMethod(kind="sgd", learning_rate=0.05),
                                    AdamMethod(kind="adam", learning_rate=1e-3),
                                    GDMethod(kind="gd", learning_rate=0.05, steps=2)], ids=lambda m: m.kind)
def test_counted_steps_are_the_steps_train_orders_takes(tiny_lm, sentiment, monkeypatch, method):
    load_benchmark("_floor")  # the script imports it by name
    bench = load_benchmark("bench_study_floor")
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    examples = {d.id: d for d in sentiment.demos}
    sets = [list(sentiment.demos[:3]), list(sentiment.demos[3:6])]
    units = [SimpleNamespace(demo_set=s, order_id=i, order=tuple(sets[s][j].id for j in perm))
             for s in range(2) for i, perm in enumerate(list(itertools.permutations(range(3)))[:5])]
    counted = bench.training_steps(units, enc, sentiment, method)

    calls = []
    real = gd.training_loss
    monkeypatch.setattr(gd, "training_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    for s in range(2):
        orders = [[TrainingExample(*map(tuple, enc.training_example(examples[d]))) for d in u.order]
                  for u in units if u.demo_set == s]
        for _ in train_orders(tiny_lm.model, orders, method, seed=0):
            pass
    assert len(counted) == len(calls)
    # 5 of the 6 orders of 3 demos: 3 + 5 + 5 trie nodes per set (batch 1), or 5 orders x 2 full-batch steps
    assert len(counted) == (2 * 5 * 2 if method.kind == "gd" else 2 * (3 + 5 + 5))
