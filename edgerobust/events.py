"""How the library tells its caller what it is doing without printing: log records and progress.

Status lines and warnings are records of named loggers under ``edgerobust``
(``logging.getLogger(__name__)``): INFO for what a step decided or did, WARNING for what a user
should know. The ``edgerobust`` logger has a ``NullHandler`` (edgerobust/__init__.py), so an
application that configures no logging sees nothing, and one that does sees them as any other
library's. Long steps report progress through :func:`task`, a no-op until the application installs
a hook with :func:`set_progress`. The command line does both (edgerobust.ui): Rich status lines,
``warning: ...`` and progress bars on stderr.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, ContextManager, Iterator, Protocol

LOGGER = "edgerobust"  # the parent of every logger in the package


class Advance(Protocol):
    """What :func:`task` yields: ``advance(n=1, status=None)`` after each unit of work."""

    def __call__(self, n: int = 1, status: str | None = None) -> None: ...


# ``hook(description, total)`` -> a context manager yielding an Advance (total None: unknown).
ProgressHook = Callable[[str, "int | None"], ContextManager[Advance]]

_hook: ProgressHook | None = None


def set_progress(hook: ProgressHook | None) -> ProgressHook | None:
    """Show the library's progress through ``hook`` (None: not at all, the default); the previous hook."""
    global _hook
    previous, _hook = _hook, hook
    return previous


def _ignore(n: int = 1, status: str | None = None) -> None:
    return None


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator[Advance]:
    """One long step of ``total`` units (None: unknown), reported to the installed hook, if any.

        with task("calibrate int8", total=len(x)) as advance:
            for batch in batches:
                ...
                advance(len(batch), status=f"{loss:.3f}")
    """
    hook = _hook
    if hook is None:
        yield _ignore
        return
    with hook(description, total) as advance:
        yield advance


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def recording_warnings() -> Iterator[list[str]]:
    """Collect the warnings the library logs inside the block (WARNING and above under the
    ``edgerobust`` logger), as the library wrote them, whether or not anything shows them.

    A warning the application filtered out (the ``edgerobust`` logger set above WARNING) is not logged,
    so not collected either.
    """
    recorder = _Recorder()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(recorder)
    try:
        yield recorder.messages
    finally:
        logger.removeHandler(recorder)
