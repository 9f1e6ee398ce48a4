"""GD-family fine-tuning from the same pretrained weights every time.

Three methods, all with the loss on the label-word tokens of each demo
(formatted as a zero-shot example, ``input + label word``):

* ``gd``   full-batch gradient descent: each step uses the mean loss over all
  N demos, so the result does not depend on their order (up to float rounding);
* ``sgd``  plain SGD, batch size 1, one step per demo in the given order;
* ``adam`` Adam, batch size 1, one step per demo in the given order.

The model stays in eval mode while training (dropout off), so every method is a
deterministic function of (weights, demos, order, seed), as Theorem 1 of Shen
et al. assumes. Weights are restored in place from a snapshot taken once per
model, never reloaded from disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .scoring import lm_head_logits

__all__ = ["TrainingExample", "WeightSnapshot", "label_loss", "train_in_place"]


@dataclass(frozen=True)
class TrainingExample:
    """Token ids of one demo and the positions of its label tokens."""

    ids: tuple[int, ...]
    targets: tuple[int, ...]


class WeightSnapshot:
    """A copy of a model's parameters that can be written back in place."""

    def __init__(self, model: Any) -> None:
        self._params = [(p, p.detach().clone()) for p in model.parameters()]

    def restore(self) -> None:
        """Copy the saved values back into the live parameters and clear gradients."""
        import torch

        with torch.no_grad():
            for live, saved in self._params:
                live.copy_(saved)
                live.grad = None


def label_loss(model: Any, examples: Sequence[TrainingExample], *, device: str = "cpu") -> Any:
    """Mean over examples of the summed negative log-likelihood of the label tokens.

    Examples are right-padded into one batch; the LM head is applied only at
    the positions that predict a label token.
    """
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for b, ex in enumerate(examples):
        ids[b, : len(ex.ids)] = torch.tensor(ex.ids, device=device)
        mask[b, : len(ex.ids)] = 1
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    rows, cols, tokens = [], [], []
    for b, ex in enumerate(examples):
        for t in ex.targets:
            rows.append(b)
            cols.append(t - 1)
            tokens.append(ex.ids[t])
    logits = lm_head_logits(model, hidden[rows, cols]).float()
    logp = torch.log_softmax(logits, dim=-1)
    token_logp = logp[torch.arange(len(tokens)), torch.tensor(tokens, device=device)]
    return -token_logp.sum() / len(examples)


def _optimizer(model: Any, method: Any) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if method.kind in {"gd", "sgd"}:
        return torch.optim.SGD(params, lr=method.learning_rate, momentum=0.0)
    if method.kind == "adam":
        return torch.optim.Adam(params, lr=method.learning_rate, betas=tuple(method.betas), eps=method.eps)
    raise ValueError(f"`method.kind` must be 'gd', 'sgd' or 'adam', got {method.kind!r}")


def train_in_place(
    model: Any,
    examples: Sequence[TrainingExample],
    method: Any,
    *,
    seed: int,
    device: str = "cpu",
) -> list[float]:
    """Fine-tune ``model`` in place on ``examples`` (already in the order to use).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Restored to the pretrained weights by the caller.
    examples : sequence of TrainingExample
        The demos, in order.
    method : GDMethod | SGDMethod | AdamMethod
        Kind and hyper-parameters.
    seed : int
        Seeds torch before training (relevant for stochastic layers only).
    device : str
        Device of the model.

    Returns
    -------
    list of float
        The training loss at every optimisation step (before the step).
    """
    import torch

    torch.manual_seed(seed)
    optimizer = _optimizer(model, method)
    if method.kind == "gd":
        schedule = [list(examples)] * method.steps
    else:
        schedule = [[ex] for _ in range(method.epochs) for ex in examples]
    losses: list[float] = []
    for batch in schedule:
        optimizer.zero_grad(set_to_none=True)
        loss = label_loss(model, batch, device=device)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    optimizer.zero_grad(set_to_none=True)
    return losses
