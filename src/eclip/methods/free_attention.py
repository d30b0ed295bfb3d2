"""Free attention as an explanation map: where the model's pooled query looks, text-independent.

ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046, v2) trains its masked max pooling with masks
from a "free attention". Seen as a map it is a strong training-free baseline at toy scale
(ECLIP.md section 3), so it is evaluated like any method; it is the same for every text.
"""
from __future__ import annotations

from eclip.errors import MethodError
from eclip.methods.base import Method, register
from eclip.models.free_attention import SOURCES, attention_weights


@register
class FreeAttention(Method):
    """The model's own last-layer pooled-query attention (or rollout / pooled similarity), one map for all texts."""

    name = "free_attention"
    paper = "free attention of ECLIP: Li et al. 2022, arXiv 2209.07046 (v2); rollout: Abnar & Zuidema 2020, arXiv 2005.00928"

    uses_text = False

    source: str = "cls_attention"  # one of `eclip.models.free_attention.SOURCES`

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise MethodError(f"unknown free-attention source '{self.source}'; use one of {', '.join(SOURCES)}")

    def raw_maps(self, model, images, text_features):
        weights = attention_weights(model, images, self.source)
        return weights[:, None].expand(-1, text_features.shape[0], -1, -1)
