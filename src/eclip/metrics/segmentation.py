"""Semantic segmentation scores from one confusion matrix: mIoU, pixel accuracy, mean class accuracy.

Open-vocabulary segmentation (SCLIP, Wang, Mei, Yuille 2023, arXiv 2312.01597; ClearCLIP, Lan et
al. 2024, arXiv 2407.12442; NACLIP, Hajimiri, Ben Ayed, Dolz 2024, arXiv 2404.08181; CLIPtrase,
Shao et al. 2024, arXiv 2407.08268) is scored with mmsegmentation's `IoUMetric`
(`mmseg/evaluation/metrics/iou_metric.py`): per class, the intersection and union of predicted
and true pixels summed over the **whole dataset**, then

    IoU_c = TP_c / (TP_c + FP_c + FN_c),   mIoU = mean over classes with TP + FP + FN > 0
    aAcc  = sum_c TP_c / (valid pixels),   mAcc = mean over classes with a true pixel of TP_c / (TP_c + FN_c)

Pixels whose true label is the ignore index (255) or outside 0..C-1 count nowhere (mmseg drops
them before counting, whatever was predicted there). A class that neither occurs nor is predicted
in the whole dataset has no IoU (NaN) and is left out of the mean, as mmseg's `np.nanmean` does.

The state is the C x C confusion matrix (rows: truth, columns: prediction) as float64 counts, so
shards add up exactly (`merge`, `all_reduce`) and a resumed evaluation continues the same sums.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from eclip.metrics.base import Metric, as_tensor

#: The label of pixels no metric counts (VOC's borders; mmseg's `ignore_index`).
IGNORE_INDEX = 255


class ConfusionMatrix(Metric):
    """Streaming C x C confusion matrix of label maps, and the segmentation scores it gives.

    `update(pred, target)` takes integer label maps of one or more images, (H, W) or (N, H, W):
    `pred` in 0..C-1, `target` in 0..C-1 or the ignore index. `compute()` gives `miou`,
    `pixel_accuracy`, `mean_accuracy` (fractions in [0, 1]) and the per-class IoU.
    """

    directions = {"miou": True, "pixel_accuracy": True, "mean_accuracy": True}

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, classnames: Sequence[str] | None = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: a segmentation has at least one class")
        if classnames is not None and len(classnames) != num_classes:
            raise ValueError(f"{len(classnames)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.classnames = list(classnames) if classnames is not None else None
        self.add_state("confusion", torch.zeros(num_classes, num_classes))

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add label maps: pred and target of the same shape, (H, W) or (N, H, W), integers."""
        pred = as_tensor(pred).long()
        target = as_tensor(target).long()
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} differ in shape")
        c = self.num_classes
        valid = (target >= 0) & (target < c) & (target != self.ignore_index)
        pred, target = pred[valid], target[valid]
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= c):
            raise ValueError(f"predicted labels must be in 0..{c - 1}; got {int(pred.min())}..{int(pred.max())}")
        counts = torch.bincount(target * c + pred, minlength=c * c).view(c, c)
        self._add("confusion", counts)

    def per_class(self) -> dict[str, list[float]]:
        """IoU and accuracy of every class (NaN where undefined), in label order."""
        cm = self.confusion
        tp = cm.diagonal()
        truth, predicted = cm.sum(1), cm.sum(0)
        union = truth + predicted - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
        acc = torch.where(truth > 0, tp / truth.clamp_min(1), torch.full_like(tp, float("nan")))
        return {"iou": iou.tolist(), "accuracy": acc.tolist()}

    def compute(self) -> dict[str, float | int | list[float]]:
        """{miou, pixel_accuracy, mean_accuracy, n_pixels, per_class_iou}; NaN scores when nothing was counted."""
        per = self.per_class()
        iou, acc = np.array(per["iou"]), np.array(per["accuracy"])
        total = float(self.confusion.sum())

        def nanmean(x: np.ndarray) -> float:
            return float(np.mean(x[~np.isnan(x)])) if (~np.isnan(x)).any() else float("nan")

        return {"miou": nanmean(iou), "pixel_accuracy": float(self.confusion.diagonal().sum()) / total if total else float("nan"),
                "mean_accuracy": nanmean(acc), "n_pixels": int(total), "per_class_iou": per["iou"]}
