"""Grad-ECLIP (Zhao, Wang, Zeng, Zhao, Chan, "Gradient-based visual explanation for
transformer-based CLIP", ICML 2024; extended version arXiv 2502.18816).

The pooled (class) token's output of the last attention is sum_i a_i v_i; Grad-ECLIP decomposes
the image-text cosine S along it: each location i contributes
    H_i = relu( sum_c w_c * lambda_i * v_ic ),
with w_c = dS/do_c the channel-wise gradient of S at the class token's attention output o
(before out_proj), v_i the value of location i, and lambda_i the "loosened" attention: the
cosine between the class token's query and location i's key (all heads concatenated), min-max
normalised to [0, 1] over the locations instead of a sharp softmax. The authors' notebook sums the
relu'd maps of the last `layers` blocks (1 by default).

Only the explained blocks and what follows them run on the K-fold replicated batch; one backward
for all K texts. ResNet (our extension): the same decomposition on the attention pool, whose
mean-token query is the pooled output. Models that pool their locations (average pooling, ECLIP
heads) use the mean over locations of the gradients and of the queries in place of the class token's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eclip.methods.base import Method, register
from eclip.methods.scoring import has_native_pooling, own_scores, pooled_output, replicate, text_chunks
from eclip.methods.vit_paths import pooled_from_tokens, tokens_before, uses_class_token
from eclip.models.vit import merge_heads


def loosened_attention(q_pooled: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, C) pooled query, (B, L, C) keys -> (B, L) cos(q, k_i) min-max normalised over L."""
    cos = torch.einsum("bc,blc->bl", F.normalize(q_pooled.float(), dim=-1), F.normalize(k.float(), dim=-1))
    lo, hi = cos.min(dim=-1, keepdim=True).values, cos.max(dim=-1, keepdim=True).values
    return (cos - lo) / (hi - lo).clamp_min(1e-8)


def grad_eclip_map(grad: torch.Tensor, v: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(K, B, C) gradients at the pooled output, (B, L, C) values, (B, L) loosened attention -> (B, K, L)."""
    return torch.relu(torch.einsum("kbc,blc,bl->bkl", grad.float(), v.float(), lam))


def pooled_rows(x: torch.Tensor, first_token: bool) -> torch.Tensor:
    """(N, T, C) -> (N, C): the pooled output's row (the first token's; the mean of the others when
    the model pools its locations, e.g. with an ECLIP head)."""
    return x[:, 0] if first_token else x[:, 1:].mean(dim=1)


@register
class GradECLIP(Method):
    """Channel-wise gradient x value x loosened class-token attention of the last attention layer(s)."""

    name = "grad_eclip"
    paper = "Grad-ECLIP: Zhao et al. 2024 (ICML), arXiv 2502.18816"
    needs_grad = True

    def __init__(self, layers: int = 1, text_batch: int | None = None) -> None:
        """`layers`: how many last ViT blocks to sum over (1 in the paper); `text_batch`: texts per backward."""
        self.layers = layers
        self.text_batch = text_batch

    def raw_maps(self, model, images, text_features):
        if model.arch == "resnet":
            maps = self._resnet(model, images, text_features)
        else:
            maps = self._vit(model, images, text_features)
        h, w = model.grid_size(*images.shape[-2:])
        return maps.reshape(images.shape[0], len(text_features), h, w)

    def _vit(self, model, images, text_features):
        n = max(1, min(self.layers, model.num_layers))
        start = model.num_layers - n
        b = images.shape[0]
        class_token = uses_class_token(model)
        with torch.no_grad():
            tokens = tokens_before(model, images, start)
            first = model.blocks[start]
            q, k, v = first.qkv(first.ln_1(tokens))
            first_out = merge_heads(F.scaled_dot_product_attention(q, k, v))  # (B, T, C)
            first_parts = (merge_heads(q), merge_heads(k), merge_heads(v))
        maps = []
        for chunk in text_chunks(len(text_features), self.text_batch):
            texts = text_features[chunk]
            x = replicate(tokens, len(texts))
            # the first explained attention runs once; its output is replicated as the gradient leaf
            o = replicate(first_out, len(texts)).requires_grad_(True)
            outputs, parts = [o], [first_parts]
            blocks = model.blocks[start:]
            for i, block in enumerate(blocks):
                if i > 0:
                    q, k, v = block.qkv(block.ln_1(x))
                    o = merge_heads(F.scaled_dot_product_attention(q, k, v))
                    outputs.append(o)
                    # forward values are the same in every replica: the first B rows hold them
                    parts.append(tuple(merge_heads(z)[:b].detach() for z in (q, k, v)))
                if i == len(blocks) - 1 and class_token:  # only the class token reaches the output
                    y = x[:, :1] + block.ls_1(block.out_proj(o[:, :1]))
                    pooled = model.head(y + block.ls_2(block.mlp(block.ln_2(y))))[:, 0]
                else:
                    x = x + block.ls_1(block.out_proj(o))
                    x = x + block.ls_2(block.mlp(block.ln_2(x)))
            if not class_token:
                pooled = pooled_from_tokens(model, x)
            grads = torch.autograd.grad(own_scores(pooled, texts).sum(), outputs)
            total = 0.0
            for grad, (qm, km, vm) in zip(grads, parts):
                lam = loosened_attention(pooled_rows(qm, class_token), km[:, 1:])
                g = pooled_rows(grad, class_token).reshape(len(texts), b, -1)
                total = total + grad_eclip_map(g, vm[:, 1:], lam)
            maps.append(total)
        return torch.cat(maps, dim=1)

    def _resnet(self, model, images, text_features):
        b = images.shape[0]
        first_token = has_native_pooling(model)  # the mean-token query is the pooled output
        with torch.no_grad():
            parts = model.pool_tokens(model.features(images))
            scale = parts.q.shape[-1] ** -0.5
            heads_out = torch.softmax((parts.q * scale) @ parts.k.transpose(-2, -1), dim=-1) @ parts.v
        lam = loosened_attention(pooled_rows(merge_heads(parts.q), first_token), merge_heads(parts.k)[:, 1:])
        v = merge_heads(parts.v)[:, 1:]
        maps = []
        for chunk in text_chunks(len(text_features), self.text_batch):
            texts = text_features[chunk]
            o = replicate(heads_out, len(texts)).requires_grad_(True)  # (KB, heads, T, d)
            out = model.pool_output(o)
            pooled = pooled_output(model, out[:, 0], out[:, 1:])
            (grad,) = torch.autograd.grad(own_scores(pooled, texts).sum(), o)
            g = pooled_rows(merge_heads(grad), first_token).reshape(len(texts), b, -1)
            maps.append(grad_eclip_map(g, v, lam))
        return torch.cat(maps, dim=1)
