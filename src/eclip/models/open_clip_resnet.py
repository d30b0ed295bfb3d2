"""open_clip's ModifiedResNet behind the DenseCLIP protocol.

Dense features follow ECLIP (Li et al. 2022, arXiv 2209.07046) and the authors' public code:
the attention pool is evaluated with *every* spatial position as a query, with full q-k attention
over the mean token and all positions, position embedding added, value and output projections,
exactly as the pool computes its one pooled output from the mean-token query. (The value path
alone, without q-k attention, is MaskCLIP: a separate method.)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eclip.models.adapter import DenseCLIP
from eclip.models.open_clip_text import OpenClipTextMixin
from eclip.models.vit import interpolate_pos_embed


@dataclass
class PoolTokens:
    """The attention pool's inputs and parts for one batch.

    x: (B, 1 + h*w, C) tokens (mean token first) with position embedding added;
    q, k, v: (B, heads, 1 + h*w, C // heads), q not yet scaled.
    """

    x: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor


class OpenClipResNet(OpenClipTextMixin, DenseCLIP):
    """Any open_clip CLIP whose `visual` is a ModifiedResNet with its attention pool."""

    arch = "resnet"

    def __init__(self, model, tokenizer, **kwargs) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.visual = model.visual
        self.pool = self.visual.attnpool

    @property
    def patch_size(self) -> int:
        return 32

    @property
    def num_heads(self) -> int:
        return int(self.pool.num_heads)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, h, w): the last stage's output, the input of the attention pool."""
        v = self.visual
        x = v.stem(images.to(self.dtype))
        return v.layer4(v.layer3(v.layer2(v.layer1(x))))

    def dilated_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H - s, W - s): the last stage without strides (dilated), see `eclip.models.dilated_resnet`."""
        from eclip.models.dilated_resnet import dilated_features

        return dilated_features(self.visual, images.to(self.dtype))

    def pool_tokens(self, feats: torch.Tensor) -> PoolTokens:
        """(B, C, h, w) -> the attention pool's tokens and q, k, v."""
        b, c, h, w = feats.shape
        x = feats.flatten(2).transpose(1, 2)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        pos = self.pool.positional_embedding
        side = int(round((pos.shape[0] - 1) ** 0.5))
        x = x + interpolate_pos_embed(pos, (side, side), (h, w)).to(x.dtype)
        heads = self.num_heads

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(b, -1, heads, c // heads).transpose(1, 2)

        return PoolTokens(x, split(self.pool.q_proj(x)), split(self.pool.k_proj(x)), split(self.pool.v_proj(x)))

    def pool_output(self, heads_out: torch.Tensor) -> torch.Tensor:
        """(B, heads, T, d) attention output -> (B, T, D) through the output projection c_proj."""
        b, h, t, d = heads_out.shape
        return self.pool.c_proj(heads_out.transpose(1, 2).reshape(b, t, h * d))

    def value_path(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, h, w, D): c_proj(v_proj(x)) at every location, the pool without q-k attention
        and position embedding (MaskCLIP, Zhou et al. 2022)."""
        x = feats.permute(0, 2, 3, 1)
        return self.pool.c_proj(self.pool.v_proj(x))

    def attention_pool(self, feats: torch.Tensor, return_attn: bool = False):
        """(B, C, h, w) -> (B, 1 + h*w, D) outputs for every query (mean token first) [and attention]."""
        t = self.pool_tokens(feats)
        scale = t.q.shape[-1] ** -0.5
        attn = torch.softmax((t.q * scale) @ t.k.transpose(-2, -1), dim=-1)
        out = self.pool_output(attn @ t.v)
        return (out, attn) if return_attn else out

    def pooled_and_dense(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(images)
        out = self.attention_pool(feats)
        b, _, h, w = feats.shape
        return out[:, 0], out[:, 1:].reshape(b, h, w, -1)

