"""Text-based decomposition of the image representation (Gandelsman, Efros, Steinhardt, ICLR 2024, arXiv 2310.05916).

A pre-norm ViT's residual stream is a sum: the embedded tokens, plus every block's attention
output, plus every block's MLP output. An attention output is itself a sum over heads and over
the locations the query attends to: for query t, sum_{m, h} attn_h[t, m] W_O,h v_h[m] plus the
output bias (layer scale, if any, is element-wise, so it distributes). The final LayerNorm is
linear once its per-token mean and standard deviation are taken as the constants they are for
this image, and the projection is linear, so the pooled image embedding is a sum of *direct
contributions*: one per (layer, location, head), one per layer's MLP, one for the embedded
tokens. The paper's code (`prs_hook.py`) splits the norm as follows, and so do we: component c of
the N = 2 L + 1 terms (embedding, L attention layers, L MLPs; a layer's attention term further
split into its T x H (location, head) parts, each taking an equal share of the output bias)
contributes gamma * (c - mu / N) / sigma + beta / N before the projection, so the parts add up
exactly to the model's own embedding. Contributions are divided by the embedding's norm, so they
add up to the unit embedding and their dot products with a text add up to the image-text cosine.

The pooled embedding is the class token's in the paper. For ViTs that average their patch tokens
(open_clip's `pool_type="avg"` or the ECLIP `avg` head) the same split holds per token and is
averaged (our extension); a max-pooling head is not linear and is refused.

The map of a text (`DecompositionMap`) is each location's contribution summed over the heads of
the last `layers` layers (all layers by default, as the authors' segmentation script and demo
do; the class token's own location left out), dotted with the text. With several texts the
authors subtract each location's mean over the texts, so a map shows what is specific to its
text; that is `center=True` (the default; with a single text there is nothing to subtract). The
authors' segmentation also clips negative values before min-max normalisation; eclip normalises
every method's map the same way (min-max only). One forward for any number of texts; ViT only.
The terms of each image's cosines travel with its maps (`Maps.extra["decomposition"]`,
`ScoreDecomposition`): what `eclip decompose` writes as tables.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from eclip.errors import MethodError
from eclip.methods.base import ImageExtra, Method, register
from eclip.methods.scoring import has_native_pooling
from eclip.methods.vit_paths import uses_class_token
from eclip.models.vit import ViTAdapter, attention_probs, merge_heads


@dataclass
class Decomposition:
    """Direct contributions to the unit-norm pooled image embedding of B images.

    Attributes:
        embed: (B, D) the embedded tokens (the output of the pre-norm), the stream's first term.
        mlps: (B, L, D) each block's MLP output.
        heads: (B, L, T, H, D) each block's attention output per attended location (class token
            first, then the h x w patches row by row) and head.
        norm: (B,) the pooled embedding's norm the contributions were divided by.
        grid: (h, w) of the patch locations.
    """

    embed: torch.Tensor
    mlps: torch.Tensor
    heads: torch.Tensor
    norm: torch.Tensor
    grid: tuple[int, int]

    @property
    def total(self) -> torch.Tensor:
        """(B, D) the sum of every contribution: the model's pooled embedding divided by its norm."""
        return self.embed + self.mlps.sum(dim=1) + self.heads.sum(dim=(1, 2, 3))

    def layer_scores(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """Contributions to the cosine with (K, D) normalised texts.

        Returns embed (B, K), mlps (B, L, K), heads (B, L, H, K) summed over locations; their sum
        is the image-text cosine.
        """
        text = text.to(self.embed)
        return {"embed": self.embed @ text.T, "mlps": self.mlps @ text.T, "heads": self.heads.sum(dim=2) @ text.T}

    def spatial(self, text: torch.Tensor, layers: int | None = None) -> torch.Tensor:
        """(B, K, h, w): each patch location's contribution, summed over the last `layers` layers' heads, dotted with the texts."""
        depth = self.heads.shape[1] if layers is None else max(1, min(layers, self.heads.shape[1]))
        per_location = self.heads[:, -depth:, 1:].sum(dim=(1, 3))  # (B, hw, D)
        scores = per_location @ text.to(per_location).T  # (B, hw, K)
        return scores.transpose(1, 2).reshape(scores.shape[0], -1, *self.grid)


@dataclass
class ScoreDecomposition(ImageExtra):
    """One image's cosines with K texts, split: embed (K,), mlps (L, K), heads (L, H, K), spatial (K, h, w).

    The terms add up to `cosine` (K,), in the order of the texts explained. `spatial` is each
    location's contribution over all layers and heads (not centred over texts), whatever the
    method's options.
    """

    cosine: np.ndarray
    embed: np.ndarray
    mlps: np.ndarray
    heads: np.ndarray
    spatial: np.ndarray

    def rows(self, texts: list[str]) -> list[dict]:
        """One row per (text, term): the embedding, each layer's MLP and each (layer, head); `texts` name the K texts."""
        out = []
        for k, text in enumerate(texts):
            out.append({"text": text, "layer": "", "term": "embedding", "head": "", "contribution": float(self.embed[k])})
            for layer in range(self.mlps.shape[0]):
                out.append({"text": text, "layer": layer, "term": "mlp", "head": "", "contribution": float(self.mlps[layer, k])})
                for head in range(self.heads.shape[1]):
                    out.append({"text": text, "layer": layer, "term": "attention", "head": head,
                                "contribution": float(self.heads[layer, head, k])})
        return out

    def record(self) -> dict:
        """The cosines and their terms, each a list in the order of the texts: embedding, per layer the
        MLP's, per layer and head the attention's."""
        return {"cosine": self.cosine.tolist(), "embedding": self.embed.tolist(),
                "mlps": self.mlps.T.tolist(), "heads": np.moveaxis(self.heads, -1, 0).tolist()}


def score_terms(parts: Decomposition, text_features: torch.Tensor) -> list[ScoreDecomposition]:
    """The decomposition of B images and (K, D) normalised texts -> one `ScoreDecomposition` per image."""
    scores = parts.layer_scores(text_features)
    spatial = parts.spatial(text_features)
    cosine = F.normalize(parts.total, dim=-1) @ text_features.to(parts.total).T
    return [ScoreDecomposition(cosine[b].cpu().numpy(), scores["embed"][b].cpu().numpy(),
                               scores["mlps"][b].cpu().numpy(), scores["heads"][b].cpu().numpy(), spatial[b].cpu().numpy())
            for b in range(len(cosine))]


def linear_pooling(model: ViTAdapter) -> str | None:
    """'tok' (class token) or 'avg' (mean of the patches): the pooled embedding as a sum over tokens;
    None for a head that is not a sum (max, masked max), which has no direct contributions."""
    pooling = getattr(model, "pooling", None)
    if uses_class_token(model):
        return "tok"
    if (model.pool_type == "avg" and has_native_pooling(model)) or (pooling is not None and pooling.head == "avg"):
        return "avg"
    return None


def nonlinear_pooling_reason(model: ViTAdapter) -> str:
    """The one message for a model whose pooled embedding is not a sum over tokens."""
    head = getattr(getattr(model, "pooling", None), "head", model.pool_type)
    return (f"method 'decomposition' needs a linear pooling (class token or average); {model.name} pools with "
            f"'{head}', which is not a sum of contributions")


def query_weights(model: ViTAdapter, tokens: int) -> torch.Tensor:
    """(T,) how the pooled embedding weighs the final tokens: the class token, or the mean of the patches."""
    weights = torch.zeros(tokens)
    kind = linear_pooling(model)
    if kind is None:
        raise MethodError(nonlinear_pooling_reason(model))
    if kind == "tok":
        weights[0] = 1.0
    else:
        weights[1:] = 1.0 / (tokens - 1)
    return weights


def per_head_output(block, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, T, d) values -> ls_1(W_O,h v_h) per head (B, H, T, C) and the block's ls_1(output bias) (C,).

    The output projection is read through the block view only: out_proj(e_i) - out_proj(0) is
    its i-th input column.
    """
    b, heads, t, d = v.shape
    width = heads * d
    eye = torch.eye(width, device=v.device, dtype=v.dtype)
    bias = block.out_proj(torch.zeros(1, width, device=v.device, dtype=v.dtype))[0]
    columns = (block.out_proj(eye) - bias).reshape(heads, d, -1)  # (H, d, C): rows of W_O^T per head
    return block.ls_1(torch.einsum("bhtd,hdc->bhtc", v, columns)), block.ls_1(bias)


@torch.no_grad()
def decompose(model: ViTAdapter, images: torch.Tensor) -> Decomposition:
    """(B, 3, H, W) -> the direct contributions of every (layer, location, head), MLP and the embedding.

    Memory: the per-head part holds B x L x T x H x D numbers (58 MB per image for ViT-B/16).
    """
    if model.arch != "vit":
        raise MethodError(f"method 'decomposition' is defined for ViTs; {model.name} is a {model.arch} model")
    x = model.embed(images)
    tokens = x.shape[1]
    query = query_weights(model, tokens).to(x.device, torch.float32)
    embed, mlps, heads_terms = x, [], []
    for block in model.blocks:
        q, k, v = block.qkv(block.ln_1(x))
        attn = attention_probs(q, k)
        a = block.ls_1(block.out_proj(merge_heads(attn @ v)))
        y = x + a
        m = block.ls_2(block.mlp(block.ln_2(y)))
        per_head, bias = per_head_output(block, v)
        heads_terms.append((attn, per_head, bias))
        mlps.append(m)
        x = y + m

    norm = model.final_norm
    final = x.float()
    mu = final.mean(dim=-1)  # (B, T)
    sigma = (final.var(dim=-1, unbiased=False) + norm.eps).sqrt()
    s = query / sigma  # (B, T): each token's weight in the pooled embedding, over its std
    s_total, mu_total = s.sum(dim=1), (s * mu).sum(dim=1)  # (B,)
    gamma = norm.weight.float() if norm.weight is not None else torch.ones(final.shape[-1], device=final.device)
    beta = norm.bias.float() if norm.bias is not None else torch.zeros_like(gamma)
    n_terms = 2 * len(model.blocks) + 1
    n_heads = heads_terms[0][1].shape[1]
    share = n_terms * tokens * n_heads

    def stream_term(c: torch.Tensor) -> torch.Tensor:  # (B, T, C) a whole-stream term -> (B, C)
        return gamma * (torch.einsum("bt,btc->bc", s, c.float()) - mu_total[:, None] / n_terms) + beta / n_terms

    heads = []
    for attn, per_head, bias in heads_terms:
        reach = torch.einsum("bt,bhtm->bmh", s, attn.float())  # (B, T keys, H)
        part = reach[..., None] * per_head.float().permute(0, 2, 1, 3)  # (B, T, H, C)
        part = part + (s_total[:, None] * bias.float()[None] / (tokens * n_heads) - mu_total[:, None] / share)[:, None, None]
        heads.append(gamma * part + beta / share)
    contributions = [stream_term(embed), torch.stack([stream_term(m) for m in mlps], dim=1), torch.stack(heads, dim=1)]
    embed_d, mlps_d, heads_d = (model.project(c.to(model.dtype)).float() for c in contributions)
    pooled = embed_d + mlps_d.sum(dim=1) + heads_d.sum(dim=(1, 2, 3))
    pooled_norm = pooled.norm(dim=-1)
    scale = pooled_norm[:, None]
    return Decomposition(embed=embed_d / scale, mlps=mlps_d / scale[:, None], heads=heads_d / scale[:, None, None, None],
                         norm=pooled_norm, grid=model.grid_size(*images.shape[-2:]))


@register
class DecompositionMap(Method):
    """Each location's direct contribution to the image embedding (last layers' heads), dotted with the text."""

    name = "decomposition"
    paper = "Text-based decomposition: Gandelsman, Efros, Steinhardt 2024 (ICLR), arXiv 2310.05916"
    archs = frozenset({"vit"})

    @classmethod
    def unsupported(cls, model) -> str | None:
        reason = super().unsupported(model)
        if reason is None and linear_pooling(model) is None:
            return nonlinear_pooling_reason(model)
        return reason

    layers: int | None = None  # sum the heads of the last `layers` layers (None: all, as the authors' code)
    center: bool = True  # subtract each location's mean over the texts (the authors' code; K > 1 only)

    def raw_maps(self, model, images, text_features):
        return self.raw_maps_and_extra(model, images, text_features)[0]

    def raw_maps_and_extra(self, model, images, text_features):
        """The maps (B, K, h, w) and, per image, the terms of its cosines (`ScoreDecomposition`)."""
        parts = decompose(model, images)
        maps = parts.spatial(text_features, self.layers)
        if self.center and maps.shape[1] > 1:
            maps = maps - maps.mean(dim=1, keepdim=True)
        return maps, {"decomposition": score_terms(parts, text_features)}
