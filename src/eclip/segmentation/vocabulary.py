"""The texts of a segmentation: one or more query names per class, and the ground truth as one label map.

Open-vocabulary segmentation names each class with one or more words and scores each pixel
against all of them. The files follow SCLIP's `configs/cls_<dataset>.txt` (Wang, Mei, Yuille 2023,
arXiv 2312.01597), which NACLIP and ClearCLIP reuse: line i names class i of the label order, its
synonyms separated by commas ("person, person in shirt, ..."); where the benchmark has a
background class it is line 0, and its "synonyms" are the stuff words that stand for it ("sky,
wall, tree, ..."). A class scores the best of its queries (`postprocess.class_scores`).

The files shipped in `eclip/data/classnames/segmentation/<set>/<dataset>.txt` are the authors'
files as published: `sclip/` (SCLIP's, identical in NACLIP), `clearclip/` (ClearCLIP's, where they
differ from SCLIP's: voc20, voc21, coco_object) and `cliptrase/` (CLIPtrase's `configs/dataset_cfg.py`
lists, background words on line 0).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from eclip.data.sample import Sample
from eclip.errors import DatasetError
from eclip.metrics.segmentation import IGNORE_INDEX


@dataclass(frozen=True)
class Vocabulary:
    """The queries of a segmentation and the class each one stands for.

    Attributes:
        classnames: the C classes in label order (the background class first when there is one).
        queries: the Q >= C texts encoded (each class's names, in file order).
        query_class: (Q,) the class index of each query.
        background: True when class 0 is a background class (VOC21, Context60, COCO-Object, scenes).
    """

    classnames: tuple[str, ...]
    queries: tuple[str, ...]
    query_class: tuple[int, ...]
    background: bool = False

    @classmethod
    def from_lines(cls, lines: Sequence[str], classnames: Sequence[str] | None = None, background: bool = False) -> Vocabulary:
        """One line per class, comma-separated synonyms; `classnames` default to each line's first name."""
        names = [[n.strip() for n in line.split(",") if n.strip()] for line in lines if line.strip()]
        if any(not n for n in names) or not names:
            raise DatasetError("a vocabulary needs at least one name on every line")
        if classnames is not None and len(classnames) != len(names):
            raise DatasetError(f"{len(names)} lines of names for {len(classnames)} classes")
        queries = tuple(q for group in names for q in group)
        query_class = tuple(i for i, group in enumerate(names) for _ in group)
        return cls(tuple(classnames) if classnames is not None else tuple(g[0] for g in names), queries, query_class, background)

    @classmethod
    def from_texts(cls, texts: Sequence[str], background: str | None = None, threshold: bool = False) -> Vocabulary:
        """One query per text (e.g. the texts of `eclip explain --segment`), class 0 a background:
        the text `background` as its query, or with `threshold` a class without query that the
        probability threshold sends pixels to; neither: no background class."""
        texts = list(texts)
        if threshold:
            return cls(("background", *texts), tuple(texts), tuple(range(1, len(texts) + 1)), True)
        lines = ([background] if background else []) + texts
        return cls(tuple(lines), tuple(lines), tuple(range(len(lines))), background is not None)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


def read_names(name: str) -> list[str]:
    """The lines of a shipped query file, `name` = "<set>/<dataset>" (e.g. "sclip/voc21"), or of a file path."""
    path = Path(name)
    if path.suffix == ".txt" and path.is_file():
        return path.read_text(encoding="utf-8").splitlines()
    resource = resources.files("eclip.data").joinpath("classnames", "segmentation", f"{name}.txt")
    if not resource.is_file():
        raise DatasetError(f"no class-name file {name!r}; give a shipped one (set/dataset, e.g. sclip/voc21) or a .txt path")
    return resource.read_text(encoding="utf-8").splitlines()


def vocabulary(names: str, classnames: Sequence[str], background: bool) -> Vocabulary:
    """The query file `names` for a dataset whose classes are `classnames` (with "background" first when `background`)."""
    classes = (["background"] if background else []) + list(classnames)
    lines = [line for line in read_names(names) if line.strip()]
    if len(lines) != len(classes):
        raise DatasetError(f"class-name file {names!r} has {len(lines)} lines but the dataset has {len(classes)} classes "
                           f"({'background + ' if background else ''}{len(classnames)})")
    return Vocabulary.from_lines(lines, classes, background)


def label_map(sample: Sample, classnames: Sequence[str], background: bool) -> np.ndarray:
    """(H, W) uint8 labels of a sample: its masks as class indices, ignored pixels 255.

    With `background`, class 0 is the background and the pixels outside every mask (and not
    ignored) take it; without, those pixels are ignored, as mmsegmentation's `reduce_zero_label`
    does for VOC20 and Context59. Masks of one image must not overlap (label maps never do; where
    instance masks do, the later class in label order wins).
    """
    if len(classnames) + int(background) > IGNORE_INDEX:
        raise DatasetError(f"{len(classnames)} classes do not fit in 8-bit labels below the ignore index {IGNORE_INDEX}")
    labels = np.full(sample.size, 0 if background else IGNORE_INDEX, dtype=np.uint8)
    index = {name: i + int(background) for i, name in enumerate(classnames)}
    for name, mask in sample.masks.items():
        if name not in index:
            raise DatasetError(f"image {sample.image_id}: class {name!r} is not one of the dataset's classes")
        labels[np.asarray(mask, dtype=bool)] = index[name]
    if sample.ignore is not None:
        labels[np.asarray(sample.ignore, dtype=bool)] = IGNORE_INDEX
    return labels
