"""Free attention: where a CLIP attends on its own, and the foreground masks ECLIP trains with.

ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046, v2) restricts its max pooling during training
to the locations a "free attention" marks as foreground; the paper does not say exactly which
attention (v1 took the attention map of a self-supervised image encoder; v2 says "free
attention", presumably the model's own), so the source is ours to choose. We offer:
- `cls_attention`: the model's own last-layer attention of the pooled query: ViT, the class
  token's attention to the patches, averaged over heads; ResNet, the attention pool's mean-token
  query over the spatial positions, averaged over heads.
- `rollout`: attention rollout (Abnar & Zuidema 2020, arXiv 2005.00928), ViT only: the product
  over layers of 0.5 * (head-mean attention) + 0.5 * identity, class-token row.
- `similarity`: cosine of each dense feature with the model's own (original) pooled embedding,
  negatives clipped to zero.
- `none`: uniform weights, so every mask keeps every location (plain max pooling).
Each source gives non-negative weights (B, h, w) that sum to one per image. A mask rule turns
them into a boolean foreground mask: the smallest set of locations holding a share `p` of the
mass (`mass_mask`), or the top fraction of locations (`topk_mask`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from eclip.errors import MethodError
from eclip.models.adapter import DenseCLIP
from eclip.models.pooling import PoolingConfig


def _normalised(weights: torch.Tensor) -> torch.Tensor:
    """(B, ...) non-negative weights -> the same divided by their per-image sum (uniform if all zero)."""
    flat = weights.flatten(1).float().clamp_min(0)
    total = flat.sum(dim=1, keepdim=True)
    uniform = torch.full_like(flat, 1.0 / flat.shape[1])
    flat = torch.where(total > 0, flat / total.clamp_min(1e-12), uniform)
    return flat.view_as(weights)


def cls_attention(model: DenseCLIP, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, h, w): the pooled query's last-layer attention over locations, head mean."""
    if model.arch == "vit":
        _, records = model.final_tokens(images, record=True)
        weights = records[-1].attn[:, :, 0, 1:].mean(dim=1)
        return _normalised(model.tokens_to_grid(weights, images))
    if model.arch == "resnet":
        feats = model.features(images)
        _, attn = model.attention_pool(feats, return_attn=True)
        b, _, h, w = feats.shape
        return _normalised(attn[:, :, 0, 1:].mean(dim=1).reshape(b, h, w))
    raise MethodError(f"free attention is not defined for {model.arch} models; use a ViT or a ResNet CLIP")


def rollout(model: DenseCLIP, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, h, w): attention rollout of the class token (ViT only)."""
    if model.arch != "vit":
        raise MethodError(f"attention rollout needs a ViT, not a {model.arch}; use the cls_attention source")
    _, records = model.final_tokens(images, record=True)
    joint = None
    for record in records:
        attn = record.attn.mean(dim=1).float()
        eye = torch.eye(attn.shape[-1], device=attn.device, dtype=attn.dtype)
        attn = 0.5 * attn + 0.5 * eye
        attn = attn / attn.sum(dim=-1, keepdim=True)
        joint = attn if joint is None else attn @ joint
    return _normalised(model.tokens_to_grid(joint[:, 0, 1:], images))


def native_pooled_and_dense(model: DenseCLIP, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's *original* pooled (B, D) output and dense (B, h, w, D), whatever head it now has."""
    pooled, dense = model.pooled_and_dense(images)
    if model.pooling is not None and not model.pooling.is_native:
        pooled = model._native_encode_image(images)
    return pooled, dense


def pooled_similarity(model: DenseCLIP, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, h, w): cosine of each dense feature with the original pooled embedding, >= 0."""
    pooled, dense = native_pooled_and_dense(model, images)
    cos = torch.einsum("bhwd,bd->bhw", F.normalize(dense.float(), dim=-1), F.normalize(pooled.float(), dim=-1))
    return _normalised(cos.clamp_min(0))


def uniform(model: DenseCLIP, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, h, w) equal weights: the `none` source (masks keep everything)."""
    h, w = model.grid_size(images.shape[-2], images.shape[-1])
    return torch.full((images.shape[0], h, w), 1.0 / (h * w), device=images.device)


SOURCES = {"cls_attention": cls_attention, "rollout": rollout, "similarity": pooled_similarity, "none": uniform}


def attention_weights(model: DenseCLIP, images: torch.Tensor, source: str = "cls_attention") -> torch.Tensor:
    """(B, 3, H, W) -> (B, h, w) free-attention weights from `source` (see SOURCES), summing to one."""
    if source not in SOURCES:
        raise MethodError(f"unknown free-attention source '{source}'; use one of {', '.join(SOURCES)}")
    with torch.no_grad():
        return SOURCES[source](model, images)


def mass_mask(weights: torch.Tensor, share: float = 0.6) -> torch.Tensor:
    """(B, ...) non-negative weights -> boolean mask of the fewest locations holding `share` of the mass.

    Locations are taken in decreasing weight until their cumulative (normalised) mass reaches
    `share`; the location that crosses the threshold is kept. At least one location is kept.
    """
    flat = _normalised(weights).flatten(1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    sorted_w = flat.gather(1, order)
    before = sorted_w.cumsum(dim=1) - sorted_w
    keep_sorted = before < share - 1e-6
    keep_sorted[:, 0] = True
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(1, order, keep_sorted)
    return keep.view(weights.shape)


def topk_mask(weights: torch.Tensor, fraction: float = 0.3) -> torch.Tensor:
    """(B, ...) weights -> boolean mask of the ceil(fraction * N) highest-weighted locations (at least one)."""
    flat = weights.flatten(1)
    k = max(1, min(flat.shape[1], math.ceil(fraction * flat.shape[1] - 1e-9)))
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep.scatter_(1, flat.topk(k, dim=1).indices, True)
    return keep.view(weights.shape)


def foreground_mask(weights: torch.Tensor, config: PoolingConfig) -> torch.Tensor:
    """(B, h, w) weights -> (B, h, w) boolean mask by `config`'s rule (mass share or top-k fraction)."""
    if config.mask_source == "none":
        return torch.ones_like(weights, dtype=torch.bool)
    if config.mask_rule == "mass":
        return mass_mask(weights, config.mask_mass)
    return topk_mask(weights, config.mask_topk)


class MaskMaker:
    """Foreground masks for ECLIP's masked max pooling, from a model's free attention.

    `model` is the adapter whose attention is read: a frozen copy of the starting model (the
    default, `mask_from="frozen"`) or the adapter of the model being trained (`"current"`).
    """

    def __init__(self, model: DenseCLIP, config: PoolingConfig) -> None:
        self.model = model
        self.config = config

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) model-ready images -> (B, h, w) boolean masks."""
        return foreground_mask(attention_weights(self.model, images, self.config.mask_source), self.config)
