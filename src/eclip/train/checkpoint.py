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
    check_state_fields(state, path)
    return state


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tensors(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _python_rng(value: Any) -> bool:
    """`random.getstate()`: (version, a tuple of 625 ints, None or a float)."""
    return (isinstance(value, tuple) and len(value) == 3 and _is_int(value[0]) and isinstance(value[1], tuple)
            and all(_is_int(v) for v in value[1]) and (value[2] is None or isinstance(value[2], float)))


def _numpy_rng(value: Any) -> bool:
    """`np.random.get_state()`: ('MT19937', 624 uint32 keys, position, has_gauss, cached_gaussian)."""
    return (isinstance(value, tuple) and len(value) == 5 and value[0] == "MT19937" and isinstance(value[1], np.ndarray)
            and value[1].shape == (624,) and _is_int(value[2]) and _is_int(value[3]) and _is_number(value[4]))


def _optimizer(value: Any) -> bool:
    """A torch optimiser's `state_dict()`: {"state": {index: {name: tensor or number}}, "param_groups": [{"params": [index],
    "lr": x, ...}]}."""
    if not (isinstance(value, dict) and isinstance(value.get("state"), dict) and isinstance(value.get("param_groups"), list)):
        return False
    per_parameter = all(_is_int(k) and isinstance(v, dict) and all(isinstance(x, torch.Tensor) or _is_number(x) for x in v.values())
                        for k, v in value["state"].items())
    return per_parameter and all(isinstance(g, dict) and isinstance(g.get("params"), list) and all(_is_int(p) for p in g["params"])
                                 and _is_number(g.get("lr")) for g in value["param_groups"])


def _data_position(value: Any) -> bool:
    """Where a stream of shards resumes (`eclip.data.loader.TrainingFeed.state`): {} or the layout and per-stream positions."""
    if not isinstance(value, dict):
        return False
    if not value:
        return True
    positions = value.get("positions")
    return (_is_int(value.get("world")) and _is_int(value.get("workers")) and isinstance(positions, dict)
            and all(isinstance(k, str) and isinstance(p, list) and len(p) == 2 and all(_is_int(x) and x >= 0 for x in p)
                    for k, p in positions.items()))


#: Each field a training state's header holds -> (what it must be, the check). Every field read back is checked here,
#: so a file edited by hand or by a hostile party is one line naming the field, never a failure deep in torch.
_FIELDS = {
    "step": ("a whole number >= 0", lambda v: _is_int(v) and v >= 0),
    "losses": ("a list of numbers", lambda v: isinstance(v, list) and all(_is_number(x) for x in v)),
    "run": ("an object (the run's options)", lambda v: isinstance(v, dict)),
    "model": ("an object of named tensors", _tensors),
    "optimizer": ("an optimiser state: `state` (per parameter, named tensors and numbers) and `param_groups` (objects with "
                  "`params`, whole numbers, and `lr`, a number)", _optimizer),
    "scheduler": ("a schedule state: an object with `last_epoch` (a whole number)",
                  lambda v: isinstance(v, dict) and _is_int(v.get("last_epoch"))),
    "rng": ("the RNG states: `torch` (a uint8 tensor), `numpy` (an MT19937 state), `python` (random.getstate())",
            lambda v: isinstance(v, dict) and isinstance(v.get("torch"), torch.Tensor) and v["torch"].dtype == torch.uint8
            and _numpy_rng(v.get("numpy")) and _python_rng(v.get("python"))),
    "data": ("where the data resumes: {} or `world`, `workers` and `positions` (stream -> [epoch, shard])", _data_position),
    "scaler": ("a loss scaler's state: named numbers", lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values())),
}
#: Fields that states written by earlier versions lack; a state without them resumes as before.
_OPTIONAL = ("run", "data", "scaler")


def check_state_fields(state: dict[str, Any], path: Path) -> None:
    """Every field of a loaded training state has the type it was saved with (`CheckpointError` naming the first that has not).

    The fields of `_OPTIONAL` may be missing (states of earlier versions); every other field must be there.
    """
    for field, (wanted, check) in _FIELDS.items():
        if field in _OPTIONAL and field not in state:
            continue
        if field not in state:
            raise CheckpointError(f"{path}: the training state has no `{field}`; delete it to start over, or point `out` elsewhere")
        if not check(state[field]):
            got = type(state[field]).__name__
            raise CheckpointError(f"{path}: field `{field}` of the training state is a {got}, not {wanted}; the file was "
                                  "changed or is not eclip's: delete it to start over, or point `out` elsewhere")


def check_run_folder(folder: Path, resume: bool) -> None:
    """Refuse to start a new run in a folder that holds one, and to resume where there is nothing to resume, reading nothing.

    With `resume` the folder's state is loaded later (`load_state`); a folder with a model but no
    state is refused (resuming would start over and overwrite that model), and a missing or empty
    folder starts a new run (so a job that always passes `resume` can be rerun as it is). Without
    `resume`, the names of the files a run writes are enough to say no before anything is opened
    or overwritten.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    if resume:
        if (folder / STATE_NAME).exists():
            return
        if (folder / LEGACY_STATE_NAME).exists():
            raise CheckpointError(_LEGACY.format(path=folder / LEGACY_STATE_NAME))
        model = [name for name in ("config.json", "model.safetensors") if (folder / name).exists()]
        if model:  # a finished model without its state: resuming would train from scratch over it
            raise CheckpointError(f"nothing to resume in `out` {folder}: it holds a model ({', '.join(model)}) but no training "
                                  f"state ({STATE_NAME}); to fine-tune that model, start from it and write to another `out`")
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
