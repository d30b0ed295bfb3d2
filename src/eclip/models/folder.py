"""The eclip model folder: `config.json` + `model.safetensors`, the format every eclip model ships in.

A folder, not a pickle: safetensors cannot run code when opened, the JSON says how to rebuild
the network (an open_clip CLIP config), how to preprocess, which pooling head the model uses
(ECLIP's masked max pooling or the original), and how it was made. Loading checks the config's
values, then the weights' shapes from the file's header, then their values, before the network
is built (`validation`).
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eclip.errors import ModelLoadError
from eclip.models.validation import check_config, check_header, check_values, expected_tensors
from eclip.writing import atomic_write, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORMAT = "eclip-model/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def read_config(path: Path) -> object:
    """The JSON value of the config file `path` (any JSON value: callers check it), or `ModelLoadError` naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelLoadError(f"{path}: unreadable model config ({err}); repair it or re-export the model folder") from err


def is_model_folder(path: Path) -> bool:
    """True if `path` is a folder with an eclip config (not a Hugging Face one)."""
    config = path / CONFIG_NAME
    if not (path.is_dir() and config.is_file()):
        return False
    try:
        data = read_config(config)
    except ModelLoadError:
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def build_open_clip(config: dict[str, Any], source: Path | str = "the model config") -> torch.nn.Module:
    """An open_clip CLIP (random weights) from the `open_clip` section of a config checked by `validation.check_config`."""
    from open_clip.model import CLIP

    try:
        return CLIP(**config["open_clip"])
    except (KeyError, TypeError, ValueError, AssertionError) as err:
        raise ModelLoadError(f"{source}: does not describe an open_clip CLIP ({err}); check its 'open_clip' section") from err


def save_model_folder(path: Path, model: torch.nn.Module, config: dict[str, Any], half: bool = False) -> Path:
    """Write `model`'s weights and `config` into the folder `path`.

    Each file is written to a temporary name and renamed into place (weights first, config
    last), so a crash never leaves a truncated file, and other files in the folder (a training
    state, a recipe) are left alone. `half` stores floats as float16 (bundled models: half the size).
    """
    from safetensors.torch import save_file

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
    """Rebuild the network of an eclip model folder and load its weights (as float32), each step checked first.

    The config's values, then the weights' names, shapes and dtypes (from the safetensors header)
    against the network the config makes (built on the meta device: no memory), then the weights'
    values; only then is the network built. Each failure is one `ModelLoadError` naming the file
    and the field or tensor.
    """
    from safetensors.torch import load_file

    path = Path(path)
    config_path, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
    config = check_config(read_config(config_path), config_path)
    check_header(weights, expected_tensors(lambda: build_open_clip(config, config_path)), config_path)
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises several types for a truncated or foreign file
        raise ModelLoadError(f"{weights}: not a readable safetensors file ({err}); re-export or re-download it") from err
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    check_values(state, weights)
    model = build_open_clip(config, config_path)
    model.load_state_dict(state)
    return model.to(device).eval(), config


def architecture_config(name_or_path: str) -> dict[str, Any]:
    """A model config to train from scratch: a name under `eclip/models/configs/` or a JSON file."""
    from importlib import resources

    path = Path(name_or_path)
    if not path.is_file():
        path = Path(str(resources.files("eclip") / "models" / "configs" / f"{name_or_path}.json"))
    if not path.is_file():
        names = sorted(p.name[:-5] for p in (resources.files("eclip") / "models" / "configs").iterdir() if p.name.endswith(".json"))
        close = difflib.get_close_matches(name_or_path, names, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ModelLoadError(f"unknown model config '{name_or_path}'; {hint}use one of {', '.join(names)} or a JSON file path")
    return check_config(read_config(path), path)
