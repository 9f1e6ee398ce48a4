"""Momentum attention (Dai et al. 2023) in a small causal transformer trained on in-context regression.

Dai et al. [1]_ (Section 5, "Momentum-Based Attention") read attention as a
meta-optimiser and, by analogy with gradient descent with momentum, add to the
attention output at position ``t`` an exponential moving average of the value
vectors of the preceding positions::

    MoAttn(V, K, q_t) = Attn(V, K, q_t) + sum_{i=1}^{t-1} eta^(t-i) v_i

with a scalar ``eta`` in (0, 1). :class:`MomentumSelfAttention` implements that
per head, on top of causal softmax attention, before the output projection;
``eta = 0`` is standard causal attention.

The task is in-context linear regression as in Garg et al. [2]_: per sequence
``w ~ N(0, I_d)``, inputs ``x_i ~ N(0, I_d)``, targets ``y_i = w . x_i + noise``;
the tokens are ``(x_1, y_1, ..., x_K, y_K)`` (an ``x`` token is ``(x, 0)``, a
``y`` token ``(0, ..., 0, y)``), and the model predicts ``y_i`` from the output
at the position of ``x_i``, i.e. after ``k = i - 1`` demonstrations. The
optimal predictor is known in closed form (:func:`optimal_predictions`: the
posterior mean, ridge with ``lambda = noise_sd**2``; min-norm least squares
without noise), which gives the reference curve of the experiment.

Everything is reproducible from the seed: a training batch is a pure function
of ``(seed, step)`` (:func:`training_batch`), the weights are initialised under
``torch.manual_seed(seed)`` (the same weights for both variants, which have the
same parameters), the learning rate is a pure function of the step, and
training runs on one CPU thread. :func:`train_unit` writes a checkpoint (model
and AdamW state in safetensors, step, loss log and RNG state in JSON) every
``checkpoint_every`` steps and resumes from it bitwise.

References
----------
.. [1] Dai, Sun, Dong, Hao, Ma, Sui, Wei (2023). Why Can GPT Learn In-Context?
   Language Models Implicitly Perform Gradient Descent as Meta-Optimizers.
   Findings of ACL 2023, 4005-4019 (doi:10.18653/v1/2023.findings-acl.247;
   arXiv:2212.10559).
.. [2] Garg, Tsipras, Liang, Valiant (2022). What Can Transformers Learn
   In-Context? A Case Study of Simple Function Classes. NeurIPS 2022
   (arXiv:2208.01066).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .._util import atomic_write_bytes, atomic_write_text

__all__ = [
    "ModelConfig",
    "MomentumSelfAttention",
    "TrainConfig",
    "TrainResult",
    "Transformer",
    "evaluation_set",
    "icl_loss_curve",
    "learning_rate",
    "momentum_matrix",
    "optimal_predictions",
    "regression_batch",
    "single_thread",
    "tokens",
    "train_unit",
    "training_batch",
]

#: Stream tags of the data generator (numpy SeedSequence entropy), so training and evaluation never share draws.
_TRAIN_STREAM = 0x7472_6169  # "trai"
_EVAL_STREAM = 0x6576_616C  # "eval"


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
def regression_batch(rng: np.random.Generator, batch: int, n_points: int, d: int,
                     noise_sd: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``batch`` in-context regression sequences.

    Parameters
    ----------
    rng : numpy.random.Generator
    batch, n_points, d : int
        Sequences, (x, y) pairs per sequence, input dimension.
    noise_sd : float
        Standard deviation of the Gaussian noise on the targets.

    Returns
    -------
    X : numpy.ndarray, shape (batch, n_points, d)
    y : numpy.ndarray, shape (batch, n_points)
    w : numpy.ndarray, shape (batch, d)
        Draw order: ``w``, ``X``, then the noise (only when ``noise_sd > 0``).

    Examples
    --------
    >>> X, y, w = regression_batch(np.random.default_rng(0), 2, 3, 4)
    >>> X.shape, y.shape, bool(np.allclose(y, np.einsum("bkd,bd->bk", X, w)))
    ((2, 3, 4), (2, 3), True)
    """
    w = rng.standard_normal((batch, d))
    X = rng.standard_normal((batch, n_points, d))
    y = np.einsum("bkd,bd->bk", X, w)
    if noise_sd > 0:
        y = y + noise_sd * rng.standard_normal(y.shape)
    return X, y, w


def training_batch(seed: int, step: int, batch: int, n_points: int, d: int,
                   noise_sd: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The training batch of ``step`` for training seed ``seed``: a pure function of both.

    Returns ``(X, y)`` as in :func:`regression_batch`.
    """
    rng = np.random.default_rng([_TRAIN_STREAM, int(seed), int(step)])
    X, y, _ = regression_batch(rng, batch, n_points, d, noise_sd)
    return X, y


def evaluation_set(seed: int, n_sequences: int, n_points: int, d: int,
                   noise_sd: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The held-out evaluation sequences of a study (root seed ``seed``), the same for every unit."""
    rng = np.random.default_rng([_EVAL_STREAM, int(seed)])
    X, y, _ = regression_batch(rng, n_sequences, n_points, d, noise_sd)
    return X, y


def tokens(X: np.ndarray, y: np.ndarray) -> torch.Tensor:
    """Interleave ``(x_1, y_1, ..., x_K, y_K)`` as float32 tokens of size ``d + 1``, shape (batch, 2K, d + 1)."""
    b, k, d = X.shape
    z = np.zeros((b, 2 * k, d + 1), dtype=np.float32)
    z[:, 0::2, :d] = X
    z[:, 1::2, d] = y
    return torch.from_numpy(z)


def optimal_predictions(X: np.ndarray, y: np.ndarray, noise_sd: float = 0.0) -> np.ndarray:
    """Bayes-optimal prediction of ``y_{k+1}`` from the first ``k`` pairs, for every ``k``.

    With ``w ~ N(0, I)`` and Gaussian noise of variance ``s2 = noise_sd**2``
    the posterior mean of ``w`` after ``k`` pairs is the ridge estimate
    ``(X_k' X_k + s2 I)^-1 X_k' y_k``; without noise it is the minimum-norm
    least-squares solution ``pinv(X_k) y_k`` (the limit ``s2 -> 0``). ``k = 0``
    predicts 0.

    Parameters
    ----------
    X : numpy.ndarray, shape (n, K, d)
    y : numpy.ndarray, shape (n, K)
    noise_sd : float

    Returns
    -------
    numpy.ndarray, shape (n, K)
        Column ``k`` is the prediction for ``x_{k+1}`` (0-based: ``X[:, k]``).

    Examples
    --------
    >>> X = np.eye(2)[None]; y = np.array([[3.0, -1.0]])
    >>> optimal_predictions(X, y)   # k = 0: 0; k = 1: w = (3, 0), predicts 0 at x_2 = (0, 1)
    array([[0., 0.]])
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, K, d = X.shape
    out = np.zeros((n, K))
    s2 = float(noise_sd) ** 2
    for k in range(1, K):
        Xk, yk = X[:, :k], y[:, :k]
        if s2 > 0:
            gram = np.einsum("nki,nkj->nij", Xk, Xk) + s2 * np.eye(d)
            w = np.linalg.solve(gram, np.einsum("nki,nk->ni", Xk, yk)[..., None])[..., 0]
        else:
            w = np.einsum("ndk,nk->nd", np.linalg.pinv(Xk), yk)
        out[:, k] = np.einsum("nd,nd->n", w, X[:, k])
    return out


# --------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class ModelConfig:
    """Shape of the transformer (see :class:`Transformer`)."""

    d: int = 5
    n_points: int = 11
    layers: int = 2
    heads: int = 4
    d_model: int = 64
    mlp_ratio: int = 4
    positions: str = "learned"  # "learned" | "rotary"
    eta: float = 0.0  # momentum coefficient; 0 = standard attention

    def __post_init__(self) -> None:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.positions == "rotary" and (self.d_model // self.heads) % 2:
            raise ValueError("rotary positions need an even head dimension (d_model / heads)")
        if self.positions not in ("learned", "rotary"):
            raise ValueError(f"positions must be 'learned' or 'rotary', got {self.positions!r}")
        if not 0 <= self.eta < 1:
            raise ValueError(f"the momentum coefficient must lie in [0, 1), got {self.eta!r}")


def momentum_matrix(length: int, eta: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``M[t, i] = eta ** (t - i)`` for ``i < t``, else 0: ``M @ V`` is Dai et al.'s EMA term.

    Examples
    --------
    >>> momentum_matrix(3, 0.5)
    tensor([[0.0000, 0.0000, 0.0000],
            [0.5000, 0.0000, 0.0000],
            [0.2500, 0.5000, 0.0000]])
    """
    t = torch.arange(length)
    lag = (t[:, None] - t[None, :]).to(torch.float64)
    m = torch.where(lag > 0, torch.tensor(float(eta), dtype=torch.float64) ** lag, torch.zeros((), dtype=torch.float64))
    return m.to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class MomentumSelfAttention(nn.Module):
    """Causal multi-head softmax attention plus Dai et al.'s momentum term.

    Per head, the output at position ``t`` is
    ``sum_{i<=t} softmax_i(q_t . k_i / sqrt(h)) v_i + sum_{i<t} eta^(t-i) v_i``;
    the heads are concatenated and projected by ``W_O``. ``eta = 0`` gives
    standard causal attention.

    Parameters
    ----------
    d_model, heads : int
    eta : float
        Momentum coefficient in [0, 1) (a constant, not trained).
    rotary : bool
        Rotate queries and keys by position (RoPE) instead of relying on learned positions.
    max_len : int
        Longest sequence (for the rotary tables).
    """

    def __init__(self, d_model: int, heads: int, eta: float = 0.0, *, rotary: bool = False, max_len: int = 512) -> None:
        super().__init__()
        self.heads, self.head_dim, self.eta = heads, d_model // heads, float(eta)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rotary = rotary
        if rotary:
            inv = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim))
            ang = torch.arange(max_len, dtype=torch.float64)[:, None] * inv[None, :]
            self.register_buffer("cos", ang.cos().float(), persistent=False)
            self.register_buffer("sin", ang.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.rotary:
            q, k = _rotate(q, self.cos[:t], self.sin[:t]), _rotate(k, self.cos[:t], self.sin[:t])
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        if self.eta > 0:
            weights = weights + momentum_matrix(t, self.eta, weights.dtype).to(x.device)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, -1))


class _Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = MomentumSelfAttention(cfg.d_model, cfg.heads, cfg.eta, rotary=cfg.positions == "rotary",
                                          max_len=2 * cfg.n_points)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Pre-LayerNorm causal transformer reading ``(x, y)`` tokens and predicting ``y`` at each ``x`` position.

    Read-in: a linear map of the ``d + 1`` token features (plus learned
    positions unless ``positions == "rotary"``); ``layers`` blocks of
    :class:`MomentumSelfAttention` and a GELU MLP; final LayerNorm; a linear
    read-out to one number per position.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.read_in = nn.Linear(cfg.d + 1, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(2 * cfg.n_points, cfg.d_model) * 0.02) \
            if cfg.positions == "learned" else None
        self.blocks = nn.ModuleList([_Block(cfg) for _ in range(cfg.layers)])
        self.ln = nn.LayerNorm(cfg.d_model)
        self.read_out = nn.Linear(cfg.d_model, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Predictions of ``y_1..y_K`` (the outputs at the ``x`` positions), shape (batch, K)."""
        h = self.read_in(z)
        if self.pos is not None:
            h = h + self.pos[: z.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.read_out(self.ln(h))[:, 0::2, 0]

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def build_model(cfg: ModelConfig, seed: int) -> Transformer:
    """The model with weights drawn under ``torch.manual_seed(seed)`` (global RNG state restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return Transformer(cfg)


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class TrainConfig:
    """Optimisation budget, the same for every variant."""

    steps: int = 3000
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0
    noise_sd: float = 0.0
    checkpoint_every: int = 500
    log_every: int = 100


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``steps``.

    Examples
    --------
    >>> cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10)
    >>> learning_rate(0, cfg), learning_rate(9, cfg), round(learning_rate(55, cfg), 3)
    (0.1, 1.0, 0.5)
    """
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    """What one (variant, seed) training run produced."""

    state_dict: dict[str, torch.Tensor] = field(repr=False)
    loss_log: list[tuple[int, float]]
    n_parameters: int
    wall_s: float
    resumed_from: int | None


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=cfg.weight_decay, foreach=False)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """AdamW state as flat tensors (for safetensors) and the rest as JSON."""
    sd = opt.state_dict()
    flat = {f"{index}.{name}": value.detach().clone().contiguous()
            for index, entry in sd["state"].items() for name, value in entry.items()}
    return flat, {"param_groups": sd["param_groups"], "indices": sorted(sd["state"])}


def _load_optimizer(opt: torch.optim.Optimizer, flat: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {int(i): {} for i in meta["indices"]}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state[int(index)][name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _save_checkpoint(folder: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer,
                     loss_log: list[tuple[int, float]], running: list[float], elapsed: float) -> None:
    """Weights and AdamW state (safetensors), then ``state.json`` naming them: the commit point."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    flat, opt_meta = _optimizer_tensors(opt)
    model_name, optim_name = f"model-{step}.safetensors", f"optim-{step}.safetensors"
    atomic_write_bytes(folder / model_name, save({k: v.detach().clone().contiguous()
                                                   for k, v in model.state_dict().items()}))
    atomic_write_bytes(folder / optim_name, save(flat))
    state = {"step": step, "model": model_name, "optimizer": optim_name, "optimizer_meta": opt_meta,
             "loss_log": loss_log, "running": running, "elapsed_s": elapsed,
             "torch_rng_state": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii")}
    atomic_write_text(folder / "state.json", json.dumps(state))
    for old in folder.glob("*.safetensors"):  # earlier checkpoints: superseded once state.json names the new one
        if old.name not in (model_name, optim_name):
            old.unlink(missing_ok=True)


def _load_checkpoint(folder: Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    from safetensors.torch import load

    path = folder / "state.json"
    if not path.is_file():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    model.load_state_dict(load((folder / state["model"]).read_bytes()))
    _load_optimizer(opt, load((folder / state["optimizer"]).read_bytes()), state["optimizer_meta"])
    rng = np.frombuffer(base64.b64decode(state["torch_rng_state"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(rng))
    return state


def train_unit(model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int, *, checkpoint_dir: Path | None = None,
               on_steps: Callable[[int], None] | None = None, progress_every: int = 25) -> TrainResult:
    """Train one model from scratch (or from its checkpoint) with AdamW on the regression stream of ``seed``.

    Parameters
    ----------
    model_cfg, train_cfg : ModelConfig, TrainConfig
    seed : int
        Initialisation and data seed.
    checkpoint_dir : pathlib.Path, optional
        Where checkpoints live; a checkpoint found there is resumed, and the
        folder is removed once training ends.
    on_steps : callable, optional
        Called with the number of steps just taken, every ``progress_every``
        steps and at the end (for progress bars); an exception it raises
        interrupts training (the last checkpoint stays).

    Returns
    -------
    TrainResult
        Final weights, the training loss averaged over each ``log_every``
        window, the parameter count and the wall time (summed over resumptions).

    Notes
    -----
    Runs on one CPU thread (restored afterwards), so the numbers do not
    depend on the machine's core count; an interrupted run resumed from its
    checkpoint ends bitwise where an uninterrupted run ends.
    """
    with single_thread():
        return _train(model_cfg, train_cfg, seed, checkpoint_dir, on_steps, max(1, int(progress_every)))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block (reductions then do not depend on the core count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(model_cfg: ModelConfig, cfg: TrainConfig, seed: int, checkpoint_dir: Path | None,
           on_steps: Callable[[int], None] | None, progress_every: int) -> TrainResult:
    t0 = time.perf_counter()
    model = build_model(model_cfg, seed)
    opt = _optimizer(model, cfg)
    start, loss_log, running, before = 0, [], [], 0.0
    resumed = None
    with torch.random.fork_rng(devices=[]):
        state = _load_checkpoint(checkpoint_dir, model, opt) if checkpoint_dir is not None else None
        if state is not None:
            start, resumed, before = int(state["step"]), int(state["step"]), float(state["elapsed_s"])
            loss_log = [(int(s), float(v)) for s, v in state["loss_log"]]
            running = [float(v) for v in state["running"]]
        model.train()
        pending = 0
        for step in range(start, cfg.steps):
            X, y = training_batch(seed, step, cfg.batch, model_cfg.n_points, model_cfg.d, cfg.noise_sd)
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, cfg)
            pred = model(tokens(X, y))
            loss = ((pred - torch.from_numpy(y.astype(np.float32))) ** 2).mean() / model_cfg.d
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            running.append(float(loss.detach()))
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                loss_log.append((done, float(np.mean(running))))
                running = []
            pending += 1
            if checkpoint_dir is not None and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                _save_checkpoint(checkpoint_dir, done, model, opt, loss_log, running,
                                 before + time.perf_counter() - t0)
            if on_steps is not None and (pending >= progress_every or done == cfg.steps):
                on_steps(pending)
                pending = 0
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return TrainResult(weights, loss_log, model.n_parameters(), before + time.perf_counter() - t0, resumed)


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #
@torch.no_grad()
def icl_loss_curve(model: Transformer, X: np.ndarray, y: np.ndarray, *, chunk: int = 512) -> np.ndarray:
    """ICL loss per number of demonstrations: mean over sequences of ``(prediction - y)**2 / d``.

    Entry ``k`` is the loss of the prediction for ``x_{k+1}`` after ``k``
    demonstrations, ``k = 0..K-1``; evaluated in float64 sums over chunks.
    """
    model.eval()
    d = X.shape[-1]
    total = np.zeros(X.shape[1])
    for start in range(0, len(X), chunk):
        xb, yb = X[start:start + chunk], y[start:start + chunk]
        pred = model(tokens(xb, yb)).double().numpy()
        total += ((pred - yb) ** 2).sum(axis=0)
    return total / len(X) / d
