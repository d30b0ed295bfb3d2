"""A self-contained HTML page of evaluation results: the table, the bar charts, and one example figure per image."""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from eclip.report.tables import arrow, columns, is_segmentation
from eclip.report.units import SC_DEFINITION, SEGMENTATION_SHOWN, format_value
from eclip.writing import atomic_write_text


def _cell(value, key: str = "") -> str:
    if value is None:
        return "–"
    return html.escape(format_value(key, value) if isinstance(value, float) and key else str(value))


def results_table(records: Sequence[dict]) -> str:
    """HTML tables of the records: the per-class ones (the contracted numbers, zero-shot accuracy when there is one,
    and the counts), then the segmentation ones (mIoU, pixel and mean class accuracy)."""
    segmentation = [r for r in records if is_segmentation(r)]
    per_class = [r for r in records if not is_segmentation(r)]
    tables = [_class_table(per_class)] if per_class else []
    if segmentation:
        tables.append("<h2>Segmentation</h2><p>" + html.escape(SEGMENTATION_DEFINITION) + "</p>" + _segmentation_table(segmentation))
    return "\n".join(tables)


def _segmentation_table(records: Sequence[dict]) -> str:
    head = ["dataset", "model", "method"] + [f"{s.label} ↑" for s in SEGMENTATION_SHOWN.values()] + ["images", "skipped", "missing"]
    rows = []
    for r in records:
        cells = [html.escape(str(r.get(k))) for k in ("dataset", "model", "method")]
        cells += [html.escape(format_value(k, r.get(k), SEGMENTATION_SHOWN)) for k in SEGMENTATION_SHOWN]
        cells += [_cell(r.get(k)) for k in ("n_images", "skipped", "missing")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _class_table(records: Sequence[dict]) -> str:
    shown = columns(records)
    head = ["dataset", "model", "method", "pairs", "threshold"] + [f"{label} {arrow(key)}" for key, (label, _) in shown.items()]
    head += ["images", "skipped", "missing"]
    rows = []
    for r in records:
        cells = [r.get("dataset"), r.get("model"), r.get("method"), r.get("n_pairs"), r.get("threshold")]
        cells += [r.get(k) for k in shown] + [r.get("n_images"), r.get("skipped"), r.get("missing")]
        keys = ["", "", "", "", "threshold"] + list(shown) + ["", "", ""]
        rows.append("<tr>" + "".join(f"<td>{_cell(v, k)}</td>" for v, k in zip(cells, keys)) + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


#: What the segmentation table's numbers are.
SEGMENTATION_DEFINITION = ("Each pixel takes the class whose raw map is highest among all the dataset's classes (each method "
                           "under its paper's protocol); mIoU %: the intersection over union of each class, summed over the "
                           "whole dataset, averaged over the classes; pixel acc %: the share of pixels labelled right; mean "
                           "acc %: that share per class, averaged. Records on disk keep them as fractions.")

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1600px}h2{margin:1em 0 0.4em}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}thead{background:#f0f0f0}p{max-width:1100px;font-size:14px}
img{max-width:100%;height:auto}.examples{display:flex;flex-wrap:wrap;gap:0.6em;align-items:flex-start}"""

#: What each column means, in the units the table shows.
DEFINITIONS = ("fg IoU and mIoU at the reported threshold (one per method and dataset, chosen on the grid to maximise the "
               "mean foreground IoU). " + SC_DEFINITION + " (mSC %). inverted %: share of the pairs whose SC is below 0. "
               "pointing %: share of the maps whose peak is on the object. deletion / insertion AUC: area under the "
               "image-text score curve as pixels are removed / restored in the map's order. Records on disk keep msc in "
               "percent and the shares (inverted_rate, pointing_game, zero_shot) as fractions.")


def write_report(
    records: Sequence[dict],
    out_dir: Path,
    figure: Path | None = None,
    examples: dict[str, list[Path]] | None = None,
    title: str = "eclip evaluation",
) -> Path:
    """Write OUT_DIR/index.html: table, figure and the example figures by image (paths relative to OUT_DIR), each
    image's maps of every record side by side in one figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(DEFINITIONS)}</p>", results_table(records)]
    if figure is not None:
        parts.append(f"<h2>Metrics</h2><img src='{html.escape(str(Path(figure).relative_to(out_dir)))}' alt='metrics'>")
    if examples:
        parts.append("<h2>Examples</h2><p>One figure per image: a row per class present (its mask outlined), a column per "
                     "model and method, all maps on one scale; for segmentation records, the ground truth and each model "
                     "and method's labels in the dataset's palette.</p><div class='examples'>")
        parts += [f"<img src='{html.escape(str(Path(p).relative_to(out_dir)))}' alt='image {html.escape(image_id)}'>"
                  for image_id, paths in examples.items() for p in paths]
        parts.append("</div>")
    parts.append("</body></html>\n")
    return atomic_write_text(out_dir / "index.html", "\n".join(parts))
