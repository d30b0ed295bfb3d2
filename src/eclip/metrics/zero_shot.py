"""Zero-shot classification accuracy: the model's own recognition, next to where its maps look.

CLIP (Radford et al. 2021, arXiv 2103.00020) classifies an image by the class prompt whose text
embedding is nearest to its pooled image embedding. ECLIP (Li, Wang, Duan, Li 2022, arXiv
2209.07046) changes the pooling, so a fix of the maps must be read next to this number. The
predictions are made by the runner (`eclip.evaluation.zeroshot`, which runs the model); this
metric only counts them.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence

from eclip.metrics.base import Metric


class ZeroShotAccuracy(Metric):
    """Top-1 accuracy over images, in two readings.

        top1 = mean_i [pred_i in present_i]                  (every image; multi-label: any class present is right)
        top1_single = the same over images with |present_i| = 1   (the strict, one-object reading)

    With several objects per scene the first reading is the one used for scene images; the second
    is the usual single-label accuracy. Direction: higher is better.
    """

    directions = {"top1": True, "top1_single": True}

    def __init__(self) -> None:
        super().__init__()
        for name in ("hits", "count", "hits_single", "count_single"):
            self.add_state(name, 0.0)

    def update(self, predicted: Sequence[int], present: Sequence[Collection[int]]) -> None:
        """`predicted` (B,) class indices, `present` the class indices present in each of the B images."""
        if len(predicted) != len(present):
            raise ValueError(f"{len(predicted)} predictions for {len(present)} images")
        for index, classes in zip(predicted, present):
            hit = float(index in classes)
            self._add("hits", hit)
            self._add("count", 1)
            if len(classes) == 1:
                self._add("hits_single", hit)
                self._add("count_single", 1)

    def compute(self) -> dict[str, float]:
        """{top1, top1_single, n, n_single}; an accuracy over no image is 0."""
        return {"top1": float(self.hits / max(1.0, float(self.count))),
                "top1_single": float(self.hits_single / max(1.0, float(self.count_single))),
                "n": int(self.count), "n_single": int(self.count_single)}
