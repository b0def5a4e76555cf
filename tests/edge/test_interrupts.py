"""Nothing lost: interrupted, killed, failing and concurrent `compress` runs.

A real `python -m edgerobust compress` subprocess interrupts (SIGINT) or kills (SIGKILL) itself at
exact moments, so that no test depends on timing: right after its hidden ``.out.tmp-<pid>-*``
folder is created, and right after the pruned model's ONNX file is opened for writing in it.
Afterwards the output folder is absent or a complete bundle whose hashes verify, an existing
bundle is byte-identical, SIGINT leaves no temporary folder, and the next run removes the one a
SIGKILL left behind. In-process, a KeyboardInterrupt is raised at every line atomic_dir runs.
"""
from __future__ import annotations

import errno
import gc
import inspect
import linecache
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _fixtures_gauntlet import assert_user_error, cli, flat, snapshot
from edgerobust.edge.files import atomic as atomic_mod
from edgerobust.edge.files import bundle as bundle_mod
from edgerobust.edge.files.bundle import Bundle
from edgerobust.edge.files.atomic import atomic_dir, clean_stale

ARGS = ["--finetune-epochs", "1", "--max-prune-drop", "100", "--eval-samples", "64", "--calib-samples", "32", "--int8",
        "--attacks", "fgsm", "--eps", "8/255"]

# Runs the CLI after wrapping os.mkdir (point "tmp") or open (point: a file name) so that the
# process sends itself the signal right after it creates its temporary folder or opens that file
# in it for writing.
_SELF_SIGNAL = r"""
import builtins, io, os, runpy, signal, sys
sig, point, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.argv = ["edgerobust", *sys.argv[4:]]
# Ctrl-C raises KeyboardInterrupt even where SIGINT came ignored (a background job of a script)
signal.signal(signal.SIGINT, signal.default_int_handler)
prefix = "." + os.path.basename(out) + ".tmp-"
def ours(path):
    return os.path.basename(path).startswith(prefix)
if point == "tmp":
    real_mkdir = os.mkdir
    def mkdir(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)
        if ours(os.fspath(path)):
            os.kill(os.getpid(), sig)
    os.mkdir = mkdir
else:
    real_open = builtins.open
    def open_(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and "w" in mode:
            path = os.fspath(file)
            name, (stem, _, ext) = os.path.basename(path), point.rpartition(".")
            # the file itself, or the hidden sibling it is written to and renamed from (atomic_file)
            named = name == point or (name.startswith("." + stem + ".tmp-") and name.endswith("." + ext))
            if named and ours(os.path.dirname(os.path.abspath(path))):
                os.kill(os.getpid(), sig)
        return f
    builtins.open = io.open = open_
runpy.run_module("edgerobust", run_name="__main__", alter_sys=True)
"""


def _run(ckpt: Path, out: Path, *extra: str, stop: tuple[signal.Signals, str] | None = None) -> subprocess.Popen:
    """Start `edgerobust -q compress ckpt --out out`; ``stop``: (signal, point) it sends itself."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = ["-q", "compress", str(ckpt), "--out", str(out), *ARGS, *extra]
    head = ["-m", "edgerobust"] if stop is None else ["-c", _SELF_SIGNAL, str(int(stop[0])), stop[1], str(out)]
    return subprocess.Popen([sys.executable, *head, *cmd], cwd=out.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _temps(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.tmp-*")) + sorted(out.parent.glob(f".{out.name}.old-*"))


def _assert_absent_or_complete(out: Path) -> None:
    if out.exists():
        b = Bundle.open(out)
        b.verify()
        assert (out / "model.onnx").is_file() and b.adv_paths


@pytest.mark.slow
@pytest.mark.parametrize("sig,point,existing", [
    (signal.SIGINT, "tmp", False),
    (signal.SIGINT, "model_fp32.onnx", True),
    (signal.SIGKILL, "tmp", True),
    (signal.SIGKILL, "model_fp32.onnx", False),
], ids=["sigint-at-start-new", "sigint-mid-write-existing", "sigkill-at-start-existing", "sigkill-mid-write-new"])
def test_interrupted_compress_loses_nothing(sig, point, existing, tmp_path, gz_ckpt, gz_bundle):
    out = tmp_path / "out"
    if existing:
        shutil.copytree(gz_bundle, out)
    before = snapshot(out) if existing else None
    proc = _run(gz_ckpt, out, *(["--overwrite"] if existing else []), stop=(sig, point))
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), \
        f"compress did not stop at {point} (exit {proc.returncode}):\n{output}"
    assert "Traceback" not in output, output
    if existing:
        assert snapshot(out) == before, "the existing bundle was changed"
    else:
        assert not out.exists(), "a half bundle was left in place"
    _assert_absent_or_complete(out)
    if sig == signal.SIGINT:
        assert _temps(out) == [], "Ctrl-C left a temporary folder"
        assert "compress stopped by Ctrl-C" in output and "Nothing half-written is left" in output, output
        return
    # SIGKILL cannot clean up: a stale temp folder of the dead run remains...
    stale = _temps(out)
    assert stale and str(proc.pid) in stale[0].name
    if point != "tmp":  # the file being written (or the hidden sibling it is written to)
        stem, _, ext = point.rpartition(".")
        assert (stale[0] / point).is_file() or list(stale[0].glob(f".{stem}.tmp-*.{ext}"))
    # ...and the next run writing the same folder removes it (this one fails on purpose).
    with pytest.raises(RuntimeError, match="stop"):
        with atomic_dir(out, overwrite=True):
            assert not any(p.exists() for p in stale)
            raise RuntimeError("stop")
    assert _temps(out) == []
    if existing:
        assert snapshot(out) == before


@pytest.mark.slow
def test_two_concurrent_runs_leave_one_valid_bundle(tmp_path, gz_ckpt):
    out = tmp_path / "out"
    procs = [_run(gz_ckpt, out) for _ in range(2)]
    results = []
    for p in procs:
        output, _ = p.communicate(timeout=300)
        results.append((p.returncode, output))
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(o for rc, o in results if rc == 2)
    assert "Traceback" not in loser
    assert "appeared while this run was writing" in " ".join(loser.split()) \
        or "already exists" in " ".join(loser.split()), loser
    Bundle.open(out).verify()
    assert _temps(out) == []


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_full_disk_is_one_clear_error_and_changes_nothing(existing, tmp_path, gz_ckpt, gz_bundle, monkeypatch):
    out = tmp_path / "out"
    if existing:
        shutil.copytree(gz_bundle, out)
    before = snapshot(tmp_path)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bundle_mod, "save_npz", full)  # eval.npz is the first array file a bundle gets
    result = cli("compress", gz_ckpt, "--out", out, "--finetune-epochs", "0", "--max-prune-drop", "100", "--eval-samples", "32",
                 "--calib-samples", "16", *(["--overwrite"] if existing else []))
    assert_user_error(result, "the disk is full", "Free some disk space")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------ the cleanup rules


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_clean_stale_spares_live_runs_and_foreign_folders(tmp_path):
    out = tmp_path / "b"
    live = tmp_path / f".b.tmp-{os.getpid()}-x"
    dead = tmp_path / f".b.tmp-{_dead_pid()}-y"
    foreign = tmp_path / ".b.tmp-notapid"
    other = tmp_path / f".c.tmp-{_dead_pid()}-z"
    for d in (live, dead, foreign, other):
        d.mkdir()
    assert clean_stale(out) == [dead]
    assert live.exists() and foreign.exists() and other.exists() and not dead.exists()


def test_clean_stale_restores_a_bundle_killed_mid_swap(tmp_path):
    """A run killed between moving the old bundle aside and moving the new one in."""
    out = tmp_path / "b"
    old = tmp_path / f".b.old-{_dead_pid()}-q"
    (old / "b").mkdir(parents=True)
    (old / "b" / "manifest.json").write_text("{}")
    clean_stale(out)
    assert (out / "manifest.json").read_text() == "{}" and not old.exists()


def test_interrupt_during_the_swap_puts_the_old_bundle_back(tmp_path, monkeypatch):
    out = tmp_path / "b"
    out.mkdir()
    (out / "f").write_text("old")
    real = os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder into place
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(bundle_mod.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "f").write_text("new")
    monkeypatch.undo()
    assert (out / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_new_bundle_folder_gets_the_usual_permissions(tmp_path):
    with atomic_dir(tmp_path / "b") as tmp:
        (tmp / "f").write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o777 & ~mask


# ------------------------------------------------------------------------ Ctrl-C at every line


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: relative path -> file text, or 'dir'."""
    return {p.relative_to(root).as_posix(): "dir" if p.is_dir() else p.read_text() for p in sorted(root.rglob("*"))}


def _write_interrupted(out: Path, overwrite: bool, at: int | None) -> tuple[int, str | None]:
    """Write ``out`` with atomic_dir, raising KeyboardInterrupt at the ``at``-th point it traces:
    each line atomic_dir runs, and each start, line and return of the functions it calls (except
    the rollback's, which only a second Ctrl-C would interrupt). Returns the points traced and
    where the interrupt was raised (None: it was not).

    Not traced: a ``try:`` line (CPython 3.11 does not hand an exception a trace function raises
    there to the enclosing handler; a real signal never lands on it, only at calls and jumps) and
    a generator's start and return (its resumption and its yield).
    """
    count, where = 0, None

    def inside(frame) -> bool:
        f, under = frame, False
        while f is not None:
            if f.f_code.co_filename == atomic_mod.__file__:
                if f.f_code.co_name in ("rollback", "_rollback"):
                    return False
                under = under or f.f_code.co_name == "atomic_dir"
            f = f.f_back
        return under

    def trace(frame, event, arg):
        nonlocal count, where
        if event == "call" and not inside(frame):
            return None
        code = frame.f_code
        if event == "line":
            point = linecache.getline(code.co_filename, frame.f_lineno).strip() != "try:"
        else:
            point = event in ("call", "return") and not code.co_flags & inspect.CO_GENERATOR
        if point:
            count += 1
            if count == at:
                where = f"{event} of {code.co_name} ({Path(code.co_filename).name}:{frame.f_lineno})"
                raise KeyboardInterrupt
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "f").write_text("new")
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(previous)
    return count, where


def _sweep(existing: bool, base: str) -> None:
    """Interrupt atomic_dir at each point in turn (see the test below); raise on a leftover."""
    parents = {} if existing else {"a": "dir", "a/b": "dir"}
    rel = "out" if existing else "a/b/out"
    done = {**parents, rel: "dir", f"{rel}/sub": "dir", f"{rel}/sub/f": "new"}
    before = {"out": "dir", "out/f": "old"} if existing else {}

    def setup(name: str) -> tuple[Path, Path]:
        root = Path(base) / name
        root.mkdir()
        if existing:
            (root / "out").mkdir()
            (root / "out" / "f").write_text("old")
        return root, root / rel

    gc.disable()  # no finalizer of an unrelated object runs inside the traced calls
    try:
        _write_interrupted(setup("warm-up")[1], existing, None)  # first-call caches filled
        root, out = setup("count")
        total, where = _write_interrupted(out, existing, None)
        assert where is None and _tree(root) == done and total > 30, (total, _tree(root))
        outcomes = set()
        for at in range(1, total + 1):
            root, out = setup(str(at))
            _, where = _write_interrupted(out, existing, at)
            assert where, f"no interrupt at point {at} of {total}"
            left = _tree(root)
            assert left in (before, done), f"Ctrl-C at the {where} left {left}"
            outcomes.add(left == done)
        assert outcomes == {False, True}, outcomes  # interrupted before the folder was in place, and after
    finally:
        gc.enable()


@pytest.mark.parametrize("existing", [False, True], ids=["new-in-new-parents", "existing-overwritten"])
def test_ctrl_c_anywhere_in_atomic_dir_leaves_nothing(existing, tmp_path):
    """A KeyboardInterrupt raised at each point in turn: afterwards the folder holds the previous
    ``out`` (or nothing: not even the parent folders it needed) or the complete new ``out``, and
    nothing else.

    In a fresh interpreter: once the compress fixtures have run in this one (torch's export
    machinery), a trace function on every call slows it past use.
    """
    here = Path(__file__).parent  # this module, and the shared helpers one folder up
    code = f"import sys; sys.path[:0] = {[str(here), str(here.parent)]!r}; import test_interrupts as t; t._sweep({existing}, {str(tmp_path)!r})"
    r = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_failed_run_removes_the_parent_folders_it_created(tmp_path):
    """A refused compress (a quality gate) left an empty export/ behind (issue 26)."""
    (tmp_path / "kept").mkdir()
    for out in (tmp_path / "export" / "deep" / "b", tmp_path / "kept" / "b"):
        with pytest.raises(RuntimeError, match="gate"):
            with atomic_dir(out) as tmp:
                assert tmp.parent == out.parent and out.parent.is_dir()
                raise RuntimeError("gate")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_failed_run_keeps_a_created_parent_that_others_filled(tmp_path):
    out = tmp_path / "export" / "b"
    with pytest.raises(RuntimeError):
        with atomic_dir(out):
            (tmp_path / "export" / "other").write_text("x")  # another writer's file appears meanwhile
            raise RuntimeError("gate")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["other"]


def test_successful_run_keeps_the_parent_folders(tmp_path):
    out = tmp_path / "export" / "b"
    with atomic_dir(out) as tmp:
        (tmp / "f").write_text("x")
    assert (out / "f").read_text() == "x" and sorted(p.name for p in out.parent.iterdir()) == ["b"]


def test_atomic_file_shows_the_old_file_or_the_new_one(tmp_path):
    from edgerobust.edge.files.atomic import atomic_file

    path = tmp_path / "plot.png"
    with atomic_file(path) as tmp:
        assert tmp.suffix == ".png" and tmp.name.startswith(".plot.tmp-")  # writers that infer the format
        tmp.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]
    stale = tmp_path / f".plot.tmp-{_dead_pid()}-abcdef.png"  # what a SIGKILL leaves
    stale.write_text("half")
    live = tmp_path / f".plot.tmp-{os.getpid()}-abcdef.png"  # a running writer's
    live.write_text("busy")
    with atomic_file(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and not stale.exists() and live.exists()


def test_ctrl_c_while_the_cli_loads_is_one_line_and_130(tmp_path):
    """SIGINT lands inside the CLI's own imports (here: as typer starts to load): no traceback."""
    code = ("import os, runpy, signal, sys\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "class Hook:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'typer':\n"
            "            os.kill(os.getpid(), signal.SIGINT)\n"
            "        return None\n"
            "sys.meta_path.insert(0, Hook())\n"
            "sys.argv = ['edgerobust', 'compress', 'm.pt']\n"
            "runpy.run_module('edgerobust', run_name='__main__', alter_sys=True)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 130, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "stopped by Ctrl-C while starting" in r.stderr, r.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_after_the_command_ended_keeps_its_exit_status(tmp_path):
    """SIGINT while the interpreter shuts down (here: from an atexit hook) after `--version` ran:
    the command's exit 0 stands (it was exit -2, the signal's, with nothing said)."""
    code = ("import atexit, os, runpy, signal, sys\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))\n"
            "sys.argv = ['edgerobust', '--version']\n"
            "runpy.run_module('edgerobust', run_name='__main__', alter_sys=True)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, (r.returncode, r.stderr[-2000:])


def test_an_error_after_a_swallowed_ctrl_c_is_the_ctrl_c(tmp_path, gz_ckpt, monkeypatch):
    """A Ctrl-C inside a third party's code that swallows it and fails later with another error (torch's
    lazy import of sympy, left half-imported: AttributeError) is still Ctrl-C: the line and exit 130."""
    import edgerobust.cli as cli_mod
    from edgerobust.workstation import compress as compress_mod

    def third_party(cfg):
        try:
            cli_mod._on_ctrl_c(signal.SIGINT, None)  # as main's handler runs when Ctrl-C arrives
        except KeyboardInterrupt:
            pass
        raise AttributeError("module 'sympy' has no attribute 'logic'")

    monkeypatch.setattr(compress_mod, "compress", third_party)
    monkeypatch.setattr(cli_mod, "_PRESSED", [])
    r = cli("compress", gz_ckpt, "--out", tmp_path / "b")
    assert r.exit_code == 130 and "compress stopped by Ctrl-C" in flat(r.output), (r.exit_code, r.output)
    monkeypatch.setattr(cli_mod, "_PRESSED", [])  # without a Ctrl-C the same error is a bug: it surfaces
    monkeypatch.setattr(compress_mod, "compress", lambda cfg: (_ for _ in ()).throw(AttributeError("a bug")))
    r = cli("compress", gz_ckpt, "--out", tmp_path / "b")
    assert r.exit_code == 1 and isinstance(r.exception, AttributeError)
