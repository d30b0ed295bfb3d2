"""`eclip demo`: the README's first command; vanilla ITSM, its fine-tunes' ITSM and free attention per sample image."""
from __future__ import annotations

from pathlib import Path

import typer

from eclip.cli.app import app


@app.command("demo")
def demo_command(
    data: Path = typer.Argument(None, help="A dataset folder with masks written by `eclip synth` (default: the bundled samples)."),
    model: list[str] = typer.Option(["synth-vit", "synth-rn"], "--model", "-m",
                                    help="Vanilla model(s); each is shown next to its bundled fine-tunes: '-eclip' (ECLIP's "
                                         "masked max pooling) and any other head (e.g. '-avg')."),
    out: Path = typer.Option(Path("eclip-demo"), "--out", "-o", help="Output folder: one PNG per image, contrasts.json."),
    template: str = typer.Option("single", "--template", help="Prompt template set or a template with {}."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
) -> None:
    """Per image and class present: vanilla ITSM | ECLIP ITSM | other fine-tunes' ITSM | free attention, with score contrasts."""
    from eclip.cli.checks import check_template
    from eclip.device import resolve_device
    from eclip.writing import check_output_folder

    check_template(template)
    resolve_device(device)
    check_output_folder(out)

    from eclip.demo import run_demo

    result = run_demo(out, model, data, template, device)
    for path, reason in result.skipped:
        typer.echo(f"eclip: skipped {path}: {reason}", err=True)
    lines = [f"  {title:<28} {'–' if value is None else f'{value:+.3f}'}" for title, value in result.mean.items()]
    typer.echo("mean score contrast over the (image, class) pairs (> 0: the map is on the object)\n" + "\n".join(lines))
    typer.echo(f"wrote {len(result.figures)} figures to {out}/")
    if result.skipped:
        raise typer.Exit(code=1)
