"""`eclip explain`: heat maps of where a CLIP looks for each text, per image."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

from eclip.cli import options
from eclip.cli.app import app
from eclip.cli.per_file import PerFile

#: Default longest side of the saved maps: a map is resized from the model's grid (14 x 14 for ViT-B/16
#: at 224 px), so 2048 px loses nothing, and a 48-megapixel image's eight maps take 100 MB instead of 1.5 GB.
MAP_SIDE = 2048


@app.command("explain", short_help="Heat maps of where a CLIP looks for each text, per image.")
def explain_command(
    inputs: list[Path] = options.inputs(),
    text: list[str] = options.texts("A text to explain; repeat for several (default: the shape classes, for the bundled models)."),
    model: str = options.model(),
    pretrained: str = options.pretrained(),
    method: str = options.method(),
    template: str = options.template(),
    ensemble: bool = typer.Option(False, "--ensemble", help="Average the 80 CLIP ImageNet templates per text."),
    out: Path = options.out_folder(Path("eclip-out")),
    size: int = options.size(),
    map_size: int = typer.Option(MAP_SIDE, "--map-size", metavar="PIXELS", min=0,
                                 help="Longest side of the saved maps; bigger images get maps scaled down to it (0: the image's size)."),
    batch_size: int = options.batch_size(8),
    recursive: bool = options.recursive(),
    device: str = options.device(),
    precision: str = options.precision("fp32", options.MAPS_PRECISION_HELP),
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
    from eclip.cli.checks import default_texts, image_paths, up_front

    up_front(inputs=inputs or (), out=out, template=template, texts=text or (), models=[model], pretrained=pretrained,
             methods=[method], precision=precision, device=device)
    texts = list(text) if text else default_texts(model)
    paths = image_paths(inputs, recursive)
    check_interaction_texts(method, texts)


    from eclip.explain import explain_files, unique_stems, write_explained
    from eclip.methods.base import get_method
    from eclip.models.loading import load_model
    from eclip.prompts import IMAGENET, encode_prompts

    explainer = get_method(method)
    adapter = load_model(model, pretrained, device=device)
    if segment:
        _segment(adapter, explainer, texts, paths, out, "imagenet" if ensemble else (template or "{}"), background, threshold)
        return
    features = encode_prompts(adapter, texts, IMAGENET if ensemble else template)
    names = unique_stems(paths)
    out.mkdir(parents=True, exist_ok=True)
    run = PerFile(len(paths), "explain")
    for result in run.done(explain_files(adapter, explainer, paths, features, texts, batch_size=batch_size, size=size,
                                         precision=precision)):
        write_explained(result, out / names[result.path], model_name=adapter.name, method_label=explainer.label, map_side=map_size)
    run.finish(f"explained {{done}} of {{total}} images with {explainer.label} on {adapter.name} -> {out}")


def check_interaction_texts(method: str, texts: Sequence[str]) -> None:
    """`interactions` draws one panel per content word: a text of function words alone ('the', 'of a') gets none.

    A warning names each such text; when no text has a content word there is nothing to draw, which
    is an error before any work.
    """
    from eclip.methods.options import parse_spec

    if parse_spec(method)[0] != "interactions":
        return
    from eclip.errors import TextInputError
    from eclip.methods.interactions import Word

    def function_words_only(text: str) -> bool:
        return not any(Word(word, slice(0)).content for word in text.split())

    def why(text: str) -> str:
        return (f"--text {text!r} has no content word, only function words ({', '.join(text.split())}), and `interactions` "
                "draws one panel per content word")

    empty = [text for text in texts if function_words_only(text)]
    if empty and len(empty) == len(texts):
        raise TextInputError(f"{why(empty[0])}, so there is nothing to draw; add a noun or an adjective")
    for text in empty:
        typer.echo(f"eclip: warning: {why(text)}, so this text gets none", err=True)


def _segment(adapter, method, texts: list[str], paths: list[Path], out: Path, templates: str, background: str,
             threshold: float | None) -> None:
    """`eclip explain --segment`: one label map per image (`eclip.segmentation.files`)."""

    from eclip.explain import unique_stems
    from eclip.segmentation import Segmenter, Vocabulary
    from eclip.segmentation.files import segment_files
    from eclip.segmentation.protocol import protocol_for_texts

    vocabulary = Vocabulary.from_texts(texts, background=None if threshold is not None else background,
                                       threshold=threshold is not None)
    protocol = protocol_for_texts(method.name, templates, threshold or 0.0, min(adapter.image_size))
    segmenter = Segmenter(adapter, method, vocabulary, protocol)
    out.mkdir(parents=True, exist_ok=True)
    run = PerFile(len(paths), "segment")
    for _ in run.done(segment_files(segmenter, paths, out, unique_stems(paths), title=f"{adapter.name} · {method.label}")):
        pass
    run.finish(f"segmented {{done}} of {{total}} images with {method.label} on {adapter.name} -> {out}")
