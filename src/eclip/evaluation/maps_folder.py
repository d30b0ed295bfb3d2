"""Maps made by other tools (`EvalConfig.maps_dir`, `eclip evaluate --maps DIR`): `DIR/<image_id>.npz`, one (H, W) float array per class.

Like every map the evaluation scores, they then go through `eclip.methods.base.maps_to_size`
(min-max normalisation, resizing to the image), so a threshold means the same for every source.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


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
