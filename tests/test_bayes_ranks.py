"""The rank plots of a Bayesian slice are computed by the analysis and written into results.json."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("arviz")

from hyptest.analysis.bayes_ranks import RANK_PLOT_VAR, rank_plot, rank_plot_from_file  # noqa: E402
from hyptest.contract import BayesGate, RankPlot, read_results  # noqa: E402
from hyptest.stats._arviz import from_draws, to_netcdf  # noqa: E402

METHODS = ["icl", "sgd", "adam"]


def _idata(n_chains: int = 4, n_draws: int = 200, seed: int = 0, shift_chain: float = 0.0):
    rng = np.random.default_rng(seed)
    sd = np.abs(rng.normal(0.3, 0.05, size=(n_chains, n_draws, len(METHODS))))
    sd[0] += shift_chain  # a chain that did not mix: its ranks pile up at the top
    return sd, from_draws({"sd_query": sd}, coords={"method": METHODS}, dims={"sd_query": ["method"]})


def _naive_counts(draws: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rank of each draw among all chains' draws (1 = smallest; no ties in continuous draws), binned per chain."""
    n_chains, n_draws, n_elem = draws.shape
    out = np.zeros((n_elem, n_chains, len(edges) - 1), dtype=int)
    for k in range(n_elem):
        flat = draws[:, :, k].ravel()
        ranks = (flat[None, :] <= flat[:, None]).sum(axis=1).reshape(n_chains, n_draws)  # how many draws are <= it
        for c in range(n_chains):
            out[k, c] = np.histogram(ranks[c], bins=edges)[0]
    return out


@pytest.mark.parametrize("n_chains, n_draws, shift", [(4, 200, 0.0), (2, 37, 0.0), (3, 100, 5.0)])
def test_the_analysis_rank_histograms_equal_a_naive_count(n_chains, n_draws, shift):
    draws, idata = _idata(n_chains, n_draws, shift_chain=shift)
    out = rank_plot(idata)
    RankPlot.model_validate(out)  # what the contract says a rank plot is
    n_bins = min(n_draws, 2 * (math.ceil(math.log2(n_draws)) + 1))  # twice Sturges' number, as ArviZ's plot_rank
    edges = np.linspace(0, n_chains * n_draws, n_bins + 1)
    assert out["var_name"] == RANK_PLOT_VAR
    assert out["labels"] == [f"sd_query[{m}]" for m in METHODS]
    np.testing.assert_allclose(out["bin_edges"], edges)
    assert out["expected"] == pytest.approx(n_draws / n_bins)
    np.testing.assert_array_equal(np.array(out["counts"]), _naive_counts(draws, edges))
    assert all(sum(chain) == n_draws for elem in out["counts"] for chain in elem)
    if shift:  # the shifted chain holds the top ranks: its last bin is full, the others' empty
        top = np.array(out["counts"])[:, :, -1]
        assert (top[:, 0] > 0).all() and (top[:, 1:] == 0).all()


def test_the_rank_histograms_read_back_from_the_netcdf_file_are_the_same(tmp_path):
    _, idata = _idata()
    to_netcdf(idata, tmp_path / "slice.nc")
    assert rank_plot_from_file(tmp_path / "slice.nc") == rank_plot(idata)
    assert rank_plot(idata, "no_such_variable") is None  # a fit of an older hyptest: no sd_query
    assert rank_plot_from_file(tmp_path / "missing.nc") is None


def test_the_analysis_writes_the_rank_plot_and_the_gate_into_results():
    """The study workflow's Bayes summary carries each slice's rank plot, and the results their gate."""
    from hyptest.stats.bayes import ESS_MIN, RHAT_MAX
    from hyptest.workflows.study import _bayes_gate, _bayes_summary

    _, idata = _idata()
    fit = SimpleNamespace(idata=idata, log_ratio_draws={"sgd": np.linspace(-1, 1, 50)}, diagnostics=None,
                          converged=True, reason="", order_invariant=[], sampler="nutpie", wall_time_s=1.5)
    no_file = SimpleNamespace(**{**vars(fit), "idata": None})
    (sl, bare) = _bayes_summary({("m", "t", 4): fit, ("m", "t", 8): no_file})
    assert sl["rank_plot"] == rank_plot(idata) and bare["rank_plot"] is None
    assert _bayes_gate() == {"r_hat_max": RHAT_MAX, "ess_min": ESS_MIN}
    res = read_results({"study": {}, "comparisons": [], "bayes": [sl, bare], "bayes_gate": _bayes_gate(),
                        "provenance": {"hyptest_version": "0", "python": "3.11", "libraries": {}}})
    assert res.bayes[0].rank_plot.counts == sl["rank_plot"]["counts"]


def test_the_gate_of_older_files_is_the_one_hyptest_always_used():
    """Files written before ``bayes_gate`` read the defaults: the values of hyptest.stats.bayes."""
    from hyptest.stats.bayes import ESS_MIN, RHAT_MAX

    assert BayesGate() == BayesGate(r_hat_max=RHAT_MAX, ess_min=ESS_MIN)
