"""`eclip models` and `eclip methods`: what is available, one per line, name first.

Both answer without importing torch. The models come from the bundled folders and a fixed text.
The methods' listing is read from the registry (every method module imports torch), so it is
stored in `eclip.cli.method_table`, written from the registry by `write_method_table`; a test
fails when the stored listing differs from the registry's.
"""
from __future__ import annotations

import typer

from eclip.cli.app import app

METHODS_HINT = ("Options go after the name: --method NAME:KEY=VALUE,KEY=VALUE, e.g. --method chefer:start_layer=0,target=cosine "
                "(true/false, none, [a,b] for a list)")


def methods_listing() -> str:
    """The listing of `eclip methods` from the registry: per method its name, architectures and paper, then its options."""
    from eclip.methods.base import available_methods
    from eclip.methods.options import method_options

    lines = []
    for name, cls in available_methods().items():
        lines.append(f"{name}\t{','.join(sorted(cls.archs))}\t{cls.paper}")
        options = method_options(cls)
        if options:
            lines.append("\toptions: " + ", ".join(option.describe() for option in options.values()))
    return "\n".join(lines)


@app.command("methods", short_help="List the explanation methods and their options.")
def list_methods() -> None:
    """List the explanation methods: name, architectures, paper, then each option with its default and type.

    Give options after the name: --method NAME:KEY=VALUE,KEY=VALUE (e.g.
    chefer:start_layer=0,target=cosine); true/false, none, and [a,b] for a list.
    """
    from eclip.cli.method_table import METHODS

    typer.echo(METHODS)
    typer.echo("\n" + METHODS_HINT)


@app.command("models", short_help="List the bundled models and how to name any other CLIP.")
def list_models() -> None:
    """List the bundled models (offline) and how to name any other CLIP."""
    from eclip.models.loading import bundled_models

    for name, description in bundled_models().items():
        typer.echo(f"{name}\t{description}")
    typer.echo("<open_clip name> --pretrained TAG|hf-hub:ID|FILE\tany open_clip model, e.g. ViT-B-16, RN50")
    typer.echo("hf-hub:ORG/NAME | PATH/TO/DIR\ta Hugging Face CLIPModel or an eclip checkpoint folder")


def write_method_table() -> None:
    """Rewrite `eclip/cli/method_table.py` from the registry."""
    from pathlib import Path

    from eclip.writing import atomic_write_text

    target = Path(__file__).with_name("method_table.py")
    source = target.read_text(encoding="utf-8")
    lines = "".join(f"    {line!r},\n" for line in methods_listing().splitlines())
    atomic_write_text(target, f"{source[: source.index('METHODS = ')]}METHODS = \"\\n\".join((\n{lines}))\n")
