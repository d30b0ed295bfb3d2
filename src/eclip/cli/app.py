"""The typer application every `eclip` verb registers on (one module per verb in this package).

Help is click's plain formatter, not rich's tables: at 80 columns rich cut option names
("--perturbation…") and re-wrapped docstrings line by line, so sentences broke in the middle;
click keeps each option name whole and re-flows each paragraph. An option declared without a
metavar shows a word (N, NUMBER, TEXT, PATH) instead of typer's type name (`<int range>`,
`<list[str]>`).
"""
from __future__ import annotations

import difflib

import typer
from typer.core import TyperArgument, TyperGroup

#: The order `eclip --help` lists the verbs in: what a new user runs first, first.
ORDER = ("explain", "evaluate", "shift", "demo", "report", "synth", "train", "decompose", "textspan", "serve", "methods", "models")
#: The metavar an option declared without one shows, by its Python type (typer would show `<int>`, `<list[Path]>`).
_METAVARS = {"int": "N", "float": "NUMBER", "str": "TEXT", "Path": "PATH"}


class _Argument(TyperArgument):
    """An argument whose help shows its metavar alone (typer appends its type name, `<list[Path]>`)."""

    def display_type_rich(self, ctx) -> None:
        return None


def _readable(param) -> None:
    """Give `param` a metavar in words if it has none, and drop the type name typer shows next to an argument."""
    if isinstance(param, TyperArgument):
        param.__class__ = _Argument
    elif param.metavar is None and not (param.is_flag or param.count):
        bare = param.bare_type()
        bare = bare[len("list["):-1] if bare.startswith("list[") else bare
        param.metavar = _METAVARS.get(bare, bare.upper())


class Verbs(TyperGroup):
    """The `eclip` group: every verb's options with a readable metavar; an unknown verb gets the closest one."""

    def get_command(self, ctx, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        for param in getattr(command, "params", ()):
            _readable(param)
        return command

    def list_commands(self, ctx) -> list[str]:
        rank = {name: i for i, name in enumerate(ORDER)}
        return sorted(self.commands, key=lambda name: rank.get(name, len(rank)))

    def resolve_command(self, ctx, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.commands:
            close = difflib.get_close_matches(name, list(self.commands), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"the verbs are {', '.join(self.list_commands(ctx))}"
            ctx.fail(f"unknown verb {name!r}; {hint}")
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=Verbs,
    name="eclip",
    help="Where does CLIP look? Image-text similarity maps, the semantic shift, and the ECLIP fix.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def options(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of any error (also: ECLIP_DEBUG=1)."),
) -> None:
    """Where does CLIP look? Image-text similarity maps, the semantic shift, and the ECLIP fix."""
    if debug:
        import os

        os.environ["ECLIP_DEBUG"] = "1"
