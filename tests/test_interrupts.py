"""Nothing lost: interrupted, killed, failing and concurrent `compress` runs.

A real `python -m edgerobust compress` subprocess is interrupted (SIGINT) or killed (SIGKILL) at
deterministic moments: when its hidden ``.out.tmp-<pid>-*`` folder appears, and when the pruned
model's ONNX file is being written into it. Afterwards the output folder is absent or a complete
bundle whose hashes verify, an existing bundle is byte-identical, SIGINT leaves no temporary
folder, and the next run removes the one a SIGKILL left behind.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _fixtures_gauntlet import assert_user_error, cli, snapshot
from edgerobust.device import bundle as bundle_mod
from edgerobust.device.bundle import Bundle, atomic_dir, clean_stale

ARGS = ["--finetune-epochs", "1", "--max-prune-drop", "100", "--eval-samples", "64", "--calib-samples", "32", "--int8",
        "--attacks", "fgsm", "--eps", "8/255"]


def _start(ckpt: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "edgerobust", "-q", "compress", str(ckpt), "--out", str(out),
                             *ARGS, *extra], cwd=out.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _temps(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.tmp-*")) + sorted(out.parent.glob(f".{out.name}.old-*"))


def _wait_for(proc: subprocess.Popen, out: Path, point: str, timeout: float = 120) -> None:
    """Poll until the run reaches ``point`` ('tmp': its temp folder exists; else that file in it)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for tmp in out.parent.glob(f".{out.name}.tmp-*"):
            if point == "tmp" or (tmp / point).exists():
                return
        if proc.poll() is not None:
            pytest.fail(f"compress ended (exit {proc.returncode}) before reaching {point}:\n{proc.stdout.read()}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"compress did not reach {point} in {timeout} s")


def _assert_absent_or_complete(out: Path) -> None:
    if out.exists():
        b = Bundle.open(out)
        b.verify()
        assert (out / "model.onnx").is_file() and b.adv_paths


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
    proc = _start(gz_ckpt, out, *(["--overwrite"] if existing else []))
    try:
        _wait_for(proc, out, point)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    if existing:
        assert snapshot(out) == before, "the existing bundle was changed"
    else:
        assert not out.exists(), "a half bundle was left in place"
    _assert_absent_or_complete(out)
    if sig == signal.SIGINT:
        assert _temps(out) == [], "Ctrl-C left a temporary folder"
        assert proc.returncode == 130, output
        assert "compress stopped by Ctrl-C" in output and "Nothing was written" in output, output
        return
    # SIGKILL cannot clean up: a stale temp folder of the dead run remains...
    stale = _temps(out)
    assert stale and str(proc.pid) in stale[0].name
    # ...and the next run writing the same folder removes it (this one fails on purpose).
    with pytest.raises(RuntimeError, match="stop"):
        with atomic_dir(out, overwrite=True):
            assert not any(p.exists() for p in stale)
            raise RuntimeError("stop")
    assert _temps(out) == []
    if existing:
        assert snapshot(out) == before


def test_two_concurrent_runs_leave_one_valid_bundle(tmp_path, gz_ckpt):
    out = tmp_path / "out"
    procs = [_start(gz_ckpt, out) for _ in range(2)]
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
