"""The real embedded model (SmolLM2-135M-Instruct): slow, run in CI."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    from hyptest.models.embedded import load_embedded

    return load_embedded(device="cpu")


def test_identity_and_size(smol):
    from hyptest.models.embedded import embedded_gguf_path
    from hyptest._util import file_sha256

    assert smol.identity["sha256"] == file_sha256(embedded_gguf_path())
    assert smol.n_parameters == 134_515_008  # SmolLM2-135M with tied embeddings


def test_icl_scorer_equals_naive_loop_and_icl_works(smol, sentiment):
    from hyptest.collect.encoding import PromptEncoder
    from hyptest.collect.scoring import score_prompts

    from ._naive import naive_prompt_logprobs

    enc = PromptEncoder(smol.tokenizer, sentiment)
    demos = list(sentiment.demos[:4])
    queries = list(sentiment.queries[:6])
    ((_, scores),) = score_prompts(smol.model, [enc.order_prompts(demos, queries)], enc.label_ids(), top_k=5,
                                   batch_size=4)
    ref = naive_prompt_logprobs(smol.model, smol.tokenizer, sentiment, demos, queries)
    np.testing.assert_allclose(np.exp(scores.label_logprobs), np.exp(ref), atol=1e-4)
    # in-context learning really happens: the renormalised P(gold) is well above chance
    all_q = list(sentiment.queries[:24])
    ((_, full),) = score_prompts(smol.model, [enc.order_prompts(demos, all_q)], enc.label_ids(), top_k=5)
    probs = np.exp(full.label_logprobs)
    probs /= probs.sum(axis=1, keepdims=True)
    gold = [sentiment.labels.index(q.label) for q in all_q]
    assert probs[np.arange(len(all_q)), gold].mean() > 0.6


def test_small_study_end_to_end(tmp_path):
    from hyptest.workflows.study import run_study
    from hyptest.study import load_study

    path = tmp_path / "smol.yaml"
    path.write_text(
        "name: smol\nmodels: [smollm2-135m]\ntasks: [sentiment]\n"
        "demos: {n_demos: 2, n_sets: 1, n_orders: 2, n_queries: 4}\n"
        "methods: [{kind: icl}, {kind: gd, learning_rate: 1.0e-3, steps: 1}, {kind: sgd, learning_rate: 1.0e-3}]\n"
        "analysis: {n_resamples: 1000}\n"
    )
    study, text = load_study(path)
    summary = run_study(study, text, out_dir=tmp_path / "run")
    results = json.loads((summary.run_dir / "results.json").read_text())
    assert summary.n_units == 6
    assert {c["method_b"] for c in results["comparisons"]} == {"gd", "sgd"}
    gd = [r for r in results["order_sensitivity"] if r["method"] == "gd"][0]
    assert gd["max_spread"] < 1e-4
    assert results["provenance"]["models"][0]["sha256"]
    assert "SmolLM2" in (summary.run_dir / "report.html").read_text() or "smollm2" in (
        summary.run_dir / "report.html").read_text()


def test_score_prompts_equals_the_whole_prompt_loop_on_every_order(smol, sentiment):
    """The token-trie walk over 6 orders equals one full forward per WHOLE prompt string (research loop).

    With SmolLM2 the separator before "Review" is '\\n', '\\n' in the whole string but '\\n\\n' on its
    own: the old piecewise prompts differ, and the collector must follow the whole string.
    """
    import itertools

    from hyptest.collect.encoding import PromptEncoder
    from hyptest.collect.scoring import score_orders, score_prompts

    from ._naive import naive_prompt_logprobs, naive_topk, whole_prompt_ids

    enc = PromptEncoder(smol.tokenizer, sentiment)
    tok = smol.tokenizer
    demos = list(sentiment.demos[:4])
    perms = list(itertools.permutations(range(4)))[:6]
    queries = list(sentiment.queries[:3])
    labels = enc.label_ids()
    got = dict(score_prompts(smol.model, [enc.order_prompts([demos[i] for i in p], queries) for p in perms],
                             labels, top_k=5))
    assert sorted(got) == list(range(len(perms)))
    piecewise_gap = 0.0
    for i, perm in enumerate(perms):
        ordered = [demos[j] for j in perm]
        ref = naive_prompt_logprobs(smol.model, tok, sentiment, ordered, queries)
        np.testing.assert_allclose(np.exp(got[i].label_logprobs), np.exp(ref), atol=1e-4)
        whole = whole_prompt_ids(tok, sentiment, ordered, queries[:1])[0]
        _, probs = naive_topk(smol.model, [], whole, 5)
        np.testing.assert_allclose(got[i].topk_probs[0], probs, atol=1e-4)
        pieces = [tok(sentiment.format_demo(d) + "\n\n", add_special_tokens=False).input_ids for d in ordered]
        old_q = [tok(sentiment.format_input(q.text), add_special_tokens=False).input_ids for q in queries]
        assert sum(pieces, []) + old_q[0] != whole  # pieces tokenise differently from the whole string
        ((_, old),) = score_orders(smol.model, [], [pieces], old_q, labels, top_k=5)
        piecewise_gap = max(piecewise_gap, float(np.abs(np.exp(old.label_logprobs) - np.exp(ref)).max()))
    assert piecewise_gap > 1e-3  # the comparison above can fail
    # the orders really differ: ICL is order-sensitive on this model
    spread = np.ptp(np.stack([got[i].label_logprobs for i in got]), axis=0).max()
    assert spread > 1e-3


def test_shared_sgd_steps_are_bitwise_the_straight_loop(smol, sentiment):
    """Three orders sharing their first demo: shared steps give the same bits as training each order alone."""
    import torch

    from hyptest.collect.encoding import PromptEncoder
    from hyptest.collect.gd import TrainingExample, WeightSnapshot, train_in_place, train_orders
    from hyptest.study import SGDMethod

    enc = PromptEncoder(smol.tokenizer, sentiment)
    ex = [TrainingExample(*map(tuple, enc.training_example(d))) for d in sentiment.demos[:3]]
    orders = [[ex[0], ex[1], ex[2]], [ex[0], ex[2], ex[1]], [ex[1], ex[0], ex[2]]]
    method = SGDMethod(kind="sgd", learning_rate=3e-4)
    snapshot = WeightSnapshot(smol.model)
    probe = [p for p in smol.model.parameters()][:: 40]  # a spread of tensors, embeddings included
    expected = {}
    try:
        for i, order in enumerate(orders):
            snapshot.restore()
            losses = train_in_place(smol.model, order, method, seed=0)
            expected[i] = (losses, [p.detach().clone() for p in probe])
    finally:
        snapshot.restore()
    seen = set()
    for index, losses in train_orders(smol.model, orders, method, seed=0, snapshot=snapshot):
        seen.add(index)
        assert losses == expected[index][0]
        assert all(torch.equal(p, q) for p, q in zip(probe, expected[index][1]))
    assert seen == {0, 1, 2}


def test_label_loss_gradient_is_as_accurate_as_the_full_logit_loss(smol, sentiment):
    """The LM head on the label position only must not lose precision (small-M BLAS path; see lm_head_logits)."""
    import copy

    import torch

    from hyptest.collect.encoding import PromptEncoder
    from hyptest.collect.gd import TrainingExample, label_loss

    from ._naive import example_loss

    enc = PromptEncoder(smol.tokenizer, sentiment)
    ids, targets = enc.training_example(sentiment.demos[0])

    def grads(model, loss_fn):
        model.zero_grad(set_to_none=True)
        loss_fn(model).backward()
        out = [p.grad.detach().double().clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        return out

    ours = grads(smol.model, lambda m: label_loss(m, [TrainingExample(tuple(ids), tuple(targets))]))
    full = grads(smol.model, lambda m: example_loss(m, ids, targets))
    def float64_loss(m):
        logp = torch.log_softmax(m(torch.tensor([list(ids)])).logits[0], dim=-1)  # float64 model: float64 throughout
        return -sum(logp[t - 1, ids[t]] for t in targets)

    exact = grads(copy.deepcopy(smol.model).double(), float64_loss)

    def rel(g):
        return float(sum(((a - b) ** 2).sum() for a, b in zip(g, exact)).sqrt()
                     / sum((b ** 2).sum() for b in exact).sqrt())

    assert rel(ours) < max(2 * rel(full), 1e-5)
