"""`eclip shift`: the semantic-shift report of one or more models on a dataset with masks."""
from __future__ import annotations

from pathlib import Path

import typer

from eclip.cli.app import app
from eclip.data.synthetic import TEST_SEED, VALIDATION_SEED


@app.command("shift")
def shift_command(
    data: Path = typer.Argument(None, help="A dataset folder with masks (`eclip synth` writes one; see --dataset); "
                                           "default: held-out synthetic scenes."),
    dataset: str = typer.Option("synthetic", "--dataset", "-d", help="What DATA is: synthetic, voc, coco or context."),
    model: list[str] = typer.Option(["synth-vit"], "--model", "-m",
                                    help="Model(s) to compare, e.g. --model synth-vit --model synth-vit-eclip."),
    pretrained: str = typer.Option(None, "--pretrained", help="open_clip tag or checkpoint file, for open_clip names."),
    method: list[str] = typer.Option(["itsm", "free_attention"], "--method", help="Maps to measure (see `eclip methods`)."),
    n: int = typer.Option(300, "--n", min=1, help="Images to use: held-out scenes to draw, or the first N of DATA."),
    seed: int = typer.Option(TEST_SEED, "--seed", min=0,
                             help="Seed of the held-out synthetic scenes: the test seed by default (the bundled models trained on "
                                  f"1000 and 1001 and their settings were chosen on {VALIDATION_SEED})."),
    scene_size: int = typer.Option(96, "--scene-size", min=16, max=4096, help="Pixels per side of the held-out synthetic scenes."),
    template: str = typer.Option("single", "--template", help="Prompt template set or a template with {}."),
    figure: int = typer.Option(6, "--figure", min=0, help="Rows of the before/after figure (0: none)."),
    out: Path = typer.Option(Path("eclip-shift"), "--out", "-o",
                             help="Output folder: shift.json (records as `eclip evaluate` writes them), shift.csv, shift.md, shift.png."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
) -> None:
    """Inverted rate and mean score contrast of each model's maps (ITSM by default) next to the free attention.

    An evaluation as `eclip evaluate` makes it (the same maps, metrics and record keys, without
    deletion / insertion), plus each model's zero-shot accuracy: per (image, class present) the
    map is min-max normalised; inverted = mean inside the class mask lower than outside; mSC =
    100 x (mean inside - mean outside), negative when the map prefers the background (ECLIP's
    "opposite visualization"); foreground IoU and mIoU at the best threshold; pointing game.
    """
    from eclip.cli.checks import check_methods, check_template
    from eclip.device import resolve_device
    from eclip.writing import check_output_folder

    check_template(template)
    resolve_device(device)
    check_output_folder(out)
    check_methods(method)

    from eclip.report.tables import markdown_table
    from eclip.shift import shift_report

    report = shift_report(out, model, method, data=data, dataset=dataset, n=n, seed=seed, scene_size=scene_size, pretrained=pretrained,
                          templates=template, figure=figure, batch_size=batch_size, device=device)
    for image_id, reason in report.skipped[:20]:
        typer.echo(f"eclip: skipped {image_id}: {reason}", err=True)
    typer.echo(f"Semantic shift on {report.described}\n{markdown_table(report.records)}\n"
               f"wrote {', '.join(str(path) for path in report.files)}")
    if report.skipped:
        raise typer.Exit(code=1)
