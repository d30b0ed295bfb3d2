"""ITSM: the image-text similarity map of ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046).

Every dense location's feature in the joint space (ViT: every output token after the final norm
and the visual projection; ResNet: the attention pool evaluated at every position) is compared
by cosine similarity with each L2-normalised text embedding. One forward pass serves any number
of texts. The raw map is the cosine itself; the optional softmax over the K texts (with CLIP's
logit scale) is our option, off by default.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eclip.methods.base import Method, register


def similarity_map(dense: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """(B, h, w, D) dense features, (K, D) normalised texts -> (B, K, h, w) cosine similarities."""
    dense = F.normalize(dense.float(), dim=-1)
    return torch.einsum("bhwd,kd->bkhw", dense, text_features.to(dense))


@register
class ITSM(Method):
    """Cosine similarity of each dense location with each text (ECLIP's ITSM)."""

    name = "itsm"
    paper = "ECLIP / ITSM: Li et al. 2022, arXiv 2209.07046"

    def __init__(self, softmax: bool = False) -> None:
        self.softmax = softmax

    def raw_maps(self, model, images, text_features):
        sim = similarity_map(model.dense(images), text_features)
        if self.softmax:
            sim = torch.softmax(sim * model.logit_scale, dim=1)
        return sim

