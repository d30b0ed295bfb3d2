"""The library side of `eclip report`: evaluation records as a folder with a figure, a page and example overlays.

Records come from `eclip evaluate` or `eclip shift` (the same keys). The example overlays are the
maps the records scored, remade by the evaluation's own path (`eclip.evaluation.examples`) and
drawn by `eclip.report`; this module joins the two, which never import each other.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Map columns of one example figure at most; records beyond them go to the image's next figure, a method at a time.
MAX_COLUMNS = 8


@dataclass
class Report:
    """What `write_report_folder` wrote: the page, the figure (None when no record has a number) and the example
    figures by image id (one per image, more when its records need more than `MAX_COLUMNS` columns)."""

    page: Path
    figure: Path | None
    overlays: dict[str, list[Path]]


def column_groups(records: Sequence[dict]) -> list[list[int]]:
    """Indices of `records` per example figure: grouped by method (so that the models of one method, vanilla and
    ECLIP, sit side by side), whole methods packed into figures of at most `MAX_COLUMNS` columns."""
    by_method: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_method.setdefault(str(record["method"]), []).append(i)
    groups: list[list[int]] = []
    for indices in by_method.values():
        if groups and len(groups[-1]) + len(indices) <= MAX_COLUMNS:
            groups[-1] += indices
        else:
            groups.append(list(indices))
    return groups


def write_report_folder(results: Sequence[Path], out: Path, dataset: str | None = None, root: Path | None = None,
                        examples: int = 4, device: str = "cpu") -> Report:
    """Write OUT/metrics.png (a bar chart per metric, its direction in the title), OUT/overlays/ and OUT/index.html
    for the records of the `results` files.

    With `dataset` and `root`, the first `examples` usable images of that dataset get one figure
    each: a row per class present, a column per record of the dataset (the models of a method side
    by side), each map captioned with its SC % (the terms the record's mSC % averages).
    """
    from eclip.errors import EvaluationError
    from eclip.evaluation import read_results
    from eclip.report.charts import metric_bars
    from eclip.report.html import write_report
    from eclip.report.tables import is_segmentation

    records = read_results(results)
    if not records:
        raise EvaluationError(f"{', '.join(map(str, results))}: no record to report; pass results of `eclip evaluate` or `eclip shift`")
    per_class = [r for r in records if not is_segmentation(r)]
    figure = metric_bars(per_class, Path(out) / "metrics.png") if any(r.get("n_pairs") for r in per_class) else None
    overlays: dict[str, list[Path]] = {}
    if dataset and root and examples:
        overlays = _example_figures(per_class, dataset, root, examples, Path(out) / "overlays", device)
        segmented = _segmentation_figures([r for r in records if is_segmentation(r)], dataset, root, examples,
                                          Path(out) / "segmentations", device)
        for image_id, paths in segmented.items():
            overlays.setdefault(image_id, []).extend(paths)
    return Report(write_report(records, out, figure, overlays), figure, overlays)


def _segmentation_figures(records: Sequence[dict], dataset: str, root: Path, examples: int, out_dir: Path,
                          device: str) -> dict[str, list[Path]]:
    """{image id: [figure]}: for the first `examples` usable images of `dataset`, the image, its ground truth and the
    labels of every segmentation record of that dataset, in the dataset's palette with a class legend."""
    from eclip.data.registry import open_dataset
    from eclip.evaluation.segment import example_segmentations
    from eclip.report import overlay
    from eclip.report.charts import record_label
    from eclip.segmentation.figure import segmentation_figure

    ds = open_dataset(dataset, root)
    shown = [r for r in records if r.get("dataset") == ds.name and not r.get("error")]
    out_dir.mkdir(parents=True, exist_ok=True)
    by_image: dict[str, list] = {}
    for record in shown:
        for ex in example_segmentations(record, ds, examples, device=device):
            by_image.setdefault(ex.image_id, [ex, [("ground truth", ex.truth)]])[1].append((record_label(record), ex.predicted))
    return {image_id: [segmentation_figure(ex.image, panels, shown[0]["classes"], out_dir / f"{overlay.safe_name(image_id)}.png",
                                           suptitle=image_id)]
            for image_id, (ex, panels) in by_image.items()}


def _example_figures(records: Sequence[dict], dataset: str, root: Path, examples: int, out_dir: Path,
                     device: str) -> dict[str, list[Path]]:
    """{image id: figures}: the maps of every record of `dataset` on its first `examples` usable images (`image_figure`)."""
    from eclip.data.registry import open_dataset
    from eclip.evaluation.examples import example_maps
    from eclip.report import overlay
    from eclip.report.charts import record_label

    ds = open_dataset(dataset, root)
    shown = [r for r in records if r.get("dataset") == ds.name and not r.get("error")]
    by_image: dict[str, dict[int, object]] = {}
    for i, record in enumerate(shown):
        for ex in example_maps(record, ds, examples, device=device):
            by_image.setdefault(ex.image_id, {})[i] = ex
    figures: dict[str, list[Path]] = {}
    for image_id, found in by_image.items():
        first = next(iter(found.values()))
        for part, group in enumerate(column_groups(shown)):
            columns = [(record_label(shown[i]), found[i].maps, found[i].contrasts) for i in group if i in found]
            if columns:
                name = overlay.safe_name(image_id if part == 0 else f"{image_id}_{part}")
                figures.setdefault(image_id, []).append(
                    overlay.image_figure(image_id, first.image, first.classes, first.masks, columns, out_dir / f"{name}.png"))
    return figures
