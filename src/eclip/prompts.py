"""Prompt templates and ensembles for class names.

CLIP (Radford et al. 2021, arXiv 2103.00020) classifies with "a photo of a {}." and improves with
an ensemble: embed the class name in many templates, L2-normalise each embedding, average, and
re-normalise. ECLIP's text embeddings are built the same way.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from eclip.errors import OptionError

if TYPE_CHECKING:  # pragma: no cover
    import torch

SINGLE = ("a photo of a {}.",)

# The 80 templates CLIP used for ImageNet zero-shot classification (Radford et al. 2021).
IMAGENET = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.",
    "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.",
    "a photo of the small {}.", "a photo of the weird {}.", "the cartoon {}.", "art of the {}.",
    "a drawing of the {}.", "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.",
    "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.",
    "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
)

# The 7-template subset CLIP's authors found as good as all 80 on ImageNet.
SEVEN = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)

# CLIP Surgery's ensemble (Li, Wang, Duan, Li 2023, arXiv 2304.05653; their `encode_text_with_prompt_ensemble`):
# the 80 above and five scene templates.
SURGERY = IMAGENET + (
    "there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
    "this is the {} in the scene.", "this is one {} in the scene.",
)

TEMPLATE_SETS = {"single": SINGLE, "seven": SEVEN, "imagenet": IMAGENET, "surgery": SURGERY}
#: What `resolve_templates` puts in a template to see that the text lands in the prompt.
_SLOT = "\x00text\x00"


def resolve_templates(templates: str | Sequence[str] | None) -> tuple[str, ...]:
    """A set name ('single', 'seven', 'imagenet', 'surgery'), a list of templates with '{}', or None (verbatim)."""
    if templates is None:
        return ("{}",)
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        templates = (templates,)
    for template in templates:
        try:
            filled = template.format(_SLOT)
        except (IndexError, KeyError, ValueError) as err:
            raise OptionError(f"template={template!r} is not a valid template ({type(err).__name__}: {err}); "
                              "use {} for the text and {{ }} for literal braces") from err
        if _SLOT not in filled:  # no {} at all, or only escaped ones ('{{}}' is a literal "{}"): every text would give one prompt
            escaped = " ({{ }} are literal braces)" if "{{" in template else ""
            raise OptionError(f"template={template!r} has no {{}} where the text goes{escaped} and is no template set "
                              f"({', '.join(TEMPLATE_SETS)}); write e.g. 'a photo of a {{}}.'")
    return tuple(templates)


def encode_prompts(model, texts: Sequence[str], templates: str | Sequence[str] | None = None) -> torch.Tensor:
    """(K,) texts or class names -> (K, D) normalised ensemble embeddings (one forward for all)."""
    import torch.nn.functional as F

    tmpl = resolve_templates(templates)
    prompts = [t.format(text) for text in texts for t in tmpl]
    emb = model.encode_text(prompts).view(len(texts), len(tmpl), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)
