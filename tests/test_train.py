"""Contrastive training lowers the loss, checkpoints atomically and resumes exactly."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import TEXT_CFG, VIT_CFG

from eclip.errors import CheckpointError
from eclip.models.loading import load_model, simple_tokenizer
from eclip.train.loop import TrainSettings, train

COLOURS = {"red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.1), "blue": (0.1, 0.2, 1.0), "yellow": (1.0, 0.9, 0.1)}
CONFIG = {
    "arch": "vit",
    "open_clip": {"embed_dim": 24, "vision_cfg": dict(VIT_CFG), "text_cfg": dict(TEXT_CFG)},
    "preprocess": {"image_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
}


class ColourSquares:
    """A learnable toy task: a coloured square somewhere on grey, captioned by its colour."""

    def batch(self, index: int, size: int):
        g = torch.Generator().manual_seed(index)
        names = list(COLOURS)
        images = torch.full((size, 3, 32, 32), 0.5)
        captions = []
        for i in range(size):
            name = names[int(torch.randint(len(names), (1,), generator=g))]
            y, x = (int(v) for v in torch.randint(0, 16, (2,), generator=g))
            images[i, :, y : y + 16, x : x + 16] = torch.tensor(COLOURS[name]).view(3, 1, 1)
            captions.append(f"a {name} square")
        return images, captions


def _model(seed: int = 0):
    from eclip.models.folder import build_open_clip

    torch.manual_seed(seed)
    return build_open_clip(CONFIG)


def _settings(**kw) -> TrainSettings:
    base = dict(steps=20, batch_size=16, lr=2e-3, warmup=2, checkpoint_every=5, seed=0)
    return TrainSettings(**{**base, **kw})


def test_twenty_steps_lower_the_loss(tmp_path):
    tok, _ = simple_tokenizer(16)
    result = train(_model(), CONFIG, ColourSquares(), tok, tmp_path / "run", _settings(), progress=False)
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < first - 0.1, result.losses
    loaded = load_model(str(tmp_path / "run"))
    assert loaded.arch == "vit" and loaded.encode_text(["a red square"]).shape == (1, 24)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["steps"] == 20


def test_killed_run_resumes_with_the_same_next_loss(tmp_path):
    tok, _ = simple_tokenizer(16)
    full = train(_model(), CONFIG, ColourSquares(), tok, tmp_path / "full", _settings(steps=12), progress=False)
    # "kill" after 10 steps: the last checkpoint is at step 10
    part = train(_model(), CONFIG, ColourSquares(), tok, tmp_path / "part", _settings(steps=12), stop_after=10, progress=False)
    assert len(part.losses) == 10
    resumed = train(_model(seed=99), CONFIG, ColourSquares(), tok, tmp_path / "part", _settings(steps=12), resume=True, progress=False)
    assert resumed.losses[:10] == part.losses
    assert resumed.losses[10] == pytest.approx(full.losses[10], abs=1e-5)
    assert resumed.losses[11] == pytest.approx(full.losses[11], abs=1e-5)


def test_existing_run_needs_resume_and_corrupt_state_is_clear(tmp_path):
    tok, _ = simple_tokenizer(16)
    train(_model(), CONFIG, ColourSquares(), tok, tmp_path / "run", _settings(steps=5), progress=False)
    with pytest.raises(CheckpointError, match="--resume"):
        train(_model(), CONFIG, ColourSquares(), tok, tmp_path / "run", _settings(steps=5), progress=False)
    (tmp_path / "run" / "train_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="train_state.pt"):
        train(_model(), CONFIG, ColourSquares(), tok, tmp_path / "run", _settings(steps=5), resume=True, progress=False)
