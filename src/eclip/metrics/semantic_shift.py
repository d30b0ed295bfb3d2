"""The semantic shift in numbers: mean score contrast (mSC) and the inverted rate.

ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046) shows that vanilla CLIP's image-text similarity
map lights up the background instead of the object ("opposite visualization") and reports it
with a mean score contrast whose exact equation it does not give. Ours:
the mean of the map inside the class mask minus the mean outside it.
"""
from __future__ import annotations

import torch

from eclip.metrics.base import PairMetric, defined_pairs, keep_defined, nan_if_empty, pair_tensors


class ScoreContrast(PairMetric):
    """Mean score contrast (mSC, percent) and inverted rate over (image, class) pairs.

    For pair i with map S_i in [0, 1] (min-max normalised over the image), class mask M_i and
    background B_i (valid pixels only):

        c_i = mean_{p in M_i} S_i(p) - mean_{p in B_i} S_i(p)      in [-1, 1]
        mSC = 100 * mean_i c_i                                      (higher is better)
        inverted rate = mean_i [c_i < 0]                            (lower is better)

    mSC follows ECLIP (Li et al. 2022, arXiv 2209.07046; equation ours, see the module
    docstring); the inverted rate is our own measure of how often the semantic shift
    happens. A perfect map has mSC +100, an inverted one -100. Direction: the
    headline mSC is higher-is-better; `inverted_rate` is lower-is-better.
    """

    directions = {"msc": True, "score_contrast": True, "inverted_rate": False}

    def __init__(self) -> None:
        super().__init__()
        self.add_state("contrast_sum", 0.0)
        self.add_state("inverted", 0.0)

    @staticmethod
    def contrasts(maps, masks, ignore=None) -> torch.Tensor:
        """(N,) float64 contrasts c_i of the defined pairs (degenerate ones dropped)."""
        maps, masks, valid, _ = keep_defined(*pair_tensors(maps, masks, ignore))
        return ScoreContrast._contrasts(maps, masks, valid)

    @staticmethod
    def per_pair(maps, masks, ignore=None) -> torch.Tensor:
        """(N,) float64 contrast c_i of every pair, in order, NaN where it is not defined.

        The number a figure prints under one map: the same c_i `update` adds to the mSC (ignored
        pixels count nowhere), with the degenerate pairs kept in place as NaN so that each value
        stays next to its map.
        """
        maps, masks, valid = pair_tensors(maps, masks, ignore)
        keep = defined_pairs(masks, valid)
        out = torch.full((maps.shape[0],), float("nan"), dtype=torch.float64)
        if keep.any():
            out[keep] = ScoreContrast._contrasts(maps[keep], masks[keep], None if valid is None else valid[keep])
        return out

    @staticmethod
    def _contrasts(maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        flat = maps.flatten(1)
        if valid is None:
            fg, n_valid = masks.flatten(1), flat.shape[1]
            total = flat.sum(1, dtype=torch.float64)
        else:
            fg, valid = (masks & valid).flatten(1), valid.flatten(1)
            n_valid = valid.sum(1)
            total = (flat * valid).sum(1, dtype=torch.float64)
        n_fg = fg.sum(1)
        inside = (flat * fg).sum(1, dtype=torch.float64)
        return inside / n_fg - (total - inside) / (n_valid - n_fg)

    def _update(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None) -> None:
        c = self._contrasts(maps, masks, valid)
        self._add("contrast_sum", c.sum())
        self._add("inverted", (c < 0).sum())

    def compute(self) -> dict[str, float]:
        """{msc (percent), score_contrast (fraction), inverted_rate, n_pairs}."""
        contrast = nan_if_empty(self.contrast_sum, self.count)
        return {"msc": 100 * contrast, "score_contrast": contrast, "inverted_rate": nan_if_empty(self.inverted, self.count),
                "n_pairs": int(self.count)}
