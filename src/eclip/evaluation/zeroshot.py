"""Zero-shot classification accuracy, CLIP's own test (Radford et al. 2021, arXiv 2103.00020).

Each image is classified by the cosine of the model's pooled image embedding with one prompt
(ensemble) per class name. With several objects per image, top-1 counts as correct when the
predicted class is among the classes present (the multi-label reading used for scene images);
`top1_single` restricts to images with exactly one class present, the strict reading.
Direction: higher is better. ECLIP's fine-tuning must not lower it (ECLIP.md section 3).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from eclip.data.sample import Sample
from eclip.prompts import encode_prompts


@torch.no_grad()
def zero_shot_accuracy(
    model,
    samples: Iterable[Sample],
    classnames: Sequence[str],
    templates: str | Sequence[str] | None = "single",
    batch_size: int = 64,
) -> dict[str, float]:
    """Top-1 accuracy of `model` on `samples` over `classnames`: {top1, top1_single, n, n_single}."""
    text = encode_prompts(model, list(classnames), templates)
    hits = hits_single = n = n_single = 0
    batch: list[Sample] = []

    def flush() -> None:
        nonlocal hits, hits_single, n, n_single
        images = model.preprocess([s.image for s in batch])
        predicted = (F.normalize(model.encode_image(images).float(), dim=-1) @ text.T).argmax(dim=-1)
        for sample, index in zip(batch, predicted.tolist()):
            hit = classnames[index] in sample.masks
            hits += hit
            n += 1
            if len(sample.masks) == 1:
                hits_single += hit
                n_single += 1

    for sample in samples:
        batch.append(sample)
        if len(batch) == batch_size:
            flush()
            batch = []
    if batch:
        flush()
    return {"top1": hits / max(1, n), "top1_single": hits_single / max(1, n_single), "n": n, "n_single": n_single}
