"""Calibration of the confirmatory decision, and the linear-attention control model.

Unmarked tests check the simulator of :mod:`hyptest.validation.calibration` (the planted
ratio equals a direct computation over every order of the population, rank-1
order effects, shared orders, the exact order-invariant control) and the
linear self-attention model. The test marked ``calibration`` pushes simulated
families of the default study's shape through ``order_comparison`` +
``decide`` and requires that no false-verdict rate is *significantly* above
alpha: the lower end of its Clopper-Pearson 95 % Monte-Carlo interval must
not exceed alpha (fixed seeds: deterministic).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hyptest.validation.calibration import (
    DESIGNS,
    POPULATION_CAP,
    OutputModel,
    SliceDesign,
    _drop_cells,
    calibrate,
    clopper_pearson,
    markdown_table,
    population_log_ratio,
    run_family,
    simulate_slice,
)
from hyptest.validation.linear_attention import (
    lsa_forward,
    lsa_predict,
    lsa_weights,
    one_step_gd_predict,
    weight_sparsity,
)
from hyptest.validation.regression import sample_regression_task

ALPHA = 0.05


# ---------------------------------------------------------------------------
# the simulator
# ---------------------------------------------------------------------------


def _direct_log_ratio(pop_icl: np.ndarray, pop_method: np.ndarray) -> float:
    """log(sum SD_icl / sum SD_method), SDs over every order of the population, by explicit loops."""
    S, P, Q = pop_icl.shape
    num = den = 0.0
    for s in range(S):
        for q in range(Q):
            num += float(np.std([pop_icl[s, o, q] for o in range(P)], ddof=1))
            den += float(np.std([pop_method[s, o, q] for o in range(P)], ddof=1))
    return math.log(num / den)


@pytest.mark.parametrize("ratio", [1.0, 1.25, 1.5, 2.0])
@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_planted_ratio_is_the_true_ratio(ratio, rho):
    design = DESIGNS["default"].slices[0]
    sim = simulate_slice(design, ratio, OutputModel(rho=rho), np.random.default_rng(7), keep_populations=True)
    assert design.population == 24 and sim.populations["icl"].shape == (2, 24, 32)
    for k in range(design.n_methods):
        pop = sim.populations[f"m{k}"]
        direct = _direct_log_ratio(sim.populations["icl"], pop)
        assert direct == pytest.approx(math.log(ratio), abs=1e-9)
        assert sim.true_log_ratio[k] == pytest.approx(direct, abs=1e-12)
        assert population_log_ratio(sim.populations["icl"], pop) == pytest.approx(direct, abs=1e-12)
        for s in range(design.n_sets):  # the planted ratio holds within every demo set
            assert _direct_log_ratio(sim.populations["icl"][s:s + 1], pop[s:s + 1]) == pytest.approx(
                math.log(ratio), abs=1e-9)


def test_sampled_orders_are_shared_and_distinct():
    design = SliceDesign(n_demos=4, n_sets=3, n_orders=8, n_queries=5, n_methods=2)
    sim = simulate_slice(design, 1.5, OutputModel(), np.random.default_rng(1), keep_populations=True)
    assert sim.orders.shape == (3, 8) and design.resample_orders
    for s in range(3):
        assert len(set(sim.orders[s])) == 8 and sim.orders[s].max() < 24
        np.testing.assert_array_equal(sim.icl[s], sim.populations["icl"][s, sim.orders[s]])
        for k in range(2):  # every method under the same orders as ICL
            np.testing.assert_array_equal(sim.methods[k][s], sim.populations[f"m{k}"][s, sim.orders[s]])
    every = SliceDesign(n_demos=2, n_sets=2, n_orders=2, n_queries=4, n_methods=1)
    assert not every.resample_orders and every.population == 2
    assert SliceDesign(8, 2, 4, 16, 6).population == POPULATION_CAP


def test_order_effects_are_rank_one_within_a_set():
    model = OutputModel(noise_sd=0.0, shift_sd=0.0)
    sim = simulate_slice(DESIGNS["default"].slices[0], 1.25, model, np.random.default_rng(3))
    for cube in [sim.icl, *sim.methods]:
        logit = np.log(cube / (1 - cube))
        for s in range(cube.shape[0]):
            centred = logit[s] - logit[s].mean(axis=0)  # (orders, queries): u[s, o] * v[s, q] * c
            sv = np.linalg.svd(centred, compute_uv=False)
            assert sv[1] < 1e-8 * sv[0]
    noisy = simulate_slice(DESIGNS["default"].slices[0], 1.25, OutputModel(), np.random.default_rng(3))
    sv = np.linalg.svd(np.log(noisy.icl[0] / (1 - noisy.icl[0])) - np.log(noisy.icl[0] / (1 - noisy.icl[0])).mean(0),
                       compute_uv=False)
    assert sv[1] > 1e-3 * sv[0]  # the order x query noise is there


def test_correlated_order_factors():
    design = SliceDesign(n_demos=8, n_sets=1, n_orders=4, n_queries=3, n_methods=1)
    model = OutputModel(rho=0.8, noise_sd=0.0, shift_sd=0.0, set_sd=0.0, loading_sd=0.0, mu_sd=0.0, mu_mean=0.0)
    sim = simulate_slice(design, 1.0, model, np.random.default_rng(0), keep_populations=True)
    a, b = sim.populations["icl"][0, :, 0], sim.populations["m0"][0, :, 0]
    r = np.corrcoef(np.log(a / (1 - a)), np.log(b / (1 - b)))[0, 1]
    assert abs(r - 0.8) < 0.05  # 1024 orders: SE of r about 0.011


def test_order_invariant_control_is_equivalent():
    for name in ("default", "shen"):
        table = run_family(DESIGNS[name], 7, None, OutputModel(), 0, n_resamples=1000)
        assert len(table) == 7 and (table["verdict"] == "equivalent").all()
        assert (table["estimate"] == 0).all() and (table["truth"] == 0).all()


def test_family_fills_slices_in_turn():
    table = run_family(DESIGNS["default"], 4, 1.0, OutputModel(), 1, n_resamples=1000)
    assert list(table["slice"]) == [0, 0, 0, 1]
    assert np.allclose(table["truth"], 0.0, atol=1e-9)
    assert set(table["verdict"]) <= {"different", "equivalent", "negligible", "inconclusive"}
    assert np.isclose(table["ci_level"], 1 - ALPHA).any()  # Holm: the last step is at alpha


def test_population_slice_is_estimated_exactly():
    # shen, N = 2: both orders run, the analysis does not resample them, and the estimate is the truth
    table = run_family(DESIGNS["shen"], 18, 1.5, OutputModel(), 2, n_resamples=1000)
    assert list(table["n_demos"]) == [4] * 6 + [8] * 6 + [2] * 6
    np.testing.assert_allclose(table["estimate"].iloc[12:], math.log(1.5), atol=1e-9)
    assert not np.allclose(table["estimate"].iloc[:12], math.log(1.5), atol=1e-3)


def test_clopper_pearson():
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(0, 10)[1] == pytest.approx(0.3084971, abs=1e-6)
    low, high = clopper_pearson(5, 100)
    assert low == pytest.approx(0.01643, abs=1e-4) and high == pytest.approx(0.11284, abs=1e-4)
    assert clopper_pearson(10, 10) == (pytest.approx(0.6915029, abs=1e-6), 1.0)


def test_missing_slots_are_dropped_in_both_methods():
    design = SliceDesign(n_demos=4, n_sets=3, n_orders=5, n_queries=40, n_methods=1)
    sim = simulate_slice(design, 1.0, OutputModel(), np.random.default_rng(0))
    a, b, mask = _drop_cells(sim.icl, sim.methods[0], 0.3, np.random.default_rng(1))
    # the same draws, by hand: a slot survives when neither method lost it
    rng = np.random.default_rng(1)
    lost_a = rng.random((3, 40)) < 0.3
    lost_b = rng.random((3, 40)) < 0.3
    complete = ~lost_a & ~lost_b
    keep = complete.any(axis=1)
    np.testing.assert_array_equal(mask, complete[keep])
    np.testing.assert_array_equal(a, np.where(complete[keep][:, None, :], sim.icl[keep], 0.0))
    np.testing.assert_array_equal(b, np.where(complete[keep][:, None, :], sim.methods[0][keep], 0.0))
    assert 0.35 < mask.mean() < 0.65  # 0.7 ** 2 = 0.49 of the slots
    with pytest.raises(ValueError, match="missing"):
        calibrate("default", missing=1.0)


def test_calibrate_table_and_cli(tmp_path):
    table = calibrate("default", family_sizes=(2,), n_sims=2, rhos=(0.0,), scenarios=("invariant", "null"),
                      n_resamples=1000, n_jobs=1)
    assert list(table["quantity"]) == ["equivalent (all SDs 0)", "different", "different",
                                       "CI covers true log ratio"]
    assert table.loc[0, "rate"] == 1.0 and list(table["n"]) == [2, 2, 4, 4]
    assert "| default | 0 | 2 |" in markdown_table(table)
    from hyptest.cli import app

    out = tmp_path / "cal.md"
    result = CliRunner().invoke(app, ["calibrate", "--n-sims", "1", "--family-sizes", "1", "--rho", "0",
                                      "--n-resamples", "1000", "--jobs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("| design |") and "power" in out.read_text()
    bad = CliRunner().invoke(app, ["calibrate", "--design", "nope"])
    assert bad.exit_code == 2


# ---------------------------------------------------------------------------
# calibration of the confirmatory decision (Monte Carlo)
# ---------------------------------------------------------------------------


@pytest.mark.calibration
def test_false_verdicts_not_above_alpha():
    """P(different | ratio 1) and P(equivalent | ratio 1.25) <= alpha, family sizes 1 and 20.

    Default study shape (2 sets x 8 of 24 orders x 32 queries, 3 methods per
    slice). The measured rates (docs/calibration.md) sit well below alpha;
    the check is that none is significantly above it.
    """
    single = calibrate("default", family_sizes=(1,), n_sims=300, rhos=(0.0, 0.8), scenarios=("null", "boundary"),
                       n_resamples=1000, n_jobs=2, seed=11)
    # m = 20 costs 20 x 8000 resamples per family: rho = 0.8, where m = 1 came closest to alpha at the boundary
    twenty = calibrate("default", family_sizes=(20,), n_sims=24, rhos=(0.8,), scenarios=("null", "boundary"),
                       n_resamples=1000, n_jobs=2, seed=11)
    cells = pd.concat([single, twenty], ignore_index=True)
    errors = cells[cells["quantity"].isin(["different", "equivalent"])]
    assert len(errors) == 12
    assert set(errors["n_sims"]) == {300, 24}
    too_high = errors[errors["mc_low"] > ALPHA]
    assert too_high.empty, too_high[["rho", "family_size", "quantity", "unit", "count", "n", "rate", "mc_low"]]


# ---------------------------------------------------------------------------
# the linear self-attention control (von Oswald et al. 2023, Prop. 1)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("d", "n_demos", "n_queries", "eta"),
                         [(1, 1, 1, 1.0), (3, 8, 5, 0.1), (10, 40, 7, 1.0), (20, 5, 3, 2.5), (5, 200, 4, 0.01)])
def test_lsa_equals_one_step_gd(d, n_demos, n_queries, eta):
    task = sample_regression_task(d, n_demos, n_queries, noise_sd=0.3, rng=d * 1000 + n_demos)
    lsa = lsa_predict(task.X, task.y, task.X_query, eta=eta)
    gd = one_step_gd_predict(task.X, task.y, task.X_query, eta=eta)
    assert lsa.shape == gd.shape == (n_queries,)
    np.testing.assert_allclose(lsa, gd, rtol=1e-6, atol=1e-12 * np.abs(gd).max())
    # closed form of one GD step from W0 = 0 on L(W) = 1/(2N) sum (W x_i - y_i)^2: W1 = eta/N X^T y
    np.testing.assert_allclose(gd, task.X_query @ (eta / n_demos * task.X.T @ task.y), rtol=1e-10)


def test_one_step_gd_matches_autograd():
    torch = pytest.importorskip("torch")
    task = sample_regression_task(6, 12, 4, noise_sd=0.2, rng=7)
    eta = 0.3
    W = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    X, y = torch.from_numpy(task.X), torch.from_numpy(task.y)
    loss = ((X @ W - y) ** 2).sum() / (2 * len(y))  # L(W) = 1/(2N) sum ||W x_i - y_i||^2
    loss.backward()
    w1 = (W - eta * W.grad).detach().numpy()
    np.testing.assert_allclose(one_step_gd_predict(task.X, task.y, task.X_query, eta=eta),
                               task.X_query @ w1, rtol=1e-12)


def test_lsa_output_is_minus_the_prediction():
    # Prop. 1: the query token (x_q, 0) becomes (x_q, -Delta W x_q); the demo tokens (x_i, y_i - Delta W x_i)
    task = sample_regression_task(3, 6, 2, rng=3)
    weights = lsa_weights(3, 0.5)
    tokens = np.vstack([np.column_stack([task.X, task.y]), np.column_stack([task.X_query, np.zeros(2)])])
    out = lsa_forward(tokens, 6, weights)
    delta_w = 0.5 / 6 * task.X.T @ task.y
    np.testing.assert_allclose(out[:, :3], tokens[:, :3], rtol=0, atol=0)  # x part untouched
    np.testing.assert_allclose(out[6:, 3], -task.X_query @ delta_w, rtol=1e-12)
    np.testing.assert_allclose(out[:6, 3], task.y - task.X @ delta_w, rtol=1e-12)


def test_predictions_are_invariant_to_demo_order():
    rng = np.random.default_rng(11)
    task = sample_regression_task(4, 8, 5, noise_sd=0.5, rng=rng)
    ref_lsa = lsa_predict(task.X, task.y, task.X_query, eta=1.0)
    ref_gd = one_step_gd_predict(task.X, task.y, task.X_query, eta=1.0)
    for _ in range(20):
        perm = rng.permutation(8)
        np.testing.assert_allclose(lsa_predict(task.X[perm], task.y[perm], task.X_query, eta=1.0),
                                   ref_lsa, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(one_step_gd_predict(task.X[perm], task.y[perm], task.X_query, eta=1.0),
                                   ref_gd, rtol=1e-12, atol=1e-14)


def test_batched_prediction_equals_loop():
    rng = np.random.default_rng(5)
    X, y, q = rng.normal(size=(3, 4, 6, 2)), rng.normal(size=(3, 4, 6)), rng.normal(size=(3, 4, 5, 2))
    batched = lsa_predict(X, y, q, eta=0.7)
    single = lsa_predict(X, y, q[..., 0, :], eta=0.7)
    assert batched.shape == (3, 4, 5) and single.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            np.testing.assert_allclose(batched[i, j], one_step_gd_predict(X[i, j], y[i, j], q[i, j], eta=0.7),
                                       rtol=1e-10)
    np.testing.assert_allclose(single, batched[..., 0], rtol=1e-12)
    assert isinstance(lsa_predict(X[0, 0], y[0, 0], q[0, 0, 0], eta=0.7), float)


@pytest.mark.parametrize("d", [1, 3, 8, 64])
def test_constructed_weights_and_sparsity(d):
    w = lsa_weights(d, 0.25)
    D = d + 1
    np.testing.assert_array_equal(w.W_K, w.W_Q)
    np.testing.assert_array_equal(w.W_K[:d, :d], np.eye(d))
    assert w.W_V[d, d] == -1.0 and np.count_nonzero(w.W_V) == 1
    np.testing.assert_array_equal(w.P, 0.25 * np.eye(D))
    s = weight_sparsity(w)
    # documented: W_K, W_Q: 1 - d/D^2; W_V: 1 - 1/D^2; P: 1 - 1/D
    assert s == pytest.approx({"W_K": 1 - d / D**2, "W_Q": 1 - d / D**2, "W_V": 1 - 1 / D**2, "P": 1 - 1 / D},
                              abs=1e-15)
    with pytest.raises(ValueError):
        w.W_K[0, 0] = 2.0  # read-only


def test_validation_errors():
    X, y = np.ones((3, 2)), np.ones(3)
    with pytest.raises(ValueError, match="`y`"):
        lsa_predict(X, np.ones(4), np.ones(2), eta=1.0)
    with pytest.raises(ValueError, match="`x_query`"):
        one_step_gd_predict(X, y, np.ones(3), eta=1.0)
    with pytest.raises(TypeError, match="`eta`"):
        lsa_predict(X, y, np.ones(2), eta="1")
    with pytest.raises(ValueError, match="`d`"):
        lsa_weights(0, 1.0)
    with pytest.raises(ValueError, match="`noise_sd`"):
        sample_regression_task(2, 3, 1, noise_sd=-1.0, rng=0)


def test_sample_regression_task():
    task = sample_regression_task(3, 8, 4, noise_sd=0.0, rng=1)
    assert task.X.shape == (8, 3) and task.y.shape == (8,) and task.X_query.shape == (4, 3)
    np.testing.assert_allclose(task.y, task.X @ task.w, rtol=1e-12)
    np.testing.assert_allclose(task.y_query, task.X_query @ task.w, rtol=1e-12)
    again = sample_regression_task(3, 8, 4, noise_sd=0.0, rng=1)
    np.testing.assert_array_equal(task.X, again.X)
    # w, x ~ N(0, I): pooled moments over many tasks (SE of the mean ~ 0.004, of the variance ~ 0.006)
    rng = np.random.default_rng(2)
    tasks = [sample_regression_task(4, 10, 0, noise_sd=1.0, rng=rng) for _ in range(5000)]
    w = np.concatenate([t.w for t in tasks])
    x = np.concatenate([t.X.ravel() for t in tasks])
    resid = np.concatenate([t.y - t.X @ t.w for t in tasks])
    for sample in (w, x, resid):
        assert abs(sample.mean()) < 0.03 and abs(sample.var() - 1.0) < 0.04


