"""Any Hugging Face causal LM, from a local directory or a hub id."""

from __future__ import annotations

from pathlib import Path

from .._util import file_sha256
from .base import LoadedModel, ModelError, quiet_transformers, resolve_device, torch_dtype

__all__ = ["load_hf"]


def load_hf(
    name: str,
    path: str,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "auto",
) -> LoadedModel:
    """Load a causal LM with ``AutoModelForCausalLM``.

    A local directory is read offline and its weight files are hashed for
    provenance; a hub id is downloaded (the only case in which hyptest uses
    the network) and identified by its resolved commit.

    Raises
    ------
    ModelError
        If the directory does not exist or transformers cannot load it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(path).expanduser()
    is_local = local.exists()
    if not is_local and (path.startswith((".", "/", "~")) or path.count("/") > 1):
        raise ModelError(f"model {name!r}: no such directory {path}")
    device = resolve_device(device)
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(
                str(local) if is_local else path, revision=revision, dtype=torch_dtype(dtype)
            )
            tokenizer = AutoTokenizer.from_pretrained(str(local) if is_local else path, revision=revision)
    except (OSError, ValueError) as error:
        raise ModelError(f"model {name!r}: cannot load {path!r}: {error}") from None
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    identity: dict[str, object] = {"source": "hf", "path": path, "dtype": dtype}
    if is_local:
        weights = sorted(local.glob("*.safetensors")) or sorted(local.glob("*.bin"))
        identity["sha256"] = {w.name: file_sha256(w) for w in weights}
    else:
        identity["revision"] = revision or getattr(model.config, "_commit_hash", None)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, device=device, identity=identity)
