"""PASCAL Context, 59 classes: the label-PNG layout of mmsegmentation (and the methods that build on it).

PASCAL Context (Mottaghi et al., "The Role of Context for Object Detection and Semantic
Segmentation in the Wild", CVPR 2014) labels every pixel of VOC 2010 with one of 459 classes; its
usual benchmark keeps the 59 most frequent. The layout read is the one mmsegmentation's converter
`tools/dataset_converters/pascal_context.py` writes and that SCLIP, ClearCLIP, NACLIP and others
evaluate on::

    VOCdevkit/VOC2010/JPEGImages/<id>.jpg
    VOCdevkit/VOC2010/SegmentationClassContext/<id>.png     uint8 labels, 0..59
    VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt  one image id per line (5105 for val)

`root` may be `VOC2010`, `VOCdevkit` or the folder holding `VOCdevkit`.

Labels (the converter's convention, which mmsegmentation's `PascalContextDataset59` reads with
`reduce_zero_label=True`): 1..59 are the 59 classes, in the order of `classnames/context.txt`
(alphabetical by their original Context names, so label 50 is "table"); 0 is every pixel of the
other 400 classes and the unlabelled ones. Those pixels are not "background" in the VOC sense:
they may be a class the 59 leave out, so they are **ignored** (`Sample.ignore`), as in the 59-class
benchmark. 255, if a converted file has it, is ignored too. Any other value is a counted skip.

Only the raw Detail-API annotation (`trainval_merged.json`, the 459-class polygons) and no
SegmentationClassContext folder? Reading it needs the `detail` package and a class mapping that
the converter already implements, so eclip asks you to run the converter once instead of
guessing (see `CONVERT`).
"""
from __future__ import annotations

from pathlib import Path

from eclip.data.voc import LabelPngDataset
from eclip.errors import DatasetError

#: How to turn the Detail-API `trainval_merged.json` into the label PNGs this loader reads.
CONVERT = ("convert it once: install the Detail API (github.com/zhanghang1989/detail-api, PythonAPI folder), then run "
           "mmsegmentation's `python tools/dataset_converters/pascal_context.py {devkit} {json}` (tools/convert_datasets/ "
           "before mmsegmentation 1.0), which writes VOC2010/SegmentationClassContext/ and ImageSets/SegmentationContext/val.txt")


class ContextDataset(LabelPngDataset):
    """PASCAL Context 59 (val: 5105 images); see the module docstring for the layout and labels."""

    name = "context"
    label_dir = "SegmentationClassContext"
    split_dir = "ImageSets/SegmentationContext"
    descend = ("VOC2010", "VOCdevkit/VOC2010")
    background_values = frozenset()
    ignore_values = frozenset({0, 255})
    classnames_file = "context"

    def locate(self, root: str | Path) -> Path:
        """As for VOC, but a folder with only `trainval_merged.json` gets the conversion command."""
        try:
            return super().locate(root)
        except DatasetError:
            base = Path(root).expanduser()
            for sub in ("", *self.descend):
                merged = base / sub / "trainval_merged.json"
                if merged.is_file():
                    fix = CONVERT.format(devkit=merged.parent.parent, json=merged)
                    raise DatasetError(f"{merged}: the Detail-API annotation is not read directly and "
                                       f"{base / sub / self.label_dir} is missing; {fix}") from None
            raise


class Context60Dataset(ContextDataset):
    """PASCAL Context 60: the same files, label 0 (every pixel of the other 400 classes and the
    unlabelled ones) as background rather than ignored, as mmseg's `PascalContextDataset` (60 classes,
    `reduce_zero_label=False`) and the papers' Context60 benchmark count it."""

    name = "context60"
    background_values = frozenset({0})
    ignore_values = frozenset({255})
