"""Shared-prefix ICL and shared-step GD collectors equal the naive loops (tiny model, fast)."""

from __future__ import annotations

import copy
import functools
import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from hyptest.collect import gd as gd_module
from hyptest.collect import scoring
from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.gd import TrainingExample, WeightSnapshot, train_in_place, train_orders
from hyptest.collect.scoring import score_orders, score_prompts, score_queries, set_tf32
from hyptest.study import AdamMethod, GDMethod, SGDMethod

from ._naive import (label_word_ids, manual_adam, manual_sgd, naive_label_logprobs, naive_prompt_logprobs,
                     naive_topk, whole_prompt_ids)


def _all_orders(enc, task, n, queries):
    """Every order of the first ``n`` demos as whole-prompt ids (one per query) with their cut points."""
    demos = list(task.demos[:n])
    perms = list(itertools.permutations(range(n)))
    return demos, perms, [enc.order_prompts([demos[i] for i in p], queries) for p in perms]


def _naive(model, tokenizer, task, demos, queries):
    """The research loop: whole prompt strings built in tests/_naive.py, one forward per prompt."""
    return naive_prompt_logprobs(model, tokenizer, task, demos, queries)


@pytest.mark.parametrize("task_name", ["sentiment", "topic"])
def test_score_prompts_equals_naive_for_every_order(tiny_lm, task_name, request):
    task = request.getfixturevalue(task_name)
    enc = PromptEncoder(tiny_lm.tokenizer, task)
    queries = list(task.queries[:3])
    demos, perms, orders = _all_orders(enc, task, 3, queries)
    labels = enc.label_ids()
    assert min(len(lab) for lab in labels) > 1  # byte tokenizer: multi-token label words
    got = dict(score_prompts(tiny_lm.model, orders, labels, top_k=5))
    assert sorted(got) == list(range(len(perms)))
    for i, perm in enumerate(perms):
        ordered = [demos[j] for j in perm]
        ref = _naive(tiny_lm.model, tiny_lm.tokenizer, task, ordered, queries)
        np.testing.assert_allclose(np.exp(got[i].label_logprobs), np.exp(ref), atol=1e-6)
        for qi, ids in enumerate(whole_prompt_ids(tiny_lm.tokenizer, task, ordered, queries)):
            top_ids, probs = naive_topk(tiny_lm.model, [], ids, 5)
            np.testing.assert_allclose(got[i].topk_probs[qi], probs, atol=1e-6)
            assert set(got[i].topk_ids[qi][:3]) == set(top_ids[:3])


def test_score_prompts_with_an_instruction_head(tiny_lm):
    from hyptest.tasks import Example, Task

    task = Task(
        name="t", input_template="Q: {text}\nA:", label_words={"a": " yes", "b": " no"},
        demos=(Example("d1", "one", "a"), Example("d2", "two", "b")), queries=(Example("q1", "three", "a"),
                                                                              Example("q2", "four four", "b")),
        instruction="Answer yes or no.",
    )
    enc = PromptEncoder(tiny_lm.tokenizer, task)
    assert len(enc.head_ids()) > 0
    queries = list(task.queries)
    demo_lists = [list(task.demos), list(task.demos[::-1]), []]
    orders = [enc.order_prompts(d, queries) for d in demo_lists]
    got = dict(score_prompts(tiny_lm.model, orders, enc.label_ids(), top_k=3))
    for i, demos in enumerate(demo_lists):
        ref = _naive(tiny_lm.model, tiny_lm.tokenizer, task, demos, queries)
        np.testing.assert_allclose(np.exp(got[i].label_logprobs), np.exp(ref), atol=1e-6)


def test_score_orders_of_id_pieces_equals_naive(tiny_lm, sentiment):
    """The id-level entry point: prompts given as head + pieces + query ids."""
    tok = tiny_lm.tokenizer
    pieces = [list(tok(sentiment.format_demo(d) + "\n\n").input_ids) for d in sentiment.demos[:2]]
    queries = [list(tok(sentiment.format_input(q.text)).input_ids) for q in sentiment.queries[:3]]
    labels = label_word_ids(tok, sentiment)
    orders = [pieces, pieces[::-1], []]
    got = dict(score_orders(tiny_lm.model, [], orders, queries, labels, top_k=3))
    for i, order in enumerate(orders):
        ref = naive_label_logprobs(tiny_lm.model, sum(order, []), queries, labels)
        np.testing.assert_allclose(np.exp(got[i].label_logprobs), np.exp(ref), atol=1e-6)


def test_order_prompts_are_whole_strings_with_demo_cuts(tiny_lm, sentiment):
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    demos, queries = list(sentiment.demos[:3]), list(sentiment.queries[:2])
    got = enc.order_prompts(demos, queries)
    assert [list(p) for p in got.prompts] == whole_prompt_ids(tiny_lm.tokenizer, sentiment, demos, queries)
    # byte-level: a cut after each demo with its separator (no BOS, no instruction: no head cut)
    text = ""
    expected = []
    for d in demos:
        text += sentiment.format_demo(d) + "\n\n"
        expected.append(len(tiny_lm.tokenizer(text).input_ids))
    assert got.cuts == tuple(expected)


@pytest.mark.parametrize("row_tokens", [1, 24, 4096])
@pytest.mark.parametrize("batch_size", [None, 1, 3])
def test_packing_and_batching_do_not_change_scores(tiny_lm, sentiment, row_tokens, batch_size):
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    demos, queries = list(sentiment.demos[:2]), list(sentiment.queries[:5])
    ((_, got),) = score_prompts(tiny_lm.model, [enc.order_prompts(demos, queries)], enc.label_ids(), top_k=4,
                                row_tokens=row_tokens, batch_size=batch_size)
    ref = _naive(tiny_lm.model, tiny_lm.tokenizer, sentiment, demos, queries)
    np.testing.assert_allclose(np.exp(got.label_logprobs), np.exp(ref), atol=1e-6)


def _fewest_rows_then_narrowest(lengths, capacity):
    """Exhaustive: over every assignment of segments to rows, the fewest rows of <= capacity, then the narrowest widest row."""
    best = None
    n = len(lengths)
    for assign in itertools.product(range(n), repeat=n):
        loads = [0] * n
        for i, r in enumerate(assign):
            loads[r] += lengths[i]
        used = [x for x in loads if x]
        if max(used) > capacity:
            continue
        key = (len(used), max(used))
        best = key if best is None or key < best else best
    return best


_RANDOM_LENGTHS = [list(np.random.default_rng(seed).integers(1, 129, size=int(n)))
                   for seed, n in enumerate(np.random.default_rng(99).integers(2, 7, size=30))]


@pytest.mark.parametrize("lengths", [[100, 20, 20, 20, 20, 20], [30, 29, 20, 14, 12, 9], [7, 7, 7, 7, 6, 5],
                                     [120, 90, 40, 33, 21, 2], *_RANDOM_LENGTHS])
def test_packed_rows_are_few_and_even(lengths):
    """Rows of segments: each segment once, no more rows than needed, widest row as narrow as an exhaustive search
    finds for these small cases (padding to the widest row was 14 % of the default study's scoring slots)."""
    capacity = 128
    rows = scoring._pack(lengths, capacity)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    widths = [sum(lengths[i] for i in row) for row in rows]
    assert widths == sorted(widths, reverse=True)
    assert (len(rows), max(widths)) == _fewest_rows_then_narrowest(lengths, capacity)


def test_flat_mode_equals_naive(tiny_lm, sentiment, monkeypatch):
    """Attention implementations without custom 4-D masks get one right-padded row per label context."""
    monkeypatch.setattr(scoring, "_tree_attention_ok", lambda model: False)
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    queries = list(sentiment.queries[:3])
    demos, perms, orders = _all_orders(enc, sentiment, 2, queries)
    got = dict(score_prompts(tiny_lm.model, orders, enc.label_ids(), top_k=3, batch_size=2))
    for i, perm in enumerate(perms):
        ref = _naive(tiny_lm.model, tiny_lm.tokenizer, sentiment, [demos[j] for j in perm], queries)
        np.testing.assert_allclose(np.exp(got[i].label_logprobs), np.exp(ref), atol=1e-6)


def test_an_order_is_the_same_bits_whichever_orders_come_with_it(tiny_lm, sentiment):
    """Resume: an order scored alone equals the same order scored within all its siblings, bitwise."""
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    queries = list(sentiment.queries[:4])
    _, perms, orders = _all_orders(enc, sentiment, 3, queries)
    together = dict(score_prompts(tiny_lm.model, orders, enc.label_ids(), top_k=3))
    for i in (0, 3, 5):
        ((_, alone),) = score_prompts(tiny_lm.model, [orders[i]], enc.label_ids(), top_k=3)
        assert np.array_equal(alone.label_logprobs, together[i].label_logprobs)
        assert np.array_equal(alone.topk_probs, together[i].topk_probs)


def test_labels_sharing_leading_tokens_share_a_token_tree(tiny_lm):
    from hyptest.tasks import Example, Task

    task = Task(
        name="t", input_template="Q: {text}\nA:", label_words={"a": " yes", "b": " yellow", "c": " y"},
        demos=(Example("d1", "one", "a"),), queries=(Example("q1", "three", "c"), Example("q2", "five", "a")),
    )
    enc = PromptEncoder(tiny_lm.tokenizer, task)
    labels = enc.label_ids()
    query0 = enc.prompt_ids([], task.queries[0])
    seg = scoring._tree_segment(0, query0, labels)
    # " yes" and " yellow" share " ye": the tree holds " ye" + "s"-context... once each, no duplicate tokens
    assert len(seg.tokens) == len(query0) + len("yellow")  # " yellow" minus its last byte, " yes" adds none
    queries = list(task.queries)
    ((_, got),) = score_prompts(tiny_lm.model, [enc.order_prompts(list(task.demos), queries)], labels, top_k=3)
    np.testing.assert_allclose(got.label_logprobs, _naive(tiny_lm.model, tiny_lm.tokenizer, task, list(task.demos),
                                                          queries), atol=1e-5)


# --------------------------------------------------------------------------- out-of-memory back-off


def _oom_after(monkeypatch, model, limit, error):
    base = model.get_decoder()
    real = base.forward
    sizes: list[int] = []

    @functools.wraps(real)
    def forward(*args, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        sizes.append(rows)
        if rows > limit:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(base, "forward", forward)
    return sizes


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("fake: out of memory"),
                                   RuntimeError("CUDA error: out of memory (fake)")])
def test_out_of_memory_halves_the_batch_and_retries(tiny_lm, sentiment, monkeypatch, error):
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    demos, perms, orders = _all_orders(enc, sentiment, 2, list(sentiment.queries[:8]))
    expected = dict(score_prompts(tiny_lm.model, orders, enc.label_ids(), top_k=3, row_tokens=1, batch_size=8))
    sizes = _oom_after(monkeypatch, tiny_lm.model, 3, error)
    got = dict(score_prompts(tiny_lm.model, orders, enc.label_ids(), top_k=3, row_tokens=1, batch_size=8))
    assert 8 in sizes and 4 in sizes  # tried 8, then 4, and settled on 2
    assert max(s for s in sizes[sizes.index(2):]) <= 2  # the smaller size is kept for the next orders
    for i in expected:
        np.testing.assert_allclose(got[i].label_logprobs, expected[i].label_logprobs, atol=1e-6)


def test_out_of_memory_at_one_row_and_other_errors_propagate(tiny_lm, sentiment, monkeypatch):
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    queries = [enc.prompt_ids([], q) for q in sentiment.queries[:2]]
    _oom_after(monkeypatch, tiny_lm.model, 0, torch.OutOfMemoryError("fake"))
    with pytest.raises(torch.OutOfMemoryError):
        score_queries(tiny_lm.model, [], queries, enc.label_ids(), batch_size=4)
    monkeypatch.undo()
    _oom_after(monkeypatch, tiny_lm.model, 0, RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        score_queries(tiny_lm.model, [], queries, enc.label_ids(), batch_size=4)


def test_automatic_batch_size_respects_memory(tiny_lm, sentiment, monkeypatch):
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    queries = [enc.prompt_ids([], q) for q in sentiment.queries[:6]]
    expected = score_queries(tiny_lm.model, [], queries, enc.label_ids(), top_k=3, row_tokens=1)
    sizes = _oom_after(monkeypatch, tiny_lm.model, 10**9, RuntimeError("unused"))
    # a 1-byte budget has room for no row: one row at a time, still the same numbers
    got = score_queries(tiny_lm.model, [], queries, enc.label_ids(), top_k=3, row_tokens=1, memory_budget=1)
    assert set(sizes) == {1}
    np.testing.assert_allclose(got.label_logprobs, expected.label_logprobs, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"top_k": 0}, "top_k"), ({"batch_size": 0}, "batch_size"), ({"row_tokens": 0}, "row_tokens"),
])
def test_bad_arguments_are_named(tiny_lm, kwargs, match):
    with pytest.raises(ValueError, match=match):
        score_queries(tiny_lm.model, [], [[1, 2]], [[3]], **kwargs)
    with pytest.raises(ValueError, match="query_ids"):
        score_queries(tiny_lm.model, [], [], [[3]])
    with pytest.raises(ValueError, match="orders"):
        list(score_orders(tiny_lm.model, [], [], [[1]], [[3]]))


# --------------------------------------------------------------------------- GD: shared steps


def _examples(tiny_lm, task, n):
    enc = PromptEncoder(tiny_lm.tokenizer, task)
    return enc, [TrainingExample(*map(tuple, enc.training_example(d))) for d in task.demos[:n]]


def _straight(model, orders, method, seed=0):
    """Each order from the entry weights with the straight loop; the trained parameters of each."""
    snapshot = WeightSnapshot(model)
    out = []
    try:
        for order in orders:
            snapshot.restore()
            losses = train_in_place(model, order, method, seed=seed)
            out.append((losses, [p.detach().clone() for p in model.parameters()]))
    finally:
        snapshot.restore()
    return out


METHODS = [
    SGDMethod(kind="sgd", learning_rate=0.05),
    SGDMethod(kind="sgd", learning_rate=0.05, epochs=2),
    AdamMethod(kind="adam", learning_rate=1e-2),
    GDMethod(kind="gd", learning_rate=0.05, steps=2),
]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.kind}-{getattr(m, 'epochs', 1)}")
@pytest.mark.parametrize("max_snapshots", [None, 0])
def test_train_orders_is_bitwise_the_straight_loop(tiny_lm, sentiment, method, max_snapshots):
    _, examples = _examples(tiny_lm, sentiment, 3)
    orders = [[examples[i] for i in p] for p in itertools.permutations(range(3))]
    before = [p.detach().clone() for p in tiny_lm.model.parameters()]
    expected = _straight(tiny_lm.model, orders, method)
    seen = []
    for index, losses in train_orders(tiny_lm.model, orders, method, seed=0, max_snapshots=max_snapshots):
        seen.append(index)
        exp_losses, exp_params = expected[index]
        assert losses == exp_losses
        assert all(torch.equal(p, q) for p, q in zip(tiny_lm.model.parameters(), exp_params))
        assert all(p.grad is None for p in tiny_lm.model.parameters())
    assert sorted(seen) == list(range(len(orders)))
    assert all(torch.equal(p, q) for p, q in zip(tiny_lm.model.parameters(), before))  # restored on exit


@pytest.mark.parametrize(("method", "manual"), [
    (SGDMethod(kind="sgd", learning_rate=0.05), lambda m, ex: manual_sgd(m, ex, 0.05)),
    (AdamMethod(kind="adam", learning_rate=1e-3), lambda m, ex: manual_adam(m, ex, 1e-3)),
])
def test_train_orders_equals_explicit_loops(tiny_lm, sentiment, method, manual):
    enc, examples = _examples(tiny_lm, sentiment, 3)
    raw = [enc.training_example(d) for d in sentiment.demos[:3]]
    perms = list(itertools.permutations(range(3)))
    orders = [[examples[i] for i in p] for p in perms]
    # the explicit loops of tests/_naive.py, each on a fresh copy of the pretrained weights
    pretrained = copy.deepcopy(tiny_lm.model)
    got = {}
    for index, _ in train_orders(tiny_lm.model, orders, method, seed=0):
        got[index] = [p.detach().clone() for p in tiny_lm.model.parameters()]
    for index, perm in enumerate(perms):
        reference = copy.deepcopy(pretrained)
        manual(reference, [raw[i] for i in perm])
        for p, q in zip(got[index], reference.parameters()):
            torch.testing.assert_close(p, q, atol=2e-6, rtol=1e-4)


def test_train_orders_shares_steps(tiny_lm, sentiment, monkeypatch):
    _, examples = _examples(tiny_lm, sentiment, 4)
    orders = [[examples[i] for i in p] for p in itertools.permutations(range(4))]
    calls = []
    real = gd_module._step
    monkeypatch.setattr(gd_module, "_step", lambda *a: calls.append(1) or real(*a))
    walk = train_orders(tiny_lm.model, orders, SGDMethod(kind="sgd", learning_rate=0.05), seed=0)
    next(walk)
    assert len(calls) == 4  # the first order is ready after its own 4 steps
    for _ in walk:
        pass
    assert len(calls) == 4 + 12 + 24 + 24  # sum over depths of N!/(N-k)!, not 4 * 24 = 96


def test_closing_the_walk_restores_the_weights(tiny_lm, sentiment):
    _, examples = _examples(tiny_lm, sentiment, 3)
    before = [p.detach().clone() for p in tiny_lm.model.parameters()]
    walk = train_orders(tiny_lm.model, [examples, examples[::-1]], AdamMethod(kind="adam", learning_rate=1e-2),
                        seed=0)
    next(walk)
    assert any(not torch.equal(p, q) for p, q in zip(tiny_lm.model.parameters(), before))
    walk.close()
    assert all(torch.equal(p, q) for p, q in zip(tiny_lm.model.parameters(), before))


# --------------------------------------------------------------------------- units: run_group == run


@pytest.fixture
def tiny_units(tiny_lm, tiny_study_file):
    from hyptest.workflows.study import load_tasks, plan_study
    from hyptest.study import load_study

    study, _ = load_study(tiny_study_file)
    tasks = load_tasks(study)
    units, _ = plan_study(study, tasks)
    return study, tasks, units


@pytest.mark.parametrize("method", ["icl", "sgd", "adam", "gd"])
def test_run_group_is_bitwise_the_one_unit_run(tiny_lm, tiny_units, method):
    from hyptest.collect.executors import group_units
    from hyptest.collect.units import UnitRunner

    study, tasks, units = tiny_units
    group = [g for g in group_units(units) if g.method == method][0]
    runner = UnitRunner(tiny_lm, tasks, study)
    before = [p.detach().clone() for p in tiny_lm.model.parameters()]
    grouped = dict((u.key, rows) for u, rows in runner.run_group(group.units))
    assert set(grouped) == {u.key for u in group.units}
    for unit in group.units:
        alone = runner.run(unit)
        pd.testing.assert_frame_equal(grouped[unit.key], alone, check_exact=True)
        assert (alone["order_id"] == unit.order_id).all()
    assert all(torch.equal(p, q) for p, q in zip(tiny_lm.model.parameters(), before))


def test_run_group_yields_each_unit_when_its_order_is_done(tiny_lm, tiny_units):
    from hyptest.collect.executors import group_units
    from hyptest.collect.units import UnitRunner

    study, tasks, units = tiny_units
    group = [g for g in group_units(units) if g.method == "icl"][0]
    runner = UnitRunner(tiny_lm, tasks, study)
    stream = runner.run_group(group.units)
    unit, rows = next(stream)
    assert len(rows) == len(unit.query_ids) and rows["unit_key"].iloc[0] == unit.key
    stream.close()


def test_set_tf32_sets_the_flags():
    set_tf32(True)
    try:
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        set_tf32(False)
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_scores_and_training_match_cpu(tiny_lm, sentiment, dtype):
    set_tf32(False)
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    queries = list(sentiment.queries[:4])
    demos, perms, orders = _all_orders(enc, sentiment, 3, queries)
    gpu = copy.deepcopy(tiny_lm.model).to("cuda", dtype=dtype)
    got = dict(score_prompts(gpu, orders, enc.label_ids(), top_k=3))
    atol = 1e-5 if dtype == torch.float32 else 3e-2
    for i, perm in enumerate(perms):
        ref = _naive(tiny_lm.model, tiny_lm.tokenizer, sentiment, [demos[j] for j in perm], queries)
        np.testing.assert_allclose(np.exp(got[i].label_logprobs), np.exp(ref), atol=atol)
    if dtype != torch.float32:
        return
    _, examples = _examples(tiny_lm, sentiment, 3)
    train = [[examples[i] for i in p] for p in perms]
    # SGD: well conditioned (Adam divides by sqrt(v), which magnifies rounding where gradients are ~0)
    method = SGDMethod(kind="sgd", learning_rate=0.05)
    expected = _straight(tiny_lm.model, train, method)
    for index, losses in train_orders(gpu, train, method, seed=0, device="cuda"):
        np.testing.assert_allclose(losses, expected[index][0], rtol=1e-4)
        for p, q in zip(gpu.parameters(), expected[index][1]):
            torch.testing.assert_close(p.cpu(), q, atol=1e-5, rtol=1e-4)


def test_lm_head_on_few_rows_is_padded_and_exact(tiny_lm):
    from hyptest.collect.scoring import MIN_HEAD_ROWS, lm_head_logits

    hidden = torch.randn(MIN_HEAD_ROWS + 3, tiny_lm.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = tiny_lm.model.get_output_embeddings()(hidden)
        for rows in (1, 2, MIN_HEAD_ROWS + 3):
            got = lm_head_logits(tiny_lm.model, hidden[:rows])
            assert got.shape == (rows, full.shape[1])
            torch.testing.assert_close(got, full[:rows], atol=1e-6, rtol=1e-6)


def test_adam_steps_with_the_fused_kernel_and_matches_the_textbook_update():
    """Adam runs torch's fused kernel on CPU (6x faster per step on SmolLM2 than the single-tensor loop), and three
    of its steps equal Adam written out by hand (Kingma & Ba, bias-corrected) to float32 rounding."""
    method = AdamMethod(kind="adam", learning_rate=1e-2)
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(50, 7, generator=gen).requires_grad_()
    grads = [torch.randn(50, 7, generator=gen) for _ in range(3)]
    opt = gd_module._optimizer([p], method)
    assert opt.defaults["fused"] is True
    ref = p.detach().double().clone()
    m = torch.zeros_like(ref)
    v = torch.zeros_like(ref)
    b1, b2 = method.betas
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        g = g.double()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref -= method.learning_rate * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + method.eps)
    np.testing.assert_allclose(p.detach().double().numpy(), ref.numpy(), rtol=0, atol=1e-6)
