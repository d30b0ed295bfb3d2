"""The loss of a training run: which terms it has (`LossTerms`), the CLIP contrastive loss, and its variants.

The CLIP contrastive loss (Radford et al. 2021, arXiv 2103.00020) is always there; `LossTerms`
says which variants and extra terms a run adds, so the loop picks the loss by these fields and
never by what the embedder happens to return. Every variant and term beyond the contrastive loss
is ours, not the paper's: background negatives (below), the dense term (`dense_contrast_loss`),
the phrase term (`phrase_share_loss`), and two ways to keep zero-shot by construction,
distillation towards the starting model (`distillation_loss`) and L2-SP towards its weights
(`l2sp_loss`); the third, the text tower frozen, is the recipe's `train="visual"`.

Symmetric InfoNCE over a batch of matched image-text pairs with a learned temperature: each
image must pick its own caption among the batch's captions and each caption its own image.

Background negatives (ours, an ECLIP variant): ECLIP's masked max pooling (Li et al. 2022, arXiv
2209.07046) sends gradient only to the masked-in (foreground) locations, so nothing pushes the
background's similarity to the text down, and the similarity map keeps preferring the background.
With `image_negatives` each caption must also pick its own image's foreground embedding over the
background embeddings of every image of the batch (the same head pooled over the locations
outside each mask): the text-to-image softmax runs over N foregrounds and N backgrounds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from eclip.errors import RecipeError

BACKGROUND_NEGATIVES = ("none", "max", "avg")
PHRASE_SETS = ("batch", "vocabulary")
DENSE_FORMS = ("none", "margin", "softmax", "peak")


@dataclass(frozen=True)
class LossTerms:
    """The loss terms of a run, one field each (a new term is a new field whose default is "off").

    All of them are ours (the paper's loss is the contrastive one alone); see the module docstring.

    Attributes:
        background_negatives: "none", or how the background outside each training mask is pooled
            into an extra negative of the text-to-image softmax: "max" (the head's max) or "avg"
            (needs the `masked_max` head, whose mask it reads).
        dense: "none", or the dense term's form: "margin" or "softmax" (`dense_contrast_loss`),
            with any head; its mask is the free-attention mask of the recipe's pooling config.
        dense_weight: the dense term's weight.
        dense_margin: the gap between the foreground's and the background's mean cosine the
            "margin" form asks for (at 0.1 the term was nearly met at the start of a synth-vit
            fine-tune with the similarity mask; 0.3 moved the map in CPU pilots).
        phrases: weight of the phrase term (`phrase_share_loss`; 0: off): each object phrase of a
            caption must beat every other phrase of the batch (the other objects of the same image
            included) somewhere on its image's foreground.
        phrase_set: the phrases the term's softmax runs over: "batch" (those the batch's captions
            name) or "vocabulary" (every colour-shape phrase of the synthetic scenes, so each
            phrase always meets the same colour's other shapes: colour alone cannot win).
        distill: weight of the distillation term (`distillation_loss`): the pooled image
            embedding zero-shot reads, and the caption embedding, pulled towards the starting
            model's (0: off).
        l2sp: weight of the L2-SP term (`l2sp_loss`): the squared distance of the trained
            weights from the starting weights (0: off).
    """

    background_negatives: str = "none"
    dense: str = "none"
    dense_weight: float = 1.0
    dense_margin: float = 0.3
    phrases: float = 0.0
    phrase_set: str = "batch"
    distill: float = 0.0
    l2sp: float = 0.0

    def __post_init__(self) -> None:
        for name, allowed in (("background_negatives", BACKGROUND_NEGATIVES), ("dense", DENSE_FORMS), ("phrase_set", PHRASE_SETS)):
            if getattr(self, name) not in allowed:
                raise RecipeError(f"`loss.{name}` {getattr(self, name)!r} is unknown; use one of {', '.join(allowed)}")
        for name in ("dense_weight", "dense_margin", "phrases", "distill", "l2sp"):
            if not getattr(self, name) >= 0:
                raise RecipeError(f"`loss.{name}` {getattr(self, name)} must be >= 0")

    @property
    def dense_terms(self) -> list[str]:
        """The fields of the terms that are on and read the dense features and the free-attention mask (dense, phrases)."""
        return [name for name, on in (("dense", self.dense != "none"), ("phrases", self.phrases > 0)) if on]


@dataclass
class ImageEmbedding:
    """What an image embedder returns for (N, 3, H, W) images.

    Attributes:
        pooled: (N, D) the head's embedding the contrastive loss reads (masked in training).
        negatives: (N, D) the background pooled outside each mask (background negatives), or None.
        valid: (N,) bool, False where an image has no background (its mask covers every location).
        dense: (N, h, w, D) the dense projected features, when a term reads them.
        mask: (N, h, w) bool foreground masks, when the run makes them.
        served: (N, D) the embedding the model serves (its head without a mask: what zero-shot
            reads), when it differs from `pooled`; `image_embedding` gives one or the other.
    """

    pooled: torch.Tensor
    negatives: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    dense: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    served: torch.Tensor | None = None

    @property
    def image_embedding(self) -> torch.Tensor:
        """(N, D) what the trained model returns for these images at inference (no training mask)."""
        return self.pooled if self.served is None else self.served


class LossTerm(Protocol):
    """A term added to the contrastive loss: `term(model, images, tokens, embedded, text, captions)` -> a weighted scalar.

    `images` are this process's (N, 3, H, W) model-ready images, `tokens` their (N, L) caption
    tokens, `text` the (N, D) L2-normalised caption embeddings (row i the caption of image i),
    `captions` the N captions' words.
    """

    name: str

    def __call__(self, model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, embedded: ImageEmbedding,
                 text: torch.Tensor, captions: list[str]) -> torch.Tensor: ...


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    image_negatives: torch.Tensor | None = None,
    negatives_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, D) normalised image and text features of N matched pairs, scalar scale -> scalar loss.

    Identical captions in one batch (common with templated captions) are all counted as
    positives, so the loss never asks the model to separate two identical texts.

    Args:
        image_negatives: (N, D) normalised extra image-side negatives (background embeddings);
            they join the text-to-image softmax only.
        negatives_valid: (N,) bool, False where an image has no negative (its mask covers every
            location); such columns are left out.
    """
    logits = logit_scale * image_features @ text_features.T
    targets = _soft_targets(text_features)
    return _both_directions(logits, targets, logits.T, targets.T, text_features, logit_scale, image_negatives, negatives_valid)


def _soft_targets(text_features: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
    """(n, N) row-stochastic targets of the captions `rows`: uniform over the captions identical to each (its own included)."""
    with torch.no_grad():
        own = torch.arange(len(text_features), device=text_features.device)[rows]
        same = (text_features[rows] @ text_features.T) > 1 - 1e-6
        same[torch.arange(len(own), device=own.device), own] = True
        return same.float() / same.sum(dim=1, keepdim=True)


def _both_directions(logits: torch.Tensor, targets: torch.Tensor, logits_t: torch.Tensor, targets_t: torch.Tensor,
                     text_rows: torch.Tensor, logit_scale: torch.Tensor, image_negatives: torch.Tensor | None,
                     negatives_valid: torch.Tensor | None) -> torch.Tensor:
    """The symmetric InfoNCE of `clip_loss` from its image-to-text and text-to-image logits (rows: the scored pairs),
    the background negatives joining the text-to-image softmax of the captions `text_rows`."""
    loss_i = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
    if image_negatives is not None:
        extra = logit_scale * text_rows @ image_negatives.T
        if negatives_valid is not None:
            extra = extra.masked_fill(~negatives_valid[None, :], -1e4)
        logits_t = torch.cat([logits_t, extra], dim=1)
        targets_t = torch.cat([targets_t, torch.zeros_like(extra)], dim=1)
    loss_t = torch.sum(-targets_t * F.log_softmax(logits_t, dim=1), dim=1).mean()
    return (loss_i + loss_t) / 2


def dense_contrast_loss(dense: torch.Tensor, mask: torch.Tensor, text: torch.Tensor, form: str = "margin", margin: float = 0.3,
                        scale: torch.Tensor | float = 100.0) -> torch.Tensor:
    """Each caption's own image: its foreground tokens should score above its background tokens (ours).

    The ITSM of a caption is the cosine of each dense feature with the caption's *full* text
    embedding, the part all captions share included: the part a contrastive loss over captions
    leaves free (README, "Where the shift lives"), and the one whose sign the ITSM takes. This
    term places it: with `mask` the free-attention foreground mask ECLIP's masked max pools over,
    - "margin": relu(margin - (mean cosine over the foreground - mean over the background)), the
      quantity the mean score contrast measures, so every location gets gradient;
    - "softmax": -log of the share of a softmax over the image's locations (logits `scale` x
      cosine) that falls on the foreground.
    - "peak": "margin", plus the same margin between the best foreground location and the best
      background one: the mean contrast alone lets the map's peak leave the object (the pointing
      game of a margin-only fine-tune fell by half), this asks for the peak too.
    Images whose mask covers every location or none are left out.

    Args:
        dense: (N, h, w, D) dense projected features; mask: (N, h, w) bool; text: (N, D) L2-normalised.
    Returns the mean over the images that have both a foreground and a background (0 if none has).
    """
    cos = torch.einsum("nld,nd->nl", F.normalize(dense.flatten(1, 2), dim=-1), text.to(dense.dtype))
    fg = mask.flatten(1).to(torch.bool)
    valid = fg.any(dim=1) & (~fg).any(dim=1)
    if not valid.any():
        return cos.sum() * 0.0
    cos, fg = cos[valid], fg[valid]
    if form in ("margin", "peak"):
        mean_gap = (cos * fg).sum(dim=1) / fg.sum(dim=1) - (cos * ~fg).sum(dim=1) / (~fg).sum(dim=1)
        loss = F.relu(margin - mean_gap)
        if form == "peak":
            peak_gap = cos.masked_fill(~fg, float("-inf")).amax(dim=1) - cos.masked_fill(fg, float("-inf")).amax(dim=1)
            loss = loss + F.relu(margin - peak_gap)
        return loss.mean()
    if form == "softmax":
        log_p = F.log_softmax(scale * cos, dim=1)
        return -torch.logsumexp(log_p.masked_fill(~fg, float("-inf")), dim=1).mean()
    raise ValueError(f"unknown dense form {form!r}")


def phrase_share_loss(dense: torch.Tensor, mask: torch.Tensor, phrases: torch.Tensor, owner: torch.Tensor, which: torch.Tensor,
                      scale: torch.Tensor | float = 100.0) -> torch.Tensor:
    """Each phrase a caption names must be the best of the batch's phrases somewhere on its image's foreground (ours).

    The contrastive loss and the dense term compare a caption with other images, or one image's
    locations with each other, against one text: neither ever compares two texts at one location,
    so the maps of "a red star" and of "a blue circle" may light up the same place (the maps do
    not tell one text from another). Segmentation's argmax asks exactly that comparison. At each
    location a softmax over every phrase of the batch (logits `scale` x cosine) gives each phrase
    a probability; for each (image, phrase) pair the term is -log of the phrase's mean probability
    over its image's foreground: multiple-instance learning, as no mask says which object is where.
    Its gradient weighs each location by how much the phrase already holds there, so the phrases
    of one image share out its foreground instead of tying on one location (where a cross-entropy
    at each phrase's single best location left two phrases of one image tied at 50/50). Only texts
    are compared, so the part every phrase shares cancels; the dense term places that part.

    Args:
        dense: (N, h, w, D) dense projected features; mask: (N, h, w) bool foreground masks.
        phrases: (U, D) L2-normalised embeddings of the batch's distinct phrases.
        owner, which: (P,) long, the image and the phrase of each pair.
    Returns the mean over the pairs whose image has a foreground (0 if none has).
    """
    feats = F.normalize(dense.flatten(1, 2), dim=-1)  # (N, L, D)
    fg = mask.flatten(1).to(torch.bool)
    keep = fg[owner].any(dim=1)
    if not keep.any():
        return feats.sum() * 0.0
    owner, which = owner[keep], which[keep]
    log_p = F.log_softmax(scale * feats @ phrases.to(feats.dtype).T, dim=-1)  # (N, L, U): the phrases at each location
    own = log_p[owner, :, which].masked_fill(~fg[owner], float("-inf"))  # (P, L)
    return -(torch.logsumexp(own, dim=1) - fg[owner].sum(dim=1).float().log()).mean()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(N, D) embeddings -> mean of 1 - cosine(student, teacher): the student's directions pulled to the teacher's.

    Learning without forgetting by distillation (Li & Hoiem 2016, arXiv 1606.09282), here on the
    embeddings zero-shot compares: only their directions matter to a cosine classifier.
    """
    return (1.0 - F.cosine_similarity(student, teacher.to(student.dtype), dim=-1)).mean()


def l2sp_loss(parameters: list[torch.nn.Parameter], anchors: list[torch.Tensor]) -> torch.Tensor:
    """Sum over `parameters` of the squared distance to their `anchors` (the starting weights).

    L2-SP (Li, Grandvalet & Davoine 2018, arXiv 1802.01483): weight decay towards the pretrained
    weights instead of towards zero, so the fine-tune stays near the model that zero-shot is
    measured on.
    """
    return sum(((p - a) ** 2).sum() for p, a in zip(parameters, anchors))


def local_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    image_negatives: torch.Tensor | None = None,
    negatives_valid: torch.Tensor | None = None,
    *,
    rows: slice,
) -> torch.Tensor:
    """`clip_loss` of the pairs `rows` only: this rank's images and captions against every column.

    open_clip's `--local-loss` (Ilharco et al. 2021, doi:10.5281/zenodo.5143773): under DDP each
    rank scores its n pairs against the N gathered ones, an (n, N) logit matrix instead of (N, N).
    With the features all-gathered with gradients and the gradients averaged over ranks, the sum
    of the ranks' local losses is world x the global loss, so the gradient is the global loss's
    exactly; only memory and compute shrink. Arguments as `clip_loss` (all N rows), plus `rows`.
    """
    logits = logit_scale * image_features[rows] @ text_features.T  # (n, N)
    targets = _soft_targets(text_features, rows)  # identical captions all count as positives, as in clip_loss
    logits_t = logit_scale * text_features[rows] @ image_features.T
    return _both_directions(logits, targets, logits_t, targets, text_features[rows], logit_scale, image_negatives,
                            negatives_valid)
