"""The ViT side of the DenseCLIP protocol, shared by open_clip and Hugging Face ViTs.

Both libraries build the same network (patch conv, class token, position embedding, pre-norm
blocks, final norm, projection) under different names. A `BlockView` names the parts of one
block; `ViTAdapter` runs the network from those parts, block by block, so that methods can read
or replace a block's attention (MaskCLIP, CLIP Surgery, SCLIP, GEM, ...) and get q, k, v and the
attention probabilities, all without touching the wrapped model.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from eclip.models.adapter import DenseCLIP


class BlockView:
    """The parts of one pre-norm transformer block: x + ls_1(attn(ln_1(x))), then + ls_2(mlp(ln_2(x)))."""

    num_heads: int

    @abstractmethod
    def ln_1(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def ln_2(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def mlp(self, x: torch.Tensor) -> torch.Tensor: ...

    def ls_1(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def ls_2(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @abstractmethod
    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, C) normed tokens -> q, k, v, each (B, heads, T, C // heads), q not yet scaled."""

    @abstractmethod
    def out_proj(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) concatenated heads -> (B, T, C) attention output."""

    def values_out(self, x_normed: torch.Tensor) -> torch.Tensor:
        """(B, T, C) normed tokens -> out_proj(v): the value path alone (MaskCLIP, Zhou et al. 2022)."""
        _, _, v = self.qkv(x_normed)
        return self.out_proj(merge_heads(v))


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d) -> (B, T, heads * d)."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, heads, T, C // heads): the inverse of `merge_heads`."""
    b, t, c = x.shape
    if c % heads:
        raise ValueError(f"{c} channels do not split into {heads} heads")
    return x.reshape(b, t, heads, c // heads).transpose(1, 2)


def attention_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention probabilities: (B, h, T, d) x2 -> (B, h, T, T)."""
    scale = q.shape[-1] ** -0.5
    return torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)


@dataclass
class BlockRecord:
    """What one block saw and did: its input, q, k, v (B, heads, T, d) and attention (B, heads, T, T)."""

    x_in: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    attn: torch.Tensor


def run_block(block: BlockView, x: torch.Tensor, record: bool = False) -> tuple[torch.Tensor, BlockRecord | None]:
    """The standard forward of one block from its parts, optionally recording its attention."""
    q, k, v = block.qkv(block.ln_1(x))
    if record:
        attn = attention_probs(q, k)
        out = attn @ v
    else:
        attn = None
        out = F.scaled_dot_product_attention(q, k, v)
    y = x + block.ls_1(block.out_proj(merge_heads(out)))
    y = y + block.ls_2(block.mlp(block.ln_2(y)))
    return y, (BlockRecord(x, q, k, v, attn) if record else None)


def interpolate_pos_embed(pos: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int], mode: str = "size") -> torch.Tensor:
    """(1 + h0*w0, C) position embedding -> (1 + h*w, C) for another grid, bicubic (never in place).

    mode "size" maps the grids onto each other exactly; "dino" passes the scale factors
    (h + 0.1) / h0, (w + 0.1) / w0 instead, as DINO's `interpolate_pos_encoding` (Caron et al. 2021,
    arXiv 2104.14294) and the CLIP forks of SCLIP, NACLIP and ClearCLIP do (their `model.py` /
    `transformer.py`): the same output grid, slightly different sampling positions.
    """
    if tuple(grid) == tuple(new_grid):
        return pos
    cls, patches = pos[:1], pos[1:]
    c = patches.shape[-1]
    patches = patches.reshape(1, grid[0], grid[1], c).permute(0, 3, 1, 2).float()
    if mode == "dino":
        scale = ((new_grid[0] + 0.1) / grid[0], (new_grid[1] + 0.1) / grid[1])
        patches = F.interpolate(patches, scale_factor=scale, mode="bicubic", align_corners=False).to(pos.dtype)
    else:
        patches = F.interpolate(patches, size=new_grid, mode="bicubic", align_corners=False).to(pos.dtype)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(-1, c)], dim=0)


class ViTAdapter(DenseCLIP):
    """A CLIP ViT as a dense model. Subclasses name the parts of their library's network."""

    arch = "vit"
    blocks: list[BlockView]

    # ------------------------------------------------------- parts to provide
    @abstractmethod
    def _patch_embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, h, w) patch features."""

    @property
    def patch_conv(self) -> torch.nn.Conv2d:
        """The patch-embedding convolution, for methods that run it with another stride (phrase localisation)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its patch convolution")

    @property
    @abstractmethod
    def class_embedding(self) -> torch.Tensor:
        """(C,) the learned class token."""

    @property
    @abstractmethod
    def pos_embedding(self) -> torch.Tensor:
        """(1 + h0*w0, C) the learned position embedding at the training grid (class token first); read, never edited."""

    @abstractmethod
    def ln_pre(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C) the norm applied to the embedded tokens before the first block."""

    @abstractmethod
    def _ln_post(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., D) the visual projection into the joint space."""

    pool_type: str = "tok"  # "tok": the class token is the pooled output; "avg": mean of patch tokens
    pos_interpolation: str = "size"  # how `embed` resizes the position embedding: "size" or "dino" (interpolate_pos_embed)
    grad_checkpointing: bool = False  # recompute each block's activations in the backward (training memory)

    # ------------------------------------------------------------- the pass
    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + h*w, C) tokens entering the first block (class token first)."""
        x = self._patch_embed(images.to(self.dtype))
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).view(1, 1, c).expand(b, 1, c)
        x = torch.cat([cls, x], dim=1)
        pos = self.pos_embedding
        side = int(round((pos.shape[0] - 1) ** 0.5))
        x = x + interpolate_pos_embed(pos, (side, side), (h, w), self.pos_interpolation).to(x.dtype)
        return self.ln_pre(x)

    def forward_blocks(
        self,
        x: torch.Tensor,
        start: int = 0,
        end: int | None = None,
        record: bool = False,
    ) -> tuple[torch.Tensor, list[BlockRecord]]:
        """Run blocks [start, end) on tokens x (B, T, C); return the output and per-block records."""
        records: list[BlockRecord] = []
        recompute = self.grad_checkpointing and not record and torch.is_grad_enabled()  # eclip.train.grad_checkpointing
        for block in self.blocks[start:end]:
            x, rec = checkpoint(run_block, block, x, use_reentrant=False) if recompute else run_block(block, x, record=record)
            if rec is not None:
                records.append(rec)
        return x, records

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) tokens -> (B, T, D): final norm then projection, applied to every token."""
        return self._project(self._ln_post(x))

    @property
    def final_norm(self) -> torch.nn.LayerNorm:
        """The LayerNorm before the projection, for methods that linearise it (text-based decomposition)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its final LayerNorm")

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., D): the visual projection alone (linear, no bias)."""
        return self._project(x)

    def tokens_to_grid(self, tokens: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """(B, h*w, ...) patch tokens (class token removed) -> (B, h, w, ...)."""
        h, w = self.grid_size(images.shape[-2], images.shape[-1])
        return tokens.reshape(tokens.shape[0], h, w, *tokens.shape[2:])

    def pooled_and_dense(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = self.forward_blocks(self.embed(images))
        out = self.head(x)
        dense = self.tokens_to_grid(out[:, 1:], images)
        pooled = out[:, 0] if self.pool_type == "tok" else out[:, 1:].mean(dim=1)
        return pooled, dense

    def final_tokens(self, images: torch.Tensor, record: bool = False) -> tuple[torch.Tensor, list[BlockRecord]]:
        """The residual stream after the last block (B, 1 + h*w, C), with optional per-block records."""
        return self.forward_blocks(self.embed(images), record=record)

