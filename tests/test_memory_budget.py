"""The memory budget: every cache, snapshot and batch stays inside it, and the numbers do not change.

References are independent of the code under test: the naive whole-prompt loop of
``tests/_naive.py`` (one forward per prompt) for ICL, and the straight training loop
from fresh weights for the GD-style methods.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.gd import TrainingExample, WeightSnapshot, train_in_place, train_orders
from hyptest.collect.memory import DEFAULT_BUDGET, MemoryBudget, parse_bytes, tensor_bytes
from hyptest.collect.scoring import score_prompts
from hyptest.study import AdamMethod, SGDMethod

from ._naive import naive_prompt_logprobs


@pytest.mark.parametrize(("text", "expected"), [
    ("2GB", 2 * 10**9), ("2 gb", 2 * 10**9), ("1.5GiB", 3 * 2**29), ("512MiB", 512 * 2**20), ("10kB", 10_000),
    ("7", 7), (4096, 4096), ("0.5TB", 5 * 10**11),
])
def test_sizes_parse_to_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["", "2 parsecs", "-1GB", 0, -5, True, None, "GB", float("nan"), [1]])
def test_bad_sizes_are_named(bad):
    with pytest.raises(ValueError, match="memory_budget"):
        parse_bytes(bad)


def test_ledger_never_holds_more_than_the_limit():
    budget = MemoryBudget(100)
    assert budget.reserve(60, "a") and not budget.reserve(41, "b") and budget.reserve(40, "b")
    assert (budget.held, budget.peak, budget.declined, budget.room()) == (100, 100, 1, 0)
    budget.release(60, "a")
    assert budget.room() == 60
    assert MemoryBudget.for_device("cpu").limit == DEFAULT_BUDGET["cpu"] == 3 << 29
    assert MemoryBudget.for_device(torch.device("cpu"), "1MiB").limit == 1 << 20


def _orders(task, n_demos, n_orders):
    perms = list(itertools.permutations(task.demos[:n_demos]))[:n_orders]
    return [list(p) for p in perms]


@pytest.mark.parametrize("limit", [1, "100MB", None])
def test_icl_inside_any_budget_scores_the_whole_prompts(tiny_lm, sentiment, limit):
    """A budget too small for any cache copy recomputes prefixes and gives the naive loop's numbers."""
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    queries = list(sentiment.queries[:4])
    orders = _orders(sentiment, 3, 6)
    budget = MemoryBudget.for_device("cpu", limit)
    # a fixed batch size, so that only the copy-or-recompute choice differs between the two runs
    got = dict(score_prompts(tiny_lm.model, [enc.order_prompts(o, queries) for o in orders], enc.label_ids(),
                             top_k=3, batch_size=2, memory_budget=budget))
    unlimited = dict(score_prompts(tiny_lm.model, [enc.order_prompts(o, queries) for o in orders],
                                   enc.label_ids(), top_k=3, batch_size=2, memory_budget=MemoryBudget(1 << 40)))
    for i, order in enumerate(orders):
        ref = naive_prompt_logprobs(tiny_lm.model, tiny_lm.tokenizer, sentiment, order, queries)
        np.testing.assert_allclose(np.exp(got[i].label_logprobs), np.exp(ref), atol=1e-6)
        # recomputing a prefix runs the same stretches: the same bits as copying it
        np.testing.assert_array_equal(got[i].label_logprobs, unlimited[i].label_logprobs)
    assert budget.held == 0  # every copy given back
    if limit == 1:
        assert budget.declined > 0


def test_automatic_batches_and_copies_stay_inside_the_budget(tiny_lm, sentiment):
    from hyptest.collect.scoring import ROW_TOKENS, _row_bytes

    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    queries = list(sentiment.queries[:8])
    orders = _orders(sentiment, 3, 6)
    prompts = [enc.order_prompts(o, queries) for o in orders]
    longest = max(len(p) for order in prompts for p in order.prompts)
    budget = MemoryBudget(3 * _row_bytes(tiny_lm.model, longest, ROW_TOKENS))
    got = dict(score_prompts(tiny_lm.model, prompts, enc.label_ids(), top_k=3, memory_budget=budget))
    assert 0 < budget.peak <= budget.limit and budget.held == 0
    for i, order in enumerate(orders):
        ref = naive_prompt_logprobs(tiny_lm.model, tiny_lm.tokenizer, sentiment, order, queries)
        np.testing.assert_allclose(np.exp(got[i].label_logprobs), np.exp(ref), atol=1e-6)


def _straight(model, orders, method):
    snapshot = [p.detach().clone() for p in model.parameters()]
    out = []
    for order in orders:
        with torch.no_grad():
            for p, q in zip(model.parameters(), snapshot):
                p.copy_(q)
        losses = train_in_place(model, order, method, seed=0)
        out.append((losses, [p.detach().clone() for p in model.parameters()]))
    with torch.no_grad():
        for p, q in zip(model.parameters(), snapshot):
            p.copy_(q)
    return out


@pytest.mark.parametrize("method", [SGDMethod(kind="sgd", learning_rate=0.05), AdamMethod(kind="adam", learning_rate=1e-2)],
                         ids=["sgd", "adam"])
@pytest.mark.parametrize("room_for", [0, 1, 99])
def test_training_snapshots_fit_the_budget_and_change_no_bit(tiny_lm, sentiment, method, room_for):
    """Room for the entry weights plus 0, 1 or many branch snapshots: always the straight loop's bits."""
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    examples = [TrainingExample(*map(tuple, enc.training_example(d))) for d in sentiment.demos[:4]]
    orders = [[examples[i] for i in p] for p in itertools.permutations(range(4))][:10]
    weights = tensor_bytes(tiny_lm.model.parameters())
    snapshot = weights * (3 if method.kind == "adam" else 1)  # parameters (+ Adam's two moments)
    # while training: Adam's two moments, and one step's transients: the largest parameter's gradient and two
    # temporaries of its size (each parameter steps inside the backward pass and drops its gradient)
    largest = max(p.numel() * p.element_size() for p in tiny_lm.model.parameters())
    training = weights * (2 if method.kind == "adam" else 0) + 3 * largest
    # the entry weights, the training state, the snapshots
    budget = MemoryBudget(weights + training + room_for * snapshot + snapshot // 2)
    expected = _straight(tiny_lm.model, orders, method)
    before = [p.detach().clone() for p in tiny_lm.model.parameters()]
    for index, losses in train_orders(tiny_lm.model, orders, method, seed=0, memory_budget=budget):
        assert losses == expected[index][0]
        assert all(torch.equal(p, q) for p, q in zip(tiny_lm.model.parameters(), expected[index][1]))
        assert budget.held <= budget.limit
    assert budget.held == 0 and budget.peak <= budget.limit
    assert (budget.declined > 0) == (room_for < 3)  # the 4-demo tree has at most 2 branch points on a path
    assert all(torch.equal(p, q) for p, q in zip(tiny_lm.model.parameters(), before))


def test_training_state_pushes_the_entry_weights_to_disk(tiny_lm, sentiment):
    """Room for the entry weights or for Adam's state, not both: the weights go to a file, the numbers stay."""
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    examples = [TrainingExample(*map(tuple, enc.training_example(d))) for d in sentiment.demos[:3]]
    orders = [[examples[i] for i in p] for p in itertools.permutations(range(3))]
    method = AdamMethod(kind="adam", learning_rate=1e-2)
    weights = tensor_bytes(tiny_lm.model.parameters())
    # Adam's two moments, and the largest parameter's gradient and two temporaries of its size
    training = 2 * weights + 3 * max(p.numel() * p.element_size() for p in tiny_lm.model.parameters())
    budget = MemoryBudget(training + weights // 2)
    snapshot = WeightSnapshot(tiny_lm.model, budget)
    assert not snapshot.on_disk and budget.held == weights
    expected = _straight(tiny_lm.model, orders, method)
    for index, losses in train_orders(tiny_lm.model, orders, method, seed=0, snapshot=snapshot, memory_budget=budget):
        assert snapshot.on_disk and budget.held == training
        assert losses == expected[index][0]
        assert all(torch.equal(p, q) for p, q in zip(tiny_lm.model.parameters(), expected[index][1]))
    assert budget.held == 0 and not budget.notes and budget.peak <= budget.limit
    snapshot.close()


def test_entry_weights_spill_to_disk_when_they_do_not_fit(tiny_lm, sentiment):
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    examples = [TrainingExample(*map(tuple, enc.training_example(d))) for d in sentiment.demos[:3]]
    orders = [[examples[i] for i in p] for p in itertools.permutations(range(3))]
    method = SGDMethod(kind="sgd", learning_rate=0.05)
    expected = _straight(tiny_lm.model, orders, method)
    budget = MemoryBudget(1)
    snapshot = WeightSnapshot(tiny_lm.model, budget)
    assert snapshot.on_disk and budget.held == 0 and not budget.notes
    path = snapshot._path
    for index, losses in train_orders(tiny_lm.model, orders, method, seed=0, snapshot=snapshot, memory_budget=budget):
        assert losses == expected[index][0]
        assert all(torch.equal(p, q) for p, q in zip(tiny_lm.model.parameters(), expected[index][1]))
    # the gradients are held anyway (there is no slower way to train), and the budget says so
    assert budget.held == 0 and budget.notes and "more than the memory budget" in budget.notes[0]
    snapshot.close()
    import os

    assert not os.path.exists(path)


def test_study_records_its_budget_and_peak(tmp_path, tiny_lm):
    """A study under a tiny budget gives the same records as under the default, and says what it held."""
    from hyptest.workflows.study import run_study
    from hyptest.study import load_study

    from .conftest import TINY_STUDY

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(TINY_STUDY)
    b.write_text(TINY_STUDY.replace("analysis:", "executor: {memory_budget: 1kB}\nanalysis:"))
    runs = {}
    for path in (a, b):
        spec, text = load_study(path)
        runs[path.stem] = run_study(spec, text, out_dir=tmp_path / path.stem)
    import pandas as pd

    def records(name):
        units = sorted((tmp_path / name / "units").glob("*.parquet"))
        return pd.concat([pd.read_parquet(u) for u in units]).sort_values(["unit_key", "query_id"])

    pd.testing.assert_frame_equal(records("a").reset_index(drop=True), records("b").reset_index(drop=True))
    prov = json.loads((tmp_path / "b" / "results.json").read_text())["provenance"]["memory"]
    (held,) = prov["budget"].values()
    assert held["limit_bytes"] == 1000 and held["declined"] > 0 and held["entry_weights"] == "disk"
    assert prov["peak_resident_bytes"] > 0
    default = json.loads((tmp_path / "a" / "results.json").read_text())["provenance"]["memory"]["budget"]
    assert next(iter(default.values()))["limit_bytes"] == 3 << 29


def test_finished_walk_lets_go_of_the_entry_weights_without_the_cycle_collector(tiny_lm, sentiment):
    """A walk's closures form a reference cycle; once the walk ends, nothing in it may keep the entry copy alive."""
    import gc
    import weakref

    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    examples = [TrainingExample(*map(tuple, enc.training_example(d))) for d in sentiment.demos[:3]]
    orders = [[examples[i] for i in p] for p in itertools.permutations(range(3))]
    snapshot = WeightSnapshot(tiny_lm.model, MemoryBudget(1 << 30))
    saved = weakref.ref(snapshot.saved(next(tiny_lm.model.parameters())))
    gc.disable()
    try:
        for _ in train_orders(tiny_lm.model, orders, SGDMethod(kind="sgd", learning_rate=0.05), seed=0,
                              snapshot=snapshot, max_snapshots=2):
            pass
        snapshot.spill()  # the snapshot lets go of its copy: the walk must hold none either
        assert saved() is None
    finally:
        gc.enable()
        snapshot.close()


_MAPPED_PROBE = """
import ctypes
import torch
from hyptest.collect.scoring import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
assert reuse_freed_memory(keep_bytes=64 << 20, map_from=4 << 20)
before = libc.mallinfo2().hblkhd
big = torch.empty(8 << 20, dtype=torch.uint8)
with_big = libc.mallinfo2().hblkhd
small = torch.empty(1 << 20, dtype=torch.uint8)
with_small = libc.mallinfo2().hblkhd
del big
print(before, with_big, with_small, libc.mallinfo2().hblkhd)
"""


def test_blocks_from_map_from_up_get_their_own_mapping_and_go_back_when_freed():
    """glibc's own count of mapped bytes (mallinfo2) sees the large block mapped, the small one not.

    In a fresh process: in a long one, a large enough free chunk left in the heap serves the block
    before any new mapping is considered.
    """
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    out = subprocess.run([sys.executable, "-c", _MAPPED_PROBE], capture_output=True, text=True, check=True)
    before, with_big, with_small, after = map(int, out.stdout.split())
    assert with_big >= before + (8 << 20)  # the 8 MiB block has its own mapping
    assert with_small < before + (9 << 20)  # the 1 MiB one came from the heap
    assert after < before + (1 << 20)  # freeing the large block unmapped it
