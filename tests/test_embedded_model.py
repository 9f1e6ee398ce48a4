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
    from hyptest.collect.scoring import score_queries

    from ._naive import naive_label_logprobs

    enc = PromptEncoder(smol.tokenizer, sentiment)
    demos = list(sentiment.demos[:4])
    queries = list(sentiment.queries[:6])
    prefix, qids, labels = enc.prefix_ids(demos), [enc.query_ids(q) for q in queries], enc.label_ids()
    scores = score_queries(smol.model, prefix, qids, labels, top_k=5, batch_size=4)
    ref = naive_label_logprobs(smol.model, prefix, qids, labels)
    np.testing.assert_allclose(np.exp(scores.label_logprobs), np.exp(ref), atol=1e-4)
    # in-context learning really happens: the renormalised P(gold) is well above chance
    all_q = list(sentiment.queries[:24])
    full = score_queries(smol.model, prefix, [enc.query_ids(q) for q in all_q], labels, top_k=5)
    probs = np.exp(full.label_logprobs)
    probs /= probs.sum(axis=1, keepdims=True)
    gold = [sentiment.labels.index(q.label) for q in all_q]
    assert probs[np.arange(len(all_q)), gold].mean() > 0.6


def test_small_study_end_to_end(tmp_path):
    from hyptest.pipeline import run_study
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
