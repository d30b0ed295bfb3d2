"""A self-contained HTML page of evaluation results: the table, the bar charts, and example overlays."""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from eclip.report.tables import arrow, columns
from eclip.writing import atomic_write_text


def _cell(value, key: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if key == "msc" else f"{value:.3f}"
    return html.escape(str(value))


def results_table(records: Sequence[dict]) -> str:
    """An HTML table of the records (the contracted numbers, zero-shot accuracy when there is one, and the counts)."""
    shown = columns(records)
    head = ["dataset", "model", "method", "pairs", "threshold"] + [f"{label} {arrow(key)}" for key, (label, _) in shown.items()]
    head += ["images", "skipped", "missing"]
    rows = []
    for r in records:
        cells = [r.get("dataset"), r.get("model"), r.get("method"), r.get("n_pairs"), r.get("threshold")]
        cells += [r.get(k) for k in shown] + [r.get("n_images"), r.get("skipped"), r.get("missing")]
        keys = ["", "", "", "", ""] + list(shown) + ["", "", ""]
        rows.append("<tr>" + "".join(f"<td>{_cell(v, k)}</td>" for v, k in zip(cells, keys)) + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}thead{background:#f0f0f0}
img{max-width:100%}figure{display:inline-block;margin:0.5em}figcaption{font-size:12px;color:#444}"""


def write_report(
    records: Sequence[dict],
    out_dir: Path,
    figure: Path | None = None,
    examples: dict[str, list[Path]] | None = None,
    title: str = "eclip evaluation",
) -> Path:
    """Write OUT_DIR/index.html: table, figure and per-(model, method) example overlays (paths relative to OUT_DIR)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             "<p>fg IoU and mIoU at the reported threshold (one per method and dataset, chosen on the grid to maximise the mean "
             "foreground IoU); mSC: mean score contrast in percent (inside minus outside the mask); inverted: share of maps "
             "higher outside than inside; pointing: share of maps whose peak is on the object; deletion / insertion: area under "
             "the image-text score curve as pixels are removed / restored in the map's order.</p>",
             results_table(records)]
    if figure is not None:
        parts.append(f"<h2>Metrics</h2><img src='{html.escape(str(Path(figure).relative_to(out_dir)))}' alt='metrics'>")
    if examples:
        parts.append("<h2>Examples</h2>")
        for label, paths in examples.items():
            parts.append(f"<h3>{html.escape(label)}</h3>")
            parts += [f"<figure><img src='{html.escape(str(Path(p).relative_to(out_dir)))}' alt='{html.escape(Path(p).stem)}'>"
                      f"<figcaption>{html.escape(Path(p).stem)}</figcaption></figure>" for p in paths]
    parts.append("</body></html>\n")
    return atomic_write_text(out_dir / "index.html", "\n".join(parts))
