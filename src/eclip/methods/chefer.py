"""Gradient-weighted attention relevance of Chefer, Gur, Wolf 2021 (arXiv 2103.15679).

"Generic attention-model explainability for interpreting bi-modal and encoder-decoder
transformers": starting from R = I, every block updates R <- R + mean_heads(relu(dS/dA * A)) R,
with A the block's attention probabilities and S the image-text cosine; the map is the pooled
token's row of R over the patch tokens (class token row; the mean of the patch rows for ViTs
that pool their patch tokens). The authors' CLIP notebook replicates the image once per text and
backpropagates a one-hot over the diagonal; we run one forward and one vectorised backward for
all K texts (or, optionally, one forward and backward of the K-fold replicated batch).
ViT only: the relevance propagates through self-attention layers.
"""
from __future__ import annotations

import torch

from eclip.methods.base import Method, register
from eclip.methods.scoring import cosine_scores, own_scores, replicate, split_replicas, text_chunks
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


def batched_attention_gradients(
    model, tokens: torch.Tensor, start: int, texts: torch.Tensor, vmap: bool = True
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Attention probabilities of blocks [start, L) and d cos(image, text_k) / d attention, for K texts.

    (B, T, C) tokens entering block `start`, (K, D) texts -> per block, attention and gradient,
    each (K * B, heads, T, T) in text-major order. `vmap`: one forward on the B images and one
    vectorised backward (`is_grads_batched`) for the K texts; otherwise the K-fold replicated
    batch runs forward and backward once. The results are the same; the first skips K - 1
    redundant forwards (about 2x faster on a CPU).
    """
    k = len(texts)
    if vmap:
        x = tokens.detach().requires_grad_(True)  # a graph even for frozen weights
        y, records = model.forward_blocks(x, start, record=True)
        scores = cosine_scores(pooled_from_tokens(model, y), texts)  # (B, K)
        one_hot = torch.eye(k, device=scores.device, dtype=scores.dtype)[:, None].expand(k, *scores.shape)
        grads = torch.autograd.grad(scores, [r.attn for r in records], grad_outputs=one_hot, is_grads_batched=True)
        return [replicate(r.attn.detach(), k) for r in records], [g.flatten(0, 1) for g in grads]
    x = replicate(tokens, k).requires_grad_(True)
    y, records = model.forward_blocks(x, start, record=True)
    grads = torch.autograd.grad(own_scores(pooled_from_tokens(model, y), texts).sum(), [r.attn for r in records])
    return [r.attn.detach() for r in records], list(grads)


@register
class Chefer(Method):
    """Chefer et al. 2021 bi-modal relevance propagated through the ViT's attention blocks."""

    name = "chefer"
    paper = "Chefer, Gur, Wolf 2021 (generic attention explainability), arXiv 2103.15679"
    archs = frozenset({"vit"})
    needs_grad = True

    def __init__(self, start_layer: int = 0, text_batch: int | None = None, vmap: bool = True) -> None:
        """`start_layer`: first block that contributes (0 = all, as in the paper; -1 = last only,
        the default of the authors' later CLIP notebook); `text_batch`: texts per backward;
        `vmap`: vectorised backward instead of a replicated forward (same maps)."""
        self.start_layer = start_layer
        self.text_batch = text_batch
        self.vmap = vmap

    def raw_maps(self, model, images, text_features):
        start = resolve_layer(self.start_layer, model.num_layers)
        with torch.no_grad():
            tokens = tokens_before(model, images, start)  # (B, T, C)
        t = tokens.shape[1]
        maps = []
        for chunk in text_chunks(len(text_features), self.text_batch):
            texts = text_features[chunk]
            attentions, grads = batched_attention_gradients(model, tokens, start, texts, self.vmap)
            relevance = torch.eye(t, device=tokens.device).expand(len(texts) * tokens.shape[0], t, t)
            for attn, grad in zip(attentions, grads):
                relevance = relevance_update(relevance, attn, grad)
            maps.append(split_replicas(pooled_row(relevance, uses_class_token(model)), len(texts)))
        h, w = model.grid_size(*images.shape[-2:])
        return torch.cat(maps, dim=1).reshape(images.shape[0], len(text_features), h, w)
