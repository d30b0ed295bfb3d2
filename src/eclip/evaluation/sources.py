"""Where the maps come from: a model explained by methods, or a folder of maps made by another tool.

A source turns a batch of prepared samples into metric updates for each of its methods. The
model source loads its model once, encodes the class prompts once, and per batch runs one
preprocessing, one `explain` per method (which covers every class at once) and, when asked, the
deletion / insertion curves of every pair in batched forward passes.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eclip.evaluation.config import EvalConfig
from eclip.evaluation.maps import MapsFolder
from eclip.evaluation.suite import MetricSuite
from eclip.methods.base import maps_to_size
from eclip.metrics.faithfulness import Scorer, perturbation_curves

logger = logging.getLogger(__name__)

#: How many reasons (skipped images, missing maps) a record keeps as examples; the counts are exact.
MAX_EXAMPLES = 20


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


class Source(ABC):
    """A maker of maps scored as one `model` label with one or more `methods` (one record each)."""

    key: str
    model_label: str
    methods: list[str]

    def __init__(self) -> None:
        self.notes: list[str] = []  # reasons for missing maps, kept up to MAX_EXAMPLES by the runner

    def open(self) -> None:
        """Load what is heavy (the model); called once, only if there is work left."""
        return None

    def unavailable(self) -> dict[str, str]:
        """method -> why it cannot run here (e.g. an attention method on a ResNet)."""
        return {}

    @abstractmethod
    def update(self, batch: Sequence[Prepared], suites: dict[str, MetricSuite]) -> None:
        """Score `batch` into each method's suite."""


def class_text_features(model, classnames: Sequence[str], templates: str, chunk: int = 8) -> torch.Tensor:
    """(K, D) prompt-ensemble embeddings of the class names, a few classes per text forward (bounded memory)."""
    from eclip.prompts import encode_prompts

    names = list(classnames)
    return torch.cat([encode_prompts(model, names[i : i + chunk], templates) for i in range(0, len(names), chunk)])


def make_scorer(model, text: torch.Tensor, kind: str = "cosine") -> Scorer:
    """The score deletion / insertion follow: a target of `eclip.methods.scoring` (cosine, logit, probability
    over the K classes), the same definition the gradient methods explain."""
    from eclip.methods.scoring import target_scores

    def score(images: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        scores = target_scores(kind, model, model.encode_image(images), text)
        return scores.gather(1, text_index.to(scores.device)[:, None])[:, 0]

    return score


def same_size_groups(batch: Sequence[Prepared], max_pixels: int = 1 << 23) -> list[list[int]]:
    """Indices of `batch` grouped by image size, each group at most `max_pixels` pair-pixels.

    The metrics of a group are one call on (P, H, W) tensors instead of one call per image: far
    fewer small operations (each a thread-pool round trip), with memory still bounded.
    """
    groups: dict[tuple[int, int], list[list[int]]] = {}
    for i, p in enumerate(batch):
        chunks = groups.setdefault(p.size, [[]])
        used = sum(len(batch[j].classes) for j in chunks[-1]) * p.size[0] * p.size[1]
        if chunks[-1] and used + len(p.classes) * p.size[0] * p.size[1] > max_pixels:
            chunks.append([])
        chunks[-1].append(i)
    return [chunk for chunks in groups.values() for chunk in chunks]


def stack_pairs(group: Sequence[Prepared]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (P, H, W) masks of same-size samples, and their ignore masks repeated per pair (None if none has one)."""
    masks = torch.cat([p.masks for p in group])
    if all(p.ignore is None for p in group):
        return masks, None
    ignore = [torch.zeros(p.size, dtype=torch.bool) if p.ignore is None else p.ignore for p in group]
    return masks, torch.cat([m[None].expand(len(p.classes), -1, -1) for m, p in zip(ignore, group)])


class ModelSource(Source):
    """One model, explained by each of `config.methods`."""

    def __init__(self, name: str, config: EvalConfig, classnames: Sequence[str]) -> None:
        super().__init__()
        self.name, self.config, self.classnames = name, config, list(classnames)
        self.key, self.model_label, self.methods = f"model:{name}", name, list(config.methods)
        self.model = None

    def open(self) -> None:
        from eclip.methods.base import get_method
        from eclip.models.loading import load_model

        self.model = load_model(self.name, self.config.pretrained, device=self.config.device)
        self.explainers = {m: get_method(m) for m in self.methods}
        self.text = class_text_features(self.model, self.classnames, self.config.template_set)
        self.scorer = make_scorer(self.model, self.text, self.config.perturbation_score)

    def unavailable(self) -> dict[str, str]:
        from eclip.methods.base import get_method

        if self.model is None:
            return {}
        reasons = {m: get_method(m).unsupported(self.model) for m in self.methods}
        return {m: reason for m, reason in reasons.items() if reason}

    @torch.no_grad()
    def update(self, batch: Sequence[Prepared], suites: dict[str, MetricSuite]) -> None:
        images = self.model.preprocess([p.image for p in batch])
        for name, explainer in self.explainers.items():
            if name not in suites:
                continue
            if self.config.perturbation:  # the curves need the maps at input resolution, as explain gives them
                maps = explainer.explain(self.model, images, self.text, text_labels=self.classnames)
                raw, scores = maps.raw.cpu(), maps.scores
            else:
                raw, scores = explainer.explain_raw(self.model, images, self.text, text_labels=self.classnames)[0].cpu(), None
            for group in same_size_groups(batch):
                selected = torch.cat([raw[i, batch[i].class_index] for i in group])
                masks, ignore = stack_pairs([batch[i] for i in group])
                suites[name].update_pairs(maps_to_size(selected, batch[group[0]].size), masks, ignore)
            pairs = [(i, k) for i, p in enumerate(batch) for k, ok in zip(p.class_index, p.defined) if ok]
            if self.config.perturbation and pairs:
                deletion, insertion = perturbation_curves(
                    self.scorer, images, scores, torch.tensor(pairs), steps=self.config.deletion_steps,
                    baseline=self.config.perturbation_baseline, chunk=self.config.perturbation_batch)
                suites[name].update_curves(deletion, insertion)
            suites[name].counts.update(images=len(batch))


class FolderSource(Source):
    """Maps read from `DIR/<image_id>.npz` (see `MapsFolder`); recorded as model "maps:DIR", method "maps"."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.folder = MapsFolder(root)
        self.key = self.model_label = f"maps:{root}"
        self.methods = ["maps"]

    def update(self, batch: Sequence[Prepared], suites: dict[str, MetricSuite]) -> None:
        suite = suites["maps"]
        for p in batch:
            found, missing = self.folder.read(p.image_id, p.classes, p.size)
            self.notes += [f"{p.image_id} {cls}: {why}" for cls, why in missing.items()]
            suite.counts.update(images=1, missing=len(missing))
            keep = [j for j, cls in enumerate(p.classes) if cls in found]
            if keep:
                maps = maps_to_size(torch.from_numpy(np.stack([found[p.classes[j]] for j in keep])), p.size)
                suite.update_pairs(maps, p.masks[keep], p.ignore)
