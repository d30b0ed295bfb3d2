"""open_clip's VisionTransformer behind the DenseCLIP protocol.

Blocks use `nn.MultiheadAttention` (`in_proj_weight`, `in_proj_bias`, `out_proj`, `num_heads`:
stable across open_clip releases); the tensor layout does not matter because we recompute the
attention from those weights on (B, T, C) tokens ourselves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eclip.errors import ModelLoadError
from eclip.models.open_clip_text import OpenClipTextMixin
from eclip.models.vit import BlockView, ViTAdapter


class OpenClipBlock(BlockView):
    """View of an open_clip `ResidualAttentionBlock`."""

    def __init__(self, block: torch.nn.Module) -> None:
        attn = block.attn
        if not hasattr(attn, "in_proj_weight") or attn.in_proj_weight is None:
            raise ModelLoadError(
                "this open_clip ViT block has no fused in_proj_weight (custom attention); "
                "eclip supports the standard ResidualAttentionBlock of CLIP ViTs"
            )
        self.block = block
        self.num_heads = attn.num_heads

    def ln_1(self, x):
        return self.block.ln_1(x)

    def ln_2(self, x):
        return self.block.ln_2(x)

    def mlp(self, x):
        return self.block.mlp(x)

    def ls_1(self, x):
        return self.block.ls_1(x)

    def ls_2(self, x):
        return self.block.ls_2(x)

    def qkv(self, x):
        attn = self.block.attn
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        b, t, c = q.shape
        shape = (b, t, self.num_heads, c // self.num_heads)
        return tuple(z.reshape(shape).transpose(1, 2) for z in (q, k, v))

    def out_proj(self, x):
        return self.block.attn.out_proj(x)


class OpenClipViT(OpenClipTextMixin, ViTAdapter):
    """Any open_clip CLIP whose `visual` is a VisionTransformer with class-token or average pooling."""

    def __init__(self, model, tokenizer, **kwargs) -> None:
        visual = model.visual
        if getattr(visual, "attn_pool", None) is not None:
            raise ModelLoadError(
                f"{kwargs.get('name')}: ViTs with an attentional pooler (CoCa) are not supported; "
                "use a CLIP ViT with class-token or average pooling"
            )
        self.pool_type = getattr(visual, "pool_type", "tok")
        if self.pool_type not in ("tok", "avg") or getattr(visual, "final_ln_after_pool", False):
            raise ModelLoadError(
                f"{kwargs.get('name')}: pool_type={self.pool_type!r} with final_ln_after_pool is not "
                "supported; use a CLIP ViT whose final norm is applied to every token"
            )
        super().__init__(model, tokenizer, **kwargs)
        self.visual = visual
        self.blocks = [OpenClipBlock(b) for b in visual.transformer.resblocks]

    @property
    def patch_size(self) -> int:
        return int(self.visual.conv1.kernel_size[0])

    def _patch_embed(self, images):
        return self.visual.conv1(images)

    @property
    def patch_conv(self):
        return self.visual.conv1

    @property
    def class_embedding(self):
        return self.visual.class_embedding

    @property
    def pos_embedding(self):
        return self.visual.positional_embedding

    def ln_pre(self, x):
        return self.visual.ln_pre(x)

    def _ln_post(self, x):
        return self.visual.ln_post(x)

    @property
    def final_norm(self):
        return self.visual.ln_post

    def _project(self, x):
        return x @ self.visual.proj if self.visual.proj is not None else x
