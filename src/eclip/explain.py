"""Explain many images against many texts, streaming in batches.

The library side of `eclip explain`: files are decoded safely one by one (a bad file becomes a
`Failure`, the batch goes on), images are resized to the model's input, one method call explains
a whole batch for all texts, and each map is brought back to its image's own size.
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
from eclip.methods.base import Method
from eclip.models.adapter import DenseCLIP


@dataclass
class Explained:
    """One image's result: maps (K, H, W) float32 in [0, 1] at the image's size, and its scores.

    cosine: (K,) cosine of the model's own image embedding with each text;
    probability: (K,) softmax of cosine * logit scale over the K texts.
    """

    path: Path
    image: Image.Image
    maps: np.ndarray
    cosine: np.ndarray
    probability: np.ndarray


@dataclass
class Failure:
    path: Path
    reason: str


def explain_files(
    model: DenseCLIP,
    method: Method,
    paths: Iterable[Path],
    text_features: torch.Tensor,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    size: int | tuple[int, int] | None = None,
) -> Iterator[Explained | Failure]:
    """Yield one `Explained` or `Failure` per path, in order; memory is bounded by `batch_size`."""
    from eclip.data.images import load_image

    batch: list[tuple[Path, Image.Image]] = []
    for path in paths:
        try:
            batch.append((Path(path), load_image(path)))
        except ImageLoadError as err:
            yield Failure(Path(path), str(err))
            continue
        if len(batch) == batch_size:
            yield from _explain_batch(model, method, batch, text_features, texts, size)
            batch = []
    if batch:
        yield from _explain_batch(model, method, batch, text_features, texts, size)


def explain_images(
    model: DenseCLIP,
    method: Method,
    images: Sequence[tuple[Path, Image.Image]],
    text_features: torch.Tensor,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    size: int | tuple[int, int] | None = None,
) -> Iterator[Explained]:
    """`explain_files` for images the caller has already decoded, as (name, image) pairs, in order.

    For callers that decode under their own limits (the web demo checks an upload's size and
    pixels first); the maps are the ones `explain_files` gives for the same decoded image.
    """
    for start in range(0, len(images), batch_size):
        yield from _explain_batch(model, method, list(images[start:start + batch_size]), text_features, texts, size)


def _explain_batch(model, method, batch, text_features, texts, size) -> Iterator[Explained]:
    images = model.preprocess([image for _, image in batch], size=size)
    maps = method.explain(model, images, text_features, text_labels=texts).scores
    cosine = F.normalize(model.encode_image(images).float(), dim=-1) @ text_features.float().T
    probability = torch.softmax(cosine * model.logit_scale, dim=-1)
    for i, (path, image) in enumerate(batch):
        full = F.interpolate(maps[i : i + 1], size=(image.height, image.width), mode="bilinear", align_corners=False)
        yield Explained(
            path=path,
            image=image,
            maps=full[0].clamp(0, 1).cpu().numpy().astype(np.float32),
            cosine=cosine[i].cpu().numpy(),
            probability=probability[i].cpu().numpy(),
        )
