"""The methods as the page offers them: in families, each with a one-line description, and which a model can run.

The families follow how a method makes its map: the cosine of per-location features with the
text (dense, `DenseMethod` and the training-free segmentation baselines), the model's own
attention (one map for every text), gradients of the image-text score (`GradientMethod`), the
score under masked copies of the image, and the rest. A method registered by someone else lands
in its base class's family, or in "other", described by its docstring's first line.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FAMILIES = {
    "dense": "cosine of each location's features with the text",
    "attention": "where the model attends; one map for every text",
    "gradient": "gradients of the image-text score",
    "perturbation": "the score on randomly masked copies of the image",
    "other": "decompositions, interactions, regions",
}

#: The family of the built-in methods whose base class does not say it.
FAMILY = {"surgery": "dense", "cliptrase": "dense", "free_attention": "attention", "rollout": "attention",
          "rise": "perturbation"}

DESCRIPTIONS = {
    "itsm": "ECLIP's image-text similarity map",
    "itsm_specific": "ITSM along the text's class-specific direction (ours)",
    "maskclip": "the last attention's value path only (MaskCLIP)",
    "surgery": "v-v attention and feature surgery (CLIP Surgery)",
    "sclip": "q-q + k-k self-attention in the last block (SCLIP)",
    "clearclip": "the last block's q-q attention, no residual (ClearCLIP)",
    "naclip": "k-k attention with a neighbourhood prior (NACLIP)",
    "gem": "self-self attention over the last blocks (GEM)",
    "cliptrase": "self-correlation, patches clustered (CLIPtrase)",
    "free_attention": "the pooling query's last attention (ECLIP)",
    "rollout": "attention rolled out through every block",
    "gradcam": "Grad-CAM of the image-text score",
    "chefer": "relevance through the attention blocks (Chefer et al.)",
    "grad_eclip": "gradient x value x attention (Grad-ECLIP)",
    "legrad": "each layer's attention gradient (LeGrad)",
    "rise": "hundreds of masked forwards; slow",
    "decomposition": "direct contributions of the last heads",
    "interactions": "caption word x location interactions",
    "phrase": "region tokens over superpixels",
}


@dataclass(frozen=True)
class MenuItem:
    name: str
    family: str
    description: str

    @property
    def label(self) -> str:
        return f"{self.name} · {self.description}"


def menu() -> dict[str, list[MenuItem]]:
    """Family -> its methods, in `FAMILIES` order and the registry's order within each."""
    from eclip.methods.base import available_methods
    from eclip.methods.dense import DenseMethod
    from eclip.methods.gradient import GradientMethod

    groups: dict[str, list[MenuItem]] = {family: [] for family in FAMILIES}
    for name, cls in available_methods().items():
        family = FAMILY.get(name) or ("dense" if issubclass(cls, DenseMethod) else
                                      "gradient" if issubclass(cls, GradientMethod) else "other")
        described = DESCRIPTIONS.get(name) or ((cls.__doc__ or "").strip().splitlines() or [""])[0].rstrip(".")
        groups[family].append(MenuItem(name, family, described))
    return groups


def unsupported(model, names: Sequence[str]) -> dict[str, str]:
    """Name -> why the method cannot explain `model` (`Method.unsupported`), for the names it cannot."""
    from eclip.methods.base import available_methods

    methods = available_methods()
    return {name: reason for name in names if (reason := methods[name].unsupported(model))}
