"""CLIP models seen through the DenseCLIP protocol, and how to load them by name or path.

The two names below are imported on first use (PEP 562), so `eclip.models.loading` and
`eclip.models.folder` (names, bundled models, config checks) load without torch: `eclip models`
and the CLI's up-front checks answer at once.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from eclip.models.adapter import DenseCLIP
    from eclip.models.loading import load_model

__all__ = ["DenseCLIP", "load_model"]


def __getattr__(name: str):
    if name == "DenseCLIP":
        from eclip.models.adapter import DenseCLIP

        return DenseCLIP
    if name == "load_model":
        from eclip.models.loading import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
