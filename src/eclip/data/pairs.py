"""Image-text pairs for contrastive training, addressed by batch index.

A source returns batch `i` the same way every time, so a resumed run sees exactly the batches it
would have seen, and `torchrun` ranks can take disjoint slices of one global batch.
"""
from __future__ import annotations

from typing import Protocol

import torch


class PairSource(Protocol):
    """Anything that yields (images (N, 3, H, W) float in [0, 1], N captions) for a batch index."""

    def batch(self, index: int, size: int) -> tuple[torch.Tensor, list[str]]: ...


class SyntheticPairs:
    """Synthetic scenes and their captions, an endless seeded stream (see `eclip.data.synthetic`)."""

    def __init__(self, seed: int = 0, **scene_options) -> None:
        from eclip.data.synthetic import SceneConfig

        self.seed = seed
        self.config = SceneConfig(**scene_options)

    def batch(self, index: int, size: int) -> tuple[torch.Tensor, list[str]]:
        from eclip.data.synthetic import batch_of_scenes

        images, captions = batch_of_scenes(self.seed, index * size, size, self.config)
        return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0), list(captions)
