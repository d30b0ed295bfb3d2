"""What one evaluation run is: dataset, maps to score, and the protocol's options (the protocol of ECLIP,
Li, Wang, Duan, Li 2022, arXiv 2209.07046; `eclip.evaluation.maps`)."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eclip.errors import EvaluationError
from eclip.methods.scoring import TARGETS
from eclip.metrics.faithfulness import BASELINES
from eclip.precision import PRECISIONS

#: Prompt templates per dataset: CLIP's 80 ImageNet templates for the photo datasets (Radford et al.
#: 2021, arXiv 2103.00020, the "standard template ensemble"); the synthetic scenes use the single
#: template the bundled models are evaluated with ("a photo of a {}.").
DEFAULT_TEMPLATES = {"voc": "imagenet", "coco": "imagenet", "context": "imagenet", "synthetic": "single"}

#: The scores deletion / insertion can follow: the targets gradient methods explain (`eclip.methods.scoring`).
SCORES = tuple(TARGETS)

#: What is explained: each class present against its class mask, (synthetic scenes) each object's
#: colour-and-shape phrase against its instance mask (`eclip.data.phrases`), or every pixel's class as
#: the argmax over all the dataset's classes (`eclip.evaluation.segment`).
TASKS = ("classes", "phrases", "segmentation")


def divides_one(step: float) -> bool:
    """True when the IoU threshold grid 0, step, ..., 1 exists (`eclip.metrics.localization.threshold_grid`)."""
    from eclip.metrics.localization import threshold_grid

    if not 0 < step <= 1:
        return False
    try:
        threshold_grid(step)
    except ValueError:
        return False
    return True


@dataclass
class EvalConfig:
    """One evaluation: every model x every method (and optionally a folder of maps) on one dataset.

    Attributes:
        dataset, root: the dataset name (`eclip.data.registry.DATASETS`) and its folder (None for
            samples held in memory, handed to `Evaluation` as its `dataset`).
        models: model names or folders (`eclip.models.loading.load_model`); may be empty with `maps_dir`.
        methods: explanation methods (`eclip methods`), each run on every model.
        maps_dir: a folder of `<image_id>.npz` maps made by any tool, scored as one more "model".
        pretrained: open_clip tag or checkpoint for open_clip model names.
        limit: evaluate only the first `limit` images of the dataset.
        templates: prompt template set, template or list of templates; None picks `DEFAULT_TEMPLATES[dataset]`.
        batch_size: images per forward pass.
        device: torch device of the models.
        threshold_step: step of the IoU threshold grid 0..1.
        pointing_tolerance: pointing-game tolerance in pixels (0: the peak pixel itself).
        perturbation: compute deletion / insertion AUC (costly: 2 x steps forwards per pair).
        deletion_steps: S, points of the deletion / insertion curves minus one.
        perturbation_baseline: "blur" or "mean" (see `eclip.metrics.faithfulness`).
        perturbation_score: a target of `eclip.methods.scoring.TARGETS`: "cosine" (image-text cosine),
            "logit" (times CLIP's logit scale) or "probability" (softmax over the classes).
        perturbation_batch: perturbed images per forward pass.
        checkpoint_every: write the partial-results file every this many batches.
        task: "classes", "phrases" or "segmentation" (see `TASKS`); segmentation reads neither the
            threshold grid, the pointing tolerance nor the perturbation options.
        workers: DataLoader processes decoding and preparing the images ahead of the models
            (0: in this process); the records do not depend on it.
        precision: "fp32", or "bf16" / "fp16" autocast for the maps (`eclip.precision`); a method
            whose fidelity needs float32 runs in it whatever this says (`method_precision`).
    """

    dataset: str
    root: Path | None
    models: list[str] = field(default_factory=lambda: ["synth-vit"])
    methods: list[str] = field(default_factory=lambda: ["itsm"])
    maps_dir: Path | None = None
    pretrained: str | None = None
    limit: int | None = None
    templates: str | Sequence[str] | None = None
    batch_size: int = 16
    device: str = "cpu"
    threshold_step: float = 0.05
    pointing_tolerance: int = 0
    perturbation: bool = True
    deletion_steps: int = 10
    perturbation_baseline: str = "blur"
    perturbation_score: str = "cosine"
    perturbation_batch: int = 64
    checkpoint_every: int = 20
    task: str = "classes"
    workers: int = 0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        from eclip.methods.base import get_method

        self.root = None if self.root is None else Path(self.root)
        # one record per method as `get_method` spells it: "naclip:sigma=5.0" and "naclip:sigma=5" are one method
        self.methods = list(dict.fromkeys(get_method(spec).label for spec in self.methods))
        self.maps_dir = None if self.maps_dir is None else Path(self.maps_dir)
        problems = []
        if not self.models and self.maps_dir is None:
            problems.append("nothing to evaluate: give models (with methods) or a maps_dir")
        if self.models and not self.methods:
            problems.append("models given without a method to explain them with")
        for name in ("batch_size", "perturbation_batch", "checkpoint_every", "deletion_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.limit is not None and self.limit < 0:
            problems.append(f"limit={self.limit} must be >= 0")
        if self.perturbation_baseline not in BASELINES:
            problems.append(f"perturbation_baseline={self.perturbation_baseline!r} must be one of {', '.join(BASELINES)}")
        if self.perturbation_score not in SCORES:
            problems.append(f"perturbation_score={self.perturbation_score!r} must be one of {', '.join(SCORES)}")
        if not divides_one(self.threshold_step):
            problems.append(f"threshold_step={self.threshold_step} must divide 1, e.g. 0.05 or 0.01")
        if self.pointing_tolerance < 0:
            problems.append(f"pointing_tolerance={self.pointing_tolerance} must be >= 0")
        if self.workers < 0:
            problems.append(f"workers={self.workers} must be >= 0")
        if self.precision not in PRECISIONS:
            problems.append(f"precision={self.precision!r} must be one of {', '.join(PRECISIONS)}")
        if self.task not in TASKS:
            problems.append(f"task={self.task!r} must be one of {', '.join(TASKS)}")
        if problems:
            raise EvaluationError("; ".join(problems))

    @property
    def template_set(self) -> str | Sequence[str]:
        """The templates actually used: the option, or the dataset's default (phrases: verbatim, "{}")."""
        if self.templates:
            return self.templates
        return "{}" if self.task == "phrases" else DEFAULT_TEMPLATES.get(self.dataset.lower(), "imagenet")

    def fingerprint(self, n_images: int, world: int, rank: int) -> dict:
        """What must not change between an interrupted run and its resumption (batch sizes may)."""
        skip = {"batch_size", "perturbation_batch", "checkpoint_every", "device", "workers"}
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        out.update(root=None if self.root is None else str(self.root.resolve()),
                   maps_dir=None if self.maps_dir is None else str(self.maps_dir.resolve()),
                   templates=self.template_set, n_images=n_images, world=world, rank=rank)
        return out
