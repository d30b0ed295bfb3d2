"""Contrastive training lowers the loss, checkpoints atomically and resumes exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import TINY_VIT_CONFIG

from eclip.errors import CheckpointError, RecipeError
from eclip.models.loading import load_model, simple_tokenizer
from eclip.train.loop import Run, TrainSettings, train

COLOURS = {"red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.1), "blue": (0.1, 0.2, 1.0), "yellow": (1.0, 0.9, 0.1)}
CONFIG = TINY_VIT_CONFIG


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


def _run(settings: TrainSettings, model=None, config: dict = CONFIG) -> Run:
    """The tiny ViT trained from scratch on coloured squares, its record naming the settings."""
    from dataclasses import asdict

    tok, _ = simple_tokenizer(16)
    return Run(model if model is not None else _model(), tok, ColourSquares(), settings,
               record={**config, "training": {"settings": asdict(settings)}})


def test_twenty_steps_lower_the_loss(tmp_path):
    result = train(_run(_settings()), tmp_path / "run", progress=False)
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < first - 0.1, result.losses
    loaded = load_model(str(tmp_path / "run"))
    assert loaded.arch == "vit" and loaded.encode_text(["a red square"]).shape == (1, 24)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["settings"]["steps"] == 20


def test_killed_run_resumes_with_the_same_next_loss(tmp_path):
    full = train(_run(_settings(steps=12)), tmp_path / "full", progress=False)
    # "kill" after 10 steps: the last checkpoint is at step 10
    part = train(_run(_settings(steps=12)), tmp_path / "part", stop_after=10, progress=False)
    assert len(part.losses) == 10
    resumed = train(_run(_settings(steps=12), model=_model(seed=99)), tmp_path / "part", resume=True, progress=False)
    assert resumed.losses[:10] == part.losses
    assert resumed.losses[10] == pytest.approx(full.losses[10], abs=1e-5)
    assert resumed.losses[11] == pytest.approx(full.losses[11], abs=1e-5)


def test_existing_run_needs_resume_and_corrupt_state_is_clear(tmp_path):
    train(_run(_settings(steps=5)), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="`resume`"):
        train(_run(_settings(steps=5)), tmp_path / "run", progress=False)
    (tmp_path / "run" / "train_state.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="train_state.safetensors"):
        train(_run(_settings(steps=5)), tmp_path / "run", resume=True, progress=False)


class _Payload:
    """Unpickling this creates a file: what a crafted checkpoint would do with any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("name", ["train_state.pt", "train_state.safetensors"])
@pytest.mark.parametrize("resume", [False, True])
def test_a_crafted_pickle_in_the_output_folder_never_runs(tmp_path, name, resume):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    torch.save({"step": 1, "model": _Payload(marker), "optimizer": {}, "scheduler": {}, "rng": {}}, run / name)
    with pytest.raises(CheckpointError, match="with `resume`" if not resume else name):
        train(_run(_settings(steps=2)), run, resume=resume, progress=False)
    assert not marker.exists()
    assert sorted(p.name for p in run.iterdir()) == [name]  # nothing written, nothing removed


def test_resume_with_other_options_is_refused_and_the_same_options_resume(tmp_path):
    train(_run(_settings(steps=6)), tmp_path / "run", stop_after=5, progress=False)
    for changed in ({"lr": 1e-3}, {"batch_size": 8}, {"steps": 8}):
        key = next(iter(changed))
        with pytest.raises(CheckpointError, match=f"settings.{key} .* then, .* now"):
            train(_run(_settings(**{"steps": 6, **changed})), tmp_path / "run", resume=True, progress=False)
    other_head = {**CONFIG, "pooling": {"head": "max"}}
    with pytest.raises(CheckpointError, match="model.pooling"):
        train(_run(_settings(steps=6), config=other_head), tmp_path / "run", resume=True, progress=False)
    resumed = train(_run(_settings(steps=6, checkpoint_every=1)), tmp_path / "run", resume=True, progress=False)
    assert resumed.steps_done == 6 and len(resumed.losses) == 6


def test_temporary_files_of_a_killed_write_are_swept(tmp_path):
    run = tmp_path / "run"
    train(_run(_settings(steps=4)), run, stop_after=2, progress=False)
    leftovers = [run / ".train_state.safetensors.ab12cd_9.tmp", run / ".model.safetensors.zz00yy11.tmp"]
    unrelated = run / ".notes.txt.ab12cd_9.tmp"
    for path in (*leftovers, unrelated):
        path.write_bytes(b"x" * 100)
    train(_run(_settings(steps=4)), run, resume=True, progress=False)
    assert not any(p.exists() for p in leftovers) and unrelated.exists()


@pytest.mark.parametrize("bad", [{"steps": 0}, {"steps": -3}, {"batch_size": 0}, {"lr": 0.0}, {"checkpoint_every": 0}, {"warmup": -1}])
def test_settings_that_make_no_sense_are_refused(bad):
    with pytest.raises(RecipeError, match=f"`settings.{next(iter(bad))}`"):
        _settings(**bad)


def test_state_codec_round_trips_optimiser_and_rng_states_through_safetensors(tmp_path):
    import random

    import numpy as np
    from safetensors.torch import load_file, save_file

    from eclip.train.state_codec import join_tensors, split_tensors

    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 32, 32), torch.zeros(2, 16, dtype=torch.long))[0].sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "numpy": np.random.get_state(), "python": random.getstate(),
             "odd": {3: (1, 2.5, None), "__x": [True, "s"]}}
    tensors: dict = {}
    tree = split_tensors(state, tensors, "state")
    save_file(tensors, str(tmp_path / "s.safetensors"))
    back = join_tensors(json.loads(json.dumps(tree)), load_file(str(tmp_path / "s.safetensors")))
    assert back["odd"] == state["odd"] and back["python"] == state["python"]
    assert back["numpy"][0] == "MT19937" and back["numpy"][1].dtype == np.uint32
    assert np.array_equal(back["numpy"][1], state["numpy"][1]) and back["numpy"][2:] == state["numpy"][2:]
    first = next(iter(state["optimizer"]["state"]))
    assert set(back["optimizer"]["state"]) == set(state["optimizer"]["state"])
    assert torch.equal(back["optimizer"]["state"][first]["exp_avg"], state["optimizer"]["state"][first]["exp_avg"])
    assert back["optimizer"]["param_groups"][0]["betas"] == state["optimizer"]["param_groups"][0]["betas"]


def _rewrite_state(path: Path, change) -> None:
    """Rewrite a training state's JSON header through `change(tree)`, keeping its tensors: what a hand edit can do."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    saved = json.loads(metadata["eclip_train_state"])
    change(saved["state"])
    save_file(tensors, str(path), metadata={"eclip_train_state": json.dumps(saved)})


def _set(*keys, value):
    def change(tree):
        for key in keys[:-1]:
            tree = tree[key]
        tree[keys[-1]] = value
    return change


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    train(_run(_settings(steps=2, checkpoint_every=1)), run, progress=False)
    return run


@pytest.mark.parametrize("field, change", [
    ("step", _set("step", value="ten")),
    ("step", _set("step", value=-1)),
    ("losses", _set("losses", value="0.5")),
    ("run", _set("run", value=[1, 2])),
    ("optimizer", _set("optimizer", value={"state": {}, "param_groups": 3})),
    ("scheduler", _set("scheduler", "last_epoch", value="2")),
    ("rng", _set("rng", "python", value="seed")),
    ("model", _set("model", value=[])),
    ("data", _set("data", value={"world": "2", "workers": 1, "positions": {}})),
    ("scaler", _set("scaler", value={"scale": "big"})),
])
def test_a_state_field_of_the_wrong_type_is_one_line_naming_the_file_and_field(finished_run, tmp_path, field, change):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _rewrite_state(run / "train_state.safetensors", change)
    with pytest.raises(CheckpointError, match=rf"train_state.safetensors: .*`{field}`") as caught:
        train(_run(_settings(steps=2, checkpoint_every=1)), run, resume=True, progress=False)
    assert "\n" not in str(caught.value)


def test_the_saved_state_passes_its_own_field_checks(finished_run):
    from eclip.train.checkpoint import load_state

    state = load_state(finished_run)
    assert state["step"] == 2 and len(state["losses"]) == 2


def test_resume_where_a_model_has_no_training_state_is_refused_and_overwrites_nothing(finished_run, tmp_path):
    import shutil

    run = tmp_path / "model"
    shutil.copytree(finished_run, run)
    (run / "train_state.safetensors").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(CheckpointError, match=r"nothing to resume in `out` .*model.safetensors.* no training state"):
        train(_run(_settings(steps=2)), run, resume=True, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    fresh = train(_run(_settings(steps=2)), tmp_path / "new", resume=True, progress=False)  # nothing there yet: a new run
    assert fresh.steps_done == 2
