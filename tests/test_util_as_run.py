"""``hyptest._util.as_run``: positions that form one run index like the slice it gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hyptest._util import as_run


@pytest.mark.parametrize("positions, is_slice", [
    (np.array([3, 4, 5, 6]), True),
    (np.array([0]), True),
    (np.array([2, 3, 5]), False),  # a gap
    (np.array([0, 2, 4]), False),
    (np.array([], dtype=np.int64), False),
])
def test_as_run_indexes_the_same_elements(positions, is_slice):
    data = np.arange(10) * 10
    got = as_run(positions)
    assert isinstance(got, slice) == is_slice
    np.testing.assert_array_equal(data[got], data[positions])
    frame = pd.DataFrame({"x": data})
    pd.testing.assert_frame_equal(frame.iloc[got], frame.iloc[positions])
