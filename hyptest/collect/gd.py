"""GD-family fine-tuning from the same pretrained weights every time.

Four methods, with the loss on the label-word tokens of each demo
(formatted as a zero-shot example, ``input + label word``) or, with
``loss: all_tokens`` (Dai et al.), on every token of the formatted demo:

* ``gd``   full-batch gradient descent: each step uses the mean loss over all
  N demos, so the result does not depend on their order (up to float rounding);
* ``sgd``  plain SGD, batch size 1, one step per demo in the given order;
* ``adam`` Adam, batch size 1, one step per demo in the given order;
* ``layer_causal_gd`` plain SGD, batch size 1, in order, on Deutch et al.'s
  layer-causal loss (:mod:`hyptest.collect.layer_causal`): each layer is
  trained only by the loss of its own output, read through the final norm and
  LM head.

The model stays in eval mode while training (dropout off), so every method is a
deterministic function of (weights, demos, order, seed), as Theorem 1 of Shen
et al. assumes. Weights are restored in place from a snapshot taken once per
model: held in memory when the run's memory budget has room for it, else
written once to a temporary safetensors file and read back from there (the
same bits either way).

Which weights train is the method's ``params`` (:func:`trainable_parameters`):
all of them, the value projection of one layer (Shen et al.'s "GD-hat"), or
the key and value projections of every layer (Dai et al.). Only those get
gradients, are in the optimizer, and are held in the walk's snapshots.

Orders that share leading demos share their first optimisation steps.
:func:`train_orders` walks the orders' step schedules as a prefix tree: each
shared step is taken once, and the training state (parameters, optimizer
state, RNG state) is snapshotted where the tree branches and restored when the
walk comes back. Every step runs exactly the operations of the straight loop
(:func:`train_in_place`) on exactly the same state, so every order ends with
the same bits as if it had been trained alone. Full-batch ``gd`` has nothing to
share (each order's batch lists the demos in its own order), so every order is
trained separately; its spread across orders is real float rounding.
"""

from __future__ import annotations

import contextlib
import copy
import re
from typing import Any, Callable, Iterator, Sequence

from .layer_causal import layer_causal_loss
from .losses import TrainingExample, label_loss, loss_at_targets, padded_batch, target_positions, training_loss
from .memory import MemoryBudget, largest_tensor_bytes, tensor_bytes

__all__ = [
    "TrainingExample",
    "WeightSnapshot",
    "label_loss",
    "loss_at_targets",
    "n_layers",
    "padded_batch",
    "resolve_layer",
    "target_positions",
    "train_in_place",
    "train_orders",
    "trainable_parameters",
    "training_loss",
    "training_schedule",
    "training_state_bytes",
]

_PROJ = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn\.([kv])_proj$")
_ATTN = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn$")


class WeightSnapshot:
    """A copy of a model's parameters that can be written back in place.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose parameters are saved.
    memory_budget : MemoryBudget, optional
        Where the copy's bytes are reserved. If they do not fit, the copy is
        written to a temporary safetensors file instead (deleted when the
        snapshot is) and :meth:`restore` reads it back: slower, same bits.
        Default: the copy is held in memory, unaccounted.
    """

    def __init__(self, model: Any, memory_budget: MemoryBudget | None = None) -> None:
        live = list(model.parameters())
        self.nbytes = tensor_bytes(live)
        self._budget = memory_budget
        self._file: Any = None
        self._live = live
        self._params: list[tuple[Any, Any]] = []
        #: id of a live parameter -> its saved copy, while the copy is in memory
        self._by_id: dict[int, Any] = {}
        if memory_budget is None or memory_budget.reserve(self.nbytes, "entry weights"):
            self._params = [(p, p.detach().clone()) for p in live]
            self._by_id = {id(p): kept for p, kept in self._params}
        else:
            self._write({str(i): p.detach() for i, p in enumerate(live)})

    def _write(self, tensors: dict[str, Any]) -> None:
        import tempfile

        from safetensors.torch import save_file

        self._file = tempfile.TemporaryDirectory(prefix="hyptest-weights-")
        self._path = f"{self._file.name}/entry.safetensors"
        save_file({k: t.contiguous().cpu() for k, t in tensors.items()}, self._path)

    def spill(self) -> None:
        """Move an in-memory copy to a temporary file and give its bytes back to the budget."""
        if self._file is not None:
            return
        self._write({str(i): kept for i, (_, kept) in enumerate(self._params)})
        self._params = []
        self._by_id = {}
        if self._budget is not None:
            self._budget.release(self.nbytes, "entry weights")

    @property
    def on_disk(self) -> bool:
        """Whether the copy is in a temporary file rather than in memory."""
        return self._file is not None

    def restore(self) -> None:
        """Copy the saved values back into the live parameters and clear gradients."""
        import torch

        with torch.no_grad():
            if self._file is not None:
                _read_into(self._path, self._live)
                for live in self._live:
                    live.grad = None
                return
            for live, saved in self._params:
                live.copy_(saved)
                live.grad = None

    def saved(self, param: Any) -> Any:
        """The saved copy of ``param`` (in memory), or None when the copy is on disk."""
        return None if self._file is not None else self._by_id[id(param)]

    def close(self) -> None:
        """Free the copy: release its reservation, or delete its file."""
        if self._file is not None:
            self._file.cleanup()
            self._file = None
        elif self._budget is not None and self._params:
            self._budget.release(self.nbytes, "entry weights")
        self._params, self._by_id = [], {}

    def __del__(self) -> None:  # the file must not outlive the snapshot
        try:
            if self._file is not None:
                self._file.cleanup()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _read_into(path: str, live: Sequence[Any]) -> None:
    """Read tensor ``str(i)`` of the safetensors file at ``path`` into ``live[i]``, in place.

    Plain reads at the offsets of the file's header, not a memory map: a mapped
    file's pages count in the process's resident memory while it is open (the
    whole copy of the weights at once), reads go through one tensor at a time.
    """
    import json
    import struct

    import torch

    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        base = 8 + header_len
        for i, param in enumerate(live):
            begin, end = header[str(i)]["data_offsets"]
            target = param.detach()
            staged = target if target.device.type == "cpu" and target.is_contiguous() else \
                torch.empty(target.shape, dtype=target.dtype)
            view = staged.view(-1).view(torch.uint8).numpy()
            if view.nbytes != end - begin:
                raise ValueError(f"{path}: tensor {i} holds {end - begin} bytes, the parameter {view.nbytes}")
            f.seek(base + begin)
            if f.readinto(memoryview(view)) != view.nbytes:
                raise ValueError(f"{path}: tensor {i} is cut short")
            if staged is not target:
                target.copy_(staged)


def _method_label(method: Any) -> str:
    return f"method {getattr(method, 'name', None) or getattr(method, 'kind', '?')!r}"


def n_layers(model: Any) -> int:
    """Number of decoder layers, counted from modules named ``...layers.{i}.self_attn``.

    Falls back to ``config.num_hidden_layers`` when no such module exists.
    """
    found = {int(m.group(1)) for name, _ in model.named_modules() if (m := _ATTN.search(name))}
    if found:
        return max(found) + 1
    return int(getattr(getattr(model, "config", None), "num_hidden_layers", 0) or 0)


def resolve_layer(layer: int | str, count: int, *, what: str = "`layer`") -> int:
    """The 0-based index of ``layer`` (an int, negative from the end, ``middle`` or ``last``).

    Raises
    ------
    ValueError
        If the index is outside a model of ``count`` layers.
    """
    if layer == "middle":
        return count // 2
    if layer == "last":
        return count - 1
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"{what} must be an int, 'middle' or 'last', got {layer!r}")
    if not -count <= layer < count:
        raise ValueError(
            f"{what} is {layer}, but the model has {count} layers (valid: 0..{count - 1}, "
            f"-{count}..-1, 'middle' or 'last')"
        )
    return layer % count


def trainable_parameters(model: Any, method: Any) -> list[tuple[str, Any]]:
    """The named parameters a method trains, in ``model.named_parameters()`` order.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    method : GDMethod | SGDMethod | AdamMethod | LayerCausalGDMethod
        Its ``params`` (default ``all``) and ``layer`` select the parameters:
        ``all``: every parameter that requires a gradient; ``value_proj``: the
        weight (and bias, if any) of ``...layers.{layer}.self_attn.v_proj``;
        ``attention_kv``: those of ``...layers.{i}.self_attn.k_proj`` and
        ``v_proj`` of every layer ``i``.

    Returns
    -------
    list of (str, torch.nn.Parameter)

    Raises
    ------
    ValueError
        If the model has no such modules (e.g. a fused ``qkv`` projection; the
        message lists the attention modules it does have), or ``layer`` is not
        a layer of the model.
    """
    which = getattr(method, "params", "all")
    if which == "all":
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if which not in ("value_proj", "attention_kv"):
        raise ValueError(f"{_method_label(method)}: `params` must be 'all', 'value_proj' or 'attention_kv', "
                         f"got {which!r}")
    projections = {(int(m.group(1)), m.group(2)): module for name, module in model.named_modules()
                   if (m := _PROJ.search(name))}
    if not projections:
        attention = [n for n, _ in model.named_modules() if re.search(r"attn|attention", n.rsplit(".", 1)[-1])]
        listed = ", ".join(attention[:8]) + (f", ... ({len(attention)} in all)" if len(attention) > 8 else "")
        raise ValueError(
            f"{_method_label(method)}: `params: {which}` trains modules named '...layers.{{i}}.self_attn.k_proj' / "
            f"'v_proj', but {type(model).__name__} has none (a fused query-key-value projection cannot be split); "
            f"its attention modules are: {listed or 'none found'}"
        )
    if which == "value_proj":
        count = n_layers(model)
        layer = getattr(method, "layer", None)
        index = resolve_layer("middle" if layer is None else layer, count,
                              what=f"{_method_label(method)}: `layer`")
        if (index, "v") not in projections:
            raise ValueError(f"{_method_label(method)}: layer {index} has no self_attn.v_proj module")
        modules = [projections[(index, "v")]]
    else:
        modules = [projections[key] for key in sorted(projections)]
    chosen = {id(p) for module in modules for p in module.parameters(recurse=False)}
    return [(n, p) for n, p in model.named_parameters() if id(p) in chosen]


@contextlib.contextmanager
def _only_these_train(model: Any, params: Sequence[Any]) -> Iterator[None]:
    """Let exactly ``params`` require gradients; put every flag back afterwards, also on errors."""
    chosen = {id(p) for p in params}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(id(p) in chosen)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _optimizer(params: Sequence[Any], method: Any) -> Any:
    import torch

    params = list(params)
    if method.kind in {"gd", "sgd", "layer_causal_gd"}:
        return torch.optim.SGD(params, lr=method.learning_rate, momentum=0.0)
    if method.kind == "adam":
        # torch's fused kernel where it has one: 0.08 s a step for SmolLM2's parameters on 2 CPU cores
        # against 0.52 s for the single-tensor loop, with no step-sized temporaries (collector version 5)
        fused = bool(params) and all(p.device.type in {"cpu", "cuda"} and p.is_floating_point() for p in params)
        return torch.optim.Adam(params, lr=method.learning_rate, betas=tuple(method.betas), eps=method.eps,
                                fused=fused or None)
    raise ValueError(f"`method.kind` must be 'gd', 'sgd', 'adam' or 'layer_causal_gd', got {method.kind!r}")


class _StepInBackward:
    """One optimizer per parameter, stepped by a hook as soon as that parameter's gradient is complete.

    Each parameter's update then runs inside the backward pass and its gradient
    is dropped at once, so a step never holds the gradients of every parameter
    together (one set of gradients, 0.54 GB on SmolLM2, that the plain loop
    holds at its peak). The update of a parameter reads only that parameter,
    its gradient and its own state, elementwise, with the same kernels for one
    tensor or for all (Adam: torch's fused kernel on CPU and CUDA; SGD: the
    ones torch picks for the device), so every step gives the bits of
    :func:`train_in_place`'s ``loss.backward(); optimizer.step()`` (tested on CPU). A parameter's hook fires
    once per backward pass, after every use of it (a tied embedding and LM
    head: after both) has added its share, and a backward pass no longer needs
    a weight once its gradient is complete.

    It stands in for the one optimizer over all parameters where the walk
    uses it: :attr:`state` reads and replaces every parameter's state,
    :meth:`step` is a no-op (the hooks stepped already), :meth:`close` removes
    the hooks.
    """

    def __init__(self, params: Sequence[Any], method: Any) -> None:
        self._optimizers = {p: _optimizer([p], method) for p in params}
        self._hooks = [p.register_post_accumulate_grad_hook(self._step_one) for p in params]

    def _step_one(self, param: Any) -> None:
        self._optimizers[param].step()
        param.grad = None

    @property
    def state(self) -> dict[Any, dict[str, Any]]:
        return {p: opt.state[p] for p, opt in self._optimizers.items() if p in opt.state}

    @state.setter
    def state(self, state: Any) -> None:
        import collections

        for p, opt in self._optimizers.items():
            opt.state = collections.defaultdict(dict, {p: state[p]} if p in state else {})

    def step(self) -> None:
        """Nothing: each parameter stepped inside the backward pass."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self._optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def clear(self) -> None:
        """Drop every parameter's optimizer state."""
        self.state = {}

    def close(self) -> None:
        """Remove the hooks: the parameters train as plain tensors again."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def _objective(method: Any) -> Callable[..., Any]:
    """The loss a method minimises: :func:`training_loss`, or the layer-causal sum over layers."""
    if getattr(method, "kind", None) == "layer_causal_gd":
        return layer_causal_loss
    return training_loss


def training_schedule(examples: Sequence[TrainingExample], method: Any) -> list[tuple[TrainingExample, ...]]:
    """The batches of every optimisation step, in order.

    ``gd``: ``steps`` times the whole list; ``sgd`` / ``adam`` /
    ``layer_causal_gd``: each example alone, in order, ``epochs`` times.
    """
    if method.kind == "gd":
        return [tuple(examples)] * method.steps
    return [(ex,) for _ in range(method.epochs) for ex in examples]


def _step(model: Any, optimizer: Any, batch: Sequence[TrainingExample], device: Any, kind: str = "label",
          objective: Callable[..., Any] = training_loss) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = objective(model, batch, loss=kind, device=device)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


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
    method : GDMethod | SGDMethod | AdamMethod | LayerCausalGDMethod
        Kind and hyper-parameters; ``params`` picks what trains
        (:func:`trainable_parameters`; the other parameters' ``requires_grad``
        is off while training and put back afterwards), ``loss`` the loss
        (:func:`training_loss`; the examples' targets must match it).
    seed : int
        Seeds torch before training (relevant for stochastic layers only).
    device : str
        Device of the model.

    Returns
    -------
    list of float
        The training loss at every optimisation step (before the step); for
        ``layer_causal_gd`` the layer-causal loss, summed over the layers.
    """
    import torch

    params = [p for _, p in trainable_parameters(model, method)]
    kind = getattr(method, "loss", "label")
    with _only_these_train(model, params):
        torch.manual_seed(seed)
        optimizer = _optimizer(params, method)
        objective = _objective(method)
        losses = [_step(model, optimizer, batch, device, kind, objective)
                  for batch in training_schedule(examples, method)]
        optimizer.zero_grad(set_to_none=True)
    return losses


def training_state_bytes(params: Sequence[Any], method: Any) -> int:
    """Bytes a training walk holds whatever the memory budget (:func:`train_orders`).

    Adam's two moments (none for SGD and GD), and one step's transients: the
    parameters step one by one inside the backward pass, so at most the largest
    parameter's gradient and the optimizer's two temporaries of its size exist
    at once (a tied embedding's gradient is the sum of two of that size).
    """
    return tensor_bytes(params) * (2 if method.kind == "adam" else 0) + 3 * largest_tensor_bytes(params)


class _TrainingState:
    """Parameters, optimizer state and RNG state at one node of the step tree."""

    def __init__(self, params: list[Any], optimizer: Any, *, saved_params: list[Any] | None = None,
                 entry: WeightSnapshot | None = None) -> None:
        import torch

        #: the entry snapshot that restores the parameters when they are not held here (root only)
        self.entry = entry
        with torch.no_grad():
            if entry is not None:
                self.params: list[Any] = []
            else:
                self.params = saved_params if saved_params is not None else [p.detach().clone() for p in params]
            held = optimizer.state  # read once: the walk's optimizer builds this mapping on each access
            self.optim = {
                i: {k: (v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v)) for k, v in st.items()}
                for i, p in enumerate(params)
                if (st := held.get(p))
            }
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() \
            else None

    def restore(self, params: list[Any], optimizer: Any) -> None:
        import collections

        import torch

        with torch.no_grad():
            if self.entry is not None:
                self.entry.restore()
            for live, saved in zip(params, self.params):
                live.copy_(saved)
                live.grad = None
            state: Any = collections.defaultdict(dict)
            held = optimizer.state  # read once: the walk's optimizer builds this mapping on each access
            for i, saved_state in self.optim.items():
                p = params[i]
                current = held.get(p)
                if current is not None and current.keys() == saved_state.keys() and all(
                    torch.is_tensor(current[k]) and torch.is_tensor(v) and current[k].shape == v.shape
                    and current[k].dtype == v.dtype for k, v in saved_state.items()
                ):
                    for k, v in saved_state.items():
                        current[k].copy_(v)
                    state[p] = current
                else:
                    state[p] = {k: (v.clone() if torch.is_tensor(v) else copy.deepcopy(v))
                                for k, v in saved_state.items()}
            optimizer.state = state
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)

    def nbytes(self, params: list[Any] | None = None) -> int:
        """Bytes a snapshot of this state holds (of ``params`` when this one holds none)."""
        import torch

        total = tensor_bytes(self.params or params or [])
        for st in self.optim.values():
            total += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
        return total


class _StepNode:
    __slots__ = ("children", "leaves")

    def __init__(self) -> None:
        self.children: dict[tuple[TrainingExample, ...], _StepNode] = {}
        self.leaves: list[int] = []


def train_orders(
    model: Any,
    orders: Sequence[Sequence[TrainingExample]],
    method: Any,
    *,
    seed: int,
    device: Any = "cpu",
    snapshot: WeightSnapshot | None = None,
    max_snapshots: int | None = None,
    observe: Callable[[int], Any] | None = None,
    memory_budget: Any = None,
) -> Iterator[tuple[Any, ...]]:
    """Train ``model`` on every order, sharing the steps that orders have in common.

    A generator: each time it yields, the model holds the weights trained on one
    order (gradients cleared); score it, then resume the generator. When the
    generator ends or is closed, the model is back at the weights it had on entry
    and every parameter's ``requires_grad`` is back as it was.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        At the pretrained weights on entry.
    orders : sequence of sequence of TrainingExample
        The demos of each order, in order.
    method : GDMethod | SGDMethod | AdamMethod | LayerCausalGDMethod
        Kind and hyper-parameters (see :func:`training_schedule`).
    seed : int
        Seeds torch before training, as :func:`train_in_place` does.
    device : str or torch.device
        Device of the model.
    snapshot : WeightSnapshot, optional
        A snapshot of the entry weights to reuse; default a new one.
    max_snapshots : int, optional
        Most branch-point snapshots held at once (each holds the trained
        parameters and the optimizer state). Default: as many as fit in
        ``memory_budget``. Where no snapshot is held, the walk restores the
        nearest held one and replays the steps from there (same bits, more time).
    observe : callable, optional
        Called as ``observe(k)`` with the model after ``k`` optimisation steps
        (``k = 0``: before any), once per node of the step tree, so a state that
        several orders share (their common first steps) is observed once; e.g.
        a function that scores the queries. It must not change the parameters.
    memory_budget : MemoryBudget, int or str, optional
        What the branch-point snapshots (and a new entry snapshot) may hold: a
        :class:`~hyptest.collect.memory.MemoryBudget` shared with the caller,
        or a size; default :data:`~hyptest.collect.memory.DEFAULT_BUDGET` for
        the device. Ignored for the branch points when ``max_snapshots`` is given.

    Yields
    ------
    index : int
        Index into ``orders``, in the order the walk finishes them.
    losses : list of float
        The training loss at every step of that order (before the step).
    observed : list
        Only when ``observe`` is given: ``observe``'s results after 0, 1, ...,
        K steps of that order (K + 1 values, shared objects for shared steps).

    Notes
    -----
    Bitwise equal to calling :func:`train_in_place` on each order from the
    entry weights: every step applies the same operations to the same state.
    ``sgd`` with N demos in all N! orders takes ``sum_k N!/(N-k)!`` steps instead
    of ``N * N!`` (64 instead of 96 for N = 4). Each parameter steps inside the
    backward pass as soon as its gradient is complete (one optimizer per
    parameter, the same kernels), so no step holds a full set of gradients.
    """
    if max_snapshots is not None and (isinstance(max_snapshots, bool) or max_snapshots < 0):
        raise ValueError(f"`max_snapshots` must be a non-negative integer or None, got {max_snapshots!r}")
    root = _StepNode()
    for index, order in enumerate(orders):
        node = root
        for batch in training_schedule(order, method):
            node = node.children.setdefault(batch, _StepNode())
        node.leaves.append(index)

    params = [p for _, p in trainable_parameters(model, method)]
    kind = getattr(method, "loss", "label")
    budget = MemoryBudget.for_device(device or "cpu", memory_budget)
    with _only_these_train(model, params):
        yield from _walk_orders(model, root, method, params, kind, seed=seed, device=device, snapshot=snapshot,
                                max_snapshots=max_snapshots, observe=observe, budget=budget)


def _walk_orders(model: Any, root: "_StepNode", method: Any, params: list[Any], kind: str, *, seed: int,
                 device: Any, snapshot: WeightSnapshot | None, max_snapshots: int | None,
                 observe: Callable[[int], Any] | None, budget: MemoryBudget) -> Iterator[tuple[Any, ...]]:
    import torch

    torch.manual_seed(seed)
    optimizer = _StepInBackward(params, method)
    objective = _objective(method)
    entry = snapshot if snapshot is not None else WeightSnapshot(model, budget)
    state_bytes = training_state_bytes(params, method)
    if not budget.reserve(state_bytes, "training state"):
        entry.spill()  # the entry weights make room: they are read back from a file instead
        if not budget.reserve(state_bytes, "training state"):
            budget.overdraw(state_bytes, "training state",
                            f"{method.kind} needs {state_bytes / 1e9:.2f} GB of optimizer state and step transients, "
                            f"more than the memory budget of {budget.limit / 1e9:.2f} GB; nothing else is held "
                            "while it trains")
    if entry.on_disk:
        root_state = _TrainingState(params, optimizer, entry=entry)
    else:
        root_state = _TrainingState(params, optimizer, saved_params=[entry.saved(p) for p in params])
    #: (depth, state) of the held snapshots, root first
    held: list[tuple[int, _TrainingState]] = [(0, root_state)]
    path: list[tuple[TrainingExample, ...]] = []
    losses: list[float] = []
    trail: list[Any] = []  # observe's results along the current path, one per depth

    def can_hold(nbytes: int) -> bool:
        if max_snapshots is not None:
            return len(held) - 1 < max_snapshots
        return budget.reserve(nbytes, "training snapshot")

    def return_to(depth: int) -> None:
        base_depth, state = max((h for h in held if h[0] <= depth), key=lambda h: h[0])
        state.restore(params, optimizer)
        for batch in path[base_depth:depth]:
            _step(model, optimizer, batch, device, kind, objective)

    def visit(node: _StepNode, depth: int) -> Iterator[tuple[Any, ...]]:
        if observe is not None:
            for p in params:
                p.grad = None
            trail.append(observe(depth))
        if node.leaves:
            for p in params:
                p.grad = None
            for index in node.leaves:
                yield (index, list(losses)) if observe is None else (index, list(losses), list(trail))
        kids = list(node.children.items())
        mine = False
        estimate = 0
        if len(kids) > 1 and depth > 0:
            estimate = root_state.nbytes(params) + sum(
                v.numel() * v.element_size() for st in optimizer.state.values() for v in st.values()
                if torch.is_tensor(v)
            )
            if can_hold(estimate):
                held.append((depth, _TrainingState(params, optimizer)))
                mine = True
        try:
            for i, (batch, child) in enumerate(kids):
                if i > 0:
                    return_to(depth)
                path.append(batch)
                losses.append(_step(model, optimizer, batch, device, kind, objective))
                yield from visit(child, depth + 1)
                del path[depth:], losses[depth:]
        finally:  # also when the walk is closed early: a shared budget gets its bytes back
            if mine:
                held.pop()
                if max_snapshots is None:
                    budget.release(estimate, "training snapshot")
        if observe is not None:
            del trail[depth:]

    try:
        yield from visit(root, 0)
    finally:
        optimizer.close()
        optimizer.zero_grad(set_to_none=True)
        optimizer.clear()
        budget.release(state_bytes, "training state")
        entry.restore()
        if snapshot is None:
            entry.close()
        # `visit` refers to itself (a reference cycle that only the cycle collector frees), and through
        # its closure to the held states: drop them now, not at the next collection (the root state
        # holds the entry weights, 0.54 GB on SmolLM2, which a spilled snapshot must give back)
        held.clear()
        root_state = None  # the closures' cell
        visit = None  # type: ignore[assignment]
