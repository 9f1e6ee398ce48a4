"""The training losses of the GD-family methods, from a batch of tokenised demos.

:func:`training_loss` (the loss every method but ``layer_causal_gd`` minimises)
and the pieces it is built from, which
:mod:`hyptest.collect.layer_causal` reuses for each layer's prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .scoring import lm_head_logits

__all__ = ["TrainingExample", "label_loss", "loss_at_targets", "padded_batch", "target_positions", "training_loss"]


@dataclass(frozen=True)
class TrainingExample:
    """Token ids of one demo and the positions of its label tokens."""

    ids: tuple[int, ...]
    targets: tuple[int, ...]


def label_loss(model: Any, examples: Sequence[TrainingExample], *, device: str = "cpu") -> Any:
    """Mean over examples of the summed negative log-likelihood of the label tokens.

    Examples are right-padded into one batch; the LM head is applied only at
    the positions that predict a label token. The same as
    ``training_loss(model, examples, loss="label")``.
    """
    return training_loss(model, examples, loss="label", device=device)


def training_loss(model: Any, examples: Sequence[TrainingExample], *, loss: str = "label",
                  device: Any = "cpu") -> Any:
    """The training loss of a batch of examples.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The model being trained.
    examples : sequence of TrainingExample
        Their ``targets`` come from ``PromptEncoder.training_example(demo, loss)``.
    loss : {"label", "all_tokens"}
        ``label``: per example the *sum* of the negative log-likelihoods of
        its target (label-word) tokens, then the mean over the examples.
        ``all_tokens`` (Dai et al.): per example the *mean* negative
        log-likelihood over its target tokens (every token of the formatted
        demo after the first), then the mean over the examples, so long and
        short demos weigh alike.
    device : str or torch.device
        Device of the model.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    if loss not in ("label", "all_tokens"):
        raise ValueError(f"`loss` must be 'label' or 'all_tokens', got {loss!r}")

    ids, mask = padded_batch(examples, device)
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    rows, cols, _ = target_positions(examples)
    return loss_at_targets(model, hidden[rows, cols], examples, loss=loss, device=device)


def padded_batch(examples: Sequence[TrainingExample], device: Any) -> tuple[Any, Any]:
    """Input ids of ``examples`` right-padded into one batch, and the attention mask."""
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for b, ex in enumerate(examples):
        ids[b, : len(ex.ids)] = torch.tensor(ex.ids, device=device)
        mask[b, : len(ex.ids)] = 1
    return ids, mask


def target_positions(examples: Sequence[TrainingExample]) -> tuple[list[int], list[int], list[int]]:
    """Batch row, predicting position and target token of every target, example by example."""
    rows, cols, tokens = [], [], []
    for b, ex in enumerate(examples):
        for t in ex.targets:
            rows.append(b)
            cols.append(t - 1)
            tokens.append(ex.ids[t])
    return rows, cols, tokens


def loss_at_targets(model: Any, hidden: Any, examples: Sequence[TrainingExample], *, loss: str,
                    device: Any) -> Any:
    """The training loss from the final hidden states at the positions :func:`target_positions` lists.

    ``hidden`` has one row per target (after the model's final norm); the
    loss is reduced as :func:`training_loss` describes.
    """
    import torch

    rows, _, tokens = target_positions(examples)
    logits = lm_head_logits(model, hidden).float()
    logp = torch.log_softmax(logits, dim=-1)
    token_logp = logp[torch.arange(len(tokens)), torch.tensor(tokens, device=device)]
    if loss == "label":
        return -token_logp.sum() / len(examples)
    per_example = torch.zeros(len(examples), dtype=token_logp.dtype, device=token_logp.device)
    per_example = per_example.index_add(0, torch.tensor(rows, device=token_logp.device), token_logp)
    counts = torch.tensor([len(ex.targets) for ex in examples], dtype=token_logp.dtype, device=token_logp.device)
    return -(per_example / counts).mean()
