"""The story in one figure per image: vanilla CLIP's map, ECLIP's map, and the free attention.

For each image of a dataset with masks (the bundled samples by default), one row per class
present and one column per panel: the vanilla model's ITSM, the ITSM of its fine-tunes (ECLIP's
masked max pooling, and any other head shipped under its own name) and the free attention the
ECLIP masks are taken from. Each panel prints its score contrast (mean of the
min-max normalised map inside the class mask minus outside, ECLIP.md section 4): negative means
the map prefers the background, the semantic shift ECLIP sets out to fix. Maps and contrasts are
made as `eclip shift` and `eclip evaluate` make them (`eclip.shift.panel_maps`, `ScoreContrast`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eclip.data.sample import Sample
from eclip.report.overlay import map_grid
from eclip.shift import Panel, pair_contrast, panel_maps


def story_figure(
    sample: Sample,
    panels: Sequence[Panel],
    classnames: Sequence[str],
    out: Path,
    templates: str | Sequence[str] | None = "single",
) -> dict[str, dict[str, float]]:
    """Write the figure of `sample` to `out`; returns {class: {panel title: score contrast}}."""
    present = [c for c in classnames if c in sample.masks]
    maps = [panel_maps(panel, sample, present, classnames, templates) for panel in panels]
    contrasts = {cls: {p.title: pair_contrast(m[row], sample, cls) for p, m in zip(panels, maps)} for row, cls in enumerate(present)}
    rows = [(sample.image, sample.masks[cls], f"'{cls}'",
             [(f"{p.title}\ncontrast {contrasts[cls][p.title]:+.2f}", m[row].numpy()) for p, m in zip(panels, maps)])
            for row, cls in enumerate(present)]
    map_grid(rows, out)
    return contrasts


def mean_contrasts(per_image: Sequence[dict[str, dict[str, float]]]) -> dict[str, float]:
    """Panel title -> mean score contrast over every (image, class) pair of the figures."""
    values: dict[str, list[float]] = {}
    for contrasts in per_image:
        for by_panel in contrasts.values():
            for title, value in by_panel.items():
                values.setdefault(title, []).append(value)
    return {title: float(np.mean(v)) for title, v in values.items()}
