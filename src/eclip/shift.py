"""The semantic shift, measured: how often and how much a map prefers the background to the object.

ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046) shows that vanilla CLIP's image-text similarity
map (ITSM) lights up the background ("opposite visualization"). We put numbers on it (ECLIP.md
sections 2 and 4), per (image, class present in it), on the map min-max normalised over space:
- inverted rate: the share of pairs whose mean inside the class mask is lower than outside;
- score contrast: mean inside minus mean outside; its average is the mean score contrast (mSC),
  negative for an opposite visualization;
- foreground IoU at the best threshold: the map binarised at one threshold for the whole set
  (grid 0.00..1.00 step 0.05, chosen to maximise the mean), IoU with the class mask;
- pointing game: the map's peak on the object;
- zero-shot accuracy of the model's own pooled embedding (multi-label top-1,
  `eclip.evaluation.zeroshot`), so a fix of the map that costs recognition shows.
The numbers come from `eclip.metrics` through the same `MetricSuite` and map normalisation as
`eclip evaluate` (`eclip.evaluation`), so the two commands agree on the same maps. This module is
the library side of `eclip shift` and of the ECLIP ablation (`bench/eclip_ablation.py`).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eclip.data.sample import Sample
from eclip.evaluation.suite import MetricSuite
from eclip.methods.base import Method, maps_to_size
from eclip.metrics.semantic_shift import ScoreContrast
from eclip.models.adapter import DenseCLIP
from eclip.prompts import encode_prompts


class ShiftAccumulator:
    """The shift numbers of (image, class) pairs, streamed through `eclip.metrics` (the one implementation).

    A thin view of `MetricSuite` without the perturbation metrics; `compute()` keeps the names
    `eclip shift` reports. Direction: contrast, IoU and pointing higher is better, inverted rate lower.
    """

    def __init__(self, threshold_step: float = 0.05) -> None:
        self.suite = MetricSuite(threshold_step, deletion_steps=None)

    def update(self, score, mask, ignore=None) -> None:
        """Pairs: `score` (H, W) or (N, H, W) in [0, 1], `mask` the same shape, bool; `ignore` (H, W) bool or None."""
        self.suite.update_pairs(score, mask, ignore)

    def compute(self) -> dict[str, float]:
        s = self.suite.scores()
        if not s["n_pairs"]:
            return {"pairs": 0}
        return {"pairs": s["n_pairs"], "inverted_rate": s["inverted_rate"], "score_contrast": s["msc"] / 100, "fg_iou": s["fg_iou"],
                "threshold": s["threshold"], "pointing": s["pointing_game"]}


def synthetic_samples(seed: int, n: int, image_size: int = 96, max_objects: int = 3) -> list[Sample]:
    """`n` held-out synthetic scenes of `seed` as Samples (rendered in memory, exact masks)."""
    from PIL import Image

    from eclip.data.synthetic import SceneConfig, SceneStream

    config = SceneConfig(image_size=image_size, max_objects=max_objects)
    return [Sample(image_id=f"{seed}-{i}", image=Image.fromarray(scene.image), masks=dict(scene.class_masks),
                   meta={"caption": scene.caption})
            for i, scene in enumerate(SceneStream(seed, config, count=n))]


def _batches(samples: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def measure(
    model: DenseCLIP,
    methods: dict[str, Method],
    samples: Sequence[Sample],
    classnames: Sequence[str],
    templates: str | Sequence[str] | None = "single",
    batch_size: int = 32,
) -> dict[str, dict[str, float]]:
    """Shift metrics of each method's maps on `samples`, and the model's zero-shot accuracy.

    Every class of `classnames` is one text (prompt `templates`); each class present in an image
    is explained on its own, its map resized to the image and min-max normalised as `eclip
    evaluate` does. Returns {method name: metrics, "zero_shot": {top1, n, ...}}.
    """
    from eclip.evaluation.zeroshot import zero_shot_accuracy

    text = encode_prompts(model, list(classnames), templates)
    accumulators = {name: ShiftAccumulator() for name in methods}
    for batch in _batches(samples, batch_size):
        images = model.preprocess([s.image for s in batch])
        for name, method in methods.items():
            raw = method.explain_raw(model, images, text, text_labels=list(classnames))[0]
            for i, sample in enumerate(batch):
                present = list(sample.masks)
                maps = maps_to_size(raw[i, [classnames.index(c) for c in present]], sample.size).cpu()
                accumulators[name].update(maps, np.stack([sample.masks[c] for c in present]), sample.ignore)
    out = {name: acc.compute() for name, acc in accumulators.items()}
    out["zero_shot"] = zero_shot_accuracy(model, samples, classnames, templates, batch_size=batch_size)
    return out


@dataclass
class Panel:
    """One column of a before/after figure: a model's map by one method, under a short title."""

    title: str
    model: DenseCLIP
    method: Method


def panel_maps(panel: Panel, sample: Sample, classes: Sequence[str], classnames: Sequence[str],
               templates: str | Sequence[str] | None = "single") -> torch.Tensor:
    """(len(classes), H, W) maps of `classes` for `sample`, every class name a text, as `measure` makes them."""
    text = encode_prompts(panel.model, list(classnames), templates)
    raw = panel.method.explain_raw(panel.model, panel.model.preprocess([sample.image]), text, text_labels=list(classnames))[0]
    return maps_to_size(raw[0, [classnames.index(c) for c in classes]], sample.size).cpu()


def pair_contrast(heat: torch.Tensor, sample: Sample, cls: str) -> float:
    """Score contrast of one (image, class) map, NaN where the mask leaves no inside or outside."""
    ignore = None if sample.ignore is None else sample.ignore[None]
    contrast = ScoreContrast.contrasts(heat[None], sample.masks[cls][None], ignore)
    return float(contrast[0]) if len(contrast) else float("nan")


def shift_figure(
    samples: Sequence[Sample],
    panels: Sequence[Panel],
    classnames: Sequence[str],
    out: Path,
    templates: str | Sequence[str] | None = "single",
) -> Path:
    """A grid: per sample (rows), the image with its first class's mask outlined, then each panel's map.

    `panels` are e.g. ITSM of the vanilla model, ITSM of the ECLIP model, and the free attention.
    """
    from eclip.report.overlay import map_grid

    rows = []
    for sample in samples:
        cls = next(iter(sample.masks))
        heats = [panel_maps(panel, sample, [cls], classnames, templates)[0] for panel in panels]
        rows.append((sample.image, sample.masks[cls], cls,
                     [(f"{p.title}\nin-out {pair_contrast(h, sample, cls):+.2f}", h.numpy()) for p, h in zip(panels, heats)]))
    return map_grid(rows, out)
