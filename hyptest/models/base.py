"""The loaded-model record shared by all loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoadedModel", "ModelError", "resolve_device", "torch_dtype"]


class ModelError(RuntimeError):
    """A model that cannot be loaded; the message says how to fix it."""


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and provenance.

    Attributes
    ----------
    name : str
        Name used in results.
    model : transformers.PreTrainedModel
        The model, in eval mode, on ``device``.
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer.
    device : str
        ``"cpu"`` or ``"cuda"``.
    identity : dict
        What determines the weights (source, file hash or revision); part of unit keys.
    """

    name: str
    model: Any
    tokenizer: Any
    device: str
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def n_parameters(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.model.parameters())


def resolve_device(device: str) -> str:
    """Turn ``auto`` into ``cuda`` when a GPU is present, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was asked for, but torch sees no CUDA device; use 'auto' or 'cpu'")
    return device


def torch_dtype(name: str) -> Any:
    """Map a dtype name from the study file to a torch dtype."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class quiet_transformers:
    """Silence transformers' info logs and progress bars while loading, then restore them."""

    def __enter__(self) -> "quiet_transformers":
        from transformers.utils import logging as hf_logging

        self._level = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._level)
        if self._bars:
            hf_logging.enable_progress_bar()
