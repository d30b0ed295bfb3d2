"""The metrics of one (dataset, model, method) run, fed together, saved together, reduced together."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Self

import torch

from eclip.metrics.base import Metric, keep_defined, pair_tensors
from eclip.metrics.faithfulness import Deletion, Insertion
from eclip.metrics.localization import PointingGame, ThresholdIoU, threshold_grid
from eclip.metrics.semantic_shift import ScoreContrast

if TYPE_CHECKING:  # pragma: no cover
    from eclip.evaluation.maps import ClassMaps


class Counts(Metric):
    """Named counters (images seen, images skipped, pairs without a map) that reduce like any metric."""

    def __init__(self, names: tuple[str, ...] = ("images", "skipped", "missing")) -> None:
        super().__init__()
        for name in names:
            self.add_state(name, 0.0)

    def update(self, **increments: int) -> None:
        for name, value in increments.items():
            self._add(name, value)

    def compute(self) -> dict[str, int]:
        return {name: int(value) for name, value in self._state.items()}


class Suite:
    """Metrics fed together, saved together (`to_json` / `load_json`) and reduced together (`merge`, `all_reduce`)."""

    metrics: dict[str, Metric]

    @property
    def counts(self) -> Counts:
        return self.metrics["counts"]

    def to_json(self) -> dict:
        return {key: metric.to_json() for key, metric in self.metrics.items()}

    def load_json(self, state: dict) -> Self:
        for key, metric in self.metrics.items():
            metric.load_state(state[key])
        return self

    def merge(self, other: Suite) -> Self:
        for key, metric in self.metrics.items():
            metric.merge(other.metrics[key])
        return self

    def all_reduce(self) -> Self:
        for metric in self.metrics.values():
            metric.all_reduce()
        return self


class MetricSuite(Suite):
    """fg IoU / binary mIoU, mSC / inverted rate, pointing game, and optionally deletion / insertion AUC.

    The one metric suite of eclip: `eclip evaluate`, `eclip shift` and `eclip demo` score their
    maps with it. `update_class_maps` takes the maps of a batch (`eclip.evaluation.maps.class_maps`),
    `update_pairs` any (image, class) pairs; `update_curves` the perturbation curves of a batch.
    The whole state is a dict of metric states (`to_json` / `load_json`), and `all_reduce` sums
    it over `torch.distributed` ranks.
    """

    def __init__(self, threshold_step: float = 0.05, pointing_tolerance: int = 0, deletion_steps: int | None = 10) -> None:
        self.metrics: dict[str, Metric] = {
            "iou": ThresholdIoU(threshold_grid(threshold_step)),
            "contrast": ScoreContrast(),
            "pointing": PointingGame(pointing_tolerance),
            "counts": Counts(),
        }
        if deletion_steps:
            self.metrics["deletion"] = Deletion(deletion_steps)
            self.metrics["insertion"] = Insertion(deletion_steps)

    def update_class_maps(self, maps: ClassMaps) -> None:
        """Every present-class pair of a batch's class maps."""
        for pairs in maps.pairs():
            self.update_pairs(*pairs)

    def update_pairs(self, maps: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor | None) -> None:
        """Pairs of the same size: maps (P, H, W) in [0, 1], masks (P, H, W) bool, ignore (H, W) or (P, H, W) bool or None."""
        pairs = keep_defined(*pair_tensors(maps, masks, ignore))  # checked once for the three
        for key in ("iou", "contrast", "pointing"):
            self.metrics[key].update_defined(*pairs)

    def update_curves(self, deletion: torch.Tensor, insertion: torch.Tensor) -> None:
        """(P, S + 1) deletion and insertion curves."""
        self.metrics["deletion"].update(deletion)
        self.metrics["insertion"].update(insertion)

    def scores(self) -> dict:
        """The contracted numbers (None where not computed or nothing was seen), plus counts and curves."""
        iou = self.metrics["iou"].compute()
        contrast = self.metrics["contrast"].compute()
        counts = self.counts.compute()
        out = {
            "n_pairs": iou["n_pairs"],
            "threshold": iou["threshold"],
            "fg_iou": iou["fg_iou"],
            "miou": iou["miou"],
            "msc": contrast["msc"],
            "inverted_rate": contrast["inverted_rate"],
            "pointing_game": self.metrics["pointing"].compute()["pointing_game"],
            "deletion_auc": None,
            "insertion_auc": None,
            "n_images": counts["images"],
            "skipped": counts["skipped"],
            "missing": counts["missing"],
            "degenerate_pairs": iou["degenerate"],
            "fg_iou_by_threshold": self.metrics["iou"].curve()["fg_iou"],
        }
        if "deletion" in self.metrics:
            out["deletion_auc"] = self.metrics["deletion"].compute()["deletion_auc"]
            out["insertion_auc"] = self.metrics["insertion"].compute()["insertion_auc"]
            out["deletion_curve"] = self.metrics["deletion"].mean_curve()
            out["insertion_curve"] = self.metrics["insertion"].mean_curve()
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}
