"""Bayesian estimate of order sensitivity: is ICL's per-query order spread that of a GD method?

Shen et al. [1]_ (Theorem 1): an algorithm equivalent to ICL has the same
order sensitivity, i.e. the same spread of each query's prediction across the
orders of the demonstrations. This module estimates, for one (model, task, N)
slice, each method's model-implied per-query standard deviation across orders
of logit P(gold),

    sd_query[m] = mean over demo sets s of sqrt(sigma_order[m, s]^2 + sigma_resid[m]^2),

from a variance-components model (``sigma_order[m, s]``: the order main
effect shared by all queries of demo set s; ``sigma_resid[m]``: the order x
query interaction), and decides with the HDI + ROPE rule of Kruschke [2]_
whether ``log(sd_query[reference] / sd_query[method])`` differs from 0.
Comparing ``sigma_order`` alone would call two methods with the same
per-query spread different when one moves all queries together and the other
moves each query on its own. :func:`fit_pooled` then shrinks the
per-(model, task) estimates toward a common effect with a Student-t
hierarchical model (Corani et al. [3]_).

**Samplers.** ``sampler="nutpie"`` (the default through ``"auto"`` when
nutpie and numba are installed) runs nutpie's NUTS on the log density and
gradient of both models written by hand in numba
(:mod:`hyptest.stats._bayes_kernels`): module-level ``numba.cfunc`` functions with
nutpie's C ABI, compiled once per machine into numba's on-disk cache, the data
and shapes passed in a buffer, so a fresh process neither imports PyMC nor
compiles anything (about 0.1 s to load the kernels instead of 9-12 s of
``nutpie.compile_pymc_model`` per model and process, plus ~3 s to import
PyMC). The densities equal PyMC's for the models built by
:func:`_build_order_model` and :func:`_build_pooled_model` (tested to ~1e-9),
which remain the reference: ``sampler="nutpie-pymc"`` samples them with nutpie
(the previous default, and the fallback, with a warning, when nutpie lacks the
0.16 internals the kernels are handed to or the kernels fail their self-check)
and ``sampler="pymc"`` with PyMC's own NUTS. The posteriors are the same up
to Monte-Carlo error; the draws for a given seed are not (other initial
points and floating-point order).

PyMC and nutpie are imported here only, and lazily; ArviZ only through
:mod:`hyptest.stats._arviz`. Install them with ``pip install 'hyptest[bayes]'``.

References
----------
.. [1] Shen, Mishra, Khashabi (2023), Do pretrained Transformers learn
   in-context by gradient descent? arXiv:2310.08540.
.. [2] Kruschke (2018), Rejecting or accepting parameter values in Bayesian
   estimation. AMPPS 1(2), 270-280.
.. [3] Corani, Benavoli, Demšar, Mangili, Zaffalon (2017), Statistical
   comparison of classifiers through Bayesian hierarchical modelling.
   Machine Learning 106, 1817-1837.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import importlib.util
import logging
import math
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._validation import (validate_choice, validate_count, validate_frame, validate_probability,
                           validate_real, validate_rng)
from . import _arviz

__all__ = [
    "BAYES_VERDICTS",
    "BayesResult",
    "PooledResult",
    "fit_order_variance",
    "fit_pooled",
    "prior_predictive",
]

Sampler = Literal["auto", "nutpie", "nutpie-pymc", "pymc"]

#: Verdicts of this module: the shared vocabulary minus ``negligible``
#: (HDI + ROPE has no such outcome), plus the convergence gate's outcome.
BAYES_VERDICTS: tuple[str, ...] = ("different", "equivalent", "inconclusive", "did_not_converge")

#: p_gold is clipped to [CLIP, 1 - CLIP] before the logit.
CLIP: float = 1e-4
#: Convergence gate (Vehtari et al. 2021): every parameter must pass.
RHAT_MAX: float = 1.01
ESS_MIN: float = 400.0

#: Prior scales of the order-variance model, logit scale:
#: mu_m ~ Normal(0, 2.5); sigma_set ~ HalfStudentT(3, 1); sigma_query_m ~ HalfNormal(2.5);
#: sigma_order_m ~ HalfNormal(1); sigma_resid_m ~ HalfNormal(1); the order sd of
#: (method m, demo set s) is sigma_order_m * exp(tau_order * z_ms), z_ms ~ N(0, 1),
#: with the shared log-scale spread tau_order FIXED at 0.5 (not learnt: see the
#: Notes of fit_order_variance).
PRIOR_SCALES: dict[str, float] = {
    "mu": 2.5,
    "sigma_set": 1.0,
    "sigma_query": 2.5,
    "sigma_order": 1.0,
    "tau_order": 0.5,
    "sigma_resid": 1.0,
}
#: Degrees of freedom of sigma_set's half-Student-t prior (Gelman 2006).
PRIOR_SET_NU: float = 3.0
#: Priors of the pooled (second-level) model: delta ~ Normal(0, 2.5),
#: sigma_between ~ HalfNormal(1), nu ~ Gamma(2, 0.1) (Juárez & Steel 2010).
POOLED_PRIORS: dict[str, float] = {"delta": 2.5, "sigma_between": 1.0, "nu_alpha": 2.0, "nu_beta": 0.1}

#: What the Bayesian log ratio compares (the ``quantity`` column of the table).
QUANTITY: str = "per-query SD across orders (sqrt(sigma_order^2 + sigma_resid^2))"

#: Free random variables of the order-variance model (what the sampler returns).
_ORDER_VARS: tuple[str, ...] = ("sigma_set", "sigma_query", "sigma_order", "z_order", "sigma_resid")
_POOLED_VARS: tuple[str, ...] = ("delta", "sigma_between", "nu", "delta_task")
_STAT_KEYS: tuple[str, ...] = (
    "method_idx", "n_orders", "n_queries", "grand_mean",
    "ss_order", "df_order", "ss_query", "df_query", "ss_int", "df_int", "has_int",
)
_KEY = ["method", "demo_set", "order_id", "query_id"]
_SLICE = ["model", "task", "n_demos"]

#: Compiled nutpie models of sampler="nutpie-pymc", keyed by structure (kind and the shapes of the free
#: random variables). A pure performance cache: the data are swapped in with
#: ``with_data``, so a study whose slices share a design compiles once per process.
_NUTPIE_CACHE: dict[tuple[Any, ...], Any] = {}


# ---------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BayesResult:
    """Result of :func:`fit_order_variance` for one (model, task, N) slice.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per method compared with the reference; columns listed in
        :func:`fit_order_variance`.
    diagnostics : pandas.DataFrame
        :func:`hyptest.stats._arviz.summary_table` of every model parameter and
        of ``log_ratio`` (empty when nothing was sampled).
    idata : arviz.InferenceData or None
        Posterior draws (``mu``, ``sigma_query``, ``sigma_order``,
        ``sigma_resid``, ``sd_query`` with dim ``method``; ``sigma_order_set``
        with dim ``block`` labelled ``"method/demo_set"``; ``sigma_set``;
        ``log_ratio`` with dim ``method_b``) and ``sample_stats.diverging``;
        None when every method was order-invariant and nothing was sampled.
    log_ratio_draws : dict of str to numpy.ndarray
        Method -> 1-D read-only draws (chains pooled) of
        ``log(sd_query[reference] / sd_query[method])``; all ``+inf``
        (``-inf``) when only the method (the reference) is order-invariant,
        all NaN when both are.
    order_invariant : tuple of str
        Methods whose observed order spread was at most ``zero_spread_tol``:
        their ``sigma_order``, ``sigma_resid`` and ``sd_query`` are fixed at 0
        and they are not in the model.
    converged : bool
        Whether every diagnostic passed the gate.
    reason : str
        Why the gate failed ("" when it passed).
    n_divergences : int
        Divergent transitions after warm-up.
    sampler : str
        ``"nutpie"`` (the numba kernels), ``"nutpie-pymc"`` (nutpie on the
        PyMC-compiled model), ``"pymc"`` or ``"none"`` (nothing sampled).
    compile_s, sample_s, wall_time_s : float
        Seconds spent compiling (or loading) the model, sampling, and in the
        whole call.
    compile_cached : bool
        Whether nothing was compiled: the kernels came from numba's on-disk
        cache or were already loaded, or a compiled nutpie-pymc model was reused.
    """

    table: pd.DataFrame
    diagnostics: pd.DataFrame
    idata: Any
    log_ratio_draws: dict[str, np.ndarray]
    order_invariant: tuple[str, ...]
    converged: bool
    reason: str
    n_divergences: int
    sampler: str
    compile_s: float
    sample_s: float
    wall_time_s: float
    compile_cached: bool


@dataclass(frozen=True, slots=True)
class PooledResult:
    """Result of :func:`fit_pooled` for one comparison pooled over (model, task).

    Attributes
    ----------
    table : pandas.DataFrame
        One row; columns listed in :func:`fit_pooled`.
    per_task : pandas.DataFrame
        One row per input effect: ``model, task, estimate, posterior_sd``
        (the input) and ``shrunk_mean, shrunk_low, shrunk_high`` (posterior
        mean and HDI of that task's effect under the hierarchical model).
    diagnostics : pandas.DataFrame
        :func:`hyptest.stats._arviz.summary_table` of ``delta``,
        ``sigma_between``, ``nu`` and ``delta_task``.
    idata : arviz.InferenceData or None
        Posterior draws; None when nothing was sampled (all effects infinite).
    delta_draws : numpy.ndarray
        1-D read-only draws of the common effect ``delta``.
    converged : bool
    reason : str
    n_divergences : int
    sampler : str
    compile_s, sample_s, wall_time_s : float
    """

    table: pd.DataFrame
    per_task: pd.DataFrame
    diagnostics: pd.DataFrame
    idata: Any
    delta_draws: np.ndarray
    converged: bool
    reason: str
    n_divergences: int
    sampler: str
    compile_s: float
    sample_s: float
    wall_time_s: float


# ---------------------------------------------------------------------------
# lazy imports
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_pymc() -> Iterator[None]:
    """Keep PyMC's INFO logging and known notices off the console during a call."""
    loggers = [logging.getLogger(n) for n in ("pymc", "pymc.sampling.mcmc", "pymc.stats.convergence")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*ArviZ is undergoing a major refactor.*")
            warnings.filterwarnings("ignore", message=r".*effect of Potentials.*")
            warnings.filterwarnings("ignore", message=r".*[Ss]hape validation failed.*")
            warnings.filterwarnings("ignore", message=r".*PyTensor could not link to a BLAS.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _import_pymc() -> Any:
    try:
        with _quiet_pymc():
            import pymc as pm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "hyptest's Bayesian analysis needs PyMC; install the extra with "
            "`pip install 'hyptest[bayes]'`"
        ) from exc
    return pm


def _nutpie_available() -> bool:
    """Whether nutpie and numba (its compiler, and that of the kernels) are installed; imports neither."""
    return all(importlib.util.find_spec(name) is not None for name in ("nutpie", "numba"))


# ---------------------------------------------------------------------------
# nutpie on the hand-written kernels (hyptest.stats._bayes_kernels)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _KernelSpec:
    """Which hand-written model to sample, and its data.

    ``kind`` is ``"order"`` (``stats`` from :func:`_block_stats`, ``n_methods``
    modelled methods) or ``"pooled"`` (``estimate`` and ``se``).
    """

    kind: str
    n_methods: int = 0
    stats: dict[str, np.ndarray] | None = None
    estimate: np.ndarray | None = None
    se: np.ndarray | None = None


#: The kernels module once imported and self-checked in this process, or why not.
_KERNELS: dict[str, Any] = {}
#: Fields of nutpie.compile_pymc.CompiledPyMCModel and members of nutpie._lib that
#: _kernel_compiled relies on (nutpie 0.16; pinned in pyproject.toml).
_NUTPIE_FIELDS = frozenset({"dims", "compiled_logp_func", "compiled_expand_func", "initial_point_func",
                            "shared_data", "user_data", "n_expanded", "shape_info", "logp_func",
                            "expand_func", "_n_dim", "_shapes", "_coords"})
_NUTPIE_LIB = ("LogpFunc", "ExpandFunc", "PyMcModel", "PyVariable", "PySampler")


def _nutpie_internals_problem() -> str:
    """"" when nutpie has the internals the kernel path hands its cfuncs to, else what is missing."""
    try:
        from nutpie import _lib
        from nutpie.compile_pymc import CompiledPyMCModel
    except ImportError as exc:
        return f"nutpie's internals are not importable: {exc}"
    fields = {f.name for f in dataclasses.fields(CompiledPyMCModel)}
    missing = sorted(_NUTPIE_FIELDS - fields) + [n for n in _NUTPIE_LIB if not hasattr(_lib, n)]
    if missing:
        version = getattr(_lib, "__version__", "?")
        return f"nutpie {version} lacks {', '.join(missing)} (hyptest uses nutpie 0.16's internals)"
    return ""


def _import_kernels(private_cache: bool) -> tuple[Any, str, bool]:
    """Import :mod:`._bayes_kernels` and self-check it: ``(module or None, problem, numba compiled)``.

    With ``private_cache`` numba's cache for this import is a fresh temporary
    directory (removed at exit), so the kernels are compiled from this source
    whatever the user's cache holds.
    """
    import numba

    name = f"{__package__}._bayes_kernels"
    previous = numba.config.CACHE_DIR
    if private_cache:
        sys.modules.pop(name, None)
        numba.config.CACHE_DIR = tempfile.mkdtemp(prefix="hyptest-numba-")
        atexit.register(shutil.rmtree, numba.config.CACHE_DIR, True)
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - e.g. a corrupt numba cache file
        sys.modules.pop(name, None)
        return None, f"importing {name} failed ({type(exc).__name__}: {exc})", False
    finally:
        numba.config.CACHE_DIR = previous
    cfuncs = (module.order_logp_c, module.order_expand_c, module.pooled_logp_c, module.pooled_expand_c)
    compiled = any(getattr(f, "_cache_hits", 0) == 0 for f in cfuncs)
    problem = module.self_check()
    if problem:
        return None, f"the compiled kernels disagree with their source ({problem})", compiled
    return module, "", compiled


def _load_kernels() -> tuple[Any, str, bool]:
    """Import and self-check :mod:`._bayes_kernels` once per process.

    A kernel that numba cannot cache (no writable cache directory), cannot
    load from its cache (a corrupt file) or that fails
    :func:`._bayes_kernels.self_check` (a cache entry not from this source) is
    compiled once more into a private temporary cache, with a warning naming
    the problem. Returns the module (None when unusable), the problem ("" when
    none) and whether numba compiled anything (False: every callback came
    from its on-disk cache, or the module was already loaded).
    """
    if "module" in _KERNELS:
        return _KERNELS["module"], _KERNELS["problem"], False
    module, problem, compiled = None, _nutpie_internals_problem(), False
    if not problem:
        module, problem, compiled = _import_kernels(private_cache=False)
        if module is None:
            warnings.warn(f"{problem}; numba could not use its cache of hyptest's Bayes kernels (none writable, "
                          "or corrupt or stale): compiling them into a temporary cache for this process (~5 s); "
                          "set NUMBA_CACHE_DIR to a writable directory, or delete the corrupt cache "
                          "(NUMBA_CACHE_DIR, hyptest/stats/__pycache__ or ~/.cache/numba)", RuntimeWarning,
                          stacklevel=4)
            module, again, compiled = _import_kernels(private_cache=True)
            problem = f"{problem}; recompiled: {again}" if again else ""
    _KERNELS.update(module=module, problem=problem)
    return module, problem, compiled


def _unconstrained_names(names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> list[str]:
    """PyMC-style labels of the unconstrained coordinates (``sigma_query_log___0`` ...), as nutpie's coords."""
    out: list[str] = []
    for name, shape in zip(names, shapes):
        out += [name] if not shape else [f"{name}_{i}" for i in range(shape[0])]
    return out


def _kernel_layout(spec: _KernelSpec, kernels: Any) -> tuple[np.ndarray, Any, Any, Any, list[str],
                                                             list[tuple[int, ...]], list[str]]:
    """Buffer, logp and expand cfuncs, initial-point function, names and shapes of the draws, unconstrained labels."""
    if spec.kind == "order":
        assert spec.stats is not None
        m, b = spec.n_methods, len(spec.stats["method_idx"])
        buf = kernels.order_buffer(spec.stats, m, PRIOR_SCALES, PRIOR_SET_NU)
        shapes: list[tuple[int, ...]] = [(), (m,), (m,), (b,), (m,)]
        value_names = ["sigma_set_log__", "sigma_query_log__", "sigma_order_log__", "z_order", "sigma_resid_log__"]
        return (buf, kernels.order_logp_c, kernels.order_expand_c, kernels.order_initial_point,
                list(_ORDER_VARS), shapes, _unconstrained_names(value_names, shapes))
    assert spec.estimate is not None and spec.se is not None
    n = len(spec.estimate)
    buf = kernels.pooled_buffer(spec.estimate, spec.se, POOLED_PRIORS)
    labels = _unconstrained_names(["delta", "sigma_between_log__", "nu_log__", "z"], [(), (), (), (n,)])
    return (buf, kernels.pooled_logp_c, kernels.pooled_expand_c, kernels.pooled_initial_point,
            list(_POOLED_VARS), [(), (), (), (n,)], labels)


def _kernel_compiled(spec: _KernelSpec) -> tuple[Any, bool, str]:
    """A nutpie model that samples the hand-written density of ``spec``.

    nutpie's ``CompiledPyMCModel`` is given the kernels' cfuncs, their data
    buffer (the ``user_data`` pointer) and a PyMC-like initial point: its
    ``_make_model`` hands the addresses to nutpie's sampler exactly as for a
    PyMC-compiled model, and nothing from PyMC or PyTensor is involved.

    Returns the model (None if the kernels cannot be used), whether no numba
    compilation was needed, and the problem ("" when none).
    """
    kernels, problem, compiled_now = _load_kernels()
    if kernels is None:
        return None, False, problem
    from nutpie.compile_pymc import CompiledPyMCModel

    buf, logp_c, expand_c, init, names, shapes, labels = _kernel_layout(spec, kernels)
    n_dim = len(labels)
    sizes = [math.prod(sh) for sh in shapes]
    starts = np.cumsum([0, *sizes])
    model = CompiledPyMCModel(
        dims={}, _n_dim=n_dim, _coords={"unconstrained_parameter": pd.Index(labels)},
        _shapes={name: sh for name, sh in zip(names, shapes)},
        compiled_logp_func=logp_c, compiled_expand_func=expand_c,
        initial_point_func=functools.partial(init, buf), shared_data={}, user_data=buf,
        n_expanded=int(starts[-1]),
        shape_info=(names, [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])], shapes),
        logp_func=None, expand_func=None,
    )
    return model, not compiled_now, ""


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SamplerArgs:
    rope: float
    hdi_prob: float
    draws: int
    tune: int
    chains: int
    sampler: str
    seed: int


@dataclass(frozen=True, slots=True)
class _Design:
    """A validated slice: one complete orders x queries grid per (method, demo set)."""

    model: Any
    task: Any
    n_demos: int
    reference: str
    methods: tuple[str, ...]  # compared methods, without the reference
    grids: dict[tuple[str, Any], pd.DataFrame]  # (method, set) -> orders x queries, logit p
    spread: dict[str, float]  # method -> max within-(set, query) range of logit p across orders
    n_seeds: int


def _validate_sampler_args(
    rope: object, hdi_prob: object, draws: object, tune: object, chains: object,
    sampler: object, seed: object,
) -> _SamplerArgs:
    r = validate_real(rope, "rope")
    if not (math.isfinite(r) and r > 0):
        raise ValueError(f"`rope` must be a positive finite half-width, got {r!r}")
    p = validate_probability(hdi_prob, "hdi_prob")
    validate_choice(sampler, "sampler", ("auto", "nutpie", "nutpie-pymc", "pymc"))
    if sampler == "auto":
        chosen = "nutpie" if _nutpie_available() else "pymc"
    elif sampler in ("nutpie", "nutpie-pymc") and not _nutpie_available():
        raise ImportError(
            f"`sampler={sampler!r}` needs nutpie and numba; install them with `pip install 'hyptest[bayes]'` "
            "or pass sampler='pymc'"
        )
    else:
        chosen = str(sampler)
    return _SamplerArgs(
        rope=r,
        hdi_prob=p,
        draws=validate_count(draws, "draws"),
        tune=validate_count(tune, "tune", minimum=0),
        chains=validate_count(chains, "chains", minimum=2),
        sampler=chosen,
        seed=validate_count(seed, "seed", minimum=0),
    )


def _validate_target_accept(target_accept: object) -> float:
    return validate_probability(target_accept, "target_accept")


def _validate_per_order(
    per_order: object, reference: object, methods: object, zero_spread_tol: object,
    *, need_outcome: bool = True,
) -> _Design:
    needed = [*_SLICE, *_KEY] + (["p_gold"] if need_outcome else [])
    per_order = validate_frame(per_order, "per_order", needed, hint=f"; it needs {needed}")
    if per_order.empty:
        raise ValueError("`per_order` has no rows")
    slices = per_order[_SLICE].drop_duplicates()
    if len(slices) != 1:
        raise ValueError(
            f"`per_order` must hold one (model, task, n_demos) slice, got {len(slices)}: "
            f"{slices.to_dict('records')[:5]}; call once per slice, e.g. "
            "`for key, part in per_order.groupby(['model', 'task', 'n_demos'])`"
        )
    if not isinstance(reference, str):
        raise TypeError(f"`reference` must be a method name (str), got {reference!r}")
    present = sorted(map(str, per_order["method"].unique()))
    if reference not in present:
        raise ValueError(f"`reference` method {reference!r} has no rows in `per_order`; methods: {present}")
    if methods is None:
        chosen = tuple(m for m in present if m != reference)
    else:
        if isinstance(methods, str) or not isinstance(methods, Sequence):
            raise TypeError(f"`methods` must be a sequence of method names or None, got {methods!r}")
        chosen = tuple(str(m) for m in methods)
        unknown = [m for m in chosen if m not in present]
        if unknown:
            raise ValueError(f"`methods` {unknown} have no rows in `per_order`; methods: {present}")
        if reference in chosen:
            raise ValueError(f"`methods` must not contain the `reference` {reference!r}")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"`methods` has duplicates: {list(chosen)}")
    if not chosen:
        raise ValueError(f"`per_order` has no method besides the reference {reference!r} to compare")
    tol = validate_real(zero_spread_tol, "zero_spread_tol")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"`zero_spread_tol` must be a finite number >= 0, got {tol!r}")

    data = per_order[per_order["method"].astype(str).isin((reference, *chosen))].copy()
    data["method"] = data["method"].astype(str)
    data, n_seeds = _average_seeds(_with_logits(data, need_outcome))
    grids, spread = _order_grids(data, (reference, *chosen), tol)
    row = slices.iloc[0]
    n_demos = row["n_demos"]
    return _Design(
        model=row["model"],
        task=row["task"],
        n_demos=int(n_demos) if isinstance(n_demos, (Integral, np.integer)) else n_demos,
        reference=reference,
        methods=chosen,
        grids=grids,
        spread=spread,
        n_seeds=n_seeds,
    )


def _with_logits(data: pd.DataFrame, need_outcome: bool) -> pd.DataFrame:
    """``data`` with ``y``, the clipped logit of ``p_gold`` (0 when the outcome is not needed)."""
    if need_outcome:
        p = pd.to_numeric(data["p_gold"], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(p) | (p < 0) | (p > 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"`per_order['p_gold']` must be probabilities in [0, 1] without NaN, got "
                f"{data['p_gold'].iloc[i]!r} in row {data.index[i]!r} ({int(bad.sum())} bad value(s))"
            )
        pc = np.clip(p, CLIP, 1 - CLIP)
        data["y"] = np.log(pc) - np.log1p(-pc)
    else:
        data["y"] = 0.0
    return data


def _average_seeds(data: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One ``y`` per (method, demo set, order, query), averaged over training seeds; and the most seeds of a key.

    Raises
    ------
    ValueError
        For a duplicate row (of a seed, or of a key when there is no ``seed`` column).
    """
    n_seeds = 1
    if "seed" in data.columns:
        n_seeds = int(data.groupby(_KEY, sort=False)["seed"].nunique().max())
        dup = data.duplicated([*_KEY, "seed"])
        if dup.any():
            raise ValueError(
                f"`per_order` has {int(dup.sum())} duplicate (method, demo_set, order_id, query_id, seed) "
                f"row(s), e.g. {data.loc[dup, [*_KEY, 'seed']].iloc[0].to_dict()}"
            )
        data = data.groupby(_KEY, sort=True, as_index=False)["y"].mean()
    else:
        dup = data.duplicated(_KEY)
        if dup.any():
            raise ValueError(
                f"`per_order` has {int(dup.sum())} duplicate (method, demo_set, order_id, query_id) "
                f"row(s), e.g. {data.loc[dup, _KEY].iloc[0].to_dict()}; with several training seeds "
                "add a `seed` column (logits are then averaged over seeds)"
            )
    return data, n_seeds


def _order_grids(data: pd.DataFrame, methods: tuple[str, ...],
                 tol: float) -> tuple[dict[tuple[str, Any], pd.DataFrame], dict[str, float]]:
    """Each (method, demo set)'s order x query grid of ``y``, and each method's largest spread across orders.

    A spread of at most ``tol`` is set to 0 (the method is taken as order-invariant).

    Raises
    ------
    ValueError
        For a grid with a missing cell, or fewer than 2 orders or 2 queries.
    """
    grids: dict[tuple[str, Any], pd.DataFrame] = {}
    spread: dict[str, float] = {}
    for (method, demo_set), part in data.groupby(["method", "demo_set"], sort=True):
        grid = part.pivot(index="order_id", columns="query_id", values="y")
        if grid.isna().any().any():
            n_missing = int(grid.isna().sum().sum())
            raise ValueError(
                f"`per_order` must hold every (order_id, query_id) pair of each (method, demo_set); "
                f"method {method!r}, demo set {demo_set!r} misses {n_missing} of {grid.size}"
            )
        if grid.shape[0] < 2 or grid.shape[1] < 2:
            raise ValueError(
                f"`per_order` needs at least 2 orders and 2 queries per (method, demo_set); "
                f"method {method!r}, demo set {demo_set!r} has {grid.shape[0]} order(s) and "
                f"{grid.shape[1]} query(ies)"
            )
        grids[(method, demo_set)] = grid
        values = grid.to_numpy(float)
        spread[method] = max(spread.get(method, 0.0), float(np.ptp(values, axis=0).max()))
    for method in methods:
        spread[method] = spread[method] if spread.get(method, 0.0) > tol else 0.0
    return grids, spread


# ---------------------------------------------------------------------------
# sufficient statistics and the model
# ---------------------------------------------------------------------------


def _block_stats(
    grids: dict[tuple[str, Any], pd.DataFrame], methods: Sequence[str], interaction_tol: float = 0.0
) -> dict[str, np.ndarray]:
    """Sufficient statistics of each (method, demo set) grid ``Y`` (orders x queries).

    ``grand_mean = mean(Y)``; ``ss_order = Q sum_o (row_mean_o - grand)^2`` on
    ``O - 1`` df; ``ss_query = O sum_q (col_mean_q - grand)^2`` on ``Q - 1`` df;
    ``ss_int`` = the double-centred sum of squares on ``(O - 1)(Q - 1)`` df.
    ``has_int`` is 1 for the blocks of a method whose pooled interaction mean
    square ``sum ss_int / sum df_int`` exceeds ``interaction_tol ** 2``, else 0
    (a pure order shift: ``sigma_resid`` is fixed at 0 for that method). The
    blocks come in the order of :func:`_block_labels`.
    """
    index = {m: i for i, m in enumerate(methods)}
    cols: dict[str, list[float]] = {k: [] for k in _STAT_KEYS}
    for (method, _), grid in grids.items():
        if method not in index:
            continue
        y = grid.to_numpy(float)
        n_o, n_q = y.shape
        grand = y.mean()
        rows = y.mean(axis=1)
        colm = y.mean(axis=0)
        inter = y - rows[:, None] - colm[None, :] + grand
        cols["method_idx"].append(index[method])
        cols["n_orders"].append(n_o)
        cols["n_queries"].append(n_q)
        cols["grand_mean"].append(grand)
        cols["ss_order"].append(n_q * float(((rows - grand) ** 2).sum()))
        cols["df_order"].append(n_o - 1)
        cols["ss_query"].append(n_o * float(((colm - grand) ** 2).sum()))
        cols["df_query"].append(n_q - 1)
        cols["ss_int"].append(float((inter**2).sum()))
        cols["df_int"].append((n_o - 1) * (n_q - 1))
        cols["has_int"].append(1.0)
    out = {k: np.asarray(v, dtype=float) for k, v in cols.items()}
    out["method_idx"] = out["method_idx"].astype(np.int64)
    for i in range(len(methods)):
        sel = out["method_idx"] == i
        if sel.any():
            resid_ms = out["ss_int"][sel].sum() / out["df_int"][sel].sum()
            out["has_int"][sel] = float(resid_ms > float(interaction_tol) ** 2)
    return out


def _block_labels(grids: dict[tuple[str, Any], pd.DataFrame], methods: Sequence[str]) -> list[str]:
    """``"method/demo_set"`` of each block, in the order of :func:`_block_stats`."""
    return [f"{m}/{s}" for (m, s) in grids if m in set(methods)]


def _build_order_model(pm: Any, n_methods: int, stats: dict[str, np.ndarray]) -> Any:
    """The order-variance model with every Gaussian effect and ``mu`` integrated out.

    Per block the orders x queries grid is rotated to the Helmert basis, where
    its covariance is diagonal (see Notes of :func:`fit_order_variance`). The
    block means of one method share ``mu_m ~ N(0, a)``, so they are jointly
    normal with covariance ``diag(d_s) + a 11'``, whose log density follows
    from the matrix determinant lemma and Sherman-Morrison. The order sd of a
    block is ``sigma_order[m] * exp(tau_order * z_order[block])``
    (non-centred log-normal, ``tau_order`` the fixed ``PRIOR_SCALES["tau_order"]``); a block with ``has_int = 0`` has no
    interaction term and ``sigma_resid`` 0.
    """
    import pytensor.tensor as pt

    log2pi = math.log(2 * math.pi)
    a = PRIOR_SCALES["mu"] ** 2
    n_blocks = len(stats["method_idx"])
    with pm.Model() as model:
        d = {k: pm.Data(k, stats[k]) for k in _STAT_KEYS}
        # half-t: few demo sets barely inform sigma_set, and a half-normal's
        # doubly-exponential right tail on the log scale makes NUTS diverge
        sigma_set = pm.HalfStudentT("sigma_set", nu=PRIOR_SET_NU, sigma=PRIOR_SCALES["sigma_set"])
        sigma_query = pm.HalfNormal("sigma_query", PRIOR_SCALES["sigma_query"], shape=n_methods)
        sigma_order = pm.HalfNormal("sigma_order", PRIOR_SCALES["sigma_order"], shape=n_methods)
        tau_order = PRIOR_SCALES["tau_order"]
        z_order = pm.Normal("z_order", 0.0, 1.0, shape=n_blocks)
        sigma_resid = pm.HalfNormal("sigma_resid", PRIOR_SCALES["sigma_resid"], shape=n_methods)
        m = d["method_idx"]
        h = d["has_int"]
        n_o, n_q = d["n_orders"], d["n_queries"]
        v_r = sigma_resid[m] ** 2
        v_e = h * v_r
        v_o = (sigma_order[m] * pt.exp(tau_order * z_order)) ** 2
        v_q = sigma_query[m] ** 2
        lam_order = v_e + n_q * v_o
        lam_query = v_e + n_o * v_q
        within = -0.5 * (
            h * (d["ss_int"] / v_r + d["df_int"] * (log2pi + pt.log(v_r)))
            + d["ss_order"] / lam_order + d["df_order"] * (log2pi + pt.log(lam_order))
            + d["ss_query"] / lam_query + d["df_query"] * (log2pi + pt.log(lam_query))
            + pt.log(n_o * n_q)
        )
        # block means: y_s ~ N(mu_m, d_s) with mu_m ~ N(0, a) integrated out
        var_mean = v_e / (n_o * n_q) + v_o / n_o + v_q / n_q + sigma_set**2
        onehot = pt.cast(pt.eq(m[:, None], pt.arange(n_methods)[None, :]), "float64")
        y = d["grand_mean"]
        prec_sum = pt.dot(1.0 / var_mean, onehot)  # sum_s 1/d_s per method
        wsum = pt.dot(y / var_mean, onehot)  # sum_s y_s/d_s per method
        n_blk = pt.sum(onehot, axis=0)
        means = -0.5 * (
            n_blk * log2pi + pt.dot(pt.log(var_mean), onehot) + pt.log1p(a * prec_sum)
            + pt.dot(y**2 / var_mean, onehot) - a * wsum**2 / (1.0 + a * prec_sum)
        )
        pm.Potential("loglik", within.sum() + means.sum())
    return model


def _derived(draws: dict[str, np.ndarray], stats: dict[str, np.ndarray], n_methods: int) -> dict[str, np.ndarray]:
    """Per-block order sd and per-method per-query SD across orders, from the sampled scales.

    ``sigma_order_set[..., b] = sigma_order[..., m_b] * exp(tau_order * z_order[..., b])``;
    ``sd_query[..., m]`` = mean over the method's blocks of
    ``sqrt(sigma_order_set^2 + has_int * sigma_resid[m]^2)``.
    """
    m = stats["method_idx"]
    so_set = draws["sigma_order"][..., m] * np.exp(PRIOR_SCALES["tau_order"] * draws["z_order"])
    v_e = stats["has_int"] * draws["sigma_resid"][..., m] ** 2
    per_block = np.sqrt(so_set**2 + v_e)
    onehot = (m[:, None] == np.arange(n_methods)[None, :]).astype(float)
    sd_query = (per_block @ onehot) / onehot.sum(axis=0)
    return {"sigma_order_set": so_set, "sd_query": sd_query}


def _draw_mu(
    draws: dict[str, np.ndarray], stats: dict[str, np.ndarray], n_methods: int, seed: int
) -> np.ndarray:
    """Draw ``mu`` from its exact conditional posterior given the sampled scales.

    ``mu_m | scales, data ~ N(b / (1/a + P), 1 / (1/a + P))`` with
    ``P = sum_s 1/d_s`` and ``b = sum_s y_s / d_s`` over the method's blocks.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6D75]))
    m = stats["method_idx"]
    n_o, n_q = stats["n_orders"], stats["n_queries"]
    v_e = stats["has_int"] * draws["sigma_resid"][..., m] ** 2
    v_o = _derived(draws, stats, n_methods)["sigma_order_set"] ** 2
    v_q = draws["sigma_query"][..., m] ** 2
    var_mean = v_e / (n_o * n_q) + v_o / n_o + v_q / n_q + draws["sigma_set"][..., None] ** 2
    onehot = (m[:, None] == np.arange(n_methods)[None, :]).astype(float)
    prec = 1.0 / PRIOR_SCALES["mu"] ** 2 + (1.0 / var_mean) @ onehot
    b = (stats["grand_mean"] / var_mean) @ onehot
    return b / prec + rng.standard_normal(prec.shape) / np.sqrt(prec)


def _build_pooled_model(pm: Any, estimate: np.ndarray, se: np.ndarray) -> Any:
    with pm.Model() as model:
        est = pm.Data("estimate", estimate)
        sd = pm.Data("posterior_sd", se)
        delta = pm.Normal("delta", 0.0, POOLED_PRIORS["delta"])
        sigma_between = pm.HalfNormal("sigma_between", POOLED_PRIORS["sigma_between"])
        nu = pm.Gamma("nu", alpha=POOLED_PRIORS["nu_alpha"], beta=POOLED_PRIORS["nu_beta"])
        z = pm.StudentT("z", nu=nu, mu=0.0, sigma=1.0, shape=len(estimate))
        delta_task = pm.Deterministic("delta_task", delta + sigma_between * z)
        pm.Normal("effects", mu=delta_task, sigma=sd, observed=est)
    return model


def _sample(
    kind: str, size: Any, build: Any, data: dict[str, np.ndarray], var_names: Sequence[str],
    args: _SamplerArgs, *, target_accept: float | None = None, kernel: _KernelSpec | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, float, float, bool, str]:
    """Sample the model with the chosen sampler.

    ``nutpie`` samples the hand-written density of ``kernel`` (falling back to
    ``nutpie-pymc`` with a warning if the kernels cannot be used);
    ``nutpie-pymc`` and ``pymc`` sample ``build(pm)``, the PyMC model.
    ``(kind, size)`` keys the nutpie compile cache of ``nutpie-pymc``: ``size``
    must determine the shapes of the model's free variables (an int or a tuple
    of ints).

    Returns the posterior draws of ``var_names`` as ``(chain, draw, ...)``
    arrays, the ``diverging`` flags ``(chain, draw)``, compile and sample
    seconds, whether a cached compiled model was used and the sampler that ran.
    """
    sampler = args.sampler
    t0 = time.perf_counter()
    if sampler == "nutpie" and kernel is not None:
        compiled, cached, problem = _kernel_compiled(kernel)
        if compiled is None:
            warnings.warn(f"hyptest's numba kernels for nutpie are unavailable ({problem}); "
                          "sampling the PyMC-compiled model instead (sampler='nutpie-pymc', slower)",
                          RuntimeWarning, stacklevel=3)
            sampler = "nutpie-pymc"
    elif sampler == "nutpie":
        sampler = "nutpie-pymc"
    if sampler == "nutpie-pymc":
        compiled, cached = _pymc_compiled(kind, size, build, data, var_names)
    compile_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    extra = {} if target_accept is None else {"target_accept": target_accept}
    if sampler == "pymc":
        cached = False
        pm = _import_pymc()
        with _quiet_pymc():
            model = build(pm)
        compile_s = time.perf_counter() - t0  # model build; PyTensor compiles inside pm.sample
        t1 = time.perf_counter()
        with _quiet_pymc():
            idata = pm.sample(
                draws=args.draws, tune=args.tune, chains=args.chains, random_seed=args.seed,
                model=model, progressbar=False, compute_convergence_checks=False, **extra,
            )
    else:
        import nutpie

        with _quiet_pymc():
            idata = nutpie.sample(
                compiled, draws=args.draws, tune=args.tune, chains=args.chains, seed=args.seed,
                progress_bar=False, save_warmup=False, **extra,
            )
    sample_s = time.perf_counter() - t1
    draws = {v: _arviz.posterior_draws(idata, v) for v in var_names}
    diverging = _arviz.sample_stat_draws(idata, "diverging")
    if diverging is None:
        diverging = np.zeros((args.chains, args.draws), dtype=bool)
    return draws, diverging.astype(bool), compile_s, sample_s, cached, sampler


def _pymc_compiled(kind: str, size: Any, build: Any, data: dict[str, np.ndarray],
                   var_names: Sequence[str]) -> tuple[Any, bool]:
    """nutpie's compiled PyMC model (``nutpie.compile_pymc_model``), cached per process by ``(kind, size)``."""
    import nutpie

    pm = _import_pymc()
    key = (kind, size)
    cached = key in _NUTPIE_CACHE
    if not cached:
        with _quiet_pymc():
            _NUTPIE_CACHE[key] = nutpie.compile_pymc_model(build(pm), var_names=list(var_names))
    return _NUTPIE_CACHE[key].with_data(**data), cached


def _gate(diagnostics: pd.DataFrame, n_div: int) -> tuple[bool, str]:
    """Apply R-hat <= 1.01, bulk and tail ESS >= 400 and zero divergences."""
    reasons: list[str] = []
    if n_div > 0:
        reasons.append(f"{n_div} divergent transition(s)")
    for _, row in diagnostics.iterrows():
        name = row["parameter"]
        r_hat = row["r_hat"]
        if not (np.isfinite(r_hat) and r_hat <= RHAT_MAX):
            reasons.append(f"r_hat({name})={r_hat:.3f} > {RHAT_MAX}")
        for col in ("ess_bulk", "ess_tail"):
            ess = row[col]
            if not (np.isfinite(ess) and ess >= ESS_MIN):
                reasons.append(f"{col}({name})={ess:.0f} < {ESS_MIN:.0f}")
    return (not reasons), "; ".join(reasons)


def _hdi_rope(low: float, high: float, rope: float) -> str:
    """Kruschke's HDI + ROPE decision mapped to the shared verdicts."""
    if low > rope or high < -rope:
        return "different"
    if -rope < low and high < rope:
        return "equivalent"
    return "inconclusive"


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float, copy=True)
    a.flags.writeable = False
    return a


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


@dataclass
class _OrderFit:
    """What the variance-components fit of the modelled (order-sensitive) methods gives.

    Order-invariant methods have their posterior means fixed at 0; with no
    modelled method, nothing is sampled (``sampler`` is ``"none"``).
    """

    sigma_order_mean: dict[str, float]
    sigma_resid_mean: dict[str, float]
    sd_query_mean: dict[str, float]
    log_ratio_draws: dict[str, np.ndarray]
    idata: Any = None
    diagnostics: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(_arviz.SUMMARY_COLUMNS)))
    converged: bool = True
    reason: str = ""
    n_divergences: int = 0
    compile_s: float = 0.0
    sample_s: float = 0.0
    compile_cached: bool = False
    sampler: str = "none"


def _fit_modelled(design: _Design, modelled: tuple[str, ...], invariant: tuple[str, ...],
                  no_interaction: tuple[str, ...], stats: dict[str, Any], args: _SamplerArgs,
                  target_accept: float) -> _OrderFit:
    """Sample the order model of the ``modelled`` methods and summarise it (posterior means, diagnostics)."""
    fit = _OrderFit({m: 0.0 for m in invariant}, {m: 0.0 for m in invariant}, {m: 0.0 for m in invariant}, {})
    if not modelled:
        return fit
    n_blocks = len(stats["method_idx"])
    draws_, diverging, fit.compile_s, fit.sample_s, fit.compile_cached, fit.sampler = _sample(
        "order", (len(modelled), n_blocks), lambda pm: _build_order_model(pm, len(modelled), stats),
        stats, _ORDER_VARS, args, target_accept=target_accept,
        kernel=_KernelSpec("order", n_methods=len(modelled), stats=stats),
    )
    draws_ = {"mu": _draw_mu(draws_, stats, len(modelled), args.seed), **draws_}
    derived = _derived(draws_, stats, len(modelled))
    sdq = derived["sd_query"]
    pairs = [m for m in design.methods if design.reference in modelled and m in modelled]
    posterior = {k: v for k, v in draws_.items() if k != "z_order"}
    posterior["sigma_order_set"] = derived["sigma_order_set"]
    posterior["sd_query"] = sdq
    dims: dict[str, list[str]] = {
        v: ["method"] for v in ("mu", "sigma_query", "sigma_order", "sigma_resid", "sd_query")
    }
    dims["sigma_order_set"] = ["block"]
    if pairs:
        i_ref = modelled.index(design.reference)
        posterior["log_ratio"] = np.stack(
            [np.log(sdq[:, :, i_ref]) - np.log(sdq[:, :, modelled.index(m)]) for m in pairs], axis=-1
        )
        dims["log_ratio"] = ["method_b"]
    fit.idata = _arviz.from_draws(
        posterior,
        sample_stats={"diverging": diverging},
        coords={"method": list(modelled), "method_b": pairs, "block": _block_labels(design.grids, modelled)},
        dims=dims,
        attrs={"sampler": fit.sampler, "reference": design.reference, "model_name": str(design.model),
               "task": str(design.task), "n_demos": str(design.n_demos), "quantity": QUANTITY,
               "no_interaction": ",".join(no_interaction)},
    )
    for i, m in enumerate(modelled):
        fit.sigma_order_mean[m] = float(draws_["sigma_order"][:, :, i].mean())
        fit.sigma_resid_mean[m] = 0.0 if m in no_interaction else float(draws_["sigma_resid"][:, :, i].mean())
        fit.sd_query_mean[m] = float(sdq[:, :, i].mean())
    for j, m in enumerate(pairs):
        fit.log_ratio_draws[m] = _readonly(posterior["log_ratio"][:, :, j].reshape(-1))
    fit.diagnostics = _arviz.summary_table(fit.idata, list(posterior), hdi_prob=args.hdi_prob)
    fit.n_divergences = int(diverging.sum())
    fit.converged, fit.reason = _gate(fit.diagnostics, fit.n_divergences)
    return fit


def _comparison_row(design: _Design, method: str, fit: _OrderFit, invariant: tuple[str, ...],
                    no_interaction: tuple[str, ...], args: _SamplerArgs,
                    zero_spread_tol: float) -> tuple[dict[str, Any], np.ndarray]:
    """One reference-vs-``method`` row of :func:`fit_order_variance` and its log-ratio draws.

    A pair where both methods are modelled reads the posterior; an order-invariant
    method (spread at most ``zero_spread_tol``) gives a fixed verdict: both
    invariant, equivalent with an undefined ratio; one of them, different with
    an infinite log ratio.
    """
    n_draws = args.chains * args.draws
    ref_inv = design.reference in invariant
    m_inv = method in invariant
    note = ""
    if method in fit.log_ratio_draws:
        d = fit.log_ratio_draws[method]
        est, sd = float(d.mean()), float(d.std(ddof=1))
        low, high = _arviz.hdi(d, args.hdi_prob)
        p_rope = float(np.mean(np.abs(d) <= args.rope))
        p_pos = float(np.mean(d > 0))
        verdict = _hdi_rope(low, high, args.rope)
    elif ref_inv and m_inv:
        est = sd = low = high = float("nan")
        p_rope, p_pos = 1.0, 0.0
        verdict = "equivalent"
        note = (f"both {design.reference!r} and {method!r} are order-invariant (spread <= "
                f"{zero_spread_tol:g}): per-query SD fixed at 0 for both; log ratio undefined")
        d = _readonly(np.full(n_draws, np.nan))
    else:
        sign = 1.0 if m_inv else -1.0
        inv = method if m_inv else design.reference
        est = low = high = sign * math.inf
        sd = 0.0
        p_rope, p_pos = 0.0, 1.0 if m_inv else 0.0
        verdict = "different"
        note = (f"{inv!r} is order-invariant (max range of logit p across orders <= "
                f"{zero_spread_tol:g}): per-query SD (sigma_order, sigma_resid) fixed at 0, "
                f"log ratio = {sign * math.inf}")
        d = _readonly(np.full(n_draws, sign * math.inf))
    shifts = [x for x in (design.reference, method) if x in no_interaction]
    if shifts:
        note = "; ".join(filter(None, [note, (
            f"{' and '.join(map(repr, shifts))} shift(s) every query alike with the order (no order x "
            f"query interaction, residual mean square <= {zero_spread_tol:g}^2): sigma_resid fixed at 0")]))
    if not fit.converged:
        verdict = "did_not_converge"
    row = {
        "model": design.model,
        "task": design.task,
        "n_demos": design.n_demos,
        "method_a": design.reference,
        "method_b": method,
        "analysis": "bayes_order_variance",
        "estimate": est,
        "posterior_sd": sd,
        "ci_low": float(low),
        "ci_high": float(high),
        "ci_level": args.hdi_prob,
        "ci_method": "HDI",
        "p_rope": p_rope,
        "p_positive": p_pos,
        "rope": args.rope,
        "verdict": verdict,
        "converged": fit.converged,
        "diagnostics": fit.reason,
        "note": note,
        "sampler": fit.sampler,
        "sigma_order_a": fit.sigma_order_mean[design.reference],
        "sigma_order_b": fit.sigma_order_mean[method],
        "sigma_resid_a": fit.sigma_resid_mean[design.reference],
        "sigma_resid_b": fit.sigma_resid_mean[method],
        "sd_query_a": fit.sd_query_mean[design.reference],
        "sd_query_b": fit.sd_query_mean[method],
        "quantity": QUANTITY,
    }
    return row, d


def fit_order_variance(
    per_order: pd.DataFrame,
    *,
    reference: str = "icl",
    methods: Sequence[str] | None = None,
    rope: float = math.log(1.25),
    hdi_prob: float = 0.94,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    sampler: Sampler = "auto",
    seed: int = 0,
    zero_spread_tol: float = 1e-3,
    target_accept: float = 0.9,
) -> BayesResult:
    """Compare each method's per-query SD across orders with the reference's (HDI + ROPE).

    For one (model, task, N) slice, fit the variance-components model of the
    Notes on ``y = logit(clip(p_gold, 1e-4, 1 - 1e-4))`` and decide, for every
    method ``m``, whether ``log(sd_query[reference] / sd_query[m])`` differs
    from 0 by the HDI + ROPE rule [2]_, where ``sd_query[m]`` is the
    model-implied standard deviation of one query's logit p across orders
    (order main effect and order x query interaction together: Theorem 1's
    quantity [1]_, the Bayesian counterpart of ``order_sensitivity``).

    Parameters
    ----------
    per_order : pandas.DataFrame
        One row per (method, demo_set, order_id, query_id) with columns
        ``model, task, n_demos, method, demo_set, order_id, query_id, p_gold``,
        all of a single (model, task, n_demos). Every (method, demo set) must
        have every (order, query) pair, with at least 2 orders and 2 queries.
        Methods trained with several seeds may come with a ``seed`` column: the
        logits are then averaged over seeds within (method, demo set, order,
        query) before fitting, so seed-to-seed noise that is not order-related
        does not count as order sensitivity (as ``order_sensitivity`` averages
        per-seed values).
    reference : str, default "icl"
        The method every other one is compared with (``method_a``).
    methods : sequence of str, optional
        Methods to compare (``method_b``); all others in ``per_order`` by
        default. Rows of other methods are ignored.
    rope : float, default log(1.25)
        Half-width of the region of practical equivalence on the log ratio:
        per-query SDs within a factor 1.25 count as equal (the frequentist
        equivalence margin's default).
    hdi_prob : float, default 0.94
        Mass of the highest-density interval.
    draws, tune, chains : int, default 1000, 1000, 4
        Posterior draws and warm-up steps per chain, and chains (>= 2, for R-hat).
    sampler : {"auto", "nutpie", "nutpie-pymc", "pymc"}, default "auto"
        ``nutpie``: nutpie's NUTS on the hand-written numba density (module
        docstring); ``nutpie-pymc``: nutpie on the PyMC-compiled model;
        ``pymc``: ``pymc.sample``. ``auto`` is ``nutpie`` when nutpie and
        numba are installed, else ``pymc``.
    seed : int, default 0
        Seed of the sampler.
    target_accept : float, default 0.9
        NUTS target acceptance rate.
    zero_spread_tol : float, default 1e-3
        A method whose largest range of logit p across the orders of any
        (demo set, query) is at most this is order-invariant: its
        ``sd_query`` is fixed at 0 (see Notes). A method whose order x query
        interaction mean square is at most ``zero_spread_tol ** 2`` (a pure
        order shift) is modelled with ``sigma_resid`` fixed at 0. The default sits far below
        any order effect of interest (0.1-1 on the logit scale) and above
        float-rounding noise of full-batch GD (~1e-4).

    Returns
    -------
    BayesResult
        ``table`` has one row per compared method with columns ``model, task,
        n_demos, method_a, method_b, analysis`` (``"bayes_order_variance"``),
        ``estimate`` (posterior mean of the log ratio), ``posterior_sd``,
        ``ci_low, ci_high`` (HDI), ``ci_level`` (``hdi_prob``), ``ci_method``
        (``"HDI"``), ``p_rope`` (posterior mass in ``[-rope, rope]``),
        ``p_positive`` (mass above 0: the reference is more order-sensitive),
        ``rope``, ``verdict`` (one of :data:`BAYES_VERDICTS`), ``converged``,
        ``diagnostics`` (the gate's reason, "" when it passed), ``note``,
        ``sampler``, ``sigma_order_a, sigma_order_b`` (posterior means of the
        methods' central order sds ``sigma_order[m]``), ``sigma_resid_a,
        sigma_resid_b``, ``sd_query_a, sd_query_b`` (posterior means of the
        per-query SDs compared; all 0 for order-invariant methods),
        ``quantity`` (:data:`QUANTITY`: what the log ratio compares),
        ``n_sets, n_orders, n_queries, n_seeds``.

    Raises
    ------
    TypeError, ValueError
        On malformed input, naming the argument.
    ImportError
        If PyMC (or nutpie and numba, with ``sampler="nutpie"`` or
        ``"nutpie-pymc"``) is not installed.

    See Also
    --------
    fit_pooled : pool the per-slice log ratios over models and tasks.
    prior_predictive : what the priors imply for per-query order sensitivity.
    hyptest.analysis.order.order_comparison : the frequentist counterpart.

    Notes
    -----
    **Model.** For method ``m``, demo set ``s``, order ``o`` and query ``q``

    .. math::

        y_{msoq} = \\mu_m + v_{ms} + u_{msq} + w_{mso} + e_{msoq},

    with demo-set effects ``v ~ N(0, sigma_set)`` (one scale shared by the
    methods: each method has only a few demo sets), query effects
    ``u ~ N(0, sigma_query[m])`` specific to the method *and* the demo set
    (ICL and fine-tuning move each query differently, and so does the demo
    set; anything that does not change with the order must sit in the
    order-free part, or a leftover set x query interaction would inflate the
    residual), order effects ``w ~ N(0, sigma_order[m, s])`` shared by all
    queries of that order in that demo set, and the (method, set, order,
    query) residual ``e ~ N(0, sigma_resid[m])`` (the order x query
    interaction). The order sd varies between demo sets, log-normally around
    the method's: ``sigma_order[m, s] = sigma_order[m] exp(tau z_ms)``,
    ``z_ms ~ N(0, 1)``, with one scale ``tau = 0.5`` shared by all methods
    (95% of demo sets within a factor ``e = 2.7`` of ``sigma_order[m]``).
    ``tau`` is fixed rather than learnt: with 2 demo sets per method nothing
    informs it, and a learnt ``tau`` (HalfNormal(0.5), or a boundary-avoiding
    Gamma(2, 5)) gave divergent transitions in 7 of 8 default-study-sized
    simulated fits (a funnel at large ``tau``, the per-set order sds being
    well identified by their ``O - 1`` order effects), a centred
    parametrisation more; fixed, 0 of 8. The compared quantity averages the
    observed demo sets, each identified by its own data, so it depends little
    on ``tau``. Priors (logit scale, weakly informative [3]_): ``mu ~ N(0,
    2.5)``, ``sigma_query ~ HalfNormal(2.5)`` (queries range from easy to
    hard), ``sigma_order ~ HalfNormal(1)`` and ``sigma_resid ~
    HalfNormal(1)`` (a shift of 1 in logit moves p = 0.5 by about 0.23; the
    half-normal keeps mass near 0, so an order-invariant method is not ruled
    out a priori), and ``sigma_set ~ HalfStudentT(3, 1)``: a few demo sets
    barely inform it, and a half-normal's doubly exponential right tail on
    the log scale made NUTS diverge in 31 of 100 small simulated fits (0 of
    540 with the half-t). :func:`prior_predictive` shows what these priors
    imply for the per-query std of p across orders.

    **Quantity.** For a fixed query of demo set ``s`` the variance of ``y``
    across orders is ``sigma_order[m, s]^2 + sigma_resid[m]^2``, so the
    per-query SD across orders of method ``m`` is

    .. math::

        \\mathrm{sd}_{query}[m] = \\frac{1}{S_m} \\sum_s
        \\sqrt{\\sigma_{order}[m, s]^2 + \\sigma_{resid}[m]^2},

    averaged over the method's ``S_m`` demo sets (the observed sets, as the
    frequentist ``order_sensitivity`` averages its (demo set, query) units),
    and the estimate is ``log(sd_query[reference] / sd_query[m])``. It is a
    function of the posterior draws, so its HDI carries the uncertainty of
    both components: when the interaction dominates (it is learnt from ``(O -
    1)(Q - 1)`` cells per set) the ratio is precise; when the order main
    effect dominates it is learnt from ``O - 1`` order effects per set only.
    ``sigma_order[m]`` alone (the old estimand, still in the table) is not
    Theorem 1's quantity: a method that moves every query together and one
    that moves each query on its own can have the same per-query spread with
    very different ``sigma_order``.

    **Computation.** The design is a complete orders x queries grid in each
    (method, set) block, so the Gaussian effects ``v, u, w`` are integrated
    out exactly: in the Helmert basis the block's covariance is diagonal, and
    its log-likelihood depends on the data only through the block mean and
    the order, query and interaction sums of squares with expected mean
    squares ``sigma_resid^2 + Q sigma_order[m, s]^2``, ``sigma_resid^2 + O
    sigma_query^2`` and ``sigma_resid^2`` (the balanced two-way random-effects
    ANOVA [4]_, [5]_). ``mu_m`` is integrated out too (the block means of a
    method are jointly normal given the scales), and its draws are taken
    afterwards from its exact conditional posterior. The sampled log density
    equals the full-data multivariate normal one with the priors (tested
    against scipy), but it has 1 + 3 M + (blocks) parameters instead of
    thousands: there is no funnel between the order sds and the order
    effects, and the cost does not grow with the number of rows. A method
    with any missing (order, query) cell is rejected rather than imputed.

    **Pure order shifts.** A method whose order x query interaction mean
    square is at most ``zero_spread_tol ** 2`` (every query moves by the same
    amount with the order) has a degenerate interaction likelihood; it is
    modelled with ``sigma_resid`` fixed at 0 (its interaction term dropped,
    its ``sigma_resid`` draws are prior draws and are reported as 0), so its
    per-query SD is its order sd alone. A note says so.

    **Order-invariant methods** (full-batch GD). If every logit p of a method
    is the same across orders (range <= ``zero_spread_tol`` in every demo set
    and query), its ``sigma_order`` *and* ``sigma_resid`` are 0 and its
    likelihood is degenerate (unbounded as the scales go to 0). Such a method
    is left out of the model with ``sd_query = 0``; its log ratio against
    a reference with order spread is ``+inf``, reported as ``estimate =
    ci_low = ci_high = inf``, ``p_rope = 0`` and, through the HDI + ROPE
    rule, ``"different"``, with a note. (If the reference is the invariant
    one the ratio is ``-inf``; if both are, it is undefined (NaN) and the
    verdict is ``"equivalent"``: both are exactly order-invariant.) The gate
    below still applies to the fitted model.

    **Decision.** HDI + ROPE [2]_: the HDI of the log ratio entirely outside
    ``[-rope, rope]`` -> ``"different"`` (Kruschke's "reject the null
    value"); entirely inside -> ``"equivalent"`` ("accept the null value for
    practical purposes"); otherwise ``"inconclusive"`` ("withhold
    decision"). The shared verdict ``"negligible"`` (a detectable but
    practically null difference) has no counterpart: an HDI inside the ROPE is
    "equivalent" whether or not it contains 0.

    **Gate.** Every sampled parameter (``sigma_*``, the per-set
    ``sigma_order_set``, the conditional ``mu`` draws, every ``sd_query``
    and every log ratio) needs R-hat <= 1.01 and bulk and tail ESS >= 400
    [6]_, and the run needs zero divergences; otherwise every row's verdict
    is ``"did_not_converge"`` (structural +-inf rows included: the call's
    analysis failed) and ``diagnostics`` lists the failures.

    **Precision.** If the order main effect dominates, ``sd_query[m]`` is
    learnt from about ``S (O - 1)`` order effects (S demo sets, O orders),
    so the log ratio's posterior sd is roughly ``1 / sqrt(S (O - 1))``: about
    0.27 for 2 sets x 8 orders (94% HDI half-width ~0.5), which can show a
    ratio above ~2 to be "different" but not "equivalent" with a ROPE of
    log(1.25). If the interaction dominates it is learnt from ``S (O - 1)(Q
    - 1)`` cells and the log ratio is precise enough (sd ~0.05 for 2 x 8 x
    32) to show "equivalent".

    With ``sampler="nutpie"`` nothing is compiled per slice or per process:
    the numba kernels serve every shape and load from numba's on-disk cache.
    With ``"nutpie-pymc"`` compiled models are cached in-process by the number
    of modelled methods and of (method, demo set) blocks (the data are swapped
    in), so the slices of a study compile once per process.

    References
    ----------
    .. [1] Shen, Mishra, Khashabi (2023), Do pretrained Transformers learn
       in-context by gradient descent? arXiv:2310.08540.
    .. [2] Kruschke (2018), Rejecting or accepting parameter values in
       Bayesian estimation. AMPPS 1(2), 270-280.
    .. [3] Gelman (2006), Prior distributions for variance parameters in
       hierarchical models. Bayesian Analysis 1(3), 515-534.
    .. [4] Searle, Casella, McCulloch (1992), Variance Components. Wiley,
       ch. 4 (balanced data).
    .. [5] Gelman (2005), Analysis of variance: why it is more important than
       ever. Annals of Statistics 33(1), 1-53.
    .. [6] Vehtari, Gelman, Simpson, Carpenter, Bürkner (2021),
       Rank-normalization, folding, and localization: an improved R-hat for
       assessing convergence of MCMC. Bayesian Analysis 16(2), 667-718.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rows = [
    ...     dict(model="m", task="t", n_demos=4, method=meth, demo_set=s, order_id=o,
    ...          query_id=q, p_gold=1 / (1 + np.exp(-(q / 4 + sd * w[s, o] + 0.2 * rng.normal()))))
    ...     for meth, sd in (("icl", 1.0), ("sgd", 0.3))
    ...     for w in [rng.normal(size=(4, 8))]
    ...     for s in range(4) for o in range(8) for q in range(8)
    ... ]
    >>> res = fit_order_variance(pd.DataFrame(rows), draws=500, tune=500)  # doctest: +SKIP
    >>> res.table[["method_b", "verdict"]].to_dict("records")  # doctest: +SKIP
    [{'method_b': 'sgd', 'verdict': 'different'}]
    """
    t_start = time.perf_counter()
    design = _validate_per_order(per_order, reference, methods, zero_spread_tol)
    args = _validate_sampler_args(rope, hdi_prob, draws, tune, chains, sampler, seed)
    ta = _validate_target_accept(target_accept)

    all_methods = (design.reference, *design.methods)
    modelled = tuple(m for m in all_methods if design.spread[m] > 0)
    invariant = tuple(m for m in all_methods if design.spread[m] == 0)
    stats = _block_stats(design.grids, modelled, interaction_tol=float(zero_spread_tol))
    no_interaction = tuple(
        m for i, m in enumerate(modelled) if not stats["has_int"][stats["method_idx"] == i].any()
    )
    fit = _fit_modelled(design, modelled, invariant, no_interaction, stats, args, ta)

    sizes = {
        "n_sets": len({s for (_, s) in design.grids}),
        "n_orders": max(g.shape[0] for g in design.grids.values()),
        "n_queries": max(g.shape[1] for g in design.grids.values()),
        "n_seeds": design.n_seeds,
    }
    lr_draws = fit.log_ratio_draws
    rows: list[dict[str, Any]] = []
    for method in design.methods:
        row, lr_draws[method] = _comparison_row(design, method, fit, invariant, no_interaction, args,
                                                float(zero_spread_tol))
        rows.append({**row, **sizes})
    return BayesResult(
        table=pd.DataFrame(rows),
        diagnostics=fit.diagnostics,
        idata=fit.idata,
        log_ratio_draws=lr_draws,
        order_invariant=invariant,
        converged=fit.converged,
        reason=fit.reason,
        n_divergences=fit.n_divergences,
        sampler=fit.sampler,
        compile_s=fit.compile_s,
        sample_s=fit.sample_s,
        wall_time_s=time.perf_counter() - t_start,
        compile_cached=fit.compile_cached,
    )


def _validate_effects(per_task_effects: object) -> pd.DataFrame:
    needed = ["model", "task", "method_a", "method_b", "estimate", "posterior_sd"]
    per_task_effects = validate_frame(per_task_effects, "per_task_effects", needed,
                                      hint=f"; it needs {needed} (the `table` of fit_order_variance has them)")
    keys = ["method_a", "method_b"] + (["n_demos"] if "n_demos" in per_task_effects.columns else [])
    groups = per_task_effects[keys].drop_duplicates()
    if len(groups) != 1:
        raise ValueError(
            f"`per_task_effects` must hold one comparison ({', '.join(keys)}), got {len(groups)}: "
            f"{groups.to_dict('records')[:5]}; call once per comparison"
        )
    if per_task_effects.duplicated(["model", "task"]).any():
        raise ValueError("`per_task_effects` has more than one row for a (model, task)")
    if len(per_task_effects) < 2:
        raise ValueError(
            f"`per_task_effects` needs at least 2 (model, task) effects to pool, got {len(per_task_effects)}"
        )
    est = pd.to_numeric(per_task_effects["estimate"], errors="coerce").to_numpy(float)
    sd = pd.to_numeric(per_task_effects["posterior_sd"], errors="coerce").to_numpy(float)
    if np.isnan(est).any():
        raise ValueError("`per_task_effects['estimate']` has NaN (e.g. two order-invariant methods); drop those rows")
    finite = np.isfinite(est)
    if finite.any() and not finite.all():
        raise ValueError(
            "`per_task_effects` mixes finite and infinite estimates (order-invariant methods in some "
            "tasks only); pool them separately"
        )
    if not finite.any() and len(set(np.sign(est))) != 1:
        raise ValueError("`per_task_effects` has both +inf and -inf estimates")
    if finite.all() and not (np.isfinite(sd).all() and (sd > 0).all()):
        raise ValueError("`per_task_effects['posterior_sd']` must be positive and finite")
    return per_task_effects.reset_index(drop=True)


@dataclass
class _PooledFit:
    """The pooled effect of :func:`fit_pooled`: its draws, summary, shrunk per-task effects and diagnostics."""

    delta_draws: np.ndarray
    mean: float
    sd: float
    low: float
    high: float
    p_rope: float
    p_positive: float
    sigma_between: float
    nu: float
    verdict: str
    shrunk: np.ndarray  # (n, 3): mean, HDI low, HDI high of each task's shrunk effect
    note: str = ""
    diagnostics: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(_arviz.SUMMARY_COLUMNS)))
    idata: Any = None
    n_divergences: int = 0
    compile_s: float = 0.0
    sample_s: float = 0.0
    sampler: str = "none"
    converged: bool = True
    reason: str = ""


def _pooled_infinite(est: np.ndarray, args: _SamplerArgs) -> _PooledFit:
    """Every effect infinite, of one sign (an order-invariant method in every task): nothing to sample."""
    sign = float(np.sign(est[0]))
    inf = sign * math.inf
    return _PooledFit(
        delta_draws=np.full(args.chains * args.draws, inf), mean=inf, sd=0.0, low=inf, high=inf, p_rope=0.0,
        p_positive=1.0 if sign > 0 else 0.0, sigma_between=0.0, nu=float("nan"), verdict="different",
        shrunk=np.column_stack([est, est, est]),
        note=f"every effect is {inf}: an order-invariant method in every task",
    )


def _pooled_sampled(effects: pd.DataFrame, est: np.ndarray, se: np.ndarray, args: _SamplerArgs,
                    target_accept: float) -> _PooledFit:
    """Sample the Student-t hierarchy over the finite effects and summarise the pooled effect."""
    n = len(est)
    draws_, diverging, compile_s, sample_s, _, sampler = _sample(
        "pooled", n, lambda pm: _build_pooled_model(pm, est, se),
        {"estimate": est, "posterior_sd": se}, _POOLED_VARS, args, target_accept=target_accept,
        kernel=_KernelSpec("pooled", estimate=est, se=se),
    )
    idata = _arviz.from_draws(
        draws_, sample_stats={"diverging": diverging},
        coords={"effect": [f"{r.model}/{r.task}" for r in effects.itertuples()]},
        dims={"delta_task": ["effect"]}, attrs={"sampler": sampler},
    )
    diagnostics = _arviz.summary_table(idata, list(_POOLED_VARS), hdi_prob=args.hdi_prob)
    n_div = int(diverging.sum())
    converged, reason = _gate(diagnostics, n_div)
    d = draws_["delta"].reshape(-1)
    low, high = _arviz.hdi(d, args.hdi_prob)
    dt = draws_["delta_task"].reshape(-1, n)
    return _PooledFit(
        delta_draws=d, mean=float(d.mean()), sd=float(d.std(ddof=1)), low=low, high=high,
        p_rope=float(np.mean(np.abs(d) <= args.rope)), p_positive=float(np.mean(d > 0)),
        sigma_between=float(draws_["sigma_between"].mean()), nu=float(np.median(draws_["nu"])),
        verdict=_hdi_rope(low, high, args.rope),
        shrunk=np.array([[dt[:, i].mean(), *_arviz.hdi(dt[:, i], args.hdi_prob)] for i in range(n)]),
        diagnostics=diagnostics, idata=idata, n_divergences=n_div, compile_s=compile_s, sample_s=sample_s,
        sampler=sampler, converged=converged, reason=reason,
    )


def fit_pooled(
    per_task_effects: pd.DataFrame,
    *,
    rope: float = math.log(1.25),
    hdi_prob: float = 0.94,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    sampler: Sampler = "auto",
    seed: int = 0,
    target_accept: float = 0.95,
) -> PooledResult:
    """Pool per-(model, task) log ratios into a common effect (Student-t hierarchy).

    Parameters
    ----------
    per_task_effects : pandas.DataFrame
        Rows of :func:`fit_order_variance` tables for ONE comparison (one
        ``method_a, method_b`` and, if present, one ``n_demos``), one row per
        (model, task), at least 2, with columns ``model, task, method_a,
        method_b, estimate, posterior_sd`` (and optionally ``converged``).
    rope, hdi_prob, draws, tune, chains, sampler, seed
        As in :func:`fit_order_variance`.
    target_accept : float, default 0.95
        NUTS target acceptance rate (high: few tasks make a funnel likely).

    Returns
    -------
    PooledResult
        ``table`` has one row with columns ``method_a, method_b, n_demos``
        (if given), ``analysis`` (``"bayes_order_variance_pooled"``), ``n``
        (effects pooled), ``estimate`` (posterior mean of the common effect
        ``delta``), ``posterior_sd``, ``ci_low, ci_high, ci_level, ci_method,
        p_rope, p_positive, rope, verdict, converged, diagnostics, note,
        sampler, sigma_between`` (posterior mean) and ``nu`` (posterior median).

    Notes
    -----
    Following Corani et al. [1]_, each task's effect ``delta_i`` is drawn from
    a Student-t around the common effect, and the first-level posterior is
    summarised by a normal likelihood (its mean and sd):

    .. math::

        \\hat d_i \\sim N(\\delta_i, s_i), \\quad
        \\delta_i = \\delta + \\sigma_b z_i, \\quad z_i \\sim t_\\nu(0, 1),

    with ``delta ~ N(0, 2.5)``, ``sigma_b ~ HalfNormal(1)`` and ``nu ~
    Gamma(2, 0.1)`` [2]_ (Corani et al. put uniform hyperpriors on the
    Gamma's parameters; with a handful of tasks ``nu`` is learnt little, so a
    fixed weakly informative Gamma is used). The t lets an outlying task pull
    the common effect less than a normal would. The non-centred ``z`` avoids
    the funnel between ``sigma_b`` and the ``delta_i``.

    The decision and the gate are those of :func:`fit_order_variance`
    (``delta``, ``sigma_between``, ``nu`` and every ``delta_task`` must pass).
    If a ``converged`` column marks a first-level fit as failed, the pooled
    verdict is ``"did_not_converge"`` too. If every effect is ``+inf`` (or
    every one ``-inf``: an order-invariant method in every task) nothing is
    sampled and the common effect is infinite, ``"different"``.

    References
    ----------
    .. [1] Corani, Benavoli, Demšar, Mangili, Zaffalon (2017), Statistical
       comparison of classifiers through Bayesian hierarchical modelling.
       Machine Learning 106, 1817-1837.
    .. [2] Juárez, Steel (2010), Model-based clustering of non-Gaussian
       panel data based on skew-t distributions. JBES 28(1), 52-66.
    .. [3] Kruschke (2018), Rejecting or accepting parameter values in
       Bayesian estimation. AMPPS 1(2), 270-280.
    """
    t_start = time.perf_counter()
    effects = _validate_effects(per_task_effects)
    args = _validate_sampler_args(rope, hdi_prob, draws, tune, chains, sampler, seed)
    ta = _validate_target_accept(target_accept)
    est = effects["estimate"].to_numpy(float)
    se = effects["posterior_sd"].to_numpy(float)
    n = len(effects)
    first = effects.iloc[0]
    base: dict[str, Any] = {"method_a": first["method_a"], "method_b": first["method_b"]}
    if "n_demos" in effects.columns:
        base["n_demos"] = first["n_demos"]
    upstream_failed = []
    if "converged" in effects.columns:
        upstream_failed = [f"{r.model}/{r.task}" for r in effects.itertuples() if not bool(r.converged)]

    if np.isfinite(est).all():
        pooled = _pooled_sampled(effects, est, se, args, ta)
    else:
        pooled = _pooled_infinite(est, args)
    converged, reason, verdict = pooled.converged, pooled.reason, pooled.verdict
    if upstream_failed:
        converged = False
        reason = "; ".join(filter(None, [reason, f"first-level fit(s) did not converge: {', '.join(upstream_failed)}"]))
    if not converged:
        verdict = "did_not_converge"
    table = pd.DataFrame([{
        **base, "analysis": "bayes_order_variance_pooled", "n": n, "estimate": pooled.mean,
        "posterior_sd": pooled.sd, "ci_low": float(pooled.low), "ci_high": float(pooled.high),
        "ci_level": args.hdi_prob, "ci_method": "HDI", "p_rope": pooled.p_rope, "p_positive": pooled.p_positive,
        "rope": args.rope, "verdict": verdict, "converged": converged, "diagnostics": reason, "note": pooled.note,
        "sampler": pooled.sampler, "sigma_between": pooled.sigma_between, "nu": pooled.nu,
    }])
    shrunk = pooled.shrunk
    per_task = pd.DataFrame({
        "model": effects["model"], "task": effects["task"], "estimate": est, "posterior_sd": se,
        "shrunk_mean": shrunk[:, 0], "shrunk_low": shrunk[:, 1], "shrunk_high": shrunk[:, 2],
    })
    return PooledResult(
        table=table, per_task=per_task, diagnostics=pooled.diagnostics, idata=pooled.idata,
        delta_draws=_readonly(pooled.delta_draws), converged=converged, reason=reason,
        n_divergences=pooled.n_divergences, sampler=pooled.sampler, compile_s=pooled.compile_s,
        sample_s=pooled.sample_s, wall_time_s=time.perf_counter() - t_start,
    )


def prior_predictive(
    per_order: pd.DataFrame,
    *,
    reference: str = "icl",
    methods: Sequence[str] | None = None,
    draws: int = 500,
    rng: np.random.Generator | int | None = None,
) -> pd.DataFrame:
    """Draw per-query order sensitivity from the prior predictive of the order-variance model.

    The hyper-parameters (and the per-(method, demo set) order sds) are drawn
    from the PyMC model of :func:`fit_order_variance`
    (``pymc.sample_prior_predictive``); the demo-set, query, order and residual effects are then simulated on the
    design of ``per_order`` (its methods, demo sets, orders and queries; its
    ``p_gold`` is not used), and each (method, set, query)'s standard
    deviation of ``p = expit(y)`` across orders is computed as in
    :func:`hyptest.metrics.order_sensitivity` (ddof = 1).

    Parameters
    ----------
    per_order : pandas.DataFrame
        As in :func:`fit_order_variance` (``p_gold`` may be absent).
    reference, methods
        Which methods' designs to use, as in :func:`fit_order_variance`.
    draws : int, default 500
        Prior draws.
    rng : numpy.random.Generator or int, optional
        Source of randomness.

    Returns
    -------
    pandas.DataFrame
        One row per (draw, method, demo set, query) with columns ``draw,
        method, demo_set, query_id, sd_gold`` (the implied per-query std of
        p across orders), ``sigma_order`` (that draw's order sd of the
        method, logit scale) and ``sd_query`` (that draw's per-query SD of
        logit p across orders of the method, the quantity
        :func:`fit_order_variance` compares).

    Notes
    -----
    A prior predictive check [1]_: the priors should allow both
    order-invariant behaviour (``sd_gold`` near 0) and strong order
    sensitivity (``sd_gold`` of 0.05-0.3), as both occur among ICL and
    fine-tuning methods. Order-invariant methods are simulated like the
    others; the prior does not know them.

    References
    ----------
    .. [1] Gabry, Simpson, Vehtari, Betancourt, Gelman (2019), Visualization
       in Bayesian workflow. JRSS A 182(2), 389-402.
    """
    design = _validate_per_order(per_order, reference, methods, 0.0, need_outcome=False)
    n_draws = validate_count(draws, "draws")
    gen = validate_rng(rng)
    all_methods = (design.reference, *design.methods)
    stats = _block_stats(design.grids, all_methods)
    pm = _import_pymc()
    with _quiet_pymc():
        model = _build_order_model(pm, len(all_methods), stats)
        prior = pm.sample_prior_predictive(
            draws=n_draws, model=model, var_names=list(_ORDER_VARS),
            random_seed=int(gen.integers(2**31 - 1)),
        )
    par = {}
    for v in _ORDER_VARS:
        arr = _arviz.posterior_draws(prior, v, group="prior")
        par[v] = arr.reshape(-1, *arr.shape[2:])
    derived = _derived(par, stats, len(all_methods))
    frames = []
    blocks = [(m, s) for (m, s) in design.grids if m in all_methods]
    for b, (method, demo_set) in enumerate(blocks):
        grid = design.grids[(method, demo_set)]
        i = all_methods.index(method)
        n_o, n_q = grid.shape
        s_set = par["sigma_set"][:, None, None]
        y = (
            PRIOR_SCALES["mu"] * gen.standard_normal((n_draws, 1, 1))
            + s_set * gen.standard_normal((n_draws, 1, 1))
            + par["sigma_query"][:, i, None, None] * gen.standard_normal((n_draws, 1, n_q))
            + derived["sigma_order_set"][:, b, None, None] * gen.standard_normal((n_draws, n_o, 1))
            + par["sigma_resid"][:, i, None, None] * gen.standard_normal((n_draws, n_o, n_q))
        )
        p = 1.0 / (1.0 + np.exp(-y))
        sd = p.std(axis=1, ddof=1)  # (draw, query)
        frames.append(
            pd.DataFrame(
                {
                    "draw": np.repeat(np.arange(n_draws), n_q),
                    "method": method,
                    "demo_set": demo_set,
                    "query_id": np.tile(np.asarray(grid.columns), n_draws),
                    "sd_gold": sd.reshape(-1),
                    "sigma_order": np.repeat(par["sigma_order"][:, i], n_q),
                    "sd_query": np.repeat(derived["sd_query"][:, i], n_q),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
