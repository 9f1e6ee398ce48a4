"""The mapping file: how someone else's column names and settings map onto hyptest's.

A small YAML file (read with ``yaml.safe_load``; unknown keys are errors)::

    columns:                 # their column name -> hyptest's long-format name
      algo: method
      p_neg: prob_negative
      p_pos: prob_positive
    labels: [negative, positive]   # label names (a list, or {task: [labels]})
    methods: {ft_kv: sgd}          # method kind of method names other than icl/gd/sgd/adam
    # run summaries only
    pattern: '(?P<task>\\w+)-seed(?P<seed>\\d+)\\.json'
    pairs: {SimAOU: Random SimAOU, ICL-FTZS SimAM: 0}   # another list, or a constant
    cluster_by: [task, seed]
    group_by: [model]
    # Dai et al.'s logs only
    ft_setting: ftzs

See ``docs/reanalyse.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ColumnMapping", "KINDS", "LONG_COLUMNS", "PROB_PREFIX", "load_mapping", "mapping_from_options"]

#: Method kinds of the store's schema; anything else is "other".
KINDS: tuple[str, ...] = ("icl", "gd", "sgd", "adam")

#: Prefix of the one-column-per-label probability columns.
PROB_PREFIX: str = "prob_"

#: Columns of the long format (besides ``prob_<label>``), with what they hold.
LONG_COLUMNS: dict[str, str] = {
    "model": "model name (required)",
    "task": "task name (required)",
    "method": "method name: icl, gd, sgd, adam or any other name (required)",
    "demo_set": "index of the demo set, an integer (required)",
    "query_id": "id of the held-out query (required)",
    "gold": "gold label, one of the labels (required)",
    "order_id": "index of the demo order within the demo set (this or `order` required)",
    "order": "demo ids in prompt / training order, a list (JSON list in CSV) (this or `order_id` required)",
    "n_demos": "number of demos N (default: the length of `order`; required without `order`)",
    "seed": "training seed (default 0)",
    "step": "optimisation steps taken before scoring (default 0)",
    "method_kind": "icl, gd, sgd, adam or other (default: from the method name or `methods:` in the mapping)",
    "labels": "label names, a list (with `label_probs`; or give `labels:` in the mapping)",
    "label_probs": "probabilities of the labels, a list in the order of `labels`",
    "topk_ids": "top-k token ids of the next-token distribution, a list of int (optional)",
    "topk_probs": "their probabilities, a list of float (optional, with `topk_ids`)",
}

_KEYS: tuple[str, ...] = ("columns", "labels", "methods", "pattern", "pairs", "cluster_by", "group_by",
                          "ft_setting")
_FT_SETTINGS: tuple[str, ...] = ("ftzs", "ft")


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """A validated mapping (see the module docstring for the YAML form).

    Attributes
    ----------
    columns : dict
        Their column name -> the long format's name (a key of
        :data:`LONG_COLUMNS` or ``prob_<label>``).
    labels : tuple of str, dict of str to tuple of str, or None
        Label names for every task, or per task.
    methods : dict
        Method name -> kind (icl, gd, sgd or adam).
    pattern : str or None
        File-name regular expression with named groups (run summaries).
    pairs : dict
        Metric key -> baseline key (run summaries).
    cluster_by, group_by : tuple of str or None
        Settings that define clusters and separate groups (run summaries).
    ft_setting : str
        Which setting of Dai et al.'s logs is fine-tuning: ``ftzs`` (default)
        or ``ft``.
    """

    columns: dict[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] | dict[str, tuple[str, ...]] | None = None
    methods: dict[str, str] = field(default_factory=dict)
    pattern: str | None = None
    pairs: dict[str, str | float] = field(default_factory=dict)
    cluster_by: tuple[str, ...] | None = None
    group_by: tuple[str, ...] | None = None
    ft_setting: str = "ftzs"

    def labels_for(self, task: str) -> tuple[str, ...] | None:
        """The declared labels of a task, or None."""
        if isinstance(self.labels, dict):
            return self.labels.get(task)
        return self.labels


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"mapping `{where}` must be a non-empty list of names, got {value!r}")
    out = tuple(str(v) for v in value)
    if len(set(out)) != len(out):
        raise ValueError(f"mapping `{where}` repeats a name: {list(out)}")
    return out


def _optional_list(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and not value:
        return ()
    return _str_list(value, where)


def _str_dict(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"mapping `{where}` must be a mapping of names, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def _pairs_dict(value: Any, where: str) -> dict[str, str | float]:
    """Metric -> baseline list name, or -> a number (a declared constant baseline)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: `pairs` must map a metric to a baseline list or a number, got "
                         f"{type(value).__name__}")
    out: dict[str, str | float] = {}
    for k, v in value.items():
        if isinstance(v, bool) or v is None or isinstance(v, (list, dict)):
            raise ValueError(f"{where}: `pairs.{k}` must name a baseline list or be a number, got {v!r}")
        if isinstance(v, (int, float)):
            if not math.isfinite(float(v)):
                raise ValueError(f"{where}: `pairs.{k}` must be a finite number, got {v!r}")
            out[str(k)] = float(v)
        else:
            out[str(k)] = str(v)
    return out


def _validate_target(name: str) -> None:
    if name in LONG_COLUMNS:
        return
    if name.startswith(PROB_PREFIX) and len(name) > len(PROB_PREFIX):
        return
    raise ValueError(
        f"mapping `columns`: {name!r} is not a long-format column; accepted: "
        f"{', '.join(LONG_COLUMNS)} or {PROB_PREFIX}<label>"
    )


def load_mapping(source: ColumnMapping | Mapping[str, Any] | str | Path | None) -> ColumnMapping:
    """Read and validate a mapping.

    Parameters
    ----------
    source : ColumnMapping, dict, path or None
        A mapping already validated, a dict with the YAML's keys, or the path
        of a YAML file; None gives the empty mapping.

    Returns
    -------
    ColumnMapping

    Raises
    ------
    ValueError
        If the file is missing or malformed, a key is unknown, or a value has
        the wrong type; the message names the key.
    """
    if source is None:
        return ColumnMapping()
    if isinstance(source, ColumnMapping):
        return source
    where = "mapping"
    if isinstance(source, (str, Path)):
        path = Path(source)
        where = str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{path}: no such mapping file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: cannot read the mapping file ({error})") from None
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: malformed YAML ({error})") from None
        data = {} if data is None else data
    else:
        data = source
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: a mapping file must be a YAML mapping, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; accepted: {', '.join(_KEYS)}")
    columns = _str_dict(data.get("columns"), "columns")
    targets = list(columns.values())
    for target in targets:
        _validate_target(target)
    repeated = sorted({t for t in targets if targets.count(t) > 1})
    if repeated:
        raise ValueError(f"{where}: `columns` maps several columns onto {repeated}")
    labels: tuple[str, ...] | dict[str, tuple[str, ...]] | None = None
    raw_labels = data.get("labels")
    if isinstance(raw_labels, Mapping):
        labels = {str(t): _str_list(v, f"labels.{t}") for t, v in raw_labels.items()}
    elif raw_labels is not None:
        labels = _str_list(raw_labels, "labels")
    methods = _str_dict(data.get("methods"), "methods")
    for name, kind in methods.items():
        if kind not in KINDS:
            raise ValueError(f"{where}: `methods.{name}` is {kind!r}; accepted kinds: {', '.join(KINDS)}")
    pattern = data.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise ValueError(f"{where}: `pattern` must be a regular expression (a string), got {pattern!r}")
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"{where}: `pattern` is not a valid regular expression ({error})") from None
    ft_setting = str(data.get("ft_setting", "ftzs"))
    if ft_setting not in _FT_SETTINGS:
        raise ValueError(f"{where}: `ft_setting` is {ft_setting!r}; accepted: {', '.join(_FT_SETTINGS)}")
    cluster_by = _optional_list(data.get("cluster_by"), "cluster_by")
    group_by = _optional_list(data.get("group_by"), "group_by")
    return ColumnMapping(
        columns=columns, labels=labels, methods=methods, pattern=pattern,
        pairs=_pairs_dict(data.get("pairs"), where),
        cluster_by=cluster_by, group_by=group_by,
        ft_setting=ft_setting,
    )


def _pairs(items: Any, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"`{option}` takes THEIRS=OURS, got {item!r}")
        out[name.strip()] = value.strip()
    return out


def _names(items: Iterable[str]) -> list[str]:
    out = [name.strip() for item in items for name in str(item).split(",") if name.strip()]
    if not out:
        raise ValueError("`--cluster-by` takes setting names (e.g. task,seed), got none")
    return out


def mapping_from_options(
    file: str | Path | None = None,
    *,
    columns: Any = (),
    labels: Any = (),
    methods: Any = (),
    pattern: str | None = None,
    ft_setting: str | None = None,
    cluster_by: Iterable[str] | None = None,
) -> ColumnMapping:
    """A mapping from a YAML file and command-line options (the options win).

    Parameters
    ----------
    file : path, optional
        The mapping file.
    columns : iterable of str
        ``"their_name=our_name"`` items (``--column``), added to ``columns:``.
    labels : iterable of str
        Label names (``--label``), replacing ``labels:``.
    methods : iterable of str
        ``"method=kind"`` items (``--method-kind``), added to ``methods:``.
    pattern, ft_setting : str, optional
        Replace ``pattern:`` / ``ft_setting:``.
    cluster_by : iterable of str, optional
        Replace ``cluster_by:`` (``--cluster-by``; items may hold several
        names separated by commas; ``run`` makes every run its own cluster).

    Returns
    -------
    ColumnMapping

    Raises
    ------
    ValueError
        As :func:`load_mapping`, or for an item without ``=``.

    Examples
    --------
    >>> from hyptest.importers import mapping_from_options
    >>> m = mapping_from_options(columns=["algo=method", "p_pos=prob_pos"], methods=["ft=sgd"])
    >>> m.columns, m.methods
    ({'algo': 'method', 'p_pos': 'prob_pos'}, {'ft': 'sgd'})
    """
    base = load_mapping(file)
    data: dict[str, Any] = {
        "columns": {**base.columns, **_pairs(columns, "--column")},
        "labels": list(labels) if labels else (
            {k: list(v) for k, v in base.labels.items()} if isinstance(base.labels, dict)
            else list(base.labels) if base.labels else None),
        "methods": {**base.methods, **_pairs(methods, "--method-kind")},
        "pattern": pattern if pattern is not None else base.pattern,
        "pairs": dict(base.pairs),
        "cluster_by": (_names(cluster_by) if cluster_by else
                       list(base.cluster_by) if base.cluster_by is not None else None),
        "group_by": list(base.group_by) if base.group_by is not None else None,
        "ft_setting": ft_setting or base.ft_setting,
    }
    return load_mapping(data)
