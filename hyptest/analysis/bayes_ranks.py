"""The rank plots of a Bayesian slice, computed for ``results.json`` (the report only draws them).

Per-chain rank histograms of the compared per-query SD across orders
(``sd_query``) show whether the sampler's chains mixed: all chains' draws are
ranked together and each chain's ranks are binned; well-mixed chains give
flat histograms (Vehtari et al. 2021, Sec. 4.2).  The analysis computes them
from the fit it just made (:func:`rank_plot`); ``hyptest report`` on a run
whose ``results.json`` predates the field computes them from the slice's
NetCDF file (:func:`rank_plot_from_file`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..stats._arviz import from_netcdf, rank_plot_data

__all__ = ["RANK_PLOT_VAR", "rank_plot", "rank_plot_from_file"]

#: Posterior variable whose rank plots the Bayes section shows.
RANK_PLOT_VAR = "sd_query"


def rank_plot(idata: Any, var_name: str = RANK_PLOT_VAR) -> dict[str, Any] | None:
    """The per-chain rank histograms of ``var_name``, as :class:`hyptest.contract.RankPlot` fields.

    Parameters
    ----------
    idata : arviz.InferenceData
        A fit's posterior (chains x draws).
    var_name : str, optional
        The posterior variable (default :data:`RANK_PLOT_VAR`).

    Returns
    -------
    dict or None
        ``var_name``, ``labels`` (one per element, e.g. ``"sd_query[icl]"``),
        ``counts`` (nested lists, shape element x chain x bin), ``bin_edges``
        and ``expected`` (draws per bin under perfect mixing), from
        :func:`hyptest.stats._arviz.rank_plot_data`; None when the posterior
        has no ``var_name`` (fits of older hyptest versions) or no draws.
    """
    posterior = getattr(idata, "posterior", None)
    if posterior is None or var_name not in posterior:
        return None
    rh = rank_plot_data(idata, var_name)
    counts = np.asarray(rh.counts)
    if counts.ndim != 3 or counts.size == 0:
        return None
    return {"var_name": rh.var_name, "labels": [str(lbl) for lbl in rh.labels],
            "counts": counts.astype(int).tolist(), "bin_edges": [float(e) for e in rh.bin_edges],
            "expected": float(rh.expected)}


def rank_plot_from_file(path: str | os.PathLike[str], var_name: str = RANK_PLOT_VAR) -> dict[str, Any] | None:
    """:func:`rank_plot` of the posterior stored in a slice's NetCDF file.

    Returns None when the file cannot be read (ArviZ missing, a damaged or
    foreign file) or holds no ``var_name``: the rank plot is an optional
    figure, and the report leaves it out, as it always did.
    """
    try:
        idata = from_netcdf(path)
        return rank_plot(idata, var_name)
    except Exception:  # noqa: BLE001 - optional figure: any failure (no arviz, bad file) leaves it out
        return None
