"""Open-vocabulary semantic segmentation: every pixel takes the class whose raw map is highest.

The benchmark of SCLIP, ClearCLIP, NACLIP and CLIPtrase (see `protocol.py` for the settings of
each and the files they come from): `Segmenter` turns any explanation method into a segmenter,
`eclip.metrics.segmentation.ConfusionMatrix` scores it over a dataset.
"""
from __future__ import annotations

from collections.abc import Sequence

from eclip.segmentation.predict import Segmentation, Segmenter
from eclip.segmentation.protocol import WITH_BACKGROUND, Protocol, benchmark_key, protocol_for
from eclip.segmentation.vocabulary import Vocabulary, label_map, vocabulary


def dataset_vocabulary(protocol: Protocol, dataset: str, classnames: Sequence[str]) -> Vocabulary:
    """The vocabulary of `dataset` (an eclip dataset name) under `protocol`: its query file, or the
    dataset's own class names (with "background" first where the benchmark has a background class)."""
    background = benchmark_key(dataset) in WITH_BACKGROUND
    if protocol.names is None:
        return Vocabulary.from_lines((["background"] if background else []) + list(classnames), background=background)
    return vocabulary(protocol.names, classnames, background)


__all__ = ["Protocol", "Segmentation", "Segmenter", "Vocabulary", "benchmark_key", "dataset_vocabulary", "label_map",
           "protocol_for", "vocabulary"]
