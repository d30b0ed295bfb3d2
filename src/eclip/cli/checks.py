"""Checks the verbs run on their options before any work: cheap, and each failure is one line naming the value.

`up_front` runs them in one order for every verb: first what needs nothing but the file system
and the option's text (the inputs exist, the output can be written, the template, the texts), then
what reads the library's tables (model names, methods, precisions; these import torch), then the
device. A mistyped file name is so answered at once, before torch is imported.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def up_front(*, inputs: Sequence[Path] = (), out: Path | None = None, out_files: Sequence[Path] = (), template: str | None = None,
             texts: Sequence[str] = (), models: Sequence[str] = (), pretrained: str | None = None, methods: Sequence[str] = (),
             precision: str | None = None, device: str | None = None) -> None:
    """Every check a verb's options need before it starts working (see the module docstring for the order)."""
    from eclip.writing import check_output_file, check_output_folder

    check_inputs(inputs)
    if out is not None:
        check_output_folder(out)
    for path in out_files:
        check_output_file(path)
    check_template(template)
    check_texts(texts)
    for name in models:
        check_pretrained(name, pretrained if len(models) == 1 else None)
    check_methods(methods)
    if precision is not None:
        from eclip.precision import check_precision

        check_precision(precision)
    if device is not None:
        from eclip.device import resolve_device

        resolve_device(device)


def check_inputs(paths: Sequence[Path]) -> None:
    """Each input file or folder exists (what is in a folder is looked at later)."""
    from eclip.errors import InputError

    for path in paths:
        if not Path(path).exists():
            raise InputError(f"{path}: no such file or folder; check the path")


def check_methods(specs: Sequence[str]) -> None:
    """Every `--method` names a registered method with options it has, of the right types
    (`NAME` or `NAME:KEY=VALUE,...`; a `MethodError` names what is wrong and the closest choice)."""
    if not specs:
        return
    from eclip.methods.base import get_method

    for spec in specs:
        get_method(spec)


def check_template(template: str | None) -> None:
    """`--template` is a template set or holds the {} the text goes into (`OptionError` otherwise)."""
    from eclip.prompts import resolve_templates

    if template is not None:
        resolve_templates(template)


def check_texts(texts: Sequence[str]) -> None:
    """Every `--text` has a word in it (the model's tokenizer checks the length later)."""
    from eclip.errors import TextInputError

    for text in texts:
        if not text.strip():
            raise TextInputError(f"--text {text!r} is empty; every --text needs at least one word")


def check_pretrained(model: str | None, pretrained: str | None) -> None:
    """`--model` names a model (or the closest name is suggested), and `--pretrained` goes with an open_clip model name,
    not with a bundled model or a folder (they hold their weights)."""
    if model:
        from eclip.models.loading import check_model_name

        check_model_name(model)
    if not (pretrained and model):
        return
    from eclip.errors import ModelLoadError
    from eclip.models.loading import BUNDLED

    if model in BUNDLED or Path(model).expanduser().exists():
        raise ModelLoadError(f"--pretrained {pretrained} applies to open_clip model names, and {model} is a bundled model or "
                             "a folder that holds its own weights; drop --pretrained")


def default_texts(model_name: str) -> list[str]:
    """With no --text, the synthetic shape classes for the bundled models; others need --text."""
    from eclip.errors import TextInputError
    from eclip.models.loading import BUNDLED

    if model_name in BUNDLED:
        from eclip.data.synthetic.vocab import CLASSNAMES

        return list(CLASSNAMES)
    raise TextInputError("no --text given; name what to look for, e.g. --text 'a cat' --text 'a dog'")


def image_paths(inputs: Sequence[Path] | None, recursive: bool) -> list[Path]:
    """The image files of `inputs` (default: the bundled samples); a warning per input without any, an error if none at all."""
    import typer

    from eclip.data.bundled import sample_images
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
