"""The one batching helper: consecutive items in lists of at most `size`."""
from __future__ import annotations

import pytest

from eclip.batching import batched


def test_batches_are_consecutive_and_the_last_is_shorter():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched(iter("ab"), 2)) == [["a", "b"]] and list(batched([], 4)) == []


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(ValueError, match="batch size 0"):
        next(batched([1], 0))
