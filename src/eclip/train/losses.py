"""The loss of a training run: which terms it has (`LossTerms`), the CLIP contrastive loss, and its variants.

The CLIP contrastive loss (Radford et al. 2021, arXiv 2103.00020) is always there; `LossTerms`
says which variants and extra terms a run adds, so the loop picks the loss by these fields and
never by what the embedder happens to return.

Symmetric InfoNCE over a batch of matched image-text pairs with a learned temperature: each
image must pick its own caption among the batch's captions and each caption its own image.

Background negatives (ours, an ECLIP variant): ECLIP's masked max pooling (Li et al. 2022, arXiv
2209.07046) sends gradient only to the masked-in (foreground) locations, so nothing pushes the
background's similarity to the text down, and the similarity map keeps preferring the background.
With `image_negatives` each caption must also pick its own image's foreground embedding over the
background embeddings of every image of the batch (the same head pooled over the locations
outside each mask): the text-to-image softmax runs over N foregrounds and N backgrounds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from eclip.errors import RecipeError

BACKGROUND_NEGATIVES = ("none", "max", "avg")


@dataclass(frozen=True)
class LossTerms:
    """The loss terms of a run, one field each (a new term is a new field whose default is "off").

    Attributes:
        background_negatives: "none", or how the background outside each training mask is pooled
            into an extra negative of the text-to-image softmax: "max" (the head's max) or "avg"
            (ours; needs the `masked_max` head, whose mask it reads).
    """

    background_negatives: str = "none"

    def __post_init__(self) -> None:
        if self.background_negatives not in BACKGROUND_NEGATIVES:
            raise RecipeError(f"`loss.background_negatives` {self.background_negatives!r} is unknown; "
                              f"use one of {', '.join(BACKGROUND_NEGATIVES)}")


@dataclass
class ImageEmbedding:
    """What an image embedder returns for (N, 3, H, W) images.

    Attributes:
        pooled: (N, D) the head's embedding the contrastive loss reads (masked in training).
        negatives: (N, D) the background pooled outside each mask (background negatives), or None.
        valid: (N,) bool, False where an image has no background (its mask covers every location).
        dense: (N, h, w, D) the dense projected features, when a term reads them.
        mask: (N, h, w) bool foreground masks, when the run makes them.
    """

    pooled: torch.Tensor
    negatives: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    dense: torch.Tensor | None = None
    mask: torch.Tensor | None = None


class LossTerm(Protocol):
    """A term added to the contrastive loss: `term(model, images, embedded, text)` -> a weighted scalar.

    `text` is this process's (N, D) L2-normalised caption embeddings, row i the caption of image i.
    """

    name: str

    def __call__(self, model: torch.nn.Module, images: torch.Tensor, embedded: ImageEmbedding, text: torch.Tensor) -> torch.Tensor: ...


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    image_negatives: torch.Tensor | None = None,
    negatives_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, D) normalised image and text features of N matched pairs, scalar scale -> scalar loss.

    Identical captions in one batch (common with templated captions) are all counted as
    positives, so the loss never asks the model to separate two identical texts.

    Args:
        image_negatives: (N, D) normalised extra image-side negatives (background embeddings);
            they join the text-to-image softmax only.
        negatives_valid: (N,) bool, False where an image has no negative (its mask covers every
            location); such columns are left out.
    """
    logits = logit_scale * image_features @ text_features.T
    targets = _soft_targets(text_features)
    loss_i = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
    logits_t = logits.T
    targets_t = targets.T
    if image_negatives is not None:
        extra = logit_scale * text_features @ image_negatives.T
        if negatives_valid is not None:
            extra = extra.masked_fill(~negatives_valid[None, :], -1e4)
        logits_t = torch.cat([logits_t, extra], dim=1)
        targets_t = torch.cat([targets_t, torch.zeros_like(extra)], dim=1)
    loss_t = torch.sum(-targets_t * F.log_softmax(logits_t, dim=1), dim=1).mean()
    return (loss_i + loss_t) / 2


def _soft_targets(text_features: torch.Tensor) -> torch.Tensor:
    """(N, N) row-stochastic targets: uniform over the pairs whose texts are identical."""
    with torch.no_grad():
        same = (text_features @ text_features.T) > 1 - 1e-6
        same |= torch.eye(len(text_features), dtype=torch.bool, device=text_features.device)
        return same.float() / same.sum(dim=1, keepdim=True)
