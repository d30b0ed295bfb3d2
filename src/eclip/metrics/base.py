"""Streaming metrics: state that is a handful of sums, so any split of the data adds up to one pass.

Shape follows torchmetrics' `Metric` (update / compute / reset) and Quantus' declared score
direction. Every state is a float64 tensor of sums and counts, never a list that grows with the
data: memory is bounded whatever the dataset size, `merge` of two metrics that saw two halves
of the data equals one metric that saw all of it, and `all_reduce` does the same across
`torch.distributed` processes (one rank per shard, `torchrun`). `state()` / `load_state()` make
a metric resumable from a JSON file.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch


class Metric(ABC):
    """A streaming metric whose whole state is a dict of float64 tensors that reduce by addition.

    Subclasses call `super().__init__()`, then `add_state` for each sum they keep, and implement
    `update` and `compute`. `directions` declares, for each number of `compute()` that has one,
    whether higher is better (reports and figures read it from here); `higher_is_better` is that
    of the headline number, the first of `directions` (None: neither, e.g. a count).
    """

    directions: ClassVar[dict[str, bool]] = {}
    higher_is_better: ClassVar[bool | None] = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "directions" in cls.__dict__:
            cls.higher_is_better = next(iter(cls.directions.values()), None)

    def __init__(self) -> None:
        self._defaults: dict[str, torch.Tensor] = {}
        self._state: dict[str, torch.Tensor] = {}

    def add_state(self, name: str, default: torch.Tensor | float) -> None:
        """Declare a summed state `name` starting at `default` (kept on the CPU as float64)."""
        value = torch.as_tensor(default, dtype=torch.float64).clone()
        self._defaults[name] = value
        self._state[name] = value.clone()

    def __getattr__(self, name: str) -> torch.Tensor:
        state = self.__dict__.get("_state")
        if state is not None and name in state:
            return state[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def _add(self, name: str, value: torch.Tensor | float) -> None:
        self._state[name] += torch.as_tensor(value, dtype=torch.float64).detach().cpu()

    def reset(self) -> None:
        """Forget everything seen: back to the declared defaults."""
        self._state = {name: value.clone() for name, value in self._defaults.items()}

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of the state (name -> float64 tensor)."""
        return {name: value.clone() for name, value in self._state.items()}

    def load_state(self, state: dict[str, torch.Tensor | list | float]) -> None:
        """Replace the state by `state` (as `state()` or `to_json()` gave it); shapes must match."""
        for name, default in self._defaults.items():
            if name not in state:
                raise ValueError(f"{type(self).__name__}: saved state lacks {name!r}")
            value = torch.as_tensor(state[name], dtype=torch.float64).clone()
            if value.shape != default.shape:
                raise ValueError(f"{type(self).__name__}: saved {name!r} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(default.shape)} (was it saved with other options?)")
            self._state[name] = value

    def to_json(self) -> dict[str, float | list]:
        """The state as plain JSON values (Python floats round-trip float64 exactly)."""
        return {name: value.tolist() for name, value in self._state.items()}

    def merge(self, other: Metric) -> Metric:
        """Add `other`'s state (the same metric with the same options, fed other data) into this one."""
        if type(other) is not type(self) or other._state.keys() != self._state.keys():
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for name, value in other._state.items():
            self._state[name] = self._state[name] + value
        return self

    def all_reduce(self, group=None) -> Metric:
        """Sum the state over all processes of `torch.distributed` (a no-op when it is not initialised)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")
        for name, value in self._state.items():
            buffer = value.to(device)
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
            self._state[name] = buffer.cpu()
        return self

    @abstractmethod
    def update(self, *args, **kwargs) -> None:
        """Add a batch of observations to the state."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric's numbers from the state so far (NaN when nothing was seen)."""


class PairMetric(Metric):
    """A metric of (image, class) pairs: maps (N, H, W) in [0, 1], class masks (N, H, W), ignored pixels.

    `update` checks and batches the pairs (`pair_tensors`), drops the degenerate ones
    (`keep_defined`, counted in `degenerate`) and hands the rest to `update_defined`, which
    subclasses implement. Callers that feed several pair metrics the same pairs check them once
    and call `update_defined` on each (as `eclip.evaluation.suite.MetricSuite` does).
    """

    def __init__(self) -> None:
        super().__init__()
        self.add_state("count", 0.0)
        self.add_state("degenerate", 0.0)

    def update(self, maps, masks, ignore=None) -> None:
        """Add pairs: maps (N, H, W) or (H, W) in [0, 1], masks the same shape (bool), ignore (H, W) / (N, H, W) bool or None."""
        self.update_defined(*keep_defined(*pair_tensors(maps, masks, ignore)))

    def update_defined(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None, dropped: int = 0) -> None:
        """Add checked pairs (the output of `keep_defined`): maps (N, H, W) float, masks (N, H, W) bool, valid the same or None (all)."""
        self._add("degenerate", dropped)
        if maps.shape[0]:
            self._update(maps, masks, valid)
            self._add("count", maps.shape[0])

    @abstractmethod
    def _update(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None) -> None:
        """Add N >= 1 defined pairs to the sums (`count` and `degenerate` are kept by the base); valid None: every pixel."""


def as_tensor(x: torch.Tensor | np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A CPU tensor from a tensor or numpy array (no copy when possible)."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    t = t.detach().cpu()
    return t if dtype is None else t.to(dtype)


def pair_tensors(
    maps: torch.Tensor | np.ndarray,
    masks: torch.Tensor | np.ndarray,
    ignore: torch.Tensor | np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check and batch (image, class) pairs: -> maps (N, H, W) float32, masks (N, H, W) bool, valid (N, H, W) bool or None.

    Args:
        maps: (N, H, W) or one (H, W) map, values in [0, 1].
        masks: the class masks, same shape, bool.
        ignore: pixels no metric may count (VOC's 255 border): (H, W) shared by all pairs, or
            (N, H, W), or None.
    `valid` is None when nothing is ignored (the metrics then skip the masking work).
    Pairs that are degenerate (no valid pixel of the class, or no valid background pixel) have
    no defined contrast or IoU; `keep_defined` drops them.
    """
    maps = as_tensor(maps, torch.float32)
    masks = as_tensor(masks).bool()
    if maps.dim() == 2:
        maps, masks = maps[None], masks[None]
    if maps.shape != masks.shape or maps.dim() != 3:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} must both be (N, H, W)")
    if ignore is None:
        return maps, masks, None
    ignore = as_tensor(ignore).bool()
    if ignore.dim() == 2:
        ignore = ignore[None]
    if ignore.dim() != 3 or ignore.shape[1:] != maps.shape[1:] or ignore.shape[0] not in (1, maps.shape[0]):
        raise ValueError(f"ignore {tuple(ignore.shape)} must be (H, W) or (N, H, W) of maps {tuple(maps.shape)}")
    valid = (~ignore).expand_as(masks)
    return maps, masks, valid


def defined_pairs(masks: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(N,) bool: the pairs with at least one valid pixel of the class and one valid background pixel."""
    if valid is None:
        flat = masks.flatten(1)
        return flat.any(1) & ~flat.all(1)
    return (masks & valid).flatten(1).any(1) & (~masks & valid).flatten(1).any(1)


def keep_defined(
    maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """Drop the pairs without a valid foreground or background pixel: -> maps, masks, valid, number dropped."""
    keep = defined_pairs(masks, valid)
    dropped = int((~keep).sum())
    if dropped:
        maps, masks, valid = maps[keep], masks[keep], None if valid is None else valid[keep]
    return maps, masks, valid, dropped


def nan_if_empty(total: torch.Tensor, count: torch.Tensor) -> float:
    """total / count as a float, NaN when count is 0 (nothing seen: no number, not zero)."""
    return float(total / count) if float(count) > 0 else float("nan")
