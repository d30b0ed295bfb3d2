"""ITSM: the image-text similarity map of ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046).

Every dense location's feature in the joint space (ViT: every output token after the final norm
and the visual projection; ResNet: the attention pool evaluated at every position) is compared
by cosine similarity with each L2-normalised text embedding. One forward pass serves any number
of texts. The raw map is the cosine itself; the optional softmax over the K texts (with CLIP's
logit scale) is our option, off by default.
"""
from __future__ import annotations

import torch

from eclip.methods.base import register
from eclip.methods.dense import DenseMethod


@register
class ITSM(DenseMethod):
    """Cosine similarity of each dense location with each text (ECLIP's ITSM).

    `softmax`: the softmax over the K texts of the logit-scaled cosines (ours; off by default).
    """

    name = "itsm"
    paper = "ECLIP / ITSM: Li et al. 2022, arXiv 2209.07046"

    softmax: bool = False

    def dense(self, model, images):
        return model.dense(images)

    def raw_maps(self, model, images, text_features):
        sim = super().raw_maps(model, images, text_features)
        if self.softmax:
            sim = torch.softmax(sim * model.logit_scale, dim=1)
        return sim

