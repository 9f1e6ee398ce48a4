"""Attention internals of a decoder-only model, read with forward hooks.

Dai et al. (*Why Can GPT Learn In-Context?*, reference code microsoft/LMOps
``understand_icl``) compare in-context learning with fine-tuning through three
quantities of every layer's self-attention, all taken at one *scored*
position (the last token of the prompt):

* the attention output (after the output projection ``o_proj``), their
  ``self_attn_out_hiddens``;
* the pre-softmax attention scores :math:`q \\cdot k / \\sqrt{d}` from that
  position to chosen key positions, their ``attn_map`` / ``attn_map_ctx``;
* the query vectors :math:`q / \\sqrt{d}` (all heads concatenated), their
  ``attn_q``, which ``compute_training_example_attn.py`` uses to build the
  fine-tuning side of the attention to training tokens.

This module reads them from an unmodified Hugging Face model (Llama family:
SmolLM2, the tiny test Llama; also Gemma 3 / Qwen 3 style attention with
``q_norm``/``k_norm``) with forward hooks on each layer's ``self_attn`` and on
its query/key sources.  The hooks are removed when the capture ends, also on
error.  Scores are recomputed from the model's own tensors: the projected (and
normalised, where the model has ``q_norm``/``k_norm``) queries and keys, the
rotary ``cos``/``sin`` the attention module receives in its
``position_embeddings`` keyword, the model module's own
``apply_rotary_pos_emb``, grouped-query heads expanded (query head ``h``
reads key head ``h // n_rep``), ``module.scaling`` and, where configured,
``attn_logit_softcapping``.  The attention mask is not applied: the caller
chooses the key positions (pass causal ones; for sliding-window layers, the
model itself masks keys outside the window).

Difference from Dai's GPT (learned absolute positions, no rotary): their
``attn_q`` is position-free; here ``queries`` are taken *before* the rotary
rotation (after ``q_norm`` where present), which is the position-free
counterpart.  Their scores carry the position information in the embeddings,
these carry it in the rotation; both are exactly what the softmax sees.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = [
    "AttentionInternals",
    "QueryRecorder",
    "attention_modules",
    "capture_attention",
]


@dataclass(frozen=True)
class AttentionInternals:
    """Per-layer attention internals at one scored position of each row.

    Attributes
    ----------
    attn_output : numpy.ndarray, shape (batch, n_layers, hidden)
        Output of each layer's self-attention module (after ``o_proj``, before
        the residual addition) at the scored position.
    scores : list of numpy.ndarray
        One array per row, shape ``(n_layers, n_heads, n_keys)``: pre-softmax
        scores ``(q_rot . k_rot) * scaling`` from the scored position to each
        requested key position, in the order requested.
    queries : numpy.ndarray or None, shape (batch, n_layers, n_heads * head_dim)
        ``q * scaling`` before the rotary rotation at the scored position
        (heads concatenated), when asked for.
    positions : numpy.ndarray, shape (batch,)
        The scored position of each row.
    """

    attn_output: np.ndarray
    scores: list[np.ndarray]
    queries: np.ndarray | None
    positions: np.ndarray


def attention_modules(model: Any) -> list[Any]:
    """The self-attention module of every decoder layer, in layer order.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A decoder-only causal LM whose decoder (``model.get_decoder()``) has
        ``layers``, each with a ``self_attn`` holding ``q_proj`` and ``k_proj``.

    Returns
    -------
    list

    Raises
    ------
    ValueError
        If the model does not have that layout (e.g. a fused ``qkv_proj``).
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: its decoder has no `layers`; attention hooks need a "
                         "Llama-style layout (decoder.layers[i].self_attn)")
    out = []
    for i, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None)
        if attn is None or not hasattr(attn, "q_proj") or not hasattr(attn, "k_proj"):
            raise ValueError(f"{type(model).__name__}: layer {i} has no self_attn with q_proj and k_proj "
                             "(fused projections are not supported)")
        out.append(attn)
    return out


def _geometry(attn: Any) -> tuple[int, float, float | None]:
    head_dim = int(attn.head_dim)
    scaling = float(getattr(attn, "scaling", head_dim ** -0.5))
    cap = getattr(attn, "attn_logit_softcapping", None)
    if cap is None:
        cap = getattr(getattr(attn, "config", None), "attn_logit_softcapping", None)
    return head_dim, scaling, (float(cap) if cap else None)


def _rotary_fn(attn: Any) -> Any:
    fn = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
    if fn is None:
        raise ValueError(f"{type(attn).__name__}: its module has no apply_rotary_pos_emb")
    return fn


def _sources(attn: Any) -> tuple[Any, Any]:
    """The query and key projections, whose outputs are ``(batch, seq, heads * head_dim)`` in every model."""
    return attn.q_proj, attn.k_proj


def _heads(attn: Any, proj: Any, norm: str, head_dim: int) -> Any:
    """A projection's output as ``(batch, seq, heads, head_dim)``, normalised as the model does where it has ``norm``.

    ``q_norm``/``k_norm`` are RMS norms over ``head_dim`` applied per head, so
    applying them here to the ``(batch, seq, heads, head_dim)`` view gives the
    model's values whichever layout it applies them in (Qwen 3 before the head
    transpose, Gemma 3 after it), in the model's dtype.
    """
    import torch

    x = proj.reshape(proj.shape[0], proj.shape[1], -1, head_dim)
    module = getattr(attn, norm, None)
    if module is None:
        return x
    with torch.no_grad():  # also inside a training step: a record, not part of the graph
        return module(x)


@contextmanager
def _hooks(handles: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        handles.clear()


class QueryRecorder:
    """Record the pre-rotary, scaled query vectors of every forward pass, at every position.

    A context manager: while it is open, each forward pass through the model
    (also inside a training step) appends one array; on exit the hooks are
    removed (also on error).  This is Dai et al.'s ``attn_q`` of the ``ft``
    setting: the queries of the training tokens, read during the training
    forward pass, i.e. at the weights before that step.

    Parameters
    ----------
    model : transformers.PreTrainedModel

    Attributes
    ----------
    passes : list of numpy.ndarray
        One per forward pass, float32, shape ``(batch, n_layers, seq_len,
        n_heads * head_dim)``: ``q * scaling`` (``q`` after ``q_norm`` where
        the model has one, before rotary).

    Examples
    --------
    >>> with QueryRecorder(model) as rec:  # doctest: +SKIP
    ...     model(input_ids)
    >>> rec.passes[0].shape  # doctest: +SKIP
    (1, 2, 7, 32)
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.modules = attention_modules(model)
        self.passes: list[np.ndarray] = []
        self._handles: list[Any] = []
        self._current: list[Any] = []

    def _hook(self, layer: int, scaling: float) -> Any:
        attn = self.modules[layer]
        head_dim = int(attn.head_dim)

        def hook(_module: Any, _args: Any, output: Any) -> None:
            q = _heads(attn, output.detach(), "q_norm", head_dim).float()
            q = q.reshape(q.shape[0], q.shape[1], -1) * scaling
            if layer == 0:
                self._current = []
            self._current.append(q.cpu())
            if layer == len(self.modules) - 1:
                import torch

                self.passes.append(torch.stack(self._current, dim=1).numpy())
                self._current = []

        return hook

    def __enter__(self) -> "QueryRecorder":
        try:
            for i, attn in enumerate(self.modules):
                _, scaling, _ = _geometry(attn)
                self._handles.append(_sources(attn)[0].register_forward_hook(self._hook(i, scaling)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _pad(rows: Sequence[Sequence[int]], device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(list(r), dtype=torch.long, device=device)
        mask[b, : len(r)] = 1
    return ids, mask


def capture_attention(
    model: Any,
    input_ids: Sequence[Sequence[int]],
    *,
    positions: Sequence[int] | None = None,
    key_positions: Sequence[Sequence[int]] | None = None,
    return_queries: bool = False,
    device: Any = None,
) -> AttentionInternals:
    """Run one forward pass and read every layer's attention internals at a scored position.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A decoder-only causal LM (see :func:`attention_modules`); any
        attention implementation (eager, sdpa, ...).  Not modified.
    input_ids : sequence of sequence of int
        The rows of one batch (ragged; right-padded internally with an
        attention mask, so every row keeps positions ``0 .. len - 1``).
    positions : sequence of int, optional
        The scored position of each row (negative counts from the row's end);
        default the last token of each row.
    key_positions : sequence of sequence of int, optional
        For each row, the key positions whose scores are returned, in that
        order; default every causal position ``0 .. position``.
    return_queries : bool, default False
        Also return ``q * scaling`` (pre-rotary) at the scored position.
    device : str or torch.device, optional
        Device of the model; default that of its parameters.

    Returns
    -------
    AttentionInternals

    Raises
    ------
    ValueError
        On an empty batch or row, or a position / key position outside its row.

    Notes
    -----
    For layer :math:`\\ell`, head :math:`h`, scored position :math:`p` and
    key :math:`j`:

    .. math::
        s_{\\ell h j} = \\mathrm{cap}\\big(\\mathrm{scaling}\\cdot
        \\langle R_p\\, q_{\\ell h p},\\ R_j\\, k_{\\ell, h // r, j}\\rangle\\big),

    with :math:`R` the rotary rotation, :math:`r` the number of query heads
    per key head and cap the logit soft-capping where configured (identity
    otherwise).  A softmax of :math:`s_{\\ell h \\cdot}` over all causal
    positions is the model's attention probability row (the tests check
    1e-5 against ``output_attentions=True`` with eager attention).
    """
    import torch

    rows = [list(r) for r in input_ids]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("`input_ids` must hold at least one row, each of at least one token")
    n = len(rows)
    lengths = [len(r) for r in rows]
    pos = [lengths[b] - 1 for b in range(n)] if positions is None else [int(p) for p in positions]
    if len(pos) != n:
        raise ValueError(f"`positions` has {len(pos)} entries for {n} rows")
    pos = [p + lengths[b] if p < 0 else p for b, p in enumerate(pos)]
    for b, p in enumerate(pos):
        if not 0 <= p < lengths[b]:
            raise ValueError(f"row {b}: position {p} is outside its {lengths[b]} tokens")
    if key_positions is None:
        keys = [list(range(p + 1)) for p in pos]
    else:
        keys = [[int(j) for j in k] for k in key_positions]
        if len(keys) != n:
            raise ValueError(f"`key_positions` has {len(keys)} entries for {n} rows")
        for b, k in enumerate(keys):
            if any(not 0 <= j < lengths[b] for j in k):
                raise ValueError(f"row {b}: key positions must lie in 0 .. {lengths[b] - 1}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    modules = attention_modules(model)
    n_layers = len(modules)
    rows_t = torch.arange(n, device=dev)
    pos_t = torch.tensor(pos, device=dev)
    outputs: list[Any] = [None] * n_layers
    scores: list[list[Any]] = [[None] * n_layers for _ in range(n)]
    queries: list[Any] = [None] * n_layers
    state: dict[int, dict[str, Any]] = {i: {} for i in range(n_layers)}
    handles: list[Any] = []

    def pre_hook(layer: int) -> Any:
        def hook(_module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            pe = kwargs.get("position_embeddings")
            if pe is None:
                raise ValueError(f"layer {layer}: the attention module got no `position_embeddings`; "
                                 "this model's rotary layout is not supported")
            state[layer]["cos"], state[layer]["sin"] = pe

        return hook

    def keep(layer: int, name: str) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            state[layer][name] = output.detach()

        return hook

    def post_hook(layer: int, attn: Any) -> Any:
        head_dim, scaling, cap = _geometry(attn)
        rotate = _rotary_fn(attn)

        def hook(_module: Any, _args: Any, _kwargs: Any, output: Any) -> None:
            st = state[layer]
            out = output[0] if isinstance(output, tuple) else output
            outputs[layer] = out.detach()[rows_t, pos_t].float().cpu()
            q = _heads(attn, st.pop("q"), "q_norm", head_dim).float()
            k = _heads(attn, st.pop("k"), "k_norm", head_dim).float()
            bsz = q.shape[0]
            if return_queries:
                queries[layer] = (q[rows_t, pos_t].reshape(bsz, -1) * scaling).cpu()
            cos, sin = st.pop("cos").float(), st.pop("sin").float()
            q_rot, k_rot = rotate(q.transpose(1, 2), k.transpose(1, 2), cos, sin)  # (B, heads, T, d)
            n_rep = q_rot.shape[1] // k_rot.shape[1]
            if n_rep > 1:
                k_rot = k_rot.repeat_interleave(n_rep, dim=1)
            q_sel = q_rot[rows_t, :, pos_t]  # (B, heads, d)
            row = torch.einsum("bhd,bhtd->bht", q_sel, k_rot) * scaling
            if cap:
                row = torch.tanh(row / cap) * cap
            row = row.cpu()
            for b in range(bsz):
                scores[b][layer] = row[b][:, keys[b]]

        return hook

    with _hooks(handles), torch.no_grad():
        for i, attn in enumerate(modules):
            q_src, k_src = _sources(attn)
            handles.append(attn.register_forward_pre_hook(pre_hook(i), with_kwargs=True))
            handles.append(q_src.register_forward_hook(keep(i, "q")))
            handles.append(k_src.register_forward_hook(keep(i, "k")))
            handles.append(attn.register_forward_hook(post_hook(i, attn), with_kwargs=True))
        ids, mask = _pad(rows, dev)
        model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)
    return AttentionInternals(
        attn_output=torch.stack(outputs, dim=1).numpy(),
        scores=[torch.stack(s, dim=0).numpy() for s in scores],
        queries=torch.stack(queries, dim=1).numpy() if return_queries else None,
        positions=np.asarray(pos, dtype=np.int64),
    )
