"""Evaluation results on disk: OUT.json (the records) and OUT.csv (their numbers).

The JSON is the contract other tools read: a list with one record per (dataset, model, method)
holding at least dataset, model, method, n_pairs, threshold, fg_iou, miou, msc (percent),
inverted_rate, pointing_game (fractions), deletion_auc, insertion_auc (null where not computed).
The CSV has the same keys and values, so a script reads one name and one unit in either; what a
person reads (the OUT.md table, printouts, pages, figures) shows "mSC %", "inverted %" and
"pointing %" (`eclip.report.units`).
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from eclip.errors import EvaluationError
from eclip.writing import atomic_write_text

#: The contracted keys, in the order tables show them.
CONTRACT = ("dataset", "model", "method", "n_pairs", "threshold", "fg_iou", "miou", "msc", "inverted_rate", "pointing_game",
            "deletion_auc", "insertion_auc")


def csv_text(records: Sequence[dict]) -> str:
    """The records' scalar fields as CSV: the contracted columns first, then the others in first-seen order."""
    columns = list(CONTRACT)
    for r in records:
        columns += [k for k, v in r.items() if k not in columns and not isinstance(v, (list, dict))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if r.get(k) is None else r.get(k) for k in columns} for r in records])
    return buffer.getvalue()


def output_paths(out: Path) -> dict[str, Path]:
    """OUT.json, OUT.csv and OUT.md (the table `eclip.report.tables` writes) for `-o OUT.json`."""
    out = Path(out)
    base = out.with_suffix("") if out.suffix == ".json" else out
    return {"json": base.with_name(base.name + ".json"), "csv": base.with_name(base.name + ".csv"),
            "md": base.with_name(base.name + ".md")}


def write_results(records: Sequence[dict], out: Path) -> dict[str, Path]:
    """Write OUT.json and OUT.csv (each atomically); returns the paths of `output_paths`."""
    paths = output_paths(out)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths["json"], json.dumps(list(records), indent=2) + "\n")
    atomic_write_text(paths["csv"], csv_text(records))
    return paths


def read_results(paths: Sequence[Path]) -> list[dict]:
    """Records of one or more OUT.json files, in order."""
    records = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise EvaluationError(f"{path}: unreadable results ({err}); pass a JSON file written by `eclip evaluate`") from err
        if not isinstance(data, list) or not all(isinstance(r, dict) and "method" in r for r in data):
            raise EvaluationError(f"{path}: not a list of evaluation records; pass a JSON file written by `eclip evaluate`")
        records += data
    return records
