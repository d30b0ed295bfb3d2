"""Hugging Face `CLIPModel` (ViT) behind the DenseCLIP protocol.

HF names the same network differently (`pre_layrnorm`, `layer_norm1`, separate q/k/v
projections, `post_layernorm`, `visual_projection`); this file only maps names, the pass itself
is the shared one in `vit.py`. `transformers` is an optional extra (`pip install eclip[hf]`).
"""
from __future__ import annotations

import torch

from eclip.models.vit import BlockView, ViTAdapter


class HFBlock(BlockView):
    """View of a Hugging Face `CLIPEncoderLayer`."""

    def __init__(self, layer: torch.nn.Module) -> None:
        self.layer = layer
        self.num_heads = layer.self_attn.num_heads

    def ln_1(self, x):
        return self.layer.layer_norm1(x)

    def ln_2(self, x):
        return self.layer.layer_norm2(x)

    def mlp(self, x):
        return self.layer.mlp(x)

    def qkv(self, x):
        attn = self.layer.self_attn
        b, t, c = x.shape
        shape = (b, t, self.num_heads, c // self.num_heads)
        return tuple(proj(x).reshape(shape).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))

    def out_proj(self, x):
        return self.layer.self_attn.out_proj(x)


class HFCLIPViT(ViTAdapter):
    """A `transformers.CLIPModel` whose vision tower is a ViT."""

    def __init__(self, model, tokenizer, **kwargs) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.vision = model.vision_model
        self.blocks = [HFBlock(layer) for layer in self.vision.encoder.layers]

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @property
    def patch_size(self) -> int:
        return int(self.vision.embeddings.patch_embedding.kernel_size[0])

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model.get_text_features(input_ids=tokens)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @property
    def text_blocks(self) -> list[torch.nn.Module]:
        """The text transformer's layers, first to last (methods may hook a layer's input, never edit it)."""
        return list(self.model.text_model.encoder.layers)

    def _native_encode_image(self, images: torch.Tensor) -> torch.Tensor:
        interpolate = tuple(images.shape[-2:]) != self.image_size
        out = self.model.get_image_features(pixel_values=images.to(self.dtype), interpolate_pos_encoding=interpolate)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def _patch_embed(self, images):
        return self.vision.embeddings.patch_embedding(images)

    @property
    def patch_conv(self):
        return self.vision.embeddings.patch_embedding

    @property
    def class_embedding(self):
        return self.vision.embeddings.class_embedding

    @property
    def pos_embedding(self):
        return self.vision.embeddings.position_embedding.weight

    def ln_pre(self, x):
        return self.vision.pre_layrnorm(x)

    def _ln_post(self, x):
        return self.vision.post_layernorm(x)

    @property
    def final_norm(self):
        return self.vision.post_layernorm

    def _project(self, x):
        return self.model.visual_projection(x)
