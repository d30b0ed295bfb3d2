"""ECLIP fine-tuning: a loaded CLIP, a pooling head, its training masks, and what may change.

ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046) fine-tunes a contrastively trained CLIP with
masked max pooling over the dense projected features; the mask comes from a free attention and
is used in training only. This module builds what `eclip.train.loop.train` needs for that: the
image embedder (the head applied to the adapter's dense features, with masks from a frozen copy
of the starting model or from the model itself), the trainable-parameter filter (`all`,
`visual`, or `last:N` blocks + projection), and the model config the output folder records.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from eclip.errors import ModelLoadError
from eclip.models.adapter import DenseCLIP
from eclip.models.free_attention import MaskMaker
from eclip.models.pooling import PoolingConfig, max_pool, pool


@dataclass
class PooledWithNegatives:
    """What an embedder returns when it also pools the background: the (N, D) foreground
    embedding, the (N, D) background embedding used as extra negatives, and (N,) bool, False
    where an image has no background (its mask covers every location)."""

    pooled: torch.Tensor
    negatives: torch.Tensor
    valid: torch.Tensor


class PooledEmbedder:
    """`image_embedder` for the training loop: the pooling head on the adapter's dense features.

    Called as `embedder(model, x)` with (N, 3, H, W) model-ready images, it returns (N, D). For
    `masked_max` the max runs over the free-attention mask of each image (training only); with
    `background_negatives` ("max" or "avg") it also pools the locations outside the mask, by the
    head's max or by their mean, and returns both (`PooledWithNegatives`); the loss uses the
    background embedding as a negative (`eclip.train.losses`). A max sends gradient to one
    background location per channel, a mean to every background location.
    """

    def __init__(self, adapter: DenseCLIP, config: PoolingConfig, masks: MaskMaker | None = None,
                 background_negatives: str | None = None) -> None:
        if config.head == "masked_max" and masks is None:
            raise ValueError("masked_max needs a MaskMaker")
        if background_negatives not in (None, "none", "max", "avg"):
            raise ModelLoadError(f"background negatives {background_negatives!r} are unknown; use none, max or avg")
        background_negatives = None if background_negatives == "none" else background_negatives
        if background_negatives and config.head != "masked_max":
            raise ModelLoadError(f"--background-negatives needs --pooling masked_max (a mask to take the background from), "
                                 f"not {config.head}")
        self.adapter = adapter
        self.config = config
        self.masks = masks
        self.background_negatives = background_negatives

    def __call__(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor | PooledWithNegatives:
        if self.config.is_native:
            return model.encode_image(images)
        native, dense = self.adapter.pooled_and_dense(images)
        mask = self.masks(images) if self.config.head == "masked_max" else None
        pooled = pool(self.config, dense, native=native, mask=mask)
        if not self.background_negatives:
            return pooled
        background = ~mask
        valid = background.flatten(1).any(dim=1)
        if self.background_negatives == "avg":
            weights = background[..., None].to(dense.dtype)
            negatives = (dense * weights).sum(dim=(1, 2)) / weights.sum(dim=(1, 2)).clamp_min(1)
        else:
            negatives = max_pool(dense, background, self.config.max_over)
        return PooledWithNegatives(pooled, negatives, valid)


def frozen_copy(adapter: DenseCLIP) -> DenseCLIP:
    """A new adapter around a deep copy of the model, in eval mode, with no parameter requiring grad."""
    from eclip.models.loading import wrap

    model = copy.deepcopy(adapter.model).eval().requires_grad_(False)
    return wrap(model, adapter.tokenizer, name=f"{adapter.name} (frozen)", image_size=adapter.image_size,
                mean=adapter.mean, std=adapter.std, context_length=adapter.context_length, count_tokens=adapter._count_tokens)


def make_embedder(adapter: DenseCLIP, config: PoolingConfig, background_negatives: str | None = None) -> PooledEmbedder:
    """The embedder of `config`: masks from a frozen copy of the starting model, or from the model itself."""
    masks = None
    if config.head == "masked_max":
        source = frozen_copy(adapter) if config.mask_from == "frozen" else adapter
        masks = MaskMaker(source, config)
    return PooledEmbedder(adapter, config, masks, background_negatives)


def _blocks(arch: str, names: list[str]) -> list[str]:
    """Parameter-name prefixes of the image tower's blocks, in forward order."""
    if arch == "vit":
        pattern = re.compile(r"^(visual\.transformer\.resblocks\.\d+)\.")
    else:
        pattern = re.compile(r"^(visual\.layer\d+\.\d+)\.")
    found = []
    for name in names:
        match = pattern.match(name)
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return found


def trainable_filter(spec: str, model: torch.nn.Module, arch: str) -> Callable[[str], bool]:
    """Which parameters fine-tuning updates.

    - `all`: every parameter (both towers and the temperature);
    - `visual`: the image tower and the temperature (the text tower stays as it is);
    - `last:N`: the image tower's last N blocks (ViT transformer blocks; ResNet bottlenecks), its
      head (ViT final norm + projection; ResNet attention pool) and the temperature.
    """
    names = [n for n, _ in model.named_parameters()]
    if spec == "all":
        return lambda name: True
    if spec == "visual":
        return lambda name: name.startswith("visual.") or name == "logit_scale"
    match = re.fullmatch(r"last:(\d+)", spec)
    if not match:
        raise ModelLoadError(f"--train {spec!r} is not understood; use all, visual, or last:N (e.g. last:2)")
    blocks = _blocks(arch, names)
    n = int(match.group(1))
    if not 1 <= n <= len(blocks):
        raise ModelLoadError(f"--train last:{n}: the image tower has {len(blocks)} blocks; use 1..{len(blocks)}")
    heads = ("visual.ln_post.", "visual.proj") if arch == "vit" else ("visual.attnpool.",)
    prefixes = tuple(b + "." for b in blocks[-n:]) + heads
    return lambda name: name.startswith(prefixes) or name == "logit_scale"


def open_clip_section(model: torch.nn.Module, name: str) -> dict[str, Any]:
    """The `open_clip` section (CLIP constructor arguments) of an open_clip model loaded by name."""
    import open_clip
    from open_clip.transformer import QuickGELU

    cfg = open_clip.get_model_config(name)
    if cfg is None or cfg.get("custom_text") or any(k in cfg for k in ("multimodal_cfg", "text_cfg_hf")):
        raise ModelLoadError(f"{name}: only plain open_clip CLIP models (not CoCa or custom text towers) can be fine-tuned")
    cfg = copy.deepcopy(cfg)
    cfg["quick_gelu"] = any(isinstance(m, QuickGELU) for m in model.modules())
    return cfg


def model_config(adapter: DenseCLIP, start: str, pretrained: str | None) -> dict[str, Any]:
    """The eclip model config of the starting model (open_clip section + preprocessing)."""
    config = getattr(adapter, "config", None)
    if config is not None:
        config = copy.deepcopy(config)
        config.pop("training", None)
        config.pop("pooling", None)
        return config
    if type(adapter).__name__ == "HFCLIPViT":
        raise ModelLoadError(f"{start}: Hugging Face CLIP folders cannot be fine-tuned yet; use the open_clip equivalent")
    return {
        "arch": adapter.arch,
        "open_clip": open_clip_section(adapter.model, start),
        "preprocess": {"image_size": list(adapter.image_size), "mean": list(adapter.mean), "std": list(adapter.std)},
        "source": {"model": start, "pretrained": pretrained},
    }
