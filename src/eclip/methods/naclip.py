"""NACLIP: neighbourhood-aware CLIP (Hajimiri, Ben Ayed, Dolz 2024, arXiv 2404.08181).

Two training-free changes to the last block: (1) attention from key-key similarity plus a
Gaussian neighbourhood prior, softmax(s k k^T + G), with G[i, j] = exp(-|p_i - p_j|^2 / (2 sigma^2))
over the patches' grid positions (0 for rows and columns of the class token; sigma = 5 in the
authors' code); (2) a "reduced" block: no residual connection, no FFN, as the authors' default.
Then the final norm and the projection, cosine with each text. One forward for any number of texts.
"""
from __future__ import annotations

import torch

from eclip.methods.base import register
from eclip.methods.dense import LastBlockMethod


def neighbourhood_prior(grid: tuple[int, int], sigma: float, device=None) -> torch.Tensor:
    """(1 + h*w, 1 + h*w) Gaussian of the grid distance between patches; zero row/column for the class token."""
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    pos = torch.stack([rows.flatten(), cols.flatten()], dim=-1).float()  # (hw, 2)
    prior = torch.exp(-torch.cdist(pos, pos).pow(2) / (2.0 * sigma**2))
    out = torch.zeros(h * w + 1, h * w + 1, device=device)
    out[1:, 1:] = prior
    return out


@register
class NACLIP(LastBlockMethod):
    """Last block with key-key attention plus a Gaussian neighbourhood prior, reduced (no residual, FFN)."""

    name = "naclip"
    paper = "NACLIP: Hajimiri, Ben Ayed, Dolz 2024, arXiv 2404.08181"

    sigma: float = 5.0  # of the neighbourhood prior, in patches (the authors' 5)
    residual: bool = False
    ffn: bool = False

    def attention(self, model, images):
        prior = neighbourhood_prior(model.grid_size(*images.shape[-2:]), self.sigma, device=images.device)

        def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            logits = (k @ k.transpose(-2, -1)) * k.shape[-1] ** -0.5
            return torch.softmax(logits + prior.to(logits.dtype), dim=-1)

        return attention
