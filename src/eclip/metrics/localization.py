"""Localisation: does the map cover the object (IoU at a searched threshold) and point at it (pointing game)?

Both read (image, class) pairs: a map in [0, 1] at the image's size, the class's boolean mask,
and the pixels to ignore (VOC's 255 border). Pairs without a valid foreground or background
pixel have no defined score; they are dropped and counted (`degenerate`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from eclip.metrics.base import PairMetric, nan_if_empty


def threshold_grid(step: float = 0.05) -> torch.Tensor:
    """Thresholds 0, step, 2 step, ..., 1 as float32 `j / n` (n = 1 / step), e.g. 0.00, 0.05, ..., 1.00."""
    n = int(round(1.0 / step))
    if n < 1 or abs(n * step - 1.0) > 1e-9:
        raise ValueError(f"threshold step {step} must divide 1 (e.g. 0.05 or 0.01)")
    return torch.arange(n + 1, dtype=torch.float32) / n


def _uniform_steps(grid: torch.Tensor) -> int | None:
    """n when `grid` is exactly `threshold_grid(1 / n)`, else None."""
    n = len(grid) - 1
    return n if n >= 1 and torch.equal(grid, torch.arange(n + 1, dtype=torch.float32) / n) else None


def grid_levels(values: torch.Tensor, grid: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """For each value, how many thresholds of `grid` are <= it (int32, 0..len(grid)), exactly.

    On the uniform grid j / n this is floor(v n) + 1 corrected by one where float rounding puts
    v n on the wrong side of an integer (the corrections compare v with j / n computed as the
    grid is), several times faster than a binary search; any other grid uses `searchsorted`.
    """
    if n is None:
        return torch.searchsorted(grid, values.contiguous(), right=True, out_int32=True)
    g = (values * n).floor_().clamp_(-1, n)  # the index of the last threshold <= v, up to one
    g -= (g / n > values).float()
    g += ((g + 1) / n <= values).float()
    return g.clamp_(-1, n).add_(1).to(torch.int32)


class ThresholdIoU(PairMetric):
    """Foreground IoU and binary mIoU of maps binarised at the best threshold of a grid.

    For a threshold t, pair i's prediction is P_i(t) = {p valid : map_i(p) >= t}; with its mask
    M_i (valid pixels only) and background B_i = valid minus M_i:

        fgIoU_i(t) = |P_i(t) & M_i| / |P_i(t) | M_i|
        bgIoU_i(t) = |~P_i(t) & B_i| / |~P_i(t) | B_i|

    Means over the N pairs give curves fgIoU(t) and bgIoU(t). The reported threshold t* is the
    grid point that maximises the mean foreground IoU (the first one on ties); `fg_iou` =
    fgIoU(t*), `miou` = (fgIoU(t*) + bgIoU(t*)) / 2, the binary mIoU over the two classes
    "object" and "not object". One threshold per method and dataset, as ECLIP (Li, Wang, Duan,
    Li 2022, arXiv 2209.07046) evaluates explanation maps against segmentation masks; the grid
    0.00..1.00 step 0.05 is our choice where the paper gives none.

    State: per-threshold sums of the per-pair IoUs and the pair count, so shards add up exactly.
    A pixel's map value is bucketed against the grid once (`grid_levels` + bincount), which costs
    O(pixels) per pair rather than O(pixels x thresholds).
    """

    directions = {"fg_iou": True, "miou": True}

    def __init__(self, thresholds: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        grid = threshold_grid() if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float32)
        if grid.dim() != 1 or len(grid) == 0 or bool((grid[1:] <= grid[:-1]).any()):
            raise ValueError("thresholds must be a non-empty increasing 1-D sequence")
        self.thresholds = grid
        self._uniform = _uniform_steps(grid)
        self.add_state("fg_sum", torch.zeros(len(grid)))
        self.add_state("bg_sum", torch.zeros(len(grid)))

    def _update(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None) -> None:
        n, t = maps.shape[0], len(self.thresholds)
        # level = how many thresholds are <= the value: the pixel is foreground for thresholds 0..level-1
        level = grid_levels(maps.reshape(n, -1), self.thresholds, self._uniform)
        kind = masks.to(torch.int32) + 1  # 0 ignored, 1 background, 2 object
        if valid is not None:
            kind.mul_(valid)
        kind = kind.reshape(n, -1)
        offset = torch.arange(n, dtype=torch.int32)[:, None] * (3 * (t + 1))
        index = kind.mul_(t + 1).add_(level).add_(offset)  # bin of (pair, kind, level)
        hist = torch.bincount(index.reshape(-1), minlength=n * 3 * (t + 1)).view(n, 3, t + 1).double()
        at_or_above = hist.flip(-1).cumsum(-1).flip(-1)[..., 1:]  # (n, 3, t): pixels predicted foreground at t
        tp, fp = at_or_above[:, 2], at_or_above[:, 1]
        pos, neg = hist[:, 2].sum(-1, keepdim=True), hist[:, 1].sum(-1, keepdim=True)
        fn, tn = pos - tp, neg - fp
        self._add("fg_sum", (tp / (tp + fp + fn)).sum(0))
        self._add("bg_sum", (tn / (tn + fn + fp)).sum(0))

    def curve(self) -> dict[str, list[float]]:
        """Mean foreground and background IoU at every threshold of the grid."""
        count = max(float(self.count), 1.0)
        return {"thresholds": [round(float(t), 6) for t in self.thresholds], "fg_iou": (self.fg_sum / count).tolist(),
                "bg_iou": (self.bg_sum / count).tolist()}

    def compute(self) -> dict[str, float]:
        """{threshold, fg_iou, miou, n_pairs, degenerate}; NaN scores when no pair was seen."""
        out = {"n_pairs": int(self.count), "degenerate": int(self.degenerate)}
        if float(self.count) == 0:
            return {**out, "threshold": float("nan"), "fg_iou": float("nan"), "miou": float("nan")}
        best = int(torch.argmax(self.fg_sum))  # first maximum: the lowest of tied thresholds
        fg = nan_if_empty(self.fg_sum[best], self.count)
        bg = nan_if_empty(self.bg_sum[best], self.count)
        return {**out, "threshold": round(float(self.thresholds[best]), 6), "fg_iou": fg, "miou": (fg + bg) / 2}


class PointingGame(PairMetric):
    """Share of pairs whose map peaks on the object: the pointing game.

        hit_i = [ exists q in M_i with |q - argmax_{p valid} map_i(p)| <= r ],  pointing = mean_i hit_i

    Zhang, Bargal, Lin, Brandt, Shen, Sclaroff 2016, "Top-down Neural Attention by Excitation
    Backprop" (ECCV, arXiv 1608.00507) count a hit within a tolerance of r = 15 px at ~224 px
    inputs. Our default is r = 0 (the peak pixel itself must be on the object) because scenes can
    be small; pass `tolerance` to follow the paper. Ignored pixels never hold the peak and never
    count as object. Ties go to the first pixel in raster order (so a constant map points at the
    top-left corner).
    """

    directions = {"pointing_game": True}

    def __init__(self, tolerance: int = 0) -> None:
        super().__init__()
        if tolerance < 0:
            raise ValueError(f"tolerance {tolerance} must be >= 0 pixels")
        self.tolerance = int(tolerance)
        r = self.tolerance
        dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
        disc = dy**2 + dx**2 <= r * r
        self._offsets = torch.stack([dy[disc], dx[disc]], dim=1)  # (M, 2), (0, 0) included
        self.add_state("hits", 0.0)

    def _update(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None) -> None:
        n, h, w = maps.shape
        if valid is not None:
            maps, masks = maps.masked_fill(~valid, float("-inf")), masks & valid
        peak = maps.reshape(n, -1).argmax(dim=1)
        y, x = peak // w, peak % w
        ys = y[:, None] + self._offsets[None, :, 0]
        xs = x[:, None] + self._offsets[None, :, 1]
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        flat = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1))
        target = masks.reshape(n, -1).gather(1, flat) & inside
        self._add("hits", target.any(dim=1).sum())

    def compute(self) -> dict[str, float]:
        """{pointing_game, n_pairs}."""
        return {"pointing_game": nan_if_empty(self.hits, self.count), "n_pairs": int(self.count)}
