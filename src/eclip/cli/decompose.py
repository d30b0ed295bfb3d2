"""`eclip decompose`: each image-text cosine split into direct contributions (Gandelsman et al. 2024)."""
from __future__ import annotations

from pathlib import Path

from eclip.cli import options
from eclip.cli.app import app
from eclip.cli.per_file import PerFile


@app.command("decompose", short_help="Split each image-text cosine into direct contributions.")
def decompose_command(
    inputs: list[Path] = options.inputs(),
    text: list[str] = options.texts(),
    model: str = options.model(help="Bundled name (see `eclip models`), open_clip name, hf-hub:ID or model folder (a ViT)."),
    pretrained: str = options.pretrained(),
    template: str = options.template(),
    out: Path = options.out_folder(Path("eclip-decompose")),
    size: int = options.size(),
    batch_size: int = options.batch_size(4, "Images per forward pass (each holds layers x locations x heads contributions)."),
    recursive: bool = options.recursive(),
    device: str = options.device(),
) -> None:
    """Split each image-text cosine into direct contributions (Gandelsman et al. 2024, arXiv 2310.05916).

    Writes OUT/<stem>_decomposition.csv (one row per text and term: the embedding, each layer's MLP,
    each layer's attention heads), OUT/<stem>_decomposition.md (per text, a layer x head table whose
    terms add up to the cosine) and OUT/<stem>_decomposition.png (the same as a figure, with each
    location's contribution over the image).
    """
    from eclip.cli.checks import default_texts, image_paths, up_front

    up_front(inputs=inputs or (), out=out, template=template, texts=text or (), models=[model], pretrained=pretrained, device=device)
    texts = list(text) if text else default_texts(model)
    paths = image_paths(inputs, recursive)

    from eclip.decompose import decompose_files
    from eclip.errors import MethodError
    from eclip.models.loading import load_model
    from eclip.prompts import encode_prompts

    adapter = load_model(model, pretrained, device=device)
    if adapter.arch != "vit":
        raise MethodError(f"eclip decompose splits a ViT's embedding; {model} is a {adapter.arch} model (use a ViT)")
    features = encode_prompts(adapter, texts, template)
    run = PerFile(len(paths), "decompose")
    for _ in run.done(decompose_files(adapter, paths, features, texts, out, batch_size=batch_size, size=size)):
        pass
    run.finish(f"decomposed {{done}} of {{total}} images on {adapter.name} -> {out}")
