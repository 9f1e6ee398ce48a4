"""Read run-level summaries: one value of a metric per layer, with its baseline, per run.

A run is one JSON object, e.g. what Dai et al.'s ``compute_sim.py`` writes to
``rlt_json/<task>-<model>.json``::

    {"SimAOU": [0.31, 0.42], "Random SimAOU": [0.01, -0.02],
     "SimAM": [0.5, 0.6], "ZSL SimAM": [0.4, 0.4], "seed": 1, "lr": 0.001}

Files are ``.json`` (one object, or a list of objects) or ``.jsonl`` (one
object per line).  A run's settings (task, seed, order id, learning rate, ...)
come from its scalar fields and, optionally, from named groups of a regular
expression matched against the file name; without one, from key-value
fragments of the file and folder names (``seed_3``, ``perm1``, ``lr0.001``; see
:func:`hyptest.importers.names.name_settings`).  Per-layer lists are paired
with their baseline by name (see :func:`baseline_pairs`) or explicitly, with
another list or with a declared constant.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import pandas as pd

from ._problems import ImportProblems, Problem, ProblemLog
from .names import name_settings

__all__ = ["BASELINE_WORDS", "SummariesImport", "baseline_pairs", "read_run_summaries", "summary_files"]

#: Words that mark a key as a baseline ("Random SimAOU", "ZSL SimAM", "random_kendall", "kendall_baseline").
BASELINE_WORDS: tuple[str, ...] = ("random", "zsl", "baseline")
_SUFFIXES: tuple[str, ...] = (".json", ".jsonl")
_RESERVED: frozenset[str] = frozenset({"file", "line", "run", "metric", "baseline_name", "layer", "value",
                                       "baseline"})
_HINT = "Fix these runs, or read with strict=False (CLI: --skip-bad) to skip bad runs and count them."


def _words(key: str) -> list[str]:
    return re.sub(r"[-_\s]+", " ", key.lower()).split()


def _is_baseline(key: str) -> bool:
    return any(w in BASELINE_WORDS for w in _words(key))


def _stem(key: str) -> str:
    return " ".join(w for w in _words(key) if w not in BASELINE_WORDS)


def baseline_pairs(keys: Iterable[str]) -> dict[str, str]:
    """Pair per-layer metric keys with their baseline keys by name.

    A key whose words (split at ``-``, ``_`` and spaces, lower-cased) include
    one of :data:`BASELINE_WORDS` is a baseline; it belongs to the metric
    whose words are the same without those words.

    Parameters
    ----------
    keys : iterable of str
        The per-layer keys of one run.

    Returns
    -------
    dict
        Metric key -> baseline key, for the metrics that have exactly one.

    Examples
    --------
    >>> from hyptest.importers import baseline_pairs
    >>> baseline_pairs(["SimAOU", "Random SimAOU", "SimAM", "ZSL SimAM", "example-level kendall",
    ...                 "example-level random_kendall", "lonely"])
    {'SimAOU': 'Random SimAOU', 'SimAM': 'ZSL SimAM', 'example-level kendall': 'example-level random_kendall'}
    """
    keys = list(keys)
    baselines: dict[str, list[str]] = {}
    for key in keys:
        if _is_baseline(key):
            baselines.setdefault(_stem(key), []).append(key)
    out = {}
    for key in keys:
        if not _is_baseline(key) and len(baselines.get(_stem(key), [])) == 1:
            out[key] = baselines[_stem(key)][0]
    return out


def summary_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The ``.json`` / ``.jsonl`` files named by `paths` (folders are searched recursively)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in _SUFFIXES)
        else:
            out.append(p)
    return out


@dataclass(frozen=True, slots=True)
class SummariesImport:
    """What :func:`read_run_summaries` read.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (run, metric, layer): ``file``, ``line`` (JSONL; else
        None), ``run`` (0-based, over all files), the settings columns,
        ``metric``, ``baseline_name``, ``layer`` (0-based), ``value`` and
        ``baseline``.
    settings : list of str
        The settings columns of ``table``.
    problems : list of Problem
    n_runs_read, n_runs_skipped : int
    notes : list of str
    untested : dict
        Per-layer list -> why it is not tested (no baseline list, or a
        baseline without its metric).
    settings_source : str
        Where the settings of the file names came from: ``"pattern"``,
        ``"names"`` (read by :func:`hyptest.importers.names.name_settings`)
        or ``"none"``.
    """

    table: pd.DataFrame
    settings: list[str]
    problems: list[Problem]
    n_runs_read: int
    n_runs_skipped: int
    notes: list[str] = field(default_factory=list)
    untested: dict[str, str] = field(default_factory=dict)
    settings_source: str = "none"


def _coerce(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _runs(path: Path) -> Iterable[tuple[int | None, Any, str | None]]:
    if path.suffix.lower() == ".jsonl":
        with open(path, "rb") as fh:
            for line, raw in enumerate(fh, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    yield line, None, f"not valid UTF-8 ({error.reason})"
                    continue
                if not text.strip():
                    continue
                try:
                    yield line, json.loads(text), None
                except json.JSONDecodeError as error:
                    yield line, None, f"malformed JSON ({error.msg} at column {error.colno})"
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        yield None, None, f"not valid UTF-8 ({error.reason})"
        return
    except json.JSONDecodeError as error:
        yield error.lineno, None, f"malformed JSON ({error.msg} at column {error.colno})"
        return
    if isinstance(data, list):
        for obj in data:
            yield None, obj, None
    else:
        yield None, data, None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _folders(path: Path, roots: list[Path]) -> tuple[str, ...]:
    for root in roots:
        try:
            return path.parent.relative_to(root).parts
        except ValueError:
            continue
    return ()


def _names_settings(files: list[Path], paths: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Settings of each file from its name and the names of its folders below the folder given."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    roots = [Path(p) for p in items if Path(p).is_dir()]
    read = name_settings([f.name[: -len(f.suffix)] if f.suffix else f.name for f in files])
    settings = [dict(s) for s in read.settings]
    notes = list(read.notes)
    folders = [_folders(f, roots) for f in files]
    depth = max((len(f) for f in folders), default=0)
    for level in range(depth):
        names = [f[level] if len(f) > level else "" for f in folders]
        if len(set(names)) < 2:
            continue  # a folder every file shares says nothing about the runs
        key = "folder" if depth == 1 else f"folder_{level + 1}"
        parsed = name_settings(names, unkeyed=key)
        for one, name, got in zip(settings, names, parsed.settings):
            for k, v in (got or {key: name}).items():
                one.setdefault(k, v)
        notes += parsed.notes
    return settings, notes


def _pair_values(value: Any, n: int) -> tuple[str, list[Any]] | None:
    """A declared constant baseline: (its name, n copies); None for a list name."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    return f"constant {float(value):g}", [float(value)] * n


def _run_fields(obj: dict[str, Any], settings: dict[str, Any], from_names: Mapping[str, Any],
                errors: list[str], overruled: set[str]) -> dict[str, list[Any]]:
    """A run's per-layer lists; its scalar fields go into ``settings``.

    A field overrides a setting read from the names (``from_names``; recorded in
    ``overruled`` when they differ); one that disagrees with a setting of
    ``pattern`` is an error appended to ``errors``.
    """
    lists = {}
    for key, value in obj.items():
        if isinstance(value, list):
            lists[key] = value
        elif value is None or isinstance(value, (str, bool, int, float)):
            if key in from_names:
                if settings[key] != value:
                    overruled.add(key)
            elif key in settings and settings[key] != value:
                errors.append(f"setting {key!r} is {value!r} in the run but {settings[key]!r} in "
                              "the file name")
            settings[key] = value
    return lists


def _layer_rows(lists: dict[str, list[Any]], found: Mapping[str, Any], errors: list[str]) -> list[dict[str, Any]]:
    """One row per (metric, layer) of the metric -> baseline pairs in ``found``; problems go to ``errors``."""
    if not found:
        errors.append("no per-layer metric with a baseline: looked for lists named like 'X' and "
                      "'Random X' / 'ZSL X' / 'X_baseline' (or pass `pairs`)")
    rows: list[dict[str, Any]] = []
    for metric, base in found.items():
        constant = _pair_values(base, len(lists[metric])) if metric in lists else None
        if metric not in lists or (constant is None and base not in lists):
            missing = [k for k in (metric, base) if isinstance(k, str) and k not in lists]
            errors.append(f"missing per-layer list(s) {missing}")
            continue
        values = lists[metric]
        base, baseline = constant if constant is not None else (base, lists[base])
        if len(values) != len(baseline):
            errors.append(f"{metric!r} has {len(values)} layers but {base!r} has {len(baseline)}")
            continue
        if not values:
            errors.append(f"{metric!r} is empty")
            continue
        for layer, (v, b) in enumerate(zip(values, baseline)):
            fv, fb = _number(v), _number(b)
            if fv is None or fb is None:
                bad = metric if fv is None else base
                errors.append(f"{bad!r} at layer {layer} is {(v if fv is None else b)!r}, not a "
                              "finite number")
                continue
            rows.append({"metric": metric, "baseline_name": base, "layer": layer, "value": fv, "baseline": fb})
    return rows


def _import_notes(name_notes: list[str], overruled: set[str], untested: dict[str, str],
                  clash: list[str]) -> list[str]:
    """The notes of an import: settings the fields overruled, lists not tested, fields dropped for a clash."""
    notes = list(name_notes)
    if overruled:
        notes.append(f"setting(s) {sorted(overruled)} read from the file names differ from the runs' fields; the "
                     "fields are used")
    if untested:
        notes.append(f"per-layer lists not tested: {', '.join(sorted(untested))} (see `untested` for why)")
    if clash:
        notes.append(f"fields {clash} clash with column names of the table and were dropped")
    return notes


def _why_untested(key: str) -> str:
    """Why the per-layer list ``key`` has no test: a baseline without its metric, or a metric without a baseline."""
    if _is_baseline(key):
        return "a baseline list without its metric (no list named like it without 'random' / 'zsl' / 'baseline')"
    return (f"no baseline list (looked for 'Random {key}', 'ZSL {key}', '{key}_baseline'); declare "
            f"one in the mapping file: pairs: {{{key!r}: <another list, or a constant such as 0>}}")


def read_run_summaries(
    paths: str | Path | Iterable[str | Path],
    *,
    pattern: str | re.Pattern[str] | None = None,
    pairs: Mapping[str, str | float] | None = None,
    strict: bool = True,
    names: bool = True,
) -> SummariesImport:
    """Read per-run, per-layer metric values and their baselines.

    Parameters
    ----------
    paths : path or iterable of paths
        Files (``.json``: one run object or a list of them; ``.jsonl``: one
        run per line) or folders (searched recursively for both).
    pattern : str or compiled regex, optional
        Searched in each file's name (``re.search``); its named groups become
        settings (numbers are converted: ``"3"`` -> 3, ``"1e-3"`` -> 0.001).
        A file whose name does not match is a problem.
    pairs : mapping, optional
        Metric key -> baseline key, or -> a number (a declared constant
        baseline, e.g. 0); added to the pairs :func:`baseline_pairs` finds by
        name in each run (and replacing them for the metrics it names).
    strict : bool, default True
        Raise :class:`ImportProblems` at the first file with a problem; else
        skip bad runs and record a Problem for each.
    names : bool, default True
        Without `pattern`, read settings from the file and folder names
        (:func:`hyptest.importers.names.name_settings`); fields win over them.

    Returns
    -------
    SummariesImport

    Raises
    ------
    ImportProblems
        In strict mode.
    ValueError
        If no file is found, or `pattern` is not a valid regular expression.

    Notes
    -----
    Scalar fields (numbers, strings, booleans) become settings; a setting
    that both `pattern` and a field give must agree (names read without a
    pattern yield to the field, with a note).  Per-layer lists must hold
    finite numbers (``null`` or NaN at a layer is a problem) and a metric and
    its baseline must have the same length.  Lists without a baseline are not
    tested; ``untested`` says why, for each.
    """
    files = summary_files(paths)
    if not files:
        raise ValueError(f"`paths` {paths!r}: no .json or .jsonl file found")
    try:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    except re.error as error:
        raise ValueError(f"`pattern` is not a valid regular expression ({error})") from None
    source = "pattern" if regex is not None else "none"
    auto: list[dict[str, Any]] = [{} for _ in files]
    name_notes: list[str] = []
    if regex is None and names:
        auto, name_notes = _names_settings(files, paths)
        source = "names" if any(auto) else "none"
    overruled: set[str] = set()
    log = ProblemLog()
    rows: list[dict[str, Any]] = []
    settings_seen: dict[str, None] = {}
    unpaired: set[str] = set()
    n_read = n_skipped = 0
    run_index = 0
    for path, from_names in zip(files, auto):
        if not path.is_file():
            log.add(str(path), None, "no such file")
            if strict:
                raise ImportProblems(log.batch(), hint=_HINT)
            continue
        from_name: dict[str, Any] = dict(from_names)
        name_ok = True
        if regex is not None:
            match = regex.search(path.name)
            if match is None:
                name_ok = False
            else:
                from_name = {k: _coerce(v) for k, v in match.groupdict().items() if v is not None}
        for line, obj, error in _runs(path):
            n_read += 1
            errors = [error] if error else []
            if not errors and not isinstance(obj, dict):
                errors.append(f"a run must be a JSON object, got {type(obj).__name__}")
            if not name_ok:
                errors.append(f"the file name does not match `pattern` {regex.pattern!r}")
            new_rows: list[dict[str, Any]] = []
            settings = dict(from_name)
            if isinstance(obj, dict):
                lists = _run_fields(obj, settings, from_names if regex is None else {}, errors, overruled)
                found: dict[str, Any] = {**baseline_pairs(lists), **(pairs or {})}
                new_rows = _layer_rows(lists, found, errors)
                unpaired |= set(lists) - set(found) - {v for v in found.values() if isinstance(v, str)}
            if errors:
                n_skipped += 1
                for message in errors:
                    log.add(str(path), line, message)
                continue
            for key in settings:
                settings_seen.setdefault(key, None)
            kept = {k: v for k, v in settings.items() if k not in _RESERVED}
            for row in new_rows:
                rows.append({"file": str(path), "line": line, "run": run_index, **kept, **row})
            run_index += 1
        if strict and (batch := log.batch()):
            raise ImportProblems(batch, hint=_HINT)
    reserved = _RESERVED
    settings_list = [s for s in settings_seen if s not in reserved]
    columns = ["file", "line", "run", *settings_list, "metric", "baseline_name", "layer", "value", "baseline"]
    table = pd.DataFrame(rows, columns=columns)
    untested = {key: _why_untested(key) for key in sorted(unpaired)}
    notes = _import_notes(name_notes, overruled, untested, sorted(set(settings_seen) & reserved))
    return SummariesImport(table, settings_list, log.problems(), n_read, n_skipped, notes, untested, source)
