"""The options several verbs share, declared once: the same flag, metavar, range and words wherever they appear.

A verb takes each shared option from a factory here (`size()`, `batch_size(8)`, `out_folder(...)`),
which returns a fresh typer Option; a verb may say more in `help` (what its output folder holds),
never change the flag or the range. What a range cannot say (a template holds {}, the output can
be written, the inputs exist, the device is on this machine) is checked by
`eclip.cli.checks.up_front` before any work, in one order for every verb. Nothing here imports
torch: `eclip VERB --help` must answer at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from eclip.prompts import TEMPLATE_SETS

#: Pixels per side of an image resized for a model or of a synthetic scene: 16 (two patches of a
#: patch-8 ViT) to 4096 (a 4096 x 4096 image already holds 16.8 megapixels, the web demo's limit).
SIDE = {"min": 16, "max": 4096}
DEVICE_HELP = "cpu, cuda, cuda:1, ..."
MAPS_PRECISION_HELP = "fp32, or bf16 / fp16 autocast for the maps (methods that need float32 keep it; see the README's precision table)."
TEMPLATE_HELP = f"Prompt template with {{}} where the text goes, or a set: {', '.join(TEMPLATE_SETS)}."


def inputs(help: str = "Images or folders of images (default: the bundled sample scenes).") -> Any:
    """The images a verb reads: files or folders (each checked to exist before any work)."""
    return typer.Argument(None, metavar="IMAGES", help=help, show_default=False)


def recursive() -> Any:
    return typer.Option(False, "--recursive", "-r", help="Descend into sub-folders of the input folders.")


def texts(help: str = "A text; repeat for several (default: the shape classes, for the bundled models).") -> Any:
    return typer.Option(None, "--text", "-t", metavar="TEXT", help=help)


def model(default: str | None = "synth-vit", help: str | None = None) -> Any:
    """One model (`--model NAME`); `models` for verbs that compare several."""
    return typer.Option(default, "--model", "-m", metavar="NAME",
                        help=help or "Bundled name (see `eclip models`), open_clip name, hf-hub:ID or model folder.")


def models(default: list[str] | None, help: str) -> Any:
    return typer.Option(default, "--model", "-m", metavar="NAME", help=help)


def pretrained(help: str = "open_clip tag, or a local open_clip checkpoint file (open_clip model names only).") -> Any:
    return typer.Option(None, "--pretrained", metavar="TAG|FILE", help=help)


def method(default: str = "itsm") -> Any:
    return typer.Option(default, "--method", metavar="SPEC",
                        help="Explanation method, with options as NAME:KEY=VALUE,... (see `eclip methods`).")


def methods(default: list[str], help: str = "Explanation method(s), NAME or NAME:KEY=VALUE,...; repeat for several "
                                            "(see `eclip methods`).") -> Any:
    return typer.Option(default, "--method", metavar="SPEC", help=help)


def template(default: str | None = None, help: str = TEMPLATE_HELP) -> Any:
    return typer.Option(default, "--template", metavar="TEMPLATE", help=help)


def size(default: int | None = None, help: str = "Resize images to PIXELS x PIXELS before the model (default: the model's size).") -> Any:
    return typer.Option(default, "--size", metavar="PIXELS", help=help, **SIDE)


def scene_size(default: int | None, help: str) -> Any:
    """Pixels per side of synthetic scenes: the same range as `size`."""
    return typer.Option(default, "--scene-size", metavar="PIXELS", help=help, **SIDE)


def layers(default: int, help: str) -> Any:
    """The last N layers of a model; its upper bound is the model's depth, checked once the model is loaded."""
    return typer.Option(default, "--layers", metavar="N", min=1, help=help)


def out_folder(default: Path | None, help: str = "Output folder (made if missing).") -> Any:
    return typer.Option(default, "--out", "-o", metavar="DIR", help=help)


def out_file(default: Path, help: str) -> Any:
    return typer.Option(default, "--out", "-o", metavar="FILE", help=help)


def device(help: str = DEVICE_HELP) -> Any:
    return typer.Option("cpu", "--device", metavar="DEVICE", help=help)


def batch_size(default: int | None, help: str = "Images per forward pass.") -> Any:
    return typer.Option(default, "--batch-size", metavar="N", min=1, help=help)


def precision(default: str | None, help: str) -> Any:
    """The floating-point format of the work: fp32, or bf16 / fp16 under autocast (checked up front: `eclip.precision.PRECISIONS`)."""
    return typer.Option(default, "--precision", metavar="fp32|bf16|fp16", help=help)


def workers(help: str) -> Any:
    """Background processes (DataLoader workers, shard writers); 0 works in the verb's own process."""
    return typer.Option(0, "--workers", metavar="N", min=0, help=help)
