"""The shared pipeline of every explanation method, and the registry behind `--method`.

A method only has to say how it turns (images, text embeddings) into raw low-resolution maps
(`raw_maps`); the base class does the rest the same way for all of them (`maps_to_size`: min-max
over space, bilinear resizing), so methods differ only where their papers differ.
Shape follows pytorch-grad-cam's `BaseCAM`: the pipeline in the base, one small override per method.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from eclip.errors import MethodError

if TYPE_CHECKING:  # pragma: no cover
    from eclip.models.adapter import DenseCLIP


@dataclass
class Maps:
    """What a method returns for B images and K texts.

    Attributes:
        scores: (B, K, H, W) maps in [0, 1] at the input tensor's resolution.
        raw: (B, K, h, w) the method's maps at its own resolution, before normalisation.
        texts: the K texts, in order.
    """

    scores: torch.Tensor
    raw: torch.Tensor
    texts: list[str]


def minmax_normalise(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min-max normalise each map over its spatial dims: (..., h, w) -> same shape in [0, 1].

    A constant map becomes all zeros (nothing stands out), never NaN.
    """
    flat = maps.flatten(-2)
    lo = flat.min(dim=-1, keepdim=True).values
    hi = flat.max(dim=-1, keepdim=True).values
    out = (flat - lo) / (hi - lo).clamp_min(eps)
    return out.view_as(maps)


def maps_to_size(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) raw maps -> (..., H, W) float32 in [0, 1]: min-max normalised on their own grid, then resized.

    The one normalise-and-resize path of eclip: `Method.explain` (at the input size), `eclip
    explain` (at the image's size, and at the overlay's), `eclip evaluate`, `eclip shift`, `eclip
    demo` and the web demo all turn raw maps into the maps they show or score with this function,
    so one image, model, method and text give one map everywhere. Normalising first, on the
    method's grid, makes the map independent of the output size (ECLIP.md section 4: "the
    normalised map"); resizing is bilinear, then clamped against rounding.
    """
    maps = minmax_normalise(raw.float())
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) != size:
        lead = maps.shape[:-2]
        maps = F.interpolate(maps.reshape(1, -1, *maps.shape[-2:]), size=size, mode="bilinear", align_corners=False)
        maps = maps.reshape(*lead, *size)
    return maps.clamp_(0.0, 1.0)


class Method(ABC):
    """One explanation method.

    Subclasses set `name`, `paper` and `archs`, and implement `raw_maps`. Methods talk to the
    model only through the DenseCLIP adapter and never change it.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    archs: ClassVar[frozenset[str]] = frozenset({"vit", "resnet"})
    needs_grad: ClassVar[bool] = False

    @classmethod
    def unsupported(cls, model: DenseCLIP) -> str | None:
        """Why this method cannot explain `model` (its architecture, or for some methods its pooling
        head), or None. Asked before any work, so that `eclip evaluate` can skip the pair of model
        and method and go on, and `explain` and the web demo can refuse with the reason."""
        if model.arch not in cls.archs:
            return f"method '{cls.name}' is not defined for {model.arch} models"
        return None

    def explain(
        self,
        model: DenseCLIP,
        images: torch.Tensor,
        texts: Sequence[str] | torch.Tensor,
        text_labels: Sequence[str] | None = None,
    ) -> Maps:
        """Maps for every (image, text) pair.

        Args:
            model: the adapter.
            images: (B, 3, H, W) preprocessed images.
            texts: K strings (encoded verbatim), or a (K, D) tensor of L2-normalised text
                embeddings (e.g. prompt ensembles from `eclip.prompts`).
            text_labels: names for the K texts when `texts` is a tensor.
        Returns:
            Maps with scores (B, K, H, W) in [0, 1].
        """
        raw, labels = self.explain_raw(model, images, texts, text_labels)
        return Maps(scores=maps_to_size(raw, tuple(images.shape[-2:])), raw=raw, texts=labels)

    def explain_raw(
        self,
        model: DenseCLIP,
        images: torch.Tensor,
        texts: Sequence[str] | torch.Tensor,
        text_labels: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, list[str]]:
        """`explain` without the resize: (B, K, h, w) raw maps (detached float32) and the K text labels.

        For callers that want the maps at another size than the input's (the image's own, an
        overlay's): `maps_to_size(raw, size)` gives them, without a copy at the input size.
        """
        reason = self.unsupported(model)
        if reason:
            raise MethodError(f"{reason}; use one of the methods `eclip methods` lists for {model.arch}")
        if isinstance(texts, torch.Tensor):
            text_features = texts
            labels = list(text_labels) if text_labels is not None else [f"text{i}" for i in range(len(texts))]
        else:
            labels = list(texts)
            text_features = model.encode_text(labels)
        context = torch.enable_grad() if self.needs_grad else torch.no_grad()
        with context:
            raw = self.raw_maps(model, images, text_features)
        return raw.detach().float(), labels

    @abstractmethod
    def raw_maps(self, model: DenseCLIP, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images and (K, D) normalised text features -> (B, K, h, w) raw maps."""


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin_methods() -> None:
    """Import the method modules so that their `@register` runs (import is cheap: no weights)."""
    from eclip.methods import catalogue  # noqa: F401


def available_methods() -> dict[str, type[Method]]:
    """Name -> class of every registered method, in registration order."""
    _load_builtin_methods()
    return dict(_REGISTRY)


def get_method(name: str, **options) -> Method:
    """An instance of the method called `name`; a clear error lists the known names."""
    methods = available_methods()
    if name not in methods:
        raise MethodError(f"unknown method '{name}'; known methods: {', '.join(methods)} (see `eclip methods`)")
    return methods[name](**options)
