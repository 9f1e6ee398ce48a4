"""Run directory layout and atomic, content-addressed unit files.

::

    RUN_DIR/
      manifest.json        study, plan (every unit's descriptor), provenance
      units/<key>.parquet  one file per finished unit (long format, see README)
      per_query.parquet    order sensitivity per (method, demo set, query)
      results.json         comparisons and verdicts
      report.html          the self-contained report

A unit file is written to a temporary name, fsynced and renamed, so a unit is
either absent or complete; ``kill -9`` loses at most the unit in flight.

``RUN_DIR`` is a local path or any fsspec URL (``memory://runs/x``,
``s3://bucket/runs/x`` with s3fs installed, ...). ``file://`` URLs are local
paths. On other filesystems a file is written to a temporary name in the same
folder and then moved into place with ``fs.mv``; how atomic that is depends on
the backend: a rename is atomic on POSIX filesystems (NFS, Lustre, GPFS
mounted through ``file://`` are handled by the local code above), and object
stores (S3, GCS, Azure) publish an object whole, so a reader never sees a
partial unit, only a missing one.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .._util import atomic_write_bytes, clean_for_json, json_default
from .errors import StoreError

__all__ = ["RECORD_COLUMNS", "RunDir", "StoreError", "is_url"]

#: Columns of the long-format result schema, one row per (unit, query).
RECORD_COLUMNS: dict[str, str] = {
    "unit_key": "content hash of everything that determines the unit",
    "model": "model name from the study",
    "task": "task name",
    "method": "method name from the study (defaults to its kind)",
    "method_kind": "icl | gd | sgd | adam",
    "n_demos": "number of demonstrations N",
    "demo_set": "index of the demo set (0-based)",
    "order_id": "index of the order within the demo set (0 = as drawn)",
    "order": "demo ids in prompt / training order (list of str)",
    "seed": "training seed (0 for ICL)",
    "step": "optimisation steps taken before scoring (0 for ICL)",
    "query_id": "id of the held-out query",
    "gold": "gold label",
    "labels": "label names (list of str), in the task's order",
    "label_logprobs": "log P(label word | prompt), summed over its tokens (list of float)",
    "label_probs": "label probabilities renormalised over the label set (list of float)",
    "p_gold": "renormalised probability of the gold label",
    "pred": "label with the highest probability",
    "correct": "pred == gold",
    "topk_ids": "top-k token ids of the next-token distribution after the prompt (list of int)",
    "topk_probs": "their probabilities (list of float)",
}

#: Prefix of temporary files; they never have a final name, so readers ignore them.
_TMP_PREFIX = ".tmp-"


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is an fsspec URL (``protocol://...`` or a ``::`` chain) rather than a path."""
    return isinstance(location, str) and ("://" in location or "::" in location)


class RunDir:
    """A run directory on the local filesystem or on any fsspec filesystem.

    Parameters
    ----------
    path : str or pathlib.Path
        A local path, or an fsspec URL such as ``memory://runs/x``,
        ``file:///scratch/runs/x`` or ``s3://bucket/runs/x``.
    storage_options : dict, optional
        Passed to fsspec for URLs (credentials, endpoint, ...); must be None
        for a local path.

    Attributes
    ----------
    path : pathlib.Path or str
        The folder: a ``Path`` for local folders (``file://`` URLs included),
        the URL (a ``str``) otherwise.
    fs : fsspec.AbstractFileSystem or None
        The filesystem of a URL; None for local folders.
    is_local : bool
        Whether the local, fsync-and-rename code path is used.

    Raises
    ------
    StoreError
        When the URL's protocol is unknown or its fsspec backend is not installed.
    """

    def __init__(self, path: str | Path, *, storage_options: dict[str, Any] | None = None) -> None:
        self.fs: Any = None
        self._root = ""
        if not is_url(path):
            if storage_options:
                raise StoreError(
                    f"`storage_options` apply to fsspec URLs only, but the run directory is the local path {path}"
                )
            self.path: Path | str = Path(path)
            return
        fs, root = _url_to_fs(str(path), storage_options or {})
        if _is_local_fs(fs):
            self.path = Path(root)
            return
        self.fs = fs
        self._root = root.rstrip("/")
        self.path = str(path).rstrip("/")

    @property
    def is_local(self) -> bool:
        """Whether the folder is on the local filesystem (atomic temp + fsync + rename)."""
        return self.fs is None

    @property
    def location(self) -> str:
        """The folder as text: an absolute local path or the URL (for provenance and messages)."""
        if self.fs is None:
            return str(Path(self.path).resolve())
        return str(self.path)

    @property
    def units_dir(self) -> Path | str:
        """Folder of the unit files."""
        return self._join("units")

    def unit_path(self, key: str) -> Path | str:
        """Where the unit with this key lives."""
        return self._join("units", f"{key}.parquet")

    def has_unit(self, key: str) -> bool:
        """Whether a complete unit file exists (partial files never have the final name)."""
        if self.fs is None:
            return Path(self.unit_path(key)).is_file()
        return bool(self.fs.isfile(self._fs_path("units", f"{key}.parquet")))

    def exists(self, name: str) -> bool:
        """Whether the run directory holds the file ``name`` (e.g. ``"results.json"``)."""
        if self.fs is None:
            return (Path(self.path) / name).is_file()
        return bool(self.fs.isfile(self._fs_path(name)))

    def makedirs(self) -> None:
        """Create the run directory (and its parents) if missing; a no-op on object stores."""
        try:
            if self.fs is None:
                Path(self.path).mkdir(parents=True, exist_ok=True)
            else:
                self.fs.makedirs(self._root, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the run directory {self.path}: {error.strerror or error}") from None

    def write_unit(self, key: str, frame: pd.DataFrame) -> Path | str:
        """Write one unit atomically (temp file, fsync, rename; temp + ``fs.mv`` on fsspec)."""
        missing = [c for c in RECORD_COLUMNS if c not in frame.columns]
        if missing:
            raise StoreError(f"unit {key}: missing columns {missing}")
        buffer = io.BytesIO()
        frame[list(RECORD_COLUMNS)].to_parquet(buffer, index=False)
        try:
            if self.fs is None:
                return atomic_write_bytes(self.unit_path(key), buffer.getvalue())
            return self._fs_atomic_write(("units", f"{key}.parquet"), buffer.getvalue())
        except OSError as error:
            raise StoreError(
                f"cannot write unit {key} to {self.units_dir}: {error.strerror or error}. "
                "Finished units are kept; fix that and rerun the same command to resume."
            ) from None

    def read_units(self, keys: Iterable[str]) -> pd.DataFrame:
        """Read and concatenate the given units."""
        frames = []
        for key in keys:
            path = self.unit_path(key)
            try:
                frames.append(self._read_parquet_at(("units", f"{key}.parquet")))
            except FileNotFoundError:
                raise StoreError(f"unit {key} is missing from {self.units_dir}") from None
            except Exception as error:  # corrupt file: say which one and how to recover
                raise StoreError(
                    f"unit file {path} cannot be read ({error}); delete it and rerun to recompute it"
                ) from None
        if not frames:
            return pd.DataFrame(columns=list(RECORD_COLUMNS))
        return pd.concat(frames, ignore_index=True)

    def write_json(self, name: str, payload: Any) -> Path | str:
        """Write a JSON file atomically (NaN/inf become null)."""
        text = json.dumps(clean_for_json(payload), indent=2, default=json_default, allow_nan=False)
        return self.write_text(name, text + "\n")

    def read_json(self, name: str) -> Any:
        """Read a JSON file of the run directory."""
        path = self._join(name)
        try:
            if self.fs is None:
                text = Path(path).read_text(encoding="utf-8")
            else:
                text = self.fs.cat_file(self._fs_path(name)).decode("utf-8")
        except FileNotFoundError:
            raise StoreError(f"{path} does not exist; is {self.path} a hyptest run directory?") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise StoreError(f"{path} is not valid JSON ({error})") from None

    def write_text(self, name: str, text: str) -> Path | str:
        """Write a UTF-8 text file (e.g. ``report.html``) atomically."""
        return self.write_bytes(name, text.encode("utf-8"))

    def write_bytes(self, name: str, data: bytes) -> Path | str:
        """Write any file of the run directory (e.g. a NetCDF posterior) atomically.

        Raises
        ------
        StoreError
            When the file cannot be written (full disk, no permission, ...): the message names it.
        """
        try:
            if self.fs is None:
                return atomic_write_bytes(Path(self.path) / name, data)
            return self._fs_atomic_write((name,), data)
        except OSError as error:
            raise StoreError(write_error_text(self._join(name), error)) from None

    def write_parquet(self, name: str, frame: pd.DataFrame) -> Path | str:
        """Write a DataFrame as Parquet atomically."""
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return self.write_bytes(name, buffer.getvalue())

    # -- writer lock, stale temp files, another study's results ----------------------------------

    def lock(self) -> Any:
        """The writer lock of this folder (:class:`hyptest.store.lock.RunLock`); call ``acquire()``."""
        from .lock import RunLock

        return RunLock(self)

    def remove_stale_temp_files(self) -> list[str]:
        """Remove temp files a killed writer left (``.tmp-*``, ``.*.tmp``); call it holding the lock."""
        removed: list[str] = []
        if self.fs is None:
            for folder in (Path(self.path), Path(self.path) / "units"):
                if not folder.is_dir():
                    continue
                for entry in folder.iterdir():
                    if _is_temp_name(entry.name) and entry.is_file():
                        try:
                            entry.unlink()
                            removed.append(str(entry))
                        except OSError:
                            pass
            return removed
        for folder in (self._fs_path(), self._fs_path("units")):
            try:
                names = self.fs.ls(folder, detail=False)
            except (OSError, FileNotFoundError):
                continue
            for name in names:
                if _is_temp_name(str(name).rstrip("/").rsplit("/", 1)[-1]):
                    try:
                        self.fs.rm_file(name)
                        removed.append(str(name))
                    except Exception:
                        pass
        return removed

    def move_aside(self, *, keep_units: bool) -> str:
        """Move this folder's results into ``previous-<UTC timestamp>/`` (inside it); return that folder.

        The lock file, earlier ``previous-*`` folders and, with ``keep_units``,
        ``units/`` (content-addressed, so a new study only reuses units whose
        every setting and name match) stay where they are.
        """
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = f"previous-{stamp}"
        keep = {".hyptest.lock", *(["units"] if keep_units else [])}
        try:
            if self.fs is None:
                root = Path(self.path)
                dest = root / target
                suffix = 1
                while dest.exists():
                    dest = root / f"{target}-{suffix}"
                    suffix += 1
                dest.mkdir()
                for entry in sorted(root.iterdir()):
                    if entry.name in keep or entry.name.startswith("previous-"):
                        continue
                    os.replace(entry, dest / entry.name)
                return str(dest)
            root = self._fs_path()
            dest_path = f"{root}/{target}"
            for name in self.fs.ls(root, detail=False):
                base = str(name).rstrip("/").rsplit("/", 1)[-1]
                if base in keep or base.startswith("previous-"):
                    continue
                self.fs.mv(str(name).rstrip("/"), f"{dest_path}/{base}", recursive=True)
            return str(self._join(target))
        except OSError as error:
            raise StoreError(f"cannot move the earlier results of {self.location} aside into {target}/: "
                             f"{error.strerror or error}") from None

    def read_parquet(self, name: str) -> pd.DataFrame:
        """Read a Parquet file of the run directory (e.g. ``per_query.parquet``).

        Raises
        ------
        StoreError
            When the file is missing.
        """
        try:
            return self._read_parquet_at((name,))
        except FileNotFoundError:
            raise StoreError(f"{self._join(name)} is missing; run `hyptest study` again") from None

    # -- internals -------------------------------------------------------------------------------

    def _join(self, *parts: str) -> Path | str:
        if self.fs is None:
            return Path(self.path).joinpath(*parts)
        return "/".join([str(self.path), *parts])

    def _fs_path(self, *parts: str) -> str:
        return "/".join([self._root, *parts])

    def _read_parquet_at(self, parts: tuple[str, ...]) -> pd.DataFrame:
        if self.fs is None:
            return pd.read_parquet(Path(self.path).joinpath(*parts))
        return pd.read_parquet(io.BytesIO(self.fs.cat_file(self._fs_path(*parts))))

    def _fs_atomic_write(self, parts: tuple[str, ...], data: bytes) -> str:
        """Write to a temporary name in the same folder, then ``fs.mv`` it to its final name."""
        final = self._fs_path(*parts)
        folder = final.rsplit("/", 1)[0]
        tmp = f"{folder}/{_TMP_PREFIX}{uuid.uuid4().hex}"
        self.fs.makedirs(folder, exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as handle:
                handle.write(data)
            self.fs.mv(tmp, final)
        except BaseException:
            try:
                self.fs.rm_file(tmp)
            except Exception:  # already moved, never written, or the store is gone
                pass
            raise
        return str(self._join(*parts))


def write_error_text(path: Any, error: OSError) -> str:
    """``cannot write PATH: No space left on device (...)``: one line naming the file and the cause."""
    import errno as _errno

    hint = {
        _errno.ENOSPC: "free space and rerun the same command (finished units are kept)",
        _errno.EDQUOT: "free space and rerun the same command (finished units are kept)",
        _errno.EACCES: "make the folder writable or choose another with --out",
        _errno.EPERM: "make the folder writable or choose another with --out",
        _errno.EROFS: "the filesystem is read-only; choose another folder with --out",
    }.get(error.errno or -1, "rerun the same command once that is fixed (finished units are kept)")
    return f"cannot write {path}: {error.strerror or error}; {hint}"


def _is_temp_name(name: str) -> bool:
    """Temp names of the atomic writers: ``.tmp-*`` (here and ``_util``) and ``.<name>.*.tmp`` (older NetCDF)."""
    return name.startswith(_TMP_PREFIX) or (name.startswith(".") and name.endswith(".tmp"))


def _url_to_fs(url: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with hyptest's dependencies
        raise StoreError(f"run directory {url} is a URL, which needs fsspec: pip install fsspec") from None
    try:
        return fsspec.core.url_to_fs(url, **storage_options)
    except ImportError as error:  # the protocol's backend (s3fs, gcsfs, adlfs, ...) is missing
        raise StoreError(f"run directory {url}: {error}") from None
    except ValueError as error:  # unknown protocol
        raise StoreError(f"run directory {url}: {error}") from None


def _is_local_fs(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)
