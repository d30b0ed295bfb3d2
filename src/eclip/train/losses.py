"""The CLIP contrastive loss (Radford et al. 2021, arXiv 2103.00020).

Symmetric InfoNCE over a batch of matched image-text pairs with a learned temperature: each
image must pick its own caption among the batch's captions and each caption its own image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """(N, D) normalised image and text features of N matched pairs, scalar scale -> scalar loss.

    Identical captions in one batch (common with templated captions) are all counted as
    positives, so the loss never asks the model to separate two identical texts.
    """
    logits = logit_scale * image_features @ text_features.T
    targets = _soft_targets(text_features)
    loss_i = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
    loss_t = torch.sum(-targets.T * F.log_softmax(logits.T, dim=1), dim=1).mean()
    return (loss_i + loss_t) / 2


def _soft_targets(text_features: torch.Tensor) -> torch.Tensor:
    """(N, N) row-stochastic targets: uniform over the pairs whose texts are identical."""
    with torch.no_grad():
        same = (text_features @ text_features.T) > 1 - 1e-6
        same |= torch.eye(len(text_features), dtype=torch.bool, device=text_features.device)
        return same.float() / same.sum(dim=1, keepdim=True)
