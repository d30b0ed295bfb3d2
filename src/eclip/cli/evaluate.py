"""`eclip evaluate`: score explanation maps against a dataset's masks; one record per (dataset, model, method)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from eclip.cli import options
from eclip.cli.app import app


def _one_of(choices: str) -> Callable[[str], str]:
    """A check that an option's value is one of `eclip.evaluation.config.<choices>` (read when an evaluation runs, not for --help)."""
    def check(value: str) -> str:
        from eclip.evaluation import config

        known = getattr(config, choices)
        if value not in known:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(known)}")
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


@app.command("evaluate", short_help="Score explanation maps against a dataset's masks.")
def evaluate_command(
    dataset: str = typer.Option("synthetic", "--dataset", "-d", metavar="NAME",
                                help="voc, coco, context, synthetic (a folder `eclip synth` wrote); for segmentation also "
                                     "voc21, context60, coco_object, coco_stuff, ade20k, cityscapes."),
    root: Path = typer.Option(..., "--root", metavar="DIR",
                              help="The dataset folder (e.g. VOCdevkit/VOC2012, the COCO folder, an `eclip synth` folder)."),
    model: list[str] = options.models(None, "Model(s) to explain; repeat for several (default synth-vit, none with --maps)."),
    method: list[str] = options.methods(["itsm"], "Explanation method(s), each run on every model (see `eclip methods`)."),
    maps: Path = typer.Option(None, "--maps", metavar="DIR", callback=_maps_folder,
                              help="Also score maps made by any tool: DIR/<image_id>.npz, one (H, W) array in [0, 1] per present "
                                   "class name."),
    pretrained: str = options.pretrained(),
    limit: int = typer.Option(None, "--limit", metavar="N", min=1, help="Evaluate only the first N images."),
    out: Path = options.out_file(Path("eclip-eval/results.json"), "OUT.json; OUT.csv and OUT.md are written next to it."),
    template: str = options.template(help=f"{options.TEMPLATE_HELP} Default: imagenet (the 80 CLIP templates); single for "
                                          "synthetic."),
    batch_size: int = options.batch_size(16),
    workers: int = options.workers("DataLoader processes decoding the images ahead of the model (0: in this process); the results "
                                   "do not change."),
    precision: str = options.precision("fp32", options.MAPS_PRECISION_HELP),
    device: str = options.device(),
    threshold_step: float = typer.Option(0.05, "--threshold-step", metavar="STEP", min=0.001, max=1.0, callback=_threshold_step,
                                         help="Step of the IoU threshold grid 0..1 (it must divide 1)."),
    pointing_tolerance: int = typer.Option(0, "--pointing-tolerance", metavar="PIXELS", min=0, max=1000,
                                           help="Pointing-game tolerance in pixels (Zhang et al. 2016 used 15 at 224 px)."),
    perturbation: bool = typer.Option(True, "--perturbation/--no-perturbation",
                                      help="Compute deletion / insertion AUC (2 x steps forward passes per pair)."),
    deletion_steps: int = typer.Option(10, "--deletion-steps", metavar="N", min=1, help="Steps of the deletion / insertion curves."),
    baseline: str = typer.Option("blur", "--perturbation-baseline", metavar="NAME", callback=_one_of("BASELINES"),
                                 help="What removed pixels become: blur or mean (colour)."),
    score: str = typer.Option("cosine", "--perturbation-score", metavar="NAME", callback=_one_of("SCORES"),
                              help="Score deletion / insertion follow: cosine (image-text), logit (times CLIP's logit scale) or "
                                   "probability (softmax over the classes)."),
    perturbation_batch: int = typer.Option(64, "--perturbation-batch", metavar="N", min=1, help="Perturbed images per forward pass."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from OUT.partial.json."),
    checkpoint_every: int = typer.Option(20, "--checkpoint-every", metavar="N", min=1, help="Write OUT.partial.json every N batches."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    task: str = typer.Option("classes", "--task", metavar="NAME", callback=_one_of("TASKS"),
                             help="classes: each class present against its mask; phrases (synthetic only): each object's phrase "
                                  "('a red star') against its instance mask; segmentation: each pixel takes the class whose raw map "
                                  "is highest, scored as mIoU over the dataset (each method under its paper's protocol)."),
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

    `--task segmentation` is the open-vocabulary segmentation benchmark of SCLIP, ClearCLIP,
    NACLIP and CLIPtrase instead: each pixel takes the class whose raw map is highest among all
    the dataset's classes, and the records hold mIoU, pixel accuracy and mean class accuracy of
    one confusion matrix over the dataset.
    """
    from eclip.cli.checks import up_front
    from eclip.evaluation.output import output_paths

    up_front(inputs=[root], out_files=list(output_paths(out).values()), template=template, models=model or (), pretrained=pretrained,
             methods=method, precision=precision, device=device)

    from eclip.evaluate import evaluate_to
    from eclip.evaluation import EvalConfig
    from eclip.report.tables import markdown_table

    config = EvalConfig(dataset=dataset, root=root, models=list(model) if model else ([] if maps is not None else ["synth-vit"]),
                        methods=list(method), maps_dir=maps, pretrained=pretrained, limit=limit, templates=template,
                        batch_size=batch_size, device=device, threshold_step=threshold_step, pointing_tolerance=pointing_tolerance,
                        perturbation=perturbation, deletion_steps=deletion_steps, perturbation_baseline=baseline,
                        perturbation_score=score, perturbation_batch=perturbation_batch, checkpoint_every=checkpoint_every, task=task,
                        workers=workers, precision=precision)
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
