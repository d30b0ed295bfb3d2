"""Example maps for a report: the maps one evaluation record scored, for a few of its images.

The maps and their score contrasts are made here by the evaluation's own path (`prepare`, the
record's method and prompts, `class_maps`, `ScoreContrast.per_pair`), so an overlay's contrast is
a term of the mSC in the same report's table (ignored pixels count nowhere in either); drawing
them is the report's job (`eclip.report.overlay`), so that evaluation never imports report.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eclip.evaluation.maps import Prepared, class_maps, class_text_features, prepare
from eclip.evaluation.maps_folder import MapsFolder
from eclip.methods.base import maps_to_size
from eclip.metrics.semantic_shift import ScoreContrast


@dataclass
class Example:
    """One image's maps: classes present, their masks (P, H, W) bool, maps (P, H, W) in [0, 1], and each map's score
    contrast (`ScoreContrast.per_pair`; NaN where the mask leaves no valid inside or outside, or the map is missing)."""

    image_id: str
    image: Image.Image
    classes: list[str]
    maps: np.ndarray
    contrasts: list[float]
    masks: np.ndarray


def _usable(dataset, classnames: list[str]) -> Iterator[Prepared]:
    """The images of `dataset` the evaluation can use, in order (the others it counted as skips), decoded one at a time."""
    for index in range(len(dataset)):
        try:
            p = prepare(dataset[index], classnames)
        except Exception:  # noqa: BLE001 - a bad image is not an example; the evaluation counted it
            continue
        if not isinstance(p, str):
            yield p


def example_maps(record: dict, dataset, n: int, device: str = "cpu") -> Iterator[Example]:
    """The first `n` usable images of `dataset` with `record`'s maps of every class present.

    Maps come from the record's model and method (prompts with the record's templates; the `n`
    images explained as one batch) or, for a `maps:DIR` record, from DIR. Nothing for a method
    the model cannot explain.
    """
    classnames = list(dataset.classnames)
    model_name, method_name = str(record["model"]), str(record["method"])
    if model_name.startswith("maps:"):
        folder = MapsFolder(Path(model_name.removeprefix("maps:")))
        given = 0
        for p in _usable(dataset, classnames):
            if given >= n:
                return
            found, _ = folder.read(p.image_id, p.classes, p.size)
            if found:
                given += 1
                maps = maps_to_size(torch.from_numpy(np.stack([found.get(c, np.zeros(p.size, np.float32)) for c in p.classes])),
                                    p.size)
                contrasts = ScoreContrast.per_pair(maps, p.masks, p.ignore)
                contrasts[torch.tensor([c not in found for c in p.classes])] = float("nan")
                yield Example(p.image_id, p.image, list(p.classes), maps.numpy(), contrasts.tolist(), p.masks.numpy())
        return

    from eclip.methods.base import get_method
    from eclip.models.loading import load_model

    model = load_model(model_name, device=device)
    method = get_method(method_name)
    if method.unsupported(model):
        return
    batch = list(islice(_usable(dataset, classnames), n))
    if not batch:
        return
    text = class_text_features(model, classnames, record.get("templates") or "single")
    with torch.no_grad():
        maps = class_maps(model, method, batch, text, classnames)
    for p, m, contrasts in zip(batch, maps.per_sample(), maps.contrasts()):
        yield Example(p.image_id, p.image, list(p.classes), m.numpy(), contrasts.tolist(), p.masks.numpy())
