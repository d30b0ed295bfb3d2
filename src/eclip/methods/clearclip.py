"""ClearCLIP (Lan, Chen, Chen, Wu, Loy 2024, "Decomposing CLIP representations for dense
vision-language inference", arXiv 2407.12442).

ClearCLIP finds that the noise in CLIP's dense features comes mostly from the residual connection
of the last block, and that its FFN contributes little. Its last block keeps only the attention
output, with query-query attention softmax(s q q^T): out_proj(softmax(s q q^T) v), no residual,
no FFN; then the final norm and the projection. One forward for any number of texts.
"""
from __future__ import annotations

import torch

from eclip.methods.base import register
from eclip.methods.dense import LastBlockMethod
from eclip.methods.vit_paths import self_attention


def query_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d) q -> (B, heads, T, T) softmax(s q q^T), s = d^-0.5."""
    return self_attention(q, q.shape[-1] ** -0.5)


@register
class ClearCLIP(LastBlockMethod):
    """Last block reduced to its q-q attention output (no residual, no FFN); cosine with texts."""

    name = "clearclip"
    paper = "ClearCLIP: Lan et al. 2024, arXiv 2407.12442"

    residual: bool = False
    ffn: bool = False

    def attention(self, model, images):
        return query_query_attention
