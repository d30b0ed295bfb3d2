"""`eclip shift`: the semantic-shift report of one or more models on a dataset with masks."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from eclip.cli.app import app
from eclip.data.synthetic import TEST_SEED, VALIDATION_SEED
from eclip.errors import DatasetError


def open_samples(data: Path | None, dataset: str, n: int, seed: int, scene_size: int):
    """(samples, classnames, description): the first `n` images of a dataset folder, or `n` held-out synthetic scenes of `seed`.

    Images a dataset cannot use are skipped (they are reported by the caller from `skipped`).
    """
    from eclip.data.registry import open_dataset
    from eclip.data.synthetic import CLASSNAMES
    from eclip.shift import synthetic_samples

    if data is None:
        return synthetic_samples(seed, n, scene_size), list(CLASSNAMES), f"{n} synthetic scenes, seed {seed}, {scene_size} px", []
    opened = open_dataset(dataset, data, limit=n)
    samples = list(opened)
    if not samples:
        raise DatasetError(f"{data}: no usable image among its first {len(opened)} ({len(opened.skipped)} skipped); "
                           "check the folder, or pass another DATA")
    return samples, list(opened.classnames), f"{len(samples)} images of {data}", list(opened.skipped)


def markdown_table(rows: list[dict]) -> str:
    """Rows of {model, method, metrics...} -> a Markdown table (percentages for rates)."""
    lines = ["| model | map | inverted | mSC | fg IoU (thr) | pointing | zero-shot |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {100 * r['inverted_rate']:.1f}% | {r['score_contrast']:+.3f} | "
                     f"{r['fg_iou']:.3f} ({r['threshold']:.2f}) | {100 * r['pointing']:.1f}% | {100 * r['zero_shot']:.1f}% |")
    return "\n".join(lines)


@app.command("shift")
def shift_command(
    data: Path = typer.Argument(None, help="A dataset folder with masks (`eclip synth` writes one; see --dataset); "
                                           "default: held-out synthetic scenes."),
    dataset: str = typer.Option("synthetic", "--dataset", "-d", help="What DATA is: synthetic, voc, coco or context."),
    model: list[str] = typer.Option(["synth-vit"], "--model", "-m",
                                    help="Model(s) to compare, e.g. --model synth-vit --model synth-vit-eclip."),
    pretrained: str = typer.Option(None, "--pretrained", help="open_clip tag or checkpoint file, for open_clip names."),
    method: list[str] = typer.Option(["itsm", "free_attention"], "--method", help="Maps to measure (see `eclip methods`)."),
    n: int = typer.Option(300, "--n", min=1, help="Images to use: held-out scenes to draw, or the first N of DATA."),
    seed: int = typer.Option(TEST_SEED, "--seed", min=0,
                             help="Seed of the held-out synthetic scenes: the test seed by default (the bundled models trained on "
                                  f"1000 and 1001 and their settings were chosen on {VALIDATION_SEED})."),
    scene_size: int = typer.Option(96, "--scene-size", min=16, max=4096, help="Pixels per side of the held-out synthetic scenes."),
    template: str = typer.Option("single", "--template", help="Prompt template set or a template with {}."),
    figure: int = typer.Option(6, "--figure", min=0, help="Rows of the before/after figure (0: none)."),
    out: Path = typer.Option(Path("eclip-shift"), "--out", "-o", help="Output folder: shift.json, shift.md, shift.png."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
) -> None:
    """Inverted rate and mean score contrast of each model's maps (ITSM by default) next to the free attention.

    Per (image, class present) the map is min-max normalised; inverted = mean inside the class
    mask lower than outside; score contrast = mean inside - mean outside (negative: the map
    prefers the background, ECLIP's "opposite visualization"). Also: foreground IoU at the best
    threshold, pointing game, and zero-shot accuracy of each model's own embedding.
    """
    from eclip.cli.checks import check_methods, check_template
    from eclip.device import resolve_device
    from eclip.writing import atomic_write_text, check_output_folder

    check_template(template)
    resolve_device(device)
    check_output_folder(out)
    check_methods(method)

    from eclip.methods.base import get_method
    from eclip.models.loading import load_model
    from eclip.shift import Panel, measure, shift_figure

    samples, classnames, described, skipped = open_samples(data, dataset, n, seed, scene_size)
    methods = {name: get_method(name) for name in method}
    models = {name: load_model(name, pretrained, device=device) for name in model}
    rows = []
    for name, adapter in models.items():
        result = measure(adapter, methods, samples, classnames, template, batch_size=batch_size)
        rows += [{"model": name, "method": m, **result[m], "zero_shot": result["zero_shot"]["top1"]} for m in methods]
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    atomic_write_text(out / "shift.json", json.dumps({"data": described, "classnames": classnames, "rows": rows,
                                                       "skipped": [list(s) for s in skipped]}, indent=2))
    atomic_write_text(out / "shift.md", f"Semantic shift on {described}\n\n{table}\n")
    if figure:
        first = next(iter(methods))
        panels = [Panel(f"{name} · {first}", adapter, methods[first]) for name, adapter in models.items()]
        if "free_attention" in methods and first != "free_attention":
            name, adapter = next(iter(models.items()))
            panels.append(Panel(f"{name} · free attention", adapter, methods["free_attention"]))
        shift_figure(samples[:figure], panels, classnames, out / "shift.png", template)
    for image_id, reason in skipped[:20]:
        typer.echo(f"eclip: skipped {image_id}: {reason}", err=True)
    typer.echo(f"Semantic shift on {described}\n{table}\nwrote {out}/shift.json, shift.md" + (", shift.png" if figure else ""))
    if skipped:
        raise typer.Exit(code=1)
