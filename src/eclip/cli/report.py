"""`eclip report`: evaluation results as a figure (one bar chart per metric) and an HTML page with example overlays."""
from __future__ import annotations

from pathlib import Path

import typer

from eclip.cli import options
from eclip.cli.app import app
from eclip.errors import OptionError


@app.command("report", short_help="A figure and an HTML page from evaluation results.")
def report_command(
    results: list[Path] = typer.Argument(..., metavar="RESULTS", show_default=False,
                                         help="One or more OUT.json files written by `eclip evaluate` (or the shift.json of `eclip "
                                              "shift`)."),
    out: Path = options.out_folder(Path("eclip-report"), "Output folder: index.html, metrics.png, overlays/."),
    dataset: str = typer.Option(None, "--dataset", "-d", metavar="NAME", help="With --root: draw example overlays from this dataset."),
    root: Path = typer.Option(None, "--root", metavar="DIR", help="The dataset folder, for example overlays."),
    examples: int = typer.Option(4, "--examples", metavar="N", min=0, help="Example images per (model, method)."),
    device: str = options.device("Device of the models that draw the examples: cpu, cuda, cuda:1, ..."),
) -> None:
    """Write OUT/metrics.png (bar chart per metric, direction in each title) and OUT/index.html (table, figure, overlays).

    Example overlays need --dataset and --root; they show, per (model, method), the first
    images of the dataset with one map per class present and its score contrast.
    """
    from eclip.cli.checks import up_front

    if bool(dataset) != bool(root):
        raise OptionError("--dataset and --root go together (the dataset the example overlays are drawn from); give both or neither")
    up_front(inputs=[*results, *([root] if root else [])], out=out, device=device)
    from eclip.reporting import write_report_folder

    report = write_report_folder(results, out, dataset, root, examples, device)
    drawn = sum(map(len, report.overlays.values()))
    typer.echo(f"wrote {report.page}" + (f", {report.figure.name}" if report.figure else "")
               + (f", {drawn} overlays" if report.overlays else ""))
