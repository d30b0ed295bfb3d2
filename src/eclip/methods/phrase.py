"""Phrase localisation without further training (Li, Shakhnarovich, Yeh 2022, arXiv 2204.03647).

The paper's own spatial features, as its code (`pals-ttic/adapting-CLIP`) computes them, with the
settings of its Flickr30k runs:
- ResNet: the network without strides (every stride replaced by dilation, `eclip.models.dilated_resnet`),
  so the last stage has a feature at every pixel; the attention pool replaced by its value and
  output projections at every pixel (no position embedding); the image padded by 64 px of zeros
  at 224 px (scaled with the input size here, our choice for other sizes) and the centre cropped
  back. The map of a text is exp(cos / T) per pixel, T = 0.03.
- ViT: one extra "class token" per region. SLIC superpixels (Achanta et al. 2012; scikit-image,
  compactness 50, sigma 0) at 100, 150, ..., 600 segments for a 224 px image (scaled with the
  image area here for other sizes, our choice) give regions; each region's token starts as the
  class token and, through every block, attends only to the patches inside its region (and to
  itself), the rest of the network running as usual. The patch embedding runs at half its stride
  (twice as many patches per side, position embedding upsampled bilinearly), the paper's
  `upsample=2`. A region's embedding is its token after the final norm and projection; a pixel's
  score is the mean of exp(cos / T) over the regions that contain it, T = 0.01.
  The authors' code stores the upsampled position embedding as float16 (`nn.Parameter(emb.half())`
  in `CLIPMaskedSpatialViT.upsample_pos_emb`), also when the model runs in float32; the numbers
  they published were made that way, so that is the default here (`float16_positions`).
  `float16_positions=False` keeps the model's own precision. The choice is visible: on the test's
  tiny ViT the two references are 5.8e-5 apart in the normalised map and eclip is within 3e-6 of
  the matching one; on ViT-B/16 with OpenAI's weights the gap was measured at 4.8e-4.
Input-resolution rule: the image at the model's own input size (the paper resizes to 224 px,
CLIP's), as `DenseCLIP.preprocess` does. The maps are at the input resolution. The box search the
paper adds for its benchmark is not part of the map. `pip install "eclip[phrase]"` for
scikit-image (ViT only). One forward for any number of texts.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from eclip.errors import MethodError
from eclip.methods.base import Method, register
from eclip.models.vit import merge_heads

#: SLIC segment counts of the paper's ViT-B/16 Flickr30k setting, for a 224 x 224 image.
SEGMENTS_224 = tuple(range(100, 601, 50))


def softmax_temperature_mean(scores: torch.Tensor, members: torch.Tensor, temperature: float) -> torch.Tensor:
    """(M, K) region scores, (M, P) boolean region membership of P pixels -> (K, P) mean of exp(score / T) over each pixel's regions.

    Each text's scores are shifted by their maximum first (the min-max normalised map is unchanged,
    and exp cannot overflow); a pixel in no region gets 0.
    """
    weights = torch.exp((scores - scores.max(dim=0, keepdim=True).values) / temperature)  # (M, K)
    members = members.to(weights.dtype)
    total = weights.T @ members  # (K, P)
    count = members.sum(dim=0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def superpixels(image: np.ndarray, counts: tuple[int, ...], compactness: float = 50.0) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1] -> (M, H, W) boolean regions: every SLIC segment of every count."""
    try:
        from skimage.segmentation import slic
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise MethodError("method 'phrase' needs scikit-image for its superpixels on ViTs; pip install 'eclip[phrase]'") from err
    masks = []
    for n in counts:
        segments = slic(image, n_segments=n, compactness=compactness, sigma=0, start_label=0)
        masks.extend(segments == label for label in np.unique(segments))
    return np.stack(masks)


def upsampled_positions(pos: torch.Tensor, grid: tuple[int, int], float16: bool = True) -> torch.Tensor:
    """(1 + s*s, C) position embedding -> (1 + h*w, C) for the (h, w) grid: the patches' part resized
    bilinearly (the authors' `upsample_pos_emb`), the class token's kept; with `float16`, rounded to
    float16 as the authors store it (`nn.Parameter(emb.half())`), then back to `pos`'s dtype."""
    c = pos.shape[-1]
    side = int(round((pos.shape[0] - 1) ** 0.5))
    patches = pos[1:].reshape(1, side, side, c).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=grid, mode="bilinear", align_corners=False).to(pos.dtype)
    out = torch.cat([pos[:1], patches.permute(0, 2, 3, 1).reshape(-1, c)])
    return out.half().to(pos.dtype) if float16 else out


def region_tokens(model, images: torch.Tensor, regions: torch.Tensor, upsample: int = 2,
                  float16_positions: bool = True) -> torch.Tensor:
    """(1, 3, H, W) image, (M, H, W) boolean regions -> (M, D) one class-token embedding per region.

    Region tokens attend to the patches whose centre-nearest pixel lies in the region and to
    themselves, with the paper's additive -100 on every other key (so other region tokens are left
    out exactly as far as float32 can tell). The position embedding as `upsampled_positions`.
    """
    conv = model.patch_conv
    patch = conv.kernel_size[0]
    x = F.conv2d(images.to(model.dtype), conv.weight, conv.bias, stride=patch // upsample, padding=(patch - 1) // 2)
    _, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = upsampled_positions(model.pos_embedding, (h, w), float16_positions)
    cls = model.class_embedding.to(x.dtype).view(1, 1, c)
    x = model.ln_pre(torch.cat([cls, x], dim=1) + pos.to(x.dtype))
    outside = F.interpolate((~regions)[:, None].float(), size=(h, w), mode="nearest")[:, 0].flatten(1)  # (M, hw)
    bias = (outside * -100.0).to(x.dtype)
    tokens = x[:, :1].expand(len(regions), 1, c)  # (M, 1, C)
    for index, block in enumerate(model.blocks):
        normed_x = block.ln_1(x)[:, 1:]  # (1, hw, C): the patches (the class token is not a key)
        normed_t = block.ln_1(tokens)
        _, k, v = block.qkv(normed_x)  # (1, heads, hw, d)
        q, k_t, v_t = block.qkv(normed_t)  # (M, heads, 1, d)
        scale = q.shape[-1] ** -0.5
        logits = torch.cat([(q * scale) @ k.transpose(-2, -1) + bias[:, None, None], (q * scale) @ k_t.transpose(-2, -1)], dim=-1)
        attn = torch.softmax(logits, dim=-1)  # (M, heads, 1, hw + 1)
        out = attn[..., :-1] @ v + attn[..., -1:] * v_t
        tokens = tokens + block.ls_1(block.out_proj(merge_heads(out)))
        tokens = tokens + block.ls_2(block.mlp(block.ln_2(tokens)))
        x, _ = model.forward_blocks(x, index, index + 1)
    return model.head(tokens)[:, 0]


@register
class PhraseLocalization(Method):
    """Li et al. 2022's spatial features: region tokens over SLIC superpixels (ViT), a stride-free value path (ResNet)."""

    name = "phrase"
    paper = "Phrase localisation without training: Li, Shakhnarovich, Yeh 2022, arXiv 2204.03647"

    temperature: float | None = None  # T of exp(cos / T) (None: 0.01 ViT, 0.03 ResNet)
    segments: tuple[int, ...] | None = None  # SLIC counts (None: the paper's, scaled to the image area)
    upsample: int = 2  # ViT patch-stride divisor
    pad: int | None = None  # ResNet zero padding in pixels (None: 64 at 224 px, scaled)
    float16_positions: bool = True  # ViT: the upsampled position embedding rounded to float16, as the authors' code

    def segment_counts(self, size: tuple[int, int]) -> tuple[int, ...]:
        if self.segments is not None:
            return tuple(self.segments)
        scale = size[0] * size[1] / 224**2
        return tuple(max(2, round(n * scale)) for n in SEGMENTS_224)

    def vit_maps(self, model, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        temperature = 0.01 if self.temperature is None else self.temperature
        mean = torch.tensor(model.mean, device=images.device).view(3, 1, 1)
        std = torch.tensor(model.std, device=images.device).view(3, 1, 1)
        out = []
        for image in images:
            rgb = (image.float() * std + mean).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            rgb = np.round(rgb * 255.0) / 255.0  # the 8-bit image the paper segments
            regions = torch.from_numpy(superpixels(rgb, self.segment_counts(rgb.shape[:2]))).to(images.device)
            embeddings = F.normalize(region_tokens(model, image[None], regions, self.upsample, self.float16_positions).float(), dim=-1)
            scores = embeddings @ text_features.to(embeddings).T  # (M, K)
            out.append(softmax_temperature_mean(scores, regions.flatten(1), temperature).view(-1, *rgb.shape[:2]))
        return torch.stack(out)

    def resnet_maps(self, model, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        temperature = 0.03 if self.temperature is None else self.temperature
        h, w = images.shape[-2:]
        pad = round(64 * h / 224) if self.pad is None else self.pad
        feats = model.dilated_features(F.pad(images, (pad, pad, pad, pad)))
        top = (feats.shape[-2] - h) // 2
        left = (feats.shape[-1] - w) // 2
        if top < 0 or left < 0:
            lost = h + 2 * pad - feats.shape[-2]
            raise MethodError(f"method 'phrase' needs at least {(lost + 1) // 2} px of padding on this ResNet; got pad={pad}")
        feats = feats[..., top : top + h, left : left + w]
        dense = F.normalize(model.value_path(feats).float(), dim=-1)  # (B, H, W, D)
        cosine = torch.einsum("bhwd,kd->bkhw", dense, text_features.to(dense))
        return torch.exp((cosine - cosine.amax(dim=(2, 3), keepdim=True)) / temperature)

    def raw_maps(self, model, images, text_features):
        if model.arch == "resnet":
            return self.resnet_maps(model, images, text_features)
        return self.vit_maps(model, images, text_features)
