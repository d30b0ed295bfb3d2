"""`eclip decompose` and `eclip textspan`: text-based decomposition of a ViT's image embedding."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from eclip.cli.app import app


@app.command("decompose")
def decompose_command(
    inputs: list[Path] = typer.Argument(None, help="Images or folders of images (default: the bundled sample scenes)."),
    text: list[str] = typer.Option(None, "--text", "-t", help="A text; repeat for several (default: the shape classes)."),
    model: str = typer.Option("synth-vit", "--model", "-m", help="Bundled name, open_clip name, hf-hub:ID or model folder (a ViT)."),
    pretrained: str = typer.Option(None, "--pretrained", help="open_clip tag, or a local open_clip checkpoint file."),
    template: str = typer.Option(None, "--template", help="Prompt template with {} (or a set: single, seven, imagenet)."),
    out: Path = typer.Option(Path("eclip-decompose"), "--out", "-o", help="Output folder."),
    size: int = typer.Option(None, "--size", help="Resize images to SIZE x SIZE before the model (default: the model's size)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
) -> None:
    """Split each image-text cosine into direct contributions (Gandelsman et al. 2024, arXiv 2310.05916).

    Writes OUT/<stem>_decomposition.csv (one row per text and term: the embedding, each layer's MLP,
    each layer's attention heads), OUT/<stem>_decomposition.md (per text, a layer x head table whose
    terms add up to the cosine) and OUT/<stem>_decomposition.png (the same as a figure, with each
    location's contribution over the image).
    """
    from eclip.cli.explain import default_texts, sample_images, unique_stems
    from eclip.data.images import iter_image_files, load_image
    from eclip.decompose import decompose_scores, write_tables
    from eclip.errors import ImageLoadError, MethodError
    from eclip.models.loading import load_model
    from eclip.prompts import encode_prompts
    from eclip.report.decomposition import decomposition_figure

    adapter = load_model(model, pretrained, device=device)
    if adapter.arch != "vit":
        raise MethodError(f"eclip decompose splits a ViT's embedding; {model} is a {adapter.arch} model (use a ViT)")
    texts = list(text) if text else default_texts(model)
    features = encode_prompts(adapter, texts, template)
    paths = iter_image_files(list(inputs) if inputs else sample_images(), recursive=recursive)
    names = unique_stems(paths)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in paths:
        try:
            image = load_image(path)
        except ImageLoadError as err:
            failed += 1
            typer.echo(f"eclip: skipped {path}: {err}", err=True)
            continue
        result = decompose_scores(adapter, adapter.preprocess([image], size=size), features, texts)[0]
        stem = out / f"{names[path]}_decomposition"
        write_tables(result, stem)
        decomposition_figure(image, result, stem.with_suffix(".png"))
    typer.echo(f"decomposed {len(paths) - failed} of {len(paths)} images on {adapter.name} -> {out}")
    if failed:
        raise typer.Exit(code=1)


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
    from eclip.cli.explain import sample_images
    from eclip.data.images import iter_image_files, load_image
    from eclip.errors import ImageLoadError, MethodError
    from eclip.models.loading import load_model
    from eclip.textspan import head_spans, text_pool

    adapter = load_model(model, pretrained, device=device)
    if adapter.arch != "vit":
        raise MethodError(f"eclip textspan studies a ViT's attention heads; {model} is a {adapter.arch} model (use a ViT)")
    texts = text_pool(dataset, template, pool)
    paths = iter_image_files(list(inputs) if inputs else sample_images(), recursive=recursive)
    skipped = []

    def batches():
        batch = []
        for path in paths:
            try:
                batch.append(load_image(path))
            except ImageLoadError as err:
                skipped.append(path)
                typer.echo(f"eclip: skipped {path}: {err}", err=True)
                continue
            if len(batch) == batch_size:
                yield adapter.preprocess(batch)
                batch = []
        if batch:
            yield adapter.preprocess(batch)

    spans = head_spans(adapter, batches(), texts, layers=layers, n_texts=texts_per_head, rank=rank)
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": adapter.name, "images": len(paths) - len(skipped), "pool": len(texts), "rank": rank,
              "heads": [s.to_json() for s in spans]}
    (out / "textspan.json").write_text(json.dumps(record, indent=2))
    lines = ["| layer | head | texts (in the order picked) | variance explained |", "|---:|---:|---|---:|"]
    lines += [f"| {s.layer} | {s.head} | {'; '.join(s.texts)} | {s.explained[-1]:.2f} |" for s in spans]
    (out / "textspan.md").write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines))
    typer.echo(f"TextSpan of {len(spans)} heads over {record['images']} images, pool of {len(texts)} texts -> {out}")
    if skipped:
        raise typer.Exit(code=1)
