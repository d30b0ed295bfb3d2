"""Training batches through the DataLoader: the same numbers with any number of workers, bad files named once."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_VIT_CONFIG, png_bytes_of

from eclip.data.loader import IndexedBatches, TrainingFeed
from eclip.data.pairs import CsvPairs, FolderPairs, SyntheticPairs, open_pairs
from eclip.data.synthetic import batch_of_scenes
from eclip.models.loading import simple_tokenizer
from eclip.train.loop import Run, TrainSettings, to_model_input, train
from eclip.train.losses import clip_loss

CONFIG = TINY_VIT_CONFIG
PRE = CONFIG["preprocess"]


def _model():
    from eclip.models.folder import build_open_clip

    torch.manual_seed(0)
    return build_open_clip(CONFIG)


def _synthetic() -> SyntheticPairs:
    return SyntheticPairs(seed=5, image_size=32, max_objects=2)


def _settings(**kw) -> TrainSettings:
    return TrainSettings(**{**dict(steps=4, batch_size=6, lr=2e-3, warmup=1, checkpoint_every=2, seed=0), **kw})


def test_first_loss_is_the_old_loops_and_workers_change_no_number(tmp_path):
    """The loss of step 0 as the loop computed it before batches came from a DataLoader, and whole runs with 0 and 2 workers."""
    tok, _ = simple_tokenizer(16)
    runs = [train(Run(_model(), tok, _synthetic(), _settings(), CONFIG), tmp_path / f"w{w}", progress=False, workers=w) for w in (0, 2)]
    assert runs[0].losses == runs[1].losses and len(runs[0].losses) == 4
    model = _model().train()
    torch.manual_seed(0)
    images, captions = batch_of_scenes(5, 0, 6, _synthetic().config)  # the old path: float / 255 and the tokenizer in the loop
    x = to_model_input(torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0), (32, 32), PRE["mean"], PRE["std"])
    img = F.normalize(model.encode_image(x), dim=-1)
    txt = F.normalize(model.encode_text(tok(captions)), dim=-1)
    assert clip_loss(img, txt, model.logit_scale.exp()).item() == runs[0].losses[0]


def test_a_run_resumed_with_workers_continues_exactly(tmp_path):
    tok, _ = simple_tokenizer(16)
    full = train(Run(_model(), tok, _synthetic(), _settings(), CONFIG), tmp_path / "full", progress=False)
    part = train(Run(_model(), tok, _synthetic(), _settings(), CONFIG), tmp_path / "part", stop_after=2, progress=False, workers=2)
    resumed = train(Run(_model(), tok, _synthetic(), _settings(), CONFIG), tmp_path / "part", resume=True, progress=False, workers=2)
    assert part.losses == full.losses[:2]
    assert resumed.losses == pytest.approx(full.losses, abs=1e-6)


def test_a_rank_slice_is_that_part_of_the_global_batch():
    tok, _ = simple_tokenizer(16)
    source = _synthetic()
    item = IndexedBatches(source, tok, 6, 2, 5, as_float=False)[3]
    images, captions = source.batch(3, 6)
    assert item.images.dtype == torch.uint8 and torch.equal(item.images, images[2:5])
    assert torch.equal(item.tokens, tok(captions[2:5]))


def _folder_with_bad_files(root):
    folder = root / "folder"
    folder.mkdir()
    for i, colour in enumerate(["red", "blue", "green"]):
        (folder / f"im{i}.png").write_bytes(png_bytes_of(colour))
        (folder / f"im{i}.txt").write_text(f"a {colour} picture\n")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "broken.txt").write_text("never decodes")
    (folder / "binary.png").write_bytes(png_bytes_of("white"))
    (folder / "binary.txt").write_bytes(png_bytes_of("black"))  # an image saved as .txt is no caption
    return folder


def _drain(source, workers: int, steps: int = 3, batch_size: int = 4):
    tok, _ = simple_tokenizer(16)
    feed = TrainingFeed(source, tok, batch_size, range(steps), "cpu", workers=workers)
    batches = [next(feed) for _ in range(steps)]
    feed.close()
    return batches


def test_file_images_decode_in_workers_and_each_bad_file_is_named_once(tmp_path):
    folder = _folder_with_bad_files(tmp_path)
    serial, parallel = FolderPairs(folder, 16), FolderPairs(folder, 16)
    assert [n for n, _ in serial.skipped] == [str(folder / "binary.png")] and "binary" in serial.skipped[0][1]
    a, b = _drain(serial, 0), _drain(parallel, 2)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert a[0][0].dtype == torch.float32 and float(a[0][0].max()) <= 1.0
    for source in (serial, parallel):  # 12 items over 4 files: the broken one was met by both workers, reported once
        assert sorted(n.rsplit("/", 1)[-1] for n, _ in source.skipped) == ["binary.png", "broken.png"]


def test_a_spreadsheet_csv_with_bom_and_crlf_reads_its_header_as_a_header(tmp_path):
    for i, colour in enumerate(["red", "blue"]):
        (tmp_path / f"im{i}.png").write_bytes(png_bytes_of(colour))
    text = 'image_path,caption\r\nim0.png,"a red, bright\r\nsquare"\r\nim1.png,a blue square\r\nim1.png,\r\n'
    (tmp_path / "pairs.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    pairs = open_pairs(str(tmp_path / "pairs.csv"), 16)
    assert isinstance(pairs, CsvPairs) and pairs.captions == ["a red, bright square", "a blue square"]
    assert [n for n, _ in pairs.skipped] == [f"{tmp_path / 'pairs.csv'}:5"] and "caption" in pairs.skipped[0][1]
