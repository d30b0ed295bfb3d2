"""COCO-Stuff 164k (171 classes) and COCO-Object (80 things + background) from the stuff+thing label maps.

Layout read (Caesar, Uijlings, Ferrari, "COCO-Stuff: Thing and Stuff Classes in Context", CVPR
2018, arXiv 1612.03716): the images of COCO 2017 and the label maps of the COCO-Stuff download::

    ROOT/val2017/<id>.jpg                                     (or ROOT/images/val2017/)
    ROOT/stuffthingmaps_trainval2017/val2017/<id>.png         0..181 = COCO category id - 1, 255 unlabelled

or, converted by mmsegmentation (`tools/dataset_converters/coco_stuff164k.py`, the layout of
SCLIP's `configs/cfg_coco_stuff164k.py`), `ROOT/annotations/val2017/<id>_labelTrainIds.png` (0..170).

COCO-Stuff: the 171 categories in use (182 ids less 11 never annotated) are the classes, in id
order (`classnames/coco_stuff.txt`: the 80 things, then the 91 stuff classes); unlabelled pixels
are ignored. COCO-Object, the benchmark of GroupViT, TCL and the training-free papers (SCLIP's
`datasets/cvt_coco_object.py`): the 80 things keep their class, every other pixel, stuff and
unlabelled alike, is background; it also reads the converter's `annotations/val2017/<id>_instanceTrainIds.png`
(0 background, 1..80). Without label maps, `open_dataset("coco_object")` renders the COCO
instance annotations instead (`COCOObjectInstances`).
"""
from __future__ import annotations

from pathlib import Path

from eclip.data.base import find_root, read_classnames
from eclip.data.coco import COCODataset
from eclip.data.label_folder import LabelFolderDataset, value_table
from eclip.errors import DatasetError

#: COCO-Stuff label values (category id - 1) never used by any annotation.
UNUSED = frozenset({11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90})
#: The 171 values in use, in id order: position i is class i + 1 (the first 80 are the things).
USED = tuple(v for v in range(182) if v not in UNUSED)
THINGS = 80


def _images_dir(root: Path, split: str, layout: str) -> Path:
    for folder in (root / split, root / "images" / split):
        if folder.is_dir():
            return folder
    raise DatasetError(f"{root / split}: image folder missing (nor {root / 'images' / split}); expected {layout}")


class COCOStuffDataset(LabelFolderDataset):
    """COCO-Stuff 164k of one split (default val2017, 5000 images); see the module docstring."""

    name = "coco_stuff"
    converted_suffix = "_labelTrainIds.png"

    def __init__(self, root: str | Path, split: str = "val2017", limit: int | None = None) -> None:
        layout = (f"COCO-Stuff layout ROOT/{split}/*.jpg (or ROOT/images/{split}/) with "
                  f"ROOT/stuffthingmaps_trainval2017/{split}/*.png (or mmseg's ROOT/annotations/{split}/*{self.converted_suffix})")
        raw = f"stuffthingmaps_trainval2017/{split}"
        try:
            root = find_root(root, raw, ("coco", "COCO", "coco_stuff164k"), layout)
            labels_dir, converted = root / raw, False
        except DatasetError:
            root = find_root(root, f"annotations/{split}", ("coco", "COCO", "coco_stuff164k"), layout)
            labels_dir, converted = root / "annotations" / split, True
            self.label_suffix = self.converted_suffix
        super().__init__(root, _images_dir(root, split, layout), labels_dir, self.table_for(converted), self.class_list(), limit,
                         layout)
        self.split = split

    def class_list(self) -> list[str]:
        return read_classnames("coco_stuff")

    def table_for(self, converted: bool):
        """Raw value -> label: the used ids (or the converter's 0..170) to 1..171, 255 ignored."""
        if converted:
            return value_table({**{i: i + 1 for i in range(len(USED))}, 255: 255})
        return value_table({**{v: i + 1 for i, v in enumerate(USED)}, **{v: 255 for v in UNUSED}, 255: 255})


class COCOObjectDataset(COCOStuffDataset):
    """COCO-Object: the things of COCO-Stuff's label maps, everything else background; see the module docstring."""

    name = "coco_object"
    converted_suffix = "_instanceTrainIds.png"

    def class_list(self) -> list[str]:
        return read_classnames("coco")

    def table_for(self, converted: bool):
        """Things to 1..80 and all else to background, as `cvt_coco_object.py` maps them."""
        if converted:
            return value_table({i: i for i in range(THINGS + 1)})
        return value_table({v: (USED.index(v) + 1 if v in USED[:THINGS] else 0) for v in range(256)})


class COCOObjectInstances(COCODataset):
    """COCO-Object rendered from the instance annotations (`instances_<split>.json`): each class's
    non-crowd instances as its mask, background elsewhere, crowd pixels ignored (as `COCODataset`).

    Differs from the label maps of the papers' COCO-Object in two ways: crowd regions are ignored
    (the label maps give them their class) and the images without any non-crowd instance are left
    out (about 50 of 5000)."""

    name = "coco_object"


def open_coco_object(root: str | Path, split: str = "val2017", limit: int | None = None):
    """COCO-Object from the label maps when the folder has them, else from the instance annotations."""
    try:
        return COCOObjectDataset(root, split=split, limit=limit)
    except DatasetError as maps_error:
        try:
            return COCOObjectInstances(root, split=split, limit=limit)
        except DatasetError as err:
            raise DatasetError(f"{maps_error}; nor COCO instance annotations: {err}") from None
