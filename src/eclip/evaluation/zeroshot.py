"""Zero-shot classification accuracy, CLIP's own test (Radford et al. 2021, arXiv 2103.00020).

Each image is classified by the cosine of the model's pooled image embedding with one prompt
(ensemble) per class name; `eclip.metrics.ZeroShotAccuracy` counts the hits (multi-label top-1,
and the strict reading on images with one class present). ECLIP's fine-tuning must not lower it
(Li, Wang, Duan, Li 2022, arXiv 2209.07046, section 3).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from eclip.batching import batched
from eclip.data.sample import Sample
from eclip.evaluation.maps import class_text_features
from eclip.metrics.zero_shot import ZeroShotAccuracy


@torch.no_grad()
def zero_shot_accuracy(
    model,
    samples: Iterable[Sample],
    classnames: Sequence[str],
    templates: str | Sequence[str] | None = "single",
    batch_size: int = 64,
    *,
    text: torch.Tensor | None = None,
) -> dict[str, float]:
    """Top-1 accuracy of `model` on `samples` over `classnames`: {top1, top1_single, n, n_single}.

    `text`: the (K, D) class prompt embeddings when the caller has them already (the ones its
    maps were made with); otherwise `templates` are encoded here.
    """
    text = class_text_features(model, classnames, templates) if text is None else text
    lookup = {name: k for k, name in enumerate(classnames)}
    accuracy = ZeroShotAccuracy()
    for batch in batched(samples, batch_size):
        images = model.preprocess([s.image for s in batch])
        predicted = (F.normalize(model.encode_image(images).float(), dim=-1) @ text.T.to(images.device)).argmax(dim=-1)
        accuracy.update(predicted.tolist(), [{lookup.get(c, -1) for c in s.masks} for s in batch])
    return accuracy.compute()
