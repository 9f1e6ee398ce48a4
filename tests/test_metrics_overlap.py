"""Shen et al.'s distribution-agreement metrics on hand-made inputs, against scipy and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cosine as cosine_distance
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from hyptest.metrics.overlap import (
    VocabOrderSensitivity,
    label_js,
    label_kl,
    overlap_cosine,
    token_overlap,
    vocab_order_sensitivity,
)


def _random_topk(gen, shape, vocab, k_full):
    """Top-k ids (distinct per row) and sorted-descending probs of random softmaxes."""
    logits = gen.normal(size=(*shape, vocab)) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ids = np.argsort(-probs, axis=-1, kind="stable")[..., :k_full]
    return ids, np.take_along_axis(probs, ids, axis=-1), probs


# ---------------------------------------------------------------------------
# token_overlap
# ---------------------------------------------------------------------------


def test_token_overlap_by_hand():
    a = [3, 1, 4, 5, 9]
    b = [4, 3, 2, 7, 1]
    # k = 5: {3,1,4,5,9} ∩ {4,3,2,7,1} = {1,3,4} -> 3/5
    assert token_overlap(a, b, k=5) == pytest.approx(0.6, abs=1e-15)
    # k = 2: {3,1} ∩ {4,3} = {3} -> 1/2 (entries after the first k are ignored)
    assert token_overlap(a, b, k=2) == pytest.approx(0.5, abs=1e-15)
    # k = 1: {3} ∩ {4} = {} -> 0
    assert token_overlap(a, b, k=1) == 0.0
    assert token_overlap(a, a, k=5) == 1.0


def test_token_overlap_matches_set_arithmetic_on_a_batch():
    gen = np.random.default_rng(11)
    ids_a, _, _ = _random_topk(gen, (4, 3), vocab=30, k_full=12)
    ids_b, _, _ = _random_topk(gen, (4, 3), vocab=30, k_full=15)
    out = token_overlap(ids_a, ids_b, k=10)
    assert out.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            shared = set(ids_a[i, j, :10].tolist()) & set(ids_b[i, j, :10].tolist())
            np.testing.assert_allclose(out[i, j], len(shared) / 10, rtol=0, atol=1e-15)


def test_token_overlap_symmetry_permutation_and_broadcast():
    gen = np.random.default_rng(2)
    ids_a, _, _ = _random_topk(gen, (5,), vocab=25, k_full=10)
    ids_b, _, _ = _random_topk(gen, (5,), vocab=25, k_full=10)
    np.testing.assert_array_equal(token_overlap(ids_a, ids_b, k=6), token_overlap(ids_b, ids_a, k=6))
    # permuting the ids inside the first k (and the tail) does not change the sets
    perm = np.concatenate([gen.permutation(6), 6 + gen.permutation(4)])
    np.testing.assert_array_equal(
        token_overlap(ids_a[:, perm], ids_b, k=6), token_overlap(ids_a, ids_b, k=6)
    )
    # one reference row broadcast against a batch
    out = token_overlap(ids_a[0], ids_b, k=6)
    np.testing.assert_array_equal(out, [token_overlap(ids_a[0], row, k=6) for row in ids_b])


@pytest.mark.parametrize(
    ("ids_a", "ids_b", "k", "exc", "match"),
    [
        ([1, 2, 3], [1, 2, 3], 4, ValueError, "fewer than `k`"),
        ([1, 1, 3], [1, 2, 3], 2, ValueError, "ids_a.*repeat"),
        ([1.0, 2.0], [1, 2], 2, TypeError, "ids_a"),
        ([1, 2], [1, 2], 0, ValueError, "`k`"),
        ([1, 2], [1, 2], 1.5, TypeError, "`k`"),
        ([[1, 2], [3, 4]], [[1, 2], [3, 4], [5, 6]], 2, ValueError, "do not broadcast"),
    ],
)
def test_token_overlap_rejects_bad_input(ids_a, ids_b, k, exc, match):
    with pytest.raises(exc, match=match):
        token_overlap(ids_a, ids_b, k=k)


# ---------------------------------------------------------------------------
# overlap_cosine
# ---------------------------------------------------------------------------


def test_overlap_cosine_by_hand():
    ids_a, pa = [7, 5, 2], [0.5, 0.3, 0.1]
    ids_b, pb = [5, 7, 8], [0.6, 0.2, 0.1]
    # shared {7, 5}: a = (0.5, 0.3), b = (0.2, 0.6) aligned by id
    # dot = 0.10 + 0.18 = 0.28; |a|^2 = 0.34; |b|^2 = 0.40
    expected = 0.28 / np.sqrt(0.34 * 0.40)
    assert overlap_cosine(ids_a, pa, ids_b, pb, k=3) == pytest.approx(expected, abs=1e-12)
    # union {7, 5, 2, 8}: a = (0.5, 0.3, 0.1, 0), b = (0.2, 0.6, 0, 0.1)
    # dot = 0.28; |a|^2 = 0.35; |b|^2 = 0.41
    union = overlap_cosine(ids_a, pa, ids_b, pb, k=3, support="union")
    assert union == pytest.approx(0.28 / np.sqrt(0.35 * 0.41), abs=1e-12)


def test_overlap_cosine_zero_one_and_full_overlap():
    # no shared token -> 0.0 by definition, for both supports
    assert overlap_cosine([1, 2], [0.6, 0.3], [3, 4], [0.5, 0.4], k=2) == 0.0
    assert overlap_cosine([1, 2], [0.6, 0.3], [3, 4], [0.5, 0.4], k=2, support="union") == 0.0
    # one shared token -> 1.0 whatever the probabilities (documented degeneracy)
    assert overlap_cosine([1, 2], [0.6, 0.3], [1, 4], [0.1, 0.05], k=2) == pytest.approx(1.0)
    # full overlap -> ordinary cosine of the k-vectors aligned by id (scipy)
    gen = np.random.default_rng(5)
    ids = gen.permutation(50)[:8]
    pa = np.sort(gen.dirichlet(np.ones(8)) * 0.9)[::-1]
    pb = gen.dirichlet(np.ones(8)) * 0.8
    order_b = np.argsort(-pb, kind="stable")
    got = overlap_cosine(ids, pa, ids[order_b], pb[order_b], k=8)
    assert got == pytest.approx(1.0 - cosine_distance(pa, pb), abs=1e-12)


def test_overlap_cosine_matches_direct_computation_on_a_batch():
    gen = np.random.default_rng(7)
    ids_a, pa, _ = _random_topk(gen, (6,), vocab=20, k_full=10)
    ids_b, pb, _ = _random_topk(gen, (6,), vocab=20, k_full=12)
    out = overlap_cosine(ids_a, pa, ids_b, pb, k=10)
    for i in range(6):
        da = dict(zip(ids_a[i, :10].tolist(), pa[i, :10]))
        db = dict(zip(ids_b[i, :10].tolist(), pb[i, :10]))
        shared = sorted(set(da) & set(db))
        if not shared:
            assert out[i] == 0.0
            continue
        va = np.array([da[t] for t in shared])
        vb = np.array([db[t] for t in shared])
        np.testing.assert_allclose(out[i], va @ vb / np.linalg.norm(va) / np.linalg.norm(vb), atol=1e-12)


def test_overlap_cosine_invariances():
    gen = np.random.default_rng(8)
    ids_a, pa, _ = _random_topk(gen, (4,), vocab=15, k_full=9)
    ids_b, pb, _ = _random_topk(gen, (4,), vocab=15, k_full=9)
    for support in ("shared", "union"):
        ref = overlap_cosine(ids_a, pa, ids_b, pb, k=5, support=support)
        # swap a and b
        swapped = overlap_cosine(ids_b, pb, ids_a, pa, k=5, support=support)
        np.testing.assert_allclose(swapped, ref, atol=1e-14)
        # joint permutation of the whole (id, prob) list: the top-k is chosen by probability
        perm = gen.permutation(9)
        np.testing.assert_allclose(
            overlap_cosine(ids_a[:, perm], pa[:, perm], ids_b, pb, k=5, support=support), ref, atol=1e-14
        )
        # positive rescaling of one distribution
        np.testing.assert_allclose(
            overlap_cosine(ids_a, 0.5 * pa, ids_b, pb, k=5, support=support), ref, atol=1e-14
        )


def test_overlap_cosine_rejects_bad_input():
    with pytest.raises(ValueError, match="probs_a"):
        overlap_cosine([1, 2], [0.5], [1, 2], [0.5, 0.4], k=2)
    with pytest.raises(ValueError, match="probs_b"):
        overlap_cosine([1, 2], [0.5, 0.4], [1, 2], [1.5, 0.4], k=2)
    with pytest.raises(ValueError, match="support"):
        overlap_cosine([1, 2], [0.5, 0.4], [1, 2], [0.5, 0.4], k=2, support="all")


# ---------------------------------------------------------------------------
# label_kl, label_js
# ---------------------------------------------------------------------------


def test_label_kl_by_hand_and_against_scipy():
    # 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5 (-0.5877867) + 0.5 (1.6094379)
    assert label_kl([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.5108256, abs=1e-7)
    gen = np.random.default_rng(3)
    p = gen.dirichlet(np.ones(4), size=(5, 2))
    q = gen.dirichlet(np.ones(4), size=(5, 2))
    # scipy.special.rel_entr(p, q).sum(-1): no entry is below eps, so the floor changes nothing
    np.testing.assert_allclose(label_kl(p, q), rel_entr(p, q).sum(-1), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(label_kl(p, p), 0.0, atol=1e-15)


def test_label_kl_floor_keeps_it_finite():
    eps = 1e-12
    # q = (1, 0) -> (1, eps) / (1 + eps); p = (0.5, 0.5) unchanged
    q1, q2 = 1 / (1 + eps), eps / (1 + eps)
    expected = 0.5 * np.log(0.5 / q1) + 0.5 * np.log(0.5 / q2)  # about 13.47 nats
    assert label_kl([0.5, 0.5], [1.0, 0.0], eps=eps) == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(label_kl([0.0, 1.0], [1.0, 0.0]))


def test_label_js_by_hand_and_against_scipy():
    # p = (1, 0), q = (0.5, 0.5), m = (0.75, 0.25)
    # KL(p||m) = ln(1/0.75) = 0.2876821; KL(q||m) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.1438410
    assert label_js([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.5 * (0.2876821 + 0.1438410), abs=1e-7)
    # disjoint supports reach the bound log 2
    assert label_js([1.0, 0.0, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(np.log(2), abs=1e-15)
    gen = np.random.default_rng(4)
    p = gen.dirichlet(np.ones(3) * 0.5, size=7)
    q = gen.dirichlet(np.ones(3) * 0.5, size=7)
    # scipy.spatial.distance.jensenshannon(p, q, axis=1) ** 2 (natural log base)
    np.testing.assert_allclose(label_js(p, q), jensenshannon(p, q, axis=1) ** 2, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(label_js(p, q), label_js(q, p), atol=1e-15)
    assert np.all(label_js(p, q) <= np.log(2))


@pytest.mark.parametrize(
    ("p", "q", "match"),
    [
        ([0.5, 0.6], [0.5, 0.5], "`p`.*sum to 1"),
        ([0.5, 0.5], [1.2, -0.2], "`q`.*non-negative"),
        ([0.5, 0.5], [0.2, 0.3, 0.5], "same number of labels"),
        ([np.nan, 1.0], [0.5, 0.5], "`p`.*finite"),
    ],
)
def test_label_divergences_reject_bad_input(p, q, match):
    with pytest.raises(ValueError, match=match):
        label_kl(p, q)
    with pytest.raises(ValueError, match=match):
        label_js(p, q)


def test_label_kl_rejects_bad_eps():
    with pytest.raises(ValueError, match="eps"):
        label_kl([0.5, 0.5], [0.5, 0.5], eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        label_kl([0.5, 0.5], [0.5, 0.5], eps=0.6)


# ---------------------------------------------------------------------------
# vocab_order_sensitivity
# ---------------------------------------------------------------------------

_IDS = np.array([[5, 7], [7, 5], [5, 9]])
_PROBS = np.array([[0.6, 0.3], [0.5, 0.4], [0.7, 0.2]])


def test_vocab_order_sensitivity_by_hand():
    res = vocab_order_sensitivity(_IDS, _PROBS)
    assert isinstance(res, VocabOrderSensitivity)
    # union {5, 7, 9}; missing tokens count 0
    # token 5: (0.6, 0.4, 0.7): sum x^2 - (sum x)^2/3 = 1.01 - 2.89/3 = 0.14/3 -> var = 0.07/3
    # token 7: (0.3, 0.5, 0.0): 0.34 - 0.64/3 = 0.38/3 -> var = 0.19/3
    # token 9: (0.0, 0.0, 0.2): 0.04 - 0.04/3 = 0.08/3 -> var = 0.04/3
    expected = np.sqrt(0.07 / 3) + np.sqrt(0.19 / 3) + np.sqrt(0.04 / 3)  # 0.5198837
    assert res.value == pytest.approx(expected, abs=1e-12)
    # residual mass 0.1 per order: bound = 0.3 / sqrt(3)
    assert res.error_bound == pytest.approx(0.3 / np.sqrt(3), abs=1e-12)
    assert res.n_tokens == 3 and res.n_orders == 3


def test_vocab_order_sensitivity_invariances_and_batch():
    ref = vocab_order_sensitivity(_IDS, _PROBS)
    gen = np.random.default_rng(0)
    # permuting (id, prob) pairs inside each order's top-k list
    perm = np.array([gen.permutation(2) for _ in range(3)])
    ids_p = np.take_along_axis(_IDS, perm, axis=1)
    probs_p = np.take_along_axis(_PROBS, perm, axis=1)
    assert vocab_order_sensitivity(ids_p, probs_p).value == pytest.approx(ref.value, abs=1e-14)
    # permuting the orders
    assert vocab_order_sensitivity(_IDS[::-1], _PROBS[::-1]).value == pytest.approx(ref.value, abs=1e-14)
    # a batch of two queries = each query alone
    ids2 = np.stack([_IDS, _IDS[::-1] + 100])  # relabelled ids, reversed orders
    probs2 = np.stack([_PROBS, _PROBS[::-1]])
    out = vocab_order_sensitivity(ids2, probs2)
    np.testing.assert_allclose(out.value, [ref.value, ref.value], atol=1e-14)
    np.testing.assert_array_equal(out.n_tokens, [3, 3])


def test_vocab_order_sensitivity_exact_when_nothing_is_truncated():
    gen = np.random.default_rng(1)
    ids, probs, full = _random_topk(gen, (6,), vocab=12, k_full=12)  # K = V: nothing truncated
    res = vocab_order_sensitivity(ids, probs, vocab_size=12)
    # direct: numpy std over orders (ddof=1) of the full (6, 12) matrix, summed over the vocabulary
    assert res.value == pytest.approx(np.std(full, axis=0, ddof=1).sum(), abs=1e-12)
    assert res.error_bound == pytest.approx(0.0, abs=1e-12)


def test_vocab_order_sensitivity_bound_holds_on_random_distributions():
    gen = np.random.default_rng(2)
    for _ in range(20):
        ids, probs, full = _random_topk(gen, (5,), vocab=40, k_full=6)
        res = vocab_order_sensitivity(ids, probs)
        exact = np.std(full, axis=0, ddof=1).sum()
        assert abs(exact - res.value) <= res.error_bound + 1e-12


def test_vocab_order_sensitivity_bound_is_sharp():
    # 4 orders share the top-2 {0, 1}; each spreads its residual r = 0.2 over M tokens of its own.
    n, m, r = 4, 1000, 0.2
    full = np.zeros((n, 2 + n * m))
    full[:, 0] = [0.5, 0.45, 0.55, 0.4]
    full[:, 1] = 1 - r - full[:, 0]
    for o in range(n):
        full[o, 2 + o * m : 2 + (o + 1) * m] = r / m
    ids = np.tile([0, 1], (n, 1))
    res = vocab_order_sensitivity(ids, full[:, :2])
    exact = np.std(full, axis=0, ddof=1).sum()
    # each of the n*m residual columns has one entry r/m: sd = (r/m)/sqrt(n); total n*r/sqrt(n)
    assert res.error_bound == pytest.approx(n * r / np.sqrt(n), abs=1e-12)
    assert exact - res.value == pytest.approx(res.error_bound, rel=1e-9)


@pytest.mark.parametrize(
    ("ids", "probs", "kwargs", "exc", "match"),
    [
        ([[1, 2]], [[0.5, 0.4]], {}, ValueError, "at least 2 orders"),
        ([[1, 1], [1, 2]], [[0.5, 0.4], [0.5, 0.4]], {}, ValueError, "repeat"),
        ([[1, 2], [1, 2]], [[0.7, 0.4], [0.5, 0.4]], {}, ValueError, "at most 1"),
        ([[1, 2], [1, 2]], [[0.5, 0.4], [0.5, 0.4]], {"vocab_size": 2}, ValueError, "vocab_size"),
        ([[1, 2], [1, 2]], [[0.5, 0.4]], {}, ValueError, "topk_probs"),
        ([[1.0, 2.0], [1.0, 2.0]], [[0.5, 0.4], [0.5, 0.4]], {}, TypeError, "topk_ids"),
    ],
)
def test_vocab_order_sensitivity_rejects_bad_input(ids, probs, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        vocab_order_sensitivity(ids, probs, **kwargs)
