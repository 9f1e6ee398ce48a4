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
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .._util import atomic_write_bytes, atomic_write_text, clean_for_json, json_default

__all__ = ["RECORD_COLUMNS", "RunDir", "StoreError"]

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


class StoreError(RuntimeError):
    """A run directory that cannot be read or written."""


class RunDir:
    """A run directory on the local filesystem."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def units_dir(self) -> Path:
        """Folder of the unit files."""
        return self.path / "units"

    def unit_path(self, key: str) -> Path:
        """Where the unit with this key lives."""
        return self.units_dir / f"{key}.parquet"

    def has_unit(self, key: str) -> bool:
        """Whether a complete unit file exists (partial files never have the final name)."""
        return self.unit_path(key).is_file()

    def write_unit(self, key: str, frame: pd.DataFrame) -> Path:
        """Write one unit atomically (temp file, fsync, rename)."""
        missing = [c for c in RECORD_COLUMNS if c not in frame.columns]
        if missing:
            raise StoreError(f"unit {key}: missing columns {missing}")
        buffer = io.BytesIO()
        frame[list(RECORD_COLUMNS)].to_parquet(buffer, index=False)
        try:
            return atomic_write_bytes(self.unit_path(key), buffer.getvalue())
        except OSError as error:
            raise StoreError(
                f"cannot write unit {key} to {self.units_dir}: {error.strerror or error}. "
                "Finished units are kept; free space and rerun the same command to resume."
            ) from None

    def read_units(self, keys: Iterable[str]) -> pd.DataFrame:
        """Read and concatenate the given units."""
        frames = []
        for key in keys:
            path = self.unit_path(key)
            try:
                frames.append(pd.read_parquet(path))
            except FileNotFoundError:
                raise StoreError(f"unit {key} is missing from {self.units_dir}") from None
            except Exception as error:  # corrupt file: say which one and how to recover
                raise StoreError(
                    f"unit file {path} cannot be read ({error}); delete it and rerun to recompute it"
                ) from None
        if not frames:
            return pd.DataFrame(columns=list(RECORD_COLUMNS))
        return pd.concat(frames, ignore_index=True)

    def write_json(self, name: str, payload: Any) -> Path:
        """Write a JSON file atomically (NaN/inf become null)."""
        text = json.dumps(clean_for_json(payload), indent=2, default=json_default, allow_nan=False)
        return atomic_write_text(self.path / name, text + "\n")

    def read_json(self, name: str) -> Any:
        """Read a JSON file of the run directory."""
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"{path} does not exist; is {self.path} a hyptest run directory?") from None
        except json.JSONDecodeError as error:
            raise StoreError(f"{path} is not valid JSON ({error})") from None

    def write_parquet(self, name: str, frame: pd.DataFrame) -> Path:
        """Write a DataFrame as Parquet atomically."""
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return atomic_write_bytes(self.path / name, buffer.getvalue())
