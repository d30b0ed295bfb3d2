"""Example overlays for a report: the maps one evaluation record scored, drawn over a few of its images."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from eclip.evaluation.maps import MapsFolder, to_image_size
from eclip.evaluation.runner import prepare


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-60:] or "x"


def example_overlays(record: dict, dataset, n: int, out_dir: Path, device: str = "cpu") -> list[Path]:
    """Overlay PNGs of the first `n` usable images of `dataset` for `record`'s (model, method).

    Each PNG shows the image, then one panel per class present with its map and its score
    contrast (mean inside the mask minus outside). Maps come from the record's model and method
    (prompts with the record's templates) or, for a `maps:DIR` record, from DIR.
    """
    from eclip.report.overlay import overlay_panels

    classnames = list(dataset.classnames)
    model_name, method_name = str(record["model"]), str(record["method"])
    folder = MapsFolder(Path(model_name.removeprefix("maps:"))) if model_name.startswith("maps:") else None
    if folder is None:
        from eclip.evaluation.sources import class_text_features
        from eclip.methods.base import get_method
        from eclip.models.loading import load_model

        model = load_model(model_name, device=device)
        method = get_method(method_name)
        if model.arch not in method.archs:
            return []
        text = class_text_features(model, classnames, record.get("templates") or "single")
    written: list[Path] = []
    for index in range(len(dataset)):
        if len(written) >= n:
            break
        try:
            p = prepare(dataset[index], classnames)
        except Exception:  # noqa: BLE001 - a bad image is not an example; the evaluation counted it
            continue
        if isinstance(p, str):
            continue
        if folder is None:
            with torch.no_grad():
                raw = method.explain(model, model.preprocess([p.image]), text, text_labels=classnames).raw[0, p.class_index]
            maps = to_image_size(raw, p.size).cpu()
        else:
            found, _ = folder.read(p.image_id, p.classes, p.size)
            if not found:
                continue
            maps = to_image_size(torch.from_numpy(np.stack([found.get(c, np.zeros(p.size, np.float32)) for c in p.classes])), p.size)
        titles = []
        for cls, m, mask in zip(p.classes, maps, p.masks):
            contrast = float(m[mask].mean() - m[~mask].mean()) if mask.any() and (~mask).any() else float("nan")
            titles.append(f"{cls}\nin-out {contrast:+.2f}")
        name = f"{_safe(model_name)}__{_safe(method_name)}__{_safe(p.image_id)}.png"
        written.append(overlay_panels(p.image, maps.numpy(), titles, out_dir / name, suptitle=f"{model_name} · {method_name}"))
    return written
