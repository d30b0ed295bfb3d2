"""Numeric precision of a forward (and backward) pass: fp32, or bf16 / fp16 autocast.

Mixed precision is how CLIPs are trained and run at scale: open_clip's trainer defaults to
autocast (`--precision amp`), and on a GPU with tensor cores a bf16 matmul runs many times faster
than an fp32 one and its activations take half the memory. Autocast keeps the weights (and the
optimiser state) in float32 and runs each eligible op in the lower precision; reductions that
need range (softmax, norms, losses) stay in float32 (Micikevicius et al. 2018, arXiv 1710.03740).
fp16 has a narrow exponent range, so its gradients are scaled by a `torch.amp.GradScaler`; bf16
has float32's range and needs none.

The one vocabulary for every verb (`--precision fp32|bf16|fp16`): `autocast(precision, device)`
is the context a pass runs in, `grad_scaler` the scaler training needs, and `resolve_precision`
picks the default where none was given.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from eclip.errors import OptionError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Training's precision on a GPU when none is given: bf16 autocast, as open_clip's trainer (`amp`) but
#: with bf16's float32 range (no loss scaling). Measured: bench/bench_train.py, README "Training at scale".
TRAIN_CUDA_DEFAULT = "bf16"


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS; an OptionError naming the value otherwise."""
    if precision not in PRECISIONS:
        raise OptionError(f"precision {precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(precision: str | None, device: torch.device | str, cuda_default: str = "fp32") -> str:
    """The precision to run in: `precision` when given, else fp32 on a CPU and `cuda_default` on a GPU."""
    if precision is not None:
        return check_precision(precision)
    return check_precision(cuda_default) if torch.device(device).type == "cuda" else "fp32"


#: Methods that run in float32 whatever the precision asked for, and why (measured: bench/precision_maps.py).
FP32_METHODS: dict[str, str] = {
    "cliptrase": "its clustering makes discrete choices that bf16 rounding flips: normalised maps differed by up to 1.0 "
                 "on 8 test scenes (every other method measured: <= 0.035)",
}


def method_precision(method: str, precision: str) -> str:
    """The precision `method` (a name, options allowed: "name:key=value") runs in when `precision` is asked for."""
    name = method.split(":", 1)[0]
    if name in FP32_METHODS and check_precision(precision) != "fp32":
        _say_fp32(name)
        return "fp32"
    return check_precision(precision)


@functools.cache
def _say_fp32(name: str) -> None:
    """Log, once per method, that it keeps float32 and why."""
    log.warning("%s runs in fp32 whatever the precision asked for: %s", name, FP32_METHODS[name])


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager:
    """The context a forward pass runs in: nothing for fp32, `torch.autocast` to bf16 / fp16 otherwise."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler:
    """A loss scaler for fp16 training (a pass-through, disabled, for fp32 and bf16)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=check_precision(precision) == "fp16")


def with_autocast(fn: Callable, precision: str, device: torch.device | str) -> Callable:
    """`fn` run under `autocast(precision, device)`; floating tensor results come back as float32.

    What a training step's towers are wrapped in: their matmuls run in the reduced precision, and
    everything after them (normalisation, all-gather, the contrastive loss) in float32.
    """
    if check_precision(precision) == "fp32":
        return fn

    def run(*args, **kwargs):
        with autocast(precision, device):
            out = fn(*args, **kwargs)
        return to_float32(out)

    return run


def to_float32(value):
    """Floating tensors in `value` (a tensor, a dataclass, a tuple or list of them) as float32; the rest unchanged."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(to_float32(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.replace(value, **{f.name: to_float32(getattr(value, f.name)) for f in dataclasses.fields(value)
                                             if f.init})
    return value
