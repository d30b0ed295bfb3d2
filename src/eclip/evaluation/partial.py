"""The partial-results file: how far each source got, and its metric states, written atomically.

An evaluation of a large dataset can be killed at any time; what it has measured so far is in
`OUT.partial.json` (one file per rank under `torchrun`), written every few batches under a
temporary name and renamed, so the file on disk is always a complete earlier state. Resuming
(`eclip evaluate --resume`) reloads it and continues after the last image it counts, provided
the run is the same one (the fingerprint: dataset, options, models, methods, shard).
"""
from __future__ import annotations

import json
from pathlib import Path

from eclip.errors import EvaluationError
from eclip.writing import atomic_write_text

FORMAT = "eclip-eval-partial/1"


def partial_path(out: Path, rank: int = 0, world: int = 1) -> Path:
    """OUT.partial.json next to OUT.json, or OUT.partial.rank<R>.json for rank R of several."""
    out = Path(out)
    suffix = ".partial.json" if world == 1 else f".partial.rank{rank}.json"
    return out.with_name(out.stem + suffix)


def save_partial(path: Path, fingerprint: dict, sources: dict) -> None:
    """Write {format, fingerprint, sources} to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"format": FORMAT, "fingerprint": fingerprint, "sources": sources}))


def load_partial(path: Path, fingerprint: dict) -> dict:
    """The saved sources of `path` (empty when there is no file); an error when it belongs to another run."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EvaluationError(f"{path}: unreadable partial results ({err}); delete it, or start over instead of resuming") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EvaluationError(f"{path}: not an eclip partial-results file; delete it, or start over instead of resuming")
    saved = data.get("fingerprint", {})
    differ = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} then, {fingerprint.get(k)!r} now" for k in differ[:4])
        raise EvaluationError(f"{path}: was written by a different evaluation ({detail}); "
                              "rerun with the same options, or start over instead of resuming")
    return data.get("sources", {})
