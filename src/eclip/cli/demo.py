"""`eclip demo`: the README's first command; vanilla ITSM, its fine-tunes' ITSM and free attention per sample image."""
from __future__ import annotations

from pathlib import Path

import typer

from eclip.cli import options
from eclip.cli.app import app


@app.command("demo", short_help="Vanilla vs ECLIP maps of sample images, side by side.")
def demo_command(
    data: Path = typer.Argument(None, metavar="DATA", show_default=False,
                                help="A dataset folder with masks written by `eclip synth` (default: the bundled samples)."),
    model: list[str] = options.models(["synth-vit", "synth-rn"],
                                      "Vanilla model(s); each is shown next to its bundled fine-tunes: '-eclip' (ECLIP's masked max "
                                      "pooling) and any other head (e.g. '-avg')."),
    out: Path = options.out_folder(Path("eclip-demo"), "Output folder: one PNG per image, contrasts.json."),
    n: int = typer.Option(None, "--n", min=1, show_default=False,
                          help="Draw the first N images only (default: all; a second or two per image on 2 CPU cores)."),
    template: str = options.template("single"),
    device: str = options.device(),
) -> None:
    """Per image and class present: vanilla ITSM | ECLIP ITSM | other fine-tunes' ITSM | free attention, each with its SC.

    SC: the score contrast of one (image, class) pair, 100 x (mean of the min-max normalised map
    inside the class mask - mean outside), in percent; mSC %, printed at the end, is its mean.
    """
    from eclip.cli.checks import up_front

    up_front(inputs=[data] if data else (), out=out, template=template, models=model, device=device)

    from eclip.demo import run_demo

    result = run_demo(out, model, data, template, device, n=n)
    for path, reason in result.skipped:
        typer.echo(f"eclip: skipped {path}: {reason}", err=True)
    typer.echo(result.summary())
    typer.echo(f"wrote {len(result.figures)} figures to {out}/")
    if result.skipped:
        raise typer.Exit(code=1)
