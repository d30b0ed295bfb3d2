"""Training checkpoints that load without running code, written atomically, resumed exactly.

A training state is stored in one file, `train_state.safetensors`: every tensor (model weights,
optimiser moments, the torch RNG state) as safetensors, and everything else (step, losses, the
schedule, the optimiser's hyper-parameters, Python's and numpy's RNG states, the options of the
run) as JSON in the file's metadata header. Neither format can carry code, so resuming from a
folder someone else filled is as safe as reading an image. Earlier versions wrote a torch pickle,
`train_state.pt`, which runs whatever code it holds when loaded: eclip never opens one.

The file is written under a temporary name and renamed (`eclip.writing.atomic_write`), so a run
killed at any moment leaves the previous checkpoint or the new one, never a broken file; the
hidden temporary file a kill can leave is swept at the next start and at the end. The model is
also exported as an eclip model folder next to it, so a partial run already loads by path.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eclip.errors import CheckpointError
from eclip.train.state_codec import join_tensors, split_tensors
from eclip.writing import atomic_write

STATE_NAME = "train_state.safetensors"
LEGACY_STATE_NAME = "train_state.pt"
#: What a training run writes into its --out folder (`remove_stale_temps` sweeps their temporary files).
RUN_FILES = (STATE_NAME, "config.json", "model.safetensors", "losses.json")
_LEGACY = ("{path}: a training state in the pickle format of earlier eclip versions, which can run code when loaded, "
           "so it is not opened; start over in another `out` folder (or delete the file)")
_META_KEY = "eclip_train_state"
_FORMAT = "eclip-train-state/1"


def save_state(folder: Path, state: dict[str, Any]) -> Path:
    """Write a training state (plus the RNG states) atomically into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tree = split_tensors({**state, "rng": rng_state()}, tensors, "state")
    metadata = {_META_KEY: json.dumps({"format": _FORMAT, "state": tree})}
    return atomic_write(folder / STATE_NAME, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_state(folder: Path) -> dict[str, Any] | None:
    """The training state in `folder`, or None if there is none; a corrupt or foreign file is a clear error."""
    from safetensors import safe_open

    folder = Path(folder)
    path = folder / STATE_NAME
    if not path.exists():
        if (folder / LEGACY_STATE_NAME).exists():
            raise CheckpointError(_LEGACY.format(path=folder / LEGACY_STATE_NAME))
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
        saved = json.loads(metadata[_META_KEY])
        if saved.get("format") != _FORMAT:
            raise ValueError(f"format {saved.get('format')!r}")
        state = join_tensors(saved["state"], tensors)
    except Exception as err:  # safetensors and json raise several types for a truncated or foreign file
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise CheckpointError(
            f"{path}: unreadable training state ({reason}); delete it to start over, or point `out` elsewhere") from err
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"{path}: not an eclip training state; delete it or choose another `out`")
    return state


def check_run_folder(folder: Path, resume: bool) -> None:
    """Refuse to start a new run in a folder that holds one, reading nothing from it.

    With `resume` the folder's state is loaded later (`load_state`); without it, the names of
    the files a run writes are enough to say no before anything is opened or overwritten.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    if resume:
        if (folder / LEGACY_STATE_NAME).exists() and not (folder / STATE_NAME).exists():
            raise CheckpointError(_LEGACY.format(path=folder / LEGACY_STATE_NAME))
        return
    present = [name for name in (STATE_NAME, LEGACY_STATE_NAME, "config.json", "model.safetensors") if (folder / name).exists()]
    if present:
        raise CheckpointError(f"`out` {folder} already holds a training run or model ({', '.join(present)}); "
                              "continue it with `resume`, or choose another `out`")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: each option of a run under one name."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def check_same_run(folder: Path, saved: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """Refuse to resume with options other than the run's: the optimiser and schedule would not match them."""
    if saved is None:
        return
    then, now = _flat(saved), _flat(json.loads(json.dumps(current)))
    differ = [k for k in dict.fromkeys([*then, *now]) if then.get(k) != now.get(k)]
    if differ:
        detail = ", ".join(f"{k} {then.get(k)!r} then, {now.get(k)!r} now" for k in differ[:4])
        raise CheckpointError(f"`out` {folder}: the run was started with other options ({detail}); "
                              "resume with the same options, or start a new run in another `out`")


def rng_state() -> dict[str, Any]:
    """The states of every RNG training uses, so a resumed run draws the same numbers."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
