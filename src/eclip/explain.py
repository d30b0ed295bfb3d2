"""Explain many images against many texts, streaming in batches, in memory bounded for any image size.

The library side of `eclip explain` (and of the web demo): files are decoded safely one by one (a
bad file becomes a `Failure`, the batch goes on); each image is at once reduced to what is needed
later, its model input and a display-size copy for the overlay, so a batch never holds full-size
images; one method call explains a whole batch for all texts; each result keeps the method's raw
maps, and turns them into maps at any size through the one normalise-and-resize path
(`eclip.methods.base.maps_to_size`), the one `eclip evaluate`, `shift` and `demo` use. Maps at the
image's own size are written to disk a few texts at a time (`save_maps`), so a 48-megapixel image
with eight texts never holds its eight full-size maps in memory. What a method returns besides
its maps (`Maps.extra`: interaction matrices, the terms of a decomposition) stays with each
image's result and is written by the same writer (`write_explained`), whatever the method.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from eclip.errors import ImageLoadError
from eclip.methods.base import ImageExtra, Method, maps_to_size
from eclip.models.adapter import DenseCLIP

#: Longest side of the image copy kept for overlays (a figure panel is about 260 px wide).
DISPLAY_SIDE = 512
#: Pixels of float32 maps resized at once when writing (64 MB): the texts are done in chunks of this size.
CHUNK_PIXELS = 1 << 24


def fit_within(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """(H, W) scaled down (aspect kept, at least 1 px) so that its longer side is at most `longest`; 0 keeps it."""
    height, width = size
    if longest <= 0 or max(height, width) <= longest:
        return height, width
    scale = longest / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass
class Explained:
    """One image explained for K texts.

    Attributes:
        path: the file it came from (None for an image passed in memory).
        size: (H, W) of the image.
        display: the image scaled to at most `DISPLAY_SIDE` px, for overlays.
        texts: the K texts, in order (repeats kept).
        raw: (K, h, w) the method's raw maps on its own grid.
        cosine: (K,) cosine of the model's own image embedding with each text.
        probability: (K,) softmax of cosine * logit scale over the K texts.
        extra: the method's extra outputs for this image (`Maps.extra`), by name.
    """

    path: Path | None
    size: tuple[int, int]
    display: Image.Image
    texts: list[str]
    raw: torch.Tensor
    cosine: np.ndarray
    probability: np.ndarray
    extra: dict[str, ImageExtra]

    def maps(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """(K, H, W) float32 maps in [0, 1] at `size` (default: the image's own), by `maps_to_size`.

        Holds all K maps at once: for big images write them with `save_maps` instead.
        """
        return maps_to_size(self.raw, size or self.size).cpu().numpy()

    def display_maps(self) -> np.ndarray:
        """(K, h, w) maps at the display copy's size, for overlays."""
        return self.maps((self.display.height, self.display.width))


@dataclass
class Failure:
    """A file that could not be decoded, and why."""

    path: Path
    reason: str


@dataclass
class PreparedImage:
    """What is kept of a decoded image: its model input (3, h, w), its size (H, W) and a display copy."""

    path: Path | None
    size: tuple[int, int]
    display: Image.Image
    tensor: torch.Tensor


def prepare_image(model: DenseCLIP, image: Image.Image, path: Path | None, size) -> PreparedImage:
    """The model input and a display copy of `image`; the full-size image can be dropped afterwards."""
    shown = fit_within((image.height, image.width), DISPLAY_SIDE)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    display = rgb.resize((shown[1], shown[0]), Image.BILINEAR, reducing_gap=3.0)
    return PreparedImage(path, (image.height, image.width), display, model.preprocess([image], size=size)[0])


def prepared_batches(model: DenseCLIP, paths: Iterable[Path], *, batch_size: int = 8,
                     size: int | tuple[int, int] | None = None) -> Iterator[list[PreparedImage] | Failure]:
    """Decode `paths` one by one, in order: batches of at most `batch_size` prepared images, and a
    `Failure` for each file that cannot be decoded (the batch goes on).

    The batching of every verb that streams image files (`explain_files`, `eclip decompose`,
    `eclip textspan`): memory is bounded by one decoded image plus one batch of model inputs and
    display copies.
    """
    from eclip.data.images import load_image

    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} must be >= 1")
    batch: list[PreparedImage] = []
    for path in paths:
        path = Path(path)
        try:
            image = load_image(path)
        except ImageLoadError as err:
            yield Failure(path, str(err))
            continue
        batch.append(prepare_image(model, image, path, size))
        del image
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _explain_batch(model: DenseCLIP, method: Method, batch: Sequence[PreparedImage], text_features: torch.Tensor,
                   texts: Sequence[str], precision: str = "fp32") -> list[Explained]:
    from eclip.precision import autocast, method_precision

    images = torch.stack([p.tensor for p in batch])
    with autocast(method_precision(method.name, precision), model.device):  # eclip.precision: fp32, or bf16 / fp16 autocast
        maps = method.explain(model, images, text_features, text_labels=list(texts))
    raw = maps.raw.float().cpu()
    cosine = F.normalize(model.encode_image(images).float(), dim=-1) @ text_features.float().to(images.device).T
    probability = torch.softmax(cosine * model.logit_scale, dim=-1)
    return [Explained(path=p.path, size=p.size, display=p.display, texts=list(texts), raw=raw[i],
                      cosine=cosine[i].cpu().numpy(), probability=probability[i].cpu().numpy(),
                      extra={name: per_image[i] for name, per_image in maps.extra.items()})
            for i, p in enumerate(batch)]


def explain_files(
    model: DenseCLIP,
    method: Method,
    paths: Iterable[Path],
    text_features: torch.Tensor,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    size: int | tuple[int, int] | None = None,
    precision: str = "fp32",
) -> Iterator[Explained | Failure]:
    """Yield one `Explained` or `Failure` per path: failures as they are met, the images batch by batch, in order."""
    for batch in prepared_batches(model, paths, batch_size=batch_size, size=size):
        if isinstance(batch, Failure):
            yield batch
        else:
            yield from _explain_batch(model, method, batch, text_features, texts, precision)


def explain_images(
    model: DenseCLIP,
    method: Method,
    images: Sequence[tuple[Path | None, Image.Image]],
    text_features: torch.Tensor,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    size: int | tuple[int, int] | None = None,
    precision: str = "fp32",
) -> Iterator[Explained]:
    """`explain_files` for images the caller has already decoded, as (path or None, image) pairs, in order.

    For callers that decode under their own limits (the web demo checks an upload's size and
    pixels first); the maps are the ones `explain_files` gives for the same decoded image.
    """
    for start in range(0, len(images), batch_size):
        batch = [prepare_image(model, image, path, size) for path, image in images[start : start + batch_size]]
        yield from _explain_batch(model, method, batch, text_features, texts, precision)


def save_maps(path: Path, result: Explained, size: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """Write `result`'s maps at `size` (default the image's) to the `.npy` file `path`: float32 (K, H, W).

    The maps are made and written a chunk of texts at a time (`CHUNK_PIXELS`), straight into the
    file, so memory stays bounded whatever the image size and the number of texts. Written to a
    temporary file and renamed. Returns the array's shape.
    """
    from eclip.writing import atomic_write

    height, width = size or result.size
    shape = (len(result.raw), height, width)
    step = max(1, CHUNK_PIXELS // max(1, height * width))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(f, header)
            for start in range(0, shape[0], step):
                chunk = maps_to_size(result.raw[start : start + step], (height, width)).cpu().numpy()
                f.write(np.ascontiguousarray(chunk, dtype=np.float32).data)

    atomic_write(path, write)
    return shape


def unique_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """Output names: the file stem, made unique with _1, _2 when two inputs share a stem."""
    seen: dict[str, int] = {}
    names = {}
    for path in paths:
        stem = path.stem
        count = seen.get(stem, 0)
        names[path] = stem if count == 0 else f"{stem}_{count}"
        seen[stem] = count + 1
    return names


def write_explained(result: Explained, stem: Path, *, model_name: str, method_label: str, map_side: int = 0) -> dict:
    """Write what `eclip explain` writes for one image, each file atomically, and return its JSON record.

    STEM.npy: (K, H, W) float32 maps at the image's size, scaled down to at most `map_side` px a
    side (0: the image's size); STEM_<name>.npy: each extra output's array; STEM.png: the overlay,
    one panel per text, or the extras' panels when they have any; STEM.json: the texts, sizes,
    scores and each extra output's record under its name.
    """
    import json

    from eclip.report.overlay import overlay_panels, score_titles
    from eclip.writing import atomic_write, atomic_write_text

    def path(suffix: str) -> Path:
        return stem.parent / f"{stem.name}{suffix}"

    def save_array(tmp: Path, array: np.ndarray) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array, dtype=np.float32))

    shape = save_maps(path(".npy"), result, fit_within(result.size, map_side))
    display = (result.display.height, result.display.width)
    titles, panels, records = score_titles(result.texts, result.cosine, result.probability), result.display_maps(), {}
    extra_panels = []
    for name, extra in result.extra.items():
        array, summary, shown = extra.array(), extra.record(), extra.panels()
        if array is not None:
            atomic_write(path(f"_{name}.npy"), lambda tmp, a=array: save_array(tmp, a))
        if summary:
            records[name] = summary
        if shown is not None:
            extra_panels.append(shown)
    if extra_panels:
        titles = [t for names, _ in extra_panels for t in names]
        raw = torch.cat([maps for _, maps in extra_panels])
        panels = maps_to_size(raw, display).numpy() if len(raw) else np.zeros((0, *display), np.float32)
    overlay_panels(result.display, panels, titles, path(".png"), suptitle=f"{model_name} · {method_label}")
    record = {
        "image": str(result.path), "model": model_name, "method": method_label, "texts": list(result.texts),
        "image_size": list(result.size), "map_size": list(shape[1:]),
        "scores": [{"text": t, "cosine": round(float(c), 6), "probability": round(float(p), 6)}
                   for t, c, p in zip(result.texts, result.cosine, result.probability)],
        **records,
    }
    atomic_write_text(path(".json"), json.dumps(record, indent=2))
    return record
