"""The one batching helper: consecutive items of any iterable in lists of at most `size`.

Every loop that feeds a model a batch at a time (the evaluation runner, zero-shot accuracy, the
demo) goes through `batched`, so a batch boundary means the same everywhere and none of them
keeps more than one batch of decoded images. (`itertools.batched` arrives with Python 3.12 and
yields tuples; eclip supports 3.11.)
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` consecutive items of `items`, the last one shorter if they do not divide evenly."""
    if size < 1:
        raise ValueError(f"batch size {size} must be >= 1")
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
