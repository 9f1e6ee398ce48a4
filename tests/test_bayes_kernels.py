"""Tests for hyptest.stats._bayes_kernels, the hand-written log densities sampled by nutpie.

References: PyMC's own log density and gradient of the models of
hyptest.stats.bayes (``_build_order_model``, ``_build_pooled_model``, compiled
with ``model.compile_logp(jacobian=True)`` / ``model.compile_dlogp(jacobian=True)``),
central finite differences, scipy.special.digamma, PyMC's initial point, and
(slow) the posterior of the PyMC-compiled nutpie model.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

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


def _mc_close(a: pd.DataFrame, b: pd.DataFrame, name: str, draws_a: np.ndarray, draws_b: np.ndarray) -> None:
    """Means, medians and 10%/90% quantiles of two posteriors within 4.5 Monte-Carlo standard errors.

    The MC errors come from each run's own ESS (ArviZ's bulk and tail ESS of ``name``): the mean's
    sd / sqrt(ess_bulk), the median's 1.25 times that, the 10% and 90% quantiles' 1.71 sd / sqrt(ess_tail)
    (normal approximations).
    """
    ra, rb = a.set_index("parameter").loc[name], b.set_index("parameter").loc[name]
    sd = max(ra["sd"], rb["sd"])
    se_bulk = sd * math.hypot(1 / math.sqrt(ra["ess_bulk"]), 1 / math.sqrt(rb["ess_bulk"]))
    se_tail = sd * math.hypot(1 / math.sqrt(ra["ess_tail"]), 1 / math.sqrt(rb["ess_tail"]))
    assert abs(draws_a.mean() - draws_b.mean()) <= 4.5 * se_bulk, name
    assert abs(np.median(draws_a) - np.median(draws_b)) <= 4.5 * 1.25 * se_bulk, name
    for q in (0.1, 0.9):
        assert abs(np.quantile(draws_a, q) - np.quantile(draws_b, q)) <= 4.5 * 1.71 * se_tail, (name, q)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS")
def test_posteriors_equal_the_pymc_compiled_nutpie_model():
    """The kernel path and nutpie on PyMC's compiled model sample the same posterior (order and pooled)."""
    pytest.importorskip("nutpie")
    from hyptest.stats import _arviz

    from .test_bayes import simulate

    data = simulate({"icl": 0.8, "sgd": 0.3}, n_sets=3, n_orders=6, n_queries=12, seed=11)
    fits = {s: bayes.fit_order_variance(data, sampler=s, seed=4) for s in ("nutpie", "nutpie-pymc")}
    assert fits["nutpie"].sampler == "nutpie" and fits["nutpie-pymc"].sampler == "nutpie-pymc"
    new, old = fits["nutpie"], fits["nutpie-pymc"]
    assert new.converged and old.converged
    for var in ("sigma_set", "sigma_query", "sigma_order", "sigma_resid", "sd_query", "sigma_order_set"):
        a, b = _arviz.posterior_draws(new.idata, var), _arviz.posterior_draws(old.idata, var)
        a, b = a.reshape(a.shape[0] * a.shape[1], -1), b.reshape(b.shape[0] * b.shape[1], -1)
        labels = [p for p in new.diagnostics["parameter"] if p == var or p.startswith(var + "[")]
        assert len(labels) == a.shape[1]
        for j, label in enumerate(labels):
            _mc_close(new.diagnostics, old.diagnostics, label, a[:, j], b[:, j])
    _mc_close(new.diagnostics, old.diagnostics, "log_ratio[sgd]", new.log_ratio_draws["sgd"],
              old.log_ratio_draws["sgd"])
    effects = pd.DataFrame({"model": list("abcdef"), "task": "t", "method_a": "icl", "method_b": "sgd",
                            "estimate": [0.2, 0.5, 0.35, 0.9, 0.1, 0.4], "posterior_sd": [0.1, 0.2, 0.15, 0.3, 0.1, 0.2]})
    pooled = {s: bayes.fit_pooled(effects, sampler=s, seed=4) for s in ("nutpie", "nutpie-pymc")}
    pn, po = pooled["nutpie"], pooled["nutpie-pymc"]
    assert pn.sampler == "nutpie" and po.sampler == "nutpie-pymc"
    for var in ("delta", "sigma_between", "nu"):
        a = _arviz.posterior_draws(pn.idata, var).reshape(-1)
        b = _arviz.posterior_draws(po.idata, var).reshape(-1)
        _mc_close(pn.diagnostics, po.diagnostics, var, a, b)


def test_kernel_fits_do_not_depend_on_earlier_slices():
    """Each fit hands nutpie its own buffer: a slice of another shape fitted in between changes nothing."""
    pytest.importorskip("nutpie")
    from .test_bayes import simulate

    kwargs = {"seed": 3, "draws": 200, "tune": 200, "chains": 2, "sampler": "nutpie"}
    first = simulate({"icl": 1.2, "gd": 0.0, "sgd": 0.2}, seed=11)
    other = simulate({"icl": 0.5, "sgd": 0.9, "adam": 0.4}, n_sets=3, seed=12)
    a = bayes.fit_order_variance(first, **kwargs)
    bayes.fit_order_variance(other, **kwargs)
    b = bayes.fit_order_variance(first, **kwargs)
    assert a.sampler == b.sampler == "nutpie" and b.compile_cached
    for name in a.idata.posterior.data_vars:
        np.testing.assert_array_equal(a.idata.posterior[name].values, b.idata.posterior[name].values)
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)


def test_no_pymc_import_on_the_kernel_path():
    """A fresh process fits both models with sampler="nutpie" without importing PyMC or PyTensor."""
    import subprocess
    import sys

    pytest.importorskip("nutpie")
    code = (
        "import sys, numpy as np, pandas as pd\n"
        "from hyptest.stats import bayes\n"
        "rng = np.random.default_rng(0)\n"
        "rows = [dict(model='m', task='t', n_demos=4, method=m, demo_set=s, order_id=o, query_id=q,\n"
        "             p_gold=1 / (1 + np.exp(-(q / 4 + sd * rng.normal() + 0.3 * rng.normal()))))\n"
        "        for m, sd in (('icl', 1.0), ('sgd', 0.3)) for s in range(2) for o in range(4) for q in range(6)]\n"
        "fit = bayes.fit_order_variance(pd.DataFrame(rows), draws=100, tune=100, chains=2)\n"
        "eff = pd.DataFrame({'model': ['a', 'b', 'c'], 'task': 't', 'method_a': 'icl', 'method_b': 'sgd',\n"
        "                    'estimate': [0.1, 0.3, 0.2], 'posterior_sd': [0.1, 0.2, 0.1]})\n"
        "pooled = bayes.fit_pooled(eff, draws=100, tune=100, chains=2)\n"
        "print(fit.sampler, pooled.sampler, 'pymc' in sys.modules, 'pytensor' in sys.modules)\n"
    )
    root = str(Path(bayes.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["nutpie", "nutpie", "False", "False"]


@pytest.mark.slow
def test_a_stale_cache_is_caught_and_recompiled(tmp_path):
    """numba keys its cache on the file's mtime and size only: a kernel compiled from other source
    with the same stamp is loaded, fails the self-check, and is recompiled, with a warning."""
    import shutil
    import subprocess
    import sys

    pytest.importorskip("nutpie")
    src = Path(K.__file__).resolve().parents[1]
    pkg = tmp_path / "pkg" / "hyptest"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    kernel = pkg / "stats" / "_bayes_kernels.py"
    good = kernel.read_text()
    stale = good.replace("math.log(2.0 * math.pi)", "math.log(3.0 * math.pi)", 1)
    assert stale != good and len(stale) == len(good)
    kernel.write_text(stale)
    stamp = kernel.stat().st_mtime_ns
    env = {**os.environ, "PYTHONPATH": str(pkg.parent), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    run = [sys.executable, "-W", "always::RuntimeWarning", "-c"]
    # cwd: with -c, Python puts the working directory before PYTHONPATH
    subprocess.run([*run, "import hyptest.stats._bayes_kernels"], check=True, env=env, capture_output=True,
                   cwd=tmp_path)
    kernel.write_text(good)
    os.utime(kernel, ns=(stamp, stamp))  # same mtime and size: numba takes the stale entries
    code = ("import hyptest.stats._bayes_kernels as K\n"
            "print('stale' if K.self_check() else 'fresh')\n"
            "from hyptest.stats import bayes\n"
            "m, problem, compiled = bayes._load_kernels()\n"
            "print(problem == '', compiled, m.self_check() == '')\n")
    out = subprocess.run([*run, code], check=True, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split() == ["stale", "True", "True", "True"]
    assert "compiling them into a temporary cache" in out.stderr


def test_missing_nutpie_internals_fall_back_to_the_pymc_compiled_model(monkeypatch):
    """Without the nutpie internals the kernels are handed to, sampler="nutpie" warns and runs nutpie-pymc."""
    import dataclasses

    nutpie_compile = pytest.importorskip("nutpie.compile_pymc")

    @dataclasses.dataclass(frozen=True)
    class OtherCompiledModel:  # a nutpie whose CompiledPyMCModel has other fields
        dims: dict
        compiled_logp_func: object

    monkeypatch.setattr(nutpie_compile, "CompiledPyMCModel", OtherCompiledModel)
    problem = bayes._nutpie_internals_problem()
    assert "lacks" in problem and "user_data" in problem
    monkeypatch.setattr(bayes, "_KERNELS", {})
    assert bayes._load_kernels() == (None, problem, False)

    # the fallback samples nutpie's PyMC-compiled model; a stand-in keeps this test fast
    monkeypatch.undo()
    spec = bayes._KernelSpec("pooled", estimate=np.array([0.1, 0.4, 0.2]), se=np.array([0.1, 0.2, 0.1]))
    stand_in, _, _ = bayes._kernel_compiled(spec)
    monkeypatch.setattr(bayes, "_KERNELS", {"module": None, "problem": "no kernels here"})
    monkeypatch.setattr(bayes, "_pymc_compiled", lambda *a, **k: (stand_in, False))
    args = bayes._validate_sampler_args(0.2, 0.94, 50, 50, 2, "nutpie", 0)
    with pytest.warns(RuntimeWarning, match="no kernels here.*nutpie-pymc"):
        out = bayes._sample("pooled", 3, None, {}, bayes._POOLED_VARS, args, kernel=spec)
    assert out[-1] == "nutpie-pymc" and out[0]["delta"].shape == (2, 50)


@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_underflow_and_overflow_are_non_finite_where_pymc_s_are(capfd):
    """Scales of exp(+-400) (squares 0 or inf): the callback returns 0 exactly where PyMC's log density and
    gradient are finite, 3 or 4 elsewhere (nutpie rejects the step), and raises nothing inside C (no
    "Exception ignored" on stderr)."""
    _, stats = _order_case(2, 2, set())
    buf = K.order_buffer(stats, 2, bayes.PRIOR_SCALES, bayes.PRIOR_SET_NU)
    n_dim = 7 + len(stats["method_idx"])
    pm = bayes._import_pymc()
    with bayes._quiet_pymc():
        _, logp, dlogp = _pymc_fns(bayes._build_order_model(pm, 2, stats))
    n_rejected = 0
    for u in (-400.0, 400.0):
        for i in (0, 1, 3, 5, n_dim - 1):  # sigma_set, sigma_query, sigma_order, z_order, sigma_resid
            x = np.zeros(n_dim)
            x[i] = u
            code = K.call_logp(K.order_logp_c, x, buf)[0]
            finite = bool(np.isfinite(logp(x)) and np.isfinite(dlogp(x)).all())
            assert (code == 0) == finite and code in (0, 3, 4), (u, i, code)
            n_rejected += code != 0
    assert n_rejected >= 3
    assert "Exception" not in capfd.readouterr().err
