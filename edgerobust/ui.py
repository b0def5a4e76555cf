"""Terminal output shared by every command: a stderr console for progress, stdout for results."""
from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

# Progress bars, status lines and warnings go to stderr so that `--json` keeps stdout clean.
err = Console(stderr=True)
# Results (tables, JSON) go to stdout.
out = Console()

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def info(msg: str) -> None:
    if not _quiet:
        err.print(msg)


def warn(msg: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {msg}")


def progress() -> Progress:
    """A Rich progress bar on stderr (hidden with --quiet)."""
    return Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
        TimeRemainingColumn(), console=err, disable=_quiet, transient=False,
    )


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator[callable]:
    """Context manager yielding ``advance(n=1, status='')`` for one progress bar."""
    with progress() as p:
        t = p.add_task(description, total=total, status="")

        def advance(n: int = 1, status: str | None = None) -> None:
            if status is None:
                p.advance(t, n)
            else:
                p.update(t, advance=n, status=status)

        yield advance


def table(title: str, head: list[str], rows: list[list[str]]):
    """A Rich table: first column left-aligned and unwrapped, the others right-aligned."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for i, col in enumerate(head):
        t.add_column(col, justify="left" if i == 0 else "right", overflow="fold", no_wrap=i == 0)
    for r in rows:
        t.add_row(*r)
    return t
