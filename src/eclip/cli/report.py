"""`eclip report`: evaluation results as a figure (one bar chart per metric) and an HTML page with example overlays."""
from __future__ import annotations

from pathlib import Path

import typer

from eclip.cli.app import app
from eclip.errors import OptionError


@app.command("report")
def report_command(
    results: list[Path] = typer.Argument(..., help="One or more OUT.json files written by `eclip evaluate` (or the shift.json "
                                                   "of `eclip shift`)."),
    out: Path = typer.Option(Path("eclip-report"), "--out", "-o", help="Output folder: index.html, metrics.png, overlays/."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="With --root: draw example overlays from this dataset."),
    root: Path = typer.Option(None, "--root", help="The dataset folder, for example overlays."),
    examples: int = typer.Option(4, "--examples", min=0, help="Example images per (model, method)."),
    device: str = typer.Option("cpu", "--device", help="Device of the models that draw the examples."),
) -> None:
    """Write OUT/metrics.png (bar chart per metric, direction in each title) and OUT/index.html (table, figure, overlays).

    Example overlays need --dataset and --root; they show, per (model, method), the first
    images of the dataset with one map per class present and its score contrast.
    """
    from eclip.device import resolve_device
    from eclip.writing import check_output_folder

    if bool(dataset) != bool(root):
        raise OptionError("--dataset and --root go together (the dataset the example overlays are drawn from); give both or neither")
    resolve_device(device)
    check_output_folder(out)
    from eclip.reporting import write_report_folder

    report = write_report_folder(results, out, dataset, root, examples, device)
    drawn = sum(map(len, report.overlays.values()))
    typer.echo(f"wrote {report.page}" + (f", {report.figure.name}" if report.figure else "")
               + (f", {drawn} overlays" if report.overlays else ""))
