"""Heat-map overlays: the image, then one panel per text with its map, text and score."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def overlay_panels(
    image: Image.Image,
    maps: np.ndarray,
    titles: Sequence[str],
    out: Path,
    *,
    columns: int = 5,
    alpha: float = 0.5,
    suptitle: str | None = None,
) -> Path:
    """Write a PNG: the image, then each (H, W) map in [0, 1] of `maps` (K, H, W) over it.

    Panels are laid out in rows of `columns`; each map panel carries its title (text and score).
    """
    k = len(maps)
    cols = min(columns, k + 1)
    rows = int(np.ceil((k + 1) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    rgb = np.asarray(image.convert("RGB"))
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(rgb)
    axes.flat[0].set_title("image", fontsize=9)
    for i, (heat, title) in enumerate(zip(maps, titles), start=1):
        ax = axes.flat[i]
        ax.imshow(rgb)
        ax.imshow(heat, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def score_titles(texts: Sequence[str], cosine: Sequence[float], probability: Sequence[float]) -> list[str]:
    """The panel titles of `eclip explain`'s overlays: each text with its cosine and probability."""
    return [f"{t}\ncos {c:.3f} · p {p:.2f}" for t, c, p in zip(texts, cosine, probability)]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-60:] or "x"


def example_overlay(model: str, method: str, image_id: str, image: Image.Image, maps: np.ndarray, classes: Sequence[str],
                    contrasts: Sequence[float], out_dir: Path) -> Path:
    """OUT_DIR/<model>__<method>__<image_id>.png: the image, then each class's map with its score contrast."""
    titles = [f"{cls}\nin-out {c:+.2f}" for cls, c in zip(classes, contrasts)]
    name = f"{_safe(model)}__{_safe(method)}__{_safe(image_id)}.png"
    return overlay_panels(image, maps, titles, Path(out_dir) / name, suptitle=f"{model} · {method}")


def map_grid(rows: Sequence[tuple[Image.Image, np.ndarray, str, Sequence[tuple[str, np.ndarray]]]], out: Path) -> Path:
    """Write a PNG grid, one row per (image, mask, label, panels): the image with `mask` outlined
    under `label`, then each (title, (H, W) map in [0, 1]) of `panels` over the image.

    The before/after figures of `eclip shift` and `eclip demo` (every row has as many panels).
    """
    cols = 1 + max(len(panels) for *_, panels in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.1 * cols, 2.4 * len(rows)), squeeze=False, layout="constrained")
    for ax_row, (image, mask, label, panels) in zip(axes, rows):
        rgb = np.asarray(image.convert("RGB"))
        ax_row[0].imshow(rgb)
        ax_row[0].contour(mask, levels=[0.5], colors="white", linewidths=1)
        ax_row[0].set_title(label, fontsize=8)
        for ax, (title, heat) in zip(ax_row[1:], panels):
            ax.imshow(rgb)
            ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            ax.set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def heat_overlay(image: Image.Image, heat: np.ndarray, *, alpha: float = 0.5) -> Image.Image:
    """The image with one (H, W) map in [0, 1] blended over it in the `jet` colours of the figures.

    A picture rather than a figure: no axes or titles, a millisecond at display size, for pages
    that show many maps at once (the web demo).
    """
    heat = np.asarray(heat, dtype=np.float32)
    rgb = image.convert("RGB")
    if rgb.size != (heat.shape[1], heat.shape[0]):
        raise ValueError(f"map of shape {heat.shape} does not fit an image of size {rgb.size}")
    colours = matplotlib.colormaps["jet"](np.clip(heat, 0.0, 1.0), bytes=True)[..., :3].astype(np.float32)
    blended = (1.0 - alpha) * np.asarray(rgb, dtype=np.float32) + alpha * colours
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
