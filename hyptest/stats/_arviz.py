"""The one adapter between hyptest and ArviZ.

ArviZ 1.x rewrote its API (``InferenceData`` became an xarray ``DataTree``,
``az.summary`` and friends moved to ``arviz-stats``) and needs Python >= 3.12,
so hyptest pins ``arviz<1``.  Every use of ArviZ in hyptest goes through the
functions below, so a future port touches this file only.  Nothing else in
hyptest imports ArviZ; ArviZ is imported lazily, inside the functions, so
``import hyptest`` stays fast and works without the ``bayes`` extra.

Functions
---------
summary_table
    Posterior mean, sd, HDI, R-hat and bulk/tail ESS as a long DataFrame.
hdi
    Highest-density interval of a 1-D sample.
netcdf_bytes, to_netcdf, from_netcdf
    In-memory serialisation, atomic save and eager load of an ``InferenceData``.
rank_plot_data
    Per-chain rank histograms (numbers only; the report draws the SVG).
from_draws, posterior_draws, n_divergences
    Build an ``InferenceData`` from numpy draws and read draws and
    divergences back, whatever sampler produced it.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._validation import validate_count, validate_probability

__all__ = [
    "RankHistogram",
    "from_draws",
    "from_netcdf",
    "hdi",
    "n_divergences",
    "posterior_draws",
    "rank_plot_data",
    "sample_stat_draws",
    "summary_table",
    "netcdf_bytes",
    "to_netcdf",
]

#: Columns of :func:`summary_table`, in order.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "parameter", "mean", "sd", "hdi_low", "hdi_high", "hdi_prob", "r_hat", "ess_bulk", "ess_tail",
)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence ArviZ's import-time notice about its 1.x refactor."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*ArviZ is undergoing a major refactor.*")
        yield


def _az() -> Any:
    """Import ArviZ lazily; fail loudly, naming the extra, when it is missing."""
    try:
        with _quiet():
            import arviz as az
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "hyptest's Bayesian analysis needs ArviZ < 1; install the extra with "
            "`pip install 'hyptest[bayes]'`"
        ) from exc
    return az


def _validate_var_names(idata: Any, var_names: Sequence[str] | None) -> list[str]:
    available = list(idata.posterior.data_vars)
    if var_names is None:
        return available
    if isinstance(var_names, str):
        var_names = [var_names]
    missing = [v for v in var_names if v not in available]
    if missing:
        raise ValueError(
            f"`var_names` {missing} are not in the posterior; available: {available}"
        )
    return list(var_names)


# ---------------------------------------------------------------------------
# building and reading InferenceData
# ---------------------------------------------------------------------------


def from_draws(
    posterior: Mapping[str, np.ndarray],
    *,
    sample_stats: Mapping[str, np.ndarray] | None = None,
    coords: Mapping[str, Sequence[Any]] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Any:
    """Build an ``InferenceData`` from arrays shaped ``(chain, draw, ...)``.

    Parameters
    ----------
    posterior : mapping of str to numpy.ndarray
        Posterior draws, each with leading ``(chain, draw)`` axes.
    sample_stats : mapping of str to numpy.ndarray, optional
        Sampler statistics (e.g. ``diverging``), shaped ``(chain, draw)``.
    coords, dims : mapping, optional
        Named dimensions of the non-sample axes and their labels.
    attrs : mapping, optional
        Attributes stored on every group (numbers and strings only).

    Returns
    -------
    arviz.InferenceData
    """
    az = _az()
    return az.from_dict(
        posterior={k: np.asarray(v) for k, v in posterior.items()},
        sample_stats=None if sample_stats is None else {k: np.asarray(v) for k, v in sample_stats.items()},
        coords=None if coords is None else {k: list(v) for k, v in coords.items()},
        dims=None if dims is None else {k: list(v) for k, v in dims.items()},
        attrs=None if attrs is None else dict(attrs),
    )


def posterior_draws(idata: Any, var_name: str, *, group: str = "posterior") -> np.ndarray:
    """Return the draws of ``var_name`` in ``group`` as an array ``(chain, draw, ...)``.

    ``group`` is ``"posterior"`` or ``"prior"`` (``pymc.sample_prior_predictive``).
    """
    if group not in idata.groups():
        raise ValueError(f"`group` {group!r} is not in the InferenceData; groups: {list(idata.groups())}")
    if group == "posterior":
        _validate_var_names(idata, [var_name])
    elif var_name not in getattr(idata, group):
        raise ValueError(f"`var_name` {var_name!r} is not in the {group} group")
    return np.asarray(getattr(idata, group)[var_name].transpose("chain", "draw", ...).values)


def sample_stat_draws(idata: Any, name: str) -> np.ndarray | None:
    """Return the sampler statistic ``name`` as ``(chain, draw)``, or None if absent."""
    if "sample_stats" not in idata.groups() or name not in idata.sample_stats:
        return None
    return np.asarray(idata.sample_stats[name].transpose("chain", "draw", ...).values)


def n_divergences(idata: Any) -> int:
    """Number of divergent transitions after warm-up (0 when none were recorded).

    Both PyMC and nutpie store them as the boolean sample statistic
    ``diverging``.
    """
    if "sample_stats" not in idata.groups() or "diverging" not in idata.sample_stats:
        return 0
    return int(np.asarray(idata.sample_stats["diverging"].values).sum())


# ---------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------


def summary_table(
    idata: Any,
    var_names: Sequence[str] | None = None,
    *,
    hdi_prob: float = 0.94,
) -> pd.DataFrame:
    """Posterior summary and convergence diagnostics, one row per scalar parameter.

    Parameters
    ----------
    idata : arviz.InferenceData
        Must have a ``posterior`` group with at least 2 chains for R-hat.
    var_names : sequence of str, optional
        Posterior variables to summarise; all of them by default.
    hdi_prob : float, default 0.94
        Probability mass of the highest-density interval.

    Returns
    -------
    pandas.DataFrame
        Columns ``parameter`` (e.g. ``"sigma_order[icl]"``), ``mean``, ``sd``,
        ``hdi_low``, ``hdi_high``, ``hdi_prob``, ``r_hat`` (rank-normalised
        split R-hat), ``ess_bulk`` and ``ess_tail``. Numbers are not rounded.

    Notes
    -----
    Built from ``arviz.rhat(method="rank")``, ``arviz.ess(method="bulk" |
    "tail")`` and ``arviz.hdi``: the rank-normalised split R-hat and the bulk
    and tail effective sample sizes of Vehtari et al. [1]_, as in
    ``arviz.summary(kind="all")``. ``arviz.summary`` itself is not used: in
    ArviZ 0.23 it fails under pandas 3 for vector-valued variables.

    References
    ----------
    .. [1] Vehtari, Gelman, Simpson, Carpenter, Bürkner (2021),
       Rank-normalization, folding, and localization: an improved R-hat for
       assessing convergence of MCMC. Bayesian Analysis 16(2), 667-718.
    """
    prob = validate_probability(hdi_prob, "hdi_prob")
    names = _validate_var_names(idata, var_names)
    az = _az()
    post = idata.posterior[names]
    with _quiet(), warnings.catch_warnings():
        # too few draws for a diagnostic -> NaN, which the caller gates on
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message=r".*[Ss]hape validation failed.*")
        r_hat = az.rhat(post, method="rank")
        ess_bulk = az.ess(post, method="bulk")
        ess_tail = az.ess(post, method="tail")
        interval = az.hdi(post, hdi_prob=prob)
    frames = []
    for name in names:
        draws = posterior_draws(idata, name)
        flat = draws.reshape(draws.shape[0] * draws.shape[1], -1)
        bounds = np.asarray(interval[name].values).reshape(-1, 2)
        frames.append(
            pd.DataFrame(
                {
                    "parameter": _element_labels(idata, name),
                    "mean": flat.mean(axis=0),
                    "sd": flat.std(axis=0, ddof=1),
                    "hdi_low": bounds[:, 0],
                    "hdi_high": bounds[:, 1],
                    "hdi_prob": prob,
                    "r_hat": np.asarray(r_hat[name].values, dtype=float).reshape(-1),
                    "ess_bulk": np.asarray(ess_bulk[name].values, dtype=float).reshape(-1),
                    "ess_tail": np.asarray(ess_tail[name].values, dtype=float).reshape(-1),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def hdi(samples: np.ndarray | Sequence[float], prob: float = 0.94) -> tuple[float, float]:
    """Highest-density interval of a 1-D sample.

    Parameters
    ----------
    samples : array-like, 1-D
        Finite draws (e.g. posterior draws of one quantity, chains pooled).
    prob : float, default 0.94
        Probability mass inside the interval.

    Returns
    -------
    (low, high) : tuple of float
        The shortest interval spanned by ``floor(prob * n)`` + 1 consecutive
        sorted draws (``arviz.hdi``, unimodal). Among equally short ones (a
        uniform sample) any may be returned.

    Raises
    ------
    ValueError
        If ``samples`` is not 1-D, has fewer than 2 draws or is not finite,
        or ``prob`` is outside (0, 1).

    Examples
    --------
    >>> low, high = hdi(np.linspace(0.0, 1.0, 101), 0.9)
    >>> round(high - low, 9)
    0.9
    """
    p = validate_probability(prob, "prob")
    arr = np.asarray(samples, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"`samples` must be 1-D, got an array of shape {arr.shape}")
    if arr.size < 2:
        raise ValueError(f"`samples` must hold at least 2 draws, got {arr.size}")
    if not np.isfinite(arr).all():
        raise ValueError("`samples` must be finite; got NaN or infinite draws")
    az = _az()
    with _quiet():
        low, high = az.hdi(arr, hdi_prob=p)
    return float(low), float(high)


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------


def netcdf_bytes(idata: Any) -> bytes:
    """Serialise ``idata`` to NetCDF-4 (HDF5) bytes in memory, as ``idata.to_netcdf`` would write them.

    Nothing touches the disk, so a full disk cannot reach HDF5 (whose write
    errors can crash the process); the caller writes the bytes atomically.
    :func:`from_netcdf` and ``arviz.from_netcdf`` read the result.
    """
    import io

    import xarray as xr

    buffer = io.BytesIO()
    mode = "w"
    with _quiet():
        attrs = getattr(idata, "_attrs", None)
        if attrs:
            xr.Dataset(attrs=attrs).to_netcdf(buffer, mode=mode, engine="h5netcdf", group="/")
            mode = "a"
        groups = list(getattr(idata, "_groups_all", []))
        for group in groups:
            data = getattr(idata, group)
            encoding = {name: {"zlib": True} for name, values in data.variables.items()
                        if np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_}
            data.to_netcdf(buffer, mode=mode, group=f"/{group}", engine="h5netcdf", encoding=encoding)
            mode = "a"
        if not groups and not attrs:
            xr.Dataset().to_netcdf(buffer, mode="w", engine="h5netcdf")
    return buffer.getvalue()


def to_netcdf(idata: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``idata`` to ``path`` atomically: serialised in memory, then temp file, fsync, rename.

    A reader never sees a half-written file, and a full disk is an
    ``OSError`` from an ordinary write (HDF5 never writes to disk here).

    Parameters
    ----------
    idata : arviz.InferenceData
    path : str or os.PathLike
        Destination; its folder must exist.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from .._util import atomic_write_bytes

    target = Path(path)
    if not target.parent.is_dir():
        raise ValueError(f"`path` must be in an existing folder, got {str(target)!r}")
    return atomic_write_bytes(target, netcdf_bytes(idata))


def from_netcdf(path: str | os.PathLike[str]) -> Any:
    """Read an ``InferenceData`` written by :func:`to_netcdf`, fully into memory.

    The data are loaded eagerly, so no file handle stays open and the file
    may be replaced or deleted afterwards.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"`path` does not exist: {str(source)!r}")
    az = _az()
    with _quiet(), az.rc_context(rc={"data.load": "eager"}):
        return az.from_netcdf(str(source))


# ---------------------------------------------------------------------------
# rank plots
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RankHistogram:
    """Per-chain histograms of pooled ranks, the numbers behind a rank plot.

    Attributes
    ----------
    var_name : str
        The posterior variable.
    labels : tuple of str
        One label per scalar element, e.g. ``("sigma_order[icl]", ...)``.
    bin_edges : numpy.ndarray
        Shape ``(n_bins + 1,)``, on the rank scale ``[0, n_chains * n_draws]``.
    counts : numpy.ndarray
        Shape ``(n_elements, n_chains, n_bins)``: how many of a chain's draws
        fall in each rank bin.
    expected : float
        Count per bin if the chains mix well: ``n_draws / n_bins``.
    """

    var_name: str
    labels: tuple[str, ...]
    bin_edges: np.ndarray
    counts: np.ndarray
    expected: float


def _element_labels(idata: Any, var_name: str) -> list[str]:
    da = idata.posterior[var_name]
    extra = [d for d in da.dims if d not in ("chain", "draw")]
    if not extra:
        return [var_name]
    grids = np.meshgrid(*[np.asarray(da[d].values).astype(str) for d in extra], indexing="ij")
    flat = [g.reshape(-1) for g in grids]
    return [f"{var_name}[{', '.join(parts)}]" for parts in zip(*flat)]


def rank_plot_data(idata: Any, var_name: str, *, n_bins: int | None = None) -> RankHistogram:
    """Per-chain rank histograms of ``var_name`` for a rank plot.

    Draws of all chains are ranked together (ties get their average rank);
    each chain's ranks are then binned. With well-mixed chains every
    histogram is flat at ``expected`` (Vehtari et al. [1]_, Sec. 4.2).

    Parameters
    ----------
    idata : arviz.InferenceData
    var_name : str
        Posterior variable; vector variables give one histogram set per element.
    n_bins : int, optional
        Number of bins; by default twice Sturges' number for the per-chain
        draw count (as ArviZ's ``plot_rank``), at most ``n_draws``.

    Returns
    -------
    RankHistogram

    References
    ----------
    .. [1] Vehtari, Gelman, Simpson, Carpenter, Bürkner (2021),
       Rank-normalization, folding, and localization: an improved R-hat for
       assessing convergence of MCMC. Bayesian Analysis 16(2), 667-718.
    """
    from scipy.stats import rankdata

    draws = posterior_draws(idata, var_name)
    n_chains, n_draws = draws.shape[:2]
    flat = draws.reshape(n_chains, n_draws, -1)
    if n_bins is None:
        bins = min(n_draws, 2 * (int(math.ceil(math.log2(n_draws))) + 1))
    else:
        bins = validate_count(n_bins, "n_bins", allow_none=True)
    total = n_chains * n_draws
    edges = np.linspace(0.0, float(total), bins + 1)
    counts = np.empty((flat.shape[2], n_chains, bins), dtype=np.int64)
    for k in range(flat.shape[2]):
        ranks = rankdata(flat[:, :, k].reshape(-1), method="average").reshape(n_chains, n_draws)
        for c in range(n_chains):
            counts[k, c] = np.histogram(ranks[c], bins=edges)[0]
    return RankHistogram(
        var_name=var_name,
        labels=tuple(_element_labels(idata, var_name)),
        bin_edges=edges,
        counts=counts,
        expected=n_draws / bins,
    )
