"""Attention rollout (Abnar & Zuidema 2020, arXiv 2005.00928).

Each block's attention, averaged over heads, is mixed with the identity to account for the
residual connection, A_hat = 0.5 A + 0.5 I, re-normalised per row, and the blocks are chained,
R = A_hat_L ... A_hat_1: R[i, j] is how much of input token j reaches output token i. The map is
the pooled output's row over the patches. Rollout ignores the text: every text gets the same
map (it is the baseline that shows what the image encoder attends to at all). ViT only.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from eclip.methods.base import Method, register
from eclip.methods.chefer import pooled_row
from eclip.methods.vit_paths import uses_class_token


def attention_rollout(attentions: Sequence[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Per-block attention (B, heads, T, T), first block first -> (B, T, T) rolled-out attention."""
    rollout = None
    for attn in attentions:
        mean = attn.float().mean(dim=1)
        eye = torch.eye(mean.shape[-1], device=mean.device)
        mixed = (1.0 - residual) * mean + residual * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    if rollout is None:
        raise ValueError("attention rollout needs at least one attention matrix")
    return rollout


@register
class Rollout(Method):
    """Attention rollout of the ViT's blocks (text-independent)."""

    name = "rollout"
    paper = "Attention rollout: Abnar & Zuidema 2020, arXiv 2005.00928"
    archs = frozenset({"vit"})

    uses_text = False

    residual: float = 0.5  # weight of the identity mixed into each block's attention (0.5 in the paper)

    def raw_maps(self, model, images, text_features):
        _, records = model.final_tokens(images, record=True)
        rollout = attention_rollout([r.attn for r in records], self.residual)
        grid = model.tokens_to_grid(pooled_row(rollout, uses_class_token(model)), images)  # (B, h, w)
        return grid[:, None].expand(-1, len(text_features), -1, -1).contiguous()
