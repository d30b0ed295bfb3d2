"""A CLIP ModifiedResNet run without strides: full-resolution features from the same weights.

Li, Shakhnarovich, Yeh 2022 ("Adapting CLIP for phrase localization without further training",
arXiv 2204.03647) read a ResNet CLIP at every input pixel by replacing each stride by dilation
(the "a trous" algorithm): the stem's first convolution runs with stride 1, every later 3 x 3
convolution is dilated by the stride it would have accumulated (stem 2, layer1 4, layer2 4 then
8, layer3 8 then 16, layer4 16 then 32), and each 2 x 2 average pool becomes a 2 x 2 average
filter with the same dilation and no padding (so the output is `shrink(...)` pixels smaller than
the input; callers pad the image first). The weights are the wrapped model's own; it is not edited.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def average_filter(x: torch.Tensor, size: int, dilation: int) -> torch.Tensor:
    """A size x size mean over dilated taps, stride 1, no padding: the stride-free 2 x 2 average pool."""
    if size <= 1:
        return x
    weight = torch.full((x.shape[1], 1, size, size), 1.0 / size**2, device=x.device, dtype=x.dtype)
    return F.conv2d(x, weight, groups=x.shape[1], dilation=dilation)


def conv(layer: torch.nn.Conv2d, x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """`layer`'s weights with stride 1, dilation `dilation` and the padding that keeps the size (3 x 3) or none (1 x 1)."""
    k = layer.kernel_size[0]
    return F.conv2d(x, layer.weight, layer.bias, stride=1, padding=dilation * (k // 2), dilation=dilation)


def bottleneck(block, x: torch.Tensor, dilation: int) -> torch.Tensor:
    """An open_clip `Bottleneck` at dilation `dilation` (its 2 x 2 pool, if any, as a dilated filter)."""
    stride = block.stride
    out = block.act1(block.bn1(conv(block.conv1, x)))
    out = block.act2(block.bn2(conv(block.conv2, out, dilation)))
    out = average_filter(out, stride, dilation)
    out = block.bn3(conv(block.conv3, out))
    identity = x
    if block.downsample is not None:
        _, projection, norm = block.downsample  # (average pool, 1 x 1 convolution, batch norm)
        identity = norm(conv(projection, average_filter(x, stride, dilation)))
    return block.act3(out + identity)


def dilated_features(visual, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, C, H - s, W - s): the last stage's features at (nearly) every pixel, s = `shrink(visual)`."""
    x = images.to(visual.conv1.weight.dtype)
    x = visual.act1(visual.bn1(conv(visual.conv1, x)))
    x = visual.act2(visual.bn2(conv(visual.conv2, x, 2)))
    x = visual.act3(visual.bn3(conv(visual.conv3, x, 2)))
    x = average_filter(x, 2, 2)
    dilation = 4
    for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        for block in stage:
            x = bottleneck(block, x, dilation)
            if block.stride > 1:
                dilation *= block.stride
    return x


def shrink(visual) -> int:
    """Pixels the unpadded average filters take off each side pair: 2 (stem) + 4 + 8 + 16 (the strided stages)."""
    total, dilation = 2, 4
    for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        for block in stage:
            if block.stride > 1:
                total += dilation * (block.stride - 1)
                dilation *= block.stride
    return total
