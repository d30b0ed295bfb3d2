"""The parts a fine-tune is built from: a loaded CLIP, a pooling head, its training masks, and what may change.

ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046) fine-tunes a contrastively trained CLIP with
masked max pooling over the dense projected features; the mask comes from a free attention and
is used in training only. This module makes the parts `eclip.train.recipe.build_run` puts
together for the loop: the image embedder (the head applied to the adapter's dense features,
with masks from a frozen copy of the starting model or from the model itself), the
trainable-parameter filter (`all`, `visual`, or `last:N` blocks + projection), and the model
config the output folder records.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import torch

from eclip.errors import ModelLoadError, RecipeError
from eclip.models.adapter import DenseCLIP
from eclip.models.free_attention import MaskMaker
from eclip.models.pooling import PoolingConfig, max_pool, pool
from eclip.train.losses import ImageEmbedding


class PooledEmbedder:
    """`Run.embedder` for a pooling head on the adapter's dense features: (model, x) -> `ImageEmbedding`.

    Called as `embedder(model, x)` with (N, 3, H, W) model-ready images. For `masked_max` the max
    runs over the free-attention mask of each image (training only); with `background_negatives`
    ("max" or "avg") it also pools the locations outside the mask, by the head's max or by their
    mean, for the loss to use as negatives (`eclip.train.losses`). A max sends gradient to one
    background location per channel, a mean to every background location. With `keep_dense` the
    dense features (and the masks, when `masks` is given, whatever the head) travel along for
    the terms that read them.
    """

    def __init__(self, adapter: DenseCLIP, config: PoolingConfig, masks: MaskMaker | None = None,
                 background_negatives: str = "none", keep_dense: bool = False) -> None:
        if config.head == "masked_max" and masks is None:
            raise ValueError("masked_max needs a MaskMaker")
        if background_negatives != "none" and config.head != "masked_max":
            raise ValueError("background negatives are pooled outside a masked_max head's masks")
        self.adapter = adapter
        self.config = config
        self.masks = masks
        self.background_negatives = background_negatives
        self.keep_dense = keep_dense

    def __call__(self, model: torch.nn.Module, images: torch.Tensor) -> ImageEmbedding:
        if self.config.is_native and not self.keep_dense:
            return ImageEmbedding(model.encode_image(images))
        native, dense = self.adapter.pooled_and_dense(images)
        mask = self.masks(images) if self.masks is not None else None
        pooled = pool(self.config, dense, native=native, mask=mask)
        out = ImageEmbedding(pooled, dense=dense if self.keep_dense else None, mask=mask)
        if self.config.head == "masked_max":  # what the model serves: the same max, unmasked
            out.served = pool(self.config, dense)
        if self.background_negatives != "none":
            background = ~mask
            out.valid = background.flatten(1).any(dim=1)
            if self.background_negatives == "avg":
                weights = background[..., None].to(dense.dtype)
                out.negatives = (dense * weights).sum(dim=(1, 2)) / weights.sum(dim=(1, 2)).clamp_min(1)
            else:
                out.negatives = max_pool(dense, background, self.config.max_over)
        return out


def frozen_copy(adapter: DenseCLIP) -> DenseCLIP:
    """A new adapter around a deep copy of the model (same pooling head), in eval mode, with no parameter requiring grad."""
    from eclip.models.loading import wrap

    model = copy.deepcopy(adapter.model).eval().requires_grad_(False)
    frozen = wrap(model, adapter.tokenizer, name=f"{adapter.name} (frozen)", image_size=adapter.image_size,
                  mean=adapter.mean, std=adapter.std, context_length=adapter.context_length, count_tokens=adapter._count_tokens)
    frozen.pooling = adapter.pooling
    return frozen


def make_embedder(adapter: DenseCLIP, config: PoolingConfig, background_negatives: str = "none", *,
                  masks: bool | None = None, keep_dense: bool = False, frozen: DenseCLIP | None = None) -> PooledEmbedder:
    """The embedder of `config`: masks from a frozen copy of the starting model (`frozen`, made if not given), or the model itself.

    Masks are made for `masked_max`, and for any head when `masks` is True (a term that reads them).
    """
    masker = None
    if masks or config.head == "masked_max":
        source = (frozen or frozen_copy(adapter)) if config.mask_from == "frozen" else adapter
        masker = MaskMaker(source, config)
    return PooledEmbedder(adapter, config, masker, background_negatives, keep_dense)


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
        raise RecipeError(f"`train` {spec!r} is not understood; use all, visual, or last:N (e.g. last:2)")
    blocks = _blocks(arch, names)
    n = int(match.group(1))
    if not 1 <= n <= len(blocks):
        raise RecipeError(f"`train` last:{n}: the image tower has {len(blocks)} blocks; use 1..{len(blocks)}")
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
