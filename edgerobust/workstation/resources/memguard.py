"""A guard on memory for the steps that can eat the machine: building torch-pruning's dependency
graph, pruning through it, and exporting to ONNX.

torch-pruning traces a model and walks its graph in recursive Python; on some architectures
(shifted-window attention, MaxViT's partitions) that walk grows until the kernel's OOM killer ends
the process without a word. :func:`guard` watches the process's resident memory (``VmRSS`` in
``/proc/self/status``) from a background thread and, past the limit, raises an exception into the
guarded thread at its next Python instruction; the guard turns it (and any MemoryError or
RecursionError of the step) into a :class:`ResourceError` naming the step, the architecture and
what to try, long before the kernel would kill the process. :func:`time_limit` stops a step the
same way when it runs past a number of seconds (torch-pruning's graph walk on ReXNet ran for hours).

The limit: ``max_memory`` (bytes, or a text like ``"8G"``/``"512M"``), else the environment
variable ``EDGEROBUST_MAX_MEMORY``, else :func:`default_limit` (85% of what the host has available
now plus what this process already holds).

    with guard("building the dependency graph", arch="swin_t"):
        dg = dependency_graph(net, x)
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import threading
import time
from typing import Callable, Iterator

from edgerobust.errors import EdgeRobustError

ENV = "EDGEROBUST_MAX_MEMORY"
POLL_SECONDS = 0.05
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class ResourceError(EdgeRobustError):
    """A step would need more memory (or recursion depth) than this machine, or the limit, allows."""


class _Fired(BaseException):
    """Raised into the guarded thread by a watcher (a BaseException: library code that catches
    Exception cannot swallow it)."""


class _OverLimit(_Fired):
    """The memory limit was passed."""


class _OverTime(_Fired):
    """The time limit was passed."""


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:  # not Linux: no guard, nothing to read
        return None
    return None


def rss_bytes() -> int | None:
    """This process's resident memory now, or None where /proc is not there."""
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else None


def available_bytes() -> int | None:
    """MemAvailable of the host, or None where /proc/meminfo is not there."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def parse_size(text: str | int | float) -> int:
    """Bytes of ``8G``, ``512M``, ``1.5G``, ``1073741824``; ResourceError naming the bad value."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ResourceError(f"Cannot read the memory limit '{text}'.", fix="Write it like 8G, 512M or 1.5G.")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def default_limit() -> int | None:
    """85% of the memory available to this process now (host MemAvailable plus its own RSS)."""
    avail, rss = available_bytes(), rss_bytes()
    if avail is None or rss is None:
        return None
    return int(0.85 * (avail + rss))


def resolve_limit(max_memory: str | int | float | None = None) -> int | None:
    """The limit in bytes: the argument, else $EDGEROBUST_MAX_MEMORY, else :func:`default_limit`."""
    if max_memory is None:
        max_memory = os.environ.get(ENV) or None
    return parse_size(max_memory) if max_memory is not None else default_limit()


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


def _raise_in(thread_id: int, exc: type[_Fired]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))


class _Watcher(threading.Thread):
    """Polls RSS (against ``limit``) or the clock (against ``deadline``, a time.monotonic()); past it, it
    raises ``exc`` into the guarded thread, again every poll until the guard stops it (an exception
    delivered inside a finalizer or a C callback is swallowed there)."""

    def __init__(self, target_thread: int, limit: int | None = None, deadline: float | None = None,
                 exc: type[_Fired] = _OverLimit):
        super().__init__(daemon=True, name="edgerobust-memguard")
        self.target_thread, self.limit, self.deadline, self.exc = target_thread, limit, deadline, exc
        self.lock = threading.Lock()
        self.stopped = False
        self.fired_at: int | None = None

    def run(self) -> None:
        while True:
            rss = rss_bytes() if self.limit is not None else None
            with self.lock:
                if self.stopped or (self.limit is not None and rss is None):
                    return
                if self.limit is not None and rss > self.limit:
                    self.fired_at = rss
                    _raise_in(self.target_thread, self.exc)
                elif self.deadline is not None and time.monotonic() > self.deadline:
                    self.fired_at = 0
                    _raise_in(self.target_thread, self.exc)
            time.sleep(POLL_SECONDS)

    def halt(self) -> None:
        """Stop firing, then cancel an exception fired but not yet delivered; safe against a late one."""
        while True:
            try:
                with self.lock:
                    self.stopped = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.target_thread), None)
                return
            except _Fired:
                continue


def _error(step: str, arch: str | None, limit: int | None, used: int | None, cause: str) -> ResourceError:
    who = f" for {arch}" if arch else ""
    figures = f" ({_gb(used)} in use, the limit is {_gb(limit)})" if used and limit else ""
    return ResourceError(
        f"Stopped {step}{who}: it needed more memory than allowed{figures}.",
        why=f"{cause} Structural pruning traces the model and walks its dependency graph; some architectures "
            "(shifted-window attention, block/grid partitions) make that graph explode.",
        fix=f"Try a smaller input (`image_size`), uniform rather than global pruning (no `global_pruning`), "
            f"or leave the blocks that explode unpruned (`ignore_layers`); raise the "
            f"limit with {ENV}=16G if the machine has the memory.")


@contextlib.contextmanager
def guard(step: str, arch: str | None = None, max_memory: str | int | float | None = None) -> Iterator[None]:
    """Run the block under the memory limit; ResourceError (what, why, what to try) when it is passed.

    Only the calling thread is interrupted, at a Python instruction: a single huge allocation inside
    a C call is caught as the MemoryError it raises.
    """
    limit = resolve_limit(max_memory)
    now = rss_bytes()
    if limit is not None and now is not None and now > limit:
        raise _error(step, arch, limit, now, "The process already held more than the limit before the step began.")
    watcher = None
    if limit is not None and threading.current_thread() is threading.main_thread():
        watcher = _Watcher(threading.get_ident(), limit=limit)
        watcher.start()
    try:
        try:
            yield
        finally:
            if watcher is not None:
                watcher.halt()
    except _OverLimit:
        used = watcher.fired_at if watcher else None
        raise _error(step, arch, limit, used, "Its memory grew past the limit.") from None
    except MemoryError as exc:
        raise _error(step, arch, limit, rss_bytes(), f"The allocator failed ({exc or 'MemoryError'}).") from None
    except RecursionError:
        raise _error(step, arch, limit, rss_bytes(), "Its recursion went deeper than Python allows.") from None


@contextlib.contextmanager
def time_limit(seconds: float | None, error: Callable[[], BaseException]) -> Iterator[None]:
    """Run the block for at most ``seconds`` (None: no limit); past them, stop it and raise ``error()``.

    Like :func:`guard`, the calling thread is interrupted at its next Python instruction, wherever
    it is (a graph walk in a library's loop), so a step that would run for hours stops on time with
    the message ``error`` builds from what the step was doing. Only the main thread is watched.
    """
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    watcher = _Watcher(threading.get_ident(), deadline=time.monotonic() + seconds, exc=_OverTime)
    watcher.start()
    try:
        try:
            yield
        finally:
            watcher.halt()
    except _OverTime:
        raise error() from None
