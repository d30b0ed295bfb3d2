"""CLIP Surgery (Li, Wang, Duan, Li 2023, arXiv 2304.05653): architecture surgery + feature surgery.

The follow-up of ECLIP by the same authors. Two training-free changes:
- Architecture surgery. ViT: a parallel path over the last `depth` blocks (6 in the authors'
  code) adds, at each block, the output of v-v self-attention softmax(s v v^T) v computed on the
  original path's tokens, and skips the FFNs; the original network runs unchanged beside it.
  ResNet: the attention pool with q = k = v = v_proj(x + pos), softmax(s v v^T) v, then c_proj
  (the authors' code copies v_proj into q and k).
- Feature surgery. With normalised dense features f and K texts t_k, the element-wise products
  f * t_k share a "redundant" part common to all texts (what makes every map light up the same
  background). Surgery subtracts its mean over the texts, weighted by w_k = p_k / mean_j p_j, before
  summing channels:
      sim_k = sum_c (f_c t_kc w_k - mean_j f_c t_jc w_j) = w_k (f.t_k) - mean_j w_j (f.t_j).
  The weights are computed once per image, from the class token: p = softmax(2 cos(class token, t))
  over the texts (the authors' `clip_feature_surgery`). The class token is the original path's
  (ViT: the model's own pooled embedding); for ResNets, as their attention pool copies v_proj into
  q and k, it is the mean token of the v-v pool.
  With one text the mean is that text, so, as the authors' demo does, the prompt ensemble of the
  empty text over their 85 templates (`eclip.prompts.SURGERY`) is subtracted instead:
  sim = f.(t - t_empty).
Defaults reproduce the authors' code (xmed-lab/CLIP_Surgery) on the same weights.
One forward for any number of texts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eclip.methods.base import Method, register
from eclip.methods.dense import similarity_map
from eclip.methods.vit_paths import dense_from_tokens, dual_path_tokens, pooled_from_tokens, self_attention
from eclip.prompts import SURGERY, encode_prompts


def feature_surgery(dense: torch.Tensor, text_features: torch.Tensor, class_token: torch.Tensor,
                    temperature: float = 2.0) -> torch.Tensor:
    """(B, h, w, D) dense features, (K, D) texts, (B, D) class token -> (B, K, h, w) similarity with
    the redundant features removed.

    `temperature` scales the class token's cosines in the softmax that weights the texts (2 in the
    authors' code; 0 gives uniform weights, i.e. plain removal of the mean over texts).
    """
    f = F.normalize(dense.float(), dim=-1)
    texts = text_features.to(f)
    cos = torch.einsum("bhwd,kd->bkhw", f, texts)
    prob = torch.softmax(temperature * F.normalize(class_token.float(), dim=-1) @ texts.T, dim=-1)  # (B, K)
    weighted = cos * (prob / prob.mean(dim=1, keepdim=True))[:, :, None, None]
    return weighted - weighted.mean(dim=1, keepdim=True)


def empty_text_embedding(model) -> torch.Tensor:
    """(D,) the redundant feature for a single text: CLIP Surgery's prompt ensemble of the empty text."""
    return encode_prompts(model, [""], SURGERY)[0]


def vit_surgery(model, images: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) -> class token (B, D) of the original path, dense (B, h, w, D) of the v-v parallel
    path over the last `depth` blocks."""

    def vv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x_normed: torch.Tensor) -> torch.Tensor:
        return self_attention(v, v.shape[-1] ** -0.5) @ v

    parallel, original = dual_path_tokens(model, images, depth, vv, with_original=True)
    return pooled_from_tokens(model, original), dense_from_tokens(model, parallel, images)


def resnet_surgery(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) -> mean token (B, D), dense (B, h, w, D): the attention pool with v-v self-attention."""
    feats = model.features(images)
    b, _, h, w = feats.shape
    v = model.pool_tokens(feats).v  # (B, heads, 1 + hw, d)
    out = model.pool_output(self_attention(v, v.shape[-1] ** -0.5) @ v)  # (B, 1 + hw, D)
    return out[:, 0], out[:, 1:].reshape(b, h, w, -1)


@register
class CLIPSurgery(Method):
    """v-v attention on a parallel path (ViT) or in the attention pool (ResNet), then feature surgery."""

    name = "surgery"
    paper = "CLIP Surgery: Li, Wang, Duan, Li 2023, arXiv 2304.05653"

    depth: int = 6  # ViT blocks on the parallel path (6 in the authors' code)
    remove_redundant: bool = True  # feature surgery (False: the plain cosine of the surgery path)
    temperature: float = 2.0  # of the text weights' softmax

    def surgery(self, model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> class token (B, D) and dense (B, h, w, D) architecture-surgery features."""
        if model.arch == "resnet":
            return resnet_surgery(model, images)
        return vit_surgery(model, images, self.depth)

    def raw_maps(self, model, images, text_features):
        class_token, dense = self.surgery(model, images)
        if not self.remove_redundant:
            return similarity_map(dense, text_features)
        if len(text_features) == 1:
            return similarity_map(dense, text_features - empty_text_embedding(model).to(text_features))
        return feature_surgery(dense, text_features, class_token, self.temperature)
