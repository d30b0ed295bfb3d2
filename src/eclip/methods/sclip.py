"""SCLIP: correlative self-attention (Wang, Mei, Yuille 2023, arXiv 2312.01597).

CLIP's last attention is nearly the same for every query (spatially invariant), which is why its
patch tokens do not localise. SCLIP replaces the last block's attention by "correlative
self-attention", softmax(s q q^T) + softmax(s k k^T) (s = head_dim^-0.5), reusing the block's own
projections: tokens attend to tokens that look like them. As in the authors' code, the block keeps
its residual connection and FFN (ClearCLIP, Lan et al. 2024, later showed that dropping them
helps; `residual=False, ffn=False` does that). Training-free; one forward for any number of texts.
"""
from __future__ import annotations

import torch

from eclip.methods.base import register
from eclip.methods.dense import LastBlockMethod
from eclip.methods.vit_paths import self_attention


def correlative_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d) q, k -> (B, heads, T, T) softmax(s q q^T) + softmax(s k k^T)."""
    scale = q.shape[-1] ** -0.5
    return self_attention(q, scale) + self_attention(k, scale)


@register
class SCLIP(LastBlockMethod):
    """Last block with correlative (q-q + k-k) self-attention, residual and FFN kept; cosine of the patch tokens with texts."""

    name = "sclip"
    paper = "SCLIP: Wang, Mei, Yuille 2023, arXiv 2312.01597"

    def attention(self, model, images):
        return correlative_attention
