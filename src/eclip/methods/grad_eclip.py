"""Grad-ECLIP (Zhao, Wang, Zeng, Zhao, Chan, "Gradient-based visual explanation for
transformer-based CLIP", ICML 2024; extended version arXiv 2502.18816).

The pooled (class) token's output of the last attention is sum_i a_i v_i; Grad-ECLIP decomposes
the image-text cosine S along it: each location i contributes
    H_i = relu( sum_c w_c * lambda_i * v_ic ),
with w_c = dS/do_c the channel-wise gradient of S at the class token's attention output o
(before out_proj), v_i the value of location i, and lambda_i the "loosened" attention: the
cosine between the class token's query and location i's key (all heads concatenated), min-max
normalised to [0, 1] over the locations instead of a sharp softmax. The maps of the last
`layers` blocks are relu'd and summed (1 block by default).

Defaults reproduce the authors' image notebook (`grad_eclip_image.ipynb` of Cyang-Zhao/Grad-Eclip):
its `clip_encode_dense` recomputes the explained blocks' attention as ONE head over all channels
(`attention_layer(q, k, v, 1)`), and the cosine S it differentiates is that forward's class
token, so the attention the gradients flow through is the single-head one (`heads=1`). Named
departure: `heads=None` keeps the model's own heads (the attention the model actually computes).

Only the explained blocks and what follows them are differentiated (`gradient.GradientMethod`).
ResNet (our extension; the authors' code is for ViTs): the same decomposition on the attention
pool, whose mean-token query is the pooled output, with the pool's attention recomputed with
`heads` heads the same way. Models that pool their locations (average pooling, ECLIP heads) use
the mean over locations of the gradients and of the queries in place of the class token's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eclip.methods.base import register
from eclip.methods.gradient import GradientMethod, Pass
from eclip.methods.scoring import has_native_pooling, pooled_output, replicate
from eclip.methods.vit_paths import pooled_from_tokens, tokens_before, uses_class_token
from eclip.models.vit import merge_heads, split_heads


def loosened_attention(q_pooled: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, C) pooled query, (B, L, C) keys -> (B, L) cos(q, k_i) min-max normalised over L."""
    cos = torch.einsum("bc,blc->bl", F.normalize(q_pooled.float(), dim=-1), F.normalize(k.float(), dim=-1))
    lo, hi = cos.min(dim=-1, keepdim=True).values, cos.max(dim=-1, keepdim=True).values
    return (cos - lo) / (hi - lo).clamp_min(1e-8)


def pooled_rows(x: torch.Tensor, first_token: bool) -> torch.Tensor:
    """(N, T, C) -> (N, C): the pooled output's row (the first token's; the mean of the others when
    the model pools its locations, e.g. with an ECLIP head)."""
    return x[:, 0] if first_token else x[:, 1:].mean(dim=1)


def attention_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int | None) -> torch.Tensor:
    """(B, h, T, d) q, k, v -> (B, heads, T, C // heads) attention outputs, recomputed with `heads` heads
    over the concatenated channels (None: the given h heads)."""
    if heads is not None:
        q, k, v = (split_heads(merge_heads(z), heads) for z in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v)


@register
class GradECLIP(GradientMethod):
    """Channel-wise gradient x value x loosened class-token attention of the last attention layer(s)."""

    name = "grad_eclip"
    paper = "Grad-ECLIP: Zhao et al. 2024 (ICML), arXiv 2502.18816"

    layers: int = 1  # how many last ViT blocks to sum over (1 in the paper)
    heads: int | None = 1  # heads of the recomputed explained attention (1: the authors' code; None: the model's own)

    # ------------------------------------------------------------------ both archs
    def relevance(self, model, prepared, values, grads, saved):
        first_token, parts = saved
        copies = grads[0].shape[0] // parts[0][0].shape[0]
        total = 0.0
        for grad, (q, k, v) in zip(grads, parts):
            g = pooled_rows(merge_heads(grad) if grad.dim() == 4 else grad, first_token)  # (N, C)
            lam = replicate(loosened_attention(pooled_rows(q, first_token), k[:, 1:]), copies)  # (N, L)
            total = total + torch.relu(torch.einsum("nc,nlc,nl->nl", g.float(), replicate(v[:, 1:], copies).float(), lam))
        return total

    def prepare(self, model, images):
        with torch.no_grad():
            return self._prepare_resnet(model, images) if model.arch == "resnet" else self._prepare_vit(model, images)

    def forward(self, model, prepared, copies):
        return self._forward_resnet(model, prepared, copies) if model.arch == "resnet" else self._forward_vit(model, prepared, copies)

    # ------------------------------------------------------------------ ViT
    def _prepare_vit(self, model, images):
        """Tokens entering the first explained block, its attention output (B, T, C) and its merged q, k, v."""
        start = model.num_layers - max(1, min(self.layers, model.num_layers))
        tokens = tokens_before(model, images, start)
        first = model.blocks[start]
        q, k, v = first.qkv(first.ln_1(tokens))
        return start, tokens, merge_heads(attention_heads(q, k, v, self.heads)), tuple(merge_heads(z) for z in (q, k, v))

    def _forward_vit(self, model, prepared, copies):
        start, tokens, first_out, first_parts = prepared
        b, class_token = tokens.shape[0], uses_class_token(model)
        x = replicate(tokens, copies)
        # the first explained attention ran once; its output, replicated, is where the gradient starts
        o = replicate(first_out, copies).requires_grad_(True)
        outputs, parts = [o], [first_parts]
        blocks = model.blocks[start:]
        for i, block in enumerate(blocks):
            if i > 0:
                q, k, v = block.qkv(block.ln_1(x))
                o = merge_heads(attention_heads(q, k, v, self.heads))
                outputs.append(o)
                # forward values are the same in every copy: the first B rows hold them
                parts.append(tuple(merge_heads(z)[:b].detach() for z in (q, k, v)))
            if i == len(blocks) - 1 and class_token:  # only the class token reaches the output
                y = x[:, :1] + block.ls_1(block.out_proj(o[:, :1]))
                pooled = model.head(y + block.ls_2(block.mlp(block.ln_2(y))))[:, 0]
            else:
                x = x + block.ls_1(block.out_proj(o))
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
        if not class_token:
            pooled = pooled_from_tokens(model, x)
        return Pass(wrt=outputs, pooled=[pooled], saved=(class_token, parts))

    # ------------------------------------------------------------------ ResNet
    def _prepare_resnet(self, model, images):
        """The attention pool's per-head outputs (B, heads, T, d) and its merged q, k, v."""
        parts = model.pool_tokens(model.features(images))
        return attention_heads(parts.q, parts.k, parts.v, self.heads), tuple(merge_heads(z) for z in (parts.q, parts.k, parts.v))

    def _forward_resnet(self, model, prepared, copies):
        heads_out, parts = prepared
        o = replicate(heads_out, copies).requires_grad_(True)  # (N, heads, T, d)
        out = model.pool_output(o)
        first_token = has_native_pooling(model)  # the mean-token query is the pooled output
        return Pass(wrt=[o], pooled=[pooled_output(model, out[:, 0], out[:, 1:])], saved=(first_token, [parts]))
