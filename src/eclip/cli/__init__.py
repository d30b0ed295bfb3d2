"""Command-line interface: `eclip VERB --help` reads like a manual; defaults work offline."""
from __future__ import annotations

import sys

# Each verb lives in its own module and registers itself on `app` when imported.
from eclip.cli import decompose, demo, evaluate, explain, listing, report, serve, shift, synth, train  # noqa: F401,E402
from eclip.cli.app import app
from eclip.errors import EclipError


def main() -> None:
    """Console-script entry point: typed eclip errors become one line on stderr and exit code 2."""
    try:
        app()
    except EclipError as err:
        print(f"eclip: error: {err}", file=sys.stderr)
        sys.exit(2)
