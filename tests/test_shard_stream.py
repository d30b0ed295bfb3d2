"""WebDataset shards as a stream: each sample once per epoch over ranks and workers, bad members named, kill and resume."""
from __future__ import annotations

import io
import tarfile

import pytest
import torch
from helpers import TINY_VIT_CONFIG, png_bytes_of

from eclip.data.loader import TrainingFeed
from eclip.data.pairs import open_pairs
from eclip.data.shard_stream import WebDatasetPairs
from eclip.models.loading import simple_tokenizer
from eclip.train.checkpoint import load_state
from eclip.train.loop import Run, TrainSettings, train

TOK, _ = simple_tokenizer(16)


def _png(value: int) -> bytes:
    return png_bytes_of((value, 255 - value, 7), (10, 8))


def _tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _shards(folder, n_shards: int, per_shard: int) -> list[str]:
    """Shards of unique captions 'item S K'; returns every caption."""
    folder.mkdir(exist_ok=True)
    captions = []
    for s in range(n_shards):
        members = []
        for k in range(per_shard):
            captions.append(f"item {s} {k}")
            members += [(f"{s:03d}{k:03d}.png", _png(10 * k)), (f"{s:03d}{k:03d}.txt", captions[-1].encode())]
        _tar(folder / f"shard-{s:03d}.tar", members)
    return captions


def _captions_of(tokens: torch.Tensor, captions: list[str]) -> list[str]:
    """The caption of each row of tokens (captions are unique, so their tokens are)."""
    lookup = {tuple(row.tolist()): c for row, c in zip(TOK(captions), captions)}
    return [lookup[tuple(row.tolist())] for row in tokens]


def _stream_captions(pairs, rank, world, worker, workers, count, state=None):
    stream = pairs.stream(rank, world, 4, TOK, True, state, workers)
    items = []
    for _, item in stream.samples(worker):
        if item is not None:
            items.append(item[1])
        if len(items) == count:
            return items
    raise AssertionError("stream ended")


def test_ranks_and_workers_read_every_sample_exactly_once_per_epoch(tmp_path):
    captions = _shards(tmp_path / "s", 7, 3)
    pairs = open_pairs(str(tmp_path / "s"), 8, seed=4)
    assert isinstance(pairs, WebDatasetPairs)
    for epoch in (0, 1):
        seen = []
        for rank in range(2):
            for worker in range(2):
                mine = pairs.shard_order(epoch, rank, 2, worker, 2)
                first_two = _stream_captions(pairs, rank, 2, worker, 2, 3 * len(mine) * 2)  # epochs 0 and 1 of this stream
                seen += first_two[3 * len(mine):] if epoch else first_two[:3 * len(mine)]
        assert sorted(seen) == sorted(captions)


def test_a_dataloader_with_workers_streams_one_epoch_and_knows_where_it_is(tmp_path):
    captions = _shards(tmp_path / "s", 7, 3)
    pairs = open_pairs(str(tmp_path / "s"), 8)
    feed = TrainingFeed(pairs, TOK, 3, range(7), "cpu", workers=2)  # worker 0 reads 4 shards, worker 1 three: 7 batches of 3
    seen = [c for _ in range(7) for c in _captions_of(next(feed)[1], captions)]
    assert sorted(seen) == sorted(captions)
    assert feed.state() == {"world": 1, "workers": 2, "positions": {"0:0": [0, 4], "0:1": [0, 3]}}
    feed.close()


def test_corrupt_members_and_a_truncated_shard_are_skipped_and_named(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    _tar(folder / "a.tar", [("good.png", _png(1)), ("good.txt", b"a good one"), ("bad.png", b"not a png"), ("bad.txt", b"x"),
                            ("bin.png", _png(2)), ("bin.txt", _png(3)), ("lonely.png", _png(4))])
    _tar(folder / "b.tar", [m for k in range(3) for m in ((f"{k}.png", _png(k)), (f"{k}.txt", f"b {k}".encode()))])
    data = (folder / "b.tar").read_bytes()
    (folder / "b.tar").write_bytes(data[: 2 * 1024 + 512 + 100])  # two members of 512 + 512 bytes, a header, then cut in 1.png's block
    pairs = WebDatasetPairs([folder / "a.tar", folder / "b.tar"], 8)
    samples = pairs.stream(0, 1, 4, TOK, True, None, 0).samples(0)
    epoch = [next(samples) for _ in range(5)]  # a.tar: 4 samples, b.tar: 1 before the cut
    assert all(position[0] == 0 for position, _ in epoch) and next(samples)[0][0] == 1
    assert sorted(item[1] for _, item in epoch if item is not None) == ["a good one", "b 0"]
    reasons = dict(pairs.skipped)
    assert "decode" in reasons[f"{folder / 'a.tar'}:bad"] and "binary" in reasons[f"{folder / 'a.tar'}:bin"]
    assert "caption" in reasons[f"{folder / 'a.tar'}:lonely"]
    assert reasons[str(folder / "b.tar")].startswith("unreadable tar after 1 samples")


def test_a_resumed_stream_delivers_every_sample_it_had_not_and_repeats_only_shards_in_progress(tmp_path):
    captions = _shards(tmp_path / "s", 6, 4)
    pairs = WebDatasetPairs(sorted((tmp_path / "s").glob("*.tar")), 8, seed=1, shuffle_buffer=5)
    before = TrainingFeed(pairs, TOK, 3, range(5), "cpu")
    seen = [c for _ in range(5) for c in _captions_of(next(before)[1], captions)]
    state = before.state()
    before.close()
    epoch, done = state["positions"]["0:0"]
    assert epoch == 0 and 1 <= done < 6
    order = pairs.shard_order(0, 0, 1, 0, 1)
    rest = [c for c in captions if f"shard-{c.split()[1].zfill(3)}.tar" in {p.rsplit('/', 1)[-1] for p in order[done:]}]
    after = TrainingFeed(pairs, TOK, 3, range(10), "cpu", state=state)
    delivered = [c for _ in range(-(-len(rest) // 3)) for c in _captions_of(next(after)[1], captions)][: len(rest)]
    after.close()
    assert sorted(delivered) == sorted(rest)  # the rest of epoch 0, each once, before epoch 1 begins
    assert set(seen) | set(delivered) == set(captions)  # nothing of the epoch is lost
    assert set(seen) & set(delivered)  # repeated: samples of the shards in progress at the checkpoint, and only those


def test_a_killed_run_on_shards_stores_the_stream_position_and_resumes(tmp_path):
    from eclip.models.folder import build_open_clip

    _shards(tmp_path / "s", 4, 3)

    def run(**kw):
        torch.manual_seed(0)
        settings = TrainSettings(steps=8, batch_size=3, lr=1e-3, warmup=1, checkpoint_every=4)
        run = Run(build_open_clip(TINY_VIT_CONFIG), TOK, open_pairs(str(tmp_path / "s"), 32), settings, TINY_VIT_CONFIG)
        return train(run, tmp_path / "run", progress=False, workers=2, **kw)

    run(stop_after=4)  # each worker: two batches of 3, all 6 samples of its 2 shards
    assert load_state(tmp_path / "run")["data"] == {"world": 1, "workers": 2, "positions": {"0:0": [0, 2], "0:1": [0, 2]}}
    resumed = run(resume=True)
    assert resumed.steps_done == 8 and len(resumed.losses) == 8
    assert load_state(tmp_path / "run")["data"]["positions"] == {"0:0": [1, 2], "0:1": [1, 2]}


def test_more_processes_than_shards_is_refused(tmp_path):
    from eclip.errors import DatasetError

    _shards(tmp_path / "s", 1, 2)
    with pytest.raises(DatasetError, match="1 WebDataset shard"):
        open_pairs(str(tmp_path / "s"), 8).streams_per_rank(0, 2)
