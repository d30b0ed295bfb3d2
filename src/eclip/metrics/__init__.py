"""Streaming metrics that compare explanation maps with ground truth (update / compute / reset, reducible).

- `localization`: foreground IoU and binary mIoU at a searched threshold, pointing game;
- `semantic_shift`: mean score contrast (mSC) and inverted rate;
- `faithfulness`: deletion and insertion AUC of the image-text score;
- `zero_shot`: zero-shot accuracy, counted from predictions the runner makes (`eclip.evaluation.zeroshot`).
"""
from eclip.metrics.base import Metric
from eclip.metrics.faithfulness import Deletion, Insertion, perturbation_curves
from eclip.metrics.localization import PointingGame, ThresholdIoU, threshold_grid
from eclip.metrics.semantic_shift import ScoreContrast
from eclip.metrics.zero_shot import ZeroShotAccuracy

__all__ = ["Deletion", "Insertion", "Metric", "PointingGame", "ScoreContrast", "ThresholdIoU", "ZeroShotAccuracy",
           "perturbation_curves", "threshold_grid"]
