"""Columnar helpers of the long-format reader: rows as codes and ragged arrays, vectorised parsers.

Private to :mod:`hyptest.importers.long`. Every parser here says which rows it
read *without doubt*; the reader sends the others through its row-by-row
Python checks, which decide and write the messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def _csr_take(off: np.ndarray, values: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``idx`` of a ragged array given as offsets + values."""
    lengths = off[1:] - off[:-1]
    taken = lengths[idx]
    new_off = np.zeros(len(idx) + 1, np.int64)
    np.cumsum(taken, out=new_off[1:])
    total = int(new_off[-1])
    if total == 0:
        return new_off, values[:0]
    gather = np.repeat(off[idx] - new_off[:-1], taken) + np.arange(total)
    return new_off, values[gather]


def _csr_concat(parts: list[tuple[np.ndarray, np.ndarray]], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(1, np.int64), np.zeros(0, dtype)
    offs, shift = [np.zeros(1, np.int64)], 0
    for off, values in parts:
        offs.append(off[1:] - off[0] + shift)
        shift += int(off[-1] - off[0])
    return np.concatenate(offs), np.concatenate([v[o[0]:o[-1]] for o, v in parts]).astype(dtype, copy=False)


def _row_of_values(off: np.ndarray) -> np.ndarray:
    """For each value of a ragged array, the index of its row."""
    return np.repeat(np.arange(len(off) - 1), off[1:] - off[:-1])


_CODE_FIELDS = ("model", "task", "method", "query", "gold", "kind", "n_demos", "demo_set", "order_id", "id_given",
                "seed", "step", "order", "labels", "total", "has_topk", "unit")


@dataclass
class _Parsed:
    """Rows whose own values are fine, column by column (strings and lists as codes, lists as offsets + values).

    ``id_given`` is False where the row has no order id (yet), ``order`` is -1 where it has no order (yet);
    ``unit`` is the code of the row's unit, set when the row is accepted.
    """

    lines: np.ndarray
    model: np.ndarray
    task: np.ndarray
    method: np.ndarray
    query: np.ndarray
    gold: np.ndarray
    kind: np.ndarray
    n_demos: np.ndarray
    demo_set: np.ndarray
    order_id: np.ndarray
    id_given: np.ndarray
    seed: np.ndarray
    step: np.ndarray
    order: np.ndarray
    labels: np.ndarray
    total: np.ndarray
    has_topk: np.ndarray
    unit: np.ndarray
    p_off: np.ndarray
    p_val: np.ndarray
    k_off: np.ndarray
    k_ids: np.ndarray
    k_probs: np.ndarray

    def __len__(self) -> int:
        return len(self.lines)

    @classmethod
    def empty(cls) -> _Parsed:
        z = np.zeros(0, np.int64)
        return cls(z, z, z, z, z, z, z, z, z, z, np.zeros(0, bool), z, z, z, z, np.zeros(0), np.zeros(0, bool), z,
                   np.zeros(1, np.int64), np.zeros(0), np.zeros(1, np.int64), z, np.zeros(0))

    def take(self, idx: np.ndarray) -> _Parsed:
        p_off, p_val = _csr_take(self.p_off, self.p_val, idx)
        k_off, k_ids = _csr_take(self.k_off, self.k_ids, idx)
        _, k_probs = _csr_take(self.k_off, self.k_probs, idx)
        return _Parsed(self.lines[idx], *(getattr(self, f)[idx] for f in _CODE_FIELDS), p_off, p_val, k_off,
                       k_ids, k_probs)

    @classmethod
    def concat(cls, parts: list[_Parsed]) -> _Parsed:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        p_off, p_val = _csr_concat([(p.p_off, p.p_val) for p in parts], np.float64)
        k_off, k_ids = _csr_concat([(p.k_off, p.k_ids) for p in parts], np.int64)
        _, k_probs = _csr_concat([(p.k_off, p.k_probs) for p in parts], np.float64)
        return cls(np.concatenate([p.lines for p in parts]),
                   *(np.concatenate([getattr(p, f) for p in parts]) for f in _CODE_FIELDS),
                   p_off, p_val, k_off, k_ids, k_probs)


def _arr(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _numpy(array: pa.Array, fill: Any, dtype: Any) -> np.ndarray:
    return pc.fill_null(array, fill).to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _hash_key(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_hash_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", id(value))  # never shared: converted row by row
    return (type(value), value)


def _distinct(array: pa.Array) -> tuple[np.ndarray, list[Any]]:
    """Index of each row's value among the distinct values (-1: null), and those values as Python objects."""
    try:
        encoded = array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)
        return _numpy(encoded.indices, -1, np.int64), encoded.dictionary.to_pylist()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    index: dict[Any, int] = {}
    values: list[Any] = []
    out = np.empty(len(array), np.int64)
    for i, value in enumerate(array.to_pylist()):
        if value is None:
            out[i] = -1
            continue
        key = _hash_key(value)
        j = index.get(key)
        if j is None:
            j = index[key] = len(values)
            values.append(value)
        out[i] = j
    return out, values


#: A plain decimal number (what Python's float() and Arrow's cast read alike); anything else goes row by row.
_FLOAT_TEXT = r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_JSON_WS = "[ \t\n\r]*"
_JSON_INT = "-?(?:0|[1-9][0-9]{0,17})"
_JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"


def _json_list_regex(item: str) -> str:
    return rf"^{_JSON_WS}\[{_JSON_WS}(?:{item}(?:{_JSON_WS},{_JSON_WS}{item})*)?{_JSON_WS}\]{_JSON_WS}$"


_INT_LIST = _json_list_regex(_JSON_INT)
_FLOAT_LIST = _json_list_regex(_JSON_NUMBER)


def _floats(array: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, ok, missing): ok where the value is a finite number in [0, 1] read without doubt."""
    n = len(array)
    kind = array.type
    nothing = np.zeros(n, bool)
    try:
        if _is_text(kind):
            ok = _numpy(pc.match_substring_regex(array, _FLOAT_TEXT), False, bool)
            values = _numpy(pc.cast(pc.if_else(pa.array(ok), array, pa.scalar("0", kind)), pa.float64()), np.nan,
                            np.float64)
            missing = _numpy(pc.equal(pc.utf8_length(array), 0), True, bool)
        elif (pa.types.is_integer(kind) or pa.types.is_floating(kind)) and not pa.types.is_boolean(kind):
            values = _numpy(pc.cast(array, pa.float64(), safe=False), np.nan, np.float64)
            ok = _numpy(array.is_valid(), False, bool)
            missing = ~ok | np.isnan(values)
        elif pa.types.is_null(kind):
            return np.full(n, np.nan), nothing, ~nothing
        else:
            return np.full(n, np.nan), nothing, nothing
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.full(n, np.nan), nothing, nothing
    with np.errstate(invalid="ignore"):
        ok &= np.isfinite(values) & (values >= 0) & (values <= 1)
    return values, ok, missing


def _number_lists(array: pa.Array, *, integer: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, values, ok) of a column of number lists (JSON text or Arrow lists); ok: read without doubt."""
    n = len(array)
    kind = array.type
    dtype = np.int64 if integer else np.float64
    failed = (np.zeros(n + 1, np.int64), np.zeros(0, dtype), np.zeros(n, bool))
    try:
        if _is_text(kind):
            ok = _numpy(pc.match_substring_regex(array, _INT_LIST if integer else _FLOAT_LIST), False, bool)
            inner = pc.utf8_trim(pc.if_else(pa.array(ok), array, pa.scalar("[]", kind)), " \t\n\r[]")
            inner = pc.if_else(pc.equal(pc.utf8_length(inner), 0), pa.scalar(None, kind), inner)
            parts = pc.split_pattern(inner, ",")
            lengths = _numpy(pc.list_value_length(parts), 0, np.int64)
            flat = pc.utf8_trim(pc.list_flatten(parts), " \t\n\r")
            values = pc.cast(flat, pa.int64() if integer else pa.float64()).to_numpy(zero_copy_only=False)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            child = kind.value_type
            lists = array if not pa.types.is_fixed_size_list(kind) else array.cast(pa.list_(child))
            ok = _numpy(lists.is_valid(), False, bool)
            lengths = _numpy(pc.list_value_length(lists), 0, np.int64)
            flat = pc.list_flatten(lists)
            if pa.types.is_null(child):
                return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), np.zeros(0, dtype), ok & (lengths == 0)
            numeric = pa.types.is_integer(child) if integer else (
                (pa.types.is_integer(child) or pa.types.is_floating(child)) and not pa.types.is_boolean(child))
            if not numeric:
                return failed
            off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            valid = _numpy(flat.is_valid(), False, bool)
            if not valid.all():
                ok &= np.bincount(_row_of_values(off)[~valid], minlength=n) == 0
            values = _numpy(pc.cast(flat, pa.int64() if integer else pa.float64()), 0, dtype)
        else:
            return failed
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return failed
    off = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    values = np.asarray(values, dtype=dtype)
    if not integer:
        bad = ~np.isfinite(values)
        if bad.any():
            ok &= np.bincount(_row_of_values(off)[bad], minlength=n) == 0
    return off, values, ok


def _groups(*columns: np.ndarray) -> np.ndarray:
    """Group number of each row by the given integer columns, numbered by first appearance (hashing, not sorting)."""
    code = np.zeros(len(columns[0]), np.int64)
    for column in columns:
        values, distinct = pd.factorize(column)
        code, _ = pd.factorize(code * len(distinct) + values)
    return code.astype(np.int64, copy=False)


def _firsts(groups: np.ndarray) -> np.ndarray:
    """Index of the first row of each group (groups numbered by first appearance)."""
    first = np.full(int(groups.max()) + 1 if len(groups) else 0, len(groups), np.int64)
    np.minimum.at(first, groups, np.arange(len(groups)))
    return first


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _row_fsum(off: np.ndarray, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact sums (as math.fsum) of the given rows of a ragged array; NaN elsewhere."""
    n = len(off) - 1
    out = np.full(n, np.nan)
    lengths = off[1:] - off[:-1]
    two = rows & (lengths == 2)
    out[two] = values[off[:-1][two]] + values[off[:-1][two] + 1]  # one rounding: what fsum gives
    other = np.flatnonzero(rows & (lengths != 2))
    if len(other):
        listed = values.tolist()
        out[other] = [math.fsum(listed[off[i]:off[i + 1]]) for i in other.tolist()]
    return out


def _cells(off: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A ragged array as an object column of numpy views (one per row)."""
    n = len(off) - 1
    lengths = off[1:] - off[:-1]
    if n and (lengths == lengths[0]).all():
        width = int(lengths[0])
        if width == 0:
            out = np.empty(n, dtype=object)
            out.fill(values[:0])
            return out
        return np.fromiter(values[off[0]:off[0] + n * width].reshape(n, width), dtype=object, count=n)
    out = np.empty(n, dtype=object)
    for i in range(n):
        out[i] = values[off[i]:off[i + 1]]
    return out


def _logs(values: np.ndarray) -> np.ndarray:
    """math.log of each value (-inf at 0), as the row-by-row reader took it (numpy's log may differ in the last bit)."""
    positive = values > 0
    out = np.full(len(values), -math.inf)
    out[positive] = np.fromiter(map(math.log, values[positive].tolist()), np.float64, int(positive.sum()))
    return out


def _list_array(off: np.ndarray, values: pa.Array) -> pa.Array:
    if len(values) < 2 ** 31:
        return pa.ListArray.from_arrays(pa.array(off.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(off), values)
