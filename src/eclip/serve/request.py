"""One request explained: maps, scores and score contrasts per (model, method, text), and the downloads.

The maps come from `eclip.explain.explain_images`, the code path of `eclip explain`, and are
written by its `save_maps` (the `.npy` the command writes); the page keeps display-size copies
only, sized by `eclip.explain.fit_within`. A map's score contrast is `ScoreContrast.per_pair`, the
term `eclip evaluate` adds to the mSC.
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
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from eclip.errors import MethodError
from eclip.models.adapter import DenseCLIP
from eclip.serve.inputs import ImageInput, ServeLimits, contrast_class
from eclip.serve.models import ModelCache

if TYPE_CHECKING:  # pragma: no cover
    from eclip.explain import Explained


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
    """Every method known (`get_method`) and able to explain the model (`Method.unsupported`), before any work starts."""
    from eclip.methods.base import available_methods, get_method

    if not names:
        raise MethodError("no method picked; tick at least one, e.g. itsm")
    for name in names:
        reason = get_method(name).unsupported(model)
        if reason:
            fits = [m for m, cls in available_methods().items() if cls.unsupported(model) is None]
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
    from eclip.explain import explain_images, fit_within, save_maps
    from eclip.methods.base import get_method
    from eclip.prompts import encode_prompts
    from eclip.report.overlay import score_titles

    started = time.perf_counter()
    texts = list(texts)
    for label in model_labels:
        check_methods(models.get(label), label, method_names)
    classes = [contrast_class(t, item.classnames) if item.sample else None for t in texts]
    display = fit_within((item.image.height, item.image.width), limits.display_side)  # (H, W)
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
                save_maps(folder / f"{stem}.npy", explained)
                figure = Figure(label, name, folder / f"{stem}.npy", folder / f"{stem}.png", explained.maps(display),
                                score_titles(texts, explained.cosine, explained.probability), f"{model.name} · {name}")
                contrasts = _contrasts(explained, item, classes)
                done[label, name] = (figure, explained.cosine, explained.probability, contrasts)
    panels = []
    for k, text in enumerate(texts):
        for name in method_names:
            for label in model_labels:
                figure, cosine, probability, contrasts = done[label, name]
                panels.append(MapPanel(label, name, text, figure.heats[k], float(cosine[k]), float(probability[k]),
                                       classes[k], contrasts[k]))
    shown = item.image if display == (item.image.height, item.image.width) else item.image.resize(display[::-1], Image.BILINEAR)
    return ServeResult(item.name, shown,
                       texts, list(model_labels), list(method_names), panels, [done[key][0] for key in done],
                       time.perf_counter() - started)


def _contrasts(explained: Explained, item: ImageInput, classes: Sequence[str | None]) -> list[float | None]:
    """Score contrast of each text's full-size map for the class it names (`ScoreContrast.per_pair`, on the maps
    the `.npy` holds); None without a mask for it, or where the mask leaves no inside or outside."""
    from eclip.methods.base import maps_to_size
    from eclip.metrics.semantic_shift import ScoreContrast

    sample = item.sample
    named = [k for k, cls in enumerate(classes) if sample is not None and cls is not None and cls in sample.masks]
    out: list[float | None] = [None] * len(classes)
    if named:
        maps = maps_to_size(explained.raw[named], explained.size)
        masks = np.stack([sample.masks[classes[k]] for k in named])
        for k, value in zip(named, ScoreContrast.per_pair(maps, masks, sample.ignore).tolist()):
            out[k] = None if np.isnan(value) else value
    return out


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
