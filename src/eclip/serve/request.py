"""One request explained: maps, scores and score contrasts per (model, method, text), written once to its folder.

The maps come from `eclip.explain.explain_images`, the code path of `eclip explain`, and are
written by its `save_maps` (the `.npy` the command writes with `--map-size`); a map's score
contrast is `ScoreContrast.per_pair`, the term `eclip evaluate` averages into the mSC. Nothing a
request computes stays in memory after it: the page shows map tiles of a fixed size read from the
folder, and the overlay figures of the downloads are drawn later from the method's raw maps, kept
in the folder too (`write_figures`), so a session needs to keep only the folder's id.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from eclip.errors import ImageLoadError, MethodError
from eclip.models.adapter import DenseCLIP
from eclip.serve.inputs import BundledSamples, ImageInput, ServeLimits, contrast_class
from eclip.serve.models import ModelCache

if TYPE_CHECKING:  # pragma: no cover
    from eclip.explain import Explained

MANIFEST = "request.json"  # what `write_figures` needs to draw the downloads
SLACK = 4096  # bytes a small file may take beyond its pixels (headers, a JPEG of a tiny tile)


@dataclass
class MapPanel:
    """One (model, method, text): its tile (the map over the image, at most `tile_side` px) and its numbers."""

    model: str
    method: str
    text: str
    tile: Path
    cosine: float
    probability: float
    contrast_class: str | None = None
    contrast: float | None = None

    @property
    def caption(self) -> str:
        """The text, shortened: the tile's column names the model and method, the table holds the numbers."""
        return self.text if len(self.text) <= 32 else self.text[:31] + "…"

    @property
    def sc_percent(self) -> float | None:
        """The map's score contrast in percent ("SC %", `eclip.report.units`), or None without a mask for its class."""
        from eclip.report.units import sc_percent

        return sc_percent(self.contrast)


@dataclass
class ServeResult:
    """What a request produced: its folder and, per (model, method, text), a tile and numbers.

    `panels` run text by text, then method, then model: row by row of the page's grid.
    """

    name: str
    folder: Path
    texts: list[str]
    models: list[str]
    methods: list[str]
    panels: list[MapPanel]
    seconds: float

    @property
    def columns(self) -> list[tuple[str, str]]:
        """(model, method) of each column of the page's grid: each method on every model, side by side."""
        return [(model, method) for method in self.methods for model in self.models]

    def msc_percent(self, model: str, method: str) -> float | None:
        """The mean SC % of one (model, method)'s maps that have one ("mSC %", as `eclip evaluate` averages it), or None."""
        values = [p.sc_percent for p in self.panels if (p.model, p.method) == (model, method) and p.sc_percent is not None]
        return sum(values) / len(values) if values else None

    def npy(self, model: str, method: str) -> Path:
        """The maps (K, H, W) of one (model, method), as `eclip explain` writes them."""
        return self.folder / f"{stem(self.name, model, method)}.npy"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def stem(image: str, model: str, method: str) -> str:
    """The name the files of one (image, model, method) share in a request's folder."""
    return f"{_slug(image)}-{_slug(model)}-{method}"


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


def request_bytes(size: tuple[int, int], texts: int, methods: int, models: int, limits: ServeLimits) -> int:
    """An upper bound of the bytes `explain_request` writes for an image of (H, W) `size` (what the server reserves)."""
    from eclip.explain import fit_within

    maps = texts * methods * models
    height, width = fit_within(size, limits.map_side)
    tile_h, tile_w = fit_within(size, limits.tile_side)
    raw = 64 * 64 * 4  # a method's own grid per text (14 x 14 for a ViT-B/16 at 224 px)
    return maps * (height * width * 4 + tile_h * tile_w * 3 + raw + 2 * SLACK) + methods * models * SLACK + SLACK


def read_manifest(folder: Path) -> dict:
    """What a finished request in `folder` wrote: its image, texts and figures; `ImageLoadError` if it is gone."""
    try:
        return json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise ImageLoadError("the results of this request are gone (the server keeps the newest only); explain again") from None


def figure_bytes(manifest: dict) -> int:
    """An upper bound of the overlay figures `write_figures` draws for a request (RGBA at `overlay_panels`' size and dpi)."""
    texts = len(manifest["texts"])
    columns = min(5, texts + 1)
    rows = -(-(texts + 1) // columns)
    return len(manifest["figures"]) * (260 * columns * 280 * rows * 4 + SLACK)


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
    """Explain `item` for `texts` with every (model, method): maps, scores, contrasts, tiles, written to `folder`.

    Each (model, method) writes FOLDER/<image>-<model>-<method>.npy, (K, H, W) float32 as
    `eclip explain --map-size` writes it (maps at most `limits.map_side` px a side), its raw maps
    (`.raw.npy`, for the figures of the downloads) and one JPEG tile per text; score contrasts are
    taken on maps at the image's size, as `eclip evaluate` takes them.
    """
    from eclip.explain import explain_images, fit_within, save_maps
    from eclip.methods.base import get_method
    from eclip.prompts import encode_prompts
    from eclip.report.overlay import score_titles
    from eclip.writing import atomic_write, atomic_write_text

    started = time.perf_counter()
    texts = list(texts)
    for label in model_labels:
        check_methods(models.get(label), label, method_names)
    classes = [contrast_class(t, item.classnames) if item.sample else None for t in texts]
    tile_size = fit_within((item.image.height, item.image.width), limits.tile_side)  # (h, w)
    tile_image = item.image.convert("RGB").resize(tile_size[::-1], Image.BILINEAR, reducing_gap=3.0)
    done: dict[tuple[str, str], tuple[list[Path], np.ndarray, np.ndarray, list[float | None]]] = {}
    figures = []
    steps = len(model_labels) * len(method_names)
    for label in model_labels:
        with models.using(label) as model:
            features = encode_prompts(model, texts, template)
            for name in method_names:
                if progress is not None:
                    progress(len(done) / steps, f"{label} · {name}")
                explained = next(explain_images(model, get_method(name), [(item.path, item.image)], features, texts,
                                                 precision=models.precision))
                base = stem(item.name, label, name)
                save_maps(folder / f"{base}.npy", explained, fit_within(explained.size, limits.map_side))
                raw = explained.raw.numpy().astype(np.float32)
                atomic_write(folder / f"{base}.raw.npy", lambda tmp, a=raw: save_array(tmp, a))
                tiles = _write_tiles(tile_image, explained.maps(tile_size), folder, base)
                done[label, name] = (tiles, explained.cosine, explained.probability, _contrasts(explained, item, classes))
                figures.append({"model": label, "method": name, "npy": f"{base}.npy", "png": f"{base}.png",
                                "raw": f"{base}.raw.npy", "titles": score_titles(texts, explained.cosine, explained.probability),
                                "suptitle": f"{model.name} · {name}"})
                del explained
    atomic_write_text(folder / MANIFEST, json.dumps({"image": item.name, "sample": item.sample is not None, "texts": texts,
                                                          "figures": figures}))
    panels = []
    for k, text in enumerate(texts):
        for name in method_names:
            for label in model_labels:
                tiles, cosine, probability, contrasts = done[label, name]
                panels.append(MapPanel(label, name, text, tiles[k], float(cosine[k]), float(probability[k]), classes[k],
                                       contrasts[k]))
    return ServeResult(item.name, folder, texts, list(model_labels), list(method_names), panels, time.perf_counter() - started)


def save_array(path: Path, array: np.ndarray) -> None:
    """`np.save` to an open file (the path of an atomic write), so that no `.npy` suffix is added."""
    with open(path, "wb") as f:
        np.save(f, array)


def _write_tiles(image: Image.Image, heats: np.ndarray, folder: Path, base: str) -> list[Path]:
    """One JPEG per (h, w) map of `heats` (K, h, w): the map over `image` (at the same size), as the figures colour it."""
    from eclip.report.overlay import heat_overlay
    from eclip.writing import atomic_write

    paths = []
    for k, heat in enumerate(heats):
        tile = heat_overlay(image, heat)
        paths.append(atomic_write(folder / f"{base}-{k}.jpg", lambda tmp, t=tile: t.save(tmp, format="JPEG", quality=90)))
    return paths


def _contrasts(explained: Explained, item: ImageInput, classes: Sequence[str | None]) -> list[float | None]:
    """Score contrast of each text's full-size map for the class it names (`ScoreContrast.per_pair`, on maps at the
    image's size); None without a mask for it, or where the mask leaves no inside or outside."""
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


def write_figures(folder: Path, samples: BundledSamples, limits: ServeLimits = ServeLimits()) -> list[Path]:
    """The overlay figure (`.png`, the figure `eclip explain` draws) of each (model, method) the request in `folder`
    explained, over its image at most `limits.display_side` px a side, drawn from the raw maps kept there.

    Returns the downloads: each `.npy` followed by its `.png`. `ImageLoadError` if the folder holds
    no finished request.
    """
    import torch

    from eclip.data.images import load_image
    from eclip.explain import fit_within
    from eclip.methods.base import maps_to_size
    from eclip.report.overlay import overlay_panels

    manifest = read_manifest(folder)
    image = samples.get(manifest["image"]).image if manifest["sample"] else load_image(folder / "upload", max_pixels=limits.max_pixels)
    display = fit_within((image.height, image.width), limits.display_side)
    shown = image.convert("RGB").resize(display[::-1], Image.BILINEAR, reducing_gap=3.0)
    del image
    files: list[Path] = []
    for figure in manifest["figures"]:
        heats = maps_to_size(torch.from_numpy(np.load(folder / figure["raw"])), display).numpy()
        overlay_panels(shown, heats, figure["titles"], folder / figure["png"], suptitle=figure["suptitle"])
        files += [folder / figure["npy"], folder / figure["png"]]
    return files
