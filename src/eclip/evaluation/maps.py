"""Maps as the metrics see them: one per (image, class present), at the image's size, min-max normalised.

Every map goes through the same last step whoever made it: min-max normalisation over the map
(ECLIP.md section 4: "the normalised map"), then bilinear resizing to the image's own size, so a
threshold means the same for every method. Maps from other tools (`eclip evaluate --maps DIR`)
are read from `DIR/<image_id>.npz`, one float array per present class name, shape (H, W).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eclip.methods.base import minmax_normalise


def to_image_size(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(P, h, w) maps at any resolution -> (P, H, W) float32 in [0, 1]: min-max normalised, then resized.

    The order of `Method.explain` (normalise on the method's own grid, then bilinear upsampling),
    so the image-size map is exactly what the method's `scores` would be at that size.
    """
    maps = minmax_normalise(maps.float())
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[None], size=tuple(size), mode="bilinear", align_corners=False)[0].clamp_(0.0, 1.0)
    return maps


class MapsFolder:
    """`DIR/<image_id>.npz` files: per image, one (H, W) float array per class name (values in [0, 1]).

    `read(image_id, classes, size)` returns the usable maps and, for each class without one, the
    reason (no file, no array for the class, wrong shape, non-finite values, unreadable file):
    the evaluation counts those pairs as `missing` instead of stopping.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def read(self, image_id: str, classes: list[str], size: tuple[int, int]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """-> ({class: (H, W) float32 map}, {class: why there is none})."""
        path = self.root / f"{image_id}.npz"
        if not path.is_file():
            return {}, {c: f"{path.name}: no such file" for c in classes}
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {c: npz[c] for c in classes if c in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            return {}, {c: f"{path.name}: unreadable npz ({err})" for c in classes}
        found, missing = {}, {}
        for cls in classes:
            if cls not in arrays:
                missing[cls] = f"{path.name}: no array named {cls!r}"
                continue
            array = np.squeeze(arrays[cls])
            if array.shape != tuple(size):
                missing[cls] = f"{path.name}[{cls!r}]: shape {arrays[cls].shape}, expected the image's {tuple(size)}"
            elif not (array.dtype == bool or np.issubdtype(array.dtype, np.number)) or not np.isfinite(array).all():
                missing[cls] = f"{path.name}[{cls!r}]: not a finite numeric array"
            else:
                found[cls] = array.astype(np.float32)
        return found, missing
