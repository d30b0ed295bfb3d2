"""The class maps of a batch of samples: the one path from samples to the maps every metric scores.

ECLIP's protocol (Li, Wang, Duan, Li 2022, arXiv 2209.07046, section 4): every class present in
an image is explained on its own, with the prompts of *all* the dataset's classes as the text
set; each map is min-max normalised and resized to the image (`eclip.methods.base.maps_to_size`).
In code:
1. `prepare` checks a sample and picks its present classes (indices into the class list);
2. the caller encodes the class prompts once (`class_text_features`);
3. `class_maps` runs one preprocessing and one `explain_raw` for the whole batch (every class at
   once) and keeps the maps of the present classes, resized per group of same-size images.
`eclip evaluate` (`sources.ModelSource`), the report's examples, `eclip shift`, `eclip demo` all
take their maps from here, and score them with `suite.MetricSuite` (or, for a figure's caption,
`ScoreContrast.per_pair` through `ClassMaps.contrasts`), so one image, model, method and class
give one map and one contrast everywhere.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from eclip.methods.base import Method, maps_to_size
from eclip.metrics.semantic_shift import ScoreContrast
from eclip.models.adapter import DenseCLIP


@dataclass
class Prepared:
    """One sample checked and turned into tensors: its present classes as (P, H, W) masks.

    class_index: (P,) indices of the present classes in the dataset's class list.
    classes: their names; masks: (P, H, W) bool; ignore: (H, W) bool or None;
    defined: (P,) bool, pairs with a valid foreground and background pixel (the others are
    dropped by every metric, and get no perturbation curve).
    """

    image_id: str
    image: Image.Image
    class_index: list[int]
    classes: list[str]
    masks: torch.Tensor
    ignore: torch.Tensor | None
    defined: list[bool]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.height, self.image.width


def prepare(sample, classnames: Sequence[str]) -> Prepared | str:
    """Check one sample and make its tensors; a string says why it cannot be evaluated (a counted skip)."""
    lookup = {c: i for i, c in enumerate(classnames)}
    unknown = [c for c in sample.masks if c not in lookup]
    if unknown:
        return f"class {unknown[0]!r} is not one of the dataset's {len(classnames)} classes"
    if not sample.masks:
        return "no class present"
    size = sample.size
    bad = [c for c, m in sample.masks.items() if np.shape(m) != size]
    if bad:
        return f"mask of {bad[0]!r} has shape {np.shape(sample.masks[bad[0]])}, the image is {size}"
    if sample.ignore is not None and np.shape(sample.ignore) != size:
        return f"ignore mask has shape {np.shape(sample.ignore)}, the image is {size}"
    classes = list(sample.masks)
    masks = np.stack([np.asarray(sample.masks[c], dtype=bool) for c in classes])
    ignore = None if sample.ignore is None else np.asarray(sample.ignore, dtype=bool)
    valid = ~ignore if ignore is not None else np.ones(size, dtype=bool)
    defined = [bool((m & valid).any() and (~m & valid).any()) for m in masks]  # as metrics.base.defined_pairs
    return Prepared(sample.image_id, sample.image, [lookup[c] for c in classes], classes, torch.from_numpy(masks),
                    None if ignore is None else torch.from_numpy(ignore), defined)


def class_text_features(model: DenseCLIP, classnames: Sequence[str], templates: str | Sequence[str] | None,
                        chunk: int = 8) -> torch.Tensor:
    """(K, D) prompt-ensemble embeddings of the class names, a few classes per text forward (bounded memory)."""
    from eclip.prompts import encode_prompts

    names = list(classnames)
    return torch.cat([encode_prompts(model, names[i : i + chunk], templates) for i in range(0, len(names), chunk)])


def same_size_groups(batch: Sequence[Prepared], max_pixels: int = 1 << 23) -> list[list[int]]:
    """Indices of `batch` grouped by image size, each group at most `max_pixels` pair-pixels.

    The maps of a group are resized, and its metrics computed, in one call on (P, H, W) tensors
    instead of one call per image: far fewer small operations (each a thread-pool round trip),
    with memory still bounded.
    """
    groups: dict[tuple[int, int], list[list[int]]] = {}
    for i, p in enumerate(batch):
        chunks = groups.setdefault(p.size, [[]])
        used = sum(len(batch[j].classes) for j in chunks[-1]) * p.size[0] * p.size[1]
        if chunks[-1] and used + len(p.classes) * p.size[0] * p.size[1] > max_pixels:
            chunks.append([])
        chunks[-1].append(i)
    return [chunk for chunks in groups.values() for chunk in chunks]


@dataclass
class ClassMaps:
    """The maps of every present class of a batch, as `class_maps` made them.

    Attributes:
        batch: the B prepared samples.
        raw: (B, K, h, w) the method's raw maps of every class, on the model's device (the
            perturbation curves resize them to the model input).
        groups: (sample indices, maps) per group of same-size samples: the (P, H, W) float32 maps
            in [0, 1] of their present classes at the image size, sample after sample.
    """

    batch: Sequence[Prepared]
    raw: torch.Tensor
    groups: list[tuple[list[int], torch.Tensor]]

    def pairs(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Per group: maps (P, H, W), class masks (P, H, W) and ignored pixels (P, H, W) or None, what the metrics take."""
        for indices, maps in self.groups:
            group = [self.batch[i] for i in indices]
            masks = torch.cat([p.masks for p in group])
            if all(p.ignore is None for p in group):
                yield maps, masks, None
                continue
            ignore = [torch.zeros(p.size, dtype=torch.bool) if p.ignore is None else p.ignore for p in group]
            yield maps, masks, torch.cat([m[None].expand(len(p.classes), -1, -1) for m, p in zip(ignore, group)])

    def per_sample(self) -> list[torch.Tensor]:
        """(P_i, H_i, W_i) maps of each sample's present classes (`Prepared.classes` order), in batch order."""
        out: list[torch.Tensor] = [torch.empty(0)] * len(self.batch)
        for indices, maps in self.groups:
            for i, part in zip(indices, maps.split([len(self.batch[i].classes) for i in indices])):
                out[i] = part
        return out

    def contrasts(self) -> list[torch.Tensor]:
        """(P_i,) float64 score contrast of each sample's maps (`ScoreContrast.per_pair`: ignored pixels count
        nowhere; NaN where a mask leaves no valid inside or outside), in batch order."""
        out: list[torch.Tensor] = [torch.empty(0)] * len(self.batch)
        for (indices, _), (maps, masks, ignore) in zip(self.groups, self.pairs()):
            values = ScoreContrast.per_pair(maps, masks, ignore)
            for i, part in zip(indices, values.split([len(self.batch[i].classes) for i in indices])):
                out[i] = part
        return out


def class_maps(
    model: DenseCLIP,
    method: Method,
    batch: Sequence[Prepared],
    text: torch.Tensor,
    classnames: Sequence[str] | None = None,
    *,
    images: torch.Tensor | None = None,
) -> ClassMaps:
    """The maps of every present class of `batch` by `method` on `model`.

    Args:
        batch: prepared samples (`prepare`).
        text: (K, D) embeddings of every class's prompts (`class_text_features`), encoded once by the caller.
        classnames: the K class names (labels only).
        images: the batch's model input if the caller has made it already (one preprocessing for several methods).
    """
    if images is None:
        images = model.preprocess([p.image for p in batch])
    raw = method.explain_raw(model, images, text, text_labels=None if classnames is None else list(classnames))[0]
    on_cpu = raw.cpu()
    groups = []
    for indices in same_size_groups(batch):
        selected = torch.cat([on_cpu[i, batch[i].class_index] for i in indices])
        groups.append((indices, maps_to_size(selected, batch[indices[0]].size)))
    return ClassMaps(batch, raw, groups)


@dataclass
class Panel:
    """One column of a before/after figure (`eclip shift`, `eclip demo`): a model's maps by one method, under a title."""

    title: str
    model: DenseCLIP
    method: Method


def panel_maps(panels: Sequence[Panel], batch: Sequence[Prepared], classnames: Sequence[str],
               templates: str | Sequence[str] | None = "single") -> list[ClassMaps]:
    """`class_maps` of `batch` by each panel, every class name a text (the adapter caches the prompts per model)."""
    return [class_maps(p.model, p.method, batch, class_text_features(p.model, classnames, templates), classnames) for p in panels]
