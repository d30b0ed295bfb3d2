"""`eclip explain`: heat maps of where a CLIP looks for each text, per image."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from eclip.cli.app import app
from eclip.data.bundled import sample_images, samples_root  # noqa: F401  (re-exported: the default input)

#: Default longest side of the saved maps: a map is resized from the model's grid (14 x 14 for ViT-B/16
#: at 224 px), so 2048 px loses nothing, and a 48-megapixel image's eight maps take 100 MB instead of 1.5 GB.
MAP_SIDE = 2048


def default_texts(model_name: str) -> list[str]:
    """With no --text, the synthetic shape classes for the bundled models; others need --text."""
    from eclip.data.synthetic import CLASSNAMES
    from eclip.errors import TextInputError
    from eclip.models.loading import BUNDLED

    if model_name in BUNDLED:
        return list(CLASSNAMES)
    raise TextInputError("no --text given; name what to look for, e.g. --text 'a cat' --text 'a dog'")


def image_paths(inputs: list[Path] | None, recursive: bool) -> list[Path]:
    """The image files of `inputs` (default: the bundled samples); a warning per input without any, an error if none at all."""
    from eclip.data.images import iter_image_files
    from eclip.errors import ImageLoadError

    sources = list(inputs) if inputs else sample_images()
    found = {source: iter_image_files([source], recursive=recursive) for source in sources}
    paths = iter_image_files([path for paths in found.values() for path in paths])
    hint = "" if recursive else " (--recursive descends into sub-folders)"
    if not paths:
        raise ImageLoadError(f"no image found in {', '.join(str(s) for s in sources[:3])}; "
                             f"pass image files or folders holding .png / .jpg files{hint}")
    for source in (s for s, p in found.items() if not p):
        typer.echo(f"eclip: warning: no image found in {source}{hint}", err=True)
    return paths


@app.command("explain")
def explain_command(
    inputs: list[Path] = typer.Argument(None, help="Images or folders of images (default: the bundled sample scenes)."),
    text: list[str] = typer.Option(None, "--text", "-t", help="A text to explain; repeat for several (default: the shape classes)."),
    model: str = typer.Option("synth-vit", "--model", "-m", help="Bundled name, open_clip name, hf-hub:ID or model folder."),
    pretrained: str = typer.Option(None, "--pretrained", help="open_clip tag, or a local open_clip checkpoint file."),
    method: str = typer.Option("itsm", "--method",
                               help="Explanation method, with options as NAME:KEY=VALUE,... (see `eclip methods`)."),
    template: str = typer.Option(None, "--template", help="Prompt template with {} (or a set: single, seven, imagenet)."),
    ensemble: bool = typer.Option(False, "--ensemble", help="Average the 80 CLIP ImageNet templates per text."),
    out: Path = typer.Option(Path("eclip-out"), "--out", "-o", help="Output folder."),
    size: int = typer.Option(None, "--size", min=1, max=4096,
                             help="Resize images to SIZE x SIZE before the model (default: the model's size)."),
    map_size: int = typer.Option(MAP_SIDE, "--map-size", min=0,
                                 help="Longest side of the saved maps; bigger images get maps scaled down to it (0: the image's size)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    segment: bool = typer.Option(False, "--segment", help="Write the argmax over the texts instead: OUT/<stem>.png "
                                 "(segmentation in VOC's palette, legend) and OUT/<stem>.npy (H, W labels; 0 background, i text i)."),
    background: str = typer.Option("background", "--background", help="With --segment: the background's text."),
    threshold: float = typer.Option(None, "--threshold", min=0.0, max=1.0,
                                    help="With --segment: no background text; pixels whose best probability is below it are background."),
) -> None:
    """Write OUT/<stem>.png (overlay), OUT/<stem>.npy (K, H, W maps in [0, 1]) and OUT/<stem>.json (scores).

    Methods with more outputs than their maps add them: `interactions` writes OUT/<stem>_interactions.npy
    and one overlay panel per content word.
    """
    from eclip.cli.checks import check_pretrained, check_template, check_texts
    from eclip.device import resolve_device
    from eclip.methods.base import get_method
    from eclip.writing import check_output_folder

    explainer = get_method(method)
    check_template(template)
    check_pretrained(model, pretrained)
    resolve_device(device)
    check_output_folder(out)
    texts = list(text) if text else default_texts(model)
    check_texts(texts)
    paths = image_paths(inputs, recursive)

    from tqdm import tqdm

    from eclip.explain import Explained, explain_files, unique_stems, write_explained
    from eclip.models.loading import load_model
    from eclip.prompts import IMAGENET, encode_prompts

    adapter = load_model(model, pretrained, device=device)
    if segment:
        _segment(adapter, explainer, texts, paths, out, "imagenet" if ensemble else (template or "{}"), background, threshold)
        return
    features = encode_prompts(adapter, texts, IMAGENET if ensemble else template)
    names = unique_stems(paths)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for result in tqdm(explain_files(adapter, explainer, paths, features, texts, batch_size=batch_size, size=size),
                       total=len(paths), desc="explain", unit="image", file=sys.stderr):
        if not isinstance(result, Explained):
            failed += 1
            typer.echo(f"eclip: skipped {result.path}: {result.reason}", err=True)
            continue
        write_explained(result, out / names[result.path], model_name=adapter.name, method_label=explainer.label, map_side=map_size)
    typer.echo(f"explained {len(paths) - failed} of {len(paths)} images with {explainer.label} on {adapter.name} -> {out}")
    if failed:
        raise typer.Exit(code=1)


def _segment(adapter, method, texts: list[str], paths: list[Path], out: Path, templates: str, background: str,
             threshold: float | None) -> None:
    """`eclip explain --segment`: one label map per image (`eclip.segmentation.files`)."""
    from tqdm import tqdm

    from eclip.explain import unique_stems
    from eclip.segmentation import Segmenter, Vocabulary
    from eclip.segmentation.files import Failed, segment_files
    from eclip.segmentation.protocol import protocol_for_texts

    vocabulary = Vocabulary.from_texts(texts, background=None if threshold is not None else background,
                                       threshold=threshold is not None)
    protocol = protocol_for_texts(method.name, templates, threshold or 0.0, min(adapter.image_size))
    segmenter = Segmenter(adapter, method, vocabulary, protocol)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    results = segment_files(segmenter, paths, out, unique_stems(paths), title=f"{adapter.name} · {method.label}")
    for result in tqdm(results, total=len(paths), desc="segment", unit="image", file=sys.stderr):
        if isinstance(result, Failed):
            failed += 1
            typer.echo(f"eclip: skipped {result.path}: {result.reason}", err=True)
    typer.echo(f"segmented {len(paths) - failed} of {len(paths)} images with {method.label} on {adapter.name} -> {out}")
    if failed:
        raise typer.Exit(code=1)
