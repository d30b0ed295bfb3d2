"""The text side and the native image forward shared by open_clip ViT and ResNet adapters."""
from __future__ import annotations

import torch


class OpenClipTextMixin:
    """open_clip models expose `encode_text`, `encode_image` and `logit_scale` the same way."""

    model: torch.nn.Module

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    @property
    def text_blocks(self) -> list[torch.nn.Module]:
        """The text transformer's blocks, first to last (methods may hook a block's input, never edit it)."""
        return list(self.model.transformer.resblocks)

    def _native_encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images.to(self.dtype))
