"""`eclip report`: evaluation results as a figure (one bar chart per metric) and an HTML page with example overlays."""
from __future__ import annotations

from pathlib import Path

import typer

from eclip.cli.app import app
from eclip.errors import OptionError


@app.command("report")
def report_command(
    results: list[Path] = typer.Argument(..., help="One or more OUT.json files written by `eclip evaluate`."),
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
    from eclip.evaluation import read_results

    records = read_results(results)
    if not records:
        raise typer.BadParameter("the results hold no record")

    from eclip.report.charts import metric_bars, record_label
    from eclip.report.html import write_report

    figure = metric_bars(records, out / "metrics.png") if any(r.get("n_pairs") for r in records) else None
    overlays: dict[str, list[Path]] = {}
    if dataset and root and examples:
        from eclip.data.registry import open_dataset
        from eclip.evaluation.examples import example_maps
        from eclip.report.overlay import example_overlay

        ds = open_dataset(dataset, root)
        for record in records:
            if record.get("dataset") == ds.name and not record.get("error"):
                label = record_label(record, with_dataset=True)
                overlays[label] = [example_overlay(str(record["model"]), str(record["method"]), ex.image_id, ex.image, ex.maps,
                                                   ex.classes, ex.contrasts, out / "overlays")
                                   for ex in example_maps(record, ds, examples, device=device)]
    page = write_report(records, out, figure, overlays)
    drawn = sum(map(len, overlays.values()))
    typer.echo(f"wrote {page}" + (f", {figure.name}" if figure else "") + (f", {drawn} overlays" if overlays else ""))
