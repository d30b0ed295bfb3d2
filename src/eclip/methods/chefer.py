"""Gradient-weighted attention relevance of Chefer, Gur, Wolf 2021 (arXiv 2103.15679).

"Generic attention-model explainability for interpreting bi-modal and encoder-decoder
transformers": starting from R = I, every block updates R <- R + mean_heads(relu(dS/dA * A)) R,
with A the block's attention probabilities and S the image-text cosine; the map is the pooled
token's row of R over the patch tokens (class token row; the mean of the patch rows for ViTs
that pool their patch tokens). The authors' CLIP notebook replicates the image once per text and
backpropagates a one-hot over the diagonal; we do the same, in one backward for K texts.
ViT only: the relevance propagates through self-attention layers.
"""
from __future__ import annotations

import torch

from eclip.methods.base import Method, register
from eclip.methods.scoring import own_scores, replicate, split_replicas, text_chunks
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
class Chefer(Method):
    """Chefer et al. 2021 bi-modal relevance propagated through the ViT's attention blocks."""

    name = "chefer"
    paper = "Chefer, Gur, Wolf 2021 (generic attention explainability), arXiv 2103.15679"
    archs = frozenset({"vit"})
    needs_grad = True

    def __init__(self, start_layer: int = 0, text_batch: int | None = None) -> None:
        """`start_layer`: first block that contributes (0 = all, as in the paper; -1 = last only,
        the default of the authors' later CLIP notebook); `text_batch`: texts per backward."""
        self.start_layer = start_layer
        self.text_batch = text_batch

    def raw_maps(self, model, images, text_features):
        start = resolve_layer(self.start_layer, model.num_layers)
        with torch.no_grad():
            tokens = tokens_before(model, images, start)  # (B, T, C)
        t = tokens.shape[1]
        maps = []
        for chunk in text_chunks(len(text_features), self.text_batch):
            texts = text_features[chunk]
            x = replicate(tokens, len(texts)).requires_grad_(True)  # a graph even for frozen weights
            y, records = model.forward_blocks(x, start, record=True)
            score = own_scores(pooled_from_tokens(model, y), texts).sum()
            grads = torch.autograd.grad(score, [r.attn for r in records])
            relevance = torch.eye(t, device=x.device).expand(x.shape[0], t, t)
            for record, grad in zip(records, grads):
                relevance = relevance_update(relevance, record.attn.detach(), grad)
            maps.append(split_replicas(pooled_row(relevance, uses_class_token(model)), len(texts)))
        h, w = model.grid_size(*images.shape[-2:])
        return torch.cat(maps, dim=1).reshape(images.shape[0], len(text_features), h, w)
