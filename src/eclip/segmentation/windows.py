"""Resizing and sliding-window inference: the logits of every query at every pixel of an image.

mmsegmentation's test pipeline resizes the image (`Resize(scale=(2048, S), keep_ratio=True)`:
mmcv's `rescale_size` and `imresize`, cv2's fixed-point bilinear on 8-bit pixels), and the segmentors of SCLIP,
NACLIP and ClearCLIP run `forward_slide`: windows of `crop` pixels every `stride` pixels, the last
window of a row or column shifted back to end at the border, each window's cosine maps upsampled
(bilinear) to the window and added, then divided by how many windows cover each pixel. Without
windows (`crop` None, NACLIP's VOC) `forward_feature` runs the whole image and upsamples its maps
to it. Both are written here from those functions (`clip_segmentor.py`, `naclip.py`,
`clearclip_segmentor.py`, which share them), for any eclip method: its raw maps are the cosines.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

RawMaps = Callable[[torch.Tensor], torch.Tensor]
"""(N, 3, h, w) normalised windows -> (N, Q, h', w') raw maps on the method's grid."""


def rescale_size(width: int, height: int, short_side: int, max_long_side: int) -> tuple[int, int]:
    """(new width, new height) of mmcv's `rescale_size` for `Resize(scale=(max_long_side, short_side), keep_ratio=True)`.

    The scale is the largest that keeps the long side <= max_long_side and the short side <= short_side
    (so a small image is enlarged); each side is rounded half up, as mmcv does (`int(x * scale + 0.5)`).
    """
    scale = min(max_long_side / max(width, height), short_side / min(width, height))
    return int(width * scale + 0.5), int(height * scale + 0.5)


def _linear_taps(src: int, dst: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """cv2's INTER_LINEAR taps from `src` to `dst` samples: first and second source index, 11-bit weights of each.

    As `resizeGeneric` sets them (`modules/imgproc/src/resize.cpp`): the source position
    (i + 0.5) src / dst - 0.5 in float32, clamped to the border with a zero weight outside, each
    weight rounded to the nearest of 2048ths on its own.
    """
    pos = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    first = np.floor(pos).astype(np.int64)
    frac = (pos - first.astype(np.float32)).astype(np.float32)
    low, high = first < 0, first >= src - 1
    frac[low | high] = 0
    first[low], first[high] = 0, src - 1
    w0 = np.rint((np.float32(1) - frac) * np.float32(2048)).astype(np.int64)
    w1 = np.rint(frac * np.float32(2048)).astype(np.int64)
    return (torch.from_numpy(first), torch.from_numpy(np.minimum(first + 1, src - 1)), torch.from_numpy(w0), torch.from_numpy(w1))


def resize_bilinear_u8(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, height, width) uint8 with cv2's fixed-point INTER_LINEAR (what mmcv's `imresize` calls).

    Rows then columns in integers, as OpenCV's `HResizeLinear` and `VResizeLinear<uchar, int, short>`
    do: horizontal sums of 11-bit weights, then ((b0 (r0 >> 4)) >> 16) + ((b1 (r1 >> 4)) >> 16) + 2) >> 2.
    OpenCV builds with IPP can still differ by one grey level on about 0.1% of the pixels of an
    enlarged image; exact bilinear interpolation rounded to 8 bits differs on about 13%.
    """
    x = pixels.long()
    c0, c1, a0, a1 = _linear_taps(pixels.shape[2], width)
    rows = x[:, :, c0] * a0 + x[:, :, c1] * a1
    r0, r1, b0, b1 = _linear_taps(pixels.shape[1], height)
    out = ((b0.view(-1, 1) * (rows[:, r0] >> 4)) >> 16) + ((b1.view(-1, 1) * (rows[:, r1] >> 4)) >> 16)
    return ((out + 2) >> 2).clamp_(0, 255).to(torch.uint8)


def resize_pixels(image: Image.Image, short_side: int | None, max_long_side: int = 2048, resample: str = "bilinear") -> torch.Tensor:
    """RGB image -> (3, h, w) uint8 tensor with its short side resized.

    "bilinear" is mmcv's `imresize` (cv2 INTER_LINEAR on 8-bit pixels, `resize_bilinear_u8`) to
    mmcv's `rescale_size`; "bicubic" is torchvision's `Resize(short_side)` on a PIL image (PIL
    bicubic with antialiasing, the long side truncated), as CLIPtrase's transform does. None keeps
    the image.
    """
    image = image if image.mode == "RGB" else image.convert("RGB")
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
    w, h = image.size
    if short_side is None:
        return pixels
    if resample == "bicubic":
        if min(w, h) == short_side:
            return pixels
        size = (short_side, int(short_side * w / h)) if h <= w else (int(short_side * h / w), short_side)
        return torch.from_numpy(np.array(image.resize((size[1], size[0]), Image.BICUBIC))).permute(2, 0, 1).contiguous()
    new_w, new_h = rescale_size(w, h, short_side, max_long_side)
    return pixels if (new_w, new_h) == (w, h) else resize_bilinear_u8(pixels, new_h, new_w)


def normalise(pixels: torch.Tensor, mean, std, device=None, dtype=torch.float32) -> torch.Tensor:
    """(3, h, w) uint8 -> (1, 3, h, w) (x / 255 - mean) / std, the model's own normalisation."""
    x = pixels.to(device=device, dtype=torch.float32)[None] / 255.0
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).to(dtype)


def window_boxes(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(y1, y2, x1, x2) of every window of `forward_slide`, row by row; windows never leave the image."""
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    boxes = []
    for i in range(rows):
        for j in range(cols):
            y2, x2 = min(i * stride + crop, height), min(j * stride + crop, width)
            boxes.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return boxes


def patch_padding(height: int, width: int, patch: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding to the next multiple of `patch`, split evenly (ClearCLIP's `compute_padsize`)."""
    lr = (patch - width % patch) % patch
    tb = (patch - height % patch) % patch
    return lr // 2, lr - lr // 2, tb // 2, tb - tb // 2


def window_logits(raw_maps: RawMaps, window: torch.Tensor, patch: int | None = None) -> torch.Tensor:
    """(N, 3, h, w) windows -> (N, Q, h, w) their maps upsampled to the window (optionally padded to `patch` first)."""
    h, w = window.shape[-2:]
    pad = patch_padding(h, w, patch) if patch else (0, 0, 0, 0)
    if any(pad):
        window = F.pad(window, pad)
    maps = F.interpolate(raw_maps(window).float(), size=window.shape[-2:], mode="bilinear", align_corners=False)
    if any(pad):
        maps = maps[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]
    return maps


def slide_logits(raw_maps: RawMaps, image: torch.Tensor, crop: int | None, stride: int, patch: int | None = None,
                 batch: int = 8) -> torch.Tensor:
    """(1, 3, H, W) normalised image -> (Q, H, W) window-averaged logits (`forward_slide`); crop None: one forward.

    Windows of the same size go through the method `batch` at a time (the logits are per window,
    so batching changes nothing but float rounding).
    """
    if crop is None:
        return window_logits(raw_maps, image, patch)[0]
    height, width = image.shape[-2:]
    boxes = window_boxes(height, width, crop, stride)
    total = count = None
    for start in range(0, len(boxes), batch):
        chunk = boxes[start:start + batch]
        shapes = {(y2 - y1, x2 - x1) for y1, y2, x1, x2 in chunk}
        groups = [chunk] if len(shapes) == 1 else [[b] for b in chunk]
        for group in groups:
            windows = torch.cat([image[..., y1:y2, x1:x2] for y1, y2, x1, x2 in group])
            logits = window_logits(raw_maps, windows, patch)
            if total is None:
                total = logits.new_zeros((logits.shape[1], height, width))
                count = logits.new_zeros((1, height, width))
            for (y1, y2, x1, x2), maps in zip(group, logits):
                total[:, y1:y2, x1:x2] += maps
                count[:, y1:y2, x1:x2] += 1
    return total / count
