"""The target every gradient and perturbation method explains: the image-text cosine, K texts at once.

ECLIP (Li et al. 2022, arXiv 2209.07046) explains the score CLIP actually matches with: the
cosine between the model's own pooled image embedding and a text embedding. Gradient methods
need one backward per text; instead of looping, the batch is replicated K times ("text-major":
replica `k * B + b` is image b paired with text k) and ONE backward of the sum of each replica's
own score gives every (image, text) gradient at once, because the replicas do not interact.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F


def has_native_pooling(model) -> bool:
    """True when the model pools with its own head (class token / attention pool), not an ECLIP head."""
    pooling = getattr(model, "pooling", None)
    return pooling is None or pooling.is_native


def pooled_output(model, native: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """The model's pooled embedding (N, D) from its native pooled output (N, D) and dense (N, L, D).

    With an ECLIP pooling head (avg / max over the dense features, `eclip.models.pooling`) the
    pooled embedding, hence the score every method explains, comes from the dense features.
    """
    if has_native_pooling(model):
        return native
    from eclip.models.pooling import pool

    return pool(model.pooling, dense[:, :, None], native=native)


def cosine_scores(pooled: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """(N, D) pooled image embeddings, (K, D) normalised texts -> (N, K) cosines."""
    pooled = F.normalize(pooled.float(), dim=-1)
    return pooled @ text_features.to(pooled).T


def replicate(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, ...) -> (K * B, ...), text-major: row k * B + b is a copy of row b."""
    return x.repeat(k, *([1] * (x.dim() - 1)))


def own_scores(pooled: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """(K * B, D) replicated pooled embeddings, (K, D) texts -> (K * B,) each replica's own cosine."""
    k = text_features.shape[0]
    pooled = F.normalize(pooled.float(), dim=-1).reshape(k, -1, pooled.shape[-1])
    return torch.einsum("kbd,kd->kb", pooled, text_features.to(pooled)).reshape(-1)


def split_replicas(x: torch.Tensor, k: int) -> torch.Tensor:
    """(K * B, ...) text-major -> (B, K, ...)."""
    return x.reshape(k, -1, *x.shape[1:]).transpose(0, 1)


def text_chunks(k: int, size: int | None) -> Iterator[slice]:
    """Slices of at most `size` texts (all K at once when size is None): bounds replicated memory."""
    step = k if not size or size <= 0 else size
    for start in range(0, k, step):
        yield slice(start, min(k, start + step))
