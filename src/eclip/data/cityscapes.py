"""Cityscapes, 19 classes, `gtFine` fine annotations (val: 500 images).

Layout read (Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene Understanding",
CVPR 2016, arXiv 1604.01685), as mmsegmentation's `CityscapesDataset` and SCLIP's
`configs/cfg_city_scapes.py` read it::

    ROOT/leftImg8bit/val/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/val/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png    0..18, 255 ignored

The `labelTrainIds` files are what mmseg's converter (`tools/dataset_converters/cityscapes.py`)
writes; without them the raw `_gtFine_labelIds.png` are read and mapped with the official table
(cityscapesScripts `labels.py`: id 7 road -> 0, ..., 33 bicycle -> 18, every other id ignored).
Classes in `classnames/cityscapes.txt` order; the image id is `<city>_<seq>_<frame>`.
"""
from __future__ import annotations

from pathlib import Path

from eclip.data.base import find_root, read_classnames
from eclip.data.label_folder import LabelFolderDataset, value_table

#: cityscapesScripts' id -> trainId of the 19 evaluated classes (all other ids are ignored).
LABEL_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
                        27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


class CityscapesDataset(LabelFolderDataset):
    """Cityscapes fine annotations of one split (default val); see the module docstring."""

    name = "cityscapes"
    image_suffix = "_leftImg8bit.png"

    def __init__(self, root: str | Path, split: str = "val", limit: int | None = None) -> None:
        layout = (f"Cityscapes layout ROOT/leftImg8bit/{split}/<city>/*_leftImg8bit.png and "
                  f"ROOT/gtFine/{split}/<city>/*_gtFine_labelTrainIds.png (or *_gtFine_labelIds.png)")
        root = find_root(root, f"gtFine/{split}", ("cityscapes", "Cityscapes"), layout)
        labels_dir = root / "gtFine" / split
        train_ids = any(labels_dir.glob("*/*_gtFine_labelTrainIds.png"))
        self.label_suffix = "_gtFine_labelTrainIds.png" if train_ids else "_gtFine_labelIds.png"
        mapping = {i: i for i in range(19)} if train_ids else dict(LABEL_ID_TO_TRAIN_ID)
        table = value_table({raw: train + 1 for raw, train in mapping.items()}, default=255)
        super().__init__(root, root / "leftImg8bit" / split, labels_dir, table, read_classnames("cityscapes"), limit, layout,
                         pattern="*/*")
        self.split = split

    def image_path(self, image_id: str) -> Path:
        return self.images_dir / image_id.split("_")[0] / f"{image_id}{self.image_suffix}"

    def label_path(self, image_id: str) -> Path:
        return self.labels_dir / image_id.split("_")[0] / f"{image_id}{self.label_suffix}"
