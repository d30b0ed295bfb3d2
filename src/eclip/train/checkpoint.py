"""Training checkpoints: written atomically, resumed exactly.

A training state (`train_state.pt`) holds the model, optimiser, scheduler, step and RNG states;
it is written to a temporary file and renamed, so a run killed at any moment leaves either the
previous checkpoint or the new one, never a broken file. The model itself is also exported as an
eclip model folder next to it, so a partial run already loads by path like any model.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eclip.errors import CheckpointError
from eclip.models.folder import atomic_write

STATE_NAME = "train_state.pt"


def save_state(folder: Path, state: dict[str, Any]) -> Path:
    """Write a training state atomically into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {**state, "rng": rng_state()}
    target = folder / STATE_NAME
    atomic_write(target, lambda tmp: torch.save(state, tmp))
    return target


def load_state(folder: Path) -> dict[str, Any] | None:
    """The training state in `folder`, or None if there is none; a corrupt one is a clear error."""
    path = Path(folder) / STATE_NAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"{path}: unreadable training state ({err}); delete it to start over, or point --out elsewhere"
        ) from err
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"{path}: not an eclip training state; delete it or choose another --out")
    return state


def rng_state() -> dict[str, Any]:
    """The states of every RNG training uses, so a resumed run draws the same numbers."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
