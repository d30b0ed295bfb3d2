"""Where the maps come from: a model explained by methods, or a folder of maps made by another tool.

A source turns a batch of prepared samples into metric updates for each of its methods. The
model source loads its model once, encodes the class prompts once, and per batch runs one
preprocessing, the class maps of each method (`eclip.evaluation.maps.class_maps`: one
`explain_raw` covers every class at once) and, when asked, the deletion / insertion curves of
every pair in batched forward passes.
"""
from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from eclip.evaluation.config import EvalConfig
from eclip.evaluation.maps import Prepared, class_maps, class_text_features
from eclip.evaluation.maps_folder import MapsFolder
from eclip.evaluation.suite import MetricSuite
from eclip.methods.base import Method, maps_to_size
from eclip.metrics.faithfulness import Scorer, perturbation_curves
from eclip.models.adapter import DenseCLIP
from eclip.precision import autocast, method_precision

logger = logging.getLogger(__name__)

#: How many reasons (skipped images, missing maps) a record keeps as examples; the counts are exact.
MAX_EXAMPLES = 20


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


def make_scorer(model, text: torch.Tensor, kind: str = "cosine") -> Scorer:
    """The score deletion / insertion follow: a target of `eclip.methods.scoring` (cosine, logit, probability
    over the K classes), the same definition the gradient methods explain."""
    from eclip.methods.scoring import target_scores

    def score(images: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        scores = target_scores(kind, model, model.encode_image(images), text)
        return scores.gather(1, text_index.to(scores.device)[:, None])[:, 0]

    return score


class ModelSource(Source):
    """One model, explained by each of `config.methods`.

    `model` and `explainers` (method label -> Method) are for callers that hold them already
    (`eclip.shift.measure`); by default the model is loaded by name and each method label goes
    to `get_method`.
    """

    def __init__(self, name: str, config: EvalConfig, classnames: Sequence[str], *, model: DenseCLIP | None = None,
                 explainers: dict[str, Method] | None = None) -> None:
        super().__init__()
        self.name, self.config, self.classnames = name, config, list(classnames)
        self.key, self.model_label = f"model:{name}", name
        self.methods = list(explainers) if explainers is not None else list(config.methods)
        self.model, self.explainers = model, explainers

    def open(self) -> None:
        from eclip.methods.base import get_method
        from eclip.models.loading import load_model

        if self.model is None:
            self.model = load_model(self.name, self.config.pretrained, device=self.config.device)
        if self.explainers is None:
            self.explainers = {m: get_method(m) for m in self.methods}
        self.text = class_text_features(self.model, self.classnames, self.config.template_set)
        self.scorer = make_scorer(self.model, self.text, self.config.perturbation_score)

    def unavailable(self) -> dict[str, str]:
        if self.model is None or self.explainers is None:
            return {}
        reasons = {m: explainer.unsupported(self.model) for m, explainer in self.explainers.items()}
        return {m: reason for m, reason in reasons.items() if reason}

    @torch.no_grad()
    def update(self, batch: Sequence[Prepared], suites: dict[str, MetricSuite]) -> None:
        images = self.model.preprocess([p.image for p in batch])
        for name, explainer in self.explainers.items():
            if name not in suites:
                continue
            with autocast(method_precision(name, self.config.precision), self.model.device):
                maps = class_maps(self.model, explainer, batch, self.text, self.classnames, images=images)
            maps = dataclasses.replace(maps, raw=maps.raw.float(), groups=[(i, m.float()) for i, m in maps.groups])
            suites[name].update_class_maps(maps)
            pairs = [(i, k) for i, p in enumerate(batch) for k, ok in zip(p.class_index, p.defined) if ok]
            if self.config.perturbation and pairs:  # the curves rank the pixels of the model input
                deletion, insertion = perturbation_curves(
                    self.scorer, images, maps_to_size(maps.raw, tuple(images.shape[-2:])), torch.tensor(pairs),
                    steps=self.config.deletion_steps, baseline=self.config.perturbation_baseline,
                    chunk=self.config.perturbation_batch)
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
