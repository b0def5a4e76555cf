"""Atomic folder writes: a bundle or report is built in a temporary sibling folder and renamed
into place only when complete; an interrupted swap is rolled back; stale temporary folders of
dead processes are cleaned. torch-free."""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator

from edgerobust.errors import BundleError

# =============================================================================================
# atomic writing


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success, move it into place as ``out``.

    An interrupted run leaves at most a hidden ``.name.tmp-<pid>-*`` folder (removed on
    exceptions and on a Ctrl-C wherever it lands; after a SIGKILL the next run writing ``out``
    removes it), never a half-written ``out``. An existing ``out`` is replaced only when
    ``overwrite`` is true, and then only after the new folder is complete; if the swap is
    interrupted before the new folder is in place, the old ``out`` is put back. The parent
    folders created for ``out`` are removed again, if still empty, when the run fails. A failed
    write (a full disk, a read-only folder) is a BundleError.
    """
    run = _Run(Path(out))
    out = run.out
    try:
        _check_out(run, overwrite)
        try:
            for attempt in range(3):
                try:
                    tmp = run.new_sibling("tmp")
                    break
                except FileNotFoundError:  # a failing run removed the empty parent it had made
                    if attempt == 2:
                        raise
                    run.make_parents()
        except OSError as exc:
            raise _write_error(out, exc) from exc
        yield tmp
        try:
            if out.exists():
                if not overwrite:
                    raise BundleError(f"'{out}' appeared while this run was writing.",
                                      fix="Another run wrote the same folder; pass `overwrite` or choose another "
                                          "`out`.")
                old = run.new_sibling("old")
                os.rename(out, old / out.name)
            os.rename(tmp, out)  # the commit: from here on the new folder stays, even past a Ctrl-C
        except OSError as exc:
            if out.exists() and not run.moved_aside():  # another run renamed its folder into place first
                raise BundleError(f"'{out}' appeared while this run was writing.", why=str(exc),
                                  fix="Another run wrote the same folder; its bundle was kept. Choose another "
                                      "`out` to keep both.") from exc
            raise
        if run.old is not None:
            _remove_tree(run.old)
    except OSError as exc:
        run.rollback()
        raise _write_error(out, exc) from exc
    except BaseException:
        run.rollback()
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``path`` (same suffix, so writers that infer a format
    from it still work); on success it replaces ``path`` in one rename, so a reader, or a run
    killed at any moment, sees the old file or the new one, never half of one. For files written
    in place in folders a command resumes (a sweep's, a search's); removed on failure, and the
    next write of ``path`` removes what a killed run left."""
    path = Path(path)
    prefix = f".{path.stem}.tmp-"
    for stale in path.parent.glob(f"{prefix}*{path.suffix}"):  # a killed run's
        pid = stale.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                stale.unlink()
    tmp = path.with_name(f"{prefix}{os.getpid()}-{secrets.token_hex(3)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _check_out(run: _Run, overwrite: bool) -> None:
    """Create ``out``'s parent folders, refuse an existing ``out`` without ``overwrite`` and an
    unwritable parent, and clean the leftovers of killed runs."""
    out, parent = run.out, run.out.parent
    try:
        run.make_parents()
    except OSError as exc:
        raise BundleError(f"Cannot create the output folder '{parent}'.", why=str(exc),
                          fix="Choose a writable location for `out`.") from exc
    if out.exists() and not overwrite:
        raise BundleError(f"'{out}' already exists.", fix="Pass `overwrite` to replace it, or choose another `out`.")
    if not os.access(parent, os.W_OK):
        raise BundleError(f"The output folder '{parent}' is not writable.",
                          fix="Choose a writable location for `out`.")
    clean_stale(out)


class _Run:
    """The folders one atomic_dir run has created. Each is recorded just before its mkdir (its
    name is chosen first), so a Ctrl-C landing anywhere, even right after a mkdir returns, finds
    everything there is to undo."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.made: list[Path] = []  # parent folders this run created, outermost first
        self.tmp: Path | None = None  # the folder being written
        self.old: Path | None = None  # holds the previous ``out`` during the swap

    def make_parents(self) -> None:
        """Create ``out``'s parent and its missing ancestors."""
        missing, folder = [], self.out.parent
        while not folder.is_dir() and folder.parent != folder:
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            self.made.append(d)
            try:
                os.mkdir(d)
            except FileExistsError:  # another process made it meanwhile: not this run's to remove
                self.made.remove(d)
                if not d.is_dir():  # a file of that name: no folder can go there
                    raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(d)) from None

    def new_sibling(self, kind: str) -> Path:
        """Create the hidden sibling ``.name.<kind>-<pid>-<random>`` of ``out`` (clean_stale reads
        the pid) as ``self.tmp`` or ``self.old``; its mode is 0o777 less the umask, as any folder's."""
        while True:
            path = self.out.parent / f".{self.out.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
            setattr(self, kind, path)
            try:
                os.mkdir(path)
                return path
            except FileExistsError:  # pragma: no cover - 32 random bits after this process's pid
                continue

    def moved_aside(self) -> bool:
        """Whether the previous ``out`` lies in the ``old`` folder (the swap began)."""
        return self.old is not None and (self.old / self.out.name).exists()

    def rollback(self) -> None:
        """Undo an unfinished run: drop the temporary folders and the empty parents it made, and
        put a moved-away ``out`` back unless the new folder already took its place (the commit)."""
        out, tmp, old = self.out, self.tmp, self.old
        committed = False
        if self.moved_aside():
            committed = tmp is not None and not tmp.exists()
            if not committed and not out.exists():
                try:
                    os.rename(old / out.name, out)
                except OSError:  # pragma: no cover - left for clean_stale of the next run
                    pass
        if tmp is not None:
            _remove_tree(tmp)
        if old is not None and (committed or not self.moved_aside()):
            _remove_tree(old)
        for d in reversed(self.made):  # innermost first; one that is not empty keeps its ancestors
            try:
                os.rmdir(d)
            except FileNotFoundError:
                continue
            except OSError:
                break


def _remove_tree(path: Path) -> None:
    """shutil.rmtree, ignoring errors: also the OSError (EBADF) that CPython 3.11's rmtree raises
    from its ``finally`` when a Ctrl-C lands just after it closed a folder's descriptor, which
    replaces the KeyboardInterrupt; the second pass removes what the first left."""
    try:
        shutil.rmtree(path, ignore_errors=True)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def _write_error(out: Path, exc: OSError) -> BundleError:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return BundleError(
        f"Writing '{out}' failed: " + ("the disk is full." if full else f"{exc.strerror or exc}."),
        why=f"{type(exc).__name__}: {exc}. Nothing was written to '{out}'; an existing bundle there is unchanged.",
        fix="Free some disk space, or choose another `out` on a disk with room." if full
        else "Choose a writable location for `out`.")


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
