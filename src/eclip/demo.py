"""The story in one figure per image: vanilla CLIP's map, ECLIP's map, and the free attention.

For each image of a dataset with masks (the bundled samples by default), one row per class
present and one column per panel: the vanilla model's ITSM, the ITSM of its fine-tunes (ECLIP's
masked max pooling, and any other head shipped under its own name) and the free attention the
ECLIP masks are taken from. Each panel is captioned with its SC, the pair's score contrast in
percent (100 x (mean of the min-max normalised map inside the class mask - mean outside); ECLIP,
Li, Wang, Duan, Li 2022, arXiv 2209.07046): negative means the map prefers the background, the
semantic shift ECLIP sets out to fix. Maps, contrasts and their means (mSC %) come from the
evaluation's own path (`eclip.evaluation.maps.class_maps`, `ScoreContrast.per_pair`,
`MetricSuite`), so they are the numbers `eclip evaluate` and `eclip shift` give for the same
images; names and units are `eclip.report.units`'.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch

from eclip.batching import batched
from eclip.errors import OptionError
from eclip.evaluation.maps import Panel, Prepared, panel_maps, prepare
from eclip.evaluation.suite import MetricSuite

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What `run_demo` wrote: per image {class: {panel title: SC %}}, each panel's mSC % (the mean of its SC over
    every (image, class) pair), the figures, and the images the dataset could not use."""

    per_image: dict[str, dict[str, dict[str, float | None]]]
    msc: dict[str, float | None]
    figures: list[Path]
    skipped: list[tuple[str, str]]

    def summary(self) -> str:
        """What `eclip demo` prints: each panel's mSC % over the (image, class) pairs, labelled as every table labels it."""
        from eclip.report.units import format_value, label

        pairs = sum(len(classes) for classes in self.per_image.values())
        lines = [f"  {title:<28} {format_value('msc', value):>6}" for title, value in self.msc.items()]
        return f"{label('msc')} over {pairs} (image, class) pairs (> 0: the map is on the object)\n" + "\n".join(lines)


def demo_panels(models: Sequence[str], device: str = "cpu") -> list[Panel]:
    """Per vanilla model: its ITSM, the ITSM of each bundled fine-tune of it (ECLIP's `-eclip` first), its free attention."""
    from eclip.methods.base import get_method
    from eclip.models.loading import bundled_fine_tunes, load_model

    itsm, free = get_method("itsm"), get_method("free_attention")
    tunes = bundled_fine_tunes()
    panels: list[Panel] = []
    for name in models:
        vanilla = load_model(name, device=device)
        partners = tunes.get(name, [])
        if f"{name}-eclip" not in partners:
            logger.warning("no ECLIP fine-tune of %s is bundled; showing it without", name)
        panels.append(Panel(f"{name} ITSM", vanilla, itsm))
        panels += [Panel(f"{partner} ITSM", load_model(partner, device=device), itsm) for partner in partners]
        panels.append(Panel(f"{name} free attn", vanilla, free))
    return panels


def story_figure(sample: Prepared, titles: Sequence[str], heats: Sequence[torch.Tensor], contrasts: Sequence[torch.Tensor],
                 out: Path) -> dict[str, dict[str, float | None]]:
    """Write the figure of `sample` to `out`: per panel (`titles`) its (P, H, W) maps and (P,) contrasts of the
    sample's classes (`ClassMaps.per_sample`, `ClassMaps.contrasts`); returns {class: {panel title: SC %}}."""
    from eclip.report.overlay import map_grid
    from eclip.report.units import SC_CAPTION, format_sc, sc_percent

    rows = [(sample.image, sample.masks[row].numpy(), f"'{cls}'",
             [(format_sc(float(c[row])), h[row].numpy()) for h, c in zip(heats, contrasts)])
            for row, cls in enumerate(sample.classes)]
    map_grid(rows, titles, out, title=f"image {sample.image_id} · one row per class present · {SC_CAPTION}")
    return {cls: {title: sc_percent(float(c[row])) for title, c in zip(titles, contrasts)} for row, cls in enumerate(sample.classes)}


def run_demo(
    out: Path,
    models: Sequence[str] = ("synth-vit", "synth-rn"),
    data: Path | None = None,
    templates: str | Sequence[str] | None = "single",
    device: str = "cpu",
    batch_size: int = 16,
    progress: bool = True,
    n: int | None = None,
) -> DemoResult:
    """The library side of `eclip demo`: OUT/<image id>.png per image of `data` (a folder `eclip synth`
    wrote; the bundled samples by default), its first `n` usable images (None: all), and
    OUT/contrasts.json {"unit": "percent", "per_image": {image: {class: {panel: SC}}}, "msc": {panel: mSC}}.

    The images are explained `batch_size` at a time, every panel's maps of a batch in one forward.
    """
    from tqdm import tqdm

    from eclip.data.bundled import samples_root
    from eclip.data.synthetic import SyntheticDataset
    from eclip.writing import atomic_write_text

    if n is not None and n < 1:
        raise OptionError(f"n={n}: the number of images to draw must be >= 1 (or None for all)")
    dataset = SyntheticDataset(data or samples_root())
    classnames = list(dataset.classnames)
    panels = demo_panels(models, device)
    suites = {p.title: MetricSuite(deletion_steps=None) for p in panels}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_image, figures, unusable = {}, [], []
    total = len(dataset) if n is None else min(n, len(dataset))
    images = tqdm(islice(dataset, total), total=total, desc="demo", unit="image", file=sys.stderr, disable=not progress)
    for samples in batched(images, batch_size):
        prepared = [prepare(s, classnames) for s in samples]
        unusable += [(s.image_id, why) for s, why in zip(samples, prepared) if isinstance(why, str)]
        batch = [p for p in prepared if not isinstance(p, str)]
        if not batch:
            continue
        maps = panel_maps(panels, batch, classnames, templates)
        for panel, class_maps in zip(panels, maps):
            suites[panel.title].update_class_maps(class_maps)
        heats, contrasts = [m.per_sample() for m in maps], [m.contrasts() for m in maps]
        for i, sample in enumerate(batch):
            figures.append(out / f"{sample.image_id}.png")
            per_image[sample.image_id] = story_figure(sample, [p.title for p in panels], [h[i] for h in heats], [c[i] for c in contrasts],
                                                      figures[-1])
    msc = {title: suite.scores()["msc"] for title, suite in suites.items()}
    atomic_write_text(out / "contrasts.json", json.dumps({"unit": "percent", "per_image": per_image, "msc": msc}, indent=2))
    return DemoResult(per_image, msc, figures, [(str(i), why) for i, why in dataset.skipped] + unusable)
