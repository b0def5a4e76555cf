"""The command line's terminal: a stderr console for progress, status lines and warnings, stdout for
results; and :func:`install`, which shows the library's log records and progress (edgerobust.events)
there. The library itself never prints: only the CLI calls :func:`install`."""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, Task,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Column
from rich.text import Text

from edgerobust import events

# Progress bars, status lines and warnings go to stderr so that `--json` keeps stdout clean.
err = Console(stderr=True)
# Results (tables, JSON) go to stdout.
out = Console()

_quiet = False
# How a status line or warning names a config field: as the library wrote it (`eval_samples`),
# or, under the CLI, as the flag a user typed (edgerobust.cli.flags.to_flags).
_words: Callable[[str], str] = str


def set_quiet(quiet: bool) -> None:
    """Hide status lines and progress bars (--quiet); warnings are still shown."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    """Whether status lines and progress bars are hidden (:func:`set_quiet`)."""
    return _quiet


def info(msg: str) -> None:
    """A status line on stderr (hidden with --quiet)."""
    if not _quiet:
        err.print(escape(_words(msg)))  # a message's names and paths as they are ('model[fp16]' kept whole)


def warn(msg: str) -> None:
    """``warning: msg`` on stderr."""
    err.print(f"[yellow]warning:[/yellow] {escape(_words(msg))}")


class _Lines(logging.Handler):
    """The library's log records as the command line shows them: INFO as a status line, WARNING
    and above as ``warning: ...`` (:func:`info`, :func:`warn`)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            (warn if record.levelno >= logging.WARNING else info)(msg)
        except Exception:  # logging's contract: a handler's failure is reported, never raised
            self.handleError(record)


_lines = _Lines(logging.INFO)


def install(quiet: bool = False, words: Callable[[str], str] = str) -> None:
    """Show the library's status lines, warnings and progress bars on this terminal: a handler on
    the ``edgerobust`` logger (INFO and above) and :func:`task` as the progress hook. ``words``
    rewrites each line (the CLI's flag names for the config fields the library names). Done once
    per command (edgerobust.cli._root); :func:`uninstall` leaves the library silent again."""
    global _words
    set_quiet(quiet)
    _words = words
    logger = logging.getLogger(events.LOGGER)
    if _lines not in logger.handlers:
        logger.addHandler(_lines)
    logger.setLevel(logging.INFO)
    events.set_progress(task)


def uninstall() -> None:
    """Undo :func:`install`: the library prints nothing, as it leaves a process it is imported into."""
    global _words
    set_quiet(False)
    _words = str
    logger = logging.getLogger(events.LOGGER)
    logger.removeHandler(_lines)
    logger.setLevel(logging.NOTSET)
    events.set_progress(None)


@contextlib.contextmanager
def status_only_from(*names: str) -> Iterator[None]:
    """Inside the block, show INFO status lines only from the loggers ``names`` (and their children);
    warnings from anywhere still show. For commands that run many compressions (optimize), whose
    every step would otherwise repeat its status lines."""
    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or any(record.name == n or record.name.startswith(n + ".")
                                                        for n in names)
    _lines.addFilter(keep)
    try:
        yield
    finally:
        _lines.removeFilter(keep)


recording_warnings = events.recording_warnings  # audit's warnings said on stderr while it ran


def same_screen() -> bool:
    """Whether stdout and stderr are one terminal, so that a person reads both streams together
    (a warning printed on stderr need not be repeated among the results on stdout)."""
    if not (err.is_terminal and out.is_terminal):
        return False
    try:
        a, b = os.fstat(err.file.fileno()), os.fstat(out.file.fileno())
    except (AttributeError, OSError, ValueError):  # no descriptors (captured): trust is_terminal
        return True
    return (a.st_dev, a.st_ino, a.st_rdev) == (b.st_dev, b.st_ino, b.st_rdev)


# Where stderr is not a terminal (a log file, a pipe, CI), Rich draws a progress bar once, when it
# ends, at 80 columns unless told otherwise, which cut descriptions and status short. There each
# task is one plain line instead, wrapped rather than cut, at COLUMNS or this width.
LOG_WIDTH = 120


class _LogLine(ProgressColumn):
    """A task as one plain line: ``description: 16/16, status (0:00:03)``."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(overflow="fold"))

    def render(self, task: Task) -> Text:
        done = _count(task.completed) + (f"/{_count(task.total)}" if task.total is not None else "")
        status = task.fields.get("status")
        elapsed = task.finished_time if task.finished else task.elapsed
        took = datetime.timedelta(seconds=int(elapsed or 0))
        return Text(f"{task.description}: {done}{', ' + status if status else ''} ({took})")


def _count(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:g}"


def _log_console() -> Console:
    columns = os.environ.get("COLUMNS", "")
    return Console(stderr=True, width=int(columns) if columns.isdigit() and int(columns) > 0 else LOG_WIDTH)


def progress() -> Progress:
    """A Rich progress bar on stderr, or a plain line per task where stderr is not a terminal
    (hidden with --quiet)."""
    if not err.is_terminal:
        return Progress(_LogLine(), console=_log_console(), disable=_quiet, transient=False)
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
    """A Rich table: first column left-aligned and unwrapped, the others right-aligned. Every text
    is shown as it is, never read as Rich markup (a report's or a calibration's names are a user's:
    a profile named '[/x]' is no markup error)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=escape(title), title_justify="left", header_style="bold")
    for i, col in enumerate(head):
        t.add_column(escape(col), justify="left" if i == 0 else "right", overflow="fold", no_wrap=i == 0)
    for r in rows:
        t.add_row(*(Text(c) if isinstance(c, str) else c for c in r))
    return t
