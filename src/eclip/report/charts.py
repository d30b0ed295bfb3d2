"""Bar charts of evaluation results: one panel per metric, one bar per (dataset, model, method)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eclip.report.tables import METRICS  # noqa: E402


def record_label(record: dict, with_dataset: bool = False) -> str:
    """'model · method' (and the dataset first when several are shown); long folder names keep their last part."""
    model = str(record["model"])
    if "/" in model:
        model = ("maps:" if model.startswith("maps:") else "") + model.rstrip("/").rsplit("/", 1)[-1]
    label = f"{model} · {record['method']}"
    return f"{record['dataset']} · {label}" if with_dataset else label


def metric_bars(records: Sequence[dict], out: Path, metrics: Sequence[str] | None = None) -> Path:
    """Write a PNG with one bar chart per metric that any record has; titles say which direction is better."""
    keys = [k for k in (metrics or METRICS) if any(r.get(k) is not None for r in records)]
    if not keys:
        raise ValueError("no metric to plot: every record's scores are null")
    several = len({r["dataset"] for r in records}) > 1
    labels = [record_label(r, several) for r in records]
    methods = sorted({r["method"] for r in records})
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    cols = min(4, len(keys))
    rows = int(np.ceil(len(keys) / cols))
    width = max(3.2, 0.45 * len(records) + 1.2)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        ax.axis("on")
        title, up = METRICS.get(key, (key, True))
        values = [np.nan if r.get(key) is None else float(r[key]) for r in records]
        bars = ax.bar(range(len(records)), values, color=[colours[r["method"]] for r in records])
        ax.bar_label(bars, labels=["–" if np.isnan(v) else f"{v:.{1 if key == 'msc' else 2}f}" for v in values], fontsize=7)
        ax.set_title(f"{title} ({'higher' if up else 'lower'} is better)", fontsize=9)
        ax.set_xticks(range(len(records)), labels, rotation=35, ha="right", fontsize=7)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
