"""The library side of `eclip evaluate`: run one evaluation and write its results next to OUT.json.

`eclip.evaluation.evaluate` computes the records; this adds what a run on disk needs around it:
joining the torchrun process group when there is one (each rank takes a slice of the images),
the partial-results file that makes the run resumable, and the outputs (OUT.json and OUT.csv by
`eclip.evaluation.write_results`, the OUT.md table by `eclip.report.tables`), written by rank 0.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from eclip.evaluation import EvalConfig


@dataclass
class Evaluated:
    """The records of a run and, on rank 0, the files written ({json, csv, md}; None on the other ranks)."""

    records: list[dict]
    paths: dict[str, Path] | None


def evaluate_to(config: EvalConfig, out: Path, *, resume: bool = False, progress: bool = True) -> Evaluated:
    """Evaluate `config` (resuming OUT.partial.json when `resume`) and write OUT.json, OUT.csv and OUT.md.

    Under torchrun each rank joins the group on its own device (`config.device`, cuda:LOCAL_RANK
    for CUDA), keeps its own partial file, and the records are summed over ranks; the partial
    files are removed once the records are written.
    """
    from eclip.distributed import init_distributed, leave_distributed, world
    from eclip.evaluation import evaluate, partial_path, write_results
    from eclip.evaluation.output import output_paths
    from eclip.report.tables import write_markdown
    from eclip.writing import check_output_file, remove_stale_temps

    device, joined = init_distributed(config.device)
    try:
        rank, size = world()
        partial = check_output_file(partial_path(out, rank, size), option="partial-results file")
        remove_stale_temps(partial.parent, [partial.name] + ([p.name for p in output_paths(out).values()] if rank == 0 else []))
        records = evaluate(dataclasses.replace(config, device=device), partial=partial, resume=resume, progress=progress)
    finally:
        leave_distributed(joined)
    paths = None
    if rank == 0:
        paths = write_results(records, out)
        write_markdown(records, paths["md"])
    partial.unlink(missing_ok=True)
    return Evaluated(records, paths)
