"""The library side of `eclip report`: evaluation records as a folder with a figure, a page and example overlays.

Records come from `eclip evaluate` or `eclip shift` (the same keys). The example overlays are the
maps the records scored, remade by the evaluation's own path (`eclip.evaluation.examples`) and
drawn by `eclip.report`; this module joins the two, which never import each other.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Report:
    """What `write_report_folder` wrote: the page, the figure (None when no record has a number) and the overlays by record label."""

    page: Path
    figure: Path | None
    overlays: dict[str, list[Path]]


def write_report_folder(results: Sequence[Path], out: Path, dataset: str | None = None, root: Path | None = None,
                        examples: int = 4, device: str = "cpu") -> Report:
    """Write OUT/metrics.png (a bar chart per metric, its direction in the title), OUT/overlays/ and OUT/index.html
    for the records of the `results` files.

    With `dataset` and `root`, each record of that dataset gets overlays of the first `examples`
    usable images: every class present with its map and score contrast (the contrast the mSC of
    the record averages).
    """
    from eclip.errors import EvaluationError
    from eclip.evaluation import read_results
    from eclip.report.charts import metric_bars, record_label
    from eclip.report.html import write_report
    from eclip.report.overlay import example_overlay

    records = read_results(results)
    if not records:
        raise EvaluationError(f"{', '.join(map(str, results))}: no record to report; pass results of `eclip evaluate` or `eclip shift`")
    figure = metric_bars(records, Path(out) / "metrics.png") if any(r.get("n_pairs") for r in records) else None
    overlays: dict[str, list[Path]] = {}
    if dataset and root and examples:
        from eclip.data.registry import open_dataset
        from eclip.evaluation.examples import example_maps

        ds = open_dataset(dataset, root)
        for record in records:
            if record.get("dataset") == ds.name and not record.get("error"):
                overlays[record_label(record, with_dataset=True)] = [
                    example_overlay(str(record["model"]), str(record["method"]), ex.image_id, ex.image, ex.maps, ex.classes,
                                    ex.contrasts, Path(out) / "overlays")
                    for ex in example_maps(record, ds, examples, device=device)]
    return Report(write_report(records, out, figure, overlays), figure, overlays)
