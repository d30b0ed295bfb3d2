"""`eclip models` and `eclip methods`: what is available, one per line, name first."""
from __future__ import annotations

import typer

from eclip.cli.app import app


@app.command("methods")
def list_methods() -> None:
    """List the explanation methods: name, architectures, paper, then each option with its default and type.

    Give options after the name: --method NAME:KEY=VALUE,KEY=VALUE (e.g. chefer:start_layer=0,target=cosine);
    true/false, none, and [a,b] for a list.
    """
    from eclip.methods.base import available_methods
    from eclip.methods.options import method_options

    for name, cls in available_methods().items():
        archs = ",".join(sorted(cls.archs))
        typer.echo(f"{name}\t{archs}\t{cls.paper}")
        options = method_options(cls)
        if options:
            typer.echo("\toptions: " + ", ".join(option.describe() for option in options.values()))
    typer.echo("\nOptions go after the name: --method NAME:KEY=VALUE,KEY=VALUE, e.g. --method chefer:start_layer=0,target=cosine "
               "(true/false, none, [a,b] for a list)")


@app.command("models")
def list_models() -> None:
    """List the bundled models (offline) and how to name any other CLIP."""
    from eclip.models.loading import bundled_models

    for name, description in bundled_models().items():
        typer.echo(f"{name}\t{description}")
    typer.echo("<open_clip name> --pretrained TAG|hf-hub:ID|FILE\tany open_clip model, e.g. ViT-B-16, RN50")
    typer.echo("hf-hub:ORG/NAME | PATH/TO/DIR\ta Hugging Face CLIPModel or an eclip checkpoint folder")
