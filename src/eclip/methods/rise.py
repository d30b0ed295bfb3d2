"""RISE: randomized input sampling (Petsiuk, Das, Saenko 2018, arXiv 1806.07421).

N random masks M_i, made by drawing an s x s binary grid (each cell kept with probability p),
upsampling it bilinearly to (s + 1) cells and cropping at a random shift (smooth masks that are
not aligned with the cell grid). The image is multiplied by each mask (in the normalised input
space, so masked pixels become the dataset mean) and scored with the model's own image-text
cosine; saliency = sum_i score_i(text) M_i / (N p). All K texts are scored from the same masked
forwards, so K costs nothing extra. Masks are seeded, so maps are reproducible.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from eclip.methods.base import Method, register
from eclip.methods.scoring import cosine_scores


class RiseMasks:
    """N RISE masks for an input of (H, W), drawn up front (small grids and shifts) and rendered on demand.

    Indexing with a slice gives (n, H, W) masks in [0, 1]; rendering chunk by chunk keeps memory
    bounded for large N, and the masks do not depend on the chunking.
    """

    def __init__(self, n: int, size: tuple[int, int], cells: int = 8, p: float = 0.5,
                 generator: torch.Generator | None = None) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.cell = (math.ceil(self.size[0] / cells), math.ceil(self.size[1] / cells))
        self.grids = (torch.rand(n, 1, cells, cells, generator=generator) < p).float()
        self.shifts = torch.stack([torch.randint(0, c, (n,), generator=generator) for c in self.cell], dim=1)

    def __len__(self) -> int:
        return len(self.grids)

    def __getitem__(self, index: slice) -> torch.Tensor:
        grids, shifts = self.grids[index], self.shifts[index].tolist()
        cells = grids.shape[-1]
        up = F.interpolate(grids, size=((cells + 1) * self.cell[0], (cells + 1) * self.cell[1]),
                           mode="bilinear", align_corners=False)
        h, w = self.size
        return torch.stack([up[i, 0, y:y + h, x:x + w] for i, (y, x) in enumerate(shifts)])


def generate_masks(
    n: int,
    size: tuple[int, int],
    cells: int = 8,
    p: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(N, H, W) RISE masks in [0, 1] for an input of `size` (H, W), drawn from `generator` (CPU)."""
    return RiseMasks(n, size, cells, p, generator)[:]


def rise_saliency(
    model,
    images: torch.Tensor,
    text_features: torch.Tensor,
    masks: torch.Tensor | RiseMasks,
    p: float,
    batch_size: int = 64,
) -> torch.Tensor:
    """(B, 3, H, W) images, (K, D) texts, (N, H, W) masks -> (B, K, H, W) RISE saliency.

    The model is run on `batch_size` masked images at a time through its own `encode_image`.
    """
    b = images.shape[0]
    per_step = max(1, batch_size // b)
    saliency = torch.zeros(b, len(text_features), *images.shape[-2:], device=images.device)
    steps = range(0, len(masks), per_step)
    for start in tqdm(steps, desc="RISE masks", unit="batch", leave=False, disable=None if len(steps) > 4 else True):
        chunk = masks[start:start + per_step].to(device=images.device, dtype=images.dtype)  # (n, H, W)
        masked = (images[None] * chunk[:, None, None]).flatten(0, 1)  # (n * B, 3, H, W)
        scores = cosine_scores(model.encode_image(masked), text_features).reshape(len(chunk), b, -1)
        saliency += torch.einsum("nbk,nhw->bkhw", scores, chunk.float())
    return saliency / (len(masks) * p)


@register
class RISE(Method):
    """RISE saliency of the image-text cosine from seeded random masks."""

    name = "rise"
    paper = "RISE: Petsiuk, Das, Saenko 2018, arXiv 1806.07421"

    n_masks: int = 500  # N (the paper used 4000-8000; 500 keeps CPU runs short)
    cells: int = 8  # s, the grid side
    p: float = 0.5  # keep probability of a cell
    seed: int = 0
    batch_size: int = 64  # masked images per forward

    def raw_maps(self, model, images, text_features):
        generator = torch.Generator().manual_seed(self.seed)
        masks = RiseMasks(self.n_masks, tuple(images.shape[-2:]), self.cells, self.p, generator)
        return rise_saliency(model, images, text_features, masks, self.p, self.batch_size)
