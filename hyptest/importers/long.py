"""Read outputs that others logged in hyptest's long format (CSV, TSV, JSONL or Parquet).

One row per (model, task, method, N, demo set, order, seed, step, query): the
gold label and the label probabilities, either one ``prob_<label>`` column per
label or a ``labels`` + ``label_probs`` pair of list columns, optionally the
top-k of the next-token distribution.  The full description is in
``docs/reanalyse.md``; the accepted columns are :data:`LONG_COLUMNS`.

The reader streams: CSV, TSV and JSONL line by line (bytes decoded per line,
so one bad byte spoils one line only), Parquet by record batches within row
groups.  Every bad row becomes a :class:`Problem` with its file and line;
nothing is dropped without one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..store import RECORD_COLUMNS
from ._problems import ImportProblems, Problem, ProblemLog
from .mapping import KINDS, LONG_COLUMNS, PROB_PREFIX, ColumnMapping, load_mapping

__all__ = ["ImportResult", "LONG_SUFFIXES", "SUM_TOLERANCE", "long_columns_problems", "read_long", "unit_key"]

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


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What :func:`read_long` read.

    Attributes
    ----------
    records : pandas.DataFrame
        The good rows in the store's schema (columns
        ``hyptest.store.RECORD_COLUMNS``, in that order), in file order.
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
    """

    records: pd.DataFrame
    problems: list[Problem]
    n_rows_read: int
    n_rows_skipped: int
    notes: list[str] = field(default_factory=list)
    source: str = ""


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


# ---------------------------------------------------------------------------
# row sources: yield (line, dict of our names -> raw value, or None, error)
# ---------------------------------------------------------------------------


def _decode(raw: bytes, line: int) -> tuple[str | None, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"not valid UTF-8 ({error.reason} at byte {error.start})"
    if line == 1:
        text = text.lstrip("\ufeff")
    return text.rstrip("\r\n"), None


def _rename(names: list[str], mapping: ColumnMapping) -> list[str]:
    return [mapping.columns.get(n, n) for n in names]


def _duplicates(names: list[str]) -> list[str]:
    if len(set(names)) == len(names):
        return []
    return sorted({n for n in names if names.count(n) > 1})


class _Source:
    """A file's rows, renamed to the long format's names."""

    header_line: int | None = None

    def __init__(self, path: Path, mapping: ColumnMapping) -> None:
        self.path = path
        self.mapping = mapping
        self.names: list[str] | None = None  # None: per-row names (JSONL)

    def rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        raise NotImplementedError

    def remaining(self) -> int:
        """Count the data rows left (used when the header is unusable)."""
        return sum(1 for _, row, err in self.rows() if row is not None or err is not None)


class _DelimitedSource(_Source):
    header_line = 1

    def __init__(self, path: Path, mapping: ColumnMapping, delimiter: str) -> None:
        super().__init__(path, mapping)
        self.delimiter = delimiter
        self.header_error: str | None = None
        with open(path, "rb") as fh:
            first = fh.readline()
        text, err = _decode(first, 1)
        if err or not text or not text.strip():
            self.header_error = err or "the file is empty: the first line must be the header"
            self.names = []
            return
        try:
            header = next(csv.reader([text], delimiter=delimiter, strict=True))
        except (csv.Error, StopIteration) as error:
            self.header_error = f"malformed header line ({error})"
            self.names = []
            return
        self.raw_names = [h.strip() for h in header]
        self.names = _rename(self.raw_names, mapping)
        dupes = _duplicates(self.names)
        if dupes:
            self.header_error = f"column(s) {dupes} appear twice (after applying the mapping)"

    def rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        names = self.names or []
        n = len(names)
        with open(self.path, "rb") as fh:
            fh.readline()
            for line, raw in enumerate(fh, start=2):
                text, err = _decode(raw, line)
                if err:
                    yield line, None, err
                    continue
                if not text.strip():
                    continue
                try:
                    fields = next(csv.reader([text], delimiter=self.delimiter, strict=True))
                except csv.Error as error:
                    yield line, None, f"malformed line ({error}); fields may not span lines"
                    continue
                if len(fields) != n:
                    yield line, None, (f"expected {n} fields (as in the header), got {len(fields)}: "
                                       "a truncated or malformed line")
                    continue
                yield line, dict(zip(names, fields)), None


class _JsonlSource(_Source):
    def rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        with open(self.path, "rb") as fh:
            for line, raw in enumerate(fh, start=1):
                text, err = _decode(raw, line)
                if err:
                    yield line, None, err
                    continue
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as error:
                    yield line, None, f"malformed JSON ({error.msg} at column {error.colno})"
                    continue
                except RecursionError:
                    yield line, None, "JSON nested too deeply"
                    continue
                if not isinstance(obj, dict):
                    yield line, None, f"each line must be a JSON object, got {type(obj).__name__}"
                    continue
                names = _rename(list(obj), self.mapping)
                dupes = _duplicates(names)
                if dupes:
                    yield line, None, f"key(s) {dupes} appear twice after applying the mapping"
                    continue
                yield line, dict(zip(names, obj.values())), None


class _ParquetSource(_Source):
    def __init__(self, path: Path, mapping: ColumnMapping, batch_rows: int) -> None:
        super().__init__(path, mapping)
        import pyarrow.parquet as pq

        self.batch_rows = batch_rows
        self.header_error = None
        self.n_rows = 0
        try:
            self.file = pq.ParquetFile(path)
        except Exception as error:  # pyarrow raises several types for a damaged file
            self.file = None
            self.header_error = f"cannot read the Parquet file ({error})"
            self.names = []
            return
        self.n_rows = self.file.metadata.num_rows
        self.raw_names = list(self.file.schema_arrow.names)
        self.names = _rename(self.raw_names, mapping)
        dupes = _duplicates(self.names)
        if dupes:
            self.header_error = f"column(s) {dupes} appear twice (after applying the mapping)"

    def remaining(self) -> int:
        return self.n_rows

    def rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        if self.file is None or self.names is None:
            return
        wanted = [raw for raw, name in zip(self.raw_names, self.names)
                  if name in LONG_COLUMNS or name.startswith(PROB_PREFIX)]
        renamed = [self.mapping.columns.get(n, n) for n in wanted]
        row = 0
        try:
            for batch in self.file.iter_batches(batch_size=self.batch_rows, columns=wanted):
                for values in batch.to_pylist():
                    row += 1
                    yield row, {renamed[i]: values[c] for i, c in enumerate(wanted)}, None
        except Exception as error:  # a damaged row group: the rest cannot be read
            left = self.n_rows - row
            yield row + 1, None, f"cannot read rows {row + 1}..{self.n_rows} ({left} rows) of the Parquet file ({error})"
            self.unreadable = left


# ---------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, path: Path, mapping: ColumnMapping, log: ProblemLog) -> None:
        self.path = path
        self.file = str(path)
        self.mapping = mapping
        self.log = log
        self.layouts: dict[frozenset[str], tuple[_Layout, list[str]]] = {}
        self.task_labels: dict[str, tuple[tuple[str, ...], int]] = {}
        self.method_kinds: dict[str, tuple[str, int]] = {}
        self.order_by_id: dict[tuple[Any, ...], tuple[tuple[str, ...], int]] = {}
        self.id_by_order: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.seen: dict[bytes, int] = {}
        self.n_orders: dict[tuple[Any, ...], int] = {}
        self.prob_labels: dict[frozenset[str], tuple[str, ...]] = {}
        self.topk_len: tuple[int, int] | None = None
        self.keys: dict[tuple[Any, ...], str] = {}
        self.cols: dict[str, list[Any]] = {c: [] for c in RECORD_COLUMNS}
        self.n_read = 0
        self.n_bad = 0
        self.renormalised = 0
        self.max_deviation = 0.0
        self.defaults: set[str] = set()
        self.ignored: set[str] = set()

    def layout_for(self, names: frozenset[str]) -> tuple[_Layout, list[str]]:
        if names not in self.layouts:
            ordered = list(names)
            self.layouts[names] = (_layout(ordered), long_columns_problems(ordered, self.mapping))
            self.ignored |= {n for n in names if n not in LONG_COLUMNS and not n.startswith(PROB_PREFIX)}
        return self.layouts[names]

    def row(self, line: int, row: dict[str, Any], layout: _Layout) -> None:
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
        demo_set = take(_as_int, "demo_set")
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
                        order.append(text)
        order_id = take(_as_int, "order_id") if "order_id" in layout.names else None
        if "n_demos" in layout.names:
            n_demos = take(_as_int, "n_demos")
            if n_demos is not None and order is not None and len(order) != n_demos:
                errors.append(f"'order' has {len(order)} demo ids but 'n_demos' is {n_demos}")
        else:
            n_demos = len(order) if order is not None else None
            self.defaults.add("n_demos = the length of 'order'")
        seed = step = 0
        if "seed" in layout.names:
            seed = take(_as_int, "seed")
        else:
            self.defaults.add("seed = 0 (no 'seed' column)")
        if "step" in layout.names:
            step = take(_as_int, "step")
        else:
            self.defaults.add("step = 0 (no 'step' column)")
        for name, value in (("demo_set", demo_set), ("seed", seed), ("step", step)):
            if value is not None and value < 0:
                errors.append(f"{name!r} must be >= 0, got {value}")
        if n_demos is not None and n_demos < 1:
            errors.append(f"'n_demos' must be >= 1 (rows without demos have no order to analyse), got {n_demos}")

        labels, probs = self.probabilities(row, layout, task, errors)
        topk_ids: list[int] = []
        topk_probs: list[float] = []
        if "topk_ids" in layout.names:
            topk_ids, topk_probs = self.topk(row, errors)
        kind = None
        if method is not None:
            kind = self.kind(row, layout, method, errors)
        if errors:
            self.bad(line, errors)
            return

        # checks against earlier rows (only good rows are remembered)
        if labels is None or probs is None:  # always set when there is no error
            return
        if gold not in labels:
            self.bad(line, [f"gold label {gold!r} is not one of the labels {list(labels)}"])
            return
        first = self.task_labels.get(task)
        if first is not None and first[0] != labels and sorted(first[0]) == sorted(labels):
            position = {label: i for i, label in enumerate(labels)}
            probs = [probs[position[label]] for label in first[0]]
            labels = first[0]
        if first is not None and first[0] != labels:
            self.bad(line, [f"labels {list(labels)} differ from those of task {task!r} on line {first[1]} "
                            f"({list(first[0])})"])
            return
        set_key = (model, task, n_demos, demo_set)
        if order is not None and order_id is None:
            known = self.id_by_order.get((*set_key, tuple(order)))
            order_id = known[0] if known is not None else self.n_orders.get(set_key, 0)
            self.defaults.add("order_id = the distinct orders of each (model, task, N, demo set) numbered "
                              "0, 1, ... by first appearance")
        elif order is None:
            order = [str(order_id)]
            self.defaults.add("order = [str(order_id)] (no 'order' column)")
        else:
            by_id = self.order_by_id.get((*set_key, order_id))
            if by_id is not None and by_id[0] != tuple(order):
                self.bad(line, [f"order_id {order_id} of demo set {demo_set} was order {list(by_id[0])} on line "
                                f"{by_id[1]}, here {order}"])
                return
            by_order = self.id_by_order.get((*set_key, tuple(order)))
            if by_order is not None and by_order[0] != order_id:
                self.bad(line, [f"order {order} of demo set {demo_set} had order_id {by_order[0]} on line "
                                f"{by_order[1]}, here {order_id}"])
                return
        if "topk_ids" in layout.names:
            if self.topk_len is not None and len(topk_ids) != self.topk_len[0]:
                self.bad(line, [f"top-k lists have {len(topk_ids)} entries, {self.topk_len[0]} on line "
                                f"{self.topk_len[1]}: use one k throughout"])
                return
        identity = (model, task, method, n_demos, demo_set, order_id, seed, step, query_id)
        digest = hashlib.blake2b(repr(identity).encode("utf-8"), digest_size=16).digest()
        if digest in self.seen:
            self.bad(line, [f"duplicate row: (model, task, method, n_demos, demo_set, order_id, seed, step, "
                            f"query_id) = {identity} already on line {self.seen[digest]}"])
            return
        first_kind = self.method_kinds.get(method)
        if first_kind is not None and first_kind[0] != kind:
            self.bad(line, [f"method {method!r} has kind {kind!r} here but {first_kind[0]!r} on line {first_kind[1]}"])
            return

        # accepted: remember and store
        self.seen[digest] = line
        self.task_labels.setdefault(task, (labels, line))
        self.method_kinds.setdefault(method, (kind, line))
        self.order_by_id.setdefault((*set_key, order_id), (tuple(order), line))
        if (*set_key, tuple(order)) not in self.id_by_order:
            self.id_by_order[(*set_key, tuple(order))] = (order_id, line)
            self.n_orders[set_key] = max(self.n_orders.get(set_key, 0), order_id + 1)
        if "topk_ids" in layout.names and self.topk_len is None:
            self.topk_len = (len(topk_ids), line)
        total = math.fsum(probs)
        if abs(total - 1.0) > _ROUNDING:
            self.renormalised += 1
            self.max_deviation = max(self.max_deviation, abs(total - 1.0))
            probs = [p / total for p in probs]
        gold_index = labels.index(gold)
        pred_index = max(range(len(probs)), key=probs.__getitem__)
        key_fields = (model, task, method, n_demos, demo_set, order_id, seed, step)
        key = self.keys.get(key_fields)
        if key is None:
            key = self.keys[key_fields] = unit_key(*key_fields)
        c = self.cols
        c["unit_key"].append(key)
        c["model"].append(model)
        c["task"].append(task)
        c["method"].append(method)
        c["method_kind"].append(kind)
        c["n_demos"].append(n_demos)
        c["demo_set"].append(demo_set)
        c["order_id"].append(order_id)
        c["order"].append(list(order))
        c["seed"].append(seed)
        c["step"].append(step)
        c["query_id"].append(query_id)
        c["gold"].append(gold)
        c["labels"].append(list(labels))
        c["label_logprobs"].append([math.log(p) if p > 0 else -math.inf for p in probs])
        c["label_probs"].append(probs)
        c["p_gold"].append(probs[gold_index])
        c["pred"].append(labels[pred_index])
        c["correct"].append(pred_index == gold_index)
        c["topk_ids"].append(topk_ids)
        c["topk_probs"].append(topk_probs)

    def probabilities(self, row: dict[str, Any], layout: _Layout, task: str | None,
                      errors: list[str]) -> tuple[tuple[str, ...] | None, list[float] | None]:
        declared = self.mapping.labels_for(task) if task is not None else None
        if layout.list_mode:
            raw, err = _as_list(row.get("label_probs"), "label_probs")
            if err:
                errors.append(err)
                return None, None
            if "labels" in layout.names:
                raw_labels, err = _as_list(row.get("labels"), "labels")
                if err:
                    errors.append(err)
                    return None, None
                labels = tuple(str(x) for x in raw_labels)
            elif declared is not None:
                labels = declared
            else:
                errors.append(f"no labels for task {task!r}: add a 'labels' column or `labels:` to the mapping")
                return None, None
            if len(labels) != len(raw):
                errors.append(f"{len(labels)} labels but {len(raw)} probabilities")
                return None, None
            pairs = [(label, value, f"label_probs[{i}]") for i, (label, value) in enumerate(zip(labels, raw))]
        else:
            available = dict(layout.prob_columns)
            if declared is not None:
                unknown = [label for label in declared if label not in available]
                if unknown:
                    errors.append(f"declared label(s) {unknown} of task {task!r} have no prob_<label> column")
                    return None, None
                for label, column in layout.prob_columns:
                    if label not in declared and not _is_missing(row.get(column)):
                        errors.append(f"{column!r} has a value, but {label!r} is not a label of task {task!r}")
                labels = declared
            else:
                labels = self.prob_labels.get(layout.names)
                if labels is None:  # the first row of this layout fixes the order (tasks keep their first)
                    labels = self.prob_labels[layout.names] = tuple(
                        k[len(PROB_PREFIX):] for k in row if k.startswith(PROB_PREFIX) and len(k) > len(PROB_PREFIX))
            pairs = [(label, row.get(PROB_PREFIX + label), PROB_PREFIX + label) for label in labels]
        if len(set(labels)) != len(labels):
            errors.append(f"labels repeat a name: {list(labels)}")
            return None, None
        if len(labels) < 2:
            errors.append(f"at least 2 labels are needed, got {list(labels)}")
            return None, None
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
            if p < 0 or p > 1:
                errors.append(f"probability {name!r} = {p!r} is outside [0, 1]")
                continue
            probs.append(p)
        if len(probs) != len(labels):
            return None, None
        total = math.fsum(probs)
        if abs(total - 1.0) > SUM_TOLERANCE:
            errors.append(f"label probabilities sum to {total:.6g}, not 1 (tolerance {SUM_TOLERANCE:g}): give "
                          "the probabilities renormalised over the label set")
            return None, None
        return labels, probs

    def topk(self, row: dict[str, Any], errors: list[str]) -> tuple[list[int], list[float]]:
        raw_ids, err_ids = _as_list(row.get("topk_ids"), "topk_ids")
        raw_probs, err_probs = _as_list(row.get("topk_probs"), "topk_probs")
        for err in (err_ids, err_probs):
            if err:
                errors.append(err)
        if err_ids or err_probs:
            return [], []
        ids, err = _number_list(raw_ids, "topk_ids", integer=True)
        if err:
            errors.append(err)
            return [], []
        probs, err = _number_list(raw_probs, "topk_probs", integer=False)
        if err:
            errors.append(err)
            return [], []
        if len(ids) != len(probs):
            errors.append(f"'topk_ids' has {len(ids)} entries but 'topk_probs' has {len(probs)}")
        elif len(set(ids)) != len(ids):
            errors.append("'topk_ids' repeats a token id")
        elif any(p < 0 or p > 1 for p in probs):
            errors.append("'topk_probs' must lie in [0, 1]")
        elif math.fsum(probs) > 1 + _TOPK_SUM_ATOL:
            errors.append(f"'topk_probs' sum to {math.fsum(probs):.6g} > 1: they must be probabilities of the "
                          "full next-token distribution")
        return ids, probs

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

    def bad(self, line: int | None, messages: list[str]) -> None:
        self.n_bad += 1
        for message in messages:
            self.log.add(self.file, line, message)

    def frame(self) -> pd.DataFrame:
        c = self.cols
        data: dict[str, Any] = dict(c)
        for name in ("n_demos", "demo_set", "order_id", "seed", "step"):
            data[name] = np.asarray(c[name], dtype=np.int64)
        data["p_gold"] = np.asarray(c["p_gold"], dtype=np.float64)
        data["correct"] = np.asarray(c["correct"], dtype=bool)
        return pd.DataFrame(data, columns=list(RECORD_COLUMNS))


def _source(path: Path, mapping: ColumnMapping, batch_rows: int) -> _Source:
    kind = LONG_SUFFIXES.get(path.suffix.lower())
    if kind == "csv":
        return _DelimitedSource(path, mapping, ",")
    if kind == "tsv":
        return _DelimitedSource(path, mapping, "\t")
    if kind == "jsonl":
        return _JsonlSource(path, mapping)
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
        Raise :class:`ImportProblems` at the end of the first batch of
        ``batch_rows`` rows that has a problem (or at once for a problem of
        the whole file, such as a missing column).  With ``False``, skip bad
        rows, record a :class:`Problem` for each and go on.
    batch_rows : int, default 10000
        Rows per batch (the unit of streaming and of strict checking).
    max_problems : int, default 10000
        Problems kept in the result; further ones are counted only.

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
    top-k columns ``topk_ids`` and ``topk_probs`` are empty lists.
    Every applied default is listed in ``notes``.

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
    if not isinstance(strict, (bool, np.bool_)):
        raise TypeError(f"`strict` must be True or False, got {strict!r}")
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, Integral) or batch_rows < 1:
        raise ValueError(f"`batch_rows` must be a positive integer, got {batch_rows!r}")
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
        notes.extend(f"default: {d}" for d in sorted(reader.defaults))
        if reader.ignored:
            notes.append(f"ignored column(s): {', '.join(sorted(reader.ignored))}")
        return ImportResult(reader.frame(), log.problems(), reader.n_read, reader.n_bad, notes, str(path))

    if source.names is not None:  # a header: check it once
        header_error = getattr(source, "header_error", None)
        missing = [header_error] if header_error else long_columns_problems(source.names, mapping)
        if missing:
            for message in missing:
                log.add(str(path), source.header_line, message)
            if strict:
                raise ImportProblems(log.batch(), hint=_HINT)
            reader.n_read = reader.n_bad = source.remaining()
            notes.append(f"no row could be read: {len(missing)} problem(s) with the columns")
            return finish()
        layout, _ = reader.layout_for(frozenset(source.names))

    in_batch = 0
    for line, row, error in source.rows():
        reader.n_read += 1
        in_batch += 1
        if error is not None or row is None:
            reader.bad(line, [error or "unreadable row"])
        else:
            if source.names is None:  # JSONL: names per line
                layout, missing = reader.layout_for(frozenset(row))
                if missing:
                    reader.bad(line, missing)
                    row = None
            if row is not None:
                reader.row(line, row, layout)
        if in_batch >= batch_rows:
            in_batch = 0
            if strict and (batch := log.batch()):
                raise ImportProblems(batch, hint=_HINT)
    unreadable = getattr(source, "unreadable", 0)
    if unreadable > 1:  # one row was counted with the problem
        reader.n_read += unreadable - 1
        reader.n_bad += unreadable - 1
    if strict and (batch := log.batch()):
        raise ImportProblems(batch, hint=_HINT)
    return finish()


_HINT = "Fix these rows, or read with strict=False (CLI: --skip-bad) to skip bad rows and count them."
