"""PASCAL VOC 2012 segmentation, and the VOC-style folder of label PNGs it shares with Pascal Context.

Layout read (Everingham et al., "The PASCAL Visual Object Classes Challenge", IJCV 2010)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png          palette PNG of class indices
    VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt       one image id per line (the split)

`root` may be `VOC2012`, `VOCdevkit` or the folder holding `VOCdevkit`. Images are iterated in
the split file's order.

Labels: the PNGs are palette ("P") images whose *indices* are the labels (their colours are only
for viewing); a grayscale ("L") PNG of the same indices, as SBD-style conversions write, reads
the same. 0 is background (not a class to explain), 1..20 are the 20 classes in the order of
`classnames/voc.txt`, 255 marks the object borders and difficult regions VOC leaves unlabelled:
they become `Sample.ignore` (None when an image has none), so no metric counts them as either
object or background. Any other value means the file is not a VOC label map (an RGB-converted
mask, the 21-class labels of another set): that image is a counted skip, not a crash.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from eclip.data.base import EvalDataset, SkippedImage, find_root, load_rgb, read_classnames, read_split
from eclip.data.sample import Sample
from eclip.errors import DatasetError

#: Modes whose pixel values are the label indices themselves.
_INDEX_MODES = frozenset({"P", "L", "I", "I;16"})


class LabelPngDataset(EvalDataset):
    """A VOC-style folder: JPEGImages/, one label PNG per image in `label_dir`, and split files.

    Subclasses set the folder names, the class list and which label values are background
    (not any class, but counted as "outside" the class) and which are ignored (counted nowhere).
    """

    label_dir = "SegmentationClass"
    split_dir = "ImageSets/Segmentation"
    descend: tuple[str, ...] = ("VOC2012", "VOCdevkit/VOC2012")
    background_values: frozenset[int] = frozenset({0})
    ignore_values: frozenset[int] = frozenset({255})
    classnames_file = "voc"

    def __init__(self, root: str | Path, split: str = "val", limit: int | None = None) -> None:
        """`split` names a file of `split_dir` ("val", "train", "trainval") or is the path of a split file (*.txt)."""
        root = self.locate(root)
        for folder in ("JPEGImages", self.label_dir):
            if not (root / folder).is_dir():
                raise DatasetError(f"{root / folder}: folder missing; expected {self.layout(split)}")
        split_file = Path(split) if split.endswith(".txt") else root / self.split_dir / f"{split}.txt"
        super().__init__(root, read_split(split_file, self.layout(split)), read_classnames(self.classnames_file), limit)
        self.split = split

    @classmethod
    def layout(cls, split: str = "val") -> str:
        """The expected layout, in words, for error messages."""
        return (f"{cls.name} layout ROOT/JPEGImages/<id>.jpg, ROOT/{cls.label_dir}/<id>.png, "
                f"ROOT/{cls.split_dir}/{split}.txt, with ROOT = {cls.descend[0]} (or a parent folder)")

    def locate(self, root: str | Path) -> Path:
        """The dataset folder under `root`: itself or one of `descend`, found by its label folder."""
        return find_root(root, self.label_dir, self.descend, self.layout())

    def load(self, index: int) -> Sample:
        image_id = self.ids[index]
        label_path = self.root / self.label_dir / f"{image_id}.png"
        if not label_path.is_file():
            raise SkippedImage(image_id, f"{label_path}: label PNG missing")
        image_path = self.root / "JPEGImages" / f"{image_id}.jpg"
        image = load_rgb(image_path, image_id)
        labels = read_labels(label_path, image_id, (image.height, image.width))
        masks, ignore = split_labels(labels, self.classnames, self.background_values, self.ignore_values, image_id, label_path)
        meta = {"dataset": self.name, "index": index, "path": str(image_path), "labels": str(label_path)}
        return Sample(image_id=image_id, image=image, masks=masks, ignore=ignore, meta=meta)


class VOCDataset(LabelPngDataset):
    """PASCAL VOC 2012 segmentation (val: 1449 images, 20 classes); see the module docstring."""

    name = "voc"


def read_labels(path: Path, image_id: str, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) integer label map of a label PNG, checked to be an index image of size `shape`."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in _INDEX_MODES:
                raise SkippedImage(image_id, f"{path}: mode {im.mode}, expected a palette or grayscale PNG of class indices "
                                             "(colour-converted masks lose the indices)")
            labels = np.asarray(im)
    except SkippedImage:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise SkippedImage(image_id, f"{path}: unreadable label PNG ({err})") from err
    if labels.shape != shape:
        raise SkippedImage(image_id, f"{path}: label map is {labels.shape[1]}x{labels.shape[0]} "
                                     f"but its image is {shape[1]}x{shape[0]}")
    return labels


def split_labels(labels: np.ndarray, classnames: Sequence[str], background: Collection[int], ignored: Collection[int],
                 image_id: str, path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Label map (H, W) -> (class name -> bool mask of the classes present, bool ignore mask or None).

    Label i (1-based) is `classnames[i - 1]`. A value that is neither a class, background nor
    ignored makes the image a counted skip naming the values, since guessing would corrupt masks.
    """
    values = [int(v) for v in np.unique(labels)]
    unknown = [v for v in values if not (1 <= v <= len(classnames) or v in background or v in ignored)]
    if unknown:
        known = f"classes 1..{len(classnames)}, background {sorted(background)}, ignore {sorted(ignored)}"
        raise SkippedImage(image_id, f"{path}: label values {unknown} are none of {known}")
    masks = {classnames[v - 1]: labels == v for v in values if 1 <= v <= len(classnames) and v not in ignored}
    ignore = np.isin(labels, list(ignored)) if any(v in ignored for v in values) else None
    return masks, ignore


class VOC21Dataset(VOCDataset):
    """PASCAL VOC 2012 read for the 21-class segmentation benchmark: the same folder and masks, its
    background a class of its own (`eclip.segmentation`; the 20-class "voc" ignores it there)."""

    name = "voc21"
