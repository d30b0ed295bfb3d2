"""The benchmarks' JSON files: a list of records, each run appended, so one file keeps every machine's results."""
from __future__ import annotations

import json
from pathlib import Path

from eclip.writing import atomic_write_text


def append_record(path: Path, record: dict) -> None:
    """Add `record` to the JSON list at `path` (created with its folder if missing), written atomically."""
    path = Path(path)
    records = json.loads(path.read_text()) if path.exists() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(records + [record], indent=1) + "\n")
