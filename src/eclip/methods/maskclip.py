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

from eclip.methods.base import Method, register
from eclip.methods.itsm import similarity_map
from eclip.methods.vit_paths import last_block_dense


def value_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Identity attention (B, heads, T, T): every token takes only its own value."""
    eye = torch.eye(q.shape[-2], device=q.device, dtype=q.dtype)
    return eye.expand(q.shape[0], q.shape[1], -1, -1)


@register
class MaskCLIP(Method):
    """Dense features from the last attention's value path (no q-k attention), cosine with texts."""

    name = "maskclip"
    paper = "MaskCLIP: Zhou, Loy, Dai 2022, arXiv 2112.01071"

    def __init__(self, residual: bool = True, ffn: bool = True) -> None:
        """ViT only: keep the last block's residual connection and FFN (the authors' code does)."""
        self.residual = residual
        self.ffn = ffn

    def dense(self, model, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h, w, D) MaskCLIP features in the joint space."""
        if model.arch == "resnet":
            return model.value_path(model.features(images))
        return last_block_dense(model, images, value_attention, residual=self.residual, ffn=self.ffn)

    def raw_maps(self, model, images, text_features):
        return similarity_map(self.dense(model, images), text_features)
