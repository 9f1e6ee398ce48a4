"""The shared argument checks of hyptest._validation and the one order draw of collect.plan.

Expectations are written out by hand (the accepted and refused values of each
check), and the order draw is compared with a naive reference that lists every
permutation with itertools and picks ranks the way the adaptive design did.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from hyptest._validation import (ArgumentTypeError, validate_choice, validate_count, validate_flag, validate_frame,
                                 validate_paired, validate_probability, validate_real, validate_real_array)
from hyptest.collect.plan import sample_orders


def test_a_kind_error_is_both_a_type_and_a_value_error():
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_flag_accepts_booleans(value):
    assert validate_flag(value, "strict") is bool(value)


@pytest.mark.parametrize("value", [0, 1, "yes", None, 1.0])
def test_flag_refuses_everything_else(value):
    with pytest.raises(ArgumentTypeError, match=r"`strict` must be True or False"):
        validate_flag(value, "strict")


def test_choice():
    assert validate_choice("bh", "adjust", ("holm", "bh")) == "bh"
    with pytest.raises(ValueError, match=r"^`adjust` must be one of 'holm', 'bh', got 'BH'$"):
        validate_choice("BH", "adjust", ("holm", "bh"))
    with pytest.raises(ValueError, match="got 1"):
        validate_choice(1, "adjust", ("holm", "bh"))


@pytest.mark.parametrize("value", [0.05, 0.5, np.float32(0.25), 1e-300])
def test_probability_accepts_the_open_interval(value):
    assert validate_probability(value, "alpha") == float(value)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, -0.1, 95.0, float("nan"), float("inf")])
def test_probability_refuses_the_ends_and_outside(value):
    with pytest.raises(ValueError, match=r"`alpha` must be a float in \(0, 1\)"):
        validate_probability(value, "alpha")


@pytest.mark.parametrize("value", [True, "0.05", None])
def test_probability_refuses_non_numbers(value):
    with pytest.raises(ArgumentTypeError, match="`alpha`"):
        validate_probability(value, "alpha")


def test_real():
    assert validate_real(3, "eta") == 3.0 and isinstance(validate_real(3, "eta"), float)
    assert validate_real(float("inf"), "eta") == float("inf")
    assert validate_real(0.0, "t", minimum=0.0) == 0.0
    with pytest.raises(ValueError, match=r"`eta` must be finite"):
        validate_real(float("nan"), "eta", finite=True)
    with pytest.raises(ValueError, match=r"`t` must be a number >= 0"):
        validate_real(-1e-9, "t", minimum=0.0)
    with pytest.raises(ValueError, match=r"`c` must be a number > 0, got 0.0"):
        validate_real(0, "c", minimum=0.0, strict=True)
    with pytest.raises(ValueError, match=r"> 0"):  # NaN is not above any bound
        validate_real(float("nan"), "c", minimum=0.0, strict=True)
    for bad in (True, "1", None, 1j):
        with pytest.raises(ArgumentTypeError, match="`eta` must be a real number"):
            validate_real(bad, "eta")


def test_count():
    assert validate_count(np.int64(3), "k") == 3 and type(validate_count(np.int64(3), "k")) is int
    assert validate_count(0, "tune", minimum=0) == 0
    assert validate_count(None, "batch_size", allow_none=True) is None
    with pytest.raises(ValueError, match=r"^`k` must be a positive integer, got 0$"):
        validate_count(0, "k")
    with pytest.raises(ValueError, match=r"^`chains` must be an integer >= 2, got 1$"):
        validate_count(1, "chains", minimum=2)
    with pytest.raises(ValueError, match=r"^`batch_size` must be a positive integer or None \(automatic\), got 0$"):
        validate_count(0, "batch_size", allow_none=True, none_means="automatic")
    for bad in (1.5, 2.0, True, "3", None):
        with pytest.raises(ArgumentTypeError, match="`k`"):
            validate_count(bad, "k")


def test_real_array():
    out = validate_real_array([[1, 2], [3, 4]], "m", ndim=2)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[1.0, 2.0], [3.0, 4.0]])
    assert np.isnan(validate_real_array([np.nan], "v", finite=False)[0])
    with pytest.raises(ValueError, match=r"^`v` must be 1-D \(one value per example\), got shape \(1, 2\)$"):
        validate_real_array([[1, 2]], "v", ndim=1, shape_hint="one value per example")
    with pytest.raises(ValueError, match=r"`x` must have at least 2 dimension\(s\), got shape \(3,\)"):
        validate_real_array([1, 2, 3], "x", min_ndim=2)
    with pytest.raises(ValueError, match=r"^`x` must be finite \(pad with 0\), got NaN or inf$"):
        validate_real_array([1.0, np.inf], "x", finite_hint="pad with 0")
    for bad in ("abc", ["a", "b"], [1 + 2j]):
        with pytest.raises(ArgumentTypeError, match="`x` must hold real numbers"):
            validate_real_array(bad, "x")


def test_frame():
    frame = pd.DataFrame({"a": [1], "b": [2]})
    assert validate_frame(frame, "records", ["a"]) is frame
    with pytest.raises(ValueError, match=r"^`records` lacks the column\(s\) \['c', 'd'\]; see README$"):
        validate_frame(frame, "records", ["a", "c", "d"], hint="; see README")
    with pytest.raises(ArgumentTypeError, match="`records` must be a pandas DataFrame, got dict"):
        validate_frame({"a": [1]}, "records", ["a"])


def _naive_without_identity(n: int, k: int, seed: list[int]) -> list[list[int]]:
    """The adaptive design's draw written out: k distinct ranks of the lexicographic list of all permutations."""
    everything = [list(p) for p in itertools.permutations(range(n))]
    ranks = np.random.default_rng(seed).choice(math.factorial(n), size=k, replace=False)
    return [everything[int(r)] for r in ranks]


@pytest.mark.parametrize(("n", "k"), [(1, 1), (3, 6), (4, 5), (5, 12), (7, 3)])
def test_orders_without_identity_are_the_adaptive_draw(n, k):
    got = sample_orders(n, k, rng=np.random.default_rng([n, k, 5]), identity_first=False)
    assert got == _naive_without_identity(n, k, [n, k, 5])


def test_orders_without_identity_past_the_enumeration_limit_are_distinct_permutations():
    got = sample_orders(10, 50, rng=np.random.default_rng(0), identity_first=False)
    rng = np.random.default_rng(0)  # the rejection loop, written out
    expected: list[list[int]] = []
    while len(expected) < 50:
        perm = [int(i) for i in rng.permutation(10)]
        if perm not in expected:
            expected.append(perm)
    assert got == expected


def test_orders_with_identity_start_with_it_and_enumerate_when_asked_for_all():
    got = sample_orders(4, 5, rng=np.random.default_rng(1))
    assert got[0] == [0, 1, 2, 3] and len({tuple(o) for o in got}) == 5
    assert sample_orders(3, "all", rng=np.random.default_rng(1)) == [list(p) for p in itertools.permutations(range(3))]
    assert sample_orders(3, 10, rng=np.random.default_rng(1)) == [list(p) for p in itertools.permutations(range(3))]


def test_paired():
    xa, ya = validate_paired([1, 2], (3.0, 4.0))
    np.testing.assert_array_equal(xa, [1.0, 2.0])
    np.testing.assert_array_equal(ya, [3.0, 4.0])
    with pytest.raises(ValueError, match=r"`y` must have the same length as `x` \(paired observations\), "
                                         r"got len\(x\)=2 and len\(y\)=3"):
        validate_paired([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        validate_paired([1], [2], min_size=2)


def test_one_jsonl_reader_for_task_files_and_datasets(tmp_path):
    from hyptest.tasks.datasets import _read_table
    from hyptest.tasks.task import TaskError, _read_rows

    path = tmp_path / "rows.jsonl"
    # a U+2028 inside a string is text (JSON Lines breaks lines at \n only); \r\n endings and blank lines are fine
    path.write_bytes('{"a": "x\u2028y"}\r\n\n{"a": 2}\n'.encode())
    assert _read_rows(path) == [(1, {"a": "x\u2028y"}), (3, {"a": 2})]
    assert list(_read_table(path)) == [(f"{path}:1", {"a": "x\u2028y"}), (f"{path}:3", {"a": 2})]
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    for read in (_read_rows, lambda p: list(_read_table(p))):
        with pytest.raises(TaskError, match=rf"{path}:2: expected a JSON object, got list"):
            read(path)
    path.write_text('{"a": 1}\n\n{"a": \n', encoding="utf-8")
    for read in (_read_rows, lambda p: list(_read_table(p))):
        with pytest.raises(TaskError, match=rf"{path}:3: malformed JSON"):
            read(path)
