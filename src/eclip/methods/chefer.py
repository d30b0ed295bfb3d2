"""Gradient-weighted attention relevance of Chefer, Gur, Wolf 2021 (arXiv 2103.15679).

"Generic attention-model explainability for interpreting bi-modal and encoder-decoder
transformers": starting from R = I, every block from a start layer on updates
R <- R + mean_heads(relu(dS/dA * A)) R, with A the block's attention probabilities and S the
explained score; the map is the pooled token's row of R over the patch tokens (class token row;
the mean of the patch rows for ViTs that pool their patch tokens).

Defaults reproduce the authors' CLIP notebook (`CLIP_explainability.ipynb` of
hila-chefer/Transformer-MM-Explainability): S is `logits_per_image`, the logit scale times the
cosine (`target="logit"`), and only the last block contributes (`start_layer=-1`). Named
departures: `start_layer=0` propagates through every block, as in the paper; `target="cosine"`
explains the cosine instead. Over several blocks the two targets give different maps: the update
adds the relevance of each block in proportion to the scale of S. The notebook replicates the
image once per text and backpropagates a one-hot over the diagonal; we run one forward and one
vectorised backward for the K texts (`vmap=True`, the default here, about 2x faster on a CPU than
the replicated batch, `vmap=False`). ViT only: the relevance propagates through self-attention.
"""
from __future__ import annotations

import torch

from eclip.methods.base import register
from eclip.methods.gradient import GradientMethod, Pass
from eclip.methods.scoring import replicate
from eclip.methods.vit_paths import pooled_from_tokens, resolve_layer, tokens_before, uses_class_token


def relevance_update(relevance: torch.Tensor, attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """One block of Chefer et al.'s rule: (N, T, T) R, (N, heads, T, T) A and dS/dA -> R + Abar R."""
    cam = torch.relu(grad.float() * attn.float()).mean(dim=1)
    return relevance + cam @ relevance


def pooled_row(relevance: torch.Tensor, class_token: bool) -> torch.Tensor:
    """(N, T, T) token-to-token relevance -> (N, T - 1): the pooled output's relevance over patches.

    The class token's row, or, when the model pools its patch tokens, the mean of their rows.
    """
    if class_token:
        return relevance[:, 0, 1:]
    return relevance[:, 1:, 1:].mean(dim=1)


@register
class Chefer(GradientMethod):
    """Chefer et al. 2021 bi-modal relevance propagated through the ViT's attention blocks."""

    name = "chefer"
    paper = "Chefer, Gur, Wolf 2021 (generic attention explainability), arXiv 2103.15679"
    archs = frozenset({"vit"})

    start_layer: int = -1  # first block that contributes (-1: the last only, the authors' notebook; 0: all, the paper)
    target: str = "logit"  # the notebook's logits_per_image
    vmap: bool = True

    def prepare(self, model, images):
        with torch.no_grad():
            return tokens_before(model, images, resolve_layer(self.start_layer, model.num_layers))  # (B, T, C)

    def forward(self, model, prepared, copies):
        x = replicate(prepared, copies).requires_grad_(True)  # a graph even for frozen weights
        y, records = model.forward_blocks(x, resolve_layer(self.start_layer, model.num_layers), record=True)
        return Pass(wrt=[r.attn for r in records], pooled=[pooled_from_tokens(model, y)])

    def relevance(self, model, prepared, values, grads, saved):
        t = values[0].shape[-1]
        relevance = torch.eye(t, device=values[0].device).expand(values[0].shape[0], t, t)
        for attn, grad in zip(values, grads):
            relevance = relevance_update(relevance, attn, grad)
        return pooled_row(relevance, uses_class_token(model))
