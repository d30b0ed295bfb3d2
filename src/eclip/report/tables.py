"""Tables of evaluation records: which numbers they show, under which label, in which direction.

The one writer of Markdown tables and the columns of the HTML one (`eclip.report.html`), for the
records of `eclip evaluate` and of `eclip shift` (the same keys, plus zero-shot accuracy). Each
number's direction (higher or lower is better) is the one its metric declares
(`eclip.metrics.*.directions`); labels and units are `eclip.report.units`'. Reads records only.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from eclip.metrics import Deletion, Insertion, PointingGame, ScoreContrast, ThresholdIoU, ZeroShotAccuracy
from eclip.report.units import SEGMENTATION_SHOWN, SHOWN, format_value, label
from eclip.writing import atomic_write_text

_DIRECTIONS = {k: up for metric in (ThresholdIoU, ScoreContrast, PointingGame, Deletion, Insertion)
               for k, up in metric.directions.items()}

#: Record key -> (label, higher is better), in the order tables and figures show them.
METRICS = {key: (label(key), _DIRECTIONS[key]) for key in SHOWN if key in _DIRECTIONS}

#: The column `eclip shift` records add: the model's top-1 zero-shot accuracy (`ZeroShotAccuracy`'s top1).
ZERO_SHOT = {"zero_shot": (label("zero_shot"), ZeroShotAccuracy.directions["top1"])}


def columns(records: Sequence[dict]) -> dict[str, tuple[str, bool]]:
    """Record key -> (label, higher is better) of the numbers a table of `records` shows: every metric,
    and the zero-shot accuracy when a record has one."""
    return {**METRICS, **(ZERO_SHOT if any(r.get("zero_shot") is not None for r in records) else {})}


def arrow(key: str) -> str:
    """'↑' or '↓' for a metric key."""
    return "↑" if {**METRICS, **ZERO_SHOT}[key][1] else "↓"


def is_segmentation(record: dict) -> bool:
    """True for a record of `eclip evaluate --task segmentation` (argmax mIoU, not the per-class metrics)."""
    return record.get("task") == "segmentation"


def segmentation_markdown(records: Sequence[dict]) -> str:
    """Segmentation records as a Markdown table: mIoU %, pixel and mean class accuracy %, images (all higher is better)."""
    head = ["dataset", "model", "method"] + [f"{s.label} ↑" for s in SEGMENTATION_SHOWN.values()] + ["images", "skipped"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in records:
        cells = [r["dataset"], r["model"], r["method"]] + [format_value(k, r.get(k), SEGMENTATION_SHOWN) for k in SEGMENTATION_SHOWN]
        cells += [str(r.get("n_images", "–")),
                  format_value("skipped", r.get("skipped", 0)) + (f" (+{r['missing']} missing)" if r.get("missing") else "")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def markdown_table(records: Sequence[dict]) -> str:
    """The records as Markdown: the per-class records in one table (arrows give each metric's direction), the
    segmentation records in another."""
    segmentation = [r for r in records if is_segmentation(r)]
    per_class = [r for r in records if not is_segmentation(r)]
    tables = [_class_table(per_class)] if per_class or not records else []
    tables += [segmentation_markdown(segmentation)] if segmentation else []
    return "\n\n".join(tables)


def _class_table(records: Sequence[dict]) -> str:
    shown = columns(records)
    head = ["dataset", "model", "method", "pairs", "thr"] + [f"{name} {arrow(key)}" for key, (name, _) in shown.items()]
    head.append("skipped")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in records:
        cells = [r["dataset"], r["model"], r["method"]] + [format_value(key, r.get(key)) for key in ("n_pairs", "threshold", *shown)]
        cells.append(format_value("skipped", r.get("skipped", 0)) + (f" (+{r['missing']} missing)" if r.get("missing") else ""))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def write_markdown(records: Sequence[dict], path: Path, title: str | None = None) -> Path:
    """Write the Markdown table of `records` to `path` (the OUT.md next to `eclip evaluate`'s OUT.json), under `title`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, (f"{title}\n\n" if title else "") + markdown_table(records) + "\n")
