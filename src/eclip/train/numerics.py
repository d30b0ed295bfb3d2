"""How a training step computes, apart from what it computes: precision, the local loss, gradient checkpointing.

Three choices of open_clip's trainer that change speed and memory, not the model being trained:
- `precision` (fp32, bf16, fp16; `eclip.precision`): the image and text towers run under
  autocast and hand float32 features to the loss; fp16 scales the loss (`GradScaler`) so small
  gradients survive, unscaled before clipping;
- `local_loss` (`eclip.train.losses.local_clip_loss`): under DDP each rank scores its own pairs
  against the gathered ones, the same gradient for an (n, N) instead of an (N, N) logit matrix;
- `grad_checkpointing` (`eclip.train.grad_checkpointing`): blocks recompute their activations in
  the backward, the same gradient for less memory.
The loop asks this object to embed, encode, score, backward and step; it never branches on them.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from eclip.precision import grad_scaler, with_autocast
from eclip.train.grad_checkpointing import enable_grad_checkpointing
from eclip.train.losses import clip_loss, local_clip_loss


class StepNumerics:
    """The step's towers, loss and optimiser step under `precision`, `local_loss` and `grad_checkpointing`.

    Args:
        image_embedder: (model, images) -> embedding, as the loop's; its `adapter` (if any) is
            checkpointed too.
        rows: this rank's pairs among the gathered ones (the local loss's rows).
    """

    def __init__(self, model: torch.nn.Module, image_embedder: Callable, device: torch.device, rows: slice, *,
                 precision: str = "fp32", local_loss: bool = False, grad_checkpointing: bool = False) -> None:
        if grad_checkpointing:
            enable_grad_checkpointing(model, getattr(image_embedder, "adapter", None))
        self.embed = with_autocast(image_embedder, precision, device)
        self.encode_text = with_autocast(model.encode_text, precision, device)
        self.loss = functools.partial(local_clip_loss, rows=rows) if local_loss else clip_loss
        self.scaler = grad_scaler(precision, device)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], grad_clip: float) -> None:
        """Unscale (fp16), clip the gradient norm to `grad_clip` (0: no clipping), step, update the scale."""
        self.scaler.unscale_(optimizer)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state:
            self.scaler.load_state_dict(state)
