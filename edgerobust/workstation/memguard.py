"""A guard on memory for the steps that can eat the machine: building torch-pruning's dependency
graph, pruning through it, and exporting to ONNX.

torch-pruning traces a model and walks its graph in recursive Python; on some architectures
(shifted-window attention, MaxViT's partitions) that walk grows until the kernel's OOM killer ends
the process without a word. :func:`guard` watches the process's resident memory (``VmRSS`` in
``/proc/self/status``) from a background thread and, past the limit, raises an exception into the
guarded thread at its next Python instruction; the guard turns it (and any MemoryError or
RecursionError of the step) into a :class:`ResourceError` naming the step, the architecture and
what to try, long before the kernel would kill the process.

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
from typing import Iterator

from edgerobust.errors import EdgeRobustError

ENV = "EDGEROBUST_MAX_MEMORY"
POLL_SECONDS = 0.05
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class ResourceError(EdgeRobustError):
    """A step would need more memory (or recursion depth) than this machine, or the limit, allows."""


class _OverLimit(BaseException):
    """Raised into the guarded thread by the watcher (a BaseException: library code that catches
    Exception cannot swallow it)."""


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


def _raise_in(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(_OverLimit))


class _Watcher(threading.Thread):
    """Polls RSS; past the limit it raises _OverLimit into the guarded thread, again every poll until the
    guard stops it (an exception delivered inside a finalizer or a C callback is swallowed there)."""

    def __init__(self, target_thread: int, limit: int):
        super().__init__(daemon=True, name="edgerobust-memguard")
        self.target_thread, self.limit = target_thread, limit
        self.lock = threading.Lock()
        self.stopped = False
        self.fired_at: int | None = None

    def run(self) -> None:
        while True:
            rss = rss_bytes()
            with self.lock:
                if self.stopped or rss is None:
                    return
                if rss > self.limit:
                    self.fired_at = rss
                    _raise_in(self.target_thread)
            time.sleep(POLL_SECONDS)

    def halt(self) -> None:
        """Stop firing, then cancel an exception fired but not yet delivered; safe against a late one."""
        while True:
            try:
                with self.lock:
                    self.stopped = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.target_thread), None)
                return
            except _OverLimit:
                continue


def _error(step: str, arch: str | None, limit: int | None, used: int | None, cause: str) -> ResourceError:
    who = f" for {arch}" if arch else ""
    figures = f" ({_gb(used)} in use, the limit is {_gb(limit)})" if used and limit else ""
    return ResourceError(
        f"Stopped {step}{who}: it needed more memory than allowed{figures}.",
        why=f"{cause} Structural pruning traces the model and walks its dependency graph; some architectures "
            "(shifted-window attention, block/grid partitions) make that graph explode.",
        fix=f"Try a smaller input (--image-size), uniform rather than global pruning (no --global-pruning), "
            f"or leave the blocks that explode unpruned (library: PruneConfig(ignore_layers=...)); raise the "
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
        watcher = _Watcher(threading.get_ident(), limit)
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
