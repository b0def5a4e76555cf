"""Killed at any moment: `compress`, `audit`, `sweep` and `optimize` stopped by SIGKILL at random
times (and every fifth time by SIGINT, Ctrl-C), each over the output of an earlier complete run.

After each stop: the earlier bundle or report is intact (byte for byte, or replaced by a complete
new one), no half-written file is visible (every visible JSON parses, every npz and ONNX file
loads, every SQLite file passes its integrity check, every HTML page is whole; the hidden
``.name.tmp-*`` folders a SIGKILL leaves are not visible and the next run removes them), and
Ctrl-C exits 130 with its message. After the series a rerun succeeds.

Kill points per command: EDGEROBUST_CRASH_KILLS (1 in CI; ``EDGEROBUST_CRASH_KILLS=50 pytest
tests/fuzz/test_crash.py`` is the long run), drawn from EDGEROBUST_CRASH_SEED (default 0). CI stops
`compress` and `audit`; `sweep` and `optimize` (about 50 s more on 2 cores) run where kills are asked
for (their pieces have tests of their own: atomic_file, a killed trial, a killed sweep).
Each kill time is uniform over the length of the earlier complete run (for `compress`, whose
earlier bundle is the session's, over WINDOW_S when one kill is asked for).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _fixtures_gauntlet import fast_profile, snapshot
from edgerobust.edge.files.bundle import Bundle
from fuzzkit import env_int, record

KILLS = env_int("EDGEROBUST_CRASH_KILLS", 1)
WINDOW_S = 12.0  # about a whole `compress` of the digits model here
long_only = pytest.mark.skipif(KILLS < 2, reason="set EDGEROBUST_CRASH_KILLS (e.g. 50) to stop sweep and optimize too")
SEED = env_int("EDGEROBUST_CRASH_SEED", 0)

# The CLI in a fresh interpreter, with Ctrl-C raising KeyboardInterrupt even where SIGINT came
# ignored (a background job of a script).
_MAIN = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "sys.argv = ['edgerobust', *sys.argv[1:]]; runpy.run_module('edgerobust', run_name='__main__', alter_sys=True)")

COMPRESS = ["--finetune-epochs", "1", "--max-prune-drop", "100", "--eval-samples", "64", "--calib-samples", "32",
            "--int8", "--attacks", "fgsm", "--eps", "8/255"]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("EDGEROBUST_PROFILE", None)
    return subprocess.Popen([sys.executable, "-c", _MAIN, "-q", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


def run_to_end(args: list[str], cwd: Path) -> float:
    """Run the command to its end (exit 0); return its wall time in seconds."""
    t0 = time.monotonic()
    proc = _start(args, cwd)
    out = _finish(proc)
    assert proc.returncode == 0, f"{args[0]} failed (exit {proc.returncode}):\n{out[-3000:]}"
    return time.monotonic() - t0


def stop_at(args: list[str], cwd: Path, after: float, sig: signal.Signals) -> tuple[int, str]:
    """Start the command, send ``sig`` after ``after`` seconds (if it still runs); its exit and output."""
    proc = _start(args, cwd)
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    out = _finish(proc)
    return proc.returncode, out


def visible(root: Path):
    """Files under ``root`` outside hidden folders and not hidden themselves."""
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            yield p


def assert_whole(root: Path) -> None:
    """No visible file under ``root`` is half-written, as far as its format can tell."""
    import onnx

    for p in visible(root):
        what = f"{p.relative_to(root)} is not whole"
        if p.suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                for k in z.files:
                    z[k]
        elif p.suffix == ".onnx":
            onnx.load(str(p))
        elif p.suffix in (".pt", ".pth"):
            with zipfile.ZipFile(p) as z:
                assert z.testzip() is None, what
        elif p.suffix == ".db":
            with sqlite3.connect(p) as db:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", what
        elif p.suffix == ".html":
            assert p.read_text(encoding="utf-8").rstrip().endswith("</html>"), what
        elif p.suffix == ".png":
            assert p.read_bytes()[-8:] == b"IEND\xaeB`\x82", what


def kill_series(name: str, args, cwd: Path, full_s: float, check) -> list[str]:
    """KILLS stops of ``args`` (or of ``args(k)`` for the k-th) at random times over ``full_s``;
    ``check(code, output)`` after each. Returns a line per stop (signal, time, exit)."""
    rng = random.Random(f"{SEED}-{name}")
    log = []
    for k in range(KILLS):
        sig = signal.SIGINT if k % 5 == 4 else signal.SIGKILL
        after = rng.uniform(0.1, full_s)
        code, out = stop_at(args(k) if callable(args) else args, cwd, after, sig)
        log.append(f"{sig.name} at {after:.2f} s: exit {code}")
        record("finished first" if code == 0 else sig.name, 0.0)
        assert "Traceback" not in out, f"{log[-1]}\n{out[-3000:]}"
        if code == 0:
            pass  # it finished first: the new output must be complete
        elif sig == signal.SIGINT:
            assert code == 130, f"{log[-1]}\n{out[-3000:]}"
            assert "stopped by Ctrl-C" in " ".join(out.split()), out[-3000:]
        else:
            assert code == -signal.SIGKILL, f"{log[-1]}\n{out[-3000:]}"
        check(code, out)
    return log


def _temps(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.tmp-*")) + sorted(folder.glob(f".{name}.old-*"))


@pytest.mark.slow
def test_compress_killed_anywhere_keeps_the_bundle(tmp_path, gz_ckpt, gz_bundle):
    out = shutil.copytree(gz_bundle, tmp_path / "bundle")
    args = ["compress", gz_ckpt, "--out", out, "--overwrite", *COMPRESS]
    full = run_to_end(args, tmp_path) if KILLS > 1 else WINDOW_S
    state = {"before": snapshot(out)}

    def check(code, output):
        now = snapshot(out)
        if now != state["before"]:  # replaced: by a complete bundle only
            Bundle.open(out).verify()
            state["before"] = now
        assert_whole(out)

    kill_series("compress", args, tmp_path, full, check)
    run_to_end(args, tmp_path)
    Bundle.open(out).verify()
    assert _temps(tmp_path, "bundle") == [], "the rerun left the dead runs' temporary folders"


def _reports(bundle: Path) -> dict[str, dict]:
    root = bundle / "reports"
    return {p.name: snapshot(p) for p in sorted(root.iterdir()) if not p.name.startswith(".")} if root.is_dir() else {}


def _complete_report(folder: Path) -> None:
    from edgerobust.edge.compare import load_audit

    assert (folder / "report.json").is_file(), f"{folder.name}: a report folder without report.json"
    load_audit(folder)  # reads report.json and checks predictions.npz against its hash
    assert_whole(folder)


@pytest.mark.slow
def test_audit_killed_anywhere_keeps_every_report(tmp_path, tiny_bundle):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    profile = fast_profile(tmp_path / "quick.toml")
    args = ["audit", bundle / "model.onnx", "--profile", profile]
    full = run_to_end(args, tmp_path)
    files = snapshot(bundle)
    kept = _reports(bundle)

    def check(code, output):
        now = _reports(bundle)
        for name, snap in kept.items():
            assert now.get(name) == snap, f"the earlier report {name} changed"
        for name in set(now) - set(kept):
            _complete_report(bundle / "reports" / name)
        kept.update(now)
        assert {k: v for k, v in snapshot(bundle).items() if not k.startswith("reports")} == \
               {k: v for k, v in files.items() if not k.startswith("reports")}, "the audit changed the bundle"

    kill_series("audit", args, tmp_path, full, check)
    run_to_end(args, tmp_path)
    assert len(_reports(bundle)) >= 2
    for name in _reports(bundle):
        _complete_report(bundle / "reports" / name)


def _sweep_doc(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())["_data"]


@pytest.mark.slow
@long_only
def test_sweep_killed_anywhere_resumes(tmp_path, gz_ckpt):
    out = tmp_path / "sweep"
    profile = fast_profile(tmp_path / "quick.toml")
    args = ["sweep", gz_ckpt, "--out", out, "--sparsities", "0.5", "--attacks", "fgsm", "--eps", "8/255",
            "--eval-samples", "48", "--finetune-epochs", "0", "--profile", profile]
    full = run_to_end(args, tmp_path)
    first = _sweep_doc(out)

    def check(code, output):
        assert_whole(out)
        assert (out / "sweep.json").is_file(), "the earlier sweep.json is gone"

    kill_series("sweep", args, tmp_path, full, check)
    run_to_end(args, tmp_path)
    again = _sweep_doc(out)
    acc = {(p["model"], p["threat"], p["attack"], p["eps_text"]): p["accuracy"] for p in first["points"]}
    assert {(p["model"], p["threat"], p["attack"], p["eps_text"]): p["accuracy"] for p in again["points"]} == acc
    assert_whole(out)


@pytest.mark.slow
@long_only
def test_optimize_killed_anywhere_resumes(tmp_path, gz_ckpt):
    out = tmp_path / "search"
    profile = fast_profile(tmp_path / "quick.toml")

    def args(trials: int) -> list:
        return ["optimize", gz_ckpt, "--out", out, "--max-latency-ms", "1000", "--trials", trials,
                "--eval-samples", "32", "--attacks", "fgsm", "--eps", "8/255", "--profile", profile]

    full = run_to_end(args(1), tmp_path)
    best = out / "best"
    Bundle.open(best).verify()

    def check(code, output):
        assert_whole(out)
        Bundle.open(best).verify()  # the chosen bundle: the earlier one or a complete new one

    kill_series("optimize", lambda k: args(k + 2), tmp_path, full, check)  # each asks one trial more
    run_to_end(args(KILLS + 1), tmp_path)
    Bundle.open(best).verify()
    assert_whole(out)
    import optuna

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= KILLS + 1
