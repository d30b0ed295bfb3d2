"""The CLIP contrastive loss (Radford et al. 2021, arXiv 2103.00020), and ECLIP's background negatives.

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

import torch
import torch.nn.functional as F


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


def local_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    image_negatives: torch.Tensor | None = None,
    negatives_valid: torch.Tensor | None = None,
    *,
    rows: slice,
) -> torch.Tensor:
    """`clip_loss` of the pairs `rows` only: this rank's images and captions against every column.

    open_clip's `--local-loss` (Ilharco et al. 2021, doi:10.5281/zenodo.5143773): under DDP each
    rank scores its n pairs against the N gathered ones, an (n, N) logit matrix instead of (N, N).
    With the features all-gathered with gradients and the gradients averaged over ranks, the sum
    of the ranks' local losses is world x the global loss, so the gradient is the global loss's
    exactly; only memory and compute shrink. Arguments as `clip_loss` (all N rows), plus `rows`.
    """
    n = image_features.shape[0]
    own = torch.arange(n, device=image_features.device)[rows]
    logits = logit_scale * image_features[rows] @ text_features.T  # (n, N)
    with torch.no_grad():  # identical captions all count as positives, as in clip_loss
        same = (text_features[rows] @ text_features.T) > 1 - 1e-6
        same[torch.arange(len(own)), own] = True
        targets = same.float() / same.sum(dim=1, keepdim=True)
    loss_i = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
    logits_t = logit_scale * text_features[rows] @ image_features.T
    targets_t = targets
    if image_negatives is not None:
        extra = logit_scale * text_features[rows] @ image_negatives.T
        if negatives_valid is not None:
            extra = extra.masked_fill(~negatives_valid[None, :], -1e4)
        logits_t = torch.cat([logits_t, extra], dim=1)
        targets_t = torch.cat([targets_t, torch.zeros_like(extra)], dim=1)
    loss_t = torch.sum(-targets_t * F.log_softmax(logits_t, dim=1), dim=1).mean()
    return (loss_i + loss_t) / 2
