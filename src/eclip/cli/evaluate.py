"""`eclip evaluate`: score explanation maps against a dataset's masks; one record per (dataset, model, method)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import typer

from eclip.cli.app import app
from eclip.evaluation.config import BASELINES, SCORES, TASKS


def _one_of(choices: Sequence[str]) -> Callable[[str], str]:
    """A check that an option's value is one of `choices`."""
    def check(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


def _maps_folder(value: Path | None) -> Path | None:
    """--maps names an existing folder."""
    if value is not None and not value.is_dir():
        raise typer.BadParameter("no such folder; give a folder of <image_id>.npz files")
    return value


def _threshold_step(value: float) -> float:
    """--threshold-step must divide 1 (the grid 0, step, ..., 1 must exist)."""
    from eclip.evaluation.config import divides_one

    if not divides_one(value):
        raise typer.BadParameter("must divide 1, e.g. 0.05 or 0.01")
    return value


@app.command("evaluate")
def evaluate_command(
    dataset: str = typer.Option("synthetic", "--dataset", "-d", help="voc, coco, context or synthetic (a folder `eclip synth` wrote)."),
    root: Path = typer.Option(..., "--root", help="The dataset folder (e.g. VOCdevkit/VOC2012, the COCO folder, an `eclip synth` folder)."),
    model: list[str] = typer.Option(None, "--model", "-m",
                                    help="Model(s) to explain; repeat for several (default synth-vit, none with --maps)."),
    method: list[str] = typer.Option(["itsm"], "--method", help="Explanation method(s), each run on every model (see `eclip methods`)."),
    maps: Path = typer.Option(None, "--maps", callback=_maps_folder,
                              help="Also score maps made by any tool: DIR/<image_id>.npz, one (H, W) array in [0, 1] per present "
                                   "class name."),
    pretrained: str = typer.Option(None, "--pretrained", help="open_clip tag or checkpoint file, for open_clip model names."),
    limit: int = typer.Option(None, "--limit", min=1, help="Evaluate only the first N images."),
    out: Path = typer.Option(Path("eclip-eval/results.json"), "--out", "-o", help="OUT.json; OUT.csv and OUT.md are written next to it."),
    template: str = typer.Option(None, "--template", help="Prompt template set or template with {} (default: imagenet, "
                                                          "the 80 CLIP templates; single for synthetic)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    threshold_step: float = typer.Option(0.05, "--threshold-step", min=0.001, max=1.0, callback=_threshold_step,
                                         help="Step of the IoU threshold grid 0..1 (it must divide 1)."),
    pointing_tolerance: int = typer.Option(0, "--pointing-tolerance", min=0, max=1000, help="Pointing-game tolerance in pixels "
                                                                                   "(Zhang et al. 2016 used 15 at 224 px)."),
    perturbation: bool = typer.Option(True, "--perturbation/--no-perturbation",
                                      help="Compute deletion / insertion AUC (2 x steps forward passes per pair)."),
    deletion_steps: int = typer.Option(10, "--deletion-steps", min=1, help="Steps of the deletion / insertion curves."),
    baseline: str = typer.Option("blur", "--perturbation-baseline", callback=_one_of(BASELINES),
                                 help="What removed pixels become: blur or mean (colour)."),
    score: str = typer.Option("cosine", "--perturbation-score", callback=_one_of(SCORES),
                              help="Score deletion / insertion follow: cosine (image-text), logit (times CLIP's logit scale) or "
                                   "probability (softmax over the classes)."),
    perturbation_batch: int = typer.Option(64, "--perturbation-batch", min=1, help="Perturbed images per forward pass."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from OUT.partial.json."),
    checkpoint_every: int = typer.Option(20, "--checkpoint-every", min=1, help="Write OUT.partial.json every N batches."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    task: str = typer.Option("classes", "--task", callback=_one_of(TASKS),
                             help="classes: each class present against its mask; phrases (synthetic only): each object's phrase "
                                  "('a red star') against its instance mask."),
) -> None:
    """Explain every class present in each image with each model x method and score the maps.

    Metrics (the protocol of ECLIP, Li et al. 2022, arXiv 2209.07046): foreground IoU and binary
    mIoU at the threshold of the grid that maximises the mean foreground IoU (reported), mean
    score contrast mSC (percent), inverted rate, pointing game, and deletion / insertion AUC of
    the image-text cosine. Images stream in batches (memory bounded by one batch); unreadable
    images and bad masks are counted skips. Under `torchrun --nproc_per_node N eclip evaluate ...`
    each process takes every N-th image and the metrics are summed at the end. Writes OUT.json
    (one record per dataset x model x method), OUT.csv and OUT.md; OUT.partial.json holds the
    progress until the run completes.
    """
    from eclip.cli.checks import check_methods, check_template
    from eclip.device import resolve_device
    from eclip.evaluation.output import output_paths
    from eclip.writing import check_output_file

    check_template(template)
    resolve_device(device)
    for path in output_paths(out).values():
        check_output_file(path)
    check_methods(method)

    from eclip.evaluate import evaluate_to
    from eclip.evaluation import EvalConfig
    from eclip.report.tables import markdown_table

    config = EvalConfig(dataset=dataset, root=root, models=list(model) if model else ([] if maps is not None else ["synth-vit"]),
                        methods=list(method), maps_dir=maps, pretrained=pretrained, limit=limit, templates=template,
                        batch_size=batch_size, device=device, threshold_step=threshold_step, pointing_tolerance=pointing_tolerance,
                        perturbation=perturbation, deletion_steps=deletion_steps, perturbation_baseline=baseline,
                        perturbation_score=score, perturbation_batch=perturbation_batch, checkpoint_every=checkpoint_every, task=task)
    result = evaluate_to(config, out, resume=resume, progress=progress)
    if result.paths is None:  # another rank than 0 of torchrun: rank 0 reports
        return
    typer.echo(markdown_table(result.records))
    for r in result.records:
        if r.get("error"):
            typer.echo(f"eclip: {r['model']} / {r['method']}: {r['error']}", err=True)
        if r.get("skipped") or r.get("missing"):
            first = (r["skipped_examples"] or r["missing_examples"] or [""])[0]
            typer.echo(f"eclip: {r['model']} / {r['method']}: skipped {r['skipped']} image(s), {r['missing']} pair(s) "
                       f"without a map; e.g. {first}", err=True)
    typer.echo(f"wrote {result.paths['json']}, {result.paths['csv'].name}, {result.paths['md'].name}")
