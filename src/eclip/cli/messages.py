"""One-line messages for the failures that reach the CLI boundary (`eclip.cli.main`).

Click reports a bad option as "Invalid value for '--n': Input should be greater than or equal to
1" under a usage banner, without the value given; here it becomes "--n 0: must be >= 1; see
`eclip shift --help`", the value read back from the command line.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

#: Pydantic's range and type messages (what typer's declared min / max produce) -> short rules.
_RULES = (
    (re.compile(r"Input should be greater than or equal to (\S+)"), r"must be >= \1"),
    (re.compile(r"Input should be less than or equal to (\S+)"), r"must be <= \1"),
    (re.compile(r"Input should be greater than (\S+)"), r"must be > \1"),
    (re.compile(r"Input should be less than (\S+)"), r"must be < \1"),
    (re.compile(r"Input should be a valid integer.*"), "must be a whole number"),
    (re.compile(r"Input should be a valid number.*"), "must be a number"),
    (re.compile(r"Input should be a valid boolean.*"), "must be true or false"),
)


def _rule(message: str) -> str:
    for pattern, replacement in _RULES:
        if pattern.search(message):
            return pattern.sub(replacement, message)
    return message


def given_value(args: Sequence[str], opts: Sequence[str]) -> str | None:
    """The value the command line gave to option `opts` (its last occurrence), or None."""
    value = None
    for i, arg in enumerate(args):
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(opt + "="):
                value = arg[len(opt) + 1 :]
    return value


def usage_message(err: Exception, args: Sequence[str]) -> str:
    """A click usage error (bad value, unknown option, missing argument) as one line with the value and the fix."""
    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx is not None else "eclip"
    help_hint = f"see `{command} --help`"
    param = getattr(err, "param", None)
    raw = getattr(err, "message", None) or str(err)
    opts = [o for o in (list(getattr(param, "opts", None) or []) + list(getattr(param, "secondary_opts", None) or []))
            if o.startswith("-")]
    if param is not None and opts and type(err).__name__ == "BadParameter":
        value = given_value(args, opts)
        shown = opts[0] if value is None else f"{opts[0]} {value}"
        return f"{shown}: {_rule(raw)}; {help_hint}"
    text = " ".join(_rule(err.format_message() if hasattr(err, "format_message") else raw).split()).rstrip(".")
    return f"{text} ({help_hint})" if text.endswith("?") else f"{text}; {help_hint}"


def for_command_line(message: str, args: Sequence[str]) -> str:
    """A library message as the command line says it: `name=value` of an option of the verb run reads `--name value`.

    Library messages name an argument as Python spells it (`device=cuda`, `pretrained=FILE`), so a
    Python user reads the call to fix; the verb that took the value from an option shows that option.
    Only the options of the verb in `args` are rewritten, so other `x=y` text stays as it is.
    """
    flags = _verb_flags(args)
    if not flags:
        return message
    names = "|".join(re.escape(name) for name in sorted(flags, key=len, reverse=True))
    return re.sub(rf"(?<![\w./-])({names})=", lambda m: f"{flags[m.group(1)]} ", message)


def _verb_flags(args: Sequence[str]) -> dict[str, str]:
    """Parameter name -> long option (`batch_size` -> `--batch-size`) of the verb `args` runs; empty if none."""
    import typer.main

    from eclip.cli.app import app

    verb = next((arg for arg in args if not arg.startswith("-")), None)
    command = getattr(typer.main.get_command(app), "commands", {}).get(verb)
    if command is None:
        return {}
    return {param.name: max(longs, key=len) for param in command.params
            if (longs := [o for o in param.opts if o.startswith("--")])}


def os_error_message(err: OSError) -> str:
    """An OSError that reached the boundary (a full disk, a path that vanished, no permission), with what to check."""
    where = f"{err.filename}: " if err.filename else ""
    reason = err.strerror or str(err)
    return f"{where}{reason}; check the path, its permissions and the free disk space, then rerun"


def bug_message(err: Exception) -> str:
    """An unexpected exception: a bug in eclip; say so in one line and how to see it in full."""
    text = " ".join(str(err).split())[:300]
    return (f"unexpected {type(err).__name__}: {text} (a bug in eclip; rerun with `eclip --debug ...` or ECLIP_DEBUG=1 "
            "for the traceback, and report it)")
