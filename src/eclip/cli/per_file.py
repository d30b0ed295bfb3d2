"""The verbs that work file by file (explain, explain --segment, decompose): one shape of output for all.

A progress bar on stderr, one "eclip: skipped FILE: why" line per file that could not be used
(the others go on), a summary line, and exit status 1 when any file was skipped, so that a
script notices a partial result.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

import typer


class PerFile:
    """Count the `eclip.explain.Failure`s among a verb's results while passing the others on."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.failed = total, desc, 0

    def done(self, results: Iterable) -> Iterator:
        """The results that are not failures, in order; each failure printed as one line."""
        from tqdm import tqdm

        from eclip.explain import Failure

        for result in tqdm(results, total=self.total, desc=self.desc, unit="image", file=sys.stderr):
            if isinstance(result, Failure):
                self.failed += 1
                typer.echo(f"eclip: skipped {result.path}: {result.reason}", err=True)
            else:
                yield result

    def finish(self, summary: str) -> None:
        """Print `summary` with {done} and {total} filled in; exit 1 when a file was skipped."""
        typer.echo(summary.format(done=self.total - self.failed, total=self.total))
        if self.failed:
            raise typer.Exit(code=1)
