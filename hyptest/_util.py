"""Small helpers shared by every stage: hashing, atomic writes, JSON."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "as_run",
    "python_scalar",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_sha256",
    "json_default",
    "stable_hash",
]


def stable_hash(obj: Any, *, length: int = 16) -> str:
    """Return a short hex SHA-256 of ``obj`` serialised as canonical JSON.

    Dict keys are sorted and floats are written with ``repr`` precision, so two
    equal objects always hash alike across processes and machines.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def as_run(positions: Any) -> Any:
    """Sorted, distinct integer ``positions`` as a ``slice`` when they are one run of consecutive values, else themselves.

    Indexing with the slice picks the same elements as with the positions, without a gather (a view for numpy
    arrays and for ``DataFrame.iloc``).
    """
    n = len(positions)
    if n and positions[-1] - positions[0] + 1 == n:
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def file_sha256(path: str | os.PathLike[str], *, chunk_size: int = 1 << 22) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def python_scalar(value: Any) -> Any:
    """``value`` as a plain Python scalar when it is a numpy scalar (``np.int64(3)`` -> ``3``), else as is."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        return item()
    return value


def json_default(value: Any) -> Any:
    """Convert numpy scalars/arrays and paths for :func:`json.dumps`."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        np = None
    if np is not None:
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return float(value)
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.ndarray):
            return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")


def clean_for_json(value: Any) -> Any:
    """Replace non-finite floats by ``None`` recursively (JSON has no NaN/inf)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean_for_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_for_json(v) for v in value]
    return value


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename.

    A reader never sees a half-written file; a crash leaves either the old file
    or the new one (plus, at worst, a stray ``.tmp-*`` file that is ignored).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        try:
            _chmod_by_umask(fd)  # mkstemp makes 0600; a final file gets what open() would give it
            view = memoryview(data)
            while view:  # os.write, not a buffered file: every failure (ENOSPC, EIO) surfaces here
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only briefly off)
    os.umask(mask)
    return mask


def _chmod_by_umask(fd: int) -> None:
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except (AttributeError, OSError):  # pragma: no cover - platforms without fchmod
        pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
