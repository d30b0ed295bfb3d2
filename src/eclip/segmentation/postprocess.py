"""From query logits to one class per pixel: the rules of each paper's segmentor, written from its code.

- `class_probabilities`: softmax over all queries at the logit scale, then each class takes the
  best of its queries (`postprocess_result` of SCLIP's `clip_segmentor.py`, NACLIP's `naclip.py`,
  ClearCLIP's `clearclip_segmentor.py`).
- `drop_small_classes`: SCLIP's `area_thd` (VOC21): a foreground class predicted on no more than
  this share of the pixels predicted as some foreground class has its probabilities zeroed.
- `labels_from_probabilities`: argmax over classes; below `prob_thd` the pixel is background (0).
- `pamr`: the pixel-adaptive mask refinement of Araslanov and Roth 2020 ("Single-Stage Semantic
  Segmentation from Image Labels", CVPR, arXiv 2005.08104) that NACLIP applies to the logits by
  default (`pamr.py`: affinities from the image's local standard deviation over 3 x 3 neighbourhoods
  at each dilation, softmax over the neighbours, `steps` rounds of propagation).
- `cluster_vote`: CLIPtrase's last step (`clip_self_correlation.py`): inside each DBSCAN cluster
  every pixel takes the query most of the cluster's pixels chose (ties: the lowest query index).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def class_probabilities(logits: torch.Tensor, query_class: Sequence[int], num_classes: int, logit_scale: float) -> torch.Tensor:
    """(Q, H, W) query logits -> (C, H, W): softmax over queries at `logit_scale`, max over each class's queries (0 if none)."""
    probs = torch.softmax(logits * logit_scale, dim=0)
    index = torch.as_tensor(list(query_class), device=logits.device)
    if len(index) == num_classes and bool((index == torch.arange(num_classes, device=index.device)).all()):
        return probs
    zero = probs.new_zeros(probs.shape[1:])  # a class without query (the background of a threshold) never wins the argmax
    return torch.stack([probs[index == c].amax(dim=0) if bool((index == c).any()) else zero for c in range(num_classes)])


def drop_small_classes(probs: torch.Tensor, area_threshold: float) -> torch.Tensor:
    """(C, H, W) with class 0 background -> the same with the foreground classes predicted on at most
    `area_threshold` of the foreground-predicted pixels zeroed (SCLIP's `area_thd`)."""
    num_classes = probs.shape[0]
    area = torch.bincount(probs.argmax(dim=0).flatten(), minlength=num_classes)[1:].to(probs.dtype)
    keep = (area > area_threshold * area.sum()).to(probs.dtype)
    out = probs.clone()
    out[1:] *= keep.view(-1, 1, 1)
    return out


def labels_from_probabilities(probs: torch.Tensor, prob_threshold: float = 0.0) -> torch.Tensor:
    """(C, H, W) -> (H, W) int64 argmax; pixels whose best probability is below the threshold become 0 (background)."""
    best, labels = probs.max(dim=0)
    if prob_threshold > 0:
        labels = labels.masked_fill(best < prob_threshold, 0)
    return labels


def _neighbours(x: torch.Tensor, dilation: int, centre: bool) -> list[torch.Tensor]:
    """The 3 x 3 neighbours at `dilation` of every pixel of (B, K, H, W), replicate-padded, in raster order."""
    h, w = x.shape[-2:]
    padded = F.pad(x, [dilation] * 4, mode="replicate")
    out = []
    for i in range(3):
        for j in range(3):
            if i == 1 and j == 1 and not centre:
                continue
            out.append(padded[..., i * dilation:i * dilation + h, j * dilation:j * dilation + w])
    return out


def pamr(image: torch.Tensor, logits: torch.Tensor, steps: int = 10, dilations: Sequence[int] = (8, 16)) -> torch.Tensor:
    """(B, 3, H, W) normalised image, (B, Q, H, W) logits -> refined logits (PAMR, Araslanov and Roth 2020).

    Affinity of a pixel to its neighbour n: softmax over all neighbours (8 per dilation) of
    -mean over channels |I - I_n| / (1e-8 + 0.1 sigma), sigma the (unbiased) standard deviation of
    the channel over the 9 pixels of every dilation's neighbourhood taken together; each step
    replaces the logits by the affinity-weighted sum of the neighbours' logits.
    """
    if steps <= 0:
        return logits
    image = image.to(logits.dtype)
    sigma = torch.stack([n for d in dilations for n in _neighbours(image, d, centre=True)], dim=2).std(dim=2)
    diffs = torch.stack([(image - n).abs() for d in dilations for n in _neighbours(image, d, centre=False)], dim=2)
    affinity = torch.softmax((-diffs / (1e-8 + 0.1 * sigma.unsqueeze(2))).mean(dim=1), dim=1)  # (B, P, H, W)
    for _ in range(steps):
        neighbours = [n for d in dilations for n in _neighbours(logits, d, centre=False)]
        logits = sum(n * affinity[:, p:p + 1] for p, n in enumerate(neighbours))
    return logits


def cluster_vote(query_labels: torch.Tensor, assignment: torch.Tensor, num_queries: int) -> torch.Tensor:
    """(H, W) query index per pixel, (H, W) cluster per pixel -> every cluster's pixels set to its most frequent query."""
    clusters = int(assignment.max()) + 1
    counts = torch.bincount((assignment * num_queries + query_labels).flatten(), minlength=clusters * num_queries)
    counts = counts.view(clusters, num_queries)
    winner = counts.argmax(dim=1)  # the first maximum: the lowest query index on ties
    voted = winner[assignment]
    return torch.where(counts.sum(dim=1)[assignment] > 0, voted, query_labels)
