"""`eclip demo`: the README's first command; vanilla ITSM, its fine-tunes' ITSM and free attention per sample image."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from eclip.cli.app import app


def fine_tunes(name: str) -> list[str]:
    """The bundled fine-tunes of bundled model `name`, ECLIP's masked max first (read from their config.json)."""
    from eclip.models.loading import bundled_fine_tunes

    return bundled_fine_tunes().get(name, [])


@app.command("demo")
def demo_command(
    data: Path = typer.Argument(None, help="A dataset folder with masks written by `eclip synth` (default: the bundled samples)."),
    model: list[str] = typer.Option(["synth-vit", "synth-rn"], "--model", "-m",
                                    help="Vanilla model(s); each is shown next to its bundled fine-tunes: '-eclip' (ECLIP's "
                                         "masked max pooling) and any other head (e.g. '-avg')."),
    out: Path = typer.Option(Path("eclip-demo"), "--out", "-o", help="Output folder: one PNG per image, contrasts.json."),
    template: str = typer.Option("single", "--template", help="Prompt template set or a template with {}."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
) -> None:
    """Per image and class present: vanilla ITSM | ECLIP ITSM | other fine-tunes' ITSM | free attention, with score contrasts."""
    from eclip.cli.checks import check_template
    from eclip.device import resolve_device
    from eclip.writing import atomic_write_text, check_output_folder

    check_template(template)
    resolve_device(device)
    check_output_folder(out)

    from tqdm import tqdm

    from eclip.data.bundled import samples_root
    from eclip.data.synthetic import SyntheticDataset
    from eclip.demo import mean_contrasts, story_figure
    from eclip.methods.base import get_method
    from eclip.models.loading import load_model
    from eclip.shift import Panel

    dataset = SyntheticDataset(data or samples_root())
    classnames = list(dataset.classnames)
    itsm, free = get_method("itsm"), get_method("free_attention")
    panels: list[Panel] = []
    for name in model:
        vanilla = load_model(name, device=device)
        panels.append(Panel(f"{name} ITSM", vanilla, itsm))
        partners = fine_tunes(name)
        if f"{name}-eclip" not in partners:
            typer.echo(f"eclip: no ECLIP fine-tune of {name} is bundled; showing it without", err=True)
        panels += [Panel(f"{partner} ITSM", load_model(partner, device=device), itsm) for partner in partners]
        panels.append(Panel(f"{name} free attn", vanilla, free))
    out.mkdir(parents=True, exist_ok=True)
    per_image = {}
    for sample in tqdm(dataset, total=len(dataset), desc="demo", unit="image", file=sys.stderr):
        per_image[sample.image_id] = story_figure(sample, panels, classnames, out / f"{sample.image_id}.png", template)
    for path, reason in dataset.skipped:
        typer.echo(f"eclip: skipped {path}: {reason}", err=True)
    means = mean_contrasts(list(per_image.values()))
    atomic_write_text(out / "contrasts.json", json.dumps({"per_image": per_image, "mean": means}, indent=2))
    lines = [f"  {title:<28} {value:+.3f}" for title, value in means.items()]
    typer.echo("mean score contrast over the (image, class) pairs (> 0: the map is on the object)\n" + "\n".join(lines))
    typer.echo(f"wrote {len(per_image)} figures to {out}/")
    if dataset.skipped:
        raise typer.Exit(code=1)
