"""Interchangeable pooling heads: how a CLIP turns its dense features into one image embedding.

ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046) traces the semantic shift of vanilla CLIP's
similarity maps to the pooling: a class token or an attention pool may assemble the pooled vector
from background locations, so the dense features and the pooled embedding swap meaning. ECLIP
replaces the pooling by max pooling over the *same* dense projected features the ITSM reads, and
during training restricts the max to likely foreground (masked max pooling).

Heads (`PoolingConfig.head`):
- `attention`: the model's own pooling (ViT class token, ResNet attention pool); untouched.
- `avg`: mean of the dense features over all locations, (B, h, w, D) -> (B, D).
- `max`: channel-wise max over locations: pooled[b, d] = max_{i, j} dense[b, i, j, d]. It is
  text-independent, so the standard contrastive loss applies unchanged, and each channel's value
  comes from the location that expresses it most. Variant (`max_over="normalized"`): the same
  max over L2-normalised dense features, the quantity the ITSM compares with texts.
- `masked_max`: the max restricted to a boolean (B, h, w) foreground mask (locations outside get
  -inf); used in training only. At inference (no mask) it is plain `max`, and the ITSM reads the
  dense features unmasked.
An image whose mask is empty falls back to all locations, so a bad mask never yields -inf.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from eclip.errors import RecipeError

HEADS = ("attention", "avg", "max", "masked_max")
MAX_OVER = ("raw", "normalized")
MASK_SOURCES = ("cls_attention", "rollout", "similarity", "none")
MASK_RULES = ("mass", "topk")
MASK_FROM = ("frozen", "current")


@dataclass(frozen=True)
class PoolingConfig:
    """A pooling head and, for `masked_max`, how its training masks are made.

    Attributes:
        head: one of HEADS.
        max_over: "raw" (channel-wise max of the projected features) or "normalized"
            (of the L2-normalised features); max and masked_max only.
        mask_source: where the free-attention mask comes from (see `eclip.models.free_attention`).
        mask_rule: "mass" keeps the tokens that cover `mask_mass` of the attention mass,
            "topk" the `mask_topk` fraction of tokens with the highest attention.
        mask_mass, mask_topk: the rule's parameter, in (0, 1].
        mask_from: "frozen" (a frozen copy of the starting model) or "current" (the model being trained).
    """

    head: str = "attention"
    max_over: str = "raw"
    mask_source: str = "cls_attention"
    mask_rule: str = "mass"
    mask_mass: float = 0.6
    mask_topk: float = 0.3
    mask_from: str = "frozen"

    def __post_init__(self) -> None:
        for name, allowed in (("head", HEADS), ("max_over", MAX_OVER), ("mask_source", MASK_SOURCES),
                              ("mask_rule", MASK_RULES), ("mask_from", MASK_FROM)):
            value = getattr(self, name)
            if value not in allowed:
                raise RecipeError(f"`pooling.{name}` {value!r} is unknown; use one of {', '.join(allowed)}")
        for name in ("mask_mass", "mask_topk"):
            value = float(getattr(self, name))
            if not 0.0 < value <= 1.0:
                raise RecipeError(f"`pooling.{name}` {value} is outside (0, 1]; give a share such as 0.6")

    @property
    def is_native(self) -> bool:
        """True when the head is the model's own pooling (encode_image stays the wrapped model's)."""
        return self.head == "attention"

    def to_json(self) -> dict[str, Any]:
        """The config.json `pooling` section."""
        return asdict(self)

    @classmethod
    def from_json(cls, section: dict[str, Any] | None) -> PoolingConfig:
        """Read a config.json `pooling` section (None or {} means the model's own pooling); a bad one is a RecipeError."""
        if not section:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise RecipeError(f"`pooling` has unknown keys {unknown}; the allowed keys are {sorted(known)}")
        return cls(**section)


def avg_pool(dense: torch.Tensor) -> torch.Tensor:
    """(B, h, w, D) -> (B, D): mean over locations."""
    return dense.mean(dim=(1, 2))


def max_pool(dense: torch.Tensor, mask: torch.Tensor | None = None, max_over: str = "raw") -> torch.Tensor:
    """(B, h, w, D) dense features, optional (B, h, w) boolean mask -> (B, D) channel-wise max.

    With a mask, only masked-in locations compete (ECLIP's masked max pooling); an image whose
    mask is empty uses all its locations. Gradients reach, per channel, the arg-max location only.
    """
    if max_over == "normalized":
        dense = F.normalize(dense, dim=-1)
    flat = dense.flatten(1, 2)
    if mask is not None:
        keep = mask.flatten(1).to(torch.bool)
        if keep.shape != flat.shape[:2]:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit dense features {tuple(dense.shape)}")
        keep = keep | ~keep.any(dim=1, keepdim=True)
        flat = flat.masked_fill(~keep[..., None], float("-inf"))
    return flat.amax(dim=1)


def pool(config: PoolingConfig, dense: torch.Tensor, native: torch.Tensor | None = None,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """The pooled (B, D) embedding of `config`'s head from dense (B, h, w, D) features.

    `native` (B, D) is the model's own pooled output, returned for the `attention` head. `mask`
    (B, h, w) is honoured by `masked_max` only (training); without it masked_max is max.
    """
    if config.head == "attention":
        if native is None:
            raise ValueError("the attention head returns the model's own pooled output; pass native=")
        return native
    if config.head == "avg":
        return avg_pool(dense)
    return max_pool(dense, mask if config.head == "masked_max" else None, config.max_over)
