"""DBSCAN and a median filter in torch, for CLIPtrase's patch clustering and denoising.

CLIPtrase (Shao et al. 2024, arXiv 2407.08268) clusters patches with scikit-learn's DBSCAN and
smooths the cluster maps with SciPy's median filter. Both are small enough to write here exactly,
so eclip needs neither package: `dbscan` returns scikit-learn's labels (same core points, same
cluster numbering, same assignment of border points), `median_filter` SciPy's values for its
default "reflect" border mode. The CLIPtrase reference test checks both against numbers computed
with the authors' code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dbscan(points: torch.Tensor, eps: float, min_samples: int) -> torch.Tensor:
    """Density-based clustering (Ester et al. 1996) of (n, f) points -> (n,) int64 labels, -1 for noise.

    As scikit-learn's `DBSCAN(eps, min_samples)` with the Euclidean metric: a point is a core
    point when at least `min_samples` points (itself included) lie within distance `eps`
    (inclusive); clusters are the connected components of core points, numbered in the order of
    their first point; a non-core point within `eps` of core points joins the earliest-numbered
    of their clusters (the one scikit-learn's expansion reaches first); the rest is noise.
    """
    n = points.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=points.device)
    near = torch.cdist(points.double(), points.double()) <= eps  # (n, n), the diagonal included
    core = near.sum(dim=1) >= min_samples
    linked = near & core[:, None] & core[None, :]
    big = n  # larger than any index
    component = torch.where(core, torch.arange(n, device=points.device), torch.full((n,), big, device=points.device))
    while True:  # propagate the smallest index through each connected set of core points
        spread = torch.where(linked, component[None, :], torch.full_like(linked, big, dtype=torch.long)).amin(dim=1)
        updated = torch.where(core, torch.minimum(component, spread), component)
        if torch.equal(updated, component):
            break
        component = updated
    firsts = torch.unique(component[core])  # ascending: the order scikit-learn numbers the clusters
    labels = torch.full((n,), -1, dtype=torch.long, device=points.device)
    if len(firsts) == 0:
        return labels
    number = torch.full((big + 1,), -1, dtype=torch.long, device=points.device)
    number[firsts] = torch.arange(len(firsts), device=points.device)
    labels[core] = number[component[core]]
    border = ~core & (near & core[None, :]).any(dim=1)
    if border.any():
        core_labels = torch.where(core, labels, torch.full_like(labels, big))
        reach = torch.where(near[border], core_labels[None, :], torch.full_like(near[border], big, dtype=torch.long))
        labels[border] = reach.amin(dim=1)
    return labels


def symmetric_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last two dims of (..., h, w) by `pad` mirroring the edge pixel too (d c b a | a b c d).

    SciPy's "reflect" mode (NumPy's "symmetric"); torch's own "reflect" omits the edge pixel.
    """
    if pad == 0:
        return x
    for dim in (-2, -1):
        n = x.shape[dim]
        index = torch.arange(-pad, n + pad, device=x.device)
        index = index.remainder(2 * n)
        index = torch.where(index >= n, 2 * n - 1 - index, index)
        x = x.index_select(dim, index)
    return x


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Median over a `size` x `size` window of each (n, h, w) map, borders mirrored as SciPy does.

    Equal to `scipy.ndimage.median_filter(map, size=size)` for odd `size` (the default mode).
    """
    if size % 2 != 1:
        raise ValueError(f"median filter size {size} must be odd")
    pad = size // 2
    n, h, w = x.shape
    windows = F.unfold(symmetric_pad(x, pad)[:, None], kernel_size=size)  # (n, size*size, h*w)
    return windows.median(dim=1).values.reshape(n, h, w)
