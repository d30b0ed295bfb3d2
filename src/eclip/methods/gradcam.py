"""Grad-CAM (Selvaraju et al. 2017, arXiv 1610.02391) on an image-text score.

map = relu(sum_c w_c A_c), with A the features of a chosen layer and w_c the spatial mean of
d score(image, text) / d A_c (the score: the cosine by default, see `scoring.TARGETS`). ResNet: A
is the last stage (the input of the attention pool). ViT: A is the tokens entering a chosen
block (default the last one; the same layer as pytorch-grad-cam's usual `blocks[-1].norm1` target
and Grad-ECLIP's Grad-CAM baseline), patch tokens reshaped to the grid, the spatial mean over the
patches (pytorch-grad-cam drops the class token the same way). The layer's *output* of the last
block would be useless with class token pooling: patch tokens there do not reach the class token
any more. Everything before the layer runs once; see `gradient.GradientMethod` for the K texts.
"""
from __future__ import annotations

import torch

from eclip.methods.base import register
from eclip.methods.gradient import GradientMethod, Pass
from eclip.methods.scoring import pooled_output, replicate
from eclip.methods.vit_paths import pooled_after, resolve_layer, tokens_before


def cam_from_gradients(features: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """(N, L, C) features and their gradients (L locations) -> (N, L) relu(sum_c mean_L(grad)_c * A_c)."""
    weights = grads.float().mean(dim=1, keepdim=True)
    return torch.relu((weights * features.float()).sum(dim=-1))


@register
class GradCAM(GradientMethod):
    """Grad-CAM of the image-text score on the last ResNet stage or a ViT block's input tokens."""

    name = "gradcam"
    paper = "Grad-CAM: Selvaraju et al. 2017, arXiv 1610.02391"

    layer: int = -1  # ViT block whose input tokens are explained (-1: the last)

    def prepare(self, model, images):
        """The explained features: the ResNet's last stage (B, C, h, w), or the tokens entering the ViT block (B, T, C)."""
        with torch.no_grad():
            if model.arch == "resnet":
                return model.features(images)
            return tokens_before(model, images, resolve_layer(self.layer, model.num_layers))

    def forward(self, model, prepared, copies):
        x = replicate(prepared, copies).detach().requires_grad_(True)
        if model.arch == "resnet":
            out = model.attention_pool(x)
            pooled = pooled_output(model, out[:, 0], out[:, 1:])
        else:
            pooled = pooled_after(model, x, resolve_layer(self.layer, model.num_layers))
        return Pass(wrt=[x], pooled=[pooled])

    def relevance(self, model, prepared, values, grads, saved):
        x, g = values[0], grads[0]
        if model.arch == "resnet":  # (N, C, h, w) -> (N, hw, C)
            x, g = x.flatten(2).transpose(1, 2), g.flatten(2).transpose(1, 2)
        else:
            x, g = x[:, 1:], g[:, 1:]  # patch tokens only
        return cam_from_gradients(x, g)
