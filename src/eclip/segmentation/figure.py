"""Pictures of segmentations: label maps in a dataset palette, side by side, with a legend of the classes shown.

The palette is PASCAL VOC's (the bits of the class index spread over the three channels, so
class 0, the background, is black and neighbouring indices get distant colours), extended to
any number of classes the same way, as the VOC devkit's `labelcolormap` builds it.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eclip.metrics.segmentation import IGNORE_INDEX


def palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours: VOC's colour map (index bits 0, 1, 2 to the top bits of R, G, B, then the next three...)."""
    colours = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours[index] = (r, g, b)
    return colours


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 in the palette; ignored pixels (255) white."""
    colours = palette(256)
    colours[IGNORE_INDEX] = (255, 255, 255)
    return colours[np.asarray(labels, dtype=np.int64).clip(0, 255)]


def segmentation_figure(image, panels: Sequence[tuple[str, np.ndarray]], classnames: Sequence[str], out: Path,
                        suptitle: str | None = None) -> Path:
    """Write a PNG: the image, then each (title, (H, W) labels) panel in the palette, then a legend of the classes present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from eclip.writing import atomic_write

    present = sorted({int(v) for _, labels in panels for v in np.unique(labels) if int(v) != IGNORE_INDEX and v < len(classnames)})
    colours = palette(256)
    cols = len(panels) + 2
    fig, axes = plt.subplots(1, cols, figsize=(2.8 * cols, 3.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(np.asarray(image.convert("RGB")))
    axes[0, 0].set_title("image", fontsize=9)
    for ax, (title, labels) in zip(axes[0, 1:], panels):
        ax.imshow(colorize(labels), interpolation="nearest")
        ax.set_title(title, fontsize=9)
    handles = [Patch(facecolor=colours[i] / 255.0, edgecolor="0.5", label=classnames[i]) for i in present]
    axes[0, -1].legend(handles=handles, loc="center left", fontsize=7, frameon=False, ncol=1 + len(handles) // 18)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    atomic_write(out, lambda path: fig.savefig(path, dpi=100, format="png"))
    plt.close(fig)
    return Path(out)
