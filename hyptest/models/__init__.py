"""Models: the embedded default, any HF causal LM, tiny random models for tests.

Loaders are registered by source name with lazy ``"module:attr"`` entries, so
importing hyptest does not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import LoadedModel, ModelError

__all__ = ["LoadedModel", "ModelError", "available_models", "load_model", "model_identity"]

_LOADERS: dict[str, str] = {
    "embedded": "hyptest.models.embedded:load_embedded",
    "hf": "hyptest.models.hf:load_hf",
    "tiny": "hyptest.models.tiny:load_tiny",
}


def _loader(source: str) -> Any:
    try:
        target = _LOADERS[source]
    except KeyError:
        raise ModelError(f"unknown model source {source!r}; known: {', '.join(sorted(_LOADERS))}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def _trained_spec(spec: Any) -> Any:
    """The spec of the trained model an untrained control is re-initialised from."""
    return spec.model_copy(update={"control_of": None, "control_seed": None})


def load_model(spec: Any) -> LoadedModel:
    """Load the model a study's ``ModelSpec`` describes.

    An untrained control (``control_of`` set) loads its trained model, then
    re-initialises a fresh copy of its architecture with ``control_seed``
    (:func:`hyptest.models.control.untrained_model`); the trained weights are
    dropped.
    """
    if getattr(spec, "control_of", None) is not None:
        from .control import untrained_model

        trained = load_model(_trained_spec(spec))
        return untrained_model(trained, spec.control_seed, name=spec.name)
    loader = _loader(spec.source)
    if spec.source == "embedded":
        return loader(spec.name, model=spec.embedded_name(), dtype=spec.dtype, device=spec.device)
    if spec.source == "hf":
        from pathlib import Path

        from .hf import path_problem, resolve_hub_commit

        problem = path_problem(spec.path)
        if problem:
            raise ModelError(f"model {spec.name!r}: {problem}")
        # a hub id is loaded at the commit its units were keyed with (resolved once per process)
        revision = spec.revision if Path(spec.path).expanduser().is_dir() else resolve_hub_commit(
            spec.path, spec.revision)
        lm = loader(spec.name, spec.path, revision=revision, dtype=spec.dtype, device=spec.device)
        if "commit" in lm.identity:
            lm.identity["revision"] = spec.revision
        return lm
    return loader(spec.name, seed=spec.seed, device="cpu" if spec.device == "auto" else spec.device)


def model_identity(spec: Any) -> dict[str, Any]:
    """What determines a model's weights, computed without loading it.

    Part of every unit key, so finished units are found on a rerun without
    loading the model, and a changed file never reuses stale units.
    """
    from .._util import file_sha256

    if getattr(spec, "control_of", None) is not None:
        from .control import untrained_identity

        return untrained_identity(model_identity(_trained_spec(spec)), spec.control_seed)
    if spec.source == "embedded":
        from .embedded import embedded_identity

        return embedded_identity(spec.embedded_name(), spec.dtype)
    if spec.source == "tiny":
        return {"source": "tiny", "seed": spec.seed, "hidden_size": 32, "num_layers": 2}
    from pathlib import Path

    from .hf import path_problem, resolve_hub_commit

    local = Path(spec.path).expanduser()
    identity: dict[str, Any] = {"source": "hf", "path": spec.path, "dtype": spec.dtype}
    problem = path_problem(spec.path)
    if problem:
        raise ModelError(f"model {spec.name!r}: {problem}")
    if local.is_dir():
        weights = sorted(local.glob("*.safetensors")) or sorted(local.glob("*.bin"))
        if not weights:
            raise ModelError(f"model {spec.name!r}: no *.safetensors or *.bin weights in {local}")
        identity["sha256"] = {w.name: file_sha256(w) for w in weights}
    else:  # a hub id: keyed by the commit its revision resolves to, so a changed hub model is recollected
        identity["revision"] = spec.revision
        identity["commit"] = resolve_hub_commit(spec.path, spec.revision)
    return identity


def available_models() -> list[dict[str, str]]:
    """Describe the models hyptest can load here, for ``hyptest models``."""
    import importlib.util

    from .embedded import EMBEDDED_MODELS, cache_root

    rows: list[dict[str, str]] = []
    for entry in EMBEDDED_MODELS.values():
        missing = [m for m in (entry.package, *entry.parts) if importlib.util.find_spec(m) is None]
        if missing:
            status = f"not installed: {entry.install}"
        else:
            cached = any((cache_root() / "models").glob(f"{entry.name}-*/model.safetensors"))
            status = "installed; " + ("dequantised cache ready" if cached
                                      else f"dequantised on first use ({entry.first_load})")
        rows.append({"name": entry.name, "source": "embedded", "status": status, "notes": entry.notes})
    rows.append({"name": "tiny", "source": "tiny", "status": "always available",
                 "notes": "random 2-layer Llama with a byte tokenizer, for tests"})
    rows.append({"name": "<hub id or directory>", "source": "hf", "status": "any causal LM",
                 "notes": "source: hf, path: <id or dir>; hub ids need network access"})
    return rows
