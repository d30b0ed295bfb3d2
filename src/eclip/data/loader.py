"""Training batches through torch's DataLoader: pairs read, decoded and tokenized in worker processes.

At the scale users train, the training process should do nothing but move tensors to the GPU
and run the step. Drawing a scene, decoding a JPEG and tokenizing captions are CPU work that,
done in the training process, leave the GPU waiting: on an H200 the bundled synthetic ViT ran at
0.13 s a step of 512 pairs whatever the number of scene-drawing processes, 0.09 s of it the
tokenizer called in the loop. Here every batch is made, tokenized and (for a CPU device) turned
into float in `torch.utils.data.DataLoader` workers, pinned for an asynchronous copy on CUDA, and
prefetched `prefetch` batches per worker ahead of the step.

Index-addressed sources (`batch(i, size)`, optionally `part`: synthetic scenes, CSV, folders):
item `i` of the loader is this rank's slice of global batch `i`, drawn with a sampler over the
steps still to run, so a worker makes whole batches, the batches are the same with any number of
workers, and a run resumed at step `s` starts at batch `s`. The loader gets its own generator,
so creating it never draws from the global torch RNG that training's state records.

Streams (WebDataset shards, `eclip.data.shard_stream`): each worker reads its own shards and
sends, with each batch, its position (epoch, shards done); `state()` gathers the positions of the
batches the loop has taken, which a checkpoint stores and a resumed run continues from.

Bad files found by a worker travel back with the batch that skipped them and are appended, once
per name, to the source's `skipped` list in the training process (the CLI reports from there);
under torchrun `close()` merges every rank's list.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from eclip.data.pairs import PairSource, batch_part
from eclip.distributed import world

Tokenizer = Callable[[list[str]], torch.Tensor]


@dataclass
class PairBatch:
    """One rank's batch as a worker sends it.

    images: (n, 3, H, W) uint8 (0..255) or float in [0, 1]; tokens: (n, L) long;
    captions: the n captions the tokens encode (a loss term may read their words: the phrase term);
    skipped: (name, reason) of the bad files replaced while making it;
    position: streams only, {"rank:worker": [epoch, shards done]} after this batch.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    captions: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    position: dict[str, list[int]] | None = None

    def pin_memory(self) -> PairBatch:
        """Called by the DataLoader's pinning thread (CUDA): page-locked copies for non-blocking transfers."""
        return PairBatch(self.images.pin_memory(), self.tokens.pin_memory(), self.captions, self.skipped, self.position)


def unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1] (the exact division the sources used to do); float images unchanged."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def take_skipped(source: object) -> list[tuple[str, str]]:
    """The (name, reason) records `source` added since the last call, removed from it (they travel with the batch)."""
    skipped = getattr(source, "skipped", None)
    if not skipped:
        return []
    taken = list(skipped)
    skipped.clear()
    return taken


class IndexedBatches(torch.utils.data.Dataset):
    """Item `i`: items [start, stop) of global batch `i` of an index-addressed source, tokenized."""

    def __init__(self, source: PairSource, tokenizer: Tokenizer, batch_size: int, start: int, stop: int, as_float: bool) -> None:
        self.source, self.tokenizer = source, tokenizer
        self.batch_size, self.start, self.stop, self.as_float = batch_size, start, stop, as_float

    def __getitem__(self, index: int) -> PairBatch:
        images, captions = batch_part(self.source, int(index), self.batch_size, self.start, self.stop)
        images = unit_float(images) if self.as_float else images
        return PairBatch(images, self.tokenizer(list(captions)), list(captions), take_skipped(self.source))


class TrainingFeed:
    """The batches of steps `steps` for this rank, on `device`: `next(feed) -> (images, tokens, captions)`.

    images: (n, 3, H, W) float in [0, 1]; tokens: (n, L); captions: the n captions' words.

    Args:
        batch_size: the global batch; each rank gets its 1/world slice.
        workers: DataLoader worker processes (0: made in this process, the order of the old loop).
        prefetch: batches each worker keeps ready.
        state: `state()` of the run being resumed (streams), or None.
    """

    def __init__(self, source: PairSource, tokenizer: Tokenizer, batch_size: int, steps: Iterable[int], device: torch.device | str,
                 *, workers: int = 0, prefetch: int = 2, state: dict[str, Any] | None = None) -> None:
        rank, size = world()
        local = batch_size // size
        self.source = source
        self.device = torch.device(device)
        self.skipped = take_skipped(source)  # found when the source was opened; from now on they come with the batches
        self._names = {name for name, _ in self.skipped}
        as_float = self.device.type == "cpu"
        self._positions: dict[str, list[int]] = {}
        self._layout: dict[str, int] = {}
        if hasattr(source, "stream"):  # each worker reads its own shards; the steps are only counted
            workers = source.streams_per_rank(int(workers), size)
            dataset, steps = source.stream(rank, size, local, tokenizer, as_float, state, workers), None
            self._layout = {"world": size, "workers": max(1, workers)}
            self._positions = {f"{rank}:{w}": list(dataset.start(rank, w)) for w in range(max(1, workers))}  # until each sends one
        else:
            dataset = IndexedBatches(source, tokenizer, batch_size, rank * local, (rank + 1) * local, as_float)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=steps, num_workers=int(workers), pin_memory=self.device.type == "cuda",
            prefetch_factor=max(1, int(prefetch)) if workers else None, generator=torch.Generator())
        self._batches: Iterator[PairBatch] | None = iter(self.loader)
        self.wait_seconds = 0.0

    def __iter__(self) -> TrainingFeed:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        began = time.perf_counter()
        batch = next(self._batches)
        self.wait_seconds += time.perf_counter() - began
        self._note(batch.skipped)
        self._positions.update(batch.position or {})
        images = unit_float(batch.images.to(self.device, non_blocking=True))
        return images, batch.tokens.to(self.device, non_blocking=True), batch.captions

    def _note(self, records: list[tuple[str, str]]) -> None:
        for name, reason in records:
            if name not in self._names:
                self._names.add(name)
                self.skipped.append((name, reason))

    def state(self) -> dict[str, Any]:
        """What a checkpoint stores to resume the data where the loop is: {} for index-addressed sources (collective under torchrun)."""
        if not self._layout:
            return {}
        positions = dict(self._positions)
        if world()[1] > 1:
            gathered: list[dict] = [{} for _ in range(world()[1])]
            torch.distributed.all_gather_object(gathered, positions)
            positions = {key: value for part in gathered for key, value in part.items()}
        return {**self._layout, "positions": positions}

    def close(self) -> None:
        """Stop the workers; the skipped files of every rank go to the source's `skipped` list (collective under torchrun)."""
        self._batches = None
        if world()[1] > 1:
            gathered: list[list] = [[] for _ in range(world()[1])]
            torch.distributed.all_gather_object(gathered, self.skipped)
            for part in gathered:
                self._note([tuple(r) for r in part])
        if hasattr(self.source, "skipped"):
            self.source.skipped[:] = self.skipped
