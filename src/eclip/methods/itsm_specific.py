"""ITSM along class-specific text directions (ours): the map read where the texts differ.

On the project's benchmark the sign of ECLIP's ITSM (Li et al. 2022, arXiv 2209.07046) is set by
the direction every prompt shares ("a photo of a ..."): CLIP's contrastive loss is blind to how an
image feature aligns with a direction all texts have in common, so nothing ties that alignment to
the object (README, "Where the shift lives"; `bench/shift_anatomy.py`). Removing the shared part,
as CLIP Surgery (Li et al. 2023, arXiv 2304.05653) removes the features common to all classes,
reads the map along the direction that tells the texts apart.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eclip.methods.base import register
from eclip.methods.dense import DenseMethod, similarity_map
from eclip.methods.surgery import empty_text_embedding


def specific_directions(model, text_features: torch.Tensor) -> torch.Tensor:
    """(K, D) normalised texts -> (K, D) their class-specific parts, renormalised.

    The shared part is the mean of the K texts; with one text, CLIP Surgery's prompt ensemble of
    the empty text (`eclip.methods.surgery.empty_text_embedding`).
    """
    texts = text_features.float()
    shared = texts.mean(dim=0, keepdim=True) if len(texts) > 1 else empty_text_embedding(model).float().to(texts.device)[None]
    return F.normalize(texts - shared, dim=-1)


@register
class SpecificITSM(DenseMethod):
    """Cosine of each dense location with each text's class-specific direction (ours).

    The same dense features as `itsm` (one forward for any K); each text minus the mean of the
    text set, renormalised. With one text the empty-text ensemble stands for the shared part.
    """

    name = "itsm_specific"
    paper = "ITSM (Li et al. 2022, arXiv 2209.07046) along class-specific text directions (ours)"

    def dense(self, model, images):
        return model.dense(images)

    def raw_maps(self, model, images, text_features):
        return similarity_map(self.dense(model, images), specific_directions(model, text_features))
