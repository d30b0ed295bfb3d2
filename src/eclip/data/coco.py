"""COCO 2017 instance masks as per-class masks, through pycocotools.

Layout read (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014, arXiv 1405.0312)::

    ROOT/val2017/<12-digit id>.jpg                (ROOT/images/val2017/ is accepted too)
    ROOT/annotations/instances_val2017.json

`root` may also be the folder holding `coco/` or `COCO/`. pycocotools is an optional dependency
(`pip install "eclip[coco]"`), imported only when a COCO dataset is opened; it decodes polygons,
RLE and uncompressed RLE alike (`annToMask`).

Classes: the 80 categories of the annotation file, in category-id order (person, bicycle, car,
..., toothbrush; the ids themselves have gaps, the order is what matters), named as the file
names them (the same readable names as `classnames/coco.txt`). A class's mask is the union of
the masks of its non-crowd instances in the image.

Crowd annotations (`iscrowd=1`, one RLE over a group of objects drawn too coarsely to be
instances) follow the common semantic-segmentation practice: their pixels are **ignored**
(`Sample.ignore`), neither object nor background for any class, except where a non-crowd
instance covers them (those keep their instance's label). This avoids scoring a map as wrong for
lighting up a crowd of people that is labelled as no single person.

Images: iterated in increasing image id. Images without any non-crowd annotation (about 50 of
the 5000 val images) have no class to explain and are **left out when the dataset is opened**, not
reported as skips: they are `excluded` (a count), not errors. Counted skips are the images that
cannot be used: a missing or unreadable file, a size that differs from the annotation's, an
annotation that cannot be decoded or names an unknown category.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from eclip.data.base import EvalDataset, SkippedImage, find_root, load_rgb
from eclip.data.sample import Sample
from eclip.errors import DatasetError

logger = logging.getLogger(__name__)

_INSTALL = 'pip install "eclip[coco]" (or pip install pycocotools)'


def _coco_api() -> Any:
    """pycocotools' COCO class, imported on first use so eclip runs without it."""
    try:
        from pycocotools.coco import COCO
    except ImportError as err:
        raise DatasetError(f"reading COCO needs pycocotools, which is not installed ({err}); {_INSTALL}") from err
    return COCO


class COCODataset(EvalDataset):
    """COCO instances of one split (default val2017) as per-class masks; see the module docstring.

    Attributes:
        excluded: how many images of the split were left out for having no non-crowd annotation.
        coco: the pycocotools `COCO` index of the annotation file.
    """

    name = "coco"

    def __init__(self, root: str | Path, split: str = "val2017", limit: int | None = None) -> None:
        api = _coco_api()
        layout = (f"COCO layout ROOT/{split}/*.jpg (or ROOT/images/{split}/) and ROOT/annotations/instances_{split}.json, "
                  "with ROOT = the folder holding annotations/ (or its parent)")
        ann_name = f"annotations/instances_{split}.json"
        root = find_root(root, ann_name, ("coco", "COCO", "coco2017"), layout)
        self.images_dir = next((d for d in (root / split, root / "images" / split) if d.is_dir()), None)
        if self.images_dir is None:
            raise DatasetError(f"{root / split}: image folder missing (nor {root / 'images' / split}); expected {layout}")
        self.coco = _load_index(api, root / ann_name)
        categories = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda c: c["id"])
        if not categories:
            raise DatasetError(f"{root / ann_name}: no categories; expected a COCO instances file with 'categories'")
        self.category_names = {c["id"]: c["name"] for c in categories}
        kept = [i for i in sorted(self.coco.getImgIds()) if any(not a.get("iscrowd") for a in self.coco.imgToAnns[i])]
        self.excluded = len(self.coco.getImgIds()) - len(kept)
        if self.excluded:
            logger.info("%s: %d images without a non-crowd annotation are left out", root / ann_name, self.excluded)
        super().__init__(root, [Path(self.coco.imgs[i]["file_name"]).stem for i in kept], [c["name"] for c in categories], limit)
        self.coco_ids: list[int] = kept[:len(self.ids)]
        self.split = split

    def load(self, index: int) -> Sample:
        image_id, info = self.ids[index], self.coco.imgs[self.coco_ids[index]]
        path = self.images_dir / info["file_name"]
        image = load_rgb(path, image_id)
        height, width = int(info["height"]), int(info["width"])
        if image.size != (width, height):
            raise SkippedImage(image_id, f"{path}: image is {image.width}x{image.height} but its annotations are "
                                         f"{width}x{height}")
        masks, crowd = self._masks(image_id, info, (height, width))
        covered = np.zeros((height, width), dtype=bool)
        for mask in masks.values():
            covered |= mask
        ignore = crowd & ~covered
        meta = {"dataset": self.name, "index": index, "path": str(path), "coco_id": info["id"]}
        return Sample(image_id=image_id, image=image, masks=masks, ignore=ignore if ignore.any() else None, meta=meta)

    def _masks(self, image_id: str, info: dict, shape: tuple[int, int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Union of the non-crowd instance masks per class (only non-empty ones), and the crowd pixels."""
        masks: dict[str, np.ndarray] = {}
        crowd = np.zeros(shape, dtype=bool)
        for ann in self.coco.imgToAnns[info["id"]]:
            name = self.category_names.get(ann.get("category_id"))
            if name is None:
                raise SkippedImage(image_id, f"annotation {ann.get('id')}: category_id {ann.get('category_id')} "
                                             "is not in the file's categories")
            try:
                with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation, not ours to fix
                    warnings.simplefilter("ignore", DeprecationWarning)
                    mask = self.coco.annToMask(ann).astype(bool)
            except Exception as err:  # pycocotools raises anything on a malformed segmentation
                raise SkippedImage(image_id, f"annotation {ann.get('id')}: undecodable segmentation "
                                             f"({type(err).__name__}: {err})") from err
            if mask.shape != shape:
                raise SkippedImage(image_id, f"annotation {ann.get('id')}: mask {mask.shape} differs from the image's {shape}")
            if ann.get("iscrowd"):
                crowd |= mask
            elif mask.any():
                masks[name] = masks[name] | mask if name in masks else mask
        return masks, crowd


def _load_index(api: Any, path: Path) -> Any:
    """pycocotools' index of `path`, without the progress lines it prints to stdout."""
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file missing; download annotations_trainval2017.zip and unzip it in the root")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return api(str(path))
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as err:
        raise DatasetError(f"{path}: not a readable COCO instances file ({type(err).__name__}: {err}); "
                           "re-download annotations_trainval2017.zip") from err
