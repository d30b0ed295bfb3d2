"""The seeded random CLIP ViT-B/16 of the segmentation fidelity check, and the fake VOC folder it segments.

The vision tower is ViT-B/16 as OpenAI's (224 px, patch 16, width 768, 12 blocks of 12 heads,
QuickGELU), so the authors' code runs on it unchanged (CLIPtrase's encoder even hard-codes blocks
11 and 12); the text tower is one small block, since only its outputs (the prompt ensembles) matter
and 80 templates x ~50 queries through a full text tower would take minutes on a CPU. The weights
are open_clip's random initialisation from a seed, then moved off their initial values as the
golden models' are (`golden_models.perturb`) and rounded to float16 (OpenAI's `build_model`,
which SCLIP, NACLIP and CLIPtrase load through, converts them; ClearCLIP asks for float16); they are not committed (350 MB), so the fixtures
record a fingerprint of them and the test stops with a clear message if this torch or open_clip
initialises differently.
"""
from __future__ import annotations

import io
from pathlib import Path

import golden_models as golden
import numpy as np
import torch

CONFIG = {"embed_dim": 512, "quick_gelu": True, "text_cfg": golden.TEXT_CFG,
          "vision_cfg": {"image_size": 224, "patch_size": 16, "width": 768, "layers": 12, "head_width": 64}}
SEED = 21


def build() -> torch.nn.Module:
    """The seeded model as an open_clip CLIP (float32, eval)."""
    from open_clip.model import CLIP

    torch.manual_seed(SEED)
    model = golden.perturb(CLIP(**CONFIG).eval(), SEED)
    with torch.no_grad():  # float16 values, as the authors' `build_model` (`convert_weights`) leaves them
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


def openai_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Its weights in OpenAI CLIP's names (what the authors' `build_model(state_dict)` reads)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k != "attn_mask"}


def fingerprint(model: torch.nn.Module) -> np.ndarray:
    """A few float64 sums of the weights: equal iff the same initialisation produced them (to rounding)."""
    state = model.state_dict()
    names = ["visual.conv1.weight", "visual.positional_embedding", "visual.transformer.resblocks.11.attn.in_proj_weight",
             "visual.proj", "text_projection"]
    return np.array([float(state[n].double().abs().sum()) for n in names])


def adapter(model: torch.nn.Module):
    """eclip's adapter around it (OpenAI's mean and std, 77-token context)."""
    from eclip.models.adapter import OPENAI_MEAN, OPENAI_STD
    from eclip.models.loading import simple_tokenizer, wrap

    tokenizer, count = simple_tokenizer(golden.TEXT_CFG["context_length"])
    return wrap(model, tokenizer, name="segmentation-vit-b16", image_size=(224, 224), mean=OPENAI_MEAN, std=OPENAI_STD,
                context_length=golden.TEXT_CFG["context_length"], count_tokens=count)


# ------------------------------------------------------------------------------------------ the fake VOC
#: (image id, height, width). Each method's protocol leaves one of them at its size, so that its
#: inputs are the reference's to the bit: 224 x 224 (CLIPtrase's 224 px), 336 x 448 (the short side
#: 336 of SCLIP and NACLIP), 448 x 600 (ClearCLIP's 448; two overlapping 448 px windows). The
#: others are resized, where OpenCV (IPP) and eclip may differ by one grey level on ~0.1% of pixels.
IMAGES = (("2007_000001", 224, 224), ("2007_000002", 336, 448), ("2007_000003", 448, 600))


def make_images(seed: int = 7) -> dict[str, tuple[bytes, bytes]]:
    """image id -> (JPEG bytes, label PNG bytes): smooth colour blobs and rectangles of VOC classes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = {}
    for image_id, h, w in IMAGES:
        coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 5, 5)).astype(np.float32))
        smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
        pixels = (smooth + torch.from_numpy(rng.normal(0, 12, (3, h, w)).astype(np.float32))).clamp(0, 255).round()
        labels = np.zeros((h, w), np.uint8)
        for _ in range(3):
            y, x = int(rng.integers(0, h - 60)), int(rng.integers(0, w - 60))
            labels[y:y + int(rng.integers(30, 90)), x:x + int(rng.integers(30, 90))] = int(rng.integers(1, 21))
        edges = np.zeros_like(labels, bool)
        edges[1:] |= labels[1:] != labels[:-1]
        edges[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        labels[edges] = 255  # VOC's void borders
        jpeg, png = io.BytesIO(), io.BytesIO()
        Image.fromarray(pixels.permute(1, 2, 0).numpy().astype(np.uint8)).save(jpeg, format="JPEG", quality=95)
        Image.fromarray(labels, mode="L").save(png, format="PNG")
        out[image_id] = (jpeg.getvalue(), png.getvalue())
    return out


def write_voc(root: Path, files: dict[str, tuple[bytes, bytes]]) -> Path:
    """A VOCdevkit/VOC2012 folder of `files` (val split in id order) under `root`; returns the VOC2012 folder."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for image_id, (jpeg, png) in files.items():
        (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg)
        (voc / "SegmentationClass" / f"{image_id}.png").write_bytes(png)
    (voc / "ImageSets/Segmentation/val.txt").write_text("".join(f"{i}\n" for i in sorted(files)))
    return voc
