"""Where the sample scenes shipped inside the package live (the default input of `eclip explain`, `demo`, `serve`)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def samples_root() -> Path:
    """The bundled sample dataset: held-out synthetic scenes with exact masks (seed 20261123, 160 px)."""
    return Path(str(resources.files("eclip") / "assets" / "samples"))


def sample_images() -> list[Path]:
    """The bundled sample images, in order (a folder written by `eclip synth`)."""
    return sorted((samples_root() / "images").glob("*.png"))
