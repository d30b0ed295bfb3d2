"""Gradient checkpointing: recompute each transformer block's activations in the backward instead of keeping them.

Training memory is dominated by the activations kept for the backward, which grow with batch x
tokens x depth; checkpointing keeps only each block's input and recomputes the block in the
backward (Chen et al. 2016, arXiv 1604.06174), about a third more compute for a fraction of the
memory, so larger batches fit (open_clip's `--grad-checkpointing`). The numbers do not change:
the recomputed forward is the same forward.

Both paths a training step takes are covered: open_clip's own transformer forward (the text
tower, and the image tower under its native head) through `set_grad_checkpointing`, and eclip's
ViT pass, which the pooling heads and their masks read (`ViTAdapter.forward_blocks`). open_clip's
ModifiedResNet has no checkpointing, so a ResNet's image tower keeps its activations.
"""
from __future__ import annotations

import torch


def enable_grad_checkpointing(model: torch.nn.Module, adapter: object | None = None) -> None:
    """Checkpoint the blocks of `model` (an open_clip CLIP) and of the eclip `adapter` around it, if given."""
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    if adapter is not None and hasattr(adapter, "grad_checkpointing"):
        adapter.grad_checkpointing = True
