"""Settings read from file and folder names: ``sst2_per_layer_0_k_32_seed_3_lr_0.2.json`` -> ``{task: sst2, ...}``.

People name their result files after the settings of the run, in many styles:
``seed_3``, ``seed3``, ``seed-3``, ``perm1``, ``per_layer_0``, ``lr0.001``,
``lr_1e-3``.  :func:`name_settings` reads such fragments from a set of names at
once, because what is a key and what is a value is clearer across files than
in one name: a word that every name holds (``seed``, ``per``, ``layer``) is
part of a key, a word that only some names hold (``sst2``, ``agnews``) is a
value.  A regular expression with named groups (``pattern``) states the
settings instead; this module is the fallback when none is given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NameSettings", "counter_template", "name_settings", "name_tokens"]

_NUMBER = r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
#: A word glued to a number (``seed3``, ``lr0.001``, ``lr1e-3``, ``sst2``), a number, or any other word.
_TOKEN = re.compile(rf"([A-Za-z]+)({_NUMBER})(?![A-Za-z0-9])|({_NUMBER})(?![A-Za-z0-9])|([A-Za-z0-9]+)")
_IS_NUMBER = re.compile(rf"^{_NUMBER}$")
#: Words that are setting keys even in a single name (``seed3`` -> seed = 3); across several names a glued
#: word is a key when every name holds it.
KEY_WORDS: frozenset[str] = frozenset({
    "seed", "perm", "permutation", "order", "run", "rep", "repeat", "trial", "fold", "split", "lr", "step",
    "steps", "epoch", "epochs", "k", "n", "shot", "shots", "layer", "bsz", "bs", "batch", "set", "demo", "demos",
    "id", "iter", "sample", "samples",
})


@dataclass(frozen=True, slots=True)
class NameSettings:
    """What :func:`name_settings` read.

    Attributes
    ----------
    settings : list of dict
        One dict per name: setting -> value (numbers converted).
    notes : list of str
        How unkeyed values were named (e.g. the varying word read as ``task``).
    """

    settings: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def name_tokens(name: str) -> list[tuple[str, str]]:
    """Split a name into ``(kind, text)`` tokens: ``glued`` (word+number), ``number`` or ``word``.

    Separators are ``-``, ``_``, ``.`` (except inside a number), spaces and
    anything else that is not a letter or digit.

    Examples
    --------
    >>> from hyptest.importers.names import name_tokens
    >>> name_tokens("sst2_seed3-lr1e-3.perm_0")
    [('glued', 'sst2'), ('glued', 'seed3'), ('glued', 'lr1e-3'), ('word', 'perm'), ('number', '0')]
    """
    out = []
    for m in _TOKEN.finditer(name):
        if m.group(1):
            out.append(("glued", m.group(0)))
        elif m.group(3):
            out.append(("number", m.group(3)))
        else:
            out.append(("word", m.group(4)))
    return out


def _split_glued(text: str) -> tuple[str, str]:
    m = re.match(rf"^([A-Za-z]+)({_NUMBER})$", text)
    assert m is not None
    return m.group(1), m.group(2)


def _put(settings: dict[str, Any], key: str, value: Any) -> None:
    """Add a setting; a key already there gets ``_2``, ``_3``, ..."""
    name, i = key, 2
    while name in settings:
        name, i = f"{key}_{i}", i + 1
    settings[name] = value


def _key(words: list[str]) -> str:
    return "_".join(w.lower() for w in words)


def name_settings(names: Sequence[str], *, unkeyed: str = "task") -> NameSettings:
    """Read settings from names that follow one naming style.

    Parameters
    ----------
    names : sequence of str
        File stems (or folder names), one per run.
    unkeyed : str, default "task"
        The setting that takes the first varying word that has no key
        (``sst2`` in ``sst2_seed_3``); later ones are ``name_2``, ``name_3``.

    Returns
    -------
    NameSettings

    Notes
    -----
    A name is split at separators (see :func:`name_tokens`).  A word that
    appears in every name is part of a key, a word that only some names hold
    is a value.  A number's key is the run of key words just before it
    (``per layer 0`` -> ``per_layer = 0``).  A word glued to a number is a
    key and a value on its own (``seed3`` -> ``seed = 3``) when the word is in
    :data:`KEY_WORDS` or every name holds it glued to some number; else it is
    a word (``sst2``).  Numbers with no key and key words with digits
    (``1_3b``) are dropped.  A key that repeats in one name gets ``_2``.

    Examples
    --------
    >>> from hyptest.importers.names import name_settings
    >>> names = ["sst2_per_layer_0_seed_3_lr_0.2", "cb_per_layer_1_seed_4_lr_0.08"]
    >>> name_settings(names).settings[0]
    {'task': 'sst2', 'per_layer': 0, 'seed': 3, 'lr': 0.2}
    >>> name_settings(["run-seed3-perm1", "run-seed4-perm0"]).settings[1]
    {'seed': 4, 'perm': 0}
    """
    tokens = [name_tokens(n) for n in names]
    n = len(names)
    words_in = [{t.lower() for kind, t in toks if kind == "word"} for toks in tokens]
    everywhere = set.intersection(*words_in) if words_in else set()
    glued_words = [{_split_glued(t)[0].lower() for kind, t in toks if kind == "glued"} for toks in tokens]
    glued_everywhere = set.intersection(*glued_words) if glued_words else set()
    notes: list[str] = []
    unkeyed_values: dict[str, set[str]] = {}
    out: list[dict[str, Any]] = []
    for toks in tokens:
        settings: dict[str, Any] = {}
        pending: list[str] = []  # key words since the last value
        n_unkeyed = 0


        for kind, text in toks:
            if kind == "glued":
                word, number = _split_glued(text)
                if word.lower() in KEY_WORDS or (n > 1 and word.lower() in glued_everywhere):
                    _put(settings, _key([word]), _number(number))
                    pending = []
                    continue
                kind = "word"
            if kind == "number":
                if pending:
                    _put(settings, _key(pending), _number(text))
                pending = []
            elif n > 1 and text.lower() not in everywhere:
                # a value without a number: keyed by the words before it, else the unkeyed setting
                if pending:
                    _put(settings, _key(pending), text)
                else:
                    n_unkeyed += 1
                    key = unkeyed if n_unkeyed == 1 else f"name_{n_unkeyed}"
                    _put(settings, key, text)
                    unkeyed_values.setdefault(key, set()).add(text)
                pending = []
            elif any(c.isdigit() for c in text):
                pending = []  # "1_3b": not a key
            else:
                pending.append(text)
        out.append(settings)
    for key, values in unkeyed_values.items():
        shown = ", ".join(sorted(values)[:6]) + (", ..." if len(values) > 6 else "")
        notes.append(f"the varying word without a key in the file names ({shown}) is read as the setting "
                     f"`{key}`; state the settings with `pattern` (CLI --pattern) if that is wrong")
    return NameSettings(out, notes)


def counter_template(names: Sequence[str]) -> str | None:
    """The common template when names differ only by one number (``run_#``), else None.

    Examples
    --------
    >>> from hyptest.importers.names import counter_template
    >>> counter_template(["run_1", "run_2", "run_10"])
    'run_#'
    >>> counter_template(["sst2_seed_1", "cb_seed_1"]) is None
    True
    """
    if len(set(names)) < 2:
        return None
    templates = {re.sub(r"\d+", "#", n) for n in names}
    if len(templates) != 1:
        return None
    numbers = [re.findall(r"\d+", n) for n in names]
    varying = [i for i in range(len(numbers[0])) if len({x[i] for x in numbers}) > 1]
    return templates.pop() if len(varying) == 1 else None
