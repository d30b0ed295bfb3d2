"""GEM: Grounding Everything (Bousselham, Petersen, Ferrari, Kuehne 2024, arXiv 2312.00878).

A parallel path over the last blocks (like CLIP Surgery), whose attention is "self-self":
for each of p in {q, k, v} (L2-normalised per head), iterate p <- softmax(tau p p^T) p a few times
(default once), re-normalise, and use A_p = softmax(tau p p^T) to pool the values; the three
outputs are averaged, (A_q v + A_k v + A_v v) / 3, projected by the block's out_proj and added
to the parallel residual stream (no FFN). The inverse temperature tau is adaptive as in the
authors' code: the mean token norm of the block's normed input times head_dim^-0.5, per image.
Defaults follow the authors' wrapper: the last 6 blocks (depth=7 there counts one more), 1
iteration. One forward for any number of texts. ViT only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eclip.methods.base import register
from eclip.methods.dense import DenseMethod
from eclip.methods.vit_paths import dense_from_tokens, dual_path_tokens


def self_self_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    inv_temp: torch.Tensor | float,
    iterations: int = 1,
) -> torch.Tensor:
    """(B, heads, T, d) q, k, v -> (B, heads, T, d) mean of the q-q, k-k and v-v self-self attention outputs."""
    outputs = []
    for p in (q, k, v):
        p = F.normalize(p, dim=-1)
        for _ in range(iterations):
            p = F.normalize(torch.softmax((p @ p.transpose(-2, -1)) * inv_temp, dim=-1) @ p, dim=-1)
        outputs.append(torch.softmax((p @ p.transpose(-2, -1)) * inv_temp, dim=-1) @ v)
    return sum(outputs) / 3.0


@register
class GEM(DenseMethod):
    """Self-self attention (q-q, k-k, v-v, iterated) on a parallel path over the last ViT blocks."""

    name = "gem"
    paper = "GEM (Grounding Everything): Bousselham et al. 2024, arXiv 2312.00878"
    archs = frozenset({"vit"})

    depth: int = 6  # blocks on the parallel path
    iterations: int = 1
    temperature: float | None = None  # a fixed inverse temperature (None: adaptive, the authors')

    def dense(self, model, images: torch.Tensor) -> torch.Tensor:
        def ss(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x_normed: torch.Tensor) -> torch.Tensor:
            if self.temperature is None:
                inv_temp = x_normed.norm(dim=-1).mean(dim=-1).view(-1, 1, 1, 1) * q.shape[-1] ** -0.5
            else:
                inv_temp = self.temperature
            return self_self_attention(q, k, v, inv_temp, self.iterations)

        return dense_from_tokens(model, dual_path_tokens(model, images, self.depth, ss), images)
