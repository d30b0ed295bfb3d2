"""Faithfulness: does the model's own score follow the pixels the map ranks first? Deletion and insertion.

Petsiuk, Das, Saenko 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models"
(BMVC, arXiv 1806.07421): remove the pixels in the order of the map, most important first, and
watch the score fall (deletion; a steep fall, a low area under the curve, is good); or start
from a destroyed image and put the pixels back in that order (insertion; a steep rise, a high
area, is good).

Our choices, each an option:
- score: the cosine between the model's pooled image embedding and the class's text embedding,
  the very score CLIP matches with and ECLIP explains (`score="cosine"`, default); or the softmax
  probability of the class over all the dataset's class prompts with CLIP's logit scale
  (`score="probability"`, RISE's class probability, comparable across models in [0, 1]).
- removed pixels take the value of a blurred copy of the image (`baseline="blur"`, default, for
  deletion and insertion alike; RISE blurs for insertion) or the image's mean colour
  (`baseline="mean"`). The blur is RISE's kernel (11 px, sigma 5 at 224 px) scaled to the input size.
- S steps (default 10): step s changes round(s / S * H * W) pixels; the curve has S + 1 points
  at fractions 0, 1/S, ..., 1 and its area is the trapezoid rule over [0, 1].
The pixels are those of the model's input (the map at input resolution), and every perturbed
image of a chunk of (pair, step) goes through the model in one forward pass.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import functional as TF

from eclip.metrics.base import Metric, as_tensor, nan_if_empty

#: (images (I, 3, H, W), text indices (I,)) -> (I,) scores: the model's score of each image for its text.
Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

BASELINES = ("blur", "mean")


def baseline_images(images: torch.Tensor, kind: str = "blur") -> torch.Tensor:
    """(B, 3, H, W) -> the images with every pixel "removed": blurred, or filled with each image's mean colour.

    The blur is linear, so blurring the normalised input equals normalising the blurred picture.
    """
    if kind == "mean":
        return images.mean(dim=(-2, -1), keepdim=True).expand_as(images).clone()
    if kind == "blur":
        scale = min(images.shape[-2:]) / 224
        kernel = max(3, int(round(11 * scale)) // 2 * 2 + 1)
        return TF.gaussian_blur(images, [kernel, kernel], [max(5.0 * scale, 0.5)] * 2)
    raise ValueError(f"unknown perturbation baseline {kind!r}; use one of {BASELINES}")


def removal_rank(maps: torch.Tensor) -> torch.Tensor:
    """(P, H, W) maps -> (P, H * W) rank of each pixel in decreasing map order (0 = removed first; ties in raster order)."""
    flat = maps.reshape(maps.shape[0], -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return rank


def perturbation_curves(
    scorer: Scorer,
    images: torch.Tensor,
    maps: torch.Tensor,
    pairs: torch.Tensor,
    steps: int = 10,
    baseline: str | torch.Tensor = "blur",
    chunk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion and insertion curves of (image, text) pairs: -> two (P, steps + 1) tensors of scores.

    Args:
        scorer: the model's score of perturbed images for given texts (see `Scorer`).
        images: (B, 3, H, W) model inputs.
        maps: (B, K, H, W) maps at the input resolution (only their order matters).
        pairs: (P, 2) long, rows (image index b, text index k).
        steps: S; the curves have S + 1 points.
        baseline: "blur", "mean", or a (B, 3, H, W) tensor of images with everything removed.
        chunk: perturbed images per forward pass (memory: chunk x 3 x H x W floats).
    The first deletion point (nothing removed) is the last insertion point and vice versa, so a
    pair costs 2 S forward passes, batched `chunk` at a time.
    """
    if steps < 1:
        raise ValueError(f"steps {steps} must be >= 1")
    device = images.device
    pairs = as_tensor(pairs).long().to(device)
    base = baseline_images(images, baseline) if isinstance(baseline, str) else baseline.to(images)
    n_pairs, hw = pairs.shape[0], images.shape[-2] * images.shape[-1]
    rank = removal_rank(maps[pairs[:, 0], pairs[:, 1]].to(device))  # (P, HW)
    counts = torch.round(torch.linspace(0, hw, steps + 1, dtype=torch.float64)).long().to(device)
    # items: deletion steps 0..S of every pair, then insertion steps 1..S-1 (its ends are deletion's)
    inner = steps - 1
    total = n_pairs * (steps + 1) + n_pairs * inner
    deletion = torch.empty(n_pairs, steps + 1, dtype=torch.float64)
    insertion = torch.empty(n_pairs, steps + 1, dtype=torch.float64)
    for start in range(0, total, max(1, chunk)):
        idx = torch.arange(start, min(start + max(1, chunk), total), device=device)
        is_del = idx < n_pairs * (steps + 1)
        rel = torch.where(is_del, idx, idx - n_pairs * (steps + 1))
        per = torch.where(is_del, torch.full_like(idx, steps + 1), torch.full_like(idx, max(inner, 1)))
        p = rel // per
        s = torch.where(is_del, rel % per, rel % per + 1)
        changed = rank[p] < counts[s][:, None]  # (I, HW): removed (deletion) / inserted (insertion) so far
        use_base = torch.where(is_del[:, None], changed, ~changed).view(-1, 1, *images.shape[-2:])
        b = pairs[p, 0]
        batch = torch.where(use_base, base[b], images[b])
        scores = scorer(batch, pairs[p, 1]).detach().double().cpu()
        is_del, p, s = is_del.cpu(), p.cpu(), s.cpu()
        deletion[p[is_del], s[is_del]] = scores[is_del]
        insertion[p[~is_del], s[~is_del]] = scores[~is_del]
    insertion[:, 0], insertion[:, steps] = deletion[:, steps], deletion[:, 0]
    return deletion, insertion


class PerturbationAUC(Metric):
    """Mean area under perturbation curves: AUC_i = trapezoid of the curve over fractions 0, 1/S, ..., 1.

    State: the sum of AUCs, the sum of curves (for the mean curve) and the pair count.
    """

    key: str = "auc"

    def __init__(self, steps: int = 10) -> None:
        super().__init__()
        self.steps = int(steps)
        self.add_state("auc_sum", 0.0)
        self.add_state("curve_sum", torch.zeros(self.steps + 1))
        self.add_state("count", 0.0)

    @staticmethod
    def auc(curves: torch.Tensor) -> torch.Tensor:
        """(P, S + 1) -> (P,) trapezoid areas over [0, 1]."""
        curves = as_tensor(curves, torch.float64)
        return torch.trapezoid(curves, dx=1.0 / (curves.shape[-1] - 1), dim=-1)

    def update(self, curves) -> None:
        """Add (P, S + 1) curves of P pairs."""
        curves = as_tensor(curves, torch.float64)
        if curves.dim() != 2 or curves.shape[1] != self.steps + 1:
            raise ValueError(f"curves {tuple(curves.shape)} must be (P, {self.steps + 1})")
        self._add("auc_sum", self.auc(curves).sum())
        self._add("curve_sum", curves.sum(0))
        self._add("count", curves.shape[0])

    def mean_curve(self) -> list[float]:
        """The mean curve (S + 1 points)."""
        return (self.curve_sum / max(float(self.count), 1.0)).tolist()

    def compute(self) -> dict[str, float]:
        """{<key>: mean AUC, n_pairs}."""
        return {self.key: nan_if_empty(self.auc_sum, self.count), "n_pairs": int(self.count)}


class Deletion(PerturbationAUC):
    """Deletion AUC (Petsiuk et al. 2018, arXiv 1806.07421): the score as the top-ranked pixels are removed.

        D_i = integral_0^1 score(x_i with the top-f fraction of pixels of map_i replaced by the baseline) df

    Lower is better: a faithful map names first the pixels the score depends on.
    """

    key = "deletion_auc"
    directions = {"deletion_auc": False}


class Insertion(PerturbationAUC):
    """Insertion AUC (Petsiuk et al. 2018, arXiv 1806.07421): the score as the top-ranked pixels come back.

        I_i = integral_0^1 score(baseline with the top-f fraction of pixels of map_i taken from x_i) df

    Higher is better.
    """

    key = "insertion_auc"
    directions = {"insertion_auc": True}
