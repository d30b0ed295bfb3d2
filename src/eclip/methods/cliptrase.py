"""CLIPtrase: recalibrated self-correlation (Shao, Tian, Zhao, Su, ECCV 2024, arXiv 2407.08268).

CLIP's patches correlate most with a few "global" patches that carry the class token's content,
so every patch looks alike to the text. CLIPtrase, training-free, as the authors' single-GPU
script (`clip_self_correlation.py`, the one their paper's numbers come from) does it:
1. Semantic correlation recovery. The last block's attention becomes the sum of the three
   self-correlations softmax(s q q^T) + softmax(s k k^T) + softmax(s v v^T), s = head_dim^-0.5
   (the block keeps its residual connection and FFN), then the final norm and the projection;
   the map of a text is each patch's cosine with it.
2. Patch clustering (option `cluster`, on by default as in the authors' script). The block
   before the last gives the patches' correlation, the mean over heads of
   (cos(q_i, q_j) + cos(k_i, k_j) + cos(v_i, v_j)) / 3; the class token's row is subtracted from
   every patch's row and negatives are zeroed ("global patch" removal). DBSCAN groups the
   patches by these rows (eps 0.7 and 3 samples for grids up to the authors' 224 px ViT-B/16
   grid of 14 x 14, eps 1.1 and 7 samples above, their 336 px setting; both can be given).
3. Denoising. Each cluster's mean correlation row is a map; upsampled x4 (bilinear), median
   filtered (7 x 7) and upsampled to the input size, their argmax gives each pixel a cluster.
   The authors' script then gives every pixel of a cluster the class most of its pixels vote
   for, which is a segmentation, not a map per text; their detectron2 version gives every
   pixel of a cluster the cluster's mean score for every class instead. We use that per-text
   form on the script's cosine scores, so the maps stay one per text (our choice). Patches
   DBSCAN calls noise still get the cluster their smoothed maps point to, as in both versions.
The authors evaluate 640 px images at half resolution; eclip explains at the model's own input
size like every method. ViT only; one forward for any number of texts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eclip.errors import MethodError
from eclip.methods.base import Method, register
from eclip.methods.clustering import dbscan, median_filter
from eclip.methods.dense import similarity_map
from eclip.methods.vit_paths import block_with_attention, dense_from_tokens, self_attention, tokens_before

#: DBSCAN (eps, min_samples) of the authors' script: 224 px (14 x 14 patches) and 336 px inputs.
SMALL_GRID, LARGE_GRID = (0.7, 3), (1.1, 7)


def self_correlation_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d) q, k, v -> (B, heads, T, T) softmax(s q q^T) + softmax(s k k^T) + softmax(s v v^T)."""
    scale = q.shape[-1] ** -0.5
    return self_attention(q, scale) + self_attention(k, scale) + self_attention(v, scale)


def patch_correlation(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d) q, k, v -> (B, T, T) mean over heads of (cos qq + cos kk + cos vv) / 3."""
    total = 0.0
    for z in (q, k, v):
        z = F.normalize(z.float(), dim=-1)
        total = total + z @ z.transpose(-2, -1)
    return (total / 3.0).mean(dim=1)


def without_global_patch(correlation: torch.Tensor) -> torch.Tensor:
    """(B, 1 + hw, 1 + hw) correlation -> (B, hw, hw) patch rows minus the class token's row, negatives zeroed."""
    return (correlation[:, 1:, 1:] - correlation[:, :1, 1:]).clamp_min(0.0)


def default_dbscan(n_patches: int) -> tuple[float, int]:
    """(eps, min_samples) of the authors' setting closest to a grid of `n_patches` patches."""
    return SMALL_GRID if n_patches <= 14 * 14 else LARGE_GRID


def cluster_assignment(rows: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], eps: float,
                       min_samples: int, ratio: int = 4) -> torch.Tensor | None:
    """(hw, hw) recalibrated correlation of one image -> (H, W) cluster index per pixel, or None.

    None when DBSCAN finds no cluster (every patch is noise): the maps are then left as they are.
    """
    labels = dbscan(rows, eps, min_samples)
    clusters = [rows[labels == c].mean(dim=0) for c in range(int(labels.max()) + 1)]
    if not clusters:
        return None
    h, w = grid
    maps = torch.stack(clusters).reshape(1, len(clusters), h, w)
    maps = F.interpolate(maps, size=(ratio * h, ratio * w), mode="bilinear", align_corners=False)[0]
    maps = median_filter(maps, 2 * ratio - 1)
    maps = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]
    return maps.argmax(dim=0)


def cluster_means(maps: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """(K, H, W) maps, (H, W) cluster index -> every pixel of a cluster gets the cluster's mean, per map."""
    flat, index = maps.flatten(1), assignment.flatten()
    n = int(index.max()) + 1
    sums = torch.zeros(maps.shape[0], n, device=maps.device, dtype=flat.dtype).index_add_(1, index, flat)
    counts = torch.bincount(index, minlength=n).clamp_min(1).to(flat.dtype)
    return (sums / counts)[:, index].view_as(maps)


@register
class CLIPtrase(Method):
    """Last block with q-q + k-k + v-v self-correlation; patches clustered and maps averaged per cluster."""

    name = "cliptrase"
    paper = "CLIPtrase: Shao, Tian, Zhao, Su 2024, arXiv 2407.08268"
    archs = frozenset({"vit"})

    cluster: bool = True  # the clustering and denoising step (on in the authors' script)
    eps: float | None = None  # DBSCAN's; None: the authors' setting for the grid size
    min_samples: int | None = None  # likewise

    def features(self, model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> dense features (B, h, w, D) and the recalibrated correlation (B, hw, hw)."""
        tokens, correlation = self.tokens(model, images)
        return dense_from_tokens(model, tokens, images), correlation

    def tokens(self, model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> the last block's output tokens (B, 1 + hw, C), class token first, and the correlation."""
        if model.num_layers < 2:
            raise MethodError(f"method 'cliptrase' needs a ViT with at least 2 blocks; {model.name} has {model.num_layers}")
        x = tokens_before(model, images, model.num_layers - 2)
        before_last = model.blocks[-2]
        q, k, v = before_last.qkv(before_last.ln_1(x))
        correlation = without_global_patch(patch_correlation(q, k, v))
        x, _ = model.forward_blocks(x, model.num_layers - 2, model.num_layers - 1)
        return block_with_attention(model.blocks[-1], x, self_correlation_attention), correlation

    def raw_maps(self, model, images, text_features):
        dense, correlation = self.features(model, images)
        maps = similarity_map(dense, text_features)  # (B, K, h, w)
        if not self.cluster:
            return maps
        size = tuple(images.shape[-2:])
        grid = tuple(maps.shape[-2:])
        default_eps, default_min = default_dbscan(grid[0] * grid[1])
        eps = default_eps if self.eps is None else self.eps
        min_samples = default_min if self.min_samples is None else self.min_samples
        full = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)  # the clusters are per pixel
        out = []
        for b in range(len(full)):
            assignment = cluster_assignment(correlation[b], grid, size, eps, min_samples)
            out.append(full[b] if assignment is None else cluster_means(full[b], assignment))
        return torch.stack(out)
