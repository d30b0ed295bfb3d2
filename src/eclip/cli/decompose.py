"""`eclip decompose`: each image-text cosine split into direct contributions (Gandelsman et al. 2024)."""
from __future__ import annotations

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
    size: int = typer.Option(None, "--size", min=1, max=4096,
                             help="Resize images to SIZE x SIZE before the model (default: the model's size)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1,
                                   help="Images per forward pass (each holds layers x locations x heads contributions)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
) -> None:
    """Split each image-text cosine into direct contributions (Gandelsman et al. 2024, arXiv 2310.05916).

    Writes OUT/<stem>_decomposition.csv (one row per text and term: the embedding, each layer's MLP,
    each layer's attention heads), OUT/<stem>_decomposition.md (per text, a layer x head table whose
    terms add up to the cosine) and OUT/<stem>_decomposition.png (the same as a figure, with each
    location's contribution over the image).
    """
    from eclip.cli.checks import check_pretrained, check_template, check_texts
    from eclip.cli.explain import default_texts, image_paths
    from eclip.decompose import decompose_files
    from eclip.device import resolve_device
    from eclip.errors import MethodError
    from eclip.explain import Failure
    from eclip.models.loading import load_model
    from eclip.prompts import encode_prompts
    from eclip.writing import check_output_folder

    check_template(template)
    check_pretrained(model, pretrained)
    resolve_device(device)
    check_output_folder(out)
    texts = list(text) if text else default_texts(model)
    check_texts(texts)
    paths = image_paths(inputs, recursive)
    adapter = load_model(model, pretrained, device=device)
    if adapter.arch != "vit":
        raise MethodError(f"eclip decompose splits a ViT's embedding; {model} is a {adapter.arch} model (use a ViT)")
    features = encode_prompts(adapter, texts, template)
    failed = 0
    for result in decompose_files(adapter, paths, features, texts, out, batch_size=batch_size, size=size):
        if isinstance(result, Failure):
            failed += 1
            typer.echo(f"eclip: skipped {result.path}: {result.reason}", err=True)
    typer.echo(f"decomposed {len(paths) - failed} of {len(paths)} images on {adapter.name} -> {out}")
    if failed:
        raise typer.Exit(code=1)
