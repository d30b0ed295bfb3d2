"""Tables of evaluation records: which numbers they show, under which label, in which direction.

The one writer of Markdown tables and the columns of the HTML one (`eclip.report.html`), for the
records of `eclip evaluate` and of `eclip shift` (the same keys, plus zero-shot accuracy). Each
number's direction (higher or lower is better) is the one its metric declares
(`eclip.metrics.*.directions`); the labels are the report's. Reads records only.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from eclip.metrics import Deletion, Insertion, PointingGame, ScoreContrast, ThresholdIoU, ZeroShotAccuracy
from eclip.writing import atomic_write_text

#: Record key -> label, in the order tables and figures show them.
LABELS = {
    "fg_iou": "fg IoU",
    "miou": "mIoU",
    "msc": "mSC %",
    "inverted_rate": "inverted",
    "pointing_game": "pointing",
    "deletion_auc": "deletion AUC",
    "insertion_auc": "insertion AUC",
}

_DIRECTIONS = {k: up for metric in (ThresholdIoU, ScoreContrast, PointingGame, Deletion, Insertion)
               for k, up in metric.directions.items()}

#: Record key -> (label, higher is better).
METRICS = {key: (label, _DIRECTIONS[key]) for key, label in LABELS.items()}

#: The column `eclip shift` records add: the model's top-1 zero-shot accuracy (`ZeroShotAccuracy`'s top1).
ZERO_SHOT = {"zero_shot": ("zero-shot", ZeroShotAccuracy.directions["top1"])}


def columns(records: Sequence[dict]) -> dict[str, tuple[str, bool]]:
    """Record key -> (label, higher is better) of the numbers a table of `records` shows: every metric,
    and the zero-shot accuracy when a record has one."""
    return {**METRICS, **(ZERO_SHOT if any(r.get("zero_shot") is not None for r in records) else {})}


def arrow(key: str) -> str:
    """'↑' or '↓' for a metric key."""
    return "↑" if {**METRICS, **ZERO_SHOT}[key][1] else "↓"


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(records: Sequence[dict]) -> str:
    """The records as a Markdown table (arrows give each metric's direction)."""
    shown = columns(records)
    head = ["dataset", "model", "method", "pairs", "thr"] + [f"{label} {arrow(key)}" for key, (label, _) in shown.items()]
    head.append("skipped")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in records:
        cells = [r["dataset"], r["model"], r["method"], _fmt(r.get("n_pairs")), _fmt(r.get("threshold"), 2)]
        cells += [_fmt(r.get(key), 1 if key == "msc" else 3) for key in shown]
        cells.append(_fmt(r.get("skipped", 0)) + (f" (+{r['missing']} missing)" if r.get("missing") else ""))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def write_markdown(records: Sequence[dict], path: Path, title: str | None = None) -> Path:
    """Write the Markdown table of `records` to `path` (the OUT.md next to `eclip evaluate`'s OUT.json), under `title`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, (f"{title}\n\n" if title else "") + markdown_table(records) + "\n")
