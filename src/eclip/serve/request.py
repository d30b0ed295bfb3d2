"""One request explained: maps, scores and score contrasts per (model, method, text), and the downloads.

The maps come from `eclip.explain.explain_images`, the code path of `eclip explain`, and are saved
as the `.npy` the command writes; the page keeps display-size copies only.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eclip.errors import MethodError
from eclip.models.adapter import DenseCLIP
from eclip.serve.inputs import ImageInput, ServeLimits, contrast_class
from eclip.serve.models import ModelCache


@dataclass
class MapPanel:
    """One (model, method, text): its map (h, w) in [0, 1] at display size, its scores and score contrast."""

    model: str
    method: str
    text: str
    heat: np.ndarray
    cosine: float
    probability: float
    contrast_class: str | None = None
    contrast: float | None = None

    @property
    def caption(self) -> str:
        score = f"{self.model} · {self.method} · '{self.text}' · cos {self.cosine:.3f} · p {self.probability:.2f}"
        if self.contrast_class is None:
            return score
        if self.contrast is None:
            return f"{score} · no '{self.contrast_class}' in the image"
        return f"{score} · contrast {self.contrast:+.2f}"


@dataclass
class Figure:
    """One (model, method): its maps (K, H, W) at the image's size saved as `.npy`, and what its overlay
    figure (`.png`, drawn later by `write_figures`) shows: `heats` (K, h, w) at display size and titles."""

    model: str
    method: str
    npy: Path
    png: Path
    heats: np.ndarray
    titles: list[str]
    suptitle: str


@dataclass
class ServeResult:
    """What a request produced, at display size (full-size maps are in the `.npy` files only, so a
    result kept for the downloads step stays small); `panels` run text by text, then method, then model."""

    name: str
    display: Image.Image
    texts: list[str]
    models: list[str]
    methods: list[str]
    panels: list[MapPanel]
    figures: list[Figure]
    seconds: float

    @property
    def columns(self) -> int:
        """Overlays per row of the page's grid: one per (method, model)."""
        return len(self.models) * len(self.methods)


class Workspace:
    """Per-request folders under one temporary root; only the newest `keep` are kept (disk stays bounded)."""

    def __init__(self, keep: int = 64) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="eclip-serve-"))
        self.keep = keep
        self._folders: deque[Path] = deque()
        self._lock = threading.Lock()

    def new_folder(self) -> Path:
        folder = Path(tempfile.mkdtemp(dir=self.root))
        with self._lock:
            self._folders.append(folder)
            while len(self._folders) > self.keep:
                shutil.rmtree(self._folders.popleft(), ignore_errors=True)
        return folder

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def check_methods(model: DenseCLIP, label: str, names: Sequence[str]) -> None:
    """Every method known and defined for the model's architecture, before any work starts."""
    from eclip.methods.base import available_methods

    if not names:
        raise MethodError("no method picked; tick at least one, e.g. itsm")
    known = available_methods()
    for name in names:
        if name not in known:
            raise MethodError(f"unknown method '{name}'; pick one of {', '.join(known)}")
        reason = known[name].unsupported(model)
        if reason:
            fits = [m for m, cls in known.items() if cls.unsupported(model) is None]
            raise MethodError(f"{reason} ({label}); untick it or pick one of {', '.join(fits)}")


def explain_request(
    models: ModelCache,
    item: ImageInput,
    texts: Sequence[str],
    template: str | None,
    model_labels: Sequence[str],
    method_names: Sequence[str],
    folder: Path,
    *,
    progress: Callable[[float, str], None] | None = None,
    limits: ServeLimits = ServeLimits(),
) -> ServeResult:
    """Explain `item` for `texts` with every (model, method): maps, scores, contrasts and `.npy` files.

    The maps come from `eclip.explain.explain_images` (the path of `eclip explain`); each
    (model, method) writes FOLDER/<image>-<model>-<method>.npy, (K, H, W) float32 as the command
    writes it, and its score contrasts are taken on those full-size maps; only display-size copies
    (at most `limits.display_side` pixels a side) are kept. The overlay PNGs cost a figure each and
    are drawn by `write_figures` afterwards.
    """
    from eclip.explain import explain_images
    from eclip.methods.base import get_method
    from eclip.prompts import encode_prompts
    from eclip.report.overlay import score_titles

    started = time.perf_counter()
    texts = list(texts)
    for label in model_labels:
        check_methods(models.get(label), label, method_names)
    classes = [contrast_class(t, item.classnames) if item.sample else None for t in texts]
    display = display_size(item.image.size, limits.display_side)
    done: dict[tuple[str, str], tuple[Figure, np.ndarray, np.ndarray, list[float | None]]] = {}
    steps = len(model_labels) * len(method_names)
    for label in model_labels:
        with models.using(label) as model:
            features = encode_prompts(model, texts, template)
            for name in method_names:
                if progress is not None:
                    progress(len(done) / steps, f"{label} · {name}")
                explained = next(explain_images(model, get_method(name), [(item.path, item.image)], features, texts))
                stem = f"{_slug(item.name)}-{_slug(label)}-{name}"
                maps = explained.maps()
                np.save(folder / f"{stem}.npy", maps)
                contrasts = [_contrast(heat, item, cls) for heat, cls in zip(maps, classes)]
                figure = Figure(label, name, folder / f"{stem}.npy", folder / f"{stem}.png", explained.maps((display[1], display[0])),
                                score_titles(texts, explained.cosine, explained.probability), f"{model.name} · {name}")
                done[label, name] = (figure, explained.cosine, explained.probability, contrasts)
    panels = []
    for k, text in enumerate(texts):
        for name in method_names:
            for label in model_labels:
                figure, cosine, probability, contrasts = done[label, name]
                panels.append(MapPanel(label, name, text, figure.heats[k], float(cosine[k]), float(probability[k]),
                                       classes[k], contrasts[k]))
    return ServeResult(item.name, item.image.resize(display, Image.BILINEAR) if display != item.image.size else item.image,
                       texts, list(model_labels), list(method_names), panels, [done[key][0] for key in done],
                       time.perf_counter() - started)


def _contrast(heat: np.ndarray, item: ImageInput, cls: str | None) -> float | None:
    """Score contrast of one full-size map for the class its text names; None without a mask for it."""
    from eclip.shift import pair_contrast

    if cls is None or item.sample is None or cls not in item.sample.masks:
        return None
    value = pair_contrast(torch.from_numpy(heat), item.sample, cls)
    return None if np.isnan(value) else value


def display_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(W, H) of an image shrunk to at most `side` pixels on its longer side (never enlarged)."""
    scale = min(1.0, side / max(size))
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale))) if scale < 1 else tuple(size)


def write_figures(result: ServeResult) -> list[Path]:
    """The overlay PNG of each (model, method): the figure `eclip explain` draws, at display size.

    Returns the downloads: each `.npy` followed by its `.png`.
    """
    from eclip.report.overlay import overlay_panels

    files: list[Path] = []
    for figure in result.figures:
        overlay_panels(result.display, figure.heats, figure.titles, figure.png, suptitle=figure.suptitle)
        files += [figure.npy, figure.png]
    return files
