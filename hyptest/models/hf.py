"""Any Hugging Face causal LM, from a local directory or a hub id."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from .._util import file_sha256
from .base import LoadedModel, ModelError, quiet_transformers, resolve_device, torch_dtype

__all__ = ["is_commit", "load_hf", "path_problem", "resolve_hub_commit"]

#: A hub id: ``name`` or ``org/name`` (letters, digits, ``-``, ``_``, ``.``).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def is_commit(revision: str | None) -> bool:
    """Whether ``revision`` is a full 40-hex commit hash (pinned: no lookup needed)."""
    return bool(revision) and bool(_COMMIT.match(str(revision)))


def path_problem(path: str) -> str | None:
    """Why ``path`` is neither an existing local directory nor a hub id; None when it is one of them.

    A path that looks local (starts with ``.``, ``/``, ``~`` or a drive, holds
    a backslash or more than one ``/``, ends with ``/``, or whose first part
    exists here) must exist: it is never sent to the hub.
    """
    local = Path(path).expanduser()
    if local.exists():
        return None if local.is_dir() else f"{path!r} is a file; a local model is a directory"
    first = path.replace("\\", "/").split("/", 1)[0]
    looks_local = (
        path.startswith((".", "/", "~")) or "\\" in path or (os.sep != "/" and os.sep in path)
        or path.count("/") > 1 or path.endswith("/") or re.match(r"^[A-Za-z]:", path) is not None
        or ("/" in path and first and Path(first).expanduser().exists())
    )
    if looks_local:
        return f"no such directory {path!r} (a local path; a hub id is `name` or `org/name`)"
    if not _HUB_ID.match(path):
        return f"{path!r} is neither an existing directory nor a hub id (`name` or `org/name`)"
    return None


@lru_cache(maxsize=64)
def resolve_hub_commit(path: str, revision: str | None) -> str:
    """The commit hash a hub id's revision (default ``main``) points to now.

    Reads only the model's ``config.json`` (from the local HF cache when
    ``HF_HUB_OFFLINE=1``), not its weights. Cached per process, so the units
    planned and the weights loaded in one run name the same commit.

    Raises
    ------
    ModelError
        When the revision cannot be resolved (no network and not cached, unknown id or revision).
    """
    if is_commit(revision):
        return str(revision)
    try:
        from transformers import AutoConfig

        with quiet_transformers():
            config = AutoConfig.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as error:
        raise ModelError(
            f"hub model {path!r} (revision {revision or 'main'}): cannot resolve it to a commit, so its units "
            f"cannot be keyed: {error}. Pin `revision` to a 40-hex commit, or use a local directory."
        ) from None
    commit = getattr(config, "_commit_hash", None)
    if not is_commit(commit):
        raise ModelError(f"hub model {path!r} (revision {revision or 'main'}): the hub gave no commit hash")
    return str(commit)


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
    is_local = local.is_dir()
    problem = path_problem(path)
    if problem:
        raise ModelError(f"model {name!r}: {problem}")
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
    else:  # what was loaded, not what was asked for: the commit the hub resolved
        commit = getattr(model.config, "_commit_hash", None)
        if is_commit(revision) and commit is not None and commit != revision:
            raise ModelError(f"model {name!r}: asked for commit {revision} of {path!r}, the hub gave {commit}")
        identity["revision"] = revision
        identity["commit"] = commit
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, device=device, identity=identity)
