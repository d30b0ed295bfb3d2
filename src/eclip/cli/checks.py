"""Checks the verbs run on their options before any work: cheap, and each failure is one line naming the value."""
from __future__ import annotations

from collections.abc import Sequence


def check_methods(specs: Sequence[str]) -> None:
    """Every `--method` names a registered method with options it has, of the right types
    (`NAME` or `NAME:KEY=VALUE,...`; a `MethodError` names what is wrong and the closest choice)."""
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
    from pathlib import Path

    from eclip.errors import ModelLoadError
    from eclip.models.loading import BUNDLED

    if model in BUNDLED or Path(model).expanduser().exists():
        raise ModelLoadError(f"--pretrained {pretrained} applies to open_clip model names, and {model} is a bundled model or "
                             "a folder that holds its own weights; drop --pretrained")
