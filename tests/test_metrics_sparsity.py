"""Weight sparsity and per-layer attention-projection sparsity on hand-made weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hyptest.metrics.sparsity import attention_sparsity_by_layer, weight_sparsity


def test_weight_sparsity_by_hand():
    w = np.array([[0.0, 0.5, -2e-4], [1e-3, -2.0, 5e-4]])
    # |w| < 1e-3: 0.0, 2e-4, 5e-4 (1e-3 itself is not < 1e-3) -> 3 of 6
    assert weight_sparsity(w, threshold=1e-3) == pytest.approx(0.5, abs=1e-15)
    # relative: |w| < 0.3 * max|w| = 0.6: 0, 0.5, 2e-4, 1e-3, 5e-4 -> 5 of 6
    assert weight_sparsity(w, threshold=0.3, relative=True) == pytest.approx(5 / 6, abs=1e-15)
    # threshold 0: exact zeros only -> 1 of 6
    assert weight_sparsity(w, threshold=0.0) == pytest.approx(1 / 6, abs=1e-15)
    # all-zero matrix: fully sparse in both modes
    assert weight_sparsity(np.zeros((3, 3)), threshold=0.1, relative=True) == 1.0
    assert weight_sparsity(np.zeros((3, 3)), threshold=0.0) == 1.0


def test_weight_sparsity_matches_direct_count_and_invariances():
    gen = np.random.default_rng(0)
    w = gen.normal(scale=0.01, size=(3, 20, 30))
    np.testing.assert_allclose(weight_sparsity(w, threshold=5e-3), np.mean(np.abs(w) < 5e-3), atol=1e-15)
    # per-matrix shares over the last two axes
    per = weight_sparsity(w, threshold=0.2, relative=True, axis=(1, 2))
    direct = [np.mean(np.abs(m) < 0.2 * np.abs(m).max()) for m in w]
    np.testing.assert_allclose(per, direct, atol=1e-15)
    # sign flips and transposition do not matter; relative mode is scale-free
    assert weight_sparsity(-w, threshold=5e-3) == weight_sparsity(w, threshold=5e-3)
    assert weight_sparsity(w.T, threshold=5e-3) == weight_sparsity(w, threshold=5e-3)
    np.testing.assert_array_equal(
        weight_sparsity(1000.0 * w, threshold=0.2, relative=True, axis=(1, 2)), per
    )


@pytest.mark.parametrize(
    ("matrix", "kwargs", "exc", "match"),
    [
        (np.ones((0, 3)), {}, ValueError, "empty"),
        (np.array([1.0, np.inf]), {}, ValueError, "finite"),
        (np.ones(3), {"threshold": -1.0}, ValueError, "threshold"),
        (np.ones(3), {"threshold": "0.1"}, TypeError, "threshold"),
        (np.ones(3), {"relative": 1}, TypeError, "relative"),
        (np.ones((2, 2)), {"axis": 2}, ValueError, "axis"),
    ],
)
def test_weight_sparsity_rejects_bad_input(matrix, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        weight_sparsity(matrix, **kwargs)


def test_attention_sparsity_llama_names():
    eye = np.eye(4)  # 12 of 16 entries are zero
    weights = {
        "model.layers.1.self_attn.o_proj.weight": np.ones((4, 4)),
        "model.layers.0.self_attn.q_proj.weight": eye,
        "model.layers.0.self_attn.k_proj.weight": np.zeros((4, 4)),
        "model.layers.0.self_attn.v_proj.weight": np.ones((4, 4)),
        "model.layers.0.self_attn.q_proj.bias": np.zeros(4),  # skipped
        "model.layers.0.mlp.up_proj.weight": np.zeros((8, 4)),  # skipped
        "model.embed_tokens.weight": np.zeros((10, 4)),  # skipped
    }
    out = attention_sparsity_by_layer(weights, threshold=1e-3)
    assert list(out.columns) == ["layer", "matrix", "sparsity", "threshold", "relative", "n_entries", "name"]
    assert list(zip(out.layer, out.matrix)) == [(0, "q"), (0, "k"), (0, "v"), (1, "o")]
    np.testing.assert_allclose(out.sparsity, [12 / 16, 1.0, 0.0, 0.0], atol=1e-15)
    assert out.n_entries.tolist() == [16, 16, 16, 16]
    assert (out.threshold == 1e-3).all() and not out.relative.any()


def test_attention_sparsity_gpt2_fused_and_gptj_names():
    d = 2
    c_attn = np.zeros((d, 3 * d))
    c_attn[:, 0:2] = [[1.0, 0.0], [0.0, 0.0]]  # q: 3 of 4 zero
    c_attn[:, 2:4] = [[1.0, 1.0], [0.0, 0.0]]  # k: 2 of 4 zero
    c_attn[:, 4:6] = 1.0  # v: 0 of 4 zero
    weights = {
        "transformer.h.0.attn.c_attn.weight": c_attn,
        "transformer.h.0.attn.c_proj.weight": np.zeros((d, d)),
        "transformer.h.0.mlp.c_proj.weight": np.ones((4 * d, d)),  # an MLP c_proj: skipped
        "transformer.h.3.attn.out_proj.weight": np.eye(2),  # GPT-J naming -> o
    }
    out = attention_sparsity_by_layer(weights, threshold=0.5).set_index(["layer", "matrix"])
    assert out.loc[(0, "q"), "sparsity"] == pytest.approx(0.75)
    assert out.loc[(0, "k"), "sparsity"] == pytest.approx(0.5)
    assert out.loc[(0, "v"), "sparsity"] == pytest.approx(0.0)
    assert out.loc[(0, "o"), "sparsity"] == pytest.approx(1.0)
    assert out.loc[(3, "o"), "sparsity"] == pytest.approx(0.5)
    assert out.loc[(0, "q"), "n_entries"] == 4
    assert len(out) == 5


def test_attention_sparsity_rejects_bad_input():
    with pytest.raises(ValueError, match="no recognised"):
        attention_sparsity_by_layer({"encoder.weight": np.ones(3)}, threshold=0.1)
    with pytest.raises(ValueError, match="two weights"):
        attention_sparsity_by_layer(
            {"model.layers.0.self_attn.o_proj.weight": np.ones((2, 2)),
             "model.model.layers.0.self_attn.o_proj.weight": np.ones((2, 2))},
            threshold=0.1,
        )
    with pytest.raises(ValueError, match=r"\(d, 3d\)"):
        attention_sparsity_by_layer({"transformer.h.0.attn.c_attn.weight": np.ones((6, 2))}, threshold=0.1)
    with pytest.raises(TypeError, match="mapping"):
        attention_sparsity_by_layer([("a", np.ones(2))], threshold=0.1)


def test_attention_sparsity_returns_a_dataframe_with_numbers():
    out = attention_sparsity_by_layer(
        {"layers.2.self_attn.v_proj.weight": np.eye(3)}, threshold=0.5, relative=True
    )
    assert isinstance(out, pd.DataFrame)
    assert out.layer.dtype.kind == "i" and out.sparsity.dtype.kind == "f"
    assert out.sparsity[0] == pytest.approx(6 / 9) and bool(out.relative[0])
