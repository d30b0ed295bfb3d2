"""The dataset folder of synthetic scenes: its layout, and writing it.

Layout written by `write_dataset` and read by `SyntheticDataset` (`dataset`)::

    root/meta.json            format, version, classnames, n, seed, config (written last)
    root/annotations.json     {"images": [{id, seed, caption, background, dropped, objects: [...]}]}
    root/images/000000.png    RGB uint8
    root/masks/000000.png     uint8 class index: 0 background, i + 1 = CLASSNAMES[i]
    root/instances/000000.png uint8 instance index: 0 background, k = objects[k - 1]
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from eclip.data.synthetic.config import SceneConfig
from eclip.data.synthetic.scene import render_scene
from eclip.data.synthetic.seeds import scene_seed
from eclip.data.synthetic.vocab import CLASSNAMES
from eclip.errors import DatasetError
from eclip.writing import atomic_write, atomic_write_text, remove_stale_temps, temp_target

logger = logging.getLogger(__name__)

FORMAT = "eclip-synthetic"
FORMAT_VERSION = 1

_SUBFOLDERS = ("images", "masks", "instances")
_OURS = {*_SUBFOLDERS, "meta.json", "annotations.json"}
#: The fix every message about a bad or missing dataset folder ends with.
FIX = "write it again with `eclip synth {root}`"


def _atomic_png(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _atomic_json(data: dict, path: Path, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def _prepare_root(root: Path) -> None:
    """Refuse a non-empty folder that is not ours; invalidate an old dataset before overwriting it."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder; pass a new or empty folder")
    if root.is_dir():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in _OURS and temp_target(p.name) not in _OURS)
        if foreign:
            raise DatasetError(f"{root}: not empty and not an eclip synthetic dataset (has {foreign[:3]}); "
                               "pass a new or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").unlink(missing_ok=True)  # from here until the end, the folder reads as incomplete
    for sub in _SUBFOLDERS:
        (root / sub).mkdir(exist_ok=True)


def write_dataset(root: str | Path, n: int, seed: int = 0, config: SceneConfig | None = None,
                  progress: Callable[[int], None] | None = None) -> Path:
    """Render scenes 0..n-1 of `seed` into `root` (layout in the module docstring); returns `root`.

    Files are written under temporary names and renamed, annotations.json after all images and
    meta.json last, so an interrupted run never leaves a meta.json describing missing files.
    `progress(k)` is called after each scene (the CLI passes a progress bar's update).
    """
    cfg = config or SceneConfig()
    root = Path(root)
    if n < 1:
        raise DatasetError(f"n={n}: a dataset needs at least one scene; pass n=1 or more")
    _prepare_root(root)
    width = max(6, len(str(n - 1)))
    records = []
    for i in range(n):
        seed_i = scene_seed(seed, i)
        scene = render_scene(seed_i, cfg)
        image_id = f"{i:0{width}d}"
        _atomic_png(scene.image, root / "images" / f"{image_id}.png")
        _atomic_png(scene.class_index_mask(), root / "masks" / f"{image_id}.png")
        _atomic_png(scene.instances.astype(np.uint8), root / "instances" / f"{image_id}.png")
        records.append({"id": image_id, "seed": seed_i, "caption": scene.caption, "background": scene.background,
                        "dropped": scene.dropped, "objects": [o.to_dict() for o in scene.objects]})
        if progress is not None:
            progress(1)
    ids = {f"{r['id']}.png" for r in records}
    for sub in _SUBFOLDERS:  # files left by an earlier, larger dataset in the same folder, or by a killed write
        for stale in (root / sub).glob("*.png"):
            if stale.name not in ids:
                stale.unlink()
        remove_stale_temps(root / sub)
    remove_stale_temps(root, ["meta.json", "annotations.json"])
    _atomic_json({"images": records}, root / "annotations.json", indent=None)  # compact: it grows with n
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "classnames": list(CLASSNAMES), "n": n, "seed": seed,
            "config": cfg.to_dict()}
    _atomic_json(meta, root / "meta.json")
    logger.info("wrote %d synthetic scenes to %s", n, root)
    return root

