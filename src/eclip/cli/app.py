"""The typer application every `eclip` verb registers on (one module per verb in this package)."""
from __future__ import annotations

import typer

app = typer.Typer(
    name="eclip",
    help="Where does CLIP look? Image-text similarity maps, the semantic shift, and the ECLIP fix.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def options(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of any error (also: ECLIP_DEBUG=1)."),
) -> None:
    """Where does CLIP look? Image-text similarity maps, the semantic shift, and the ECLIP fix."""
    if debug:
        import os

        os.environ["ECLIP_DEBUG"] = "1"
