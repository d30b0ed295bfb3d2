"""ADE20K (SceneParsing, 150 classes): the `ADEChallengeData2016` folder of the MIT Scene Parsing benchmark.

Layout read (Zhou et al., "Scene Parsing through ADE20K Dataset", CVPR 2017), as mmsegmentation's
`ADE20KDataset` and the open-vocabulary papers read it (SCLIP's `configs/cfg_ade20k.py`)::

    ADEChallengeData2016/images/validation/ADE_val_<n>.jpg
    ADEChallengeData2016/annotations/validation/ADE_val_<n>.png     uint8, 0..150

`root` may be `ADEChallengeData2016` or the folder holding it. Labels: 1..150 are the classes in
the order of `classnames/ade20k.txt` (wall, building, sky, ...); 0 is "other" and is ignored, as
mmseg's `reduce_zero_label=True` does. Images are iterated in file-name order (2000 for validation).
"""
from __future__ import annotations

from pathlib import Path

from eclip.data.base import find_root, read_classnames
from eclip.data.label_folder import LabelFolderDataset, value_table


class ADE20KDataset(LabelFolderDataset):
    """ADE20K validation (or training) images with their 150-class label PNGs; see the module docstring."""

    name = "ade20k"

    def __init__(self, root: str | Path, split: str = "validation", limit: int | None = None) -> None:
        layout = (f"ADE20K layout ROOT/images/{split}/*.jpg and ROOT/annotations/{split}/*.png, "
                  "with ROOT = ADEChallengeData2016 (or its parent)")
        root = find_root(root, f"annotations/{split}", ("ADEChallengeData2016",), layout)
        classnames = read_classnames("ade20k")
        table = value_table({0: 255, **{i: i for i in range(1, len(classnames) + 1)}})
        super().__init__(root, root / "images" / split, root / "annotations" / split, table, classnames, limit, layout)
        self.split = split
