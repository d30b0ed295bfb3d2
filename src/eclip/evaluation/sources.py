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
import torch.nn.functional as F
from PIL import Image

from eclip.evaluation.config import EvalConfig
from eclip.evaluation.maps import MapsFolder, to_image_size
from eclip.evaluation.suite import MetricSuite
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
    """The score deletion / insertion follow: image-text cosine, or softmax probability over the K classes."""
    scale = float(model.logit_scale) if kind == "probability" else 1.0

    def score(images: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        embedding = F.normalize(model.encode_image(images).float(), dim=-1)
        sims = embedding @ text.to(embedding).T
        if kind == "probability":
            sims = torch.softmax(sims * scale, dim=-1)
        return sims.gather(1, text_index.to(sims.device)[:, None])[:, 0]

    return score


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

        arch = self.model.arch if self.model is not None else None
        out = {}
        for m in self.methods:
            method = get_method(m)
            if arch is not None and arch not in method.archs:
                out[m] = f"method '{m}' is not defined for {arch} models"
        return out

    @torch.no_grad()
    def update(self, batch: Sequence[Prepared], suites: dict[str, MetricSuite]) -> None:
        images = self.model.preprocess([p.image for p in batch])
        for name, explainer in self.explainers.items():
            if name not in suites:
                continue
            maps = explainer.explain(self.model, images, self.text, text_labels=self.classnames)
            pairs = []
            for i, p in enumerate(batch):
                suites[name].update_pairs(to_image_size(maps.raw[i, p.class_index], p.size).cpu(), p.masks, p.ignore)
                pairs += [(i, k) for k, ok in zip(p.class_index, p.defined) if ok]
            if self.config.perturbation and pairs:
                deletion, insertion = perturbation_curves(
                    self.scorer, images, maps.scores, torch.tensor(pairs), steps=self.config.deletion_steps,
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
                maps = to_image_size(torch.from_numpy(np.stack([found[p.classes[j]] for j in keep])), p.size)
                suite.update_pairs(maps, p.masks[keep], p.ignore)
