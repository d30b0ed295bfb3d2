"""WebDataset shards streamed through the webdataset library: split over ranks and workers, shuffled in a buffer, never indexed.

Why a stream: tar headers are interleaved with the data, so listing a shard's members reads the
whole shard. Indexing every shard before the first step read all of CC3M (about 300 shards of
1 GB) before training began, and kept every shard open. Here each DataLoader worker of each rank
reads its own shards one at a time, start to end, through the webdataset library's own stages
(`tar_file_expander`, `group_by_keys`, `shuffle`), and closes each before opening the next.

Order, as open_clip's `--dataset-type webdataset` (Ilharco et al. 2021, doi:10.5281/zenodo.5143773):
every epoch the shard list is permuted with a seed made of (seed, epoch); rank r takes every
world-th shard from the r-th, and worker w of that rank every workers-th of those from the w-th;
samples pass through a shuffle buffer that drains at the end of each epoch, so epochs never mix.
Every sample is read exactly once per epoch, by exactly one (rank, worker).

Resume contract (the train state stores `state()` of the feed): per (rank, worker), the epoch and
the number of its shards of that epoch whose every sample went into a batch the loop took. A run
resumed with the same number of processes and workers continues each worker in that epoch at
that shard, with an empty shuffle buffer that refills: no sample of the epoch that had not been
delivered is left out; the samples of the shard(s) in progress at the checkpoint (partly
delivered; at most the shuffle buffer's reach) are delivered again, and the order within the
epoch differs from an uninterrupted run. With another number of processes or workers the split
of shards differs: the run restarts at the beginning of the earliest recorded epoch (what
open_clip does on resume) and logs that it did.

Bad data is skipped and named: a member that does not decode (`shard:key`), a sample without an
image or caption, a binary caption, a shard that cannot be read to its end (named with how many
samples it gave).
"""
from __future__ import annotations

import logging
import random
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from eclip.data.loader import PairBatch, Tokenizer, take_skipped, unit_float
from eclip.data.pairs import NOT_TEXT, decode_rgb, read_caption, record_skip
from eclip.errors import DatasetError, ImageLoadError

log = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def _reraise(err: Exception) -> bool:
    raise err


class WebDatasetPairs:
    """Image-text pairs from WebDataset shards (`key.jpg|jpeg|png|webp` + `key.txt`), streamed.

    Nothing is read when it is made: `stream()` builds, for one rank, the IterableDataset its
    DataLoader workers iterate. `skipped` collects (name, reason) of what was left out.
    """

    def __init__(self, shards: list[Path], image_size: int, seed: int = 0, shuffle_buffer: int = 2000) -> None:
        if not shards:
            raise DatasetError("no WebDataset shards found; give a .tar file, a folder of .tar files or a pattern like s-{000..009}.tar")
        self.shards = [str(s) for s in shards]
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.skipped: list[tuple[str, str]] = []

    def shard_order(self, epoch: int, rank: int, world: int, worker: int, workers: int) -> list[str]:
        """The shards (rank, worker) reads in `epoch`, in reading order."""
        order = torch.randperm(len(self.shards), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)).tolist()
        return [self.shards[i] for i in order[rank::world][worker::workers]]

    def streams_per_rank(self, workers: int, world: int) -> int:
        """The DataLoader workers one rank can use: each needs at least one shard (`workers` = 0: 0, read in the rank's process)."""
        if len(self.shards) < world:
            raise DatasetError(f"{len(self.shards)} WebDataset shard(s) for {world} processes: each process needs at least one; "
                               "write the data as more shards or train on fewer processes")
        usable = len(self.shards) // world
        if workers > usable:
            log.warning("%d workers per process but only %d shards each: using %d workers", workers, usable, usable)
        return min(workers, usable)

    def stream(self, rank: int, world: int, batch_size: int, tokenizer: Tokenizer, as_float: bool,
               state: dict[str, Any] | None, workers: int) -> ShardBatches:
        """The IterableDataset of one rank: batches of `batch_size` from each of its `max(1, workers)` streams."""
        return ShardBatches(self, rank, world, max(1, workers), batch_size, tokenizer, as_float, starts(state, world, max(1, workers)))

    def _skip(self, name: str, reason: str) -> None:
        record_skip(self.skipped, name, reason)

    def read(self, shards: list[str], first: int, progress: _Progress) -> Iterator[dict]:
        """Samples (dicts of member bytes, `__key__`, `__url__`, `__shard__`) of shards[first:], one open shard at a time."""
        from webdataset.tariterators import group_by_keys, tar_file_expander

        for k in range(first, len(shards)):
            url, count = shards[k], 0
            try:
                with open(url, "rb") as handle:
                    for sample in group_by_keys(tar_file_expander([{"url": url, "stream": handle}], handler=_reraise), handler=_reraise):
                        sample["__shard__"] = k
                        count += 1
                        yield sample
            except (OSError, tarfile.TarError, EOFError, ValueError) as err:
                reason = str(err.args[0] if err.args else err).split(" @ ")[0]  # the library appends the stream and url
                self._skip(url, f"unreadable tar after {count} samples ({reason[:160]}); the rest of it is left out")
            progress.finished(k, count)

    def decode(self, sample: dict) -> tuple[torch.Tensor, str] | None:
        """(uint8 (3, S, S) image, caption) of a sample, or None (recorded in `skipped`)."""
        name = f"{sample['__url__']}:{sample['__key__']}"
        image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
        if image is None or "txt" not in sample:
            self._skip(name, "needs both an image (jpg/png/webp) and a .txt caption")
            return None
        caption = read_caption(sample["txt"])
        if not caption:
            self._skip(name, NOT_TEXT if caption is None else "empty caption")
            return None
        try:
            return decode_rgb(image, name, self.image_size), caption
        except ImageLoadError as err:
            self._skip(name, str(err))
            return None


def starts(state: dict[str, Any] | None, world: int, workers: int) -> Callable[[int, int], tuple[int, int]]:
    """(rank, worker) -> (epoch, first shard) where that stream begins, from a checkpoint's data state (the resume contract)."""
    positions = dict((state or {}).get("positions", {}))
    if not positions:
        return lambda rank, worker: (0, 0)
    if [state.get("world"), state.get("workers")] == [world, workers]:
        return lambda rank, worker: tuple(positions.get(f"{rank}:{worker}", (0, 0)))
    epoch = min(int(p[0]) for p in positions.values())
    log.warning("resuming with %d process(es) x %d worker(s), the checkpoint had %s x %s: the shards split differently, "
                "so epoch %d starts again from its beginning", world, workers, state.get("world"), state.get("workers"), epoch)
    return lambda rank, worker: (epoch, 0)


class _Progress:
    """Which leading shards of an epoch have had every sample delivered: the resume position."""

    def __init__(self, first: int) -> None:
        self.done = first
        self.read: dict[int, int] = {}  # shard -> samples, once read to its end
        self.taken: dict[int, int] = {}

    def finished(self, shard: int, count: int) -> None:
        self.read[shard] = count
        self._advance()

    def take(self, shard: int) -> None:
        self.taken[shard] = self.taken.get(shard, 0) + 1
        self._advance()

    def _advance(self) -> None:
        while self.done in self.read and self.taken.get(self.done, 0) >= self.read[self.done]:
            self.done += 1


class ShardBatches(torch.utils.data.IterableDataset):
    """One rank's endless stream of PairBatch: in a DataLoader worker, that worker's shards; else all of the rank's."""

    def __init__(self, pairs: WebDatasetPairs, rank: int, world: int, workers: int, batch_size: int, tokenizer: Tokenizer,
                 as_float: bool, start: Callable[[int, int], tuple[int, int]]) -> None:
        self.pairs, self.rank, self.world, self.workers = pairs, rank, world, workers
        self.batch_size, self.tokenizer, self.as_float, self.start = batch_size, tokenizer, as_float, start

    def __iter__(self) -> Iterator[PairBatch]:
        info = torch.utils.data.get_worker_info()
        yield from self.batches(info.id if info is not None else 0)

    def samples(self, worker: int) -> Iterator[tuple[tuple[int, int], tuple[torch.Tensor, str] | None]]:
        """((epoch, shards done) after taking it, decoded sample or None) for every sample of this stream, epoch after epoch."""
        from webdataset import shuffle

        epoch, first = self.start(self.rank, worker)
        while True:
            shards = self.pairs.shard_order(epoch, self.rank, self.world, worker, self.workers)
            progress, good = _Progress(first), 0
            rng = random.Random(f"{self.pairs.seed}/{epoch}/{self.rank}/{worker}/{first}")
            buffer = self.pairs.shuffle_buffer
            for sample in shuffle(buffer, min(buffer, 500), rng=rng)(self.pairs.read(shards, first, progress)):
                progress.take(sample["__shard__"])
                item = self.pairs.decode(sample)
                good += item is not None
                yield (epoch, progress.done), item
            if first == 0 and not good:
                raise DatasetError(f"no decodable image-text pair in the {len(shards)} shard(s) of stream {self.rank}:{worker} "
                                   f"({', '.join(shards[:3])}{', ...' if len(shards) > 3 else ''}); check the shards")
            epoch, first = epoch + 1, 0

    def batches(self, worker: int) -> Iterator[PairBatch]:
        images: list[torch.Tensor] = []
        captions: list[str] = []
        for position, item in self.samples(worker):
            if item is None:
                continue
            images.append(item[0])
            captions.append(item[1])
            if len(images) == self.batch_size:
                stacked = torch.stack(images)
                yield PairBatch(unit_float(stacked) if self.as_float else stacked, self.tokenizer(captions), captions,
                                take_skipped(self.pairs), {f"{self.rank}:{worker}": list(position)})
                images, captions = [], []
