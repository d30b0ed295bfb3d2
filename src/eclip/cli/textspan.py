"""`eclip textspan`: per attention head, the texts that span what it writes (Gandelsman et al. 2024)."""
from __future__ import annotations

from pathlib import Path

import typer

from eclip.cli.app import app


@app.command("textspan")
def textspan_command(
    inputs: list[Path] = typer.Argument(None, help="Images or folders of images the heads are studied on (default: the "
                                                     "bundled sample scenes; give a few hundred for stable spans)."),
    model: str = typer.Option("synth-vit", "--model", "-m", help="Bundled name, open_clip name, hf-hub:ID or model folder (a ViT)."),
    pretrained: str = typer.Option(None, "--pretrained", help="open_clip tag, or a local open_clip checkpoint file."),
    dataset: str = typer.Option("synthetic", "--dataset", "-d",
                                help="Whose class names make the text pool: synthetic, voc, coco, context."),
    template: str = typer.Option("imagenet", "--template", help="Templates the class names are put in (a set or a template with {})."),
    pool: Path = typer.Option(None, "--pool", help="A text file, one text per line, used as the pool instead of class names."),
    layers: int = typer.Option(4, "--layers", min=1, help="Study the heads of the last LAYERS layers."),
    texts_per_head: int = typer.Option(5, "--texts-per-head", min=1, help="Texts picked per head."),
    rank: int = typer.Option(80, "--rank", min=1, help="Rank of each head's output span the pool is projected on."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per forward pass."),
    out: Path = typer.Option(Path("eclip-textspan"), "--out", "-o", help="Output folder."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
) -> None:
    """TextSpan (Gandelsman et al. 2024): per head of the last layers, texts from a pool that span its outputs.

    Writes OUT/textspan.json (per layer and head: the texts in the order picked and the share of
    the head's variance over the images they explain) and OUT/textspan.md.
    """
    from eclip.cli.checks import check_pretrained
    from eclip.cli.explain import image_paths
    from eclip.device import resolve_device
    from eclip.errors import MethodError
    from eclip.models.loading import load_model
    from eclip.textspan import spans_table, text_pool, textspan_files
    from eclip.writing import check_output_folder

    check_pretrained(model, pretrained)
    resolve_device(device)
    check_output_folder(out)
    texts = text_pool(dataset, template, pool)
    paths = image_paths(inputs, recursive)
    adapter = load_model(model, pretrained, device=device)
    if adapter.arch != "vit":
        raise MethodError(f"eclip textspan studies a ViT's attention heads; {model} is a {adapter.arch} model (use a ViT)")
    run = textspan_files(adapter, paths, texts, out, layers=layers, n_texts=texts_per_head, rank=rank, batch_size=batch_size)
    for failure in run.failures:
        typer.echo(f"eclip: skipped {failure.path}: {failure.reason}", err=True)
    typer.echo(spans_table(run.spans))
    typer.echo(f"TextSpan of {len(run.spans)} heads over {run.record['images']} images, pool of {len(texts)} texts -> {out}")
    if run.failures:
        raise typer.Exit(code=1)
