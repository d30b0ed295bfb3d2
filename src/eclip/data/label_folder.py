"""A folder of images and label PNGs whose raw values map to classes through a table.

ADE20K, Cityscapes and COCO-Stuff ship one label PNG per image, each with its own numbering
(ADE20K: 0 "other", 1..150; Cityscapes: 34 ids of which 19 are evaluated; COCO-Stuff: 182 ids
with 11 unused). A loader here names its folders and gives a 256-entry table from raw value to
eclip's labels (1..C the classes in `classnames` order, 0 background, 255 ignored, -1 not a valid
value: the image is a counted skip naming the values). The image ids are the label files' stems,
sorted, so that an image without a label is never listed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eclip.data.base import EvalDataset, SkippedImage, load_rgb
from eclip.data.sample import Sample
from eclip.data.voc import read_labels, split_labels
from eclip.errors import DatasetError


class LabelFolderDataset(EvalDataset):
    """Images and label PNGs in two folders; subclasses set the paths and the value table.

    Attributes:
        images_dir, labels_dir: the folders read.
        table: (256,) int16, raw label value -> eclip label (see the module docstring).
    """

    label_suffix = ".png"
    image_suffix = ".jpg"

    def __init__(self, root: Path, images_dir: Path, labels_dir: Path, table: np.ndarray, classnames: list[str],
                 limit: int | None, layout: str, pattern: str = "*") -> None:
        for folder in (images_dir, labels_dir):
            if not folder.is_dir():
                raise DatasetError(f"{folder}: folder missing; expected {layout}")
        self.images_dir, self.labels_dir, self.table = images_dir, labels_dir, table
        files = sorted(labels_dir.glob(pattern + self.label_suffix))
        if not files:
            raise DatasetError(f"{labels_dir}: no *{self.label_suffix} label files; expected {layout}")
        super().__init__(root, [self.id_of(f) for f in files], classnames, limit)

    def id_of(self, label_file: Path) -> str:
        """The image id of a label file (its stem without the label suffix)."""
        return label_file.name[: -len(self.label_suffix)]

    def image_path(self, image_id: str) -> Path:
        return self.images_dir / f"{image_id}{self.image_suffix}"

    def label_path(self, image_id: str) -> Path:
        return self.labels_dir / f"{image_id}{self.label_suffix}"

    def load(self, index: int) -> Sample:
        image_id = self.ids[index]
        image_path, label_path = self.image_path(image_id), self.label_path(image_id)
        image = load_rgb(image_path, image_id)
        raw = read_labels(label_path, image_id, (image.height, image.width))
        if raw.max(initial=0) > 255:
            raise SkippedImage(image_id, f"{label_path}: label values above 255 ({int(raw.max())}); expected 8-bit labels")
        labels = self.table[raw.astype(np.intp)]
        if (labels < 0).any():
            bad = sorted(int(v) for v in np.unique(raw[labels < 0]))
            raise SkippedImage(image_id, f"{label_path}: label values {bad} are not labels of {self.name}")
        masks, ignore = split_labels(labels, self.classnames, {0}, {255}, image_id, label_path)
        meta = {"dataset": self.name, "index": index, "path": str(image_path), "labels": str(label_path)}
        return Sample(image_id=image_id, image=image, masks=masks, ignore=ignore, meta=meta)


def value_table(mapping: dict[int, int], default: int = -1) -> np.ndarray:
    """(256,) int16 table of `mapping` (raw value -> eclip label), `default` elsewhere."""
    table = np.full(256, default, dtype=np.int16)
    for raw, label in mapping.items():
        table[raw] = label
    return table
