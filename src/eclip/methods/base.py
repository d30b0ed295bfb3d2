"""The shared pipeline of every explanation method, and the registry behind `--method`.

A method only has to say how it turns (images, text embeddings) into raw low-resolution maps
(`raw_maps`); the base class does the rest the same way for all of them (`maps_to_size`: min-max
over space, bilinear resizing), so methods differ only where their papers differ.
Shape follows pytorch-grad-cam's `BaseCAM`: the pipeline in the base, one small override per method.

A method's options are its annotated attributes: every subclass is a keyword-only dataclass, so
an option is declared once, with its type and default, and a subclass declares only the options
it adds or whose default it changes. Every surface names a method and its options in one spec,
`get_method("chefer:start_layer=0,target=cosine")` (parsed by `eclip.methods.options`); the
instance's `label` is that spec normalised, the method's name in outputs and records.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from eclip.errors import MethodError
from eclip.methods.options import did_you_mean, format_spec, method_options, parse_spec

if TYPE_CHECKING:  # pragma: no cover
    from eclip.models.adapter import DenseCLIP


class ImageExtra:
    """One image's extra output of a method (`Maps.extra[name][b]`), in the form every writer understands.

    Methods whose papers produce more than one map per text (interaction matrices, the terms of a
    decomposition) return them per image as a subclass; a writer saves `array()` as
    `<stem>_<name>.npy`, puts `record()` in the image's JSON record under `name`, and shows
    `panels()`, when given, instead of one panel per text.
    """

    def record(self) -> dict:
        """A JSON-able summary ({} for none)."""
        return {}

    def array(self) -> np.ndarray | None:
        """An array worth saving whole, or None."""
        return None

    def panels(self) -> tuple[list[str], torch.Tensor] | None:
        """(titles, (P, h, w) raw maps) to show instead of the per-text maps, or None."""
        return None


@dataclass
class Maps:
    """What a method returns for B images and K texts.

    Attributes:
        raw: (B, K, h, w) the method's maps at its own resolution, before normalisation.
        texts: the K texts, in order.
        size: (H, W) of the input tensor.
        extra: name -> one `ImageExtra` per image, for methods with more outputs than their maps
            ({} for most).
    """

    raw: torch.Tensor
    texts: list[str]
    size: tuple[int, int]
    extra: dict[str, list[ImageExtra]] = field(default_factory=dict)

    @cached_property
    def scores(self) -> torch.Tensor:
        """(B, K, H, W) maps in [0, 1] at the input tensor's resolution (made on first use)."""
        return maps_to_size(self.raw, self.size)


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
    method's grid, makes the map independent of the output size (ECLIP, Li et al. 2022, arXiv
    2209.07046, section 4: "the normalised map"); resizing is bilinear, then clamped against rounding.
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

    Subclasses set `name`, `paper` and `archs`, declare their options as annotated attributes with
    defaults (each subclass becomes a keyword-only dataclass), and implement `raw_maps`. Methods
    talk to the model only through the DenseCLIP adapter and never change it.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    archs: ClassVar[frozenset[str]] = frozenset({"vit", "resnet"})
    needs_grad: ClassVar[bool] = False
    uses_text: ClassVar[bool] = True  # False: one map for every text (where the model looks on its own)
    _given: ClassVar[frozenset[str]] = frozenset()  # the options a spec named (see `label`)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(eq=False, kw_only=True)(cls)

    @property
    def label(self) -> str:
        """The canonical spec of this instance: its name, then the options a spec named and those that
        differ from their defaults, keys sorted (`chefer:start_layer=0,target=cosine`)."""
        options = method_options(type(self))
        values = {key: getattr(self, key) for key in options}
        return format_spec(self.name, {k: v for k, v in values.items() if k in self._given or v != options[k].default})

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
            Maps with raw (B, K, h, w) detached float32 maps, scores (B, K, H, W) in [0, 1] and extras.
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
            raw, extra = self.raw_maps_and_extra(model, images, text_features)
        return Maps(raw=raw.detach().float(), texts=labels, size=(int(images.shape[-2]), int(images.shape[-1])), extra=extra)

    def explain_raw(
        self,
        model: DenseCLIP,
        images: torch.Tensor,
        texts: Sequence[str] | torch.Tensor,
        text_labels: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, list[str]]:
        """`explain(...).raw` and `.texts`: (B, K, h, w) raw maps (detached float32) and the K text labels.

        For callers that want the maps at another size than the input's (the image's own, an
        overlay's): `maps_to_size(raw, size)` gives them.
        """
        maps = self.explain(model, images, texts, text_labels)
        return maps.raw, maps.texts

    @abstractmethod
    def raw_maps(self, model: DenseCLIP, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images and (K, D) normalised text features -> (B, K, h, w) raw maps."""

    def raw_maps_and_extra(self, model: DenseCLIP, images: torch.Tensor,
                           text_features: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[ImageExtra]]]:
        """`raw_maps` and the method's extra outputs, one per image; methods with extras override this."""
        return self.raw_maps(model, images, text_features), {}


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> dict[str, type[Method]]:
    """Name -> class of every registered method: the built-in ones in the catalogue's order, then any other."""
    from eclip.methods.catalogue import ORDER  # importing the catalogue registers the built-in methods

    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(_REGISTRY.items(), key=lambda item: rank.get(item[0], len(rank))))


def get_method(spec: str, **options) -> Method:
    """An instance of the method a spec names: `name` or `name:key=value,...` (see the module docstring).

    `options` are Python values for further options. An unknown name or key, a key given twice or
    a value of the wrong type is a MethodError naming it, the choices and the closest one.
    """
    name, pairs = parse_spec(spec)
    methods = available_methods()
    if name not in methods:
        raise MethodError(f"unknown method '{name}'{did_you_mean(name, methods)}; known methods: {', '.join(methods)} "
                          "(see `eclip methods`)")
    declared = method_options(methods[name])
    values: dict[str, Any] = {}
    for key, value, from_spec in [*((k, v, True) for k, v in pairs), *((k, v, False) for k, v in options.items())]:
        if key not in declared:
            choices = f"its options: {', '.join(declared)}" if declared else "it takes no options"
            raise MethodError(f"method '{name}' has no option '{key}'{did_you_mean(key, declared)}; {choices} "
                              "(see `eclip methods`)")
        if key in values:
            raise MethodError(f"method '{name}': option '{key}' is given twice; give it once")
        values[key] = declared[key].parse(value, name) if from_spec else value
    method = methods[name](**values)
    method._given = frozenset(values)
    return method
