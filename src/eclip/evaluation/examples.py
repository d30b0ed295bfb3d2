"""Example maps for a report: the maps one evaluation record scored, for a few of its images.

The maps are made here (the same path as the evaluation: `prepare`, the record's method and
prompts, `maps_to_size`); drawing them is the report's job (`eclip.report.overlay`), which the
CLI calls, so that evaluation never imports report.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eclip.evaluation.maps import MapsFolder
from eclip.evaluation.runner import prepare
from eclip.methods.base import maps_to_size


@dataclass
class Example:
    """One image's maps: classes present, maps (P, H, W) in [0, 1], and each map's score contrast
    (mean inside the class mask minus outside; NaN where the mask leaves no inside or outside)."""

    image_id: str
    image: Image.Image
    classes: list[str]
    maps: np.ndarray
    contrasts: list[float]


def example_maps(record: dict, dataset, n: int, device: str = "cpu") -> Iterator[Example]:
    """The first `n` usable images of `dataset` with `record`'s maps of every class present.

    Maps come from the record's model and method (prompts with the record's templates) or, for a
    `maps:DIR` record, from DIR. Nothing for a method the model's architecture does not support.
    """
    classnames = list(dataset.classnames)
    model_name, method_name = str(record["model"]), str(record["method"])
    folder = MapsFolder(Path(model_name.removeprefix("maps:"))) if model_name.startswith("maps:") else None
    if folder is None:
        from eclip.evaluation.sources import class_text_features
        from eclip.methods.base import get_method
        from eclip.models.loading import load_model

        model = load_model(model_name, device=device)
        method = get_method(method_name)
        if method.unsupported(model):
            return
        text = class_text_features(model, classnames, record.get("templates") or "single")
    given = 0
    for index in range(len(dataset)):
        if given >= n:
            break
        try:
            p = prepare(dataset[index], classnames)
        except Exception:  # noqa: BLE001 - a bad image is not an example; the evaluation counted it
            continue
        if isinstance(p, str):
            continue
        if folder is None:
            with torch.no_grad():
                raw = method.explain_raw(model, model.preprocess([p.image]), text, text_labels=classnames)[0][0, p.class_index]
            maps = maps_to_size(raw, p.size).cpu()
        else:
            found, _ = folder.read(p.image_id, p.classes, p.size)
            if not found:
                continue
            maps = maps_to_size(torch.from_numpy(np.stack([found.get(c, np.zeros(p.size, np.float32)) for c in p.classes])), p.size)
        contrasts = [float(m[mask].mean() - m[~mask].mean()) if mask.any() and (~mask).any() else float("nan")
                     for m, mask in zip(maps, p.masks)]
        given += 1
        yield Example(p.image_id, p.image, list(p.classes), maps.numpy(), contrasts)
