"""Backgrounds and clutter: the float32 image the objects are painted over.

Background tones are muted (no saturated hue), so shapes stand out and no flat object fill equals
a background; clutter (thin lines, dots) belongs to no class and to no mask: it is background.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from eclip.data.synthetic.vocab import BACKGROUNDS
from eclip.errors import DatasetError

_BACKGROUND_TONES = np.array(
    [(205, 205, 205), (150, 150, 150), (95, 95, 100), (228, 218, 195), (195, 178, 145),
     (110, 118, 135), (160, 168, 145), (190, 202, 215), (60, 60, 64), (238, 236, 230)],
    dtype=np.float32,
)
_CLUTTER_TONES = np.array([(20, 20, 20), (250, 250, 250), (110, 85, 60), (128, 128, 128)], dtype=np.float32)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (size, size); cached read-only, it is the same every scene."""
    y, x = np.meshgrid(np.arange(size, dtype=np.float32) + 0.5, np.arange(size, dtype=np.float32) + 0.5, indexing="ij")
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def _two_tones(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    i, j = rng.choice(len(_BACKGROUND_TONES), size=2, replace=False)
    return _BACKGROUND_TONES[i], _BACKGROUND_TONES[j]


def paint_background(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 background of the named kind."""
    a, b = _two_tones(rng)
    y, x = _grid(size)
    scale = size / 96.0
    period = rng.uniform(6.0, 14.0) * scale
    if name == "plain":
        select = None
    elif name == "striped":
        angle = rng.uniform(0, np.pi)
        select = np.floor((x * np.cos(angle) + y * np.sin(angle)) / period + rng.uniform()) % 2 == 1
    elif name == "checkered":
        oy, ox = rng.uniform(0, period, size=2)
        select = (np.floor((x + ox) / period) + np.floor((y + oy) / period)) % 2 == 1
    elif name == "dotted":
        oy, ox = rng.uniform(0, period, size=2)
        fy, fx = (y + oy) % period - period / 2, (x + ox) % period - period / 2
        select = fy * fy + fx * fx <= (0.22 * period) ** 2
    elif name == "grid":
        oy, ox = rng.uniform(0, period, size=2)
        width = max(1.0, scale)
        select = ((y + oy) % period < width) | ((x + ox) % period < width)
    elif name == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = (x - size / 2) * np.cos(angle) + (y - size / 2) * np.sin(angle)
        t = ((t / (size * 0.71)) + 1) / 2
        return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.float32)
    elif name == "noisy":
        grey = rng.normal(0.0, 22.0, size=(size, size, 1)).astype(np.float32)
        tint = rng.normal(0.0, 6.0, size=(size, size, 3)).astype(np.float32)
        return np.clip(a + grey + tint, 0, 255)
    else:
        raise DatasetError(f"unknown background {name!r}; choose from {list(BACKGROUNDS)}")
    image = np.empty((size, size, 3), dtype=np.float32)
    image[...] = a
    if select is not None:
        image[select] = b
    return image


def draw_clutter(image: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Thin line segments and small dots: texture of the background, not objects of any class."""
    size = image.shape[0]
    scale = size / 96.0
    for _ in range(count):
        tone = _CLUTTER_TONES[rng.integers(len(_CLUTTER_TONES))]
        if rng.uniform() < 0.6:  # a line segment of width ~1 px, distance test at pixel centres
            length = rng.uniform(0.04, 0.1) * size
            angle = rng.uniform(0, np.pi)
            px, py = rng.uniform(0, size, size=2)
            qx, qy = px + length * np.cos(angle), py + length * np.sin(angle)
            half = 0.6 * scale
        else:  # a dot
            px, py = rng.uniform(0, size, size=2)
            qx, qy = px, py
            half = rng.uniform(0.8, 1.6) * scale
        y0, y1 = max(0, int(min(py, qy) - half) - 1), min(size, int(max(py, qy) + half) + 2)
        x0, x1 = max(0, int(min(px, qx) - half) - 1), min(size, int(max(px, qx) + half) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = (np.arange(y0, y1) + 0.5)[:, None]
        xx = (np.arange(x0, x1) + 0.5)[None, :]
        ex, ey = qx - px, qy - py
        t = np.clip(((xx - px) * ex + (yy - py) * ey) / max(ex * ex + ey * ey, 1e-9), 0, 1)
        near = (xx - px - t * ex) ** 2 + (yy - py - t * ey) ** 2 <= half * half
        image[y0:y1, x0:x1][near] = tone

