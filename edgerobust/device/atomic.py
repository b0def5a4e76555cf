"""Atomic folder writes: a bundle or report is built in a temporary sibling folder and renamed
into place only when complete; an interrupted swap is rolled back; stale temporary folders of
dead processes are cleaned. torch-free."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgerobust.errors import BundleError

# ---------------------------------------------------------------------------------------------
# atomic writing


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success, move it into place as ``out``.

    An interrupted run leaves at most a hidden ``.name.tmp-<pid>-*`` folder (removed on
    exceptions and Ctrl-C; after a SIGKILL the next run writing ``out`` removes it), never a
    half-written ``out``. An existing ``out`` is replaced only when ``overwrite`` is true, and
    then only after the new folder is complete; if the swap is interrupted the old ``out`` is
    put back. A failed write (a full disk, a read-only folder) is a BundleError.
    """
    out = Path(out)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"Cannot create the output folder '{parent}'.", why=str(exc),
                          fix="Choose a writable location with --out.") from exc
    if out.exists() and not overwrite:
        raise BundleError(f"'{out}' already exists.", fix="Pass --overwrite to replace it, or choose another --out.")
    if not os.access(parent, os.W_OK):
        raise BundleError(f"The output folder '{parent}' is not writable.", fix="Choose a writable location with --out.")
    clean_stale(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the bundle gets the usual mode
    except OSError as exc:
        raise _write_error(out, exc) from exc
    old: Path | None = None
    moved = False
    try:
        yield tmp
        try:
            if out.exists():
                if not overwrite:
                    raise BundleError(f"'{out}' appeared while this run was writing.",
                                      fix="Another run wrote the same folder; pass --overwrite or choose another --out.")
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=parent))
                os.rename(out, old / out.name)
                moved = True
                os.rename(tmp, out)
                moved = False
            else:
                os.rename(tmp, out)
        except OSError as exc:
            if out.exists() and not moved:  # another run renamed its folder into place first
                raise BundleError(f"'{out}' appeared while this run was writing.", why=str(exc),
                                  fix="Another run wrote the same folder; its bundle was kept. Choose another "
                                      "--out to keep both.") from exc
            raise
    except OSError as exc:
        _rollback(out, tmp, old, moved)
        raise _write_error(out, exc) from exc
    except BaseException:
        _rollback(out, tmp, old, moved)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _rollback(out: Path, tmp: Path, old: Path | None, moved: bool) -> None:
    """Undo an unfinished atomic_dir: drop the temporary folder, put a moved-away ``out`` back."""
    if moved and old is not None and not out.exists():
        try:
            os.rename(old / out.name, out)
        except OSError:  # pragma: no cover - left for clean_stale of the next run
            return
    shutil.rmtree(tmp, ignore_errors=True)
    if old is not None and not (old / out.name).exists():
        shutil.rmtree(old, ignore_errors=True)


def _write_error(out: Path, exc: OSError) -> BundleError:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return BundleError(
        f"Writing '{out}' failed: " + ("the disk is full." if full else f"{exc.strerror or exc}."),
        why=f"{type(exc).__name__}: {exc}. Nothing was written to '{out}'; an existing bundle there is unchanged.",
        fix="Free some disk space, or choose another --out on a disk with room." if full
        else "Choose a writable location with --out.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def clean_stale(out: str | os.PathLike) -> list[Path]:
    """Remove the leftovers of runs writing ``out`` that were killed (SIGKILL, power loss).

    Only folders named by atomic_dir with the pid of a process that no longer runs are
    touched: a ``.name.tmp-<pid>-*`` is deleted; a ``.name.old-<pid>-*`` holding the previous
    bundle is moved back to ``out`` if the run died mid-swap, else deleted. Returns what was removed.
    """
    out = Path(out)
    removed: list[Path] = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        for kind in ("tmp", "old"):
            prefix = f".{out.name}.{kind}-"
            if not p.name.startswith(prefix) or not p.is_dir():
                continue
            pid = p.name[len(prefix):].split("-", 1)[0]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            if kind == "old" and (p / out.name).is_dir() and not out.exists():
                try:
                    os.rename(p / out.name, out)
                except OSError:
                    continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
