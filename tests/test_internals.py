"""Attention internals read by hooks (hyptest.collect.internals) against independent recomputations."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def manual_internals(model, ids):
    """Per-layer internals at the last token of one row, recomputed from the model's weights.

    Uses the model's own returned hidden states (input of every layer) and attention
    probabilities (``output_attentions=True``; the model must use eager attention), and
    re-derives everything else by hand: RMS-normed inputs, q/k/v projections, the rotary
    rotation (own rotate-half, cos/sin from the model's rotary module), GQA expansion.

    Returns
    -------
    dict with ``scores`` (L, H, T) pre-softmax, ``probs`` (L, H, T) the model's attention row,
    ``output`` (L, hidden) = o_proj(probs @ V), ``queries`` (L, T, H*d) scaled pre-rotary q.
    """
    dec = model.get_decoder()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([list(ids)]), output_attentions=True, output_hidden_states=True)
        n = len(ids)
        pos = torch.arange(n)[None]
        cos, sin = dec.rotary_emb(out.hidden_states[0], pos)
        scores, probs, outputs, queries = [], [], [], []
        for l, layer in enumerate(dec.layers):
            attn = layer.self_attn
            d = attn.head_dim
            h = layer.input_layernorm(out.hidden_states[l])
            q = attn.q_proj(h).view(1, n, -1, d).transpose(1, 2)
            k = attn.k_proj(h).view(1, n, -1, d).transpose(1, 2)
            v = attn.v_proj(h).view(1, n, -1, d).transpose(1, 2)
            queries.append((q[0].transpose(0, 1).reshape(n, -1) * d ** -0.5).numpy())
            qr = q * cos[:, None] + _rotate_half(q) * sin[:, None]
            kr = k * cos[:, None] + _rotate_half(k) * sin[:, None]
            rep = q.shape[1] // k.shape[1]
            kr = kr.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            s = (qr[0, :, -1, None, :] * kr[0]).sum(-1) * d ** -0.5  # (H, T)
            p = out.attentions[l][0, :, -1, :]  # (H, T)
            o = attn.o_proj((p[:, :, None] * v[0]).sum(1).reshape(-1))
            scores.append(s.numpy())
            probs.append(p.numpy())
            outputs.append(o.numpy())
    return {"scores": np.stack(scores), "probs": np.stack(probs), "output": np.stack(outputs),
            "queries": np.stack(queries)}


@pytest.fixture(scope="module")
def eager_tiny():
    from hyptest.models.tiny import load_tiny

    lm = load_tiny("tiny-eager", seed=1)
    lm.model.set_attn_implementation("eager")
    return lm


def _hooks_left(model) -> int:
    """Hooks installed by hyptest.collect.internals (transformers keeps its own recording hooks)."""
    return sum(getattr(h, "__module__", None) == "hyptest.collect.internals"
               or getattr(getattr(h, "__func__", None), "__module__", None) == "hyptest.collect.internals"
               for m in model.modules() for h in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()])


ROWS = [list(range(40, 63)), list(range(100, 109)), list(range(7, 38))]


def test_scores_softmax_to_the_models_attentions_batched(eager_tiny):
    from hyptest.collect.internals import capture_attention

    model = eager_tiny.model
    got = capture_attention(model, ROWS, return_queries=True)
    assert got.attn_output.shape == (3, 2, 32) and got.queries.shape == (3, 2, 32)
    for b, row in enumerate(ROWS):
        ref = manual_internals(model, row)
        assert got.scores[b].shape == (2, 4, len(row))
        soft = torch.softmax(torch.tensor(got.scores[b]), dim=-1).numpy()
        np.testing.assert_allclose(soft, ref["probs"], atol=1e-5)
        np.testing.assert_allclose(got.scores[b], ref["scores"], atol=1e-5)
        np.testing.assert_allclose(got.attn_output[b], ref["output"], atol=1e-5)
        np.testing.assert_allclose(got.queries[b], ref["queries"][:, -1], atol=1e-6)
    assert _hooks_left(model) == 0


def test_output_equals_the_self_attn_modules_own_output(eager_tiny):
    from hyptest.collect.internals import attention_modules, capture_attention

    model = eager_tiny.model
    seen = {}
    handles = [m.register_forward_hook(lambda mod, a, o, i=i: seen.__setitem__(i, o[0].detach()))
               for i, m in enumerate(attention_modules(model))]
    try:
        got = capture_attention(model, [ROWS[0]])
    finally:
        for h in handles:
            h.remove()
    for layer in range(2):
        np.testing.assert_array_equal(got.attn_output[0, layer], seen[layer][0, -1].numpy())


def test_key_positions_and_scored_position_select(eager_tiny):
    from hyptest.collect.internals import capture_attention

    model = eager_tiny.model
    row = ROWS[2]
    full = manual_internals(model, row[:20])  # scored position 19 sees only tokens 0..19
    keys = [3, 0, 19, 11]
    got = capture_attention(model, [row], positions=[19], key_positions=[keys])
    np.testing.assert_allclose(got.scores[0], full["scores"][:, :, keys], atol=1e-5)
    np.testing.assert_allclose(got.attn_output[0], full["output"], atol=1e-5)
    got_neg = capture_attention(model, [row], positions=[-(len(row) - 19)], key_positions=[keys])
    np.testing.assert_array_equal(got_neg.scores[0], got.scores[0])
    assert got.positions.tolist() == [19]


def test_sdpa_gives_the_same_internals(eager_tiny):
    from hyptest.collect.internals import capture_attention
    from hyptest.models.tiny import load_tiny

    sdpa = load_tiny("tiny-sdpa", seed=1).model
    sdpa.set_attn_implementation("sdpa")
    a = capture_attention(eager_tiny.model, ROWS)
    b = capture_attention(sdpa, ROWS)
    np.testing.assert_allclose(a.attn_output, b.attn_output, atol=1e-5)
    for x, y in zip(a.scores, b.scores):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_hooks_are_removed_on_error(eager_tiny):
    from hyptest.collect.internals import QueryRecorder, capture_attention

    model = eager_tiny.model
    with pytest.raises(IndexError):
        capture_attention(model, [[10, 10_000, 3]])  # out-of-vocabulary id fails inside the forward
    assert _hooks_left(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with QueryRecorder(model):
            raise RuntimeError("boom")
    assert _hooks_left(model) == 0
    with pytest.raises(ValueError, match="outside"):
        capture_attention(model, [[1, 2, 3]], positions=[3])
    with pytest.raises(ValueError, match="key positions"):
        capture_attention(model, [[1, 2, 3]], key_positions=[[0, 5]])
    assert _hooks_left(model) == 0


def test_query_recorder_records_every_pass_at_every_position(eager_tiny):
    from hyptest.collect.internals import QueryRecorder

    model = eager_tiny.model
    with QueryRecorder(model) as rec, torch.no_grad():
        for row in ROWS[:2]:
            model(input_ids=torch.tensor([row]))
    assert len(rec.passes) == 2
    for row, got in zip(ROWS[:2], rec.passes):
        assert got.shape == (1, 2, len(row), 32)
        np.testing.assert_allclose(got[0], manual_internals(model, row)["queries"], atol=1e-6)
    assert _hooks_left(model) == 0


@pytest.mark.slow
def test_smollm2_internals_match_output_attentions():
    from hyptest.collect.internals import capture_attention
    from hyptest.models.embedded import load_embedded

    lm = load_embedded(device="cpu")
    model = lm.model
    model.set_attn_implementation("eager")
    try:
        rows = [lm.tokenizer("Review: the soup was cold.\nSentiment:").input_ids,
                lm.tokenizer("Review: lovely staff, great view.\nSentiment:").input_ids]
        got = capture_attention(model, rows, return_queries=True)
        for b, row in enumerate(rows):
            ref = manual_internals(model, row)
            soft = torch.softmax(torch.tensor(got.scores[b]), dim=-1).numpy()
            np.testing.assert_allclose(soft, ref["probs"], atol=1e-5)
            np.testing.assert_allclose(got.attn_output[b], ref["output"], atol=1e-4, rtol=1e-4)
            np.testing.assert_allclose(got.queries[b], ref["queries"][:, -1], atol=1e-4, rtol=1e-4)
        assert _hooks_left(model) == 0
    finally:
        model.set_attn_implementation("sdpa")
