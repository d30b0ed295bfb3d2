"""Evaluation datasets by name: `open_dataset("voc", root)` and the names the CLI lists.

Each dataset is an `EvalDataset` (`base`) in its own module; this table maps its name to that
class ("module:Class", imported when the dataset is opened, so listing names imports no loader),
which is opened as `cls(root, limit=..., split=...)` (`split` only when one is given). A new
dataset is one entry here.
"""
from __future__ import annotations

import difflib
from importlib import import_module
from pathlib import Path

from eclip.data.base import EvalDataset, SkippedImage, read_classnames
from eclip.errors import DatasetError

__all__ = ["DATASETS", "EvalDataset", "SkippedImage", "open_dataset", "read_classnames"]

_OPENERS: dict[str, str] = {
    "voc": "eclip.data.voc:VOCDataset",
    "coco": "eclip.data.coco:COCODataset",
    "context": "eclip.data.context:ContextDataset",
    "synthetic": "eclip.data.synthetic:SyntheticEval",
    # the open-vocabulary segmentation benchmarks (eclip.segmentation)
    "voc21": "eclip.data.voc:VOC21Dataset",
    "context60": "eclip.data.context:Context60Dataset",
    "coco_object": "eclip.data.coco_stuff:open_coco_object",
    "coco_stuff": "eclip.data.coco_stuff:COCOStuffDataset",
    "ade20k": "eclip.data.ade20k:ADE20KDataset",
    "cityscapes": "eclip.data.cityscapes:CityscapesDataset",
}

#: The names `open_dataset` accepts, as the CLI lists them.
DATASETS: tuple[str, ...] = tuple(_OPENERS)

_ALIASES = {"voc2012": "voc", "pascal_voc": "voc", "coco2017": "coco", "pascal_context": "context", "context59": "context",
            "synth": "synthetic", "voc20": "voc", "ade": "ade20k", "ade150": "ade20k", "coco_stuff164k": "coco_stuff"}


def open_dataset(name: str, root: str | Path, limit: int | None = None, split: str | None = None) -> EvalDataset:
    """Open evaluation dataset `name` (one of `DATASETS`) stored at `root`.

    Args:
        name: "voc", "coco", "context" or "synthetic" (case-insensitive; "pascal_context" and a
            few other spellings are accepted).
        root: the dataset folder; see each loader for the layouts and the parent folders it accepts.
        limit: take only the first `limit` images, in the dataset's canonical order.
        split: the split to read ("val" for VOC and Context, "val2017" for COCO, the defaults; a
            synthetic folder has none).

    Raises `DatasetError` for an unknown name (with the closest known one) or a folder without the
    expected layout; the loaders that need an optional package (COCO: pycocotools) say how to install it.
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _OPENERS:
        close = difflib.get_close_matches(key, [*DATASETS, *_ALIASES], n=1)
        hint = f"did you mean {_ALIASES.get(close[0], close[0])}? " if close else ""
        raise DatasetError(f"unknown dataset {name!r}; {hint}choose one of {', '.join(DATASETS)}")
    module, cls = _OPENERS[key].split(":")
    options = {} if split is None else {"split": split}
    return getattr(import_module(module), cls)(root, limit=limit, **options)
