"""Command-line interface: `eclip VERB --help` reads like a manual; defaults work offline.

The boundary (`main`) turns every expected failure into one line on stderr naming the value and
the fix, with exit code 2: a typed eclip error, an option outside its declared range, an OSError
(a full disk, a file that vanished). A bug (any other exception) is one line with exit code 1 and
a pointer to `--debug` / ECLIP_DEBUG=1, which show every traceback in full.
"""
from __future__ import annotations

import logging
import os
import sys

import typer

# Each verb lives in its own module and registers itself on `app` when imported. None of them imports torch or the
# library's heavy modules at the top: `eclip VERB --help` and the listings answer at once.
from eclip.cli import decompose, demo, evaluate, explain, listing, report, serve, shift, synth, textspan, train  # noqa: F401,E402
from eclip.cli.app import app
from eclip.cli.messages import bug_message, for_command_line, os_error_message, usage_message
from eclip.errors import EclipError


def debugging() -> bool:
    """True when the user asked for full tracebacks (`eclip --debug VERB` or ECLIP_DEBUG=1)."""
    return os.environ.get("ECLIP_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


class _LogLines(logging.Formatter):
    """Library log records as the CLI's own lines: `eclip: message`, `eclip: warning: message`."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"eclip: {level}{record.getMessage()}"


def _fail(message: str, code: int) -> None:
    print(f"eclip: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: run the verb, and report any failure as one line (see the module docstring)."""
    args = sys.argv[1:] if args is None else list(args)
    handler = logging.StreamHandler()
    handler.setFormatter(_LogLines())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    try:
        code = app(args=args, prog_name="eclip", standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except typer.TyperException as err:  # click's usage errors: a bad option value, an unknown option, ...
        if debugging():
            raise
        if type(err).__name__ == "NoArgsIsHelpError":  # `eclip` or `eclip VERB` alone: the help, already shown
            sys.exit(2)
        _fail(usage_message(err, args), getattr(err, "exit_code", 2))
    except EclipError as err:
        if debugging():
            raise
        _fail(for_command_line(str(err), args), 2)
    except OSError as err:
        if debugging():
            raise
        _fail(os_error_message(err), 2)
    except Exception as err:
        if debugging():
            raise
        _fail(bug_message(err), 1)
    sys.exit(code if isinstance(code, int) else 0)
