"""Tests for hyptest.stats._bayes_kernels, the hand-written log densities sampled by nutpie.

References: PyMC's own log density and gradient of the models of
hyptest.stats.bayes (``_build_order_model``, ``_build_pooled_model``, compiled
with ``model.compile_logp(jacobian=True)`` / ``model.compile_dlogp(jacobian=True)``),
central finite differences, scipy.special.digamma, PyMC's initial point, and
(slow) the posterior of the PyMC-compiled nutpie model.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import special

pytest.importorskip("numba")
pytest.importorskip("pymc")

from hyptest.stats import _bayes_kernels as K  # noqa: E402
from hyptest.stats import bayes  # noqa: E402

REL = 1e-9
#: PyMC's log density carries a constant offset of ~3e-8 per prior with scale 2.5:
#: PyTensor types the constant 2.5 as float32 (it is exact there) and takes its log
#: in float32 (log(float32(2.5)) - log(2.5) = 2.8e-8). It moves no gradient and no
#: draw, so values are compared after removing PyMC's offset at a reference point,
#: and the offset itself is bounded.
OFFSET_MAX = 5e-7


def _grids(rng: np.random.Generator, n_methods: int, additive: set[int]) -> dict:
    """Random orders x queries grids, 1-3 demo sets per method, orders and queries varying by block.

    Methods in ``additive`` get grids with no order x query interaction (``has_int`` 0).
    """
    grids = {}
    for m in range(n_methods):
        for s in range(int(rng.integers(1, 4))):
            n_o, n_q = int(rng.integers(2, 7)), int(rng.integers(2, 9))
            y = rng.normal(0, 1.5) + rng.normal(0, 1, (n_o, 1)) + rng.normal(0, 1, (1, n_q))
            if m not in additive:
                y = y + rng.normal(0, 0.5, (n_o, n_q))
            grids[(f"m{m}", s)] = pd.DataFrame(y)
    return grids


def _order_case(seed: int, n_methods: int, additive: set[int]):
    rng = np.random.default_rng(seed)
    methods = tuple(f"m{m}" for m in range(n_methods))
    stats = bayes._block_stats(_grids(rng, n_methods, additive), methods, interaction_tol=1e-3)
    for m in range(n_methods):
        assert (stats["has_int"][stats["method_idx"] == m] == (0.0 if m in additive else 1.0)).all()
    return rng, stats


def _pymc_fns(model):
    names = [v.name for v in model.value_vars]
    logp = model.compile_logp(jacobian=True)
    dlogp = model.compile_dlogp(jacobian=True)
    shapes = [model.initial_point()[n].shape for n in names]

    def point(x):
        out, i = {}, 0
        for n, sh in zip(names, shapes):
            size = int(np.prod(sh))
            out[n] = x[i:i + size].reshape(sh)
            i += size
        return out

    return names, lambda x: float(logp(point(x))), lambda x: np.asarray(dlogp(point(x)), float)


def _assert_close(got: float | np.ndarray, want: float | np.ndarray, rel: float = REL) -> float:
    got, want = np.asarray(got, float), np.asarray(want, float)
    err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)))
    assert err <= rel, (got, want, err)
    return err


ORDER_CASES = [(0, 1, set()), (1, 1, {0}), (2, 2, set()), (3, 2, {1}), (4, 3, {0, 2}), (5, 3, set())]


@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS")
@pytest.mark.parametrize(("seed", "n_methods", "additive"), ORDER_CASES)
def test_order_logp_and_gradient_equal_pymc(seed, n_methods, additive):
    rng, stats = _order_case(seed, n_methods, additive)
    pm = bayes._import_pymc()
    with bayes._quiet_pymc():
        model = bayes._build_order_model(pm, n_methods, stats)
        names, logp, dlogp = _pymc_fns(model)
    assert names == ["sigma_set_log__", "sigma_query_log__", "sigma_order_log__", "z_order", "sigma_resid_log__"]
    buf = K.order_buffer(stats, n_methods, bayes.PRIOR_SCALES, bayes.PRIOR_SET_NU)
    n_dim = 1 + 3 * n_methods + len(stats["method_idx"])
    offset = logp(np.zeros(n_dim)) - K.call_logp(K.order_logp_c, np.zeros(n_dim), buf)[1]
    assert abs(offset) <= OFFSET_MAX
    for _ in range(5):
        x = rng.normal(0.0, 1.0, n_dim)
        code, lp, grad = K.call_logp(K.order_logp_c, x, buf)
        assert code == 0
        _assert_close(lp + offset, logp(x))
        _assert_close(grad, dlogp(x))
        # and the jitted kernel itself, called from Python, gives the same
        g2 = np.zeros(n_dim)
        assert K.order_logp_grad(x, buf, g2) == lp and np.array_equal(g2, grad)


@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS")
@pytest.mark.parametrize("n", [2, 3, 7])
def test_pooled_logp_and_gradient_equal_pymc(n):
    rng = np.random.default_rng(100 + n)
    est, se = rng.normal(0, 1, n), rng.uniform(0.05, 0.8, n)
    pm = bayes._import_pymc()
    with bayes._quiet_pymc():
        model = bayes._build_pooled_model(pm, est, se)
        names, logp, dlogp = _pymc_fns(model)
    assert names == ["delta", "sigma_between_log__", "nu_log__", "z"]
    buf = K.pooled_buffer(est, se, bayes.POOLED_PRIORS)
    offset = logp(np.zeros(3 + n)) - K.call_logp(K.pooled_logp_c, np.zeros(3 + n), buf)[1]
    assert abs(offset) <= OFFSET_MAX
    for _ in range(5):
        x = rng.normal(0.0, 1.0, 3 + n)
        x[2] = rng.uniform(-1.0, 5.0)  # nu from ~0.4 to ~150
        code, lp, grad = K.call_logp(K.pooled_logp_c, x, buf)
        assert code == 0
        _assert_close(lp + offset, logp(x))
        want = dlogp(x)
        keep = np.arange(3 + n) != 2
        _assert_close(grad[keep], want[keep])
        # d/d log(nu) sums n digamma terms times nu/2, and PyTensor's psi is off by up to
        # 1.5e-10 (measured against scipy.special.digamma on [0.05, 200]); ours by < 1e-13
        assert abs(grad[2] - want[2]) <= REL + n * math.exp(x[2]) * 1.5e-10


def _central_differences(cfunc, x, buf, eps=1e-6):
    out = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        out[i] = (K.call_logp(cfunc, x + e, buf)[1] - K.call_logp(cfunc, x - e, buf)[1]) / (2 * eps)
    return out


@pytest.mark.parametrize(("seed", "n_methods", "additive"), ORDER_CASES[::2])
def test_gradients_equal_central_differences(seed, n_methods, additive):
    rng, stats = _order_case(seed, n_methods, additive)
    buf = K.order_buffer(stats, n_methods, bayes.PRIOR_SCALES, bayes.PRIOR_SET_NU)
    x = rng.normal(0.0, 0.7, 1 + 3 * n_methods + len(stats["method_idx"]))
    _assert_close(K.call_logp(K.order_logp_c, x, buf)[2], _central_differences(K.order_logp_c, x, buf), 1e-6)
    est, se = rng.normal(0, 1, 5), rng.uniform(0.05, 0.8, 5)
    pbuf = K.pooled_buffer(est, se, bayes.POOLED_PRIORS)
    xp = rng.normal(0.0, 0.7, 8)
    _assert_close(K.call_logp(K.pooled_logp_c, xp, pbuf)[2], _central_differences(K.pooled_logp_c, xp, pbuf), 1e-6)


def test_digamma_equals_scipy():
    xs = np.concatenate([np.geomspace(1e-3, 1e4, 200), [0.5, 1.0, 1.5, 9.999, 10.0, 10.001]])
    got = np.array([K.digamma(x) for x in xs])
    np.testing.assert_allclose(got, special.digamma(xs), rtol=1e-13, atol=1e-13)


def test_expand_gives_the_constrained_values():
    rng, stats = _order_case(2, 2, set())
    buf = K.order_buffer(stats, 2, bayes.PRIOR_SCALES, bayes.PRIOR_SET_NU)
    n_b = len(stats["method_idx"])
    x = rng.normal(size=7 + n_b)
    out = np.empty_like(x)
    K.order_expand(x, out, 2, n_b)
    z = slice(5, 5 + n_b)
    np.testing.assert_array_equal(out[z], x[z])
    keep = np.ones(x.size, bool)
    keep[z] = False
    np.testing.assert_allclose(out[keep], np.exp(x[keep]), rtol=1e-15)
    xp = np.array([0.3, math.log(0.5), math.log(4.0), 1.0, -2.0])
    outp = np.empty(5)
    K.pooled_expand(xp, outp, 2)
    np.testing.assert_allclose(outp, [0.3, 0.5, 4.0, 0.8, -0.7], rtol=1e-15)


def test_bad_buffer_or_dimension_is_refused():
    est, se = np.array([0.1, 0.2]), np.array([0.3, 0.3])
    pbuf = K.pooled_buffer(est, se, bayes.POOLED_PRIORS)
    assert K.call_logp(K.pooled_logp_c, np.zeros(6), pbuf)[0] == -1  # dim 6 != 3 + 2
    assert K.call_logp(K.order_logp_c, np.zeros(5), pbuf)[0] == -1  # a pooled buffer for the order model
    assert K.call_logp(K.pooled_logp_c, np.array([0.0, 0.0, 0.0, 1e200, 0.0]), pbuf)[0] in (3, 4)


@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS")
def test_initial_points_are_pymc_s_jittered():
    _, stats = _order_case(3, 2, {1})
    pm = bayes._import_pymc()
    with bayes._quiet_pymc():
        model = bayes._build_order_model(pm, 2, stats)
        pooled = bayes._build_pooled_model(pm, np.zeros(4), np.ones(4))
    want = np.concatenate([np.ravel(v) for v in model.initial_point().values()])
    buf = K.order_buffer(stats, 2, bayes.PRIOR_SCALES, bayes.PRIOR_SET_NU)
    wantp = np.concatenate([np.ravel(v) for v in pooled.initial_point().values()])
    pbuf = K.pooled_buffer(np.zeros(4), np.ones(4), bayes.POOLED_PRIORS)
    for init, b, w in ((K.order_initial_point, buf, want), (K.pooled_initial_point, pbuf, wantp)):
        draws = np.array([init(b, seed) for seed in range(400)])
        assert draws.shape == (400, w.size)
        assert (np.abs(draws - w) <= 1.0).all()  # U(-1, 1) jitter around PyMC's initial point
        np.testing.assert_allclose(draws.mean(axis=0), w, atol=0.15)  # sd of the mean ~0.03
        assert np.array_equal(init(b, 5), init(b, 5))


def test_self_check_passes():
    assert K.self_check() == ""
