"""Hostile and mistaken models: names, model folders checked before anything is built, real weights on an offline machine.

Each case expects one `ModelLoadError` line naming the file and the field or tensor (or the name)
and the fix; none builds a network the config describes before the config and the weights'
header have been checked, so a config asking for terabytes fails at once.
"""
from __future__ import annotations

import copy
import json
import socket

import numpy as np
import pytest
import torch
from helpers import TINY_VIT_CONFIG, make_open_clip
from safetensors.torch import load_file, save_file

from eclip.errors import ModelLoadError
from eclip.models.folder import save_model_folder
from eclip.models.loading import check_model_name, load_model


def one_line_error(name: str, pretrained: str | None = None) -> str:
    with pytest.raises(ModelLoadError) as caught:
        load_model(name, pretrained)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    return message


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A loadable tiny ViT folder and its state dict, made once."""
    folder = save_model_folder(tmp_path_factory.mktemp("models") / "tiny", make_open_clip("vit"), TINY_VIT_CONFIG)
    return folder, load_file(str(folder / "model.safetensors"))


def folder_with(tmp_path, tiny, edit=None, state=None, raw_config=None):
    """The tiny folder copied under tmp_path with its config edited (a function of a copy) or replaced, or other weights."""
    folder, weights = tiny
    out = tmp_path / "model"
    out.mkdir()
    config = json.loads((folder / "config.json").read_text())
    if edit is not None:
        edit(config)
    (out / "config.json").write_text(raw_config if raw_config is not None else json.dumps(config))
    save_file(state if state is not None else weights, str(out / "model.safetensors"))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Names


def test_a_mistyped_name_gets_the_closest_model():
    assert "unknown model 'synth-vit-eclipse'; did you mean synth-vit-eclip?" in one_line_error("synth-vit-eclipse")
    assert "unknown model 'vit-b-16'; did you mean ViT-B-16?" in one_line_error("vit-b-16")
    message = one_line_error("banana-model")
    assert "unknown model 'banana-model'; use a bundled name (synth-vit" in message and "did you mean" not in message


def test_a_path_that_is_not_there_is_no_such_folder(tmp_path):
    for name in (str(tmp_path / "runs" / "model"), "./nowhere", "~/no-such-eclip-model"):
        message = one_line_error(name)
        assert message.startswith(f"{name}: no such folder"), message
    check_model_name("ViT-B/16")  # open_clip reads this spelling as ViT-B-16: a name, not a path


def test_pretrained_tags_and_files_are_checked_before_any_download(tmp_path):
    assert "unknown pretrained tag opneai for ViT-B-16; did you mean openai?" in one_line_error("ViT-B-16", "opneai")
    assert f"checkpoint file {tmp_path / 'x.pt'} does not exist" in one_line_error("ViT-B-16", str(tmp_path / "x.pt"))


# ----------------------------------------------------------------------------------------------------------------
# Model folders: config values before any module is built


def _set(path: str, value):
    def edit(config):
        *parents, key = path.split(".")
        section = config
        for part in parents:
            section = section[part]
        section[key] = value
    return edit


@pytest.mark.parametrize("field, value, says", [
    ("open_clip.vision_cfg.width", 10**6, "open_clip.vision_cfg.width is 1000000, outside 1..16384"),
    ("open_clip.vision_cfg.layers", 10**4, "open_clip.vision_cfg.layers is 10000, outside 1..256"),
    ("open_clip.vision_cfg.layers", [1, 1, 1], "open_clip.vision_cfg.layers is [1, 1, 1], not four whole numbers"),
    ("open_clip.vision_cfg.patch_size", -8, "open_clip.vision_cfg.patch_size is -8, outside 1..4096"),
    ("open_clip.vision_cfg.patch_size", 64, "open_clip.vision_cfg.patch_size is 64, larger than the image (32)"),
    ("open_clip.vision_cfg.head_width", 48, "open_clip.vision_cfg.head_width does not split the attention width 32"),
    ("open_clip.vision_cfg.image_size", "big", "open_clip.vision_cfg.image_size is 'big', not a whole number"),
    ("open_clip.text_cfg.heads", 3, "open_clip.text_cfg.heads does not split the attention width 32"),
    ("open_clip.text_cfg.layers", True, "open_clip.text_cfg.layers is True, not a whole number"),
    ("open_clip.text_cfg.hf_model_name", "bert-base", "open_clip.text_cfg.hf_model_name names a tower from another library"),
    ("open_clip.embed_dim", 0, "open_clip.embed_dim is 0, outside 1..16384"),
    ("open_clip.vision_cfg", [], "open_clip.vision_cfg is a list, not an object"),
    ("preprocess.image_size", 0, "preprocess.image_size is 0, outside 1..4096"),
    ("preprocess.std", [0.25, 0.0, 0.25], "preprocess.std is [0.25, 0.0, 0.25], and every value must be above 0"),
    ("preprocess.mean", [0.5, float("nan"), 0.5], "preprocess.mean is [0.5, nan, 0.5], not three finite numbers"),
    ("preprocess", "fast", "preprocess is a str, not an object"),
])
def test_config_values_are_checked_before_anything_is_built(tmp_path, tiny, field, value, says):
    folder = folder_with(tmp_path, tiny, edit=_set(field, value))
    message = one_line_error(str(folder))
    assert message.startswith(f"{folder / 'config.json'}: ") and says in message, message


def test_a_pooling_head_that_does_not_exist_names_the_folder_and_its_config(tmp_path, tiny):
    folder = folder_with(tmp_path, tiny, edit=_set("pooling", {"head": "banana"}))
    message = one_line_error(str(folder))
    assert message.startswith(f"{folder}: pooling: ") and "'banana' is unknown" in message and "config.json" in message, message


@pytest.mark.parametrize("raw, says", [("[1, 2]", "is a JSON list, not an object"), ("{oops", "unreadable model config")])
def test_a_config_that_is_no_object_is_one_line(tmp_path, tiny, raw, says):
    folder = folder_with(tmp_path, tiny, raw_config=raw)
    assert says in one_line_error(str(folder))


def test_a_config_missing_its_sections_names_them(tmp_path, tiny):
    folder = folder_with(tmp_path, tiny, edit=lambda c: c["open_clip"].pop("text_cfg"))
    assert "open_clip.text_cfg is missing" in one_line_error(str(folder))


def test_a_hugging_face_folder_config_is_checked_before_transformers_builds_it(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip", "vision_config": {"num_hidden_layers": 10**4}}))
    assert "vision_config.num_hidden_layers is 10000, outside 1..256" in one_line_error(str(folder))


# ----------------------------------------------------------------------------------------------------------------
# Model folders: weights' shapes from the header before allocation, then their values


def test_shapes_are_compared_from_the_header_before_the_network_is_built(tmp_path, tiny):
    """A config inside every range whose network would take 9.7 GB (width 2048, 48 layers), over the tiny weights:
    refused from the safetensors header, with no attempt to build that network."""
    big = _set("open_clip.vision_cfg", {"image_size": 32, "patch_size": 8, "width": 2048, "layers": 48, "head_width": 64})
    folder = folder_with(tmp_path, tiny, edit=big)
    message = one_line_error(str(folder))
    assert message.startswith(f"{folder / 'model.safetensors'}: ") and "come from different models" in message, message


def test_a_tensor_of_the_wrong_shape_is_named(tmp_path, tiny):
    state = dict(tiny[1])
    state["visual.proj"] = torch.zeros(32, 7)
    message = one_line_error(str(folder_with(tmp_path, tiny, state=state)))
    assert "tensor visual.proj has shape [32, 7] where" in message and "makes [32, 24]" in message, message


@pytest.mark.parametrize("value, says", [(float("nan"), "holds 1 NaN or infinite value(s)"), (float("inf"), "holds 1 NaN")])
def test_non_finite_weights_are_refused_with_the_tensor_name(tmp_path, tiny, value, says):
    state = {k: v.clone() for k, v in tiny[1].items()}
    state["visual.proj"][3, 5] = value
    folder = folder_with(tmp_path, tiny, state=state)
    message = one_line_error(str(folder))
    assert message.startswith(f"{folder / 'model.safetensors'}: tensor visual.proj {says}"), message


def test_integer_weights_are_refused_with_the_tensor_name(tmp_path, tiny):
    state = dict(tiny[1])
    state["text_projection"] = torch.ones_like(state["text_projection"], dtype=torch.int32)
    message = one_line_error(str(folder_with(tmp_path, tiny, state=state)))
    assert "tensor text_projection is I32, not floating point" in message, message


def test_a_checked_folder_still_loads_and_half_weights_come_back_as_float32(tmp_path, tiny):
    folder = save_model_folder(tmp_path / "half", make_open_clip("vit"), copy.deepcopy(TINY_VIT_CONFIG), half=True)
    adapter = load_model(str(folder))
    assert all(p.dtype == torch.float32 for p in adapter.model.parameters())
    assert np.allclose(adapter.model.visual.proj.detach().numpy(), tiny[1]["visual.proj"].half().float().numpy())


# ----------------------------------------------------------------------------------------------------------------
# Real weights with the hub out of reach: the cache first, then one line at once


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """huggingface_hub pointed at a closed port on this machine and an empty cache of its own."""
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nothing listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hub"


def _no_download(monkeypatch):
    import open_clip

    def refuse(*args, **kwargs):
        raise AssertionError("open_clip was asked to load although the weights cannot be fetched")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)


def test_an_unreachable_hub_is_one_line_at_once_with_what_to_do(offline_hub, monkeypatch, caplog):
    _no_download(monkeypatch)
    message = one_line_error("ViT-B-16", "openai")
    assert message.startswith("ViT-B-16 with pretrained=openai: timm/vit_base_patch16_clip_224.openai/open_clip_model.safetensors "
                              "is not in the local cache and http://127.0.0.1:"), message
    assert "cannot be reached (Connection refused; offline?)" in message
    for fix in ("pretrained=FILE", "model=FOLDER (a local Hugging Face CLIP folder)", "HF_HUB_OFFLINE=1"):
        assert fix in message, (fix, message)
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")]  # no retry, no warning


def test_hf_hub_offline_without_the_files_says_so(offline_hub, monkeypatch):
    from huggingface_hub import constants

    _no_download(monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert "is not in the local cache and HF_HUB_OFFLINE is set" in one_line_error("RN50", "openai")
    assert "hf-hub:org/nothing: org/nothing/open_clip_config.json is not in the local cache" in one_line_error("hf-hub:org/nothing")


def test_cached_weights_load_without_the_network(offline_hub, monkeypatch):
    """With every file in the cache, open_clip runs with huggingface_hub offline and gets the cached file; the switch is restored."""
    import open_clip
    from huggingface_hub import constants, hf_hub_download

    snapshot = offline_hub / "models--timm--vit_base_patch16_clip_224.openai" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"cached weights")
    (offline_hub / "models--timm--vit_base_patch16_clip_224.openai" / "refs").mkdir()
    (offline_hub / "models--timm--vit_base_patch16_clip_224.openai" / "refs" / "main").write_text("0123abc")
    seen = {}

    def from_cache(name, pretrained, device):
        seen["offline"] = constants.is_offline_mode()
        seen["file"] = hf_hub_download("timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors")
        raise RuntimeError("stop here: the weights are not real")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", from_cache)
    assert "stop here" in one_line_error("ViT-B-16", "openai")
    assert seen == {"offline": True, "file": str(snapshot / "open_clip_model.safetensors")}
    assert constants.HF_HUB_OFFLINE is False


@pytest.mark.slow
def test_the_command_line_says_offline_in_one_line_with_its_options(tmp_path):
    """`eclip explain --model ViT-B-16 --pretrained openai` with the hub out of reach: one line naming the options, no retries."""
    import os
    import subprocess
    import sys

    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "img.png")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("ECLIP_DEBUG", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run([sys.executable, "-m", "eclip.cli", "explain", "img.png", "--text", "a", "--model", "ViT-B-16",
                           "--pretrained", "openai"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    message = done.stderr.strip()
    assert done.returncode == 2 and len(message.splitlines()) == 1, done.stderr[-2000:]
    assert message.startswith("eclip: error: ViT-B-16 with --pretrained openai: ") and "offline?" in message, message
    for fix in ("--pretrained FILE", "--model FOLDER", "HF_HUB_OFFLINE=1"):
        assert fix in message, (fix, message)
