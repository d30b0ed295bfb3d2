"""LeGrad (Bousselham, Boggust, Chaybouti, Strobelt, Kuehne 2024, arXiv 2404.03214).

"An explainability method for vision transformers via feature formation sensitivity": for each
block l from a starting depth on, the block's output tokens are pooled (mean over all tokens, as
the authors' open_clip wrapper does), passed through the final norm and projection, and scored
against the text: s_l = cos(proj(ln_post(mean(z_l))), t). The gradient of s_l with respect to
that block's own attention probabilities A_l is clipped at 0, averaged over heads and over query
tokens, and its patch columns form the layer's map; the maps of all layers are summed.

dS_l/dA_l only flows through block l's own tail (A_l v, out_proj, residual, FFN, head): each
layer's attention is a separate tensor of the differentiable pass, so ONE backward of
sum_l sum_k s_l gives every layer's and every text's gradient (`gradient.GradientMethod`). The
defaults are the authors' (`LeWrapper(layer_index=-2)`, the cosine); their maps match to float
rounding. ViT only.
"""
from __future__ import annotations

import torch

from eclip.methods.base import register
from eclip.methods.gradient import GradientMethod, Pass
from eclip.methods.scoring import replicate
from eclip.methods.vit_paths import attend, resolve_layer, tokens_before


def legrad_layer_map(grad: torch.Tensor) -> torch.Tensor:
    """(N, heads, T, T) dS/dA -> (N, T - 1): relu, mean over heads and query rows, patch columns."""
    return torch.relu(grad.float()).mean(dim=1).mean(dim=1)[:, 1:]


@register
class LeGrad(GradientMethod):
    """Per-layer gradients of the layer's own image-text score w.r.t. its attention, summed over layers."""

    name = "legrad"
    paper = "LeGrad: Bousselham et al. 2024, arXiv 2404.03214"
    archs = frozenset({"vit"})

    layer_index: int = -2  # first block used (-2: the last two, the authors' wrapper default; 0: all)

    def prepare(self, model, images):
        """Per explained block: (block, its input tokens, its attention probabilities, its values), all without gradient."""
        with torch.no_grad():
            start = resolve_layer(self.layer_index, model.num_layers)
            x = tokens_before(model, images, start)
            layers = []
            for block in model.blocks[start:]:
                q, k, v = block.qkv(block.ln_1(x))
                scale = q.shape[-1] ** -0.5
                attn = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)
                layers.append((block, x, attn, v))
                y = x + block.ls_1(attend(block, attn, v))
                x = y + block.ls_2(block.mlp(block.ln_2(y)))
        return layers

    def forward(self, model, prepared, copies):
        leaves, pooled = [], []
        for block, x_in, attn, v in prepared:
            a = replicate(attn, copies).requires_grad_(True)
            y = replicate(x_in, copies) + block.ls_1(attend(block, a, replicate(v, copies)))
            y = y + block.ls_2(block.mlp(block.ln_2(y)))
            pooled.append(model.head(y.mean(dim=1, keepdim=True))[:, 0])  # the authors' mean over all tokens
            leaves.append(a)
        return Pass(wrt=leaves, pooled=pooled)

    def relevance(self, model, prepared, values, grads, saved):
        return sum(legrad_layer_map(g) for g in grads)
