"""Momentum attention (Dai et al. 2023) trained from scratch on in-context regression (issue 20, item 3).

Independent references: an explicit per-position Python loop for the layer
(math.exp softmax, the EMA written as a sum), torch's scaled_dot_product_attention
for eta = 0, numpy.linalg.lstsq for the least-squares / ridge optimum, an
uninterrupted run for resumption, exhaustive sign enumeration for the p-value.
"""

from __future__ import annotations

import itertools
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from hyptest.cli import app
from hyptest.study import StudyError
from hyptest.validation import momentum_attention as ma
from hyptest.validation.momentum_study import (analyse, parse_momentum_study, plan_units, run_momentum_study,
                                               run_unit)

TINY = textwrap.dedent("""\
    name: ma_tiny
    experiment: momentum_attention
    seeds: [0, 1, 2]
    task: {d: 3, n_points: 6}
    model: {layers: 1, heads: 2, d_model: 16}
    training: {steps: 12, batch: 8, warmup_steps: 2, checkpoint_every: 4, log_every: 4}
    evaluation: {n_sequences: 32}
    """)


def _tiny(**overrides) -> dict:
    import yaml

    data = yaml.safe_load(TINY)
    for key, value in overrides.items():
        data[key] = value
    return data


# --------------------------------------------------------------------------- #
# the layer
# --------------------------------------------------------------------------- #
def _naive_attention(layer: ma.MomentumSelfAttention, x: np.ndarray, *, rotary: bool = False) -> np.ndarray:
    """Per position and head, with explicit loops: softmax over i <= t, plus sum_{i<t} eta^(t-i) v_i."""
    W = layer.qkv.weight.detach().double().numpy()
    b = layer.qkv.bias.detach().double().numpy()
    Wo = layer.out.weight.detach().double().numpy()
    bo = layer.out.bias.detach().double().numpy()
    T, D = x.shape
    H, h = layer.heads, layer.head_dim
    proj = x @ W.T + b  # (T, 3D): q | k | v, each split into heads
    out = np.zeros((T, D))
    for head in range(H):
        q = proj[:, head * h:(head + 1) * h].copy()
        k = proj[:, D + head * h:D + (head + 1) * h].copy()
        v = proj[:, 2 * D + head * h:2 * D + (head + 1) * h]
        if rotary:  # rotate the pair (j, j + h/2) of position p by the angle p / 10000^(2j/h)
            for p in range(T):
                for j in range(h // 2):
                    angle = p / 10000 ** (2 * j / h)
                    c, s = math.cos(angle), math.sin(angle)
                    for vec in (q, k):
                        a1, a2 = vec[p, j], vec[p, j + h // 2]
                        vec[p, j], vec[p, j + h // 2] = a1 * c - a2 * s, a1 * s + a2 * c
        for t in range(T):
            scores = [float(q[t] @ k[i]) / math.sqrt(h) for i in range(t + 1)]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            total = sum(exps)
            value = sum(exps[i] / total * v[i] for i in range(t + 1))
            ema = sum((layer.eta ** (t - i)) * v[i] for i in range(t)) if t > 0 else 0.0
            out[t, head * h:(head + 1) * h] = value + ema
    return out @ Wo.T + bo


@pytest.mark.parametrize("eta,rotary", [(0.7, False), (0.95, False), (0.5, True), (0.0, False)])
def test_momentum_attention_matches_a_naive_loop(eta, rotary):
    torch.manual_seed(1)
    layer = ma.MomentumSelfAttention(8, 2, eta, rotary=rotary, max_len=16)
    x = torch.randn(2, 7, 8)
    got = layer(x).detach().double().numpy()
    for row in range(2):
        want = _naive_attention(layer, x[row].double().numpy(), rotary=rotary)
        np.testing.assert_allclose(got[row], want, atol=2e-5, rtol=1e-5)


def test_momentum_zero_is_torch_scaled_dot_product_attention():
    torch.manual_seed(2)
    layer = ma.MomentumSelfAttention(12, 3, 0.0)
    x = torch.randn(4, 9, 12)
    q, k, v = layer.qkv(x).view(4, 9, 3, 3, 4).permute(2, 0, 3, 1, 4)
    want = layer.out(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(4, 9, 12))
    torch.testing.assert_close(layer(x), want, atol=1e-6, rtol=1e-5)


def test_momentum_changes_the_output_and_only_uses_the_past():
    torch.manual_seed(3)
    plain, mom = ma.MomentumSelfAttention(8, 2, 0.0), ma.MomentumSelfAttention(8, 2, 0.9)
    mom.load_state_dict(plain.state_dict())
    x = torch.randn(1, 6, 8)
    assert torch.equal(plain(x)[:, 0], mom(x)[:, 0])  # no preceding position: no momentum term
    assert not torch.allclose(plain(x)[:, 1:], mom(x)[:, 1:])
    y = x.clone()
    y[:, 4:] += 1.0  # a change in the future leaves earlier outputs alone (causal)
    torch.testing.assert_close(mom(x)[:, :4], mom(y)[:, :4])


def test_variants_share_their_parameters_and_initial_weights():
    a = ma.build_model(ma.ModelConfig(d=3, n_points=5, layers=2, heads=2, d_model=16, eta=0.0), seed=7)
    b = ma.build_model(ma.ModelConfig(d=3, n_points=5, layers=2, heads=2, d_model=16, eta=0.9), seed=7)
    assert a.n_parameters() == b.n_parameters()
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)


# --------------------------------------------------------------------------- #
# data and the optimum
# --------------------------------------------------------------------------- #
def test_training_batches_are_a_pure_function_of_seed_and_step():
    X1, y1 = ma.training_batch(3, 10, 4, 5, 2)
    X2, y2 = ma.training_batch(3, 10, 4, 5, 2)
    X3, _ = ma.training_batch(3, 11, 4, 5, 2)
    X4, _ = ma.training_batch(4, 10, 4, 5, 2)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    assert not np.array_equal(X1, X3) and not np.array_equal(X1, X4)
    Xe, _ = ma.evaluation_set(0, 4, 5, 2)
    assert not np.array_equal(Xe, X1)
    z = ma.tokens(X1, y1)
    assert z.shape == (4, 10, 3)
    assert torch.equal(z[:, 0::2, :2], torch.from_numpy(X1.astype(np.float32)))
    assert torch.equal(z[:, 1::2, 2], torch.from_numpy(y1.astype(np.float32)))
    assert torch.all(z[:, 0::2, 2] == 0) and torch.all(z[:, 1::2, :2] == 0)


def test_regression_batch_draws_w_and_x_from_standard_normals():
    X, y, w = ma.regression_batch(np.random.default_rng(5), 4000, 3, 2)
    assert abs(X.mean()) < 0.03 and abs(X.var() - 1) < 0.03 and abs(w.var() - 1) < 0.07
    np.testing.assert_allclose(y, np.einsum("bkd,bd->bk", X, w))
    _, y_noisy, _ = ma.regression_batch(np.random.default_rng(5), 4000, 3, 2, noise_sd=0.5)
    assert abs(np.var(y_noisy - y) - 0.25) < 0.02  # the same w and X (drawn first), plus the noise


@pytest.mark.parametrize("noise_sd", [0.0, 0.4])
def test_optimal_predictions_match_numpy_lstsq(noise_sd):
    X, y, _ = ma.regression_batch(np.random.default_rng(6), 5, 7, 3, noise_sd)
    got = ma.optimal_predictions(X, y, noise_sd)
    for n in range(5):
        assert got[n, 0] == 0
        for k in range(1, 7):
            A, b = X[n, :k], y[n, :k]
            if noise_sd > 0:  # ridge as least squares on the augmented system [A; s I] w = [b; 0]
                A = np.vstack([A, noise_sd * np.eye(3)])
                b = np.concatenate([b, np.zeros(3)])
            w = np.linalg.lstsq(A, b, rcond=None)[0]  # minimum-norm solution when k < d
            assert got[n, k] == pytest.approx(float(X[n, k] @ w), abs=1e-8)


def test_the_noiseless_optimum_is_exact_from_k_equal_d():
    X, y = ma.evaluation_set(0, 200, 6, 3)
    loss = ((ma.optimal_predictions(X, y) - y) ** 2).mean(axis=0) / 3
    assert loss[0] == pytest.approx((y[:, 0] ** 2).mean() / 3)
    assert np.all(loss[3:] < 1e-20)
    assert loss[1] == pytest.approx(2 / 3, abs=0.15) and loss[2] == pytest.approx(1 / 3, abs=0.1)  # (d - k) / d


def test_learning_rate_schedule():
    cfg = ma.TrainConfig(steps=10, lr=0.5, warmup_steps=4)
    lrs = [ma.learning_rate(s, cfg) for s in range(10)]
    assert lrs[:4] == pytest.approx([0.125, 0.25, 0.375, 0.5])
    assert lrs[4] == pytest.approx(0.5) and lrs[-1] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 5 / 6)))
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))


# --------------------------------------------------------------------------- #
# training: real AdamW, reproducible, resumable bitwise
# --------------------------------------------------------------------------- #
CFG = ma.ModelConfig(d=3, n_points=6, layers=1, heads=2, d_model=16, eta=0.9)
TRAIN = ma.TrainConfig(steps=12, batch=8, warmup_steps=2, checkpoint_every=4, log_every=4)


def test_training_is_reproducible_from_the_seed_and_moves_every_weight():
    # that training learns in-context regression is checked on the committed run
    # (tests/test_committed_reports.py): tiny budgets only reach "predict 0"
    threads = torch.get_num_threads()
    a = ma.train_unit(CFG, TRAIN, seed=0)
    b = ma.train_unit(CFG, TRAIN, seed=0)
    c = ma.train_unit(CFG, TRAIN, seed=1)
    assert torch.get_num_threads() == threads  # one thread inside, restored after
    assert a.loss_log == b.loss_log and a.loss_log != c.loss_log
    assert [s for s, _ in a.loss_log] == [4, 8, 12]
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    init = ma.build_model(CFG, seed=0).state_dict()
    for key, value in a.state_dict.items():
        assert not torch.equal(value, init[key]), key
    assert a.n_parameters == sum(v.numel() for v in init.values())


def test_an_interrupted_run_resumes_bitwise(tmp_path):
    whole = ma.train_unit(CFG, TRAIN, seed=5, checkpoint_dir=tmp_path / "a")
    seen = []

    def interrupt(n: int) -> None:
        seen.append(n)
        if sum(seen) == 6:  # after step 6: the checkpoint of step 4 is on disk
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ma.train_unit(CFG, TRAIN, seed=5, checkpoint_dir=tmp_path / "b", on_steps=interrupt, progress_every=1)
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert state["step"] == 4
    assert sorted(p.name for p in (tmp_path / "b").glob("*.safetensors")) == ["model-4.safetensors",
                                                                              "optim-4.safetensors"]
    resumed = ma.train_unit(CFG, TRAIN, seed=5, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from == 4 and whole.resumed_from is None
    assert resumed.loss_log == whole.loss_log
    for key, value in whole.state_dict.items():
        assert torch.equal(value, resumed.state_dict[key]), key
    assert not (tmp_path / "b").exists() and not (tmp_path / "a").exists()  # removed once finished


def test_an_interrupted_study_resumes_to_the_same_curves(tmp_path):
    study = parse_momentum_study(_tiny())
    first = run_momentum_study(study, TINY, out_dir=tmp_path / "whole", workers=1, progress=False)
    unit = plan_units(study)[3]  # momentum, seed 0: interrupted inside its training, then the study resumes
    seen = []

    def interrupt(n: int) -> None:
        seen.append(n)
        if sum(seen) == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_unit(study, unit, tmp_path / "cut", on_steps=interrupt, progress_every=1)
    assert (tmp_path / "cut" / "checkpoints" / unit["key"] / "state.json").is_file()
    second = run_momentum_study(study, TINY, out_dir=tmp_path / "cut", workers=1, progress=False)
    assert second.results["curves"] == first.results["curves"]
    assert second.results["train_loss"] == first.results["train_loss"]
    record = json.loads((tmp_path / "cut" / "units" / f"{unit['key']}.json").read_text())
    assert record["resumed_from_step"] == 8
    assert not (tmp_path / "cut" / "checkpoints").exists()
    third = run_momentum_study(study, TINY, out_dir=tmp_path / "cut", workers=1, progress=False)
    assert third.n_reused == third.n_units == 6 and third.results["comparisons"] == second.results["comparisons"]
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "cut" / "units" / f"{unit['key']}.safetensors")
    assert set(weights) == set(ma.Transformer(study.variant_config("momentum")).state_dict())


# --------------------------------------------------------------------------- #
# the verdict
# --------------------------------------------------------------------------- #
def _sign_flip_two_sided(values: np.ndarray) -> float:
    """Exhaustive: fraction of the 2^S sign patterns whose mean is as extreme, each side, doubled."""
    obs = values.mean()
    means = [np.mean(np.array(signs) * values) for signs in itertools.product((1, -1), repeat=len(values))]
    greater = np.mean([m >= obs - 1e-12 for m in means])
    less = np.mean([m <= obs + 1e-12 for m in means])
    return min(1.0, 2 * min(greater, less))


def test_the_verdict_of_a_tiny_run_through_the_cli(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    result = CliRunner().invoke(app, ["study", str(path), "--out", str(tmp_path / "run"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "confirmatory: momentum vs plain" in result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    curves = results["curves"]
    per_seed = np.array([np.mean(np.log(curves["momentum"][s][1:]) - np.log(curves["plain"][s][1:]))
                         for s in ("0", "1", "2")])
    row = next(r for r in results["comparisons"] if r["family"] == "confirmatory")
    assert row["estimate"] == pytest.approx(per_seed.mean())
    assert row["p_value"] == pytest.approx(_sign_flip_two_sided(per_seed))
    assert row["verdict"] == "inconclusive" and "cannot give a one-sided p-value below 0.125" in row["note"]
    assert [r["n_demos"] for r in results["comparisons"][1:]] == [1, 3, 5]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "<svg" in html and "momentum attention" in html.lower() and "4005" in html
    assert "://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "<script" not in html
    (tmp_path / "run" / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0 and (tmp_path / "run" / "report.html").read_text() == html


def _records(plain: np.ndarray, mom: np.ndarray, seeds: list[int]) -> list[dict]:
    out = []
    for variant, arr in (("plain", plain), ("momentum", mom)):
        for s, curve in zip(seeds, arr):
            out.append({"variant": variant, "seed": s, "icl_loss": curve.tolist(), "n_parameters": 10,
                        "train_loss": [[4, 1.0], [8, 0.5]]})
    return out


@pytest.mark.parametrize("shift,verdict,direction", [(-0.3, "different", "momentum better"),
                                                      (0.3, "different", "plain better"),
                                                      (0.0, "equivalent", None)])
def test_eight_seeds_reach_a_verdict(shift, verdict, direction):
    study = parse_momentum_study(_tiny(seeds=list(range(8)), analysis={"margin_ratio": 1.25}))
    rng = np.random.default_rng(0)
    plain = np.exp(rng.normal(-1, 0.2, size=(8, 6)))
    mom = plain * np.exp(shift + rng.normal(0, 0.01, size=(8, 6)))
    results = analyse(study, _records(plain, mom, list(range(8))))
    row = results["comparisons"][0]
    assert row["verdict"] == verdict
    if direction:
        assert row["direction"] == direction
        assert row["p_value"] == pytest.approx(2 / 256)  # every seed agrees: the most extreme of 2^8 patterns
        assert (row["ci_high"] < 0) if shift < 0 else (row["ci_low"] > 0)
    else:
        assert -math.log(1.25) < row["eq_low"] and row["eq_high"] < math.log(1.25)
    assert row["note"] is None  # 8 seeds: the floor 1/256 lies below the level 0.025


# --------------------------------------------------------------------------- #
# the study file
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("overrides,message", [
    ({"bogus": 1}, "bogus: unknown key"),
    ({"momentum": {"eta": 1.0}}, "momentum.eta"),
    ({"momentum": {"eta": 0}}, "momentum.eta"),
    ({"seeds": [1]}, "seeds"),
    ({"seeds": [1, 1]}, "repeated: 1"),
    ({"seeds": list(range(21))}, "seeds"),
    ({"model": {"d_model": 10, "heads": 3}}, "model.d_model: must be divisible"),
    ({"model": {"positions": "sinusoidal"}}, "model.positions"),
    ({"training": {"steps": 10, "warmup_steps": 20}}, "training.warmup_steps"),
    ({"training": {"lr": True}}, "must be a number"),
    ({"training": {"lr": -1}}, "training.lr"),
    ({"analysis": {"margin_ratio": 1.0}}, "analysis.margin_ratio"),
    ({"analysis": {"k_exploratory": [9]}}, "k must lie in 0..5"),
    ({"task": {"d": 0}}, "task.d"),
    ({"training": {"steps": 1.5}}, "training.steps"),
])
def test_study_file_errors_name_the_field(overrides, message):
    with pytest.raises(StudyError) as info:
        parse_momentum_study(_tiny(**overrides), source="s.yaml")
    assert message in str(info.value)


def test_validate_and_study_dispatch_on_experiment(tmp_path):
    runner = CliRunner()
    good = tmp_path / "good.yaml"
    good.write_text(TINY)
    result = runner.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0 and "experiment momentum_attention" in result.output
    for text, fragment in ((TINY + "bogus: 1\n", "unknown key"), (TINY.replace("momentum_attention", "other"),
                                                                   "not a known experiment"),
                           (TINY + "seeds: [0, 0]\n", "")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        for command in (["validate", str(bad)], ["study", str(bad), "--out", str(tmp_path / "x")]):
            result = runner.invoke(app, command)
            assert result.exit_code == 2 and result.output.count("error:") == 1 and fragment in result.output


def test_the_committed_study_file_is_valid_and_reaches_a_verdict():
    from hyptest.validation.momentum_study import load_momentum_study

    study, _ = load_momentum_study(Path(__file__).resolve().parents[1] / "studies" / "momentum_attention.yaml")
    assert len(study.seeds) >= 8  # exact sign-flip floor 1/256 one-sided: below alpha / 2 = 0.025
    assert 1 / 2 ** len(study.seeds) <= study.analysis.alpha / 2 / len(study.k_exploratory())
    assert study.momentum.eta > 0 and study.training.steps >= 1000


@pytest.mark.calibration
def test_the_decision_keeps_its_level_under_the_null_and_finds_a_real_effect(monkeypatch):
    """Simulated studies through analyse(): per-seed log ratios symmetric about 0 (H0), or shifted by 0.2.

    Per seed and k, log MSE = seed effect + k profile + noise, the seed effect shared by both variants
    (paired, as in the experiment); the momentum curves get the shift. Clopper-Pearson 99% intervals.
    With 8 seeds the exact two-sided test rejects with probability 12/256 = 0.047 under H0.
    """
    import gc

    from scipy.stats import beta

    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)  # statsmodels' multipletests calls it every time
    study = parse_momentum_study(_tiny(seeds=list(range(8)), analysis={"k_exploratory": [1]}))
    rng = np.random.default_rng(20)
    for shift, n_sims in ((0.0, 200), (0.2, 40)):
        different = 0
        for _ in range(n_sims):
            base = rng.normal(-1, 0.3, size=(8, 1)) + np.linspace(0, -1, 6)[None]
            plain = np.exp(base + rng.normal(0, 0.05, size=(8, 6)))
            mom = np.exp(base + shift + rng.normal(0, 0.05, size=(8, 6)))
            row = analyse(study, _records(plain, mom, list(range(8))))["comparisons"][0]
            different += row["verdict"] in ("different", "negligible")
        low = beta.ppf(0.005, different, n_sims - different + 1) if different else 0.0
        high = beta.ppf(0.995, different + 1, n_sims - different) if different < n_sims else 1.0
        if shift == 0:
            assert low <= 12 / 256, (different, n_sims)  # the level holds
        else:
            assert high >= 0.99 and different >= 0.9 * n_sims, (different, n_sims)  # 4 noise SDs per k are found
