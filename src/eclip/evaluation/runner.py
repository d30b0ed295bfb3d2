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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from eclip.batching import batched
from eclip.data.sample import Sample
from eclip.distributed import world
from eclip.errors import EclipError, EvaluationError
from eclip.evaluation.config import EvalConfig
from eclip.evaluation.maps import Prepared, prepare
from eclip.evaluation.partial import load_partial, save_partial
from eclip.evaluation.sources import MAX_EXAMPLES, FolderSource, ModelSource, Source
from eclip.evaluation.suite import MetricSuite, Suite

logger = logging.getLogger(__name__)


class SampleList:
    """Samples already in memory (e.g. held-out scenes drawn on the fly) read as the runner reads a dataset."""

    def __init__(self, samples: Sequence[Sample], classnames: Sequence[str], name: str) -> None:
        self.samples, self.classnames, self.name = list(samples), list(classnames), name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


class ClassPreparer:
    """Sample -> the class masks of the task "classes" / "phrases" (`eclip.evaluation.maps.prepare`), or why it has none;
    picklable, so DataLoader workers run it."""

    def __init__(self, classnames: list[str]) -> None:
        self.classnames = classnames

    def __call__(self, sample: Sample) -> Prepared | str:
        return prepare(sample, self.classnames)


class Task(Protocol):
    """What one kind of evaluation gives the loop: how a sample is prepared, who makes the maps, what scores them.

    The loop (`Evaluation`) is the same for every task; a task is built from the run's config, the
    dataset's name and its classes.

    Attributes:
        preparer: sample -> what the sources take, or why it cannot be scored (picklable: DataLoader workers run it).
    """

    preparer: Callable

    def sources(self) -> list[Source]:
        """The map makers the config names: a source per model, and the folder of maps if there is one."""

    def new_suite(self, source: Source) -> Suite:
        """A fresh metric suite for one (source, method)."""

    def record_fields(self, source: Source, method: str) -> dict:
        """The protocol fields of a record of `source` and `method` (how its numbers were made)."""


class ClassTask:
    """The tasks "classes" and "phrases": each (image, class present) pair's map scored against its mask (`MetricSuite`)."""

    def __init__(self, config: EvalConfig, dataset_name: str, classnames: list[str]) -> None:
        self.config, self.classnames = config, classnames
        self.preparer = ClassPreparer(classnames)

    def sources(self) -> list[Source]:
        c = self.config
        return [ModelSource(m, c, self.classnames) for m in c.models] + ([FolderSource(c.maps_dir)] if c.maps_dir is not None else [])

    def _perturbed(self, source: Source) -> bool:
        """Deletion / insertion need a model to score the perturbed images: a folder of maps has none."""
        return self.config.perturbation and isinstance(source, ModelSource)

    def new_suite(self, source: Source) -> Suite:
        c = self.config
        return MetricSuite(c.threshold_step, c.pointing_tolerance, c.deletion_steps if self._perturbed(source) else None)

    def record_fields(self, source: Source, method: str) -> dict:
        c = self.config
        perturbation = self._perturbed(source)
        return {
            "task": c.task,
            "templates": c.template_set if isinstance(source, ModelSource) else None,
            "threshold_step": c.threshold_step,
            "pointing_tolerance": c.pointing_tolerance,
            "deletion_steps": c.deletion_steps if perturbation else None,
            "perturbation_baseline": c.perturbation_baseline if perturbation else None,
            "perturbation_score": c.perturbation_score if perturbation else None,
        }


def task_for(config: EvalConfig, dataset_name: str, classnames: list[str]) -> Task:
    """The task `config.task` names, for this dataset."""
    if config.task == "segmentation":
        from eclip.evaluation.segment import SegmentationTask

        return SegmentationTask(config, dataset_name, classnames)
    return ClassTask(config, dataset_name, classnames)


def _batches(dataset, indices: list[int], preparer: Callable, size: int, workers: int = 0) -> Iterator[tuple[list, list[str], int]]:
    """(prepared samples, skip reasons, images consumed) per batch of `size` dataset indices: the one place the
    evaluation reads its dataset; `preparer` turns a sample into what the task's sources take. With `workers` > 0
    the batches are decoded and prepared by that many DataLoader processes ahead of the models (in order: the
    records are the same)."""
    chunks = list(batched(indices, size))
    if not workers:
        yield from map(_PreparedBatches(dataset, preparer), chunks)
        return
    import torch

    yield from torch.utils.data.DataLoader(_PreparedBatches(dataset, preparer, chunks), batch_size=None, num_workers=workers,
                                           collate_fn=lambda item: item, generator=torch.Generator())


class _PreparedBatches:
    """One batch of dataset indices -> (prepared samples, skip reasons, images consumed); item i: `chunks[i]`."""

    def __init__(self, dataset, preparer: Callable, chunks: list[list[int]] | None = None) -> None:
        self.dataset, self.preparer, self.chunks = dataset, preparer, chunks or []

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> tuple[list, list[str], int]:
        return self(self.chunks[i])

    def __call__(self, chunk: list[int]) -> tuple[list, list[str], int]:
        from eclip.data.registry import SkippedImage

        dataset = self.dataset
        batch, skips = [], []
        for index in chunk:
            try:
                sample = dataset[index]
            except SkippedImage as err:
                skips.append(f"{err.image_id}: {err.reason}")
                continue
            except (EclipError, OSError, ValueError) as err:  # a loader's unforeseen failure on one image: still a skip
                skips.append(f"image #{index}: {type(err).__name__}: {err}")
                continue
            prepared = self.preparer(sample)
            if isinstance(prepared, str):
                skips.append(f"{sample.image_id}: {prepared}")
            else:
                batch.append(prepared)
        return batch, skips, len(chunk)


def open_task_dataset(config: EvalConfig):
    """The dataset `config` names, as its task reads it: class masks (classes, segmentation), or (phrases) instance
    masks named by phrases."""
    if config.task == "phrases":
        from eclip.data.phrases import open_phrases

        return open_phrases(config.dataset, config.root, limit=config.limit)
    from eclip.data.registry import open_dataset

    return open_dataset(config.dataset, config.root, limit=config.limit)


class Evaluation:
    """One `EvalConfig` run; `run()` returns one record per (dataset, model, method).

    Args:
        config: what to evaluate.
        partial: the partial-results file of this rank (None: no checkpoints).
        resume: continue from `partial` if it exists.
        progress: show a progress bar on stderr (rank 0 only).
        dataset: the samples to read instead of opening `config.dataset` at `config.root` (e.g. a
            `SampleList`): anything with `classnames`, `name`, `len` and indexing.
        sources: the map makers instead of those `config` names (e.g. a `ModelSource` of a model
            already loaded).
    """

    def __init__(self, config: EvalConfig, partial: Path | None = None, resume: bool = False, progress: bool = True, *,
                 dataset=None, sources: Sequence[Source] | None = None) -> None:
        self.config = config
        self.rank, self.world = world()
        if config.maps_dir is not None and not config.maps_dir.is_dir():
            raise EvaluationError(f"{config.maps_dir}: no such folder of maps; give a folder of <image_id>.npz files")
        self.dataset = open_task_dataset(config) if dataset is None else dataset
        self.classnames = list(self.dataset.classnames)
        self.task = task_for(config, self.dataset_name, self.classnames)
        self.indices = list(range(self.rank, len(self.dataset), self.world))
        self.partial, self.progress = partial, progress and self.rank == 0
        self.fingerprint = json.loads(json.dumps(config.fingerprint(len(self.dataset), self.world, self.rank), default=str))
        self.saved = load_partial(partial, self.fingerprint) if (resume and partial is not None) else {}
        self.sources: list[Source] = list(sources) if sources is not None else self.task.sources()

    @property
    def dataset_name(self) -> str:
        return self.dataset.name or self.config.dataset

    def _entry(self, source: Source) -> dict:
        """The saved progress of `source`, or a fresh one."""
        entry = self.saved.get(source.key)
        if entry is None:
            entry = {"done": 0, "complete": False, "seconds": 0.0, "skip_examples": [], "notes": [], "unavailable": {},
                     "suites": {m: self.task.new_suite(source).to_json() for m in source.methods}}
            self.saved[source.key] = entry
        return entry

    def _checkpoint(self) -> None:
        if self.partial is not None:
            save_partial(self.partial, self.fingerprint, self.saved)

    def _run_source(self, source: Source, entry: dict, suites: dict[str, Suite]) -> None:
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
            for step, (batch, skips, consumed) in enumerate(_batches(self.dataset, todo, self.task.preparer, self.config.batch_size,
                                                                           self.config.workers), 1):
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
            suites = {m: self.task.new_suite(source).load_json(entry["suites"][m]) for m in source.methods}
            if not entry["complete"]:
                self._run_source(source, entry, suites)
            results.append((source, entry, suites))
        return [self._record(source, entry, method, suite) for source, entry, suites in results
                for method, suite in self._reduced(entry, suites).items()]

    def _reduced(self, entry: dict, suites: dict[str, Suite]) -> dict[str, Suite]:
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

    def _record(self, source: Source, entry: dict, method: str, suite: Suite) -> dict:
        c = self.config
        record = {"dataset": self.dataset_name, "model": source.model_label, "method": method, **suite.scores(),
                  **self.task.record_fields(source, method)}
        record.update({
            "limit": c.limit,
            "root": None if c.root is None else str(c.root),
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
