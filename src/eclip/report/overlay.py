"""Maps drawn over images, the one way every figure and page draws them.

`eclip explain`'s overlays, the figures of `eclip demo`, `eclip shift` and `eclip report`, and the
web demo's tiles all draw a map like this:

- the image underneath in gray (its luminance, contrast reduced), so that the only colour of a
  map panel is the map's: a blue object under a high value keeps the value's colour instead of
  turning purple, as it did under `jet` over the colour image; the image itself is shown once,
  in colour, in the first panel;
- the map in `inferno` (perceptually uniform: equal steps of the map look like equal steps;
  readable in grayscale and by colour-blind readers) at `ALPHA` over that gray;
- one colour bar per figure: every map is min-max normalised on its own (`eclip.methods.base.
  maps_to_size`), so 0 is each map's lowest value and 1 its highest, the same scale in every
  panel;
- a class mask outlined by a white line with a black edge, which shows on light and dark
  backgrounds alike, on the image and on every map of its row;
- titles wrapped to the panel's width and, past `TITLE_LINES` lines, shortened with "…" (the
  full texts are in the JSON written beside a figure).

Panels are placed by a fixed layout computed here (no layout engine: a figure of 50 panels draws
in a fraction of the time `constrained_layout` took), and every PNG is written atomically.
"""
from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects as path_effects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from eclip.report.units import SC_CAPTION, format_sc  # noqa: E402
from eclip.writing import atomic_write  # noqa: E402

#: The colour map of every map, and its opacity over the gray image.
CMAP = "inferno"
ALPHA = 0.65
#: The gray image under a map: GRAY_LOW + GRAY_SPAN x luminance (in [0, 1]).
GRAY_LOW, GRAY_SPAN = 0.3, 0.45
#: Title lines a panel shows before its text is shortened with "…".
TITLE_LINES = 3
#: What the colour bar says.
BAR_LABEL = "normalised map value"
BAR_TICKS = {0.0: "0 its min", 0.5: "0.5", 1.0: "1 its max"}

_FONT = 8  # points, every title
_LINE = _FONT * 1.3 / 72  # inches per title line
_MARGIN = 0.1  # inches around the panels
_GAP = 0.08  # inches between panels
_BAR = 1.05  # inches right of the panels for the colour bar and its labels
_DPI = 100


def _gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) float32 gray in [GRAY_LOW, GRAY_LOW + GRAY_SPAN]."""
    luminance = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
    return np.repeat((GRAY_LOW + GRAY_SPAN * luminance)[..., None], 3, axis=-1)


def blend(rgb: np.ndarray, heat: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """(H, W, 3) uint8: the map `heat` (H, W) in [0, 1] in `CMAP` over the gray of the image `rgb` (H, W, 3) uint8."""
    heat = np.asarray(heat, dtype=np.float32)
    if rgb.shape[:2] != heat.shape:
        raise ValueError(f"map of shape {heat.shape} does not fit an image of size {rgb.shape[1::-1]}")
    colours = matplotlib.colormaps[CMAP](np.clip(heat, 0.0, 1.0))[..., :3].astype(np.float32)
    mixed = (1.0 - alpha) * _gray(rgb) + alpha * colours
    return np.clip(mixed * 255.0 + 0.5, 0, 255).astype(np.uint8)


def heat_overlay(image: Image.Image, heat: np.ndarray, *, alpha: float = ALPHA) -> Image.Image:
    """The image with one (H, W) map in [0, 1] over it, as the figures draw it (`blend`).

    A picture rather than a figure: no axes or titles, a millisecond at display size, for pages
    that show many maps at once (the web demo).
    """
    return Image.fromarray(blend(np.asarray(image.convert("RGB")), heat, alpha))


def bar_colours(n: int = 256) -> np.ndarray:
    """(n, 3) float colours of the scale from 0 to 1 as they look over a mid-gray pixel (what the colour bars show)."""
    values = matplotlib.colormaps[CMAP](np.linspace(0.0, 1.0, n))[:, :3]
    return (1.0 - ALPHA) * (GRAY_LOW + GRAY_SPAN * 0.5) + ALPHA * values


def colour_bar_image(length: int = 256, thickness: int = 14) -> Image.Image:
    """The scale as a horizontal strip, 0 on the left and 1 on the right, for pages that label it themselves."""
    row = np.clip(bar_colours(length) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(row[None], thickness, axis=0))


def wrap_title(title: str, width: int, max_lines: int = TITLE_LINES) -> str:
    """`title` wrapped at `width` characters, its lines (each `\\n`-separated part at least one) at most `max_lines`;
    a part that does not fit ends in "…"."""
    parts = title.split("\n")
    lines: list[str] = []
    for i, part in enumerate(parts):
        room = max(1, max_lines - len(lines) - (len(parts) - i - 1))
        lines += textwrap.wrap(part, width, max_lines=room, placeholder=" …") or [""]
    return "\n".join(lines)


def _chars(width_in: float) -> int:
    """Characters of an 8-point title that fit on `width_in` inches."""
    return max(8, int(width_in * 72 / (_FONT * 0.64)))  # a bold 8-point character is about 0.6 em wide


@dataclass
class _Layout:
    """Panels in a grid, in inches from the top left: each row a header of `row_lines` title lines above its panels;
    `head` inches on top for a title and column headers; a colour bar right of the first row."""

    rows: int
    cols: int
    panel: float
    row_lines: int
    head: float = 0.0

    @property
    def size(self) -> tuple[float, float]:
        width = 2 * _MARGIN + self.cols * self.panel + (self.cols - 1) * _GAP + _BAR
        return width, 2 * _MARGIN + self.head + self.rows * self._row

    @property
    def _row(self) -> float:
        return self.row_lines * _LINE + self.panel + _GAP

    def rect(self, row: int, col: int) -> tuple[float, float, float, float]:
        """[left, bottom, width, height] of a panel, in figure fractions."""
        width, height = self.size
        left = _MARGIN + col * (self.panel + _GAP)
        top = _MARGIN + self.head + row * self._row + self.row_lines * _LINE
        return left / width, 1 - (top + self.panel) / height, self.panel / width, self.panel / height

    def figure(self) -> tuple[plt.Figure, np.ndarray]:
        fig = plt.figure(figsize=self.size, dpi=_DPI)
        axes = np.empty((self.rows, self.cols), dtype=object)
        for r in range(self.rows):
            for c in range(self.cols):
                axes[r, c] = fig.add_axes(self.rect(r, c))
                axes[r, c].set_axis_off()
        left, bottom, _, height = self.rect(0, self.cols - 1)
        width = self.size[0]
        bar = fig.add_axes([left + (self.panel + 0.15) / width, bottom, 0.14 / width, height])
        bar.imshow(bar_colours()[::-1, None, :], aspect="auto", extent=(0, 1, 0, 1))
        bar.set_xticks([])
        bar.yaxis.tick_right()
        bar.set_yticks(list(BAR_TICKS), list(BAR_TICKS.values()), fontsize=7)
        bar.set_ylabel(BAR_LABEL, fontsize=6.5)
        bar.yaxis.set_label_position("right")
        return fig, axes


def _title(ax, text: str) -> None:
    """`text` above the panel `ax`, its last line just above it (no layout pass: a plain text artist)."""
    ax.text(0.5, 1.02, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=_FONT, linespacing=1.15)


def _outline(ax, mask: np.ndarray) -> None:
    """The edge of `mask` (H, W) as a white line with a black border."""
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors="white", linewidths=1.1,
                   path_effects=[path_effects.Stroke(linewidth=2.6, foreground="black"), path_effects.Normal()])


def save_png(fig: plt.Figure, out: Path, dpi: int = _DPI) -> Path:
    """Write `fig` to `out` as a PNG, atomically (`eclip.writing.atomic_write`), and close it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)
    return out


def overlay_panels(
    image: Image.Image,
    maps: np.ndarray,
    titles: Sequence[str],
    out: Path,
    *,
    columns: int = 5,
    suptitle: str | None = None,
) -> Path:
    """Write a PNG: the image, then each (H, W) map in [0, 1] of `maps` (K, H, W) over it under its title.

    Panels are laid out in rows of `columns`, with one colour bar; `eclip explain`'s overlays.
    """
    k = len(maps)
    cols = min(columns, k + 1)
    panel = 2.3
    width = _chars(panel)
    shown = [wrap_title(t, width) for t in ["image", *titles]]
    lines = max(s.count("\n") + 1 for s in shown)
    layout = _Layout(int(np.ceil((k + 1) / cols)), cols, panel, lines, head=(1.6 * _LINE if suptitle else 0.0))
    fig, axes = layout.figure()
    rgb = np.asarray(image.convert("RGB"))
    flat = axes.flat
    flat[0].imshow(rgb)
    for ax, heat in zip(flat[1:], maps):
        ax.imshow(blend(rgb, heat))
    for ax, text in zip(flat, shown):
        _title(ax, text)
    if suptitle:
        fig.text(0.5, 1 - _MARGIN / layout.size[1], suptitle, ha="center", va="top", fontsize=10)
    return save_png(fig, out)


def score_titles(texts: Sequence[str], cosine: Sequence[float], probability: Sequence[float]) -> list[str]:
    """The panel titles of `eclip explain`'s overlays: each text with its cosine and probability."""
    return [f"{t}\ncos {c:.3f} · p {p:.2f}" for t, c, p in zip(texts, cosine, probability)]


def map_grid(rows: Sequence[tuple[Image.Image, np.ndarray, str, Sequence[tuple[str, np.ndarray]]]], columns: Sequence[str],
             out: Path, *, title: str | None = None, panel: float = 1.9) -> Path:
    """Write a PNG grid under `columns` (the header of each map column) with one row per (image, mask, label, panels):
    the image with `mask` (H, W) outlined under `label`, then each (caption, (H, W) map in [0, 1]) of `panels` over
    the gray image, the mask outlined again, its caption above it; panels `panel` inches (100 px an inch) a side.

    The figures of `eclip demo`, `eclip shift` and the examples of `eclip report` (vanilla and ECLIP
    of one image side by side, on one scale).
    """
    cols = 1 + max(len(panels) for *_, panels in rows)
    width = _chars(panel)
    header = [wrap_title(c, width) for c in columns]
    head_lines = max([h.count("\n") + 1 for h in header] + [0])
    labels = [wrap_title(label, width, 2) for _, _, label, _ in rows]
    row_lines = max([1] + [lbl.count("\n") + 1 for lbl in labels])
    head = (head_lines + 0.4) * _LINE + (1.6 * _LINE if title else 0.0)
    layout = _Layout(len(rows), cols, panel, row_lines, head=head)
    fig, axes = layout.figure()
    if title:
        fig.text(0.5, 1 - _MARGIN / layout.size[1], title, ha="center", va="top", fontsize=10)
    for c, text in enumerate(header, start=1):
        left, bottom, w, h = layout.rect(0, c)
        fig.text(left + w / 2, bottom + h + (row_lines * _LINE + 0.3 * _LINE) / layout.size[1], text, ha="center", va="bottom",
                 fontsize=_FONT, fontweight="bold", linespacing=1.15)
    for ax_row, (image, mask, _, panels), shown in zip(axes, rows, labels):
        rgb = np.asarray(image.convert("RGB"))
        mask = np.asarray(mask, dtype=bool)
        ax_row[0].imshow(rgb)
        _outline(ax_row[0], mask)
        _title(ax_row[0], shown)
        for ax, (caption, heat) in zip(ax_row[1:], panels):
            ax.imshow(blend(rgb, heat))
            _outline(ax, mask)
            _title(ax, wrap_title(caption, width, row_lines))
    return save_png(fig, out)


def safe_name(text: str) -> str:
    """`text` as a file name: letters, digits, '.', '_' and '-' only, at most its last 60 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-60:] or "x"


def image_figure(image_id: str, image: Image.Image, classes: Sequence[str], masks: np.ndarray,
                 columns: Sequence[tuple[str, np.ndarray, Sequence[float]]], out: Path) -> Path:
    """Write the PNG `out`: one row per class present (its mask of `masks` (P, H, W) outlined), one column per
    (label, maps (P, H, W), score contrasts (P,) as fractions) of `columns`, each map captioned with its SC %.

    The report's example of one image: the maps of every record (e.g. vanilla and ECLIP) side by side.
    """
    rows = [(image, masks[p], f"'{cls}'", [(format_sc(contrasts[p]), maps[p]) for _, maps, contrasts in columns])
            for p, cls in enumerate(classes)]
    return map_grid(rows, [label for label, *_ in columns], out, title=f"image {image_id} · {SC_CAPTION}", panel=1.55)
