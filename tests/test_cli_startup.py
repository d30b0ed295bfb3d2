"""The CLI answers listings, help and simple mistakes without torch, and its help reads at 80 columns.

Time itself is measured in bench/bench_startup.py; here what makes it fast is pinned in a way no
timing luck can pass: after each command the process is asked which heavy modules it imported.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from eclip.cli import app

#: Modules a listing, a help page or a missing-file error must not import (each costs seconds on a loaded machine).
HEAVY = ("torch", "torchvision", "open_clip", "numpy", "PIL", "matplotlib", "gradio", "transformers")
VERBS = ("explain", "evaluate", "shift", "demo", "report", "synth", "train", "decompose", "textspan", "serve", "methods", "models")

_PROBE = """
import json, sys
from eclip.cli import main
heavy = {heavy!r}
seen = []
for args in {commands!r}:
    try:
        main(args)
        code = 0
    except SystemExit as exit:
        code = exit.code
    seen.append({{"args": args, "code": code, "heavy": [m for m in heavy if m in sys.modules]}})
print("PROBE" + json.dumps(seen), file=sys.stderr)
"""


def probe(commands: list[list[str]], cwd) -> list[dict]:
    """Run `commands` one after another in one fresh process; per command its exit code and the heavy modules loaded so far."""
    script = _PROBE.format(heavy=HEAVY, commands=commands)
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300)
    line = next(line for line in done.stderr.splitlines() if line.startswith("PROBE"))
    return json.loads(line[len("PROBE"):])


@pytest.mark.slow
def test_listings_help_and_missing_inputs_import_no_torch(tmp_path):
    commands = [["models"], ["methods"], ["--help"], *([verb, "--help"] for verb in VERBS),
                ["explain", "nosuch.png"], ["decompose", "nosuch.png"], ["textspan", "nosuch.png"], ["evalute"]]
    results = probe(commands, tmp_path)
    assert [r["args"] for r in results] == commands
    for result in results:
        assert result["heavy"] == [], result
        failing = result["args"][-1] in ("nosuch.png", "evalute")
        assert result["code"] == (2 if failing else 0), result


def test_the_stored_method_listing_is_the_registry_s():
    from eclip.cli.listing import methods_listing
    from eclip.cli.method_table import METHODS

    assert METHODS == methods_listing(), (
        "eclip/cli/method_table.py is out of date; rewrite it with "
        "`python -c \"from eclip.cli.listing import write_method_table; write_method_table()\"`")


def test_methods_prints_the_listing():
    from eclip.cli.method_table import METHODS

    result = CliRunner().invoke(app, ["methods"])
    assert result.exit_code == 0 and result.output.startswith(METHODS) and "itsm\t" in result.output


#: What typer shows for an option without a metavar, or next to an argument: `<int range>`, `<list[Path]>`, `<bool>`.
TYPE_NAME = re.compile(r"<(?:str|int|float|bool|path|Path|file|dir|list\[[^\]]*\]|\w+ range)>")
WIDTH = 80


def help_at_80_columns(args: list[str]) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(WIDTH)}, prog_name="eclip")
    assert result.exit_code == 0, result.output
    return result.output


def description(text: str) -> list[list[str]]:
    """The paragraphs of a help page's description (between the usage line and the first section)."""
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if line in ("Arguments:", "Options:"))
    paragraphs, current = [], []
    for line in lines[1:end]:
        if line.strip():
            current.append(line)
        elif current:
            paragraphs, current = [*paragraphs, current], []
    return paragraphs + ([current] if current else [])


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_s_help_reads_at_80_columns(verb):
    import typer.main

    text = help_at_80_columns([verb])
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    assert "…" not in text, text
    assert not TYPE_NAME.search(text), TYPE_NAME.search(text)
    command = typer.main.get_command(app).get_command(None, verb)
    for param in command.params:
        for flag in (*param.opts, *getattr(param, "secondary_opts", ())):
            if flag.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (flag, text)
    # A paragraph is wrapped, never cut: no line could have taken the next line's first word (click wraps at 78).
    for paragraph in description(text):
        for line, following in zip(paragraph, paragraph[1:]):
            assert len(line) + 1 + len(following.split()[0]) > WIDTH - 2, (line, following)


def test_the_verb_list_reads_at_80_columns_and_names_every_verb():
    text = help_at_80_columns([])
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    listed = [line.split()[0] for line in text[text.index("Commands:"):].splitlines()[1:] if line.strip()]
    assert listed == list(VERBS)
