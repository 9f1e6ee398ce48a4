"""Guess which importer a path needs: ``dai``, ``long`` or ``summaries``."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .dai import find_dai_tasks
from .long import LONG_SUFFIXES, long_columns_problems
from .mapping import ColumnMapping, load_mapping
from .summaries import baseline_pairs, summary_files

__all__ = ["FORMATS", "detect_format"]

#: Formats :func:`detect_format` returns.
FORMATS: tuple[str, ...] = ("long", "dai", "summaries")
#: Largest .json file read whole to look for run summaries.
_MAX_JSON_BYTES: int = 64 * 2**20

_LOOKED_FOR = (
    "looked for: (dai) a folder with <model>/<task>/{zs,ftzs,icl}/record_info.jsonl, under it or under its "
    "ana_rlt/; (long) a .csv/.tsv/.jsonl/.parquet file with the long-format columns (model, task, method, "
    "demo_set, query_id, gold, order_id or order, and prob_<label> columns or labels + label_probs; see "
    "docs/reanalyse.md, and rename columns with a mapping file); (summaries) .json/.jsonl runs with per-layer "
    "lists paired with a baseline list (e.g. 'SimAOU' and 'Random SimAOU')"
)


def _first_object(path: Path, *, tries: int = 100) -> Any:
    """The first JSON value of a JSONL file that parses (damaged first lines are passed over)."""
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                return json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                tries -= 1
                if tries == 0:
                    return None
    return None


def _header(path: Path, kind: str) -> list[str] | None:
    try:
        if kind in {"csv", "tsv"}:
            with open(path, "rb") as fh:
                text = fh.readline().decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
            return [h.strip() for h in next(csv.reader([text], delimiter="," if kind == "csv" else "\t"))]
        if kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        obj = _first_object(path)
        return list(obj) if isinstance(obj, dict) else None
    except Exception:  # unreadable: reported by detect_format's message
        return None


def _is_summary(obj: Any) -> bool:
    if isinstance(obj, list):
        return bool(obj) and all(_is_summary(o) for o in obj[:5])
    if not isinstance(obj, dict):
        return False
    return bool(baseline_pairs([k for k, v in obj.items() if isinstance(v, list)]))


def detect_format(
    path: str | Path, *, mapping: ColumnMapping | Mapping[str, Any] | str | Path | None = None
) -> str:
    """Say which importer reads `path`.

    Parameters
    ----------
    path : str or Path
        A folder or a file.
    mapping : optional
        A column mapping (see :func:`hyptest.importers.load_mapping`),
        applied before checking the long-format columns.

    Returns
    -------
    str
        ``"dai"`` for a folder in Dai et al.'s ``ana_rlt`` layout,
        ``"long"`` for a CSV/TSV/JSONL/Parquet file with the long-format
        columns, ``"summaries"`` for JSON/JSONL runs (or a folder of them)
        with per-layer lists and their baselines.

    Raises
    ------
    ValueError
        When the format cannot be decided; the message says what was looked
        for and, for a tabular file, which columns are missing.
    FileNotFoundError
        If `path` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"`path` {str(path)!r} does not exist")
    cmap = load_mapping(mapping)
    if path.is_dir():
        if find_dai_tasks(path, ft_setting=cmap.ft_setting):
            return "dai"
        files = summary_files(path)
        if files and all(_is_summary(_summary_sample(f)) for f in files):
            return "summaries"
        raise ValueError(f"{path}: cannot tell the format of this folder; {_LOOKED_FOR}")
    suffix = path.suffix.lower()
    kind = LONG_SUFFIXES.get(suffix)
    if kind is not None:
        names = _header(path, kind)
        if names is not None:
            renamed = [cmap.columns.get(n, n) for n in names]
            missing = long_columns_problems(renamed, cmap)
            if not missing:
                return "long"
            if kind == "jsonl" and _is_summary(_first_object(path)):
                return "summaries"
            raise ValueError(f"{path}: not in the long format ({'; '.join(missing)}); {_LOOKED_FOR}")
        raise ValueError(f"{path}: cannot read its header or first line; {_LOOKED_FOR}")
    if suffix == ".json":
        if _is_summary(_summary_sample(path)):
            return "summaries"
        raise ValueError(f"{path}: a .json file without per-layer lists and baselines; {_LOOKED_FOR}")
    raise ValueError(f"{path}: unknown file type {suffix!r}; {_LOOKED_FOR}")


def _summary_sample(path: Path) -> Any:
    if path.suffix.lower() == ".jsonl":
        return _first_object(path)
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
