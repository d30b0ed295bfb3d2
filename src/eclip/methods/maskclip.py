"""MaskCLIP (Zhou, Loy, Dai 2022, "Extract free dense labels from CLIP", arXiv 2112.01071).

The last attention's query-key mixing is what turns CLIP's locations into a global vector; MaskCLIP
drops it and keeps the value path, so each location keeps its own content.
- ResNet: the attention pool's value and output projections applied at every position as 1x1
  convolutions, c_proj(v_proj(x)), on the last stage's features (no position embedding, no q, k),
  exactly as the paper and its code do.
- ViT: the last block with its attention replaced by the value path, out_proj(v(ln_1(x))). The
  authors' code keeps that block's residual connection and FFN (`v += x; v = ffn(norm2(v), v)`),
  then the final norm and the projection; that is our default. `residual=False, ffn=False` gives
  the bare value path out_proj(v) (the form ClearCLIP, Lan et al. 2024, re-implements).
Then cosine with each text, as ITSM. One forward serves any number of texts.
"""
from __future__ import annotations

import torch

from eclip.methods.base import register
from eclip.methods.dense import LastBlockMethod


def value_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Identity attention (B, heads, T, T): every token takes only its own value."""
    eye = torch.eye(q.shape[-2], device=q.device, dtype=q.dtype)
    return eye.expand(q.shape[0], q.shape[1], -1, -1)


@register
class MaskCLIP(LastBlockMethod):
    """Dense features from the last attention's value path (no q-k attention), cosine with texts.

    `residual`, `ffn` (ViT only): keep the last block's residual connection and FFN (the authors' code does).
    """

    name = "maskclip"
    paper = "MaskCLIP: Zhou, Loy, Dai 2022, arXiv 2112.01071"
    archs = frozenset({"vit", "resnet"})

    def attention(self, model, images):
        return value_attention

    def dense(self, model, images: torch.Tensor) -> torch.Tensor:
        if model.arch == "resnet":
            return model.value_path(model.features(images))
        return super().dense(model, images)
