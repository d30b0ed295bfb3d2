"""Phrase grounding on the synthetic scenes: each object's phrase ("a red star") against its own mask.

The class benchmark asks where "star" is; two stars of different colours in one image share its
mask. Here every drawn object is named by its colour and shape, as the captions name it, and its
mask is its instance mask (`instances/`), so a method must tell "a red star" from "a blue star" in
the same image. The text set of every image is every colour x shape phrase of the dataset's
configuration (the protocol of the class benchmark: all of a dataset's "classes" are the prompts),
each object is explained by its own phrase, and objects with the same phrase in one image share
one pair (the union of their masks: the phrase cannot tell them apart). A malformed annotation
(a record that is not an object, an object without its colour, a meta.json without its config)
is refused when the folder is opened, by `SyntheticDataset`, in one line naming the file and field.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eclip.data.base import EvalDataset, SkippedImage
from eclip.data.sample import Sample
from eclip.data.synthetic import SyntheticEval
from eclip.data.synthetic import object_phrase as phrase
from eclip.errors import DatasetError

__all__ = ["SyntheticPhrases", "open_phrases", "phrase"]


class SyntheticPhrases(EvalDataset):
    """An `eclip synth` folder read for phrase grounding: phrases as classes, instance masks as masks."""

    name = "synthetic/phrases"

    def __init__(self, root: str | Path, limit: int | None = None) -> None:
        self.scenes = SyntheticEval(root, limit=limit)
        config = self.scenes.dataset.config
        classnames = [phrase(colour, shape) for shape in config.shapes for colour in config.colours]
        super().__init__(self.scenes.root, self.scenes.ids, classnames, limit)

    def load(self, index: int) -> Sample:
        sample = self.scenes.load(index)
        try:
            instances = self.scenes.dataset.instances(index)
        except DatasetError as err:
            raise SkippedImage(self.ids[index], getattr(err, "reason", str(err))) from err
        masks: dict[str, np.ndarray] = {}
        for k, obj in enumerate(sample.meta.get("objects", []), start=1):
            name = phrase(obj["colour"], obj["shape"])
            own = instances == k
            masks[name] = masks[name] | own if name in masks else own
        return Sample(sample.image_id, sample.image, masks, None, {**sample.meta, "dataset": self.name})


def open_phrases(dataset: str, root: str | Path, limit: int | None = None) -> SyntheticPhrases:
    """The phrase-grounding view of dataset `dataset` (synthetic scenes only: the others have no per-object phrases)."""
    if dataset.strip().lower() not in ("synthetic", "synth"):
        raise DatasetError(f"task=phrases needs per-object phrases and instance masks, which only dataset=synthetic has "
                           f"(got dataset={dataset}); use task=classes for {dataset}")
    return SyntheticPhrases(root, limit=limit)
