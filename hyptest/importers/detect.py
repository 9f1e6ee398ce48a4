"""Guess which importer a path needs: ``dai``, ``long`` or ``summaries``."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._problems import ImportProblems, Problem
from .dai import find_dai_tasks
from .lm_eval import find_lm_eval_runs
from .long import LONG_SUFFIXES, long_columns_problems
from .mapping import ColumnMapping, load_mapping
from .summaries import baseline_pairs, summary_files

__all__ = ["FORMATS", "detect_format"]

#: Formats :func:`detect_format` returns.
FORMATS: tuple[str, ...] = ("long", "dai", "summaries", "lm_eval")
#: Largest .json file read whole to look for run summaries.
_MAX_JSON_BYTES: int = 64 * 2**20

_LOOKED_FOR = (
    "looked for: (dai) a folder with <model>/<task>/{zs,ftzs,icl}/record_info.jsonl, under it or under its "
    "ana_rlt/; (long) a .csv/.tsv/.jsonl/.parquet file with the long-format columns (model, task, method, "
    "demo_set, query_id, gold, order_id or order, and prob_<label> columns or labels + label_probs; see "
    "docs/reanalyse.md, and rename columns with a mapping file); (summaries) .json/.jsonl runs with per-layer "
    "lists paired with a baseline list (e.g. 'SimAOU' and 'Random SimAOU'); (lm_eval) lm-eval --log_samples "
    "output: samples_<task>_<date>.jsonl with results_<date>.json beside it, or a folder of them"
)


_HINT = ("the format cannot be told while a file does not parse: fix it, or name the format (--format) and skip "
         "bad runs or rows with --skip-bad")


def _parse_problem(path: Path, error: Exception, data: bytes, line: int = 1) -> Problem:
    """`error` from parsing `data` (which starts at `line` of `path`) as a Problem at its line."""
    if isinstance(error, json.JSONDecodeError):
        return Problem(str(path), line + error.lineno - 1, f"not valid JSON: {error.msg} (column {error.colno})")
    if isinstance(error, UnicodeDecodeError):
        at = line + data[: error.start].count(b"\n")
        return Problem(str(path), at, f"not UTF-8 text: byte {data[error.start]:#04x} at offset {error.start} "
                                      f"({error.reason})")
    return Problem(str(path), line, f"cannot be read: {type(error).__name__}: {error}")


def _first_object_or_problem(path: Path, *, tries: int = 100) -> tuple[Any, Problem | None]:
    """The first JSON value of a JSONL file that parses (damaged first lines are passed over), or the
    problem of its first damaged line when none of the first `tries` non-empty lines parses."""
    first: Problem | None = None
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            raw = raw.rstrip(b"\r\n")  # one physical line: an error at its end is on this line
            try:
                return json.loads(raw.decode("utf-8")), None
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                first = first or _parse_problem(path, error, raw, number)
                tries -= 1
                if tries == 0:
                    break
    return None, first


def _first_object(path: Path, *, tries: int = 100) -> Any:
    """The first JSON value of a JSONL file that parses (damaged first lines are passed over)."""
    return _first_object_or_problem(path, tries=tries)[0]


def _header(path: Path, kind: str) -> tuple[list[str] | None, Problem | None]:
    """The column names of a tabular file, or the problem that keeps them from being read."""
    raw = b""
    try:
        if kind in {"csv", "tsv"}:
            with open(path, "rb") as fh:
                raw = fh.readline()
            text = raw.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
            return [h.strip() for h in next(csv.reader([text], delimiter="," if kind == "csv" else "\t"))], None
        if kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names), None
        obj, problem = _first_object_or_problem(path)
        if problem is not None:
            return None, problem
        return (list(obj), None) if isinstance(obj, dict) else (None, None)
    except Exception as error:  # unreadable: the parser's own message, at its line
        if kind == "parquet":
            return None, Problem(str(path), None, f"not a readable Parquet file: {error}")
        return None, _parse_problem(path, error, raw, 1)


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
        with per-layer lists and their baselines, ``"lm_eval"`` for an
        lm-evaluation-harness ``samples_<task>_<date>.jsonl`` file or a
        folder holding such files (checked first).

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
    if find_lm_eval_runs(path):  # named by lm-eval: samples_<task>_<date>.jsonl
        return "lm_eval"
    if path.is_dir():
        if find_dai_tasks(path, ft_setting=cmap.ft_setting):
            return "dai"
        files = summary_files(path)
        samples = [_summary_sample_or_problem(f) for f in files]
        problems = [problem for _, problem in samples if problem is not None]
        if problems:  # the parser's own message at its file and line, not a guess about the format
            raise ImportProblems(problems, hint=_HINT)
        if files and all(_is_summary(obj) for obj, _ in samples):
            return "summaries"
        raise ValueError(f"{path}: cannot tell the format of this folder; {_LOOKED_FOR}")
    suffix = path.suffix.lower()
    kind = LONG_SUFFIXES.get(suffix)
    if kind is not None:
        names, problem = _header(path, kind)
        if problem is not None:
            raise ImportProblems([problem], hint=_HINT)
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
        sample, problem = _summary_sample_or_problem(path)
        if problem is not None:
            raise ImportProblems([problem], hint=_HINT)
        if _is_summary(sample):
            return "summaries"
        raise ValueError(f"{path}: a .json file without per-layer lists and baselines; {_LOOKED_FOR}")
    raise ValueError(f"{path}: unknown file type {suffix!r}; {_LOOKED_FOR}")


def _summary_sample_or_problem(path: Path) -> tuple[Any, Problem | None]:
    """A run-summaries file's content (a JSONL file's first object), or the problem that keeps it from parsing."""
    if path.suffix.lower() == ".jsonl":
        return _first_object_or_problem(path)
    data = b""
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            return None, None
        data = path.read_bytes()
        return json.loads(data.decode("utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, _parse_problem(path, error, data, 1)
