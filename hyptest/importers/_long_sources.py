"""Where the long-format reader's rows come from: CSV/TSV, JSONL and Parquet as segments of rows.

Private to :mod:`hyptest.importers.long`. A segment holds consecutive rows of
the file, each with its line (Parquet: its row number): a pyarrow Table of
the rows that were read cleanly, the same rows as exact Python values on
demand, rows only available as dicts, and the rows that could not be read.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._long_columns import _numpy
from .mapping import LONG_COLUMNS, PROB_PREFIX, ColumnMapping

_STR_FIELDS: tuple[str, ...] = ("model", "task", "method", "query_id", "gold")
_INT_FIELDS: tuple[str, ...] = ("n_demos", "demo_set", "order_id", "seed", "step")
#: Bytes per pyarrow block (CSV, TSV, JSONL): about 10 000 rows of a typical long file.
_BLOCK_BYTES: int = 4 << 20
#: Lines read by the line-by-line parser where pyarrow cannot delimit a CSV row.
_FALLBACK_LINES: int = 2_000


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


def _wanted(name: str) -> bool:
    return name in LONG_COLUMNS or (name.startswith(PROB_PREFIX) and len(name) > len(PROB_PREFIX))


@dataclass
class _Segment:
    """Consecutive rows of the file: a table (with each row's line), rows as dicts, and unreadable rows.

    ``names`` is the layout of ``table`` (every column of the file, renamed);
    ``pyrows`` gives rows of ``table`` as the exact Python values the file holds.
    ``rows`` are (line, row, names or None for the row's own keys).
    """

    names: frozenset[str] | None = None
    table: pa.Table | None = None
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pyrows: Callable[[np.ndarray], list[dict[str, Any]]] | None = None
    rows: list[tuple[int, dict[str, Any], frozenset[str] | None]] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)
    unreadable: int = 0  # further rows counted with the last bad one (a damaged Parquet row group)

    def size(self) -> int:
        return len(self.lines) + len(self.rows) + len(self.bad) + self.unreadable


def _fields_message(expected: int, got: int) -> str:
    return f"expected {expected} fields (as in the header), got {got}: a truncated or malformed line"


def _span_message(expected: int, got: int, last: int) -> str:
    return (f"malformed row: a quoted field opened on this line runs to line {last}, giving {got} fields where the "
            f"header has {expected} (an unclosed quote?); reading goes on at the next line")


def _text_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _column_breaks(array: pa.Array) -> np.ndarray | None:
    """Line breaks inside each value of a binary column (None: there are none)."""
    data = array.buffers()[2]
    if data is None:
        return None
    raw = np.frombuffer(data, np.uint8)
    if not (raw == 10).any() and not (raw == 13).any():
        return None

    def count(pattern: str) -> np.ndarray:
        return _numpy(pc.count_substring(array, pattern), 0, np.int64)

    return count("\n") + count("\r") - count("\r\n")


def _utf8_bad_rows(array: pa.Array) -> np.ndarray:
    """Rows of a binary column that are not valid UTF-8."""
    try:
        array.view(pa.string()).validate(full=True)
        return np.zeros(0, np.int64)
    except pa.ArrowInvalid:
        pass
    out = []
    for i, value in enumerate(array.to_pylist()):
        try:
            value.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            out.append(i)
    return np.asarray(out, np.int64)


class _CsvSource:
    """A CSV or TSV file: line 1 is the header, rows follow (RFC 4180)."""

    header_line = 1

    def __init__(self, path: Path, mapping: ColumnMapping, delimiter: str, block_bytes: int = _BLOCK_BYTES) -> None:
        self.path = path
        self.mapping = mapping
        self.delimiter = delimiter
        self.block_bytes = block_bytes
        self.size = path.stat().st_size
        self.header_error: str | None = None
        self.raw_names: list[str] = []
        self.names: list[str] = []
        self._starts: np.ndarray | None = None
        first, self.data_start = self._first_line()
        text, err = _decode(first, 1)
        if err or not text or not text.strip():
            self.header_error = err or "the file is empty: the first line must be the header"
            return
        try:
            header = next(csv.reader([text], delimiter=delimiter, strict=True))
        except (csv.Error, StopIteration) as error:
            self.header_error = f"malformed header line ({error})"
            return
        self.raw_names = [h.strip() for h in header]
        self.names = _rename(self.raw_names, mapping)
        dupes = _duplicates(self.names)
        if dupes:
            self.header_error = f"column(s) {dupes} appear twice (after applying the mapping)"

    # -- lines --------------------------------------------------------------------------------

    def _first_line(self) -> tuple[bytes, int]:
        with open(self.path, "rb") as fh:
            data = b""
            while True:
                chunk = fh.read(1 << 16)
                data += chunk
                ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
                if ends:
                    end = min(ends)
                    after = end + 2 if data[end:end + 2] == b"\r\n" else end + 1
                    if data[end:end + 1] == b"\r" and after == len(data) and chunk:
                        continue  # a CR at the end of what was read: an LF may follow
                    return data[:end], after
                if not chunk:
                    return data, len(data)

    def line_starts(self) -> np.ndarray:
        """Byte offset of each line's start (lines end with LF, CRLF or CR, as pyarrow reads them)."""
        if self._starts is None:
            parts = [np.zeros(1, np.int64)]
            with open(self.path, "rb") as fh:
                base = 0
                while chunk := fh.read(1 << 24):
                    b = np.frombuffer(chunk, np.uint8)
                    after = np.empty_like(b)
                    after[:-1] = b[1:]
                    after[-1] = (fh.peek(1)[:1] or b"\0")[0]
                    ends = (b == 10) | ((b == 13) & (after != 10))
                    parts.append(np.flatnonzero(ends).astype(np.int64) + 1 + base)
                    base += len(chunk)
            starts = np.concatenate(parts)
            self._starts = starts[starts < self.size]
        return self._starts

    def line_offset(self, line: int) -> int:
        starts = self.line_starts()
        return int(starts[line - 1]) if line - 1 < len(starts) else self.size

    def line_bytes(self, first: int, last: int | None = None) -> bytes:
        """The bytes of lines ``first`` to ``last`` (default ``first``), line ends included."""
        start, end = self.line_offset(first), self.line_offset((last or first) + 1)
        with open(self.path, "rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    # -- rows ---------------------------------------------------------------------------------

    def remaining(self) -> int:
        """Rows left in the file (used when the header is unusable)."""
        if self.raw_names:
            return sum(segment.size() for segment in self.segments())
        count = 0
        for line in range(2, len(self.line_starts()) + 1):
            text, err = _decode(self.line_bytes(line), line)
            count += bool(err) or bool(text and text.strip())
        return count

    def segments(self) -> Iterator[_Segment]:
        """The rows after the header: pyarrow's streaming reader; line by line around rows it cannot delimit."""
        if not self.raw_names:
            return
        line, offset = 2, self.data_start
        while offset < self.size:
            stop = yield from self._arrow(offset, line)
            if stop is None:
                return
            line, how = stop
            if how == "lines":
                resume = yield from self._by_lines(line)
                if resume is None:
                    return
                line = resume
            offset = self.line_offset(line)

    def _arrow(self, offset: int, first_line: int) -> Iterator[_Segment]:
        """Read from ``offset`` (line ``first_line``) with pyarrow; return None at the end, or where to go on."""
        import pyarrow.csv as pcsv

        n = len(self.raw_names)
        columns = [f"c{i}" for i in range(n)]
        invalid: dict[int, tuple[int, str]] = {}

        def handler(row: Any) -> str:
            if row.number is None:  # pragma: no cover - only with threads, which are off
                raise ValueError("a row without a number")
            invalid[row.number] = (row.actual_columns, row.text)
            return "skip"

        source = pa.OSFile(str(self.path))
        source.seek(offset)
        num, line = 1, first_line  # the next record not yet placed, and its line
        hook = sys.unraisablehook  # pyarrow reports a bad row that is not UTF-8 there, then stops: we go line by line
        sys.unraisablehook = lambda unraisable: None
        try:
            reader = pcsv.open_csv(
                source,
                read_options=pcsv.ReadOptions(use_threads=False, block_size=self.block_bytes, column_names=columns),
                parse_options=pcsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True,
                                                ignore_empty_lines=False, invalid_row_handler=handler),
                convert_options=pcsv.ConvertOptions(column_types={c: pa.binary() for c in columns},
                                                    strings_can_be_null=False, quoted_strings_can_be_null=False))
            batches = iter(reader)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                if batch.num_rows == 0:
                    continue
                nums = np.arange(num, num + batch.num_rows, dtype=np.int64)
                for k in sorted(k for k in invalid if k >= num):
                    nums[nums >= k] += 1
                segment, stop, num, line = self._place(batch, nums, invalid, num, line)
                if segment.size():
                    yield segment
                if stop is not None:
                    return stop
            if any(k >= num for k in invalid):
                segment, stop, num, line = self._place(None, np.zeros(0, np.int64), invalid, num, line)
                if segment.size():
                    yield segment
                return stop
            return None
        except (pa.ArrowInvalid, ValueError, UnicodeDecodeError):
            # pyarrow cannot delimit a row here (an unclosed quote, bytes that are not UTF-8 in a bad row):
            # read on line by line from the first row not yet placed
            return (line, "lines")
        finally:
            sys.unraisablehook = hook
            source.close()

    def _place(self, batch: pa.RecordBatch | None, nums: np.ndarray, invalid: dict[int, tuple[int, str]], num: int,
               line: int) -> tuple[_Segment, tuple[int, str] | None, int, int]:
        """Give the rows of a batch and the invalid rows before them their lines; one segment."""
        n = len(self.raw_names)
        last_good = int(nums[-1]) if len(nums) else num - 1
        pending = sorted(k for k in invalid if num <= k and (batch is None or k < last_good))
        cut = next((k for k in pending if _text_breaks(invalid[k][1]) > 0), None)
        end = cut - 1 if cut is not None else max([last_good, *pending])
        n_good = int(np.searchsorted(nums, end, side="right"))
        span = np.ones(end - num + 2, np.int64)  # one more slot: the cut row, if any
        good_breaks = np.zeros(n_good, np.int64)
        if batch is not None and n_good:
            for column in batch.slice(0, n_good).columns:
                breaks = _column_breaks(column)
                if breaks is not None:
                    good_breaks += breaks
            span[nums[:n_good] - num] += good_breaks
        for k in pending:
            if k <= end + 1:
                span[k - num] += _text_breaks(invalid[k][1])
        starts = line + np.concatenate([[0], np.cumsum(span)[:-1]])
        bad: list[tuple[int, str]] = []
        for k in pending:
            if k > end:
                break
            got, text = invalid[k]
            if text.strip():
                bad.append((int(starts[k - num]), _fields_message(n, got)))
        stop = None
        if cut is not None:
            first = int(starts[cut - num])
            got, text = invalid[cut]
            bad.append((first, _span_message(n, got, first + _text_breaks(text))))
            stop = (first + 1, "arrow")
        next_num, next_line = end + 1, int(starts[end - num + 1]) if end >= num else line
        for k in [k for k in invalid if k <= end or k == cut]:
            del invalid[k]
        segment = _Segment(names=frozenset(self.names), bad=bad)
        if batch is None or not n_good:
            return segment, stop, next_num, next_line
        lines = starts[nums[:n_good] - num]
        batch = batch.slice(0, n_good)
        keep = np.ones(n_good, bool)
        empty = np.ones(n_good, bool)
        for column in batch.columns:
            empty &= _numpy(pc.binary_length(column), 0, np.int64) == 0
        for i in np.flatnonzero(empty):  # a blank line, or a row of empty fields?
            if not self.line_bytes(int(lines[i])).strip():
                keep[i] = False
        for column in batch.columns:
            for i in _utf8_bad_rows(column):
                if keep[i]:
                    keep[i] = False
                    last = int(lines[i] + good_breaks[i])
                    _, err = _decode(self.line_bytes(int(lines[i]), last), int(lines[i]))
                    bad.append((int(lines[i]), err or "not valid UTF-8"))
        if not keep.all():
            index = np.flatnonzero(keep)
            batch, lines = batch.take(pa.array(index)), lines[index]
        wanted = [(i, name) for i, name in enumerate(self.names) if _wanted(name)]
        table = pa.Table.from_arrays([batch.column(i).view(pa.string()) for i, _ in wanted],
                                     names=[name for _, name in wanted])
        segment.table, segment.lines = table, lines.astype(np.int64)
        segment.pyrows = lambda idx: table.take(pa.array(idx, pa.int64())).to_pylist()
        return segment, stop, next_num, next_line

    def _by_lines(self, start: int) -> Iterator[_Segment]:
        """Rows from line ``start`` read line by line (rows may span lines); return where pyarrow goes on."""
        n_lines = len(self.line_starts())
        n = len(self.raw_names)
        layout = frozenset(self.names)
        rows: list[tuple[int, dict[str, Any], frozenset[str] | None]] = []
        bad: list[tuple[int, str]] = []
        i = start
        while i <= n_lines and i - start < _FALLBACK_LINES:
            text, err = _decode(self.line_bytes(i), i)
            if err:
                bad.append((i, err))
                i += 1
                continue
            if not text or not text.strip():
                i += 1
                continue
            fields, last, err = self._record_at(i, n_lines)
            if err is None and len(fields) == n:
                rows.append((i, {name: v for name, v in zip(self.names, fields) if _wanted(name)}, layout))
                i = last + 1
                continue
            if err is None:
                err = _fields_message(n, len(fields)) if last == i else _span_message(n, len(fields), last)
            bad.append((i, err))
            i += 1
        yield _Segment(rows=rows, bad=bad)
        return i if i <= n_lines else None

    def _record_at(self, first: int, n_lines: int) -> tuple[list[str], int, str | None]:
        """The row that starts on line ``first`` (csv module, quoted fields may span lines), and its last line."""
        used = [first]

        def lines() -> Iterator[str]:
            k = first
            while k <= n_lines:
                used[0] = k
                yield self.line_bytes(k).decode("utf-8").rstrip("\r\n") + "\n"
                k += 1

        reader = csv.reader(lines(), delimiter=self.delimiter, strict=False)
        try:
            return next(reader), used[0], None
        except csv.Error as error:
            where = "" if used[0] == first else f"; a quoted field opened on this line runs past line {used[0]}"
            return [], used[0], f"malformed line ({error}){where}"
        except UnicodeDecodeError as error:
            return [], used[0], f"not valid UTF-8 ({error.reason} at byte {error.start} of line {used[0]})"
        except StopIteration:  # pragma: no cover - the line is not blank, so there is a row
            return [], first, "unreadable line"


_JSON_SCALARS = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating,
                 pa.types.is_boolean)


def _json_type_ok(kind: pa.DataType, name: str) -> bool:
    """Types the vectorised checks read exactly as Python's json module would."""
    if (name in _STR_FIELDS or name in _INT_FIELDS or name == "method_kind") and pa.types.is_floating(kind):
        return False  # a big integer became a float: read these rows with json.loads
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        child = kind.value_type
        return pa.types.is_null(child) or any(test(child) for test in _JSON_SCALARS)
    return any(test(kind) for test in _JSON_SCALARS)


class _JsonlSource:
    """A JSONL file: one JSON object per line, keys as column names."""

    header_line = None
    header_error = None
    names = None  # per-row names

    def __init__(self, path: Path, mapping: ColumnMapping, block_bytes: int = _BLOCK_BYTES) -> None:
        self.path = path
        self.mapping = mapping
        self.block_bytes = block_bytes

    def segments(self) -> Iterator[_Segment]:
        line, carry = 1, b""
        with open(self.path, "rb") as fh:
            while True:
                chunk = fh.read(self.block_bytes)
                data = carry + chunk
                if chunk:
                    cut = data.rfind(b"\n") + 1
                    if cut == 0:
                        carry = data
                        continue
                    block, carry = data[:cut], data[cut:]
                else:
                    block, carry = data, b""
                if block:
                    yield self._fast(block, line) or self._slow(block, line)
                    line += block.count(b"\n")
                if not chunk:
                    return

    def _fast(self, block: bytes, first_line: int) -> _Segment | None:
        """The block through pyarrow.json, when that reads it exactly as json.loads line by line would."""
        import pyarrow.json as pj

        body = block[3:] if first_line == 1 and block.startswith(b"\xef\xbb\xbf") else block
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        b = np.frombuffer(body, np.uint8)
        newlines = np.flatnonzero(b == 10)
        starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
        ends = np.concatenate([newlines, [len(b)]]).astype(np.int64)
        if starts[-1] == len(b):
            starts, ends = starts[:-1], ends[:-1]
        space = (b == 32) | (b == 9) | (b == 13) | (b == 10)
        ink = np.concatenate([[0], np.cumsum(~space)])
        rows = np.flatnonzero(ink[ends] - ink[starts] > 0)
        try:
            table = pj.read_json(io.BytesIO(body),
                                 read_options=pj.ReadOptions(use_threads=True, block_size=max(len(body) + 1, 1 << 20)),
                                 parse_options=pj.ParseOptions(newlines_in_values=False,
                                                               unexpected_field_behavior="infer"))
        except (pa.ArrowException, ValueError):  # anything pyarrow does not take is read line by line
            return None
        if table.num_rows != len(rows) or any(column.null_count for column in table.columns):
            return None  # blank lines of other whitespace, missing keys, nulls: line by line
        names = _rename(table.column_names, self.mapping)
        if _duplicates(names) or not all(_json_type_ok(f.type, n) for f, n in zip(table.schema, names)):
            return None
        table = table.rename_columns(names)
        keep = [n for n in names if _wanted(n)]
        mapping = self.mapping

        def pyrows(idx: np.ndarray) -> list[dict[str, Any]]:
            out = []
            for i in idx:
                obj = json.loads(body[starts[rows[i]]:ends[rows[i]]].decode("utf-8"))
                out.append(dict(zip(_rename(list(obj), mapping), obj.values())))
            return out

        return _Segment(names=frozenset(names), table=table.select(keep), lines=first_line + rows, pyrows=pyrows)

    def _slow(self, block: bytes, first_line: int) -> _Segment:
        rows: list[tuple[int, dict[str, Any], frozenset[str] | None]] = []
        bad: list[tuple[int, str]] = []
        pieces = block.split(b"\n")
        if pieces and pieces[-1] == b"":
            pieces.pop()
        for k, raw in enumerate(pieces):
            line = first_line + k
            text, err = _decode(raw, line)
            if err:
                bad.append((line, err))
                continue
            if not text.strip():  # type: ignore[union-attr]
                continue
            try:
                obj = json.loads(text)  # type: ignore[arg-type]
            except json.JSONDecodeError as error:
                bad.append((line, f"malformed JSON ({error.msg} at column {error.colno})"))
                continue
            except RecursionError:
                bad.append((line, "JSON nested too deeply"))
                continue
            if not isinstance(obj, dict):
                bad.append((line, f"each line must be a JSON object, got {type(obj).__name__}"))
                continue
            names = _rename(list(obj), self.mapping)
            dupes = _duplicates(names)
            if dupes:
                bad.append((line, f"key(s) {dupes} appear twice after applying the mapping"))
                continue
            rows.append((line, dict(zip(names, obj.values())), None))
        return self._tabulate(rows, bad)

    @staticmethod
    def _tabulate(rows: list[tuple[int, dict[str, Any], frozenset[str] | None]], bad: list[tuple[int, str]]
                  ) -> _Segment:
        """Rows that share their keys as a table (checked column by column; the dicts give the exact values)."""
        if len(rows) < 2 or len({frozenset(row) for _, row, _ in rows}) != 1:
            return _Segment(rows=rows, bad=bad)
        names = list(rows[0][1])
        keep = [n for n in names if _wanted(n)]
        try:
            table = pa.Table.from_pylist([{n: row[n] for n in keep} for _, row, _ in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError,
                ValueError):
            return _Segment(rows=rows, bad=bad)
        if table.column_names != keep or not all(_json_type_ok(f.type, f.name) for f in table.schema):
            return _Segment(rows=rows, bad=bad)
        dicts = [row for _, row, _ in rows]
        return _Segment(names=frozenset(names), table=table, lines=np.array([line for line, _, _ in rows], np.int64),
                        pyrows=lambda idx: [dicts[i] for i in idx], bad=bad)


class _ParquetSource:
    header_line = None

    def __init__(self, path: Path, mapping: ColumnMapping, batch_rows: int) -> None:
        import pyarrow.parquet as pq

        self.mapping = mapping
        self.batch_rows = batch_rows
        self.header_error: str | None = None
        self.n_rows = 0
        self.names: list[str] = []
        try:
            self.file = pq.ParquetFile(path)
        except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            self.file = None
            self.header_error = f"cannot read the Parquet file ({error})"
            return
        self.n_rows = self.file.metadata.num_rows
        self.raw_names = list(self.file.schema_arrow.names)
        self.names = _rename(self.raw_names, mapping)
        dupes = _duplicates(self.names)
        if dupes:
            self.header_error = f"column(s) {dupes} appear twice (after applying the mapping)"

    def remaining(self) -> int:
        return self.n_rows

    def segments(self) -> Iterator[_Segment]:
        if self.file is None:
            return
        wanted = [raw for raw, name in zip(self.raw_names, self.names) if _wanted(name)]
        renamed = _rename(wanted, self.mapping)
        layout = frozenset(self.names)
        row = 0
        try:
            for batch in self.file.iter_batches(batch_size=self.batch_rows, columns=wanted):
                table = pa.Table.from_batches([batch]).rename_columns(renamed)
                lines = np.arange(row + 1, row + 1 + batch.num_rows, dtype=np.int64)
                row += batch.num_rows
                yield _Segment(names=layout, table=table, lines=lines,
                               pyrows=lambda idx, t=table: t.take(pa.array(idx, pa.int64())).to_pylist())
        except Exception as error:  # noqa: BLE001 - a damaged row group: the rest cannot be read
            left = self.n_rows - row
            yield _Segment(bad=[(row + 1, (f"cannot read rows {row + 1}..{self.n_rows} ({left} rows) of the Parquet "
                                          f"file ({error})"))], unreadable=max(left - 1, 0))


