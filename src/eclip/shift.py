"""The semantic shift, measured: how often and how much a map prefers the background to the object.

ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046) shows that vanilla CLIP's image-text similarity
map (ITSM) lights up the background ("opposite visualization"). We put numbers on it (ECLIP.md
sections 2 and 4), per (image, class present in it), on the map min-max normalised over space:
- inverted rate: the share of pairs whose mean inside the class mask is lower than outside;
- score contrast: mean inside minus mean outside; its average is the mean score contrast (mSC),
  negative for an opposite visualization;
- foreground IoU at the best threshold: the map binarised at one threshold for the whole set
  (grid 0.00..1.00 step 0.05, chosen to maximise the mean), IoU with the class mask;
- zero-shot accuracy of the model's own pooled embedding (multi-label top-1, as
  `eclip.metrics.zeroshot`), so a fix of the map that costs recognition shows.
This is the library side of `eclip shift` and of the ECLIP ablation (`bench/eclip_ablation.py`).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eclip.data.sample import Sample
from eclip.methods.base import Method
from eclip.models.adapter import DenseCLIP
from eclip.prompts import encode_prompts

THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.05), 2)


@dataclass
class ShiftAccumulator:
    """Streaming state of the shift metrics over (image, class) pairs; `compute()` summarises.

    Direction: contrast and IoU higher is better, inverted rate lower is better.
    """

    contrasts: list[float] = field(default_factory=list)
    intersections: list[np.ndarray] = field(default_factory=list)
    unions: list[np.ndarray] = field(default_factory=list)
    pointing: list[bool] = field(default_factory=list)

    def update(self, score: np.ndarray, mask: np.ndarray, ignore: np.ndarray | None = None) -> None:
        """One pair: `score` (H, W) in [0, 1], `mask` (H, W) bool, `ignore` (H, W) bool or None."""
        valid = np.ones_like(mask, dtype=bool) if ignore is None else ~ignore
        inside, outside = score[mask & valid], score[~mask & valid]
        if inside.size == 0 or outside.size == 0:
            return
        self.contrasts.append(float(inside.mean() - outside.mean()))
        binary = score[valid][None, :] >= THRESHOLDS[:, None]
        target = mask[valid][None, :]
        self.intersections.append((binary & target).sum(axis=1))
        self.unions.append((binary | target).sum(axis=1))
        self.pointing.append(bool(mask[np.unravel_index(np.argmax(np.where(valid, score, -1)), score.shape)]))

    def compute(self) -> dict[str, float]:
        n = len(self.contrasts)
        if n == 0:
            return {"pairs": 0}
        ious = np.stack(self.intersections) / np.maximum(np.stack(self.unions), 1)
        per_threshold = ious.mean(axis=0)
        best = int(per_threshold.argmax())
        contrasts = np.asarray(self.contrasts)
        return {
            "pairs": n,
            "inverted_rate": float((contrasts < 0).mean()),
            "score_contrast": float(contrasts.mean()),
            "fg_iou": float(per_threshold[best]),
            "threshold": float(THRESHOLDS[best]),
            "pointing": float(np.mean(self.pointing)),
        }


def synthetic_samples(seed: int, n: int, image_size: int = 96, max_objects: int = 3) -> list[Sample]:
    """`n` held-out synthetic scenes of `seed` as Samples (rendered in memory, exact masks)."""
    from PIL import Image

    from eclip.data.synthetic import SceneConfig, SceneStream

    config = SceneConfig(image_size=image_size, max_objects=max_objects)
    return [Sample(image_id=f"{seed}-{i}", image=Image.fromarray(scene.image), masks=dict(scene.class_masks),
                   meta={"caption": scene.caption})
            for i, scene in enumerate(SceneStream(seed, config, count=n))]


def _batches(samples: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def measure(
    model: DenseCLIP,
    methods: dict[str, Method],
    samples: Iterable[Sample],
    classnames: Sequence[str],
    templates: str | Sequence[str] | None = "single",
    batch_size: int = 32,
) -> dict[str, dict[str, float]]:
    """Shift metrics of each method's maps on `samples`, and the model's zero-shot accuracy.

    Every class of `classnames` is one text (prompt `templates`); each class present in an image
    is explained on its own. Returns {method name: metrics, "zero_shot": {top1, n}}.
    """
    text = encode_prompts(model, list(classnames), templates)
    accumulators = {name: ShiftAccumulator() for name in methods}
    hits = total = 0
    for batch in _batches(samples, batch_size):
        images = model.preprocess([s.image for s in batch])
        predicted = (F.normalize(model.encode_image(images).float(), dim=-1) @ text.T).argmax(dim=-1).tolist()
        hits += sum(classnames[p] in s.masks for s, p in zip(batch, predicted))
        total += len(batch)
        for name, method in methods.items():
            scores = method.explain(model, images, text, text_labels=list(classnames)).scores
            for i, sample in enumerate(batch):
                full = F.interpolate(scores[i : i + 1], size=sample.size, mode="bilinear", align_corners=False)[0]
                full = full.clamp(0, 1).cpu().numpy()
                for cls, mask in sample.masks.items():
                    accumulators[name].update(full[classnames.index(cls)], mask, sample.ignore)
    out = {name: acc.compute() for name, acc in accumulators.items()}
    out["zero_shot"] = {"top1": hits / max(1, total), "n": total}
    return out


def shift_figure(
    samples: Sequence[Sample],
    panels: Sequence[tuple[str, DenseCLIP, Method]],
    classnames: Sequence[str],
    out: Path,
    templates: str | Sequence[str] | None = "single",
) -> Path:
    """A grid: per sample (rows), the image with its first class's mask outlined, then each panel's map.

    `panels` are (title, model, method), e.g. ITSM of the vanilla model, ITSM of the ECLIP model,
    and the free attention.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(samples), len(panels) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for r, sample in enumerate(samples):
        cls = next(iter(sample.masks))
        rgb = np.asarray(sample.image.convert("RGB"))
        axes[r, 0].imshow(rgb)
        axes[r, 0].contour(sample.masks[cls], levels=[0.5], colors="white", linewidths=1)
        axes[r, 0].set_title(cls, fontsize=8)
        for c, (title, model, method) in enumerate(panels, start=1):
            with torch.no_grad():
                text = encode_prompts(model, list(classnames), templates)
                scores = method.explain(model, model.preprocess([sample.image]), text, text_labels=list(classnames)).scores
            heat = F.interpolate(scores[:, classnames.index(cls)][None], size=sample.size, mode="bilinear",
                                 align_corners=False)[0, 0].clamp(0, 1).cpu().numpy()
            axes[r, c].imshow(rgb)
            axes[r, c].imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            mask = sample.masks[cls]
            axes[r, c].set_title(f"{title}\nin-out {heat[mask].mean() - heat[~mask].mean():+.2f}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
