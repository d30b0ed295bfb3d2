"""Grad-CAM (Selvaraju et al. 2017, arXiv 1610.02391) on the image-text cosine.

map = relu(sum_c w_c A_c), with A the features of a chosen layer and w_c the spatial mean of
d cos(image, text) / d A_c. ResNet: A is the last stage (the input of the attention pool).
ViT: A is the tokens entering a chosen block (default the last one; the same layer as
pytorch-grad-cam's usual `blocks[-1].norm1` target and Grad-ECLIP's Grad-CAM baseline), patch
tokens reshaped to the grid. The layer's *output* of the last block would be useless with class
token pooling: patch tokens there do not reach the class token any more.

Everything before the target layer runs once, without gradient; only the rest runs on the K-fold
replicated batch, with one backward for all K texts (see `scoring`).
"""
from __future__ import annotations

import torch

from eclip.methods.base import Method, register
from eclip.methods.scoring import own_scores, pooled_output, replicate, split_replicas, text_chunks
from eclip.methods.vit_paths import pooled_after, resolve_layer, tokens_before


def cam_from_gradients(features: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """(N, L, C) features and their gradients (L locations) -> (N, L) relu(sum_c mean_L(grad)_c * A_c)."""
    weights = grads.float().mean(dim=1, keepdim=True)
    return torch.relu((weights * features.float()).sum(dim=-1))


@register
class GradCAM(Method):
    """Grad-CAM of the image-text cosine on the last ResNet stage or a ViT block's input tokens."""

    name = "gradcam"
    paper = "Grad-CAM: Selvaraju et al. 2017, arXiv 1610.02391"
    needs_grad = True

    def __init__(self, layer: int = -1, text_batch: int | None = None) -> None:
        """`layer`: ViT block whose input tokens are explained (-1 = last); `text_batch`: texts per backward."""
        self.layer = layer
        self.text_batch = text_batch

    def raw_maps(self, model, images, text_features):
        if model.arch == "resnet":
            with torch.no_grad():
                feats = model.features(images)  # (B, C, h, w)
            b, c, h, w = feats.shape
            tokens = feats.flatten(2).transpose(1, 2)  # (B, hw, C)

            def tail(x: torch.Tensor) -> torch.Tensor:
                out = model.attention_pool(x.transpose(1, 2).reshape(-1, c, h, w))
                return pooled_output(model, out[:, 0], out[:, 1:])
        else:
            layer = resolve_layer(self.layer, model.num_layers)
            with torch.no_grad():
                tokens = tokens_before(model, images, layer)  # (B, 1 + hw, C)
            h, w = model.grid_size(*images.shape[-2:])

            def tail(x: torch.Tensor) -> torch.Tensor:
                return pooled_after(model, x, layer)

        maps = []
        for chunk in text_chunks(len(text_features), self.text_batch):
            texts = text_features[chunk]
            x = replicate(tokens, len(texts)).detach().requires_grad_(True)
            (grads,) = torch.autograd.grad(own_scores(tail(x), texts).sum(), x)
            if model.arch == "vit":
                x, grads = x[:, 1:], grads[:, 1:]  # patch tokens only
            maps.append(split_replicas(cam_from_gradients(x.detach(), grads), len(texts)))
        return torch.cat(maps, dim=1).reshape(images.shape[0], len(text_features), h, w)
