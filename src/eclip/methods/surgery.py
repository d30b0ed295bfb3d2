"""CLIP Surgery (Li, Wang, Duan, Li 2023, arXiv 2304.05653): architecture surgery + feature surgery.

The follow-up of ECLIP by the same authors. Two training-free changes:
- Architecture surgery. ViT: a parallel path over the last `depth` blocks (6 in the authors'
  code) adds, at each block, the output of v-v self-attention softmax(s v v^T) v computed on the
  original path's tokens, and skips the FFNs; the original network runs unchanged beside it.
  ResNet: the attention pool with q = k = v = v_proj(x + pos), softmax(s v v^T) v, then c_proj
  (the authors' code copies v_proj into q and k).
- Feature surgery. With normalised dense features f and K texts t_k, the element-wise products
  f * t_k share a "redundant" part common to all texts (what makes every map light up the same
  background). Surgery subtracts its mean over the texts, weighted by w_k = p_k / mean_j p_j with
  p = softmax(2 f.t) over the texts, before summing channels:
      sim_k = sum_c (f_c t_kc w_k - mean_j f_c t_jc w_j) = w_k (f.t_k) - mean_j w_j (f.t_j).
  With one text that is identically zero, so, as the authors' demo does, the embedding of the
  empty text is subtracted instead: sim = f.(t - t_empty).
One forward for any number of texts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eclip.methods.base import Method, register
from eclip.methods.itsm import similarity_map
from eclip.methods.vit_paths import dense_from_tokens, dual_path_tokens, self_attention


def feature_surgery(dense: torch.Tensor, text_features: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """(B, h, w, D) dense features, (K, D) texts -> (B, K, h, w) similarity with redundant features removed.

    `temperature` scales the cosines in the softmax that weights texts (2 in the authors' code;
    0 gives uniform weights, i.e. plain removal of the mean over texts).
    """
    f = F.normalize(dense.float(), dim=-1)
    cos = torch.einsum("bhwd,kd->bkhw", f, text_features.to(f))
    prob = torch.softmax(cos * temperature, dim=1)
    weighted = cos * prob / prob.mean(dim=1, keepdim=True)
    return weighted - weighted.mean(dim=1, keepdim=True)


def empty_text_embedding(model) -> torch.Tensor:
    """(D,) normalised embedding of the empty text: the redundant feature for a single text.

    `DenseCLIP.encode_text` rejects empty texts on purpose (they are user errors), so the tokens
    are made and encoded directly here.
    """
    with torch.no_grad():
        tokens = model.tokenizer([""]).to(model.device)
        return F.normalize(model._encode_tokens(tokens).float(), dim=-1)[0]


def vit_surgery_dense(model, images: torch.Tensor, depth: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, h, w, D): the v-v parallel path over the last `depth` blocks."""

    def vv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x_normed: torch.Tensor) -> torch.Tensor:
        return self_attention(v, v.shape[-1] ** -0.5) @ v

    return dense_from_tokens(model, dual_path_tokens(model, images, depth, vv), images)


def resnet_surgery_dense(model, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, h, w, D): the attention pool with v-v self-attention at every position."""
    feats = model.features(images)
    b, _, h, w = feats.shape
    v = model.pool_tokens(feats).v  # (B, heads, 1 + hw, d)
    out = model.pool_output(self_attention(v, v.shape[-1] ** -0.5) @ v)  # (B, 1 + hw, D)
    return out[:, 1:].reshape(b, h, w, -1)


@register
class CLIPSurgery(Method):
    """v-v attention on a parallel path (ViT) or in the attention pool (ResNet), then feature surgery."""

    name = "surgery"
    paper = "CLIP Surgery: Li, Wang, Duan, Li 2023, arXiv 2304.05653"

    def __init__(self, depth: int = 6, remove_redundant: bool = True, temperature: float = 2.0) -> None:
        """`depth`: ViT blocks on the parallel path (6 in the authors' code); `remove_redundant`: feature
        surgery (False gives the plain cosine of the surgery path)."""
        self.depth = depth
        self.remove_redundant = remove_redundant
        self.temperature = temperature

    def dense(self, model, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h, w, D) architecture-surgery features."""
        if model.arch == "resnet":
            return resnet_surgery_dense(model, images)
        return vit_surgery_dense(model, images, self.depth)

    def raw_maps(self, model, images, text_features):
        dense = self.dense(model, images)
        if not self.remove_redundant:
            return similarity_map(dense, text_features)
        if len(text_features) == 1:
            return similarity_map(dense, text_features - empty_text_embedding(model).to(text_features))
        return feature_surgery(dense, text_features, self.temperature)
