"""Segment image files with free texts and write what `eclip explain --segment` promises.

For each image: `<stem>.npy`, the (H, W) labels (0 the background, i the i-th text; uint8), and
`<stem>.png`, the image beside its segmentation in VOC's palette with a legend of the texts found.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eclip.data.images import load_image
from eclip.errors import EclipError
from eclip.explain import Failure
from eclip.segmentation.figure import segmentation_figure
from eclip.segmentation.predict import Segmenter
from eclip.writing import atomic_write


@dataclass
class Segmented:
    path: Path
    labels: np.ndarray


def segment_files(segmenter: Segmenter, paths: Sequence[Path], out: Path, names: dict[Path, str],
                  title: str = "") -> Iterator[Segmented | Failure]:
    """Segment each file and write its `.npy` and `.png` under `out` (named by `names`); unreadable images are a `Failure`."""
    classnames = segmenter.vocabulary.classnames
    for path in paths:
        try:
            image = load_image(path)
        except EclipError as err:
            yield Failure(path, str(err))
            continue
        labels = segmenter(image).labels.numpy().astype(np.uint8)
        stem = names[path]
        atomic_write(out / f"{stem}.npy", lambda tmp, labels=labels: _save(tmp, labels))
        segmentation_figure(image, [("segmentation", labels)], classnames, out / f"{stem}.png", suptitle=title)
        yield Segmented(path, labels)


def _save(path: Path, labels: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, labels)
