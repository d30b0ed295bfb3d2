"""The shapes' geometry: each shape is a test on unit coordinates (u right, v down), inside the unit disk.

Shapes are rasterised at pixel centres with no antialiasing, so an object's mask is exactly the
set of pixels its test accepts; the scene is then painted through those masks (see `scene`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of many points against one polygon, (N, 2) vertices."""
    inside = np.zeros(u.shape, dtype=bool)
    previous = vertices[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        for vertex in vertices:
            (xi, yi), (xj, yj) = vertex, previous
            crosses = (yi > v) != (yj > v)
            inside ^= crosses & (u < (xj - xi) * (v - yi) / (yj - yi) + xi)
            previous = vertex
    return inside


def _regular(n: int, radius: float, phase: float) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star_vertices() -> np.ndarray:
    angles = -np.pi / 2 + np.pi * np.arange(10) / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_A, _L = 0.3, 0.92
_CROSS = np.array([(_A, -_L), (_A, -_A), (_L, -_A), (_L, _A), (_A, _A), (_A, _L),
                   (-_A, _L), (-_A, _A), (-_L, _A), (-_L, -_A), (-_A, -_A), (-_A, -_L)])
_TRIANGLE = _regular(3, 1.0, -np.pi / 2)
_SQUARE = _regular(4, 0.98, np.pi / 4)
_STAR = _star_vertices()


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # (x^2 + y^2 - 1)^3 <= x^2 y^3, y up; its extent is the disk of radius 1.25 around (0, 0.25).
    x, y = 1.26 * u, 0.25 - 1.26 * v
    return (x * x + y * y - 1) ** 3 <= x * x * y**3


SHAPE_TESTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v <= 0.9**2,
    "square": lambda u, v: _polygon(u, v, _SQUARE),
    "triangle": lambda u, v: _polygon(u, v, _TRIANGLE),
    "star": lambda u, v: _polygon(u, v, _STAR),
    "cross": lambda u, v: _polygon(u, v, _CROSS),
    "heart": _heart,
    "ring": lambda u, v: (u * u + v * v <= 0.95**2) & (u * u + v * v >= 0.52**2),
    "crescent": lambda u, v: (u * u + v * v <= 0.95**2) & ((u - 0.45) ** 2 + v * v > 0.75**2),
}


@dataclass
class Placed:
    """An object's full (unoccluded) footprint: a window of the image and its mask in it."""

    shape: str
    colour: str
    cx: float
    cy: float
    radius: float
    rotation: float
    window: tuple[slice, slice]
    mask: np.ndarray
    u: np.ndarray
    v: np.ndarray


def place(shape: str, colour: str, cx: float, cy: float, radius: float, rotation: float, size: int) -> Placed:
    """Rasterise one shape at pixel centres within its bounding window (only those pixels are tested)."""
    y0, y1 = max(0, int(np.floor(cy - radius)) - 1), min(size, int(np.ceil(cy + radius)) + 1)
    x0, x1 = max(0, int(np.floor(cx - radius)) - 1), min(size, int(np.ceil(cx + radius)) + 1)
    dy = (np.arange(y0, y1, dtype=np.float64) + 0.5 - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float64) + 0.5 - cx)[None, :]
    c, s = np.cos(rotation), np.sin(rotation)
    u = (dx * c + dy * s) / radius
    v = (-dx * s + dy * c) / radius
    mask = SHAPE_TESTS[shape](u, v)
    return Placed(shape, colour, cx, cy, radius, rotation, (slice(y0, y1), slice(x0, x1)), mask, u, v)


