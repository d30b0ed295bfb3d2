"""A training state as tensors plus JSON: the format `eclip.train.checkpoint` stores, which carries no code.

An optimiser state or an RNG state is a tree of dicts (some with integer keys), lists, tuples,
numbers, strings, tensors and numpy arrays. `split_tensors` takes the tensors and arrays out (to
be stored as safetensors) and leaves a JSON-able tree with a reference in each place;
`join_tensors` puts them back. Tuples, non-string keys and numpy dtypes are spelled out, so the
round trip gives the same types (an optimiser's `load_state_dict` and `np.random.set_state` need
them). Integer numpy arrays are stored as int64 (safetensors has no uint32); the values of an RNG
state (uint32) fit.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def split_tensors(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """A JSON-able copy of `value` in which each tensor (or numpy array) is a reference into `tensors`."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(value.astype(np.int64) if value.dtype.kind in "ui" else np.ascontiguousarray(value))
        return {"__ndarray__": path, "dtype": value.dtype.str}
    if isinstance(value, tuple):
        return {"__tuple__": [split_tensors(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [split_tensors(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: split_tensors(v, tensors, f"{path}/{k}") for k, v in value.items()}
        return {"__items__": [[split_tensors(k, tensors, f"{path}/key{i}"), split_tensors(v, tensors, f"{path}/{i}")]
                              for i, (k, v) in enumerate(value.items())]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"training state value of type {type(value).__name__} at {path!r} cannot be stored")


def join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `split_tensors`: the tree with each reference replaced by its tensor (or numpy array)."""
    if isinstance(value, list):
        return [join_tensors(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy().astype(np.dtype(value["dtype"]))
    if "__tuple__" in value:
        return tuple(join_tensors(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {join_tensors(k, tensors): join_tensors(v, tensors) for k, v in value["__items__"]}
    return {k: join_tensors(v, tensors) for k, v in value.items()}
