"""Bar charts of evaluation results: one panel per metric, one bar per (dataset, model, method), a colour per method."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from eclip.report.overlay import save_png  # noqa: E402
from eclip.report.tables import METRICS  # noqa: E402
from eclip.report.units import format_value, shown_value  # noqa: E402


def record_label(record: dict, with_dataset: bool = False) -> str:
    """'model · method' (and the dataset first when several are shown); long folder names keep their last part."""
    label = f"{model_label(record)} · {record['method']}"
    return f"{record['dataset']} · {label}" if with_dataset else label


def model_label(record: dict) -> str:
    """The record's model; a folder path keeps its last part ('maps:' stays in front)."""
    model = str(record["model"])
    if "/" in model:
        model = ("maps:" if model.startswith("maps:") else "") + model.rstrip("/").rsplit("/", 1)[-1]
    return model


def metric_bars(records: Sequence[dict], out: Path, metrics: Sequence[str] | None = None) -> Path:
    """Write a PNG with one bar chart per metric that any record has, in the units the tables show (mSC %,
    inverted %, ...); titles say which direction is better, a legend names each method's colour, and every bar
    carries its value inside the axes."""
    keys = [k for k in (metrics or METRICS) if any(r.get(k) is not None for r in records)]
    if not keys:
        raise ValueError("no metric to plot: every record's scores are null")
    several = len({r["dataset"] for r in records}) > 1
    labels = [f"{r['dataset']} · {model_label(r)}" if several else model_label(r) for r in records]
    methods = list(dict.fromkeys(str(r["method"]) for r in records))
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    cols = min(4, len(keys))
    rows = int(np.ceil(len(keys) / cols))
    width = max(3.0, 0.42 * len(records) + 1.3)
    height = 2.7 * rows + 0.5  # inches: the panels and, on top, the legend
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        ax.axis("on")
        title, up = METRICS.get(key, (key, True))
        values = np.array([np.nan if r.get(key) is None else shown_value(key, r[key]) for r in records], dtype=float)
        bars = ax.bar(range(len(records)), np.nan_to_num(values), color=[colours[str(r["method"])] for r in records])
        low, high = min(0.0, np.nanmin(values, initial=0.0)), max(0.0, np.nanmax(values, initial=0.0))
        pad = 0.18 * ((high - low) or 1.0)
        ax.set_ylim(low - (pad if low < 0 else 0.0), high + pad)  # room for the labels above and below the bars
        ax.bar_label(bars, labels=["–" if np.isnan(v) else format_value(key, r[key]) for v, r in zip(values, records)],
                     fontsize=7, padding=2)
        ax.set_title(f"{title} ({'higher' if up else 'lower'} is better)", fontsize=9)
        ax.set_xticks(range(len(records)), labels, rotation=35, ha="right", fontsize=7)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.tick_params(axis="y", labelsize=7)
    fig.legend(handles=[Patch(color=colours[m], label=m) for m in methods], title="method", loc="upper center",
               ncol=min(len(methods), 8), fontsize=8, title_fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height))
    return save_png(fig, out, dpi=110)
