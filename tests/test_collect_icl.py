"""The batched, cache-sharing ICL scorer equals the naive whole-prompt loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.scoring import score_orders, score_prompts

from ._naive import label_word_ids, naive_prompt_logprobs, naive_topk, prompt_string, whole_prompt_ids


def _collect(lm, task, demos, queries, **kwargs):
    enc = PromptEncoder(lm.tokenizer, task)
    ((_, scores),) = score_prompts(lm.model, [enc.order_prompts(demos, queries)], enc.label_ids(), **kwargs)
    return scores


@pytest.mark.parametrize("task_name", ["sentiment", "topic"])
@pytest.mark.parametrize("n_demos", [0, 1, 3])
def test_batched_equals_naive(tiny_lm, task_name, n_demos, request):
    task = request.getfixturevalue(task_name)
    demos = list(task.demos[:n_demos])
    queries = list(task.queries[:5])
    labels = PromptEncoder(tiny_lm.tokenizer, task).label_ids()
    assert min(len(lab) for lab in labels) > 1  # byte tokenizer: multi-token label words
    scores = _collect(tiny_lm, task, demos, queries, top_k=7, batch_size=4)
    ref = naive_prompt_logprobs(tiny_lm.model, tiny_lm.tokenizer, task, demos, queries)
    np.testing.assert_allclose(np.exp(scores.label_logprobs), np.exp(ref), atol=1e-6)
    np.testing.assert_allclose(scores.label_logprobs, ref, atol=1e-4)
    for i, ids in enumerate(whole_prompt_ids(tiny_lm.tokenizer, task, demos, queries)):
        top_ids, probs = naive_topk(tiny_lm.model, [], ids, 7)
        np.testing.assert_allclose(scores.topk_probs[i], probs, atol=1e-6)
        assert set(scores.topk_ids[i][:3]) == set(top_ids[:3])


def test_shared_label_prefix(tiny_lm):
    """Labels that share leading tokens ("yes" / "yellow") are scored from distinct contexts."""
    from hyptest.tasks import Example, Task

    task = Task(
        name="t", input_template="Q: {text}\nA:", label_words={"a": " yes", "b": " yellow", "c": " y"},
        demos=(Example("d1", "one", "a"), Example("d2", "two", "b")), queries=(Example("q1", "three", "c"),),
    )
    scores = _collect(tiny_lm, task, list(task.demos), list(task.queries), top_k=3)
    ref = naive_prompt_logprobs(tiny_lm.model, tiny_lm.tokenizer, task, list(task.demos), list(task.queries))
    np.testing.assert_allclose(scores.label_logprobs, ref, atol=1e-5)


def test_prompt_ids_are_the_whole_string(tiny_lm, sentiment):
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    a, b, q = sentiment.demos[0], sentiment.demos[1], sentiment.queries[0]
    ids = enc.prompt_ids([a, b], q)
    assert ids == list(tiny_lm.tokenizer(prompt_string(sentiment, [a, b], q)).input_ids)
    text = sentiment.format_demo(a) + "\n\n" + sentiment.format_demo(b) + "\n\n" + sentiment.format_input(q.text)
    assert tiny_lm.tokenizer.decode(ids) == text


# --------------------------------------------------------------------------- a tokenizer that merges across pieces


def merging_lm(seed: int = 0):
    """A byte-level BPE tokenizer whose merges cross demo boundaries, with BOS, and a tiny Llama for it.

    Merges (by rank): ``"\\n" + "R"`` first, then ``"\\n\\n"`` and ``" p" + "o"``.
    ``"...positive\\n\\n"`` tokenised alone ends in ``'\\n\\n'``, but inside the
    whole prompt ``"...positive\\n\\nReview"`` it is ``'\\n', '\\nR'``: pieces and
    whole strings differ, as with SmolLM2's ``'\\n\\n'`` vs ``'\\n', '\\n'``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["<s>"] = len(vocab)
    merges = [("Ċ", "R"), ("Ċ", "Ċ"), ("Ġ", "p"), ("Ġp", "o")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="<s>", pad_token="<s>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=vocab["<s>"], eos_token_id=vocab["<s>"], pad_token_id=vocab["<s>"],
                         tie_word_embeddings=False)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    finally:
        torch.random.set_rng_state(state)

    class LM:
        pass

    lm = LM()
    lm.model, lm.tokenizer = model, tokenizer
    return lm


def _review_task():
    from hyptest.tasks import Example, Task

    demos = (Example("d1", "great fun", "positive"), Example("d2", "dull plot", "negative"),
             Example("d3", "a joy", "positive"))
    queries = (Example("q1", "boring", "negative"), Example("q2", "lovely", "positive"),
               Example("q3", "poor acting", "negative"))
    return Task(name="review", input_template="Review: {text}\nSentiment:",
                label_words={"negative": " negative", "positive": " positive"}, demos=demos, queries=queries,
                demo_separator="\n\n")


def _renorm(logp):
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def test_collector_equals_the_whole_prompt_loop_where_pieces_tokenise_differently():
    lm = merging_lm()
    task = _review_task()
    tok = lm.tokenizer
    demos, queries = list(task.demos), list(task.queries)
    assert tok("x").input_ids[0] == tok.bos_token_id  # the tokenizer adds BOS
    # the premise: tokenising pieces separately gives other ids than the whole string
    pieces = [tok.bos_token_id] + sum((tok(task.format_demo(d) + "\n\n", add_special_tokens=False).input_ids
                                       for d in demos), [])
    whole = whole_prompt_ids(tok, task, demos, queries[:1])[0]
    piecewise = pieces + tok(task.format_input(queries[0].text), add_special_tokens=False).input_ids
    assert piecewise != whole

    enc = PromptEncoder(tok, task)
    perms = list(itertools.permutations(range(3)))
    orders = [[demos[i] for i in p] for p in perms] + [[]]
    got = dict(score_prompts(lm.model, [enc.order_prompts(o, queries) for o in orders], enc.label_ids(), top_k=4))
    labels = label_word_ids(tok, task)
    assert enc.label_ids() == labels and min(len(lab) for lab in labels) > 1
    worst_piecewise = 0.0
    for i, order in enumerate(orders):
        ref = naive_prompt_logprobs(lm.model, tok, task, order, queries)
        np.testing.assert_allclose(_renorm(got[i].label_logprobs), _renorm(ref), atol=1e-5)
        np.testing.assert_allclose(got[i].label_logprobs, ref, atol=1e-4)
        for qi, ids in enumerate(whole_prompt_ids(tok, task, order, queries)):
            np.testing.assert_allclose(got[i].topk_probs[qi], naive_topk(lm.model, [], ids, 4)[1], atol=1e-5)
        # the old piecewise prompts, through the id-level scorer, score differently
        if order:
            old_pieces = [tok(task.format_demo(d) + "\n\n", add_special_tokens=False).input_ids for d in order]
            old_q = [tok(task.format_input(q.text), add_special_tokens=False).input_ids for q in queries]
            ((_, old),) = score_orders(lm.model, [tok.bos_token_id], [old_pieces], old_q, labels, top_k=4)
            worst_piecewise = max(worst_piecewise, float(np.abs(old.label_logprobs - ref).max()))
    assert worst_piecewise > 1e-2  # log-prob: so the comparisons above can fail


def test_demo_cuts_sit_before_a_merge_that_crosses_the_boundary():
    lm = merging_lm()
    task = _review_task()
    enc = PromptEncoder(lm.tokenizer, task)
    demos, queries = list(task.demos), list(task.queries)
    got = enc.order_prompts(demos, queries)
    tok = lm.tokenizer
    for cut in got.cuts[1:]:
        # the token at each demo cut is the '\n' whose partner merged into '\nR' of the next "Review"
        assert tok.convert_ids_to_tokens(got.prompts[0][cut: cut + 2]) == ["Ċ", "ĊR"]
    assert got.cuts[0] == 1  # BOS alone: no instruction
    # an order is the same bits alone as with its siblings (cuts depend on the order only)
    orders = [enc.order_prompts([demos[i] for i in p], queries) for p in itertools.permutations(range(3))]
    together = dict(score_prompts(lm.model, orders, enc.label_ids(), top_k=2))
    ((_, alone),) = score_prompts(lm.model, [orders[4]], enc.label_ids(), top_k=2)
    assert np.array_equal(alone.label_logprobs, together[4].label_logprobs)
