"""Read outputs that others logged in hyptest's long format (CSV, TSV, JSONL or Parquet).

One row per (model, task, method, N, demo set, order, seed, step, query): the
gold label and the label probabilities, either one ``prob_<label>`` column per
label or a ``labels`` + ``label_probs`` pair of list columns, optionally the
top-k of the next-token distribution.  The full description is in
``docs/reanalyse.md``; the accepted columns are :data:`LONG_COLUMNS`.

The reader streams record batches through pyarrow: CSV and TSV with
``pyarrow.csv.open_csv`` (RFC 4180: quoted fields may hold delimiters, quotes
and line breaks; LF, CRLF or CR line ends; a UTF-8 byte-order mark is
skipped), JSONL in blocks of lines with ``pyarrow.json``, Parquet with
``ParquetFile.iter_batches``.  Each batch is checked column by column with
numpy and ``pyarrow.compute``; columns with few distinct values (names, ids,
orders) are converted once per distinct value.  A row that fails a vectorised
check goes through the per-row Python checks, which write the problem
messages, so every message is the one the row-by-row reader gives.  Every bad
row becomes a :class:`Problem` with its file and line (for a CSV row that
spans lines, the line where it starts); nothing is dropped without one.
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .._validation import validate_count, validate_flag
from ..store import RECORD_COLUMNS
from ._long_columns import (
    _arr,
    _cells,
    _csr_take,
    _distinct,
    _firsts,
    _floats,
    _groups,
    _list_array,
    _logs,
    _number_lists,
    _Parsed,
    _read_only,
    _row_fsum,
    _row_of_values,
)
from ._long_sources import (
    _BLOCK_BYTES,
    _INT_FIELDS,
    _STR_FIELDS,
    _CsvSource,
    _JsonlSource,
    _ParquetSource,
    _Segment,
)
from ._problems import ImportProblems, Problem, ProblemLog
from .mapping import KINDS, LONG_COLUMNS, PROB_PREFIX, ColumnMapping, load_mapping

__all__ = ["LONG_SUFFIXES", "SUM_TOLERANCE", "ImportResult", "long_columns_problems", "read_long", "unit_key"]

#: Largest allowed |sum of label probabilities - 1| before renormalising.
SUM_TOLERANCE: float = 1e-3
#: Sums within this of 1 are float rounding: kept as given (so hyptest's own records read back bit for bit).
_ROUNDING: float = 1e-12
#: Slack on "top-k probabilities sum to at most 1" (as the overlap metrics check it).
_TOPK_SUM_ATOL: float = 1e-6
#: File suffixes of the long format and how each is read.
LONG_SUFFIXES: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                                 ".parquet": "parquet", ".pq": "parquet"}
_REQUIRED: tuple[str, ...] = ("model", "task", "method", "demo_set", "query_id", "gold")
_IDENTITY: tuple[str, ...] = ("model", "task", "method", "n_demos", "demo_set", "order_id", "seed", "step")
_INT64 = (-(2 ** 63), 2 ** 63 - 1)


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What :func:`read_long` read.

    Attributes
    ----------
    records : pandas.DataFrame
        The good rows in the store's schema (columns
        ``hyptest.store.RECORD_COLUMNS``, in that order), in file order.  The
        list columns hold numpy arrays, as records read from a run directory
        do (rows of one order or one label set share one read-only array).
    problems : list of Problem
        Every problem found (file, line, message).
    n_rows_read : int
        Data rows met in the file (good and bad; blank lines excluded).
    n_rows_skipped : int
        Rows left out because of a problem (``n_rows_read - len(records)``).
    notes : list of str
        Defaults that were applied, renormalisation done, columns ignored.
    source : str
        The file read.
    table : pyarrow.Table or None
        The same records as a pyarrow Table (store schema, list columns as
        Arrow lists), when :func:`read_long` was asked for it (``as_table``).
    """

    records: pd.DataFrame
    problems: list[Problem]
    n_rows_read: int
    n_rows_skipped: int
    notes: list[str] = field(default_factory=list)
    source: str = ""
    table: pa.Table | None = field(default=None, repr=False, compare=False)


def unit_key(model: str, task: str, method: str, n_demos: int, demo_set: int, order_id: int, seed: int,
             step: int) -> str:
    """Content key of an imported unit: a hash of its identifying fields (24 hex digits)."""
    text = json.dumps(["imported", model, task, method, int(n_demos), int(demo_set), int(order_id), int(seed),
                       int(step)])
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


# ---------------------------------------------------------------------------
# column layout
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    names: frozenset[str]
    prob_columns: tuple[tuple[str, str], ...]  # (label, column), in file order
    list_mode: bool


def _layout(names: list[str]) -> _Layout:
    probs = tuple((n[len(PROB_PREFIX):], n) for n in names if n.startswith(PROB_PREFIX) and len(n) > len(PROB_PREFIX))
    return _Layout(frozenset(names), probs, "label_probs" in names)


def long_columns_problems(names: list[str], mapping: ColumnMapping | None = None) -> list[str]:
    """What is missing from a set of (already renamed) column names for the long format.

    Returns
    -------
    list of str
        One message per missing or conflicting column; empty when the names
        can be read.
    """
    mapping = mapping or ColumnMapping()
    have = set(names)
    out = [f"missing column {c!r} ({LONG_COLUMNS[c]})" for c in _REQUIRED if c not in have]
    if "order_id" not in have and "order" not in have:
        out.append("missing column 'order_id' or 'order' (one of them identifies the demo order)")
    if "n_demos" not in have and "order" not in have:
        out.append("missing column 'n_demos' (needed when there is no 'order' column)")
    layout = _layout(list(names))
    if layout.prob_columns and layout.list_mode:
        out.append("both prob_<label> columns and a 'label_probs' column: give one of the two")
    elif not layout.prob_columns and not layout.list_mode:
        out.append("no label probabilities: looked for prob_<label> columns or a 'label_probs' list column")
    elif layout.list_mode and "labels" not in have and mapping.labels is None:
        out.append("'label_probs' needs a 'labels' column or `labels:` in the mapping file")
    if ("topk_ids" in have) != ("topk_probs" in have):
        out.append("'topk_ids' and 'topk_probs' go together: one of them is missing")
    return out


# ---------------------------------------------------------------------------
# value conversion: each returns (value, error message or None)
# ---------------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    kind = type(value)
    if kind is int:
        return False
    if kind is str:
        return not value.strip()
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def _as_str(value: Any, name: str) -> tuple[str | None, str | None]:
    if type(value) is str and value.strip():
        return value, None
    if _is_missing(value):
        return None, f"missing value for {name!r}"
    if isinstance(value, str):
        return value, None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower(), None
    if isinstance(value, Integral):
        return str(int(value)), None
    if isinstance(value, Real):
        f = float(value)
        return (str(int(f)) if f.is_integer() else repr(f)), None
    return None, f"{name!r} must be a single value, got {type(value).__name__}"


def _as_int(value: Any, name: str) -> tuple[int | None, str | None]:
    if type(value) is int:
        return value, None
    if _is_missing(value):
        return None, f"missing value for {name!r}"
    if isinstance(value, (bool, np.bool_)):
        return None, f"{name!r} must be an integer, got {value!r}"
    if isinstance(value, Integral):
        return int(value), None
    text = value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text), None
        except ValueError:
            pass
    try:
        f = float(text)
    except (TypeError, ValueError):
        return None, f"{name!r} must be an integer, got {value!r}"
    if not math.isfinite(f) or not f.is_integer():
        return None, f"{name!r} must be an integer, got {value!r}"
    return int(f), None


def _as_float(value: Any, name: str) -> tuple[float | None, str | None]:
    if type(value) is float and math.isfinite(value):
        return value, None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, f"missing value for {name!r}"
    if isinstance(value, (bool, np.bool_)):
        return None, f"{name!r} must be a number, got {value!r}"
    try:
        f = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None, f"{name!r} must be a number, got {value!r}"
    if math.isnan(f):
        return None, f"{name!r} is NaN"
    if not math.isfinite(f):
        return None, f"{name!r} is infinite ({f})"
    return f, None


def _as_list(value: Any, name: str) -> tuple[list[Any] | None, str | None]:
    if _is_missing(value):
        return None, f"missing value for {name!r}"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            return None, f"{name!r} is not a JSON list ({error.msg} at character {error.pos})"
        except RecursionError:
            return None, f"{name!r} is nested too deeply to be a list of labels or numbers"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return None, f"{name!r} must be a list, got {type(value).__name__}"
    return list(value), None


def _number_list(values: list[Any], name: str, *, integer: bool) -> tuple[list[Any] | None, str | None]:
    if integer and all(type(v) is int for v in values):
        return values, None
    if not integer and all(type(v) is float and math.isfinite(v) for v in values):
        return values, None
    out = []
    for i, v in enumerate(values):
        conv, err = (_as_int if integer else _as_float)(v, f"{name}[{i}]")
        if err:
            return None, err
        out.append(conv)
    return out, None



def _as_int64(value: Any, name: str) -> tuple[int | None, str | None]:
    out, err = _as_int(value, name)
    if err is None and not _INT64[0] <= out <= _INT64[1]:  # type: ignore[operator]
        return None, f"{name!r} = {out} does not fit in a 64-bit integer"
    return out, err


# ---------------------------------------------------------------------------
# the checks of one row on its own, in Python: the reference, and the writer of every message
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    """A row whose own values are fine (before the checks against earlier rows)."""

    model: str
    task: str
    method: str
    query_id: str
    gold: str
    demo_set: int
    order: tuple[str, ...] | None
    order_id: int | None
    n_demos: int
    seed: int
    step: int
    labels: tuple[str, ...]
    probs: list[float]
    total: float
    topk_ids: list[int] | None
    topk_probs: list[float] | None
    kind: str


class _RowChecks:
    """Per-row conversion and checks (shared state: the mapping, label order of each layout, defaults)."""

    def __init__(self, mapping: ColumnMapping) -> None:
        self.mapping = mapping
        self.prob_labels: dict[frozenset[str], tuple[str, ...]] = {}
        self.defaults: set[str] = set()

    def layout_defaults(self, layout: _Layout) -> None:
        """The defaults a row of this layout gets (noted as soon as a row of it is read)."""
        if "n_demos" not in layout.names:
            self.defaults.add("n_demos = the length of 'order'")
        if "seed" not in layout.names:
            self.defaults.add("seed = 0 (no 'seed' column)")
        if "step" not in layout.names:
            self.defaults.add("step = 0 (no 'step' column)")

    def check(self, row: dict[str, Any], layout: _Layout) -> _Row | list[str]:
        """The row's values, or its problems (every one found, in a fixed order)."""
        errors: list[str] = []

        def take(conv: Any, name: str) -> Any:
            value, err = conv(row.get(name), name)
            if err:
                errors.append(err)
            return value

        model = take(_as_str, "model")
        task = take(_as_str, "task")
        method = take(_as_str, "method")
        query_id = take(_as_str, "query_id")
        gold = take(_as_str, "gold")
        demo_set = take(_as_int64, "demo_set")
        order: list[str] | None = None
        if "order" in layout.names:
            raw_order = take(_as_list, "order")
            if raw_order is not None:
                order = []
                for i, item in enumerate(raw_order):
                    text, err = _as_str(item, f"order[{i}]")
                    if err:
                        errors.append(err)
                    else:
                        order.append(text)  # type: ignore[arg-type]
        order_id = take(_as_int64, "order_id") if "order_id" in layout.names else None
        if "n_demos" in layout.names:
            n_demos = take(_as_int64, "n_demos")
            if n_demos is not None and order is not None and len(order) != n_demos:
                errors.append(f"'order' has {len(order)} demo ids but 'n_demos' is {n_demos}")
        else:
            n_demos = len(order) if order is not None else None
        seed = take(_as_int64, "seed") if "seed" in layout.names else 0
        step = take(_as_int64, "step") if "step" in layout.names else 0
        self.layout_defaults(layout)
        for name, value in (("demo_set", demo_set), ("seed", seed), ("step", step)):
            if value is not None and value < 0:
                errors.append(f"{name!r} must be >= 0, got {value}")
        if n_demos is not None and n_demos < 1:
            errors.append(f"'n_demos' must be >= 1 (rows without demos have no order to analyse), got {n_demos}")
        labels, probs, total = self.probabilities(row, layout, task, errors)
        topk_ids: list[int] | None = None
        topk_probs: list[float] | None = None
        if "topk_ids" in layout.names:
            topk_ids, topk_probs = self.topk(row, errors)
        kind = self.kind(row, layout, method, errors) if method is not None else None
        if errors:
            return errors
        if gold not in labels:  # type: ignore[operator]
            return [f"gold label {gold!r} is not one of the labels {list(labels)}"]  # type: ignore[arg-type]
        return _Row(model, task, method, query_id, gold, demo_set, None if order is None else tuple(order), order_id,
                    n_demos, seed, step, labels, probs, total, topk_ids, topk_probs, kind)  # type: ignore[arg-type]

    def probabilities(self, row: dict[str, Any], layout: _Layout, task: str | None, errors: list[str]
                      ) -> tuple[tuple[str, ...] | None, list[float] | None, float]:
        declared = self.mapping.labels_for(task) if task is not None else None
        if layout.list_mode:
            raw, err = _as_list(row.get("label_probs"), "label_probs")
            if err:
                errors.append(err)
                return None, None, math.nan
            if "labels" in layout.names:
                raw_labels, err = _as_list(row.get("labels"), "labels")
                if err:
                    errors.append(err)
                    return None, None, math.nan
                labels = tuple(str(x) for x in raw_labels)  # type: ignore[union-attr]
            elif declared is not None:
                labels = declared
            else:
                errors.append(f"no labels for task {task!r}: add a 'labels' column or `labels:` to the mapping")
                return None, None, math.nan
            if len(labels) != len(raw):  # type: ignore[arg-type]
                errors.append(f"{len(labels)} labels but {len(raw)} probabilities")  # type: ignore[arg-type]
                return None, None, math.nan
            pairs = [(label, value, f"label_probs[{i}]") for i, (label, value) in enumerate(zip(labels, raw))]  # type: ignore[arg-type]
        else:
            available = dict(layout.prob_columns)
            if declared is not None:
                unknown = [label for label in declared if label not in available]
                if unknown:
                    errors.append(f"declared label(s) {unknown} of task {task!r} have no prob_<label> column")
                    return None, None, math.nan
                for label, column in layout.prob_columns:
                    if label not in declared and not _is_missing(row.get(column)):
                        errors.append(f"{column!r} has a value, but {label!r} is not a label of task {task!r}")
                labels = declared
            else:
                labels = self.prob_labels.get(layout.names)  # type: ignore[assignment]
                if labels is None:  # the first row of this layout fixes the order (tasks keep their first)
                    labels = self.prob_labels[layout.names] = tuple(
                        k[len(PROB_PREFIX):] for k in row if k.startswith(PROB_PREFIX) and len(k) > len(PROB_PREFIX))
            pairs = [(label, row.get(PROB_PREFIX + label), PROB_PREFIX + label) for label in labels]
        if len(set(labels)) != len(labels):
            errors.append(f"labels repeat a name: {list(labels)}")
            return None, None, math.nan
        if len(labels) < 2:
            errors.append(f"at least 2 labels are needed, got {list(labels)}")
            return None, None, math.nan
        probs = []
        for label, value, name in pairs:
            if value is None or (isinstance(value, str) and not value.strip()):
                errors.append(f"missing probability {name!r} (if tasks have different label sets, declare "
                              "them under `labels:` in the mapping)")
                continue
            p, err = _as_float(value, name)
            if err:
                errors.append(err)
                continue
            if p < 0 or p > 1:  # type: ignore[operator]
                errors.append(f"probability {name!r} = {p!r} is outside [0, 1]")
                continue
            probs.append(p)
        if len(probs) != len(labels):
            return None, None, math.nan
        total = math.fsum(probs)  # type: ignore[arg-type]
        if abs(total - 1.0) > SUM_TOLERANCE:
            errors.append(f"label probabilities sum to {total:.6g}, not 1 (tolerance {SUM_TOLERANCE:g}): give "
                          "the probabilities renormalised over the label set")
            return None, None, math.nan
        return labels, probs, total  # type: ignore[return-value]

    def topk(self, row: dict[str, Any], errors: list[str]) -> tuple[list[int], list[float]]:
        raw_ids, err_ids = _as_list(row.get("topk_ids"), "topk_ids")
        raw_probs, err_probs = _as_list(row.get("topk_probs"), "topk_probs")
        for err in (err_ids, err_probs):
            if err:
                errors.append(err)
        if err_ids or err_probs:
            return [], []
        ids, err = _number_list(raw_ids, "topk_ids", integer=True)  # type: ignore[arg-type]
        if err:
            errors.append(err)
            return [], []
        probs, err = _number_list(raw_probs, "topk_probs", integer=False)  # type: ignore[arg-type]
        if err:
            errors.append(err)
            return [], []
        if len(ids) != len(probs):  # type: ignore[arg-type]
            errors.append(f"'topk_ids' has {len(ids)} entries but 'topk_probs' has {len(probs)}")  # type: ignore[arg-type]
        elif any(not _INT64[0] <= i <= _INT64[1] for i in ids):  # type: ignore[union-attr]
            errors.append("'topk_ids' holds a token id that does not fit in a 64-bit integer")
        elif len(set(ids)) != len(ids):  # type: ignore[arg-type]
            errors.append("'topk_ids' repeats a token id")
        elif any(p < 0 or p > 1 for p in probs):  # type: ignore[union-attr]
            errors.append("'topk_probs' must lie in [0, 1]")
        elif math.fsum(probs) > 1 + _TOPK_SUM_ATOL:  # type: ignore[arg-type]
            errors.append(f"'topk_probs' sum to {math.fsum(probs):.6g} > 1: they must be probabilities of the "  # type: ignore[arg-type]
                          "full next-token distribution")
        return ids, probs  # type: ignore[return-value]

    def kind(self, row: dict[str, Any], layout: _Layout, method: str, errors: list[str]) -> str | None:
        if "method_kind" in layout.names and not _is_missing(row.get("method_kind")):
            kind, err = _as_str(row.get("method_kind"), "method_kind")
            if err:
                errors.append(err)
                return None
            if kind not in (*KINDS, "other"):
                errors.append(f"'method_kind' is {kind!r}; accepted: {', '.join(KINDS)}, other")
                return None
            return kind
        if method in self.mapping.methods:
            return self.mapping.methods[method]
        return method if method in KINDS else "other"


# ---------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------


def _first_rows(*columns: np.ndarray) -> list[tuple[tuple[int, ...], int]]:
    """Distinct combinations of the code ``columns`` in order of first appearance, with the index of that first row."""
    first = _firsts(_groups(*columns))
    return list(zip(zip(*(c[first].tolist() for c in columns)), first.tolist()))


class _Reader:
    """Checks segments of rows, keeps the good ones (as codes and arrays) and the state of the accepted rows."""

    def __init__(self, path: Path, mapping: ColumnMapping, log: ProblemLog) -> None:
        self.file = str(path)
        self.mapping = mapping
        self.log = log
        self.checks = _RowChecks(mapping)
        self.layouts: dict[frozenset[str], tuple[_Layout, list[str]]] = {}
        self.ignored: set[str] = set()
        # strings and tuples of strings (labels, orders) as codes
        self.strings: list[str] = []
        self._string_codes: dict[str, int] = {}
        self.tuples: list[tuple[str, ...]] = []
        self._tuple_codes: dict[tuple[str, ...], int] = {}
        self.units: dict[tuple[int, ...], int] = {}
        # what the accepted rows fixed (each with the line that fixed it)
        self.task_labels: dict[int, tuple[int, int]] = {}
        self.method_kinds: dict[int, tuple[int, int]] = {}
        self.order_by_id: dict[tuple[int, ...], tuple[int, int]] = {}
        self.id_by_order: dict[tuple[int, ...], tuple[int, int]] = {}
        self.n_orders: dict[tuple[int, ...], int] = {}
        self.topk_len: tuple[int, int] | None = None
        self.seen: dict[int, int] = {}
        self.chunks: list[_Parsed] = []
        self.n_read = 0
        self.n_bad = 0
        self.renormalised = 0
        self.max_deviation = 0.0
        self.problem_rows: list[int] = []  # for each kept problem, the rows read before its row

    # -- codes ------------------------------------------------------------------------------

    def code(self, text: str) -> int:
        out = self._string_codes.get(text)
        if out is None:
            out = self._string_codes[text] = len(self.strings)
            self.strings.append(text)
        return out

    def tcode(self, items: tuple[str, ...]) -> int:
        out = self._tuple_codes.get(items)
        if out is None:
            out = self._tuple_codes[items] = len(self.tuples)
            self.tuples.append(items)
        return out

    def layout_for(self, names: frozenset[str]) -> tuple[_Layout, list[str]]:
        if names not in self.layouts:
            ordered = list(names)
            self.layouts[names] = (_layout(ordered), long_columns_problems(ordered, self.mapping))
            self.ignored |= {n for n in names if n not in LONG_COLUMNS and not n.startswith(PROB_PREFIX)}
        return self.layouts[names]

    # -- one segment ------------------------------------------------------------------------

    def process(self, segment: _Segment) -> None:
        before = self.n_read
        parts: list[_Parsed] = []
        bad: list[tuple[int, list[str]]] = [(line, [message]) for line, message in segment.bad]
        if segment.table is not None and len(segment.lines):
            good, problems = self._table_rows(segment)
            parts.append(good)
            bad += problems
        if segment.rows:
            good, problems = self._dict_rows(segment.rows)
            parts.append(good)
            bad += problems
        parsed = _Parsed.concat(parts)
        if len(parts) > 1 or (len(parsed) > 1 and (np.diff(parsed.lines) < 0).any()):
            parsed = parsed.take(np.argsort(parsed.lines, kind="stable"))
        accepted, problems = self._accept(parsed)
        bad += problems
        lines = np.sort(np.concatenate([segment.lines, np.array([r[0] for r in segment.rows], np.int64),
                                        np.array([b[0] for b in segment.bad], np.int64)]))
        bad.sort(key=lambda item: item[0])
        for line, messages in bad:
            ordinal = before + int(np.searchsorted(lines, line))
            for message in messages:
                kept = len(self.log.kept)
                self.log.add(self.file, line, message)
                if len(self.log.kept) > kept:
                    self.problem_rows.append(ordinal)
        self.n_read += segment.size()
        self.n_bad += len(bad) + segment.unreadable
        if len(accepted):
            self.chunks.append(self._renormalise(accepted))

    def strict_check(self, batch_rows: int, *, final: bool) -> None:
        """Raise for the first batch of ``batch_rows`` rows with a problem, once that batch has been read."""
        if not self.problem_rows:
            return
        low = self.problem_rows[0] // batch_rows * batch_rows
        if final or self.n_read >= low + batch_rows:
            batch = [p for p, row in zip(self.log.kept, self.problem_rows) if low <= row < low + batch_rows]
            raise ImportProblems(batch, hint=_HINT)

    # -- the checks of each row on its own ---------------------------------------------------

    def _dict_rows(self, rows: list[tuple[int, dict[str, Any], frozenset[str] | None]]
                   ) -> tuple[_Parsed, list[tuple[int, list[str]]]]:
        good: list[tuple[int, _Row]] = []
        bad: list[tuple[int, list[str]]] = []
        for line, row, names in rows:
            layout, missing = self.layout_for(names if names is not None else frozenset(row))
            if missing:
                bad.append((line, list(missing)))
                continue
            checked = self.checks.check(row, layout)
            if isinstance(checked, list):
                bad.append((line, checked))
            else:
                good.append((line, checked))
        return self._from_rows(good), bad

    def _from_rows(self, rows: list[tuple[int, _Row]]) -> _Parsed:
        if not rows:
            return _Parsed.empty()
        n = len(rows)
        code, tcode = self.code, self.tcode

        def ints(values: Any) -> np.ndarray:
            return np.fromiter(values, np.int64, n)

        rs = [r for _, r in rows]
        p_len = ints(len(r.probs) for r in rs)
        k_len = ints(len(r.topk_ids) if r.topk_ids is not None else 0 for r in rs)
        p_off = np.zeros(n + 1, np.int64)
        np.cumsum(p_len, out=p_off[1:])
        k_off = np.zeros(n + 1, np.int64)
        np.cumsum(k_len, out=k_off[1:])
        return _Parsed(
            ints(line for line, _ in rows), ints(code(r.model) for r in rs), ints(code(r.task) for r in rs),
            ints(code(r.method) for r in rs), ints(code(r.query_id) for r in rs), ints(code(r.gold) for r in rs),
            ints(code(r.kind) for r in rs), ints(r.n_demos for r in rs), ints(r.demo_set for r in rs),
            ints(r.order_id if r.order_id is not None else 0 for r in rs), np.fromiter(
                (r.order_id is not None for r in rs), bool, n), ints(r.seed for r in rs), ints(r.step for r in rs),
            ints(tcode(r.order) if r.order is not None else -1 for r in rs), ints(tcode(r.labels) for r in rs),
            np.fromiter((r.total for r in rs), np.float64, n), np.fromiter((r.topk_ids is not None for r in rs), bool, n),
            np.zeros(n, np.int64), p_off, np.array([p for r in rs for p in r.probs], np.float64), k_off,
            np.array([i for r in rs if r.topk_ids for i in r.topk_ids], np.int64),
            np.array([p for r in rs if r.topk_probs for p in r.topk_probs], np.float64))

    def _table_rows(self, segment: _Segment) -> tuple[_Parsed, list[tuple[int, list[str]]]]:
        """The vectorised checks; rows that fail one go through the Python checks, which write the messages."""
        table, lines = segment.table, segment.lines
        n = len(lines)
        layout, missing = self.layout_for(segment.names)  # type: ignore[arg-type]
        if missing:
            return _Parsed.empty(), [(int(line), list(missing)) for line in lines]
        self.checks.layout_defaults(layout)
        names = layout.names
        column = {name: _arr(table.column(name)) for name in table.column_names}  # type: ignore[union-attr]
        doubt = np.zeros(n, bool)
        strings = {}
        for name in _STR_FIELDS:
            strings[name] = self._str_column(column[name], name)
            doubt |= strings[name] < 0
        ints: dict[str, np.ndarray] = {}
        for name in _INT_FIELDS:
            if name in names:
                ints[name], bad = self._int_column(column[name], name)
                doubt |= bad
        zeros = np.zeros(n, np.int64)
        seed, step, demo_set = ints.get("seed", zeros), ints.get("step", zeros), ints["demo_set"]
        doubt |= (demo_set < 0) | (seed < 0) | (step < 0)
        order = np.full(n, -1, np.int64)
        if "order" in names:
            order = self._order_column(column["order"])
            doubt |= order < 0
            lengths = np.array([len(t) for t in self.tuples] + [0], np.int64)[order]
            n_demos = ints["n_demos"] if "n_demos" in names else lengths
            if "n_demos" in names:
                doubt |= lengths != n_demos
        else:
            n_demos = ints["n_demos"]
        doubt |= n_demos < 1
        kind = self._kind_column(strings["method"], column.get("method_kind") if "method_kind" in names else None,
                                 layout)
        doubt |= kind < 0
        labels, p_off, p_val, total, bad = self._probability_columns(column, layout, strings["task"], n)
        doubt |= bad
        has_topk = "topk_ids" in names
        if has_topk:
            k_off, k_ids, k_probs, bad = self._topk_columns(column["topk_ids"], column["topk_probs"])
            doubt |= bad
        else:
            k_off, k_ids, k_probs = np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0)
        order_id = ints.get("order_id", zeros)
        parsed = _Parsed(lines, strings["model"], strings["task"], strings["method"], strings["query_id"],
                         strings["gold"], kind, n_demos, demo_set, order_id, np.full(n, "order_id" in names),
                         seed, step, order, labels, total, np.full(n, has_topk), zeros, p_off, p_val, k_off, k_ids,
                         k_probs)
        good = parsed.take(np.flatnonzero(~doubt))
        problems: list[tuple[int, list[str]]] = []
        gold_index = self._gold_index(good.labels, good.gold)
        if (gold_index < 0).any():
            for i in np.flatnonzero(gold_index < 0):
                problems.append((int(good.lines[i]), [(f"gold label {self.strings[good.gold[i]]!r} is not one of "
                                                      f"the labels {list(self.tuples[good.labels[i]])}")]))
            good = good.take(np.flatnonzero(gold_index >= 0))
        doubtful = np.flatnonzero(doubt)
        if len(doubtful):
            checked: list[tuple[int, _Row]] = []
            for i, row in zip(doubtful, segment.pyrows(doubtful)):  # type: ignore[misc]
                result = self.checks.check(row, layout)
                if isinstance(result, list):
                    problems.append((int(lines[i]), result))
                else:
                    checked.append((int(lines[i]), result))
            if checked:
                good = _Parsed.concat([good, self._from_rows(checked)])
        return good, problems

    def _str_column(self, array: pa.Array, name: str) -> np.ndarray:
        index, values = _distinct(array)
        table = np.full(len(values) + 1, -1, np.int64)
        for j, value in enumerate(values):
            text, err = _as_str(value, name)
            if err is None:
                table[j] = self.code(text)  # type: ignore[arg-type]
        return table[index]

    def _int_column(self, array: pa.Array, name: str) -> tuple[np.ndarray, np.ndarray]:
        index, values = _distinct(array)
        out = np.zeros(len(values) + 1, np.int64)
        bad = np.ones(len(values) + 1, bool)
        for j, value in enumerate(values):
            number, err = _as_int64(value, name)
            if err is None:
                out[j], bad[j] = number, False
        return out[index], bad[index]

    def _order_column(self, array: pa.Array) -> np.ndarray:
        index, values = _distinct(array)
        table = np.full(len(values) + 1, -1, np.int64)
        for j, value in enumerate(values):
            raw, err = _as_list(value, "order")
            if err is not None:
                continue
            items = [_as_str(item, f"order[{i}]") for i, item in enumerate(raw)]  # type: ignore[arg-type]
            if all(e is None for _, e in items):
                table[j] = self.tcode(tuple(t for t, _ in items))  # type: ignore[misc]
        return table[index]

    def _kind_column(self, methods: np.ndarray, kinds: pa.Array | None, layout: _Layout) -> np.ndarray:
        k_index, k_values = _distinct(kinds) if kinds is not None else (np.full(len(methods), -1, np.int64), [])
        width = len(k_values) + 1
        pairs, inverse = np.unique(methods * width + (k_index + 1), return_inverse=True)
        table = np.full(len(pairs), -1, np.int64)
        for j, pair in enumerate(pairs.tolist()):
            method, k = divmod(pair, width)
            if method < 0:
                continue
            errors: list[str] = []
            row = {"method_kind": k_values[k - 1] if k else None}
            kind = self.checks.kind(row, layout, self.strings[method], errors)
            if not errors:
                table[j] = self.code(kind)  # type: ignore[arg-type]
        return table[inverse.reshape(-1)]

    def _probability_columns(self, column: dict[str, pa.Array], layout: _Layout, tasks: np.ndarray, n: int
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        labels = np.full(n, -1, np.int64)
        bad = np.zeros(n, bool)

        def label_ok(codes: np.ndarray) -> np.ndarray:
            return np.array([len(set(t)) == len(t) >= 2 for t in self.tuples] + [False])[codes]

        if layout.list_mode:
            p_off, p_val, ok = _number_lists(column["label_probs"], integer=False)
            bad |= ~ok
            if "labels" in layout.names:
                index, values = _distinct(column["labels"])
                table = np.full(len(values) + 1, -1, np.int64)
                for j, value in enumerate(values):
                    raw, err = _as_list(value, "labels")
                    if err is None:
                        table[j] = self.tcode(tuple(str(x) for x in raw))  # type: ignore[union-attr]
                labels = table[index]
            else:
                for task in np.unique(tasks[tasks >= 0]).tolist():
                    declared = self.mapping.labels_for(self.strings[task])
                    if declared is not None:
                        labels[tasks == task] = self.tcode(declared)
            bad |= labels < 0
            sizes = np.array([len(t) for t in self.tuples] + [0], np.int64)[labels]
            bad |= (sizes != p_off[1:] - p_off[:-1]) | ~label_ok(labels)
            outside = (p_val < 0) | (p_val > 1)
            if outside.any():
                bad |= np.bincount(_row_of_values(p_off)[outside], minlength=n) > 0
        else:
            prob_columns = [name for name in column if name.startswith(PROB_PREFIX) and len(name) > len(PROB_PREFIX)]
            default = self.checks.prob_labels.setdefault(layout.names,
                                                         tuple(name[len(PROB_PREFIX):] for name in prob_columns))
            floats = {name: _floats(column[name]) for name in prob_columns}
            lengths = np.zeros(n, np.int64)
            groups: list[tuple[np.ndarray, np.ndarray]] = []
            for task in np.unique(tasks[tasks >= 0]).tolist():
                rows = np.flatnonzero(tasks == task)
                declared = self.mapping.labels_for(self.strings[task])
                names = default
                if declared is not None:
                    names = declared
                    if any(PROB_PREFIX + label not in floats for label in declared):
                        bad[rows] = True
                        continue
                    for other in prob_columns:
                        if other[len(PROB_PREFIX):] not in declared:
                            bad[rows[~floats[other][2][rows]]] = True
                if len(set(names)) != len(names) or len(names) < 2:
                    bad[rows] = True
                    continue
                matrix = np.stack([floats[PROB_PREFIX + label][0][rows] for label in names], axis=1)
                ok = np.logical_and.reduce([floats[PROB_PREFIX + label][1][rows] for label in names])
                bad[rows[~ok]] = True
                labels[rows] = self.tcode(tuple(names))
                lengths[rows] = len(names)
                groups.append((rows, matrix))
            bad |= labels < 0
            p_off = np.zeros(n + 1, np.int64)
            np.cumsum(lengths, out=p_off[1:])
            p_val = np.zeros(int(p_off[-1]))
            for rows, matrix in groups:
                p_val[(p_off[rows][:, None] + np.arange(matrix.shape[1])).reshape(-1)] = matrix.reshape(-1)
        total = _row_fsum(p_off, p_val, ~bad)
        with np.errstate(invalid="ignore"):
            bad |= ~(np.abs(total - 1.0) <= SUM_TOLERANCE)
        return labels, p_off, p_val, total, bad

    def _topk_columns(self, ids_column: pa.Array, probs_column: pa.Array
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        off, ids, ok_ids = _number_lists(ids_column, integer=True)
        p_off, probs, ok_probs = _number_lists(probs_column, integer=False)
        n = len(off) - 1
        lengths = off[1:] - off[:-1]
        same = lengths == p_off[1:] - p_off[:-1]
        bad = ~(ok_ids & ok_probs & same)
        row = _row_of_values(off)
        aligned = np.zeros(len(ids))
        take = same[row]
        aligned[take] = probs[(p_off[row] + np.arange(len(ids)) - off[row])[take]]
        outside = (aligned < 0) | (aligned > 1)
        if outside.any():
            bad |= np.bincount(row[outside], minlength=n) > 0
        for k in np.unique(lengths[~bad]).tolist():
            if k < 2:
                continue
            rows = np.flatnonzero((lengths == k) & ~bad)
            matrix = np.sort(ids[off[rows][:, None] + np.arange(k)], axis=1)
            bad[rows[(matrix[:, 1:] == matrix[:, :-1]).any(axis=1)]] = True
        sums = np.bincount(row, weights=aligned, minlength=n)
        for i in np.flatnonzero(~bad & (sums > 1 + _TOPK_SUM_ATOL - 1e-9)):
            if math.fsum(aligned[off[i]:off[i + 1]].tolist()) > 1 + _TOPK_SUM_ATOL:
                bad[i] = True
        return off, ids, aligned, bad

    def _gold_index(self, labels: np.ndarray, gold: np.ndarray) -> np.ndarray:
        if not len(labels):
            return np.zeros(0, np.int64)
        width = len(self.strings) + 1
        pairs, inverse = np.unique(labels * width + gold, return_inverse=True)
        table = np.full(len(pairs), -1, np.int64)
        for j, pair in enumerate(pairs.tolist()):
            label_code, gold_code = divmod(pair, width)
            names = self.tuples[label_code]
            text = self.strings[gold_code]
            if text in names:
                table[j] = names.index(text)
        return table[inverse.reshape(-1)]

    # -- the checks against earlier rows ------------------------------------------------------

    def _accept(self, p: _Parsed) -> tuple[_Parsed, list[tuple[int, list[str]]]]:
        if not len(p):
            return p, []
        fast = self._accept_all(p)
        if fast is not None:
            return fast, []
        return self._accept_row_by_row(p)

    def _unit_codes(self, p: _Parsed, order_id: np.ndarray) -> np.ndarray:
        columns = (p.model, p.task, p.method, p.n_demos, p.demo_set, order_id, p.seed, p.step)
        groups = _groups(*columns)
        first = _firsts(groups)
        codes = np.empty(len(first), np.int64)
        for j, key in enumerate(zip(*(c[first].tolist() for c in columns))):
            code = self.units.get(key)
            if code is None:
                code = self.units[key] = len(self.units)
            codes[j] = code
        return codes[groups]

    def _accept_all(self, p: _Parsed) -> _Parsed | None:
        """Accept every row at once when none conflicts with another or with earlier rows; None otherwise."""
        n = len(p)
        has_order = p.order >= 0
        if not (p.id_given.all() or not p.id_given.any()) or not (has_order.all() or not has_order.any()):
            return None  # rows of different layouts (JSONL): row by row
        lines = p.lines
        kinds: dict[int, int] = {}
        for (method, kind), _ in _first_rows(p.method, p.kind):
            prior = self.method_kinds.get(method)
            if kind != (prior[0] if prior else kinds.setdefault(method, kind)):
                return None
        relabelled = self._task_label_orders(p)
        if relabelled is None:
            return None
        labels, permute, orders = relabelled
        k_len = p.k_off[1:] - p.k_off[:-1]
        with_topk = np.flatnonzero(p.has_topk)
        if len(with_topk):
            k = self.topk_len[0] if self.topk_len is not None else int(k_len[with_topk[0]])
            if (k_len[with_topk] != k).any():
                return None
        set_index = _groups(p.model, p.task, p.n_demos, p.demo_set)
        first = _firsts(set_index)
        set_keys = dict(enumerate(zip(*(c[first].tolist() for c in (p.model, p.task, p.n_demos, p.demo_set)))))
        numbered = self._order_ids(p, set_index, set_keys)
        if numbered is None:
            return None
        order_id, order = numbered
        units = self._unit_codes(p, order_id)
        keys = (units << 32) | p.query
        if len(np.unique(keys)) != n:
            return None
        seen = self.seen
        listed = keys.tolist()
        if any(key in seen for key in listed):
            return None
        # every row is accepted: remember what they fix
        seen.update(zip(listed, lines.tolist()))
        for (method, kind), i in _first_rows(p.method, p.kind):
            self.method_kinds.setdefault(method, (kind, int(lines[i])))
        for (task,), i in _first_rows(p.task):
            self.task_labels.setdefault(task, (int(labels[i]), int(lines[i])))
        for (s, oid, oc), i in _first_rows(set_index, order_id, order):
            key = set_keys[s]
            self.order_by_id.setdefault((*key, oid), (oc, int(lines[i])))
            if (*key, oc) not in self.id_by_order:
                self.id_by_order[(*key, oc)] = (oid, int(lines[i]))
                self.n_orders[key] = max(self.n_orders.get(key, 0), oid + 1)
        if len(with_topk) and self.topk_len is None:
            self.topk_len = (int(k_len[with_topk[0]]), int(lines[with_topk[0]]))
        p_val = p.p_val
        if orders:
            p_val = p_val.copy()
            for i in np.flatnonzero(permute >= 0):
                start = p.p_off[i]
                positions = orders[permute[i]]
                p_val[start:start + len(positions)] = p.p_val[start + np.asarray(positions)]
        return _Parsed(lines, p.model, p.task, p.method, p.query, p.gold, p.kind, p.n_demos, p.demo_set, order_id,
                       np.ones(n, bool), p.seed, p.step, order, labels, p.total, p.has_topk, units, p.p_off, p_val,
                       p.k_off, p.k_ids, p.k_probs)

    def _task_label_orders(self, p: _Parsed) -> tuple[np.ndarray, np.ndarray, list[list[int]]] | None:
        """Each row's labels as its task's first label tuple; None if a task's rows disagree on the label set.

        Returns the label codes, for each row the index into the permutations
        (-1: labels already in the task's order) and the permutations (positions
        that put a row's label probabilities in the first row's order).
        """
        task_first: dict[int, int] = {}
        permute = np.full(len(p), -1, np.int64)  # rows whose labels come in another order than their task's first
        orders: list[list[int]] = []  # positions that put them in the first row's order
        labels = p.labels.copy()
        for (task, code), _ in _first_rows(p.task, p.labels):
            prior = self.task_labels.get(task)
            first = prior[0] if prior else task_first.setdefault(task, code)
            if code != first:
                a, b = self.tuples[first], self.tuples[code]
                if sorted(a) != sorted(b):
                    return None
                rows = (p.task == task) & (p.labels == code)
                permute[rows] = len(orders)
                orders.append([b.index(x) for x in a])
                labels[rows] = first
        return labels, permute, orders

    def _order_ids(self, p: _Parsed, set_index: np.ndarray,
                   set_keys: dict[int, tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray] | None:
        """Each row's (order id, order code): checked one-to-one within a demo set, or the missing one derived.

        None if an order id names two orders (or an order two ids) here or in earlier rows.
        """
        has_order = p.order >= 0
        order_id, order = p.order_id.copy(), p.order.copy()
        if has_order.all() and p.id_given.all():
            by_id: dict[tuple[int, ...], int] = {}
            by_order: dict[tuple[int, ...], int] = {}
            for (s, oid, oc), i in _first_rows(set_index, order_id, order):
                key = set_keys[s]
                prior = self.order_by_id.get((*key, oid))
                if (prior[0] if prior else by_id.setdefault((*key, oid), oc)) != oc:
                    return None
                prior = self.id_by_order.get((*key, oc))
                if (prior[0] if prior else by_order.setdefault((*key, oc), oid)) != oid:
                    return None
        elif has_order.all():
            next_id: dict[tuple[int, ...], int] = {}
            assigned: dict[tuple[int, int], int] = {}
            for (s, oc), i in _first_rows(set_index, order):
                key = set_keys[s]
                known = self.id_by_order.get((*key, oc))
                if known is not None:
                    assigned[(s, oc)] = known[0]
                else:
                    value = next_id.get(key, self.n_orders.get(key, 0))
                    assigned[(s, oc)] = value
                    next_id[key] = value + 1
            pair_index = _groups(set_index, order)
            first = _firsts(pair_index)
            values = np.array([assigned[(s, oc)] for s, oc in zip(set_index[first].tolist(), order[first].tolist())],
                              np.int64)
            order_id = values[pair_index]
            self.checks.defaults.add("order_id = the distinct orders of each (model, task, N, demo set) numbered "
                                     "0, 1, ... by first appearance")
        else:
            distinct, inverse = np.unique(order_id, return_inverse=True)
            order = np.array([self.tcode((str(v),)) for v in distinct.tolist()], np.int64)[inverse.reshape(-1)]
            self.checks.defaults.add("order = [str(order_id)] (no 'order' column)")
        return order_id, order

    def _accept_row_by_row(self, p: _Parsed) -> tuple[_Parsed, list[tuple[int, list[str]]]]:
        """The checks against earlier rows, one row after the other (where some row conflicts)."""
        s, t = self.strings, self.tuples
        bad: list[tuple[int, list[str]]] = []
        keep: list[int] = []
        lines, model, task, method, query = (a.tolist() for a in (p.lines, p.model, p.task, p.method, p.query))
        kind, n_demos, demo_set, seed, step = (a.tolist() for a in (p.kind, p.n_demos, p.demo_set, p.seed, p.step))
        id_given, has_topk = p.id_given.tolist(), p.has_topk.tolist()
        order_id, order, labels = p.order_id.copy(), p.order.copy(), p.labels.copy()
        units = np.zeros(len(p), np.int64)
        p_val = p.p_val.copy()
        k_len = (p.k_off[1:] - p.k_off[:-1]).tolist()
        for i in range(len(p)):
            line, tk, lab = lines[i], task[i], int(labels[i])
            first = self.task_labels.get(tk)
            if first is not None and first[0] != lab:
                a, b = t[first[0]], t[lab]
                if sorted(a) != sorted(b):
                    bad.append((line, [(f"labels {list(b)} differ from those of task {s[tk]!r} on line {first[1]} "
                                       f"({list(a)})")]))
                    continue
                start = p.p_off[i]
                p_val[start:start + len(a)] = p.p_val[start + np.array([b.index(x) for x in a])]
                lab = first[0]
            key = (model[i], tk, n_demos[i], demo_set[i])
            oid = int(order_id[i]) if id_given[i] else None
            oc = int(order[i]) if order[i] >= 0 else None
            if oc is not None and oid is None:
                known = self.id_by_order.get((*key, oc))
                oid = known[0] if known is not None else self.n_orders.get(key, 0)
                self.checks.defaults.add("order_id = the distinct orders of each (model, task, N, demo set) "
                                         "numbered 0, 1, ... by first appearance")
            elif oc is None:
                oc = self.tcode((str(oid),))
                self.checks.defaults.add("order = [str(order_id)] (no 'order' column)")
            else:
                by_id = self.order_by_id.get((*key, oid))
                if by_id is not None and by_id[0] != oc:
                    bad.append((line, [(f"order_id {oid} of demo set {demo_set[i]} was order {list(t[by_id[0]])} on "
                                       f"line {by_id[1]}, here {list(t[oc])}")]))
                    continue
                by_order = self.id_by_order.get((*key, oc))
                if by_order is not None and by_order[0] != oid:
                    bad.append((line, [(f"order {list(t[oc])} of demo set {demo_set[i]} had order_id {by_order[0]} "
                                       f"on line {by_order[1]}, here {oid}")]))
                    continue
            if has_topk[i] and self.topk_len is not None and k_len[i] != self.topk_len[0]:
                bad.append((line, [(f"top-k lists have {k_len[i]} entries, {self.topk_len[0]} on line "
                                   f"{self.topk_len[1]}: use one k throughout")]))
                continue
            unit_tuple = (model[i], tk, method[i], n_demos[i], demo_set[i], oid, seed[i], step[i])
            unit = self.units.get(unit_tuple)
            if unit is None:
                unit = self.units[unit_tuple] = len(self.units)
            identity_key = (unit << 32) | query[i]
            if identity_key in self.seen:
                identity = (s[model[i]], s[tk], s[method[i]], n_demos[i], demo_set[i], oid, seed[i], step[i],
                            s[query[i]])
                bad.append((line, [(f"duplicate row: (model, task, method, n_demos, demo_set, order_id, seed, step, "
                                   f"query_id) = {identity} already on line {self.seen[identity_key]}")]))
                continue
            first_kind = self.method_kinds.get(method[i])
            if first_kind is not None and first_kind[0] != kind[i]:
                bad.append((line, [(f"method {s[method[i]]!r} has kind {s[kind[i]]!r} here but "
                                   f"{s[first_kind[0]]!r} on line {first_kind[1]}")]))
                continue
            self.seen[identity_key] = line
            self.task_labels.setdefault(tk, (lab, line))
            self.method_kinds.setdefault(method[i], (kind[i], line))
            self.order_by_id.setdefault((*key, oid), (oc, line))
            if (*key, oc) not in self.id_by_order:
                self.id_by_order[(*key, oc)] = (oid, line)
                self.n_orders[key] = max(self.n_orders.get(key, 0), oid + 1)
            if has_topk[i] and self.topk_len is None:
                self.topk_len = (k_len[i], line)
            keep.append(i)
            order_id[i], order[i], labels[i], units[i] = oid, oc, lab, unit
        done = _Parsed(p.lines, p.model, p.task, p.method, p.query, p.gold, p.kind, p.n_demos, p.demo_set, order_id,
                       np.ones(len(p), bool), p.seed, p.step, order, labels, p.total, p.has_topk, units, p.p_off,
                       p_val, p.k_off, p.k_ids, p.k_probs)
        return done.take(np.asarray(keep, np.int64)), bad

    def _renormalise(self, p: _Parsed) -> _Parsed:
        deviation = np.abs(p.total - 1.0)
        rows = deviation > _ROUNDING
        if rows.any():
            self.renormalised += int(rows.sum())
            self.max_deviation = max(self.max_deviation, float(deviation[rows].max()))
            row = _row_of_values(p.p_off)
            divide = rows[row]
            p.p_val = p.p_val.copy()
            p.p_val[divide] = p.p_val[divide] / p.total[row[divide]]
        return p

    # -- the records ---------------------------------------------------------------------------

    def records(self, *, as_table: bool) -> tuple[pd.DataFrame, pa.Table | None]:
        """The accepted rows in the store's schema: a DataFrame (and a pyarrow Table)."""
        p = _Parsed.concat(self.chunks)
        self.chunks = []
        n = len(p)
        s = self.strings
        units = sorted(self.units.items(), key=lambda item: item[1])
        keys = [unit_key(s[m], s[t], s[me], nd, ds, oid, seed, step) for (m, t, me, nd, ds, oid, seed, step), _ in units]
        gold_index = self._gold_index(p.labels, p.gold)
        p_len = p.p_off[1:] - p.p_off[:-1]
        first = p.p_off[:-1]
        p_gold = p.p_val[first + gold_index] if n else np.zeros(0)
        pred_index = np.zeros(n, np.int64)
        for width in np.unique(p_len).tolist():
            rows = np.flatnonzero(p_len == width)
            pred_index[rows] = np.argmax(p.p_val[first[rows][:, None] + np.arange(width)], axis=1)
        pred = self._pred_codes(p.labels, pred_index)
        p_val, logprobs = _read_only(p.p_val), _read_only(_logs(p.p_val))
        k_ids, k_probs = _read_only(p.k_ids), _read_only(p.k_probs)
        t_len = np.array([len(x) for x in self.tuples], np.int64)
        t_off = np.zeros(len(self.tuples) + 1, np.int64)
        np.cumsum(t_len, out=t_off[1:])
        t_val = np.array([self.code(x) for items in self.tuples for x in items], np.int64)
        vocab = pa.array(self.strings, pa.string())  # after the label and order words got their codes

        def text(codes: np.ndarray, words: pa.Array = vocab) -> pa.Array:
            return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), words)

        def string_lists(codes: np.ndarray) -> pa.Array:
            off, index = _csr_take(t_off, t_val, codes)
            return _list_array(off, text(index))

        columns = {
            "unit_key": text(p.unit, pa.array(keys, pa.string())),
            "model": text(p.model), "task": text(p.task), "method": text(p.method), "method_kind": text(p.kind),
            "n_demos": pa.array(p.n_demos), "demo_set": pa.array(p.demo_set), "order_id": pa.array(p.order_id),
            "order": string_lists(p.order), "seed": pa.array(p.seed), "step": pa.array(p.step),
            "query_id": text(p.query), "gold": text(p.gold), "labels": string_lists(p.labels),
            "label_logprobs": _list_array(p.p_off, pa.array(logprobs)),
            "label_probs": _list_array(p.p_off, pa.array(p_val)),
            "p_gold": pa.array(np.asarray(p_gold, np.float64)), "pred": text(pred),
            "correct": pa.array(pred_index == gold_index),
            "topk_ids": _list_array(p.k_off, pa.array(k_ids, pa.int64())),
            "topk_probs": _list_array(p.k_off, pa.array(k_probs, pa.float64())),
        }
        tuples = np.empty(len(self.tuples) + 1, dtype=object)
        for j, items in enumerate([*self.tuples, ()]):
            tuples[j] = _read_only(np.array(items, dtype=object).reshape(-1))
        data: dict[str, Any] = {}
        for name in RECORD_COLUMNS:
            array = columns[name]
            if pa.types.is_dictionary(array.type):
                data[name] = array.dictionary_decode().to_pandas()
            elif name in ("order", "labels"):
                data[name] = tuples[getattr(p, name)]
            elif pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
                off, values = {"label_logprobs": (p.p_off, logprobs), "label_probs": (p.p_off, p_val),
                               "topk_ids": (p.k_off, k_ids), "topk_probs": (p.k_off, k_probs)}[name]
                data[name] = _cells(off, values)
            else:
                data[name] = array.to_numpy(zero_copy_only=False)
        frame = pd.DataFrame(data, columns=list(RECORD_COLUMNS))
        return frame, (pa.table(columns) if as_table else None)

    def _pred_codes(self, labels: np.ndarray, index: np.ndarray) -> np.ndarray:
        if not len(labels):
            return np.zeros(0, np.int64)
        width = int(index.max()) + 1
        pairs, inverse = np.unique(labels * width + index, return_inverse=True)
        table = np.array([self.code(self.tuples[pair // width][pair % width]) for pair in pairs.tolist()], np.int64)
        return table[inverse.reshape(-1)]


def _source(path: Path, mapping: ColumnMapping, batch_rows: int) -> Any:
    kind = LONG_SUFFIXES.get(path.suffix.lower())
    if kind == "csv":
        return _CsvSource(path, mapping, ",", _BLOCK_BYTES)
    if kind == "tsv":
        return _CsvSource(path, mapping, "\t", _BLOCK_BYTES)
    if kind == "jsonl":
        return _JsonlSource(path, mapping, _BLOCK_BYTES)
    if kind == "parquet":
        return _ParquetSource(path, mapping, batch_rows)
    raise ValueError(
        f"`path` {str(path)!r}: unknown long-format suffix {path.suffix!r}; accepted: {', '.join(LONG_SUFFIXES)}"
    )


def read_long(
    path: str | Path,
    *,
    mapping: ColumnMapping | Mapping[str, Any] | str | Path | None = None,
    strict: bool = True,
    batch_rows: int = 10_000,
    max_problems: int = 10_000,
    as_table: bool = False,
) -> ImportResult:
    """Read a long-format file into records of the store's schema.

    Parameters
    ----------
    path : str or Path
        A ``.csv``, ``.tsv``, ``.jsonl`` / ``.ndjson`` or ``.parquet`` file.
    mapping : ColumnMapping, dict, path or None, optional
        Column renames (``columns: {their_name: our_name}``), label names
        (``labels:``) and method kinds (``methods:``); see
        :func:`hyptest.importers.load_mapping`.
    strict : bool, default True
        Raise :class:`ImportProblems` once the first batch of ``batch_rows``
        rows that has a problem has been read (or at once for a problem of
        the whole file, such as a missing column).  With ``False``, skip bad
        rows, record a :class:`Problem` for each and go on.
    batch_rows : int, default 10000
        Rows per batch of strict checking (and per Parquet record batch).
    max_problems : int, default 10000
        Problems kept in the result; further ones are counted only.
    as_table : bool, default False
        Also return the records as a pyarrow Table (``ImportResult.table``),
        sharing the numeric buffers of the DataFrame's list columns.

    Returns
    -------
    ImportResult

    Raises
    ------
    ImportProblems
        In strict mode, for the first batch with a problem.
    ValueError
        If the suffix is unknown or the mapping is invalid.
    FileNotFoundError
        If `path` does not exist.

    Notes
    -----
    Per row: ``label_probs`` are the given probabilities divided by their
    sum, after checking that the sum is within :data:`SUM_TOLERANCE` (1e-3)
    of 1 (a larger deviation is a problem: the file must hold probabilities
    over the label set, not raw next-token probabilities); ``label_logprobs``
    are their logs, so they are log-probabilities *renormalised over the
    labels*, not the model's raw ones.  ``p_gold``, ``pred`` (first label of
    highest probability) and ``correct`` follow.  ``method_kind`` is the
    ``method_kind`` column when present, else ``methods:`` of the mapping,
    else the method name when it is icl, gd, sgd or adam, else ``"other"``.
    ``unit_key`` hashes (model, task, method, N, demo set, order id, seed,
    step) (:func:`unit_key`).  Without ``order``, ``order`` is
    ``[str(order_id)]``; without ``order_id``, the distinct orders of each
    (model, task, N, demo set) are numbered by first appearance.  Without
    top-k columns ``topk_ids`` and ``topk_probs`` are empty arrays.
    Every applied default is listed in ``notes``.

    CSV and TSV follow RFC 4180: a quoted field may hold the delimiter,
    doubled quotes and line breaks, so a row may span lines; a problem is
    reported at the line where its row starts.  A row whose field count is
    wrong and which spans lines (an unclosed quote) is reported at its first
    line, and reading goes on at the next line.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from hyptest.importers import read_long
    >>> text = ("model,task,method,demo_set,order_id,n_demos,query_id,gold,prob_neg,prob_pos\\n"
    ...         "m,t,icl,0,0,2,q1,pos,0.25,0.75\\n")
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.csv"
    >>> _ = path.write_text(text)
    >>> res = read_long(path)
    >>> row = res.records.iloc[0]
    >>> float(row.p_gold), row.pred, bool(row.correct), res.n_rows_skipped
    (0.75, 'pos', True, 0)
    """
    validate_flag(strict, "strict")
    validate_count(batch_rows, "batch_rows")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` {str(path)!r} is not a file")
    mapping = load_mapping(mapping)
    log = ProblemLog(max_problems)
    reader = _Reader(path, mapping, log)
    source = _source(path, mapping, int(batch_rows))
    notes: list[str] = []

    def finish() -> ImportResult:
        if reader.renormalised:
            notes.append(f"{reader.renormalised} row(s) had label probabilities summing to 1 ± up to "
                         f"{reader.max_deviation:.2g} (tolerance {SUM_TOLERANCE:g}); they were renormalised")
        notes.extend(f"default: {d}" for d in sorted(reader.checks.defaults))
        if reader.ignored:
            notes.append(f"ignored column(s): {', '.join(sorted(reader.ignored))}")
        frame, table = reader.records(as_table=as_table)
        return ImportResult(frame, log.problems(), reader.n_read, reader.n_bad, notes, str(path), table)

    if source.names is not None:  # a header: check it once
        missing = [source.header_error] if source.header_error else long_columns_problems(source.names, mapping)
        if missing:
            for message in missing:
                log.add(str(path), source.header_line, message)
            if strict:
                raise ImportProblems(log.batch(), hint=_HINT)
            reader.n_read = reader.n_bad = source.remaining()
            notes.append(f"no row could be read: {len(missing)} problem(s) with the columns")
            return finish()
        reader.layout_for(frozenset(source.names))

    for segment in _prefetched(source.segments()):
        reader.process(segment)
        if strict:
            reader.strict_check(int(batch_rows), final=False)
    if strict:
        reader.strict_check(int(batch_rows), final=True)
    return finish()


def _prefetched(segments: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """The items of ``segments``, read ahead in a thread while the caller converts the previous ones.

    The source (pyarrow's CSV reader, line lookups) and the conversion both
    spend most of their time in C code that releases the GIL, so on two cores
    they overlap. The items come in the source's order; an exception of the
    source is raised here, where the caller's loop would have met it; a caller
    that stops early (``strict`` mode) stops the thread at its next item.
    """
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in segments:
                while not stop.is_set():
                    try:
                        items.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(("end", None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            items.put(("error", error))

    worker = threading.Thread(target=produce, name="hyptest-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while worker.is_alive():
            try:
                items.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


_HINT = "Fix these rows, or read with strict=False (CLI: --skip-bad) to skip bad rows and count them."
