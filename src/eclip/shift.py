"""The semantic shift, measured: an evaluation of the maps on held-out scenes, plus zero-shot accuracy.

ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046) shows that vanilla CLIP's image-text similarity
map (ITSM) lights up the background ("opposite visualization"). `measure` puts numbers on it, per
(image, class present in it), by the evaluation of `eclip evaluate` itself (`eclip.evaluation`:
the same class maps, the same `MetricSuite`, the same record keys): inverted rate, mean score
contrast (mSC, percent), foreground IoU and binary mIoU at the best threshold, pointing game; and
next to them the zero-shot accuracy of the model's own pooled embedding
(`eclip.evaluation.zeroshot`), so a fix of the map that costs recognition shows. This module is
the library side of `eclip shift` (`shift_report`) and of the ECLIP ablation
(`bench/eclip_ablation.py`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eclip.data.sample import Sample
from eclip.evaluation.maps import Panel, panel_maps, prepare
from eclip.evaluation.runner import SampleList
from eclip.methods.base import Method
from eclip.models.adapter import DenseCLIP


def synthetic_samples(seed: int, n: int, image_size: int = 96, max_objects: int = 3) -> list[Sample]:
    """`n` held-out synthetic scenes of `seed` as Samples (rendered in memory, exact masks)."""
    from PIL import Image

    from eclip.data.synthetic import SceneConfig, SceneStream

    config = SceneConfig(image_size=image_size, max_objects=max_objects)
    return [Sample(image_id=f"{seed}-{i}", image=Image.fromarray(scene.image), masks=dict(scene.class_masks),
                   meta={"caption": scene.caption})
            for i, scene in enumerate(SceneStream(seed, config, count=n))]


def measure(
    model: DenseCLIP,
    methods: dict[str, Method],
    samples: Sequence[Sample],
    classnames: Sequence[str],
    templates: str | Sequence[str] | None = "single",
    batch_size: int = 32,
    *,
    dataset: str = "samples",
    model_label: str | None = None,
    threshold_step: float = 0.05,
    pointing_tolerance: int = 0,
    progress: bool = False,
    precision: str = "fp32",
) -> dict[str, dict]:
    """Evaluate each method's maps of `model` on `samples`, and the model's zero-shot accuracy.

    Every class of `classnames` is one text (prompt `templates`; None: verbatim); each class
    present in an image is explained on its own, its map min-max normalised and resized to the
    image, and scored by `eclip.evaluation.Evaluation` as `eclip evaluate` scores it (no
    deletion / insertion).

    Returns {method label: record, "zero_shot": {top1, top1_single, n, n_single}}, where each
    record has the keys of an `eclip evaluate` record: dataset (`dataset`), model (`model_label`,
    default `model.name`), method (the key of `methods`), n_pairs, threshold, fg_iou, miou, msc
    (percent, higher is better), inverted_rate (lower is better), pointing_game, deletion_auc and
    insertion_auc (None), n_images, skipped, missing, degenerate_pairs, fg_iou_by_threshold, the
    options (templates, threshold_step, ...; root and limit None) and seconds. Before this
    shape, `measure` returned {pairs, score_contrast (fraction), inverted_rate, fg_iou,
    threshold, pointing}: pairs is now n_pairs, score_contrast is msc / 100, pointing is
    pointing_game.

    Inside a torchrun process group every rank must call it: the samples are then sharded and
    the sums added up as `eclip evaluate` does.
    """
    from eclip.evaluation import EvalConfig, Evaluation
    from eclip.evaluation.sources import ModelSource
    from eclip.evaluation.zeroshot import zero_shot_accuracy

    label = model_label or model.name
    config = EvalConfig(dataset, None, models=[label], methods=list(methods), templates="{}" if templates is None else templates,
                        batch_size=batch_size, device=str(model.device), threshold_step=threshold_step,
                        pointing_tolerance=pointing_tolerance, perturbation=False, precision=precision)
    source = ModelSource(label, config, classnames, model=model, explainers=dict(methods))
    evaluation = Evaluation(config, progress=progress, dataset=SampleList(samples, classnames, dataset), sources=[source])
    out: dict[str, dict] = {record["method"]: record for record in evaluation.run()}
    out["zero_shot"] = zero_shot_accuracy(model, samples, classnames, templates, batch_size=batch_size, text=source.text)
    return out


def shift_figure(
    samples: Sequence[Sample],
    panels: Sequence[Panel],
    classnames: Sequence[str],
    out: Path,
    templates: str | Sequence[str] | None = "single",
) -> Path:
    """A grid: per sample (rows), the image with its first class's mask outlined, then each panel's map
    of that class captioned with its SC % (the samples explained as one batch by `panel_maps`).

    `panels` are e.g. ITSM of the vanilla model, ITSM of the ECLIP model, and the free attention.
    """
    from eclip.report.overlay import map_grid
    from eclip.report.units import SC_CAPTION, format_sc

    batch = [p for p in (prepare(s, classnames) for s in samples) if not isinstance(p, str)]
    by_panel = [(cm.per_sample(), cm.contrasts()) for cm in panel_maps(panels, batch, classnames, templates)]
    rows = [(p.image, p.masks[0].numpy(), f"{p.image_id} · '{p.classes[0]}'",
             [(format_sc(float(contrasts[i][0])), maps[i][0].numpy()) for maps, contrasts in by_panel])
            for i, p in enumerate(batch)]
    return map_grid(rows, [panel.title for panel in panels], out, title=f"Semantic shift, one image per row · {SC_CAPTION}")


def open_samples(data: Path | None, dataset: str, n: int, seed: int, scene_size: int
                 ) -> tuple[SampleList, str, list[tuple[str, str]]]:
    """(samples, description, skipped): the first `n` images of a dataset folder, decoded, or `n` held-out
    synthetic scenes of `seed`; `skipped` are the (image id, reason) of the images a folder could not use."""
    from eclip.data.registry import open_dataset
    from eclip.data.synthetic import CLASSNAMES
    from eclip.errors import DatasetError

    if data is None:
        return (SampleList(synthetic_samples(seed, n, scene_size), CLASSNAMES, "synthetic"),
                f"{n} synthetic scenes, seed {seed}, {scene_size} px", [])
    opened = open_dataset(dataset, data, limit=n)
    samples = list(opened)
    if not samples:
        raise DatasetError(f"{data}: no usable image among its first {len(opened)} ({len(opened.skipped)} skipped); "
                           "check the folder, or give another one")
    return SampleList(samples, opened.classnames, opened.name), f"{len(samples)} images of {data}", list(opened.skipped)


@dataclass
class ShiftReport:
    """What `shift_report` measured and wrote: one record per (model, method), as `eclip evaluate` writes
    them plus `zero_shot` / `zero_shot_single` (the model's top-1 accuracy, a fraction) and `data`."""

    records: list[dict]
    described: str
    skipped: list[tuple[str, str]]
    files: list[Path]


def shift_report(
    out: Path,
    models: Sequence[str] = ("synth-vit",),
    methods: Sequence[str] = ("itsm", "free_attention"),
    *,
    data: Path | None = None,
    dataset: str = "synthetic",
    n: int = 300,
    seed: int | None = None,
    scene_size: int = 96,
    pretrained: str | None = None,
    templates: str | Sequence[str] | None = "single",
    figure: int = 6,
    batch_size: int = 32,
    device: str = "cpu",
    precision: str = "fp32",
) -> ShiftReport:
    """The library side of `eclip shift`: `measure` each model's maps by each method on a dataset
    folder (`data`, read as `dataset`) or on `n` held-out synthetic scenes of `seed` (the test seed
    by default), and write OUT/shift.json (the records; `eclip report` reads it), shift.csv,
    shift.md (`eclip.report.tables`) and shift.png (each model's first map next to the free
    attention, for the first `figure` samples; none for 0).
    """
    from eclip.data.synthetic import TEST_SEED
    from eclip.evaluation.output import write_results
    from eclip.evaluation.sources import MAX_EXAMPLES
    from eclip.methods.base import get_method
    from eclip.models.loading import load_model
    from eclip.report.tables import write_markdown

    seed = TEST_SEED if seed is None else seed
    samples, described, skipped = open_samples(data, dataset, n, seed, scene_size)
    explainers = {method.label: method for method in map(get_method, methods)}  # records keyed by the canonical label
    adapters = {name: load_model(name, pretrained, device=device) for name in models}
    records = []
    for name, adapter in adapters.items():
        result = measure(adapter, explainers, samples.samples, samples.classnames, templates, batch_size, dataset=samples.name,
                         model_label=name, precision=precision)
        zero_shot = result.pop("zero_shot")
        for record in result.values():
            record.update(data=described, zero_shot=zero_shot["top1"], zero_shot_single=zero_shot["top1_single"],
                          skipped=record["skipped"] + len(skipped),
                          skipped_examples=([f"{i}: {why}" for i, why in skipped] + record["skipped_examples"])[:MAX_EXAMPLES])
            if data is not None:
                record.update(root=str(data), limit=n)
            records.append(record)
    Path(out).mkdir(parents=True, exist_ok=True)
    paths = write_results(records, Path(out) / "shift.json")
    files = [paths["json"], paths["csv"], write_markdown(records, paths["md"], title=f"Semantic shift on {described}")]
    if figure:
        first = next(iter(explainers))
        panels = [Panel(f"{name} · {first}", adapter, explainers[first]) for name, adapter in adapters.items()]
        if "free_attention" in explainers and first != "free_attention":
            name, adapter = next(iter(adapters.items()))
            panels.append(Panel(f"{name} · free attention", adapter, explainers["free_attention"]))
        files.append(shift_figure(samples.samples[:figure], panels, samples.classnames, Path(out) / "shift.png", templates))
    return ShiftReport(records, described, skipped, files)
