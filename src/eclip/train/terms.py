"""The loss terms a recipe adds to the contrastive loss, as the callables the loop runs (`eclip.train.losses.LossTerm`).

Each holds what its loss needs beyond the batch (the frozen starting model, the starting
weights) and returns its weighted value; `make_terms` builds the ones `LossTerms` turns on. All
are ours (see `eclip.train.losses`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from eclip.data.loader import Tokenizer
from eclip.data.synthetic import CLASSNAMES, COLOURS, object_phrase, object_phrases
from eclip.models.adapter import DenseCLIP
from eclip.train.losses import (
    ImageEmbedding,
    LossTerm,
    LossTerms,
    dense_contrast_loss,
    distillation_loss,
    l2sp_loss,
    phrase_share_loss,
)

#: Every colour-shape phrase of the synthetic scenes: the phrase term's softmax with `phrase_set="vocabulary"`.
VOCABULARY_PHRASES = tuple(object_phrase(colour, shape) for colour in COLOURS for shape in CLASSNAMES)


@dataclass
class DenseTerm:
    """The dense term: each caption's image scores higher on its foreground than on its background."""

    form: str
    weight: float
    margin: float
    name: str = "dense"

    def __call__(self, model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, embedded: ImageEmbedding,
                 text: torch.Tensor, captions: list[str]) -> torch.Tensor:
        scale = model.logit_scale.exp().detach()
        return self.weight * dense_contrast_loss(embedded.dense, embedded.mask, text, self.form, self.margin, scale)


@dataclass
class PhraseTerm:
    """The phrase term: each object phrase of a caption beats the batch's other phrases somewhere on its image's foreground.

    The phrases are the colour-shape phrases the captions name (`object_phrases`); a caption in
    other words adds none, and a batch without any adds nothing. The softmax runs over the
    batch's phrases, or with `vocabulary` over every colour-shape phrase of the synthetic scenes.
    """

    tokenizer: Tokenizer
    weight: float
    vocabulary: bool = False
    name: str = "phrases"

    def __call__(self, model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, embedded: ImageEmbedding,
                 text: torch.Tensor, captions: list[str]) -> torch.Tensor:
        named = [object_phrases(c) for c in captions]
        distinct = list(dict.fromkeys(p for phrases in named for p in phrases))
        if not distinct:
            return embedded.dense.sum() * 0.0
        if self.vocabulary:
            distinct = list(dict.fromkeys(distinct + list(VOCABULARY_PHRASES)))
        device, index = embedded.dense.device, {p: i for i, p in enumerate(distinct)}
        owner = torch.tensor([i for i, phrases in enumerate(named) for _ in phrases], device=device)
        which = torch.tensor([index[p] for phrases in named for p in phrases], device=device)
        embedded_phrases = F.normalize(model.encode_text(self.tokenizer(distinct).to(device)), dim=-1)
        scale = model.logit_scale.exp().detach()
        return self.weight * phrase_share_loss(embedded.dense, embedded.mask, embedded_phrases, owner, which, scale)


@dataclass
class DistillTerm:
    """Distillation towards the starting model: the served image embedding and the caption embedding, each pulled to its own."""

    teacher: DenseCLIP
    weight: float
    name: str = "distill"

    def __call__(self, model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, embedded: ImageEmbedding,
                 text: torch.Tensor, captions: list[str]) -> torch.Tensor:
        with torch.no_grad():
            image = self.teacher.encode_image(images)
            caption = F.normalize(self.teacher.model.encode_text(tokens), dim=-1)
        return self.weight * (distillation_loss(embedded.image_embedding, image) + distillation_loss(text, caption))


class L2SPTerm:
    """L2-SP: the trained parameters' squared distance from the starting weights (copied when the term is made)."""

    name = "l2sp"

    def __init__(self, model: torch.nn.Module, trainable: Callable[[str], bool], weight: float) -> None:
        self.parameters = [p for n, p in model.named_parameters() if trainable(n)]
        self.anchors = [p.detach().clone() for p in self.parameters]
        self.weight = weight

    def __call__(self, model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, embedded: ImageEmbedding,
                 text: torch.Tensor, captions: list[str]) -> torch.Tensor:
        return self.weight * l2sp_loss(self.parameters, self.anchors)


def make_terms(loss: LossTerms, model: torch.nn.Module, trainable: Callable[[str], bool],
               teacher: DenseCLIP | None, tokenizer: Tokenizer) -> tuple[LossTerm, ...]:
    """The terms `loss` turns on, for `model` (its starting weights are the L2-SP anchors); `teacher` for distillation,
    `tokenizer` for the phrase term's phrases."""
    terms: list[LossTerm] = []
    if loss.dense != "none":
        terms.append(DenseTerm(loss.dense, loss.dense_weight, loss.dense_margin))
    if loss.phrases:
        terms.append(PhraseTerm(tokenizer, loss.phrases, vocabulary=loss.phrase_set == "vocabulary"))
    if loss.distill:
        if teacher is None:
            raise ValueError("distillation needs the frozen starting model")
        terms.append(DistillTerm(teacher, loss.distill))
    if loss.l2sp:
        terms.append(L2SPTerm(model, trainable, loss.l2sp))
    return tuple(terms)
