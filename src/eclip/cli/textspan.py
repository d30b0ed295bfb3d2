"""`eclip textspan`: per attention head, the texts that span what it writes (Gandelsman et al. 2024)."""
from __future__ import annotations

from pathlib import Path

import typer

from eclip.cli import options
from eclip.cli.app import app


@app.command("textspan", short_help="Per attention head, the texts that span what it writes.")
def textspan_command(
    inputs: list[Path] = options.inputs("Images or folders of images the heads are studied on (default: the bundled sample scenes; "
                                        "give a few hundred for stable spans)."),
    model: str = options.model(help="Bundled name (see `eclip models`), open_clip name, hf-hub:ID or model folder (a ViT)."),
    pretrained: str = options.pretrained(),
    dataset: str = typer.Option("synthetic", "--dataset", "-d", metavar="NAME",
                                help="Whose class names make the text pool: synthetic, voc, coco, context."),
    template: str = options.template("imagenet"),
    pool: Path = typer.Option(None, "--pool", metavar="FILE",
                              help="A text file, one text per line, used as the pool instead of class names."),
    layers: int = options.layers(4, "Study the heads of the last N layers (at most the model's depth)."),
    texts_per_head: int = typer.Option(5, "--texts-per-head", metavar="N", min=1, help="Texts picked per head."),
    rank: int = typer.Option(80, "--rank", metavar="N", min=1, help="Rank of each head's output span the pool is projected on."),
    batch_size: int = options.batch_size(16),
    out: Path = options.out_folder(Path("eclip-textspan")),
    recursive: bool = options.recursive(),
    device: str = options.device(),
) -> None:
    """TextSpan (Gandelsman et al. 2024): per head of the last layers, texts from a pool that span its outputs.

    Writes OUT/textspan.json (per layer and head: the texts in the order picked and the share of
    the head's variance over the images they explain) and OUT/textspan.md.
    """
    from eclip.cli.checks import image_paths, up_front

    up_front(inputs=[*(inputs or ()), *([pool] if pool else [])], out=out, template=template, models=[model], pretrained=pretrained,
             device=device)
    from eclip.textspan import spans_table, text_pool, textspan_files

    texts = text_pool(dataset, template, pool)
    paths = image_paths(inputs, recursive)

    from eclip.errors import MethodError
    from eclip.models.loading import load_model

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
