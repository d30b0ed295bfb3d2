"""Tiny, seeded CLIPs built in memory, shared by the tests: every test runs offline in seconds."""
from __future__ import annotations

from pathlib import Path

import torch
from golden.golden_models import calibrate_batch_norm

from eclip.models.loading import simple_tokenizer, wrap

TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
VIT_CFG = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16}
RN_CFG = {"image_size": 96, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32}
TINY_VIT_CONFIG = {
    "arch": "vit",
    "open_clip": {"embed_dim": 24, "vision_cfg": dict(VIT_CFG), "text_cfg": dict(TEXT_CFG)},
    "preprocess": {"image_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
}
"""The model-folder config of the tiny ViT (`save_model_folder`, `train`)."""


def make_open_clip(arch: str, seed: int = 0) -> torch.nn.Module:
    """A random-weight open_clip CLIP small enough for unit tests."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    vision = VIT_CFG if arch == "vit" else RN_CFG
    model = CLIP(embed_dim=24, vision_cfg=dict(vision), text_cfg=dict(TEXT_CFG))
    if arch == "resnet":
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            # open_clip starts each block's last BN scale at 0 (dead residual branches); with the initial
            # BN statistics the last stage is then constant over space and every ResNet map is flat
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=g))
            calibrate_batch_norm(model, g)
            # sharpen the pool's attention: at random init it is nearly uniform
            model.visual.attnpool.q_proj.weight.mul_(6.0)
            model.visual.attnpool.k_proj.weight.mul_(6.0)
    return model.eval()


def make_adapter(arch: str, seed: int = 0, model: torch.nn.Module | None = None):
    """The DenseCLIP adapter of a tiny model."""
    model = model if model is not None else make_open_clip(arch, seed)
    tok, count = simple_tokenizer(TEXT_CFG["context_length"])
    size = VIT_CFG["image_size"] if arch == "vit" else RN_CFG["image_size"]
    return wrap(model, tok, name=f"tiny-{arch}", image_size=(size, size), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                context_length=TEXT_CFG["context_length"], count_tokens=count)

def random_images(adapter, batch: int = 2, size: tuple[int, int] | None = None, seed: int = 0) -> torch.Tensor:
    """(B, 3, H, W) seeded random images at the adapter's size (or `size`)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size or adapter.image_size
    return torch.randn(batch, 3, h, w, generator=g)


def tiny_model(folder: Path, arch: str) -> Path:
    """A tiny model folder of `arch` (vit: 32 px, resnet: 64 px) under `folder`, loadable by `--model PATH`."""
    from eclip.models.folder import save_model_folder

    vision = VIT_CFG if arch == "vit" else {**RN_CFG, "image_size": 64}
    config = {"arch": arch, "open_clip": {"embed_dim": 24, "vision_cfg": dict(vision), "text_cfg": dict(TEXT_CFG)},
              "preprocess": {"image_size": vision["image_size"], "mean": [0.5] * 3, "std": [0.25] * 3}}
    model = make_open_clip("vit") if arch == "vit" else _tiny_resnet(vision)
    return save_model_folder(folder / f"tiny-{arch}", model, config)


def _tiny_resnet(vision: dict) -> torch.nn.Module:
    from open_clip.model import CLIP

    torch.manual_seed(0)
    return CLIP(embed_dim=24, vision_cfg=dict(vision), text_cfg=dict(TEXT_CFG)).eval()


def run_evaluate(*args: str) -> object:
    """`eclip evaluate ARGS --no-progress` in process; fails the test unless it exits 0."""
    from typer.testing import CliRunner

    import eclip.cli as cli

    result = CliRunner().invoke(cli.app, ["evaluate", *args, "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def tiny_serve_cache(folder: Path):
    """A server's model cache offering two tiny model folders (ViT, ResNet) besides the bundled models, and their paths."""
    from eclip.serve import ModelCache

    paths = {arch: str(tiny_model(folder, arch)) for arch in ("vit", "resnet")}
    return ModelCache([(paths["vit"], None), (paths["resnet"], None)]), paths


def png_bytes_of(colour, size: tuple[int, int] = (20, 12)) -> bytes:
    """A PNG file's bytes: one `colour` (a name or an RGB tuple) over `size` (W, H), for folders of image files."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()
