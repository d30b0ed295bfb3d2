"""Partial and modified ViT forward passes, built only from the adapter's block views.

Many baselines change one thing in the last block(s) of a CLIP ViT (MaskCLIP, SCLIP, ClearCLIP,
NACLIP, CLIP Surgery, GEM) or need the pass from some block on (Grad-CAM, Chefer, LeGrad,
Grad-ECLIP). These helpers do that from `ViTAdapter.blocks` (ln_1, qkv, out_proj, ls_1, ln_2,
mlp, ls_2) and `ViTAdapter.head`, never editing the wrapped model: no hooks, no swapped modules.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from eclip.methods.scoring import has_native_pooling, pooled_output
from eclip.models.vit import BlockView, ViTAdapter, merge_heads

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(q, k, v), each (B, heads, T, d) -> attention probabilities (B, heads, T, T)."""


def resolve_layer(index: int, num_layers: int) -> int:
    """A block index that may count from the end (-1 = last block) -> 0 <= index < num_layers."""
    resolved = index + num_layers if index < 0 else index
    if not 0 <= resolved < num_layers:
        raise ValueError(f"block index {index} is out of range for a ViT with {num_layers} blocks")
    return resolved


def tokens_before(model: ViTAdapter, images: torch.Tensor, block: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1 + h*w, C): the residual stream entering block `block`."""
    x, _ = model.forward_blocks(model.embed(images), 0, block)
    return x


def uses_class_token(model: ViTAdapter) -> bool:
    """True when the pooled embedding is the class token's (class-token ViT with its own pooling)."""
    return model.pool_type == "tok" and has_native_pooling(model)


def pooled_from_tokens(model: ViTAdapter, x: torch.Tensor) -> torch.Tensor:
    """(B, 1 + h*w, C) final residual stream -> (B, D) pooled embedding, as the model pools it.

    Class-token models project the class token; average-pooled ones the mean of the projected
    patch tokens (final norm per token, as `ViTAdapter.pooled_and_dense` does); a model with an
    ECLIP pooling head applies it to the projected patch tokens.
    """
    if uses_class_token(model):
        return model.head(x[:, :1])[:, 0]
    patches = model.head(x[:, 1:])
    return pooled_output(model, patches.mean(dim=1), patches)


def pooled_after(model: ViTAdapter, x: torch.Tensor, start: int) -> torch.Tensor:
    """(N, 1 + h*w, C) tokens entering block `start` -> (N, D) the pooled embedding at the end.

    With class-token pooling only the class token's row of the last block reaches the pooled
    output, so that block is evaluated for it alone (its query against every key and value; its
    FFN on one token): exact, and several times cheaper on the K-fold replicated batches of the
    gradient methods.
    """
    if not uses_class_token(model):
        y, _ = model.forward_blocks(x, start)
        return pooled_from_tokens(model, y)
    x, _ = model.forward_blocks(x, start, model.num_layers - 1)
    last = model.blocks[-1]
    q, k, v = last.qkv(last.ln_1(x))
    out = torch.nn.functional.scaled_dot_product_attention(q[:, :, :1], k, v)  # (N, heads, 1, d)
    y = x[:, :1] + last.ls_1(last.out_proj(merge_heads(out)))
    y = y + last.ls_2(last.mlp(last.ln_2(y)))
    return model.head(y)[:, 0]


def dense_from_tokens(model: ViTAdapter, x: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(B, 1 + h*w, C) tokens -> (B, h, w, D) patch features after the final norm and projection."""
    return model.tokens_to_grid(model.head(x[:, 1:]), images)


def self_attention(z: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d) -> (B, heads, T, T) softmax(scale * z z^T): the "self-self" attention family."""
    return torch.softmax((z @ z.transpose(-2, -1)) * scale, dim=-1)


def attend(block: BlockView, attn: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, T) probabilities, (B, heads, T, d) values -> (B, T, C) out_proj(attn @ v)."""
    return block.out_proj(merge_heads(attn.to(v.dtype) @ v))


def block_with_attention(
    block: BlockView,
    x: torch.Tensor,
    attention: AttentionFn,
    residual: bool = True,
    ffn: bool = True,
) -> torch.Tensor:
    """One block with its q-k attention replaced by `attention`; residual and FFN optional.

    (B, T, C) -> (B, T, C). With residual and FFN this is the block's own structure,
    x + ls_1(attn(ln_1(x))) then + ls_2(mlp(ln_2(.))); without them (ClearCLIP, NACLIP) only the
    attention output is kept.
    """
    q, k, v = block.qkv(block.ln_1(x))
    y = block.ls_1(attend(block, attention(q, k, v), v))
    if residual:
        y = x + y
    if ffn:
        y = y + block.ls_2(block.mlp(block.ln_2(y)))
    return y


def last_block_dense(
    model: ViTAdapter,
    images: torch.Tensor,
    attention: AttentionFn,
    residual: bool,
    ffn: bool,
) -> torch.Tensor:
    """(B, 3, H, W) -> (B, h, w, D): the model with its last block's attention replaced."""
    x = tokens_before(model, images, model.num_layers - 1)
    y = block_with_attention(model.blocks[-1], x, attention, residual=residual, ffn=ffn)
    return dense_from_tokens(model, y, images)


NewPathFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(q, k, v, x_normed) of one block -> (B, heads, T, d) head outputs of the parallel path."""


def dual_path_tokens(
    model: ViTAdapter, images: torch.Tensor, depth: int, new_path: NewPathFn, with_original: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The parallel path of CLIP Surgery (Li et al. 2023) and GEM (Bousselham et al. 2024).

    The original network runs unchanged. From the last `depth` blocks on, a second residual
    stream starts from the tokens entering the first of them and, at each of those blocks, adds
    the output (out_proj, layer scale) of a modified attention computed on the *original* path's
    normed tokens; it skips the FFNs. Returns the parallel stream (B, 1 + h*w, C), and with
    `with_original` also the original path's output (the model's own last tokens).
    """
    depth = max(1, min(depth, model.num_layers))
    start = model.num_layers - depth
    x = tokens_before(model, images, start)
    x_new = x
    for block in model.blocks[start:]:
        x_normed = block.ln_1(x)
        q, k, v = block.qkv(x_normed)
        x_new = x_new + block.ls_1(block.out_proj(merge_heads(new_path(q, k, v, x_normed))))
        if with_original or block is not model.blocks[-1]:  # else the original path only feeds the next block
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            x = x + block.ls_1(block.out_proj(merge_heads(out)))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return (x_new, x) if with_original else x_new
