"""`eclip shift`: the semantic-shift report of one or more models on a dataset with masks."""
from __future__ import annotations

from pathlib import Path

import typer

from eclip.cli import options
from eclip.cli.app import app


@app.command("shift", short_help="The semantic shift: inverted rate and mSC of each model's maps.")
def shift_command(
    data: Path = typer.Argument(None, metavar="DATA", show_default=False,
                                help="A dataset folder with masks (`eclip synth` writes one; see --dataset); default: held-out "
                                     "synthetic scenes."),
    dataset: str = typer.Option("synthetic", "--dataset", "-d", metavar="NAME", help="What DATA is: synthetic, voc, coco or context."),
    model: list[str] = options.models(["synth-vit"], "Model(s) to compare, e.g. --model synth-vit --model synth-vit-eclip."),
    pretrained: str = options.pretrained(),
    method: list[str] = options.methods(["itsm", "free_attention"], "Maps to measure (see `eclip methods`)."),
    n: int = typer.Option(300, "--n", metavar="N", min=1, help="Images to use: held-out scenes to draw, or the first N of DATA."),
    seed: int = typer.Option(None, "--seed", metavar="SEED", min=0,
                             help="Seed of the held-out synthetic scenes (default: the test seed; the bundled models trained on "
                                  "seeds 1000 and 1001, and their settings were chosen on the validation seed)."),
    scene_size: int = options.scene_size(96, "Pixels per side of the held-out synthetic scenes."),
    template: str = options.template("single"),
    figure: int = typer.Option(6, "--figure", metavar="ROWS", min=0, help="Rows of the before/after figure (0: none)."),
    out: Path = options.out_folder(Path("eclip-shift"), "Output folder: shift.json (records as `eclip evaluate` writes them), "
                                                        "shift.csv, shift.md, shift.png."),
    batch_size: int = options.batch_size(32),
    device: str = options.device(),
    precision: str = options.precision("fp32", options.MAPS_PRECISION_HELP),
) -> None:
    """Inverted rate and mean score contrast of each model's maps (ITSM by default) next to the free attention.

    An evaluation as `eclip evaluate` makes it (the same maps, metrics and record keys, without
    deletion / insertion), plus each model's zero-shot accuracy: per (image, class present) the
    map is min-max normalised; inverted = mean inside the class mask lower than outside; mSC =
    100 x (mean inside - mean outside), negative when the map prefers the background (ECLIP's
    "opposite visualization"); foreground IoU and mIoU at the best threshold; pointing game.
    """
    from eclip.cli.checks import up_front

    up_front(inputs=[data] if data else (), out=out, template=template, models=model, pretrained=pretrained, methods=method,
             precision=precision, device=device)

    from eclip.data.synthetic import TEST_SEED
    from eclip.report.tables import markdown_table
    from eclip.shift import shift_report

    report = shift_report(out, model, method, data=data, dataset=dataset, n=n, seed=TEST_SEED if seed is None else seed,
                          scene_size=scene_size, pretrained=pretrained, templates=template, figure=figure, batch_size=batch_size,
                          device=device, precision=precision)
    for image_id, reason in report.skipped[:20]:
        typer.echo(f"eclip: skipped {image_id}: {reason}", err=True)
    typer.echo(f"Semantic shift on {report.described}\n{markdown_table(report.records)}\n"
               f"wrote {', '.join(str(path) for path in report.files)}")
    if report.skipped:
        raise typer.Exit(code=1)
