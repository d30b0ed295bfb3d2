"""Segment an image: the argmax over a vocabulary's classes of an explanation method's raw maps.

`Segmenter` chains the protocol's steps (see `protocol.py` for where each comes from): resize
the short side, run the method on sliding windows (or the whole image), average the window
logits, upsample them to the image, refine (NACLIP's PAMR), turn them into classes (softmax over
queries, best query per class, SCLIP's area rule, the probability threshold to background; or
CLIPtrase's raw argmax and cluster vote), and return one label per pixel at the image's size.
The maps are the method's raw maps, never min-max normalised: normalising each text's map on its
own would erase exactly what the argmax compares.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from eclip.errors import MethodError
from eclip.methods.base import Method
from eclip.prompts import encode_prompts
from eclip.segmentation.postprocess import class_probabilities, cluster_vote, drop_small_classes, labels_from_probabilities, pamr
from eclip.segmentation.protocol import Protocol
from eclip.segmentation.vocabulary import Vocabulary
from eclip.segmentation.windows import normalise, resize_pixels, slide_logits


def with_pos_interpolation(model, mode: str):
    """A shallow copy of a ViT adapter that resizes its position embedding by `mode`; other models as they are.

    A copy, not a change of `model`: the same adapter may serve other callers at the same time.
    """
    if getattr(model, "pos_interpolation", mode) == mode:
        return model
    twin = copy.copy(model)
    twin.pos_interpolation = mode
    return twin


@dataclass
class Segmentation:
    """One image's segmentation.

    Attributes:
        labels: (H, W) int64 class index per pixel, at the image's size.
        logits: (Q, H, W) the query logits the labels come from (window-averaged raw maps, at the
            image's size, after PAMR where the protocol has it).
    """

    labels: torch.Tensor
    logits: torch.Tensor


#: Why a threshold is refused under CLIPtrase's cluster vote (here and where the web demo checks a request up front).
NO_THRESHOLD_FOR_CLUSTER_VOTE = ("cliptrase labels each pixel by its cluster's best raw cosine, with no probability a threshold "
                                 "could cut; give a background text instead of a threshold")


class Segmenter:
    """An explanation method run as a segmenter under a protocol, for one vocabulary.

    The text features are computed once (the prompt ensemble of every query); `__call__` segments
    one image.
    """

    def __init__(self, model, method: Method, vocabulary: Vocabulary, protocol: Protocol) -> None:
        from eclip.methods.cliptrase import CLIPtrase

        if protocol.cluster_vote and not isinstance(method, CLIPtrase):
            raise MethodError(f"the cluster vote of this protocol needs the cliptrase method, not {method.name!r}")
        if protocol.cluster_vote and protocol.prob_threshold > 0:
            raise MethodError(NO_THRESHOLD_FOR_CLUSTER_VOTE)
        if protocol.prob_threshold > 0 and not vocabulary.background:
            raise MethodError("a probability threshold sends pixels to the background, but the vocabulary has no background class")
        self.model = with_pos_interpolation(model, protocol.pos_interpolation)
        self.method = method
        self.vocabulary = vocabulary
        self.protocol = protocol
        with torch.no_grad():
            self.text_features = encode_prompts(model, list(vocabulary.queries), protocol.templates)

    # ---------------------------------------------------------------- steps
    def resized(self, image: Image.Image) -> torch.Tensor:
        """(1, 3, h, w) the normalised input after the protocol's resize."""
        short = self.protocol.short_side
        if short == "model":
            short = min(self.model.image_size)
        pixels = resize_pixels(image, short, self.protocol.max_long_side, self.protocol.resample)
        return normalise(pixels, self.model.mean, self.model.std, self.model.device, self.model.dtype)

    def raw_maps(self, windows: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) -> (N, Q, h', w') the method's raw maps for every query."""
        raw, _ = self.method.explain_raw(self.model, windows, self.text_features, list(self.vocabulary.queries))
        return raw

    def logits(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, H, W) query logits at the image's size and the (1, 3, h, w) input they come from."""
        x = self.resized(image)
        p = self.protocol
        patch = self.model.patch_size if p.pad_to_patch else None
        logits = slide_logits(self.raw_maps, x, p.crop, p.stride, patch)
        size = (image.height, image.width)
        logits = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)
        if p.pamr_steps > 0:
            guide = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
            logits = pamr(guide, logits, p.pamr_steps, p.pamr_dilations)
        return logits[0], x

    def __call__(self, image: Image.Image) -> Segmentation:
        """Segment one RGB image: (H, W) labels in the vocabulary's class order."""
        if self.protocol.cluster_vote:
            return self._cliptrase(image)
        v, p = self.vocabulary, self.protocol
        with torch.no_grad():
            logits, _ = self.logits(image)
            probs = class_probabilities(logits, v.query_class, v.num_classes, p.logit_scale)
            if p.area_threshold is not None and v.background:
                probs = drop_small_classes(probs, p.area_threshold)
            labels = labels_from_probabilities(probs, p.prob_threshold)
        return Segmentation(labels.cpu(), logits.cpu())

    def _cliptrase(self, image: Image.Image) -> Segmentation:
        """CLIPtrase's script: raw cosines of the whole image, argmax over queries, DBSCAN-cluster vote."""
        from eclip.methods.cliptrase import cluster_assignment

        p, v = self.protocol, self.vocabulary
        size = (image.height, image.width)
        with torch.no_grad():
            x = self.resized(image)
            dense, correlation, pooled = cliptrase_features(self.method, self.model, x)
            cosines = torch.einsum("bhwd,qd->bqhw", F.normalize(dense.float(), dim=-1), self.text_features.float())
            logits = F.interpolate(cosines, size=size, mode="bilinear", align_corners=False)[0]
            if p.class_token_gate:
                logits = logits * (F.normalize(pooled.float(), dim=-1) @ self.text_features.float().T)[0].view(-1, 1, 1)
            queries = logits.argmax(dim=0)
            assignment = cluster_assignment(correlation[0], tuple(cosines.shape[-2:]), size, *p.dbscan)
            if assignment is not None:
                queries = cluster_vote(queries, assignment, len(v.queries))
            labels = torch.as_tensor(v.query_class, device=queries.device)[queries]
        return Segmentation(labels.cpu(), logits.cpu())


def cliptrase_features(method, model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CLIPtrase's pass: dense features (B, h, w, D), the recalibrated correlation (B, hw, hw), and the
    class token's output (B, D) after the same modified last block (their `visual_features[0, 0]`)."""
    from eclip.methods.vit_paths import dense_from_tokens

    tokens, correlation = method.tokens(model, images)
    return dense_from_tokens(model, tokens, images), correlation, model.head(tokens[:, :1])[:, 0]
