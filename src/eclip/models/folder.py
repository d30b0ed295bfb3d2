"""The eclip model folder: `config.json` + `model.safetensors`, the format every eclip model ships in.

A folder, not a pickle: safetensors cannot run code when opened, the JSON says how to rebuild
the network (an open_clip CLIP config), how to preprocess, which pooling head the model uses
(ECLIP's masked max pooling or the original), and how it was made.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from eclip.errors import ModelLoadError
from eclip.writing import atomic_write, atomic_write_text

FORMAT = "eclip-model/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def is_model_folder(path: Path) -> bool:
    """True if `path` is a folder with an eclip config (not a Hugging Face one)."""
    config = path / CONFIG_NAME
    if not (path.is_dir() and config.is_file()):
        return False
    try:
        return json.loads(config.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def build_open_clip(config: dict[str, Any]) -> torch.nn.Module:
    """An open_clip CLIP (random weights) from the `open_clip` section of a config."""
    from open_clip.model import CLIP

    try:
        return CLIP(**config["open_clip"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"model config does not describe an open_clip CLIP ({err}); check its 'open_clip' section") from err


def save_model_folder(path: Path, model: torch.nn.Module, config: dict[str, Any], half: bool = False) -> Path:
    """Write `model`'s weights and `config` into the folder `path`.

    Each file is written to a temporary name and renamed into place (weights first, config
    last), so a crash never leaves a truncated file, and other files in the folder (a training
    state, a recipe) are left alone. `half` stores floats as float16 (bundled models: half the size).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp)))
    text = json.dumps({**config, "format": FORMAT}, indent=2)
    atomic_write_text(path / CONFIG_NAME, text)
    return path


def load_model_folder(path: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network of an eclip model folder and load its weights (as float32)."""
    path = Path(path)
    try:
        config = json.loads((path / CONFIG_NAME).read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path / CONFIG_NAME}: unreadable model config ({err}); re-export the model folder") from err
    model = build_open_clip(config)
    weights = path / WEIGHTS_NAME
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises several types for a truncated or foreign file
        raise ModelLoadError(f"{weights}: not a readable safetensors file ({err}); re-export or re-download it") from err
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor whose shape differs from the config's: another architecture
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err).splitlines()[0])
        raise ModelLoadError(
            f"{weights}: weights do not fit {path / CONFIG_NAME} ({first[:160]}); "
            "the folder's config.json and model.safetensors come from different models: re-export the folder") from err
    if missing or unexpected:
        raise ModelLoadError(
            f"{weights}: weights do not fit the config (missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}); "
            "the folder's config.json and model.safetensors come from different models"
        )
    return model.to(device).eval(), config


def architecture_config(name_or_path: str) -> dict[str, Any]:
    """A model config to train from scratch: a name under `eclip/models/configs/` or a JSON file."""
    from importlib import resources

    path = Path(name_or_path)
    if not path.is_file():
        path = Path(str(resources.files("eclip") / "models" / "configs" / f"{name_or_path}.json"))
    if not path.is_file():
        names = sorted(p.name[:-5] for p in (resources.files("eclip") / "models" / "configs").iterdir() if p.name.endswith(".json"))
        raise ModelLoadError(f"unknown model config '{name_or_path}'; use one of {', '.join(names)} or a JSON file path")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ModelLoadError(f"{path}: not valid JSON ({err})") from err
