"""Targets: the score of an (image, text) pair that a method explains or a faithfulness curve follows.

One definition serves both, so that `--perturbation-score logit` and a gradient method's
`target="logit"` mean the same number:
- `cosine`: cos(image embedding, text embedding), the score CLIP matches with and ECLIP (Li et
  al. 2022, arXiv 2209.07046) explains;
- `logit`: CLIP's logit, the logit scale times the cosine (`logits_per_image` of Radford et al.
  2021, arXiv 2103.00020), what Chefer et al.'s CLIP notebook differentiates;
- `probability`: the softmax of the logits over the K texts given (RISE's class probability,
  Petsiuk et al. 2018, arXiv 1806.07421), comparable across models in [0, 1].
The image embedding is the model's own pooled one (`pooled_output`), so the explained score is
the model's real score whatever its pooling head.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from eclip.errors import MethodError


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


def _cosine(pooled: torch.Tensor, text_features: torch.Tensor, logit_scale: float) -> torch.Tensor:
    return cosine_scores(pooled, text_features)


def _logit(pooled: torch.Tensor, text_features: torch.Tensor, logit_scale: float) -> torch.Tensor:
    return logit_scale * cosine_scores(pooled, text_features)


def _probability(pooled: torch.Tensor, text_features: torch.Tensor, logit_scale: float) -> torch.Tensor:
    return torch.softmax(logit_scale * cosine_scores(pooled, text_features), dim=-1)


#: name -> (pooled (N, D), texts (K, D), logit scale) -> (N, K) scores.
TARGETS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "cosine": _cosine, "logit": _logit, "probability": _probability,
}


def check_target(name: str) -> str:
    """`name` if it is a target, else a MethodError naming the choices."""
    if name not in TARGETS:
        raise MethodError(f"unknown target {name!r}; use one of {', '.join(TARGETS)}")
    return name


def target_scores(name: str, model, pooled: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """(N, D) pooled embeddings of `model`, (K, D) texts -> (N, K) scores of target `name`."""
    return TARGETS[check_target(name)](pooled, text_features, float(model.logit_scale))


def replicate(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, ...) -> (K * B, ...), text-major: row k * B + b is a copy of row b."""
    return x.repeat(k, *([1] * (x.dim() - 1)))


def split_replicas(x: torch.Tensor, k: int) -> torch.Tensor:
    """(K * B, ...) text-major -> (B, K, ...)."""
    return x.reshape(k, -1, *x.shape[1:]).transpose(0, 1)


def text_chunks(k: int, size: int | None) -> Iterator[slice]:
    """Slices of at most `size` texts (all K at once when size is None): bounds replicated memory."""
    step = k if not size or size <= 0 else size
    for start in range(0, k, step):
        yield slice(start, min(k, start + step))
