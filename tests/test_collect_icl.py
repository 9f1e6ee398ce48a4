"""The batched, cache-sharing ICL scorer equals the naive one-prompt loop."""

from __future__ import annotations

import numpy as np
import pytest

from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.scoring import score_queries

from ._naive import naive_label_logprobs, naive_topk


@pytest.mark.parametrize("task_name", ["sentiment", "topic"])
@pytest.mark.parametrize("n_demos", [0, 1, 3])
def test_batched_equals_naive(tiny_lm, task_name, n_demos, request):
    task = request.getfixturevalue(task_name)
    enc = PromptEncoder(tiny_lm.tokenizer, task)
    demos = list(task.demos[:n_demos])
    queries = list(task.queries[:5])
    prefix = enc.prefix_ids(demos)
    qids = [enc.query_ids(q) for q in queries]
    labels = enc.label_ids()
    assert min(len(lab) for lab in labels) > 1  # byte tokenizer: multi-token label words
    scores = score_queries(tiny_lm.model, prefix, qids, labels, top_k=7, batch_size=4)
    ref = naive_label_logprobs(tiny_lm.model, prefix, qids, labels)
    np.testing.assert_allclose(np.exp(scores.label_logprobs), np.exp(ref), atol=1e-6)
    np.testing.assert_allclose(scores.label_logprobs, ref, atol=1e-4)
    for i, q in enumerate(qids):
        ids, probs = naive_topk(tiny_lm.model, prefix, q, 7)
        np.testing.assert_allclose(scores.topk_probs[i], probs, atol=1e-6)
        assert set(scores.topk_ids[i][:3]) == set(ids[:3])


def test_shared_label_prefix(tiny_lm):
    """Labels that share leading tokens ("yes" / "yellow") are scored from distinct contexts."""
    from hyptest.tasks import Example, Task

    task = Task(
        name="t", input_template="Q: {text}\nA:", label_words={"a": " yes", "b": " yellow", "c": " y"},
        demos=(Example("d1", "one", "a"), Example("d2", "two", "b")), queries=(Example("q1", "three", "c"),),
    )
    enc = PromptEncoder(tiny_lm.tokenizer, task)
    prefix, qids, labels = enc.prefix_ids(task.demos), [enc.query_ids(task.queries[0])], enc.label_ids()
    scores = score_queries(tiny_lm.model, prefix, qids, labels, top_k=3)
    np.testing.assert_allclose(scores.label_logprobs, naive_label_logprobs(tiny_lm.model, prefix, qids, labels),
                               atol=1e-5)


def test_demo_tokens_do_not_depend_on_position(tiny_lm, sentiment):
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    a, b = sentiment.demos[0], sentiment.demos[1]
    ab, ba = enc.prefix_ids([a, b]), enc.prefix_ids([b, a])
    assert sorted(ab) == sorted(ba) and ab != ba
    text = sentiment.format_demo(a) + "\n\n" + sentiment.format_demo(b) + "\n\n"
    assert tiny_lm.tokenizer.decode(ab) == text
