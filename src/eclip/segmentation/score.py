"""Score a segmenter over a dataset: one confusion matrix, streamed image by image.

The state is the confusion matrix alone (`eclip.metrics.segmentation.ConfusionMatrix`), so a run
that stops after n images and resumes from image n (`start`), or shards that each take a slice,
add up to the very matrix one pass would give.
"""
from __future__ import annotations

from collections.abc import Callable

from eclip.data.base import EvalDataset
from eclip.data.sample import Sample
from eclip.metrics.segmentation import ConfusionMatrix
from eclip.segmentation.predict import Segmentation, Segmenter
from eclip.segmentation.protocol import WITH_BACKGROUND, benchmark_key
from eclip.segmentation.vocabulary import label_map


def has_background(dataset: EvalDataset) -> bool:
    """True when the dataset's benchmark counts a background class (label 0)."""
    return benchmark_key(dataset.name) in WITH_BACKGROUND


def score_dataset(segmenter: Segmenter, dataset: EvalDataset, start: int = 0, metric: ConfusionMatrix | None = None,
                  on_image: Callable[[Sample, Segmentation], None] | None = None) -> ConfusionMatrix:
    """Add every image of `dataset` from `start` on to `metric` (a new one by default) and return it.

    `on_image(sample, segmentation)` is called after each image (progress, per-image records, figures).
    """
    vocab = segmenter.vocabulary
    metric = metric if metric is not None else ConfusionMatrix(vocab.num_classes, classnames=vocab.classnames)
    background = has_background(dataset)
    for sample in dataset.iter_from(start):
        segmentation = segmenter(sample.image)
        metric.update(segmentation.labels, label_map(sample, dataset.classnames, background))
        if on_image is not None:
            on_image(sample, segmentation)
    return metric
