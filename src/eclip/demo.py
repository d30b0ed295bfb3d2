"""The story in one figure per image: vanilla CLIP's map, ECLIP's map, and the free attention.

For each image of a dataset with masks (the bundled samples by default), one row per class
present and one column per panel: the vanilla model's ITSM, the ECLIP model's ITSM and the free
attention the ECLIP masks are taken from. Each panel prints its score contrast (mean of the
min-max normalised map inside the class mask minus outside, ECLIP.md section 4): negative means
the map prefers the background, the semantic shift ECLIP sets out to fix.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eclip.data.sample import Sample
from eclip.methods.base import Method
from eclip.models.adapter import DenseCLIP
from eclip.prompts import encode_prompts


@dataclass
class Panel:
    """One column of the figure: a model's map by one method, under a short title."""

    title: str
    model: DenseCLIP
    method: Method


def score_contrast(heat: np.ndarray, mask: np.ndarray) -> float:
    """Mean of `heat` inside `mask` minus outside (both non-empty), the per-pair term of mSC."""
    return float(heat[mask].mean() - heat[~mask].mean())


def panel_maps(panel: Panel, sample: Sample, classnames: Sequence[str], templates: str | Sequence[str] | None) -> np.ndarray:
    """(C, H, W) maps in [0, 1] of every class name for `sample`, at the image's own size."""
    text = encode_prompts(panel.model, list(classnames), templates)
    images = panel.model.preprocess([sample.image])
    with torch.set_grad_enabled(panel.method.needs_grad):
        scores = panel.method.explain(panel.model, images, text, text_labels=list(classnames)).scores
    full = F.interpolate(scores.detach().float(), size=sample.size, mode="bilinear", align_corners=False)[0]
    return full.clamp(0, 1).cpu().numpy()


def story_figure(
    sample: Sample,
    panels: Sequence[Panel],
    classnames: Sequence[str],
    out: Path,
    templates: str | Sequence[str] | None = "single",
) -> dict[str, dict[str, float]]:
    """Write the figure of `sample` to `out`; returns {class: {panel title: score contrast}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [c for c in classnames if c in sample.masks]
    maps = [panel_maps(p, sample, classnames, templates) for p in panels]
    rows, cols = len(present), len(panels) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.4 * rows), squeeze=False, layout="constrained")
    rgb = np.asarray(sample.image.convert("RGB"))
    contrasts: dict[str, dict[str, float]] = {}
    for r, cls in enumerate(present):
        mask = sample.masks[cls]
        axes[r, 0].imshow(rgb)
        axes[r, 0].contour(mask, levels=[0.5], colors="white", linewidths=1)
        axes[r, 0].set_title(f"'{cls}'", fontsize=8)
        contrasts[cls] = {}
        for c, (panel, panel_map) in enumerate(zip(panels, maps), start=1):
            heat = panel_map[classnames.index(cls)]
            contrast = score_contrast(heat, mask)
            contrasts[cls][panel.title] = contrast
            axes[r, c].imshow(rgb)
            axes[r, c].imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[r, c].set_title(f"{panel.title}\ncontrast {contrast:+.2f}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return contrasts


def mean_contrasts(per_image: Sequence[dict[str, dict[str, float]]]) -> dict[str, float]:
    """Panel title -> mean score contrast over every (image, class) pair of the figures."""
    values: dict[str, list[float]] = {}
    for contrasts in per_image:
        for by_panel in contrasts.values():
            for title, value in by_panel.items():
                values.setdefault(title, []).append(value)
    return {title: float(np.mean(v)) for title, v in values.items()}
