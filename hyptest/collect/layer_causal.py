"""Layer-causal gradient descent (Deutch et al., NAACL 2024): each layer learns only from its own output.

In-context learning is *layer-causal*: what layer ``l`` of a transformer does
with the demonstrations depends only on the demonstrations' representations at
layers below ``l``; nothing computed by a later layer reaches it. Ordinary
fine-tuning is not: the loss at the model's output back-propagates through
every layer, so the update of layer ``l`` carries information from all the
layers above it. Deutch et al. [1]_ (Sec. 5) propose a GD variant that respects
layer causality, and report that it brings the Dai et al. similarity metrics
of fine-tuning closer to ICL.

Definition implemented here (checked against the authors' code,
``GiilDe/ft-vs-icl``: the ``per_layer`` flag of ``struprompting/models/gpt.py``
and ``criterions/fs_ft.py``, run with ``--optimizer sgd --batch-size 1
--max-epoch 1 --optim-group attn_kv``). For one training sequence, one forward
pass of the model at its current weights with

1. a stop-gradient on the input of every decoder layer: layer ``l`` computes
   ``h_l = f_l(sg(h_{l-1}); theta_l)`` (values unchanged, gradient blocked);
2. an intermediate prediction from every layer, its output read through the
   model's final norm and LM head (the "logit lens"):
   ``logits_l = head(norm(h_l))``;
3. the training loss (the method's ``loss``: ``label`` or ``all_tokens``, the
   same reduction as :func:`hyptest.collect.losses.training_loss`) of every
   ``logits_l``, **summed** over the ``L`` layers:
   ``L_LC = sum_l loss(logits_l)``.

One backward pass of ``L_LC`` and one optimiser step update every layer at
once. Because of the stop-gradients, the gradient of layer ``l``'s own
parameters is ``d loss(logits_l) / d theta_l`` and nothing else: no gradient
reaches a layer from the layers above it. Parameters shared by every
prediction (the final norm and the LM head, when they are trained) get the sum
of every layer's gradient; the input embeddings get none (their output is
stopped before layer 0) unless they are tied to the LM head. With one layer,
``L_LC`` is the ordinary training loss, so layer-causal GD is ordinary GD.

The optimiser is plain SGD, batch size 1, one step per demo in the given order,
``epochs`` passes (the authors' setting; Dai et al.'s FT differs only in its
loss). The forward values are those of the ordinary forward pass, so what a
recorder sees during training (e.g. Dai et al.'s training queries) is
unchanged.

References
----------
.. [1] Deutch, Magar, Bar Natan & Dar (2024). In-context learning and gradient
   descent revisited. NAACL 2024. arXiv:2311.07772. Code:
   https://github.com/GiilDe/ft-vs-icl
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

from .losses import TrainingExample, loss_at_targets, padded_batch, target_positions

__all__ = ["decoder_layers", "final_norm", "layer_causal_loss", "layer_outputs"]


def decoder_layers(model: Any) -> list[Any]:
    """The decoder layers of a causal LM, bottom first (``model.get_decoder().layers``).

    Raises
    ------
    ValueError
        If the decoder has no ``layers`` module list.
    """
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None or not len(layers):
        raise ValueError(f"layer-causal GD needs the decoder's layers as `{type(decoder).__name__}.layers`; "
                         f"{type(model).__name__} has none")
    return list(layers)


def final_norm(model: Any) -> Any:
    """The norm the decoder applies after its last layer (``model.get_decoder().norm``).

    Raises
    ------
    ValueError
        If the decoder has no ``norm`` module.
    """
    decoder = model.get_decoder()
    norm = getattr(decoder, "norm", None)
    if norm is None:
        raise ValueError(f"layer-causal GD reads every layer through the final norm, `{type(decoder).__name__}"
                         f".norm`; {type(model).__name__} has none")
    return norm


@contextlib.contextmanager
def layer_outputs(model: Any, *, stop_gradient: bool = True) -> Iterator[list[Any]]:
    """Collect every decoder layer's output hidden states during the forward passes of a ``with`` block.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    stop_gradient : bool, default True
        Detach every layer's input hidden states (the values do not change).

    Yields
    ------
    list of torch.Tensor
        Filled during the block: one ``(batch, positions, hidden)`` tensor
        per layer and forward pass, bottom layer first. The hooks are removed
        on exit, also on error.
    """
    outputs: list[Any] = []

    def detach_input(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (args[0].detach(), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"].detach()}

    def keep_output(module: Any, args: tuple, output: Any) -> None:
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handles = []
    try:
        for layer in decoder_layers(model):
            if stop_gradient:
                handles.append(layer.register_forward_pre_hook(detach_input, with_kwargs=True))
            handles.append(layer.register_forward_hook(keep_output))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def layer_causal_loss(model: Any, examples: Sequence[TrainingExample], *, loss: str = "label",
                      device: Any = "cpu") -> Any:
    """Deutch et al.'s layer-causal training loss of a batch of examples (see the module docstring).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A decoder with ``get_decoder().layers`` and ``get_decoder().norm``.
    examples : sequence of TrainingExample
        Their ``targets`` come from ``PromptEncoder.training_example(demo, loss)``.
    loss : {"label", "all_tokens"}
        The per-layer loss, reduced as in :func:`hyptest.collect.losses.training_loss`.
    device : str or torch.device
        Device of the model.

    Returns
    -------
    torch.Tensor
        A scalar: the sum over layers of the loss of each layer's prediction,
        every layer's input detached.

    Raises
    ------
    ValueError
        For an unknown ``loss`` or a model without the layers or final norm.
    """
    if loss not in ("label", "all_tokens"):
        raise ValueError(f"`loss` must be 'label' or 'all_tokens', got {loss!r}")
    norm = final_norm(model)
    n = len(decoder_layers(model))
    ids, mask = padded_batch(examples, device)
    rows, cols, _ = target_positions(examples)
    with layer_outputs(model) as outputs:
        model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)
    if len(outputs) != n:
        raise RuntimeError(f"recorded {len(outputs)} layer outputs for {n} layers")
    total = None
    for hidden in outputs:
        term = loss_at_targets(model, norm(hidden[rows, cols]), examples, loss=loss, device=device)
        total = term if total is None else total + term
    return total
