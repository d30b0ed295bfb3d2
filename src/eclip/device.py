"""A device checked before any work: a name torch knows, on hardware this machine has.

Without the check, device "banana" is a RuntimeError from deep inside torch and "cuda" on a
machine without a GPU fails only once the model is loaded (or, under torchrun, when the process
group starts); both become one line naming the value and what to pass instead. The spelling is
checked before torch is imported, so a typo costs no start-up time. Messages name the value as
`device=...` (the command line shows its `--device` option there).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from eclip.errors import DeviceError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_FIX = "use device=cpu, or cuda / cuda:N on a machine with an NVIDIA GPU"
_SPELLING = re.compile(r"^(cpu|cuda|mps)(:\d+)?$")


def resolve_device(spec: str | torch.device) -> torch.device:
    """The torch device `spec` names, checked to exist here; raises `DeviceError` otherwise."""
    text = str(spec).strip()
    if not _SPELLING.match(text):
        raise DeviceError(f"device={text!r} is not a device eclip runs on; {_FIX}")
    import torch

    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device={text}: no CUDA GPU is available on this machine "
                              "(torch.cuda.is_available() is False); use device=cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device={text}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}; pick one of them")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError(f"device={text}: Apple's MPS backend is not available on this machine; use device=cpu")
    return device
