"""The segmentation task of the evaluation (`eclip evaluate --task segmentation`).

Every pixel takes the class whose raw map is highest among **all** the dataset's classes (the
benchmark of SCLIP, ClearCLIP, NACLIP and CLIPtrase, each method under its authors' protocol,
`eclip.segmentation.protocol`), and a run is scored as one confusion matrix over the whole
dataset (`eclip.metrics.segmentation.ConfusionMatrix`). The pieces plug into the one evaluation
loop (`eclip.evaluation.runner`): `LabelPreparer` turns a sample into its label map (in the
DataLoader workers when there are some), `SegmentationSuite` keeps the matrix (so checkpoints,
resume and torchrun shards add up exactly, as for the per-class metrics), and the two sources
make the predictions: a model run by each method as a `Segmenter`, or a folder of maps made by
any tool, taken raw.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eclip.errors import DatasetError
from eclip.evaluation.config import EvalConfig
from eclip.evaluation.maps_folder import MapsFolder
from eclip.evaluation.sources import Source
from eclip.evaluation.suite import Counts, Suite
from eclip.methods.base import Method
from eclip.metrics.segmentation import ConfusionMatrix
from eclip.models.adapter import DenseCLIP
from eclip.precision import autocast, method_precision
from eclip.segmentation.protocol import WITH_BACKGROUND, Protocol, benchmark_key, protocol_for
from eclip.segmentation.vocabulary import label_map


@dataclass
class Labelled:
    """One image ready to be segmented and scored: the image and its (H, W) uint8 labels (255: ignored)."""

    image_id: str
    image: Image.Image
    labels: np.ndarray


def segmentation_classes(dataset: str, classnames: Sequence[str]) -> list[str]:
    """The classes of `dataset`'s segmentation benchmark in label order: "background" first where it counts one
    (VOC21, Context60, COCO-Object, the synthetic scenes), then the dataset's classes."""
    return (["background"] if benchmark_key(dataset) in WITH_BACKGROUND else []) + list(classnames)


class LabelPreparer:
    """Sample -> `Labelled`, or the reason it cannot be scored (a class the dataset does not have); picklable,
    so DataLoader workers run it."""

    def __init__(self, dataset: str, classnames: Sequence[str]) -> None:
        self.classnames = list(classnames)
        self.background = benchmark_key(dataset) in WITH_BACKGROUND

    def __call__(self, sample) -> Labelled | str:
        try:
            return Labelled(sample.image_id, sample.image, label_map(sample, self.classnames, self.background))
        except DatasetError as err:
            return str(err)


class SegmentationSuite(Suite):
    """The confusion matrix of one (dataset, source, method) and the counts of images seen, skipped and missing."""

    def __init__(self, classnames: Sequence[str]) -> None:
        self.classnames = list(classnames)
        self.metrics = {"confusion": ConfusionMatrix(len(self.classnames), classnames=self.classnames), "counts": Counts()}

    def update(self, predicted: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> None:
        """One image's (H, W) predicted labels against its true labels."""
        self.metrics["confusion"].update(predicted, truth)

    def scores(self) -> dict:
        """mIoU, pixel accuracy and mean class accuracy (fractions; None where nothing was counted), the IoU of every
        class (None: the class neither occurs nor is predicted), and the counts."""
        out = self.metrics["confusion"].compute()
        counts = self.counts.compute()

        def defined(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {"miou": defined(out["miou"]), "pixel_accuracy": defined(out["pixel_accuracy"]),
                "mean_accuracy": defined(out["mean_accuracy"]), "n_pixels": out["n_pixels"], "classes": self.classnames,
                "per_class_iou": [defined(v) for v in out["per_class_iou"]], "n_images": counts["images"],
                "skipped": counts["skipped"], "missing": counts["missing"]}


def method_protocol(method: str, dataset: str, templates: str | Sequence[str] | None) -> Protocol:
    """The protocol `method` (a label, "name:key=value" allowed) segments `dataset` with; `templates` (the
    evaluation's `--template`) replaces the protocol's own prompts when given."""
    from eclip.methods.options import parse_spec

    protocol = protocol_for(parse_spec(method)[0], dataset)
    return dataclasses.replace(protocol, templates=templates) if templates else protocol


def make_segmenter(model: DenseCLIP, method: Method, dataset: str, classnames: Sequence[str],
                   templates: str | Sequence[str] | None = None):
    """`method` run on `model` as a `Segmenter` of `dataset`'s classes under its protocol (`method_protocol`)."""
    from eclip.segmentation import Segmenter, dataset_vocabulary

    protocol = method_protocol(method.label, dataset, templates)
    return Segmenter(model, method, dataset_vocabulary(protocol, dataset, classnames), protocol)


class SegmentingSource(Source):
    """One model, each of `config.methods` run as a `Segmenter` under its protocol for the dataset."""

    def __init__(self, name: str, config: EvalConfig, dataset: str, classnames: Sequence[str], *,
                 model: DenseCLIP | None = None) -> None:
        super().__init__()
        self.name, self.config, self.dataset, self.classnames = name, config, dataset, list(classnames)
        self.key, self.model_label = f"model:{name}", name
        self.methods = list(config.methods)
        self.model = model
        self.segmenters: dict = {}
        self.reasons: dict[str, str] = {}

    def open(self) -> None:
        from eclip.methods.base import get_method
        from eclip.models.loading import load_model

        if self.model is None:
            self.model = load_model(self.name, self.config.pretrained, device=self.config.device)
        for label in self.methods:
            method = get_method(label)
            reason = method.unsupported(self.model)
            if reason:
                self.reasons[label] = reason
            else:
                self.segmenters[label] = make_segmenter(self.model, method, self.dataset, self.classnames, self.config.templates)

    def unavailable(self) -> dict[str, str]:
        return dict(self.reasons)

    @torch.no_grad()
    def update(self, batch: Sequence[Labelled], suites: dict[str, SegmentationSuite]) -> None:
        for label, segmenter in self.segmenters.items():
            if label not in suites:
                continue
            with autocast(method_precision(label, self.config.precision), self.model.device):
                for item in batch:
                    suites[label].update(segmenter(item.image).labels, item.labels)
            suites[label].counts.update(images=len(batch))


class SegmentationFolderSource(Source):
    """Maps read from `DIR/<image_id>.npz` (one (H, W) array per class name, `MapsFolder`), taken raw: the argmax
    over the classes, a class without an array scoring 0 everywhere. An image without a usable array (no file, an
    unreadable one) is counted `missing` and left out of the matrix. Recorded as model "maps:DIR", method "maps"."""

    def __init__(self, root: Path, classes: Sequence[str]) -> None:
        super().__init__()
        self.folder, self.classes = MapsFolder(root), list(classes)
        self.key = self.model_label = f"maps:{root}"
        self.methods = ["maps"]

    def predict(self, item: Labelled) -> np.ndarray | str:
        """(H, W) labels of `item` from its file, or why there are none; notes the arrays that were unusable."""
        size = tuple(item.labels.shape)
        found, why = self.folder.read(item.image_id, self.classes, size)
        if not found:  # no file, an unreadable one, or none of the classes: no prediction to score
            return f"{item.image_id}: {next(iter(why.values()))}"
        self.notes += [f"{item.image_id} {cls}: {reason}" for cls, reason in why.items() if "no array named" not in reason]
        return np.stack([found.get(cls, np.zeros(size, np.float32)) for cls in self.classes]).argmax(axis=0)

    def update(self, batch: Sequence[Labelled], suites: dict[str, SegmentationSuite]) -> None:
        suite = suites["maps"]
        for item in batch:
            labels = self.predict(item)
            if isinstance(labels, str):
                self.notes.append(labels)
                suite.counts.update(missing=1)
            else:
                suite.update(labels, item.labels)
                suite.counts.update(images=1)


class SegmentationTask:
    """The task "segmentation" for the evaluation loop (`eclip.evaluation.runner.Task`): label maps in, one
    confusion matrix per (source, method) out, each method under its paper's protocol."""

    def __init__(self, config: EvalConfig, dataset_name: str, classnames: Sequence[str]) -> None:
        self.config, self.dataset_name, self.classnames = config, dataset_name, list(classnames)
        self.preparer = LabelPreparer(dataset_name, self.classnames)
        self.labels = segmentation_classes(dataset_name, self.classnames)

    def sources(self) -> list[Source]:
        c = self.config
        return ([SegmentingSource(m, c, self.dataset_name, self.classnames) for m in c.models]
                + ([SegmentationFolderSource(c.maps_dir, self.labels)] if c.maps_dir is not None else []))

    def new_suite(self, source: Source) -> Suite:
        return SegmentationSuite(self.labels)

    def record_fields(self, source: Source, method: str) -> dict:
        """Where the method's settings come from and its prompts (a folder of maps: the raw argmax, no prompts)."""
        if isinstance(source, SegmentationFolderSource):
            return {"task": "segmentation", "protocol": "argmax over the folder's raw maps", "templates": None}
        protocol = method_protocol(method, self.dataset_name, self.config.templates)
        return {"task": "segmentation", "protocol": protocol.source, "templates": protocol.templates}


@dataclass
class SegmentedExample:
    """One image of a report: its true labels and one record's predicted labels, (H, W) each."""

    image_id: str
    image: Image.Image
    truth: np.ndarray
    predicted: np.ndarray


def example_segmentations(record: dict, dataset, n: int, device: str = "cpu") -> Iterator[SegmentedExample]:
    """The first `n` usable images of `dataset` with `record`'s segmentation (its model and method under the record's
    templates, or its `maps:DIR` folder); nothing for a method the model cannot run."""
    from eclip.methods.base import get_method
    from eclip.models.loading import load_model

    name = dataset.name
    preparer = LabelPreparer(name, dataset.classnames)
    model_name, method = str(record["model"]), str(record["method"])
    if model_name.startswith("maps:"):
        predict = SegmentationFolderSource(Path(model_name.removeprefix("maps:")), segmentation_classes(name, dataset.classnames)).predict
    else:
        model = load_model(model_name, device=device)
        explainer = get_method(method)
        if explainer.unsupported(model):
            return
        segmenter = make_segmenter(model, explainer, name, dataset.classnames, record.get("templates"))

        def predict(item: Labelled) -> np.ndarray:
            with torch.no_grad():
                return segmenter(item.image).labels.numpy()

    given = 0
    for index in range(len(dataset)):
        if given >= n:
            return
        try:
            item = preparer(dataset[index])
        except Exception:  # noqa: BLE001 - a bad image is not an example; the evaluation counted it
            continue
        labels = item if isinstance(item, str) else predict(item)
        if not isinstance(labels, str):
            given += 1
            yield SegmentedExample(item.image_id, item.image, item.labels, np.asarray(labels))
