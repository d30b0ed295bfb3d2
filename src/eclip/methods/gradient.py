"""The one pipeline of the gradient methods (Grad-CAM, Chefer et al., Grad-ECLIP, LeGrad).

Every gradient method needs, for B images and K texts, the gradient of each (image, text) pair's
target score (`scoring.TARGETS`: cosine, logit or probability) with respect to some tensors of
the forward pass, then turns those gradients into a map. Looping over the texts would cost K
forwards and K backwards. Instead, per chunk of texts:
- replicated (default): the differentiable part of the forward runs once on the K-fold
  replicated batch ("text-major": replica k * B + b is image b paired with text k) and ONE
  backward of the sum of each replica's own score gives every pair's gradient, since replicas do
  not interact;
- vectorised (`vmap=True`): that part runs once on the B images, and one vectorised backward
  (`is_grads_batched`) pushes a one-hot per text, skipping the K - 1 redundant forwards.
Both give the same maps. What runs before the differentiable part runs once, without gradient.

A method overrides three small functions, in the shape of pytorch-grad-cam's `BaseCAM`:
`prepare` (the part without gradient), `forward` (the differentiable part on a given number of
copies of the batch, returning the tensors to differentiate and the pooled embeddings whose
scores are explained) and `relevance` (gradients -> map).
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from eclip.methods.base import Method
from eclip.methods.scoring import check_target, replicate, split_replicas, target_scores, text_chunks


@dataclass
class Pass:
    """The differentiable part of one forward, on N = copies x B rows (text-major).

    wrt: tensors (N, ...) whose gradients make the map.
    pooled: pooled embeddings (N, D); their target scores are summed (LeGrad scores every layer).
    saved: whatever else `relevance` needs, per image (B rows).
    """

    wrt: list[torch.Tensor]
    pooled: list[torch.Tensor]
    saved: Any = None


class GradientMethod(Method):
    """A method whose map is made from gradients of a target score, K texts at a time.

    Options (a subclass declares only the options it adds and the defaults it changes):
        target: the explained score of each (image, text) pair, a name of `scoring.TARGETS`.
        text_batch: texts per backward (None: all at once); bounds the replicated memory.
        vmap: vectorised backward instead of the replicated batch (same maps).
    """

    needs_grad = True

    target: str = "cosine"
    text_batch: int | None = None
    vmap: bool = False

    def __post_init__(self) -> None:
        check_target(self.target)

    @abstractmethod
    def prepare(self, model, images: torch.Tensor) -> Any:
        """The part of the forward before anything differentiated, run once per batch without gradient."""

    @abstractmethod
    def forward(self, model, prepared: Any, copies: int) -> Pass:
        """The differentiable part on `copies` text-major copies of the batch."""

    @abstractmethod
    def relevance(self, model, prepared: Any, values: list[torch.Tensor], grads: list[torch.Tensor], saved: Any) -> torch.Tensor:
        """(N, ...) detached `wrt` values and their gradients (N = texts x B, text-major) -> (N, h*w) maps."""

    def raw_maps(self, model, images, text_features):
        b, k = images.shape[0], len(text_features)
        prepared = self.prepare(model, images)
        maps = []
        for chunk in text_chunks(k, self.text_batch):
            n = chunk.stop - chunk.start
            values, grads, saved = self._gradients(model, prepared, text_features, chunk, b)
            maps.append(split_replicas(self.relevance(model, prepared, values, grads, saved), n))
        h, w = model.grid_size(*images.shape[-2:])
        return torch.cat(maps, dim=1).reshape(b, k, h, w)

    def _gradients(self, model, prepared, text_features, chunk: slice, b: int):
        """Every pair's gradients for the texts of `chunk`: (values, grads, saved), values and grads text-major."""
        n = chunk.stop - chunk.start
        if self.vmap:
            p = self.forward(model, prepared, 1)
            scores = sum(target_scores(self.target, model, pooled, text_features)[:, chunk] for pooled in p.pooled)  # (B, n)
            one_hot = torch.eye(n, device=scores.device, dtype=scores.dtype)[:, None].expand(n, *scores.shape)
            grads = torch.autograd.grad(scores, p.wrt, grad_outputs=one_hot, is_grads_batched=True)
            return [replicate(v.detach(), n) for v in p.wrt], [g.flatten(0, 1) for g in grads], p.saved
        p = self.forward(model, prepared, n)
        own = torch.arange(chunk.start, chunk.stop, device=p.pooled[0].device).repeat_interleave(b)  # replica -> its text
        score = sum(target_scores(self.target, model, pooled, text_features).gather(1, own[:, None]).sum() for pooled in p.pooled)
        grads = torch.autograd.grad(score, p.wrt)
        return [v.detach() for v in p.wrt], list(grads), p.saved
