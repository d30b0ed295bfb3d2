"""The evaluation loop: stream the dataset in batches, score every source's maps, checkpoint, reduce.

Memory is bounded by one batch whatever the dataset size: samples are decoded one at a time by
the dataset, a batch is explained and scored, and only the metrics' sums are kept. Under
`torchrun` rank r of W takes the images r, r + W, r + 2W, ... and the sums are added up over
ranks at the end (`torch.distributed.all_reduce`); rank 0 has the records. Each rank writes its
partial-results file every few batches, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from eclip.distributed import world
from eclip.errors import EclipError, EvaluationError
from eclip.evaluation.config import EvalConfig
from eclip.evaluation.partial import load_partial, save_partial
from eclip.evaluation.sources import MAX_EXAMPLES, FolderSource, ModelSource, Prepared, Source
from eclip.evaluation.suite import MetricSuite

logger = logging.getLogger(__name__)


def prepare(sample, classnames: list[str]) -> Prepared | str:
    """Check one sample and make its tensors; a string says why it cannot be evaluated (a counted skip)."""
    lookup = {c: i for i, c in enumerate(classnames)}
    unknown = [c for c in sample.masks if c not in lookup]
    if unknown:
        return f"class {unknown[0]!r} is not one of the dataset's {len(classnames)} classes"
    if not sample.masks:
        return "no class present"
    size = sample.size
    bad = [c for c, m in sample.masks.items() if np.shape(m) != size]
    if bad:
        return f"mask of {bad[0]!r} has shape {np.shape(sample.masks[bad[0]])}, the image is {size}"
    if sample.ignore is not None and np.shape(sample.ignore) != size:
        return f"ignore mask has shape {np.shape(sample.ignore)}, the image is {size}"
    classes = list(sample.masks)
    masks = np.stack([np.asarray(sample.masks[c], dtype=bool) for c in classes])
    ignore = None if sample.ignore is None else np.asarray(sample.ignore, dtype=bool)
    valid = ~ignore if ignore is not None else np.ones(size, dtype=bool)
    defined = [bool((m & valid).any() and (~m & valid).any()) for m in masks]  # as metrics.base.defined_pairs
    return Prepared(sample.image_id, sample.image, [lookup[c] for c in classes], classes, torch.from_numpy(masks),
                    None if ignore is None else torch.from_numpy(ignore), defined)


def _batches(dataset, indices: list[int], classnames: list[str], size: int) -> Iterator[tuple[list[Prepared], list[str], int]]:
    """(prepared samples, skip reasons, images consumed) per batch of `size` dataset indices."""
    from eclip.data.registry import SkippedImage

    for start in range(0, len(indices), size):
        batch, skips = [], []
        for index in indices[start : start + size]:
            try:
                sample = dataset[index]
            except SkippedImage as err:
                skips.append(f"{err.image_id}: {err.reason}")
                continue
            except (EclipError, OSError, ValueError) as err:  # a loader's unforeseen failure on one image: still a skip
                skips.append(f"image #{index}: {type(err).__name__}: {err}")
                continue
            prepared = prepare(sample, classnames)
            if isinstance(prepared, str):
                skips.append(f"{sample.image_id}: {prepared}")
            else:
                batch.append(prepared)
        yield batch, skips, len(indices[start : start + size])


class Evaluation:
    """One `EvalConfig` run; `run()` returns one record per (dataset, model, method).

    Args:
        config: what to evaluate.
        partial: the partial-results file of this rank (None: no checkpoints).
        resume: continue from `partial` if it exists.
        progress: show a progress bar on stderr (rank 0 only).
    """

    def __init__(self, config: EvalConfig, partial: Path | None = None, resume: bool = False, progress: bool = True) -> None:
        from eclip.data.registry import open_dataset

        self.config = config
        self.rank, self.world = world()
        if config.maps_dir is not None and not config.maps_dir.is_dir():
            raise EvaluationError(f"{config.maps_dir}: no such folder of maps; pass --maps DIR with DIR/<image_id>.npz files")
        if config.task == "phrases":
            from eclip.data.phrases import open_phrases

            self.dataset = open_phrases(config.dataset, config.root, limit=config.limit)
        else:
            self.dataset = open_dataset(config.dataset, config.root, limit=config.limit)
        self.classnames = list(self.dataset.classnames)
        self.indices = list(range(self.rank, len(self.dataset), self.world))
        self.partial, self.progress = partial, progress and self.rank == 0
        self.fingerprint = json.loads(json.dumps(config.fingerprint(len(self.dataset), self.world, self.rank), default=str))
        self.saved = load_partial(partial, self.fingerprint) if (resume and partial is not None) else {}
        self.sources: list[Source] = [ModelSource(m, config, self.classnames) for m in config.models]
        if config.maps_dir is not None:
            self.sources.append(FolderSource(config.maps_dir))

    def new_suite(self, source: Source) -> MetricSuite:
        perturbation = self.config.perturbation and isinstance(source, ModelSource)
        return MetricSuite(self.config.threshold_step, self.config.pointing_tolerance,
                           self.config.deletion_steps if perturbation else None)

    def _entry(self, source: Source) -> dict:
        """The saved progress of `source`, or a fresh one."""
        entry = self.saved.get(source.key)
        if entry is None:
            entry = {"done": 0, "complete": False, "seconds": 0.0, "skip_examples": [], "notes": [], "unavailable": {},
                     "suites": {m: self.new_suite(source).to_json() for m in source.methods}}
            self.saved[source.key] = entry
        return entry

    def _checkpoint(self) -> None:
        if self.partial is not None:
            save_partial(self.partial, self.fingerprint, self.saved)

    def _run_source(self, source: Source, entry: dict, suites: dict[str, MetricSuite]) -> None:
        from tqdm import tqdm

        source.open()
        entry["unavailable"] = source.unavailable()
        for why in entry["unavailable"].values():
            logger.warning("%s: %s; its record will be empty", source.model_label, why)
        active = {m: s for m, s in suites.items() if m not in entry["unavailable"]}
        todo = self.indices[entry["done"] :] if active else []
        bar = tqdm(total=len(self.indices), initial=entry["done"], desc=f"evaluate {source.model_label}", unit="image",
                   file=sys.stderr, disable=not self.progress, dynamic_ncols=True)
        started = time.perf_counter()
        good = {m: s.to_json() for m, s in suites.items()}  # the state after the last complete batch
        try:
            for step, (batch, skips, consumed) in enumerate(_batches(self.dataset, todo, self.classnames, self.config.batch_size), 1):
                if batch and active:
                    source.update(batch, active)
                for suite in suites.values():
                    suite.counts.update(skipped=len(skips))
                entry["skip_examples"] = (entry["skip_examples"] + skips)[:MAX_EXAMPLES]
                entry["notes"] = (entry["notes"] + source.notes)[:MAX_EXAMPLES]
                source.notes.clear()
                entry["done"] += consumed
                good = {m: s.to_json() for m, s in suites.items()}
                bar.update(consumed)
                if step % self.config.checkpoint_every == 0:
                    self._save(entry, good, started)
                    started = time.perf_counter()
        except BaseException:  # killed or failed mid-batch: keep everything up to the last complete batch
            self._save(entry, good, started)
            raise
        finally:
            bar.close()
        entry["complete"] = True
        self._save(entry, good, started)

    def _save(self, entry: dict, states: dict[str, dict], started: float) -> None:
        entry["seconds"] += time.perf_counter() - started
        entry["suites"].update(states)
        self._checkpoint()

    def run(self) -> list[dict]:
        """Evaluate every source (resuming saved ones), reduce over ranks, and return the records."""
        results = []
        for source in self.sources:
            entry = self._entry(source)
            suites = {m: self.new_suite(source).load_json(entry["suites"][m]) for m in source.methods}
            if not entry["complete"]:
                self._run_source(source, entry, suites)
            results.append((source, entry, suites))
        return [self._record(source, entry, method, suite) for source, entry, suites in results
                for method, suite in self._reduced(entry, suites).items()]

    def _reduced(self, entry: dict, suites: dict[str, MetricSuite]) -> dict[str, MetricSuite]:
        """Suites summed over ranks; examples and seconds gathered (no-op in one process)."""
        import torch.distributed as dist

        if self.world == 1 or not (dist.is_available() and dist.is_initialized()):
            return suites

        for suite in suites.values():
            suite.all_reduce()
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, {k: entry[k] for k in ("skip_examples", "notes", "seconds")})
        entry["skip_examples"] = [x for g in gathered for x in g["skip_examples"]][:MAX_EXAMPLES]
        entry["notes"] = [x for g in gathered for x in g["notes"]][:MAX_EXAMPLES]
        entry["seconds"] = max(g["seconds"] for g in gathered)
        return suites

    def _record(self, source: Source, entry: dict, method: str, suite: MetricSuite) -> dict:
        c = self.config
        record = {"dataset": self.dataset.name or c.dataset, "model": source.model_label, "method": method, **suite.scores()}
        perturbation = c.perturbation and isinstance(source, ModelSource)
        record.update({
            "task": c.task,
            "templates": c.template_set if isinstance(source, ModelSource) else None,
            "threshold_step": c.threshold_step,
            "pointing_tolerance": c.pointing_tolerance,
            "deletion_steps": c.deletion_steps if perturbation else None,
            "perturbation_baseline": c.perturbation_baseline if perturbation else None,
            "perturbation_score": c.perturbation_score if perturbation else None,
            "limit": c.limit,
            "root": str(c.root),
            "world_size": self.world,
            "seconds": round(entry["seconds"], 3),
            "skipped_examples": entry["skip_examples"],
            "missing_examples": entry["notes"],
        })
        if method in entry.get("unavailable", {}):
            record["error"] = entry["unavailable"][method]
        return record


def evaluate(config: EvalConfig, partial: Path | None = None, resume: bool = False, progress: bool = True) -> list[dict]:
    """Run `config` and return its records (see `Evaluation`); the library entry point of `eclip evaluate`."""
    return Evaluation(config, partial, resume, progress).run()
