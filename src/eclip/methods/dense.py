"""The dense family: a method that makes per-location features in the joint space, then takes their cosine with each text.

ITSM (Li et al. 2022, arXiv 2209.07046) reads the model's own dense features; the training-free
baselines that followed change how the last block(s) mix the locations (MaskCLIP, SCLIP,
ClearCLIP, NACLIP, GEM) and keep the cosine. One forward serves any number of texts. A
`DenseMethod` gives `dense()`; a `LastBlockMethod` gives only the attention rule that replaces the
last ViT block's q-k attention (`vit_paths.last_block_dense`), with the block's residual
connection and FFN as options.
"""
from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F

from eclip.methods.base import Method
from eclip.methods.vit_paths import AttentionFn, last_block_dense


def similarity_map(dense: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """(B, h, w, D) dense features, (K, D) normalised texts -> (B, K, h, w) cosine similarities."""
    dense = F.normalize(dense.float(), dim=-1)
    return torch.einsum("bhwd,kd->bkhw", dense, text_features.to(dense))


class DenseMethod(Method):
    """A method whose map is the cosine of its dense features with each text."""

    @abstractmethod
    def dense(self, model, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h, w, D) per-location features in the joint space."""

    def raw_maps(self, model, images, text_features):
        return similarity_map(self.dense(model, images), text_features)


class LastBlockMethod(DenseMethod):
    """The ViT with its last block's attention replaced by `attention`; the block's residual and FFN optional.

    Options: `residual` keeps the block's residual connection, `ffn` its FFN (both kept by default,
    the block's own structure; ClearCLIP and NACLIP drop both).
    """

    archs = frozenset({"vit"})

    residual: bool = True
    ffn: bool = True

    @abstractmethod
    def attention(self, model, images: torch.Tensor) -> AttentionFn:
        """The attention rule for these images: (q, k, v), each (B, heads, T, d) -> probabilities (B, heads, T, T)."""

    def dense(self, model, images):
        return last_block_dense(model, images, self.attention(model, images), residual=self.residual, ffn=self.ffn)
