"""What a new user met on an 80-column terminal and in logs (issue 26): a warning said twice, a
table cut to pieces, progress lines cut short. Through typer's CliRunner and the real consoles."""
import os
import re
import shutil

import pytest
from rich.console import Console
from typer.testing import CliRunner

from edgerobust import ui
from edgerobust.cli import app
from edgerobust.edge.runtime.profiles import list_profiles

runner = CliRunner()
# What the audit says is under test here, not its timings: measure with the fewest runs.
pytestmark = pytest.mark.usefixtures("quick_measure")


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    return shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("robust") / "tiny")  # this module's own copy


@pytest.fixture
def not_the_device(monkeypatch):
    """This host is an x86 machine with 2 cores (made up), so raspberry-pi-5 is not its device."""
    from edgerobust.edge import audit as audit_mod
    from edgerobust.edge.runtime.hostcheck import HostFacts

    monkeypatch.setattr(audit_mod, "host_facts", lambda: HostFacts(machine="x86_64", cores=2))


MISMATCH = "this host is not raspberry-pi-5's device"


def test_host_mismatch_warning_is_said_once_on_one_terminal(bundle, tmp_path, not_the_device, monkeypatch):
    """stdout and stderr on one terminal: the warning comes once, early (before the minutes of
    measuring), and the results do not repeat it; their headline still says the figures are this
    host's."""
    for console in (ui.err, ui.out):
        monkeypatch.setattr(console, "_force_terminal", True)
    monkeypatch.setattr(ui.out, "width", 200)
    r = runner.invoke(app, ["audit", str(bundle / "model.onnx"), "--profile", "raspberry-pi-5",
                            "--out", str(tmp_path / "r"), "--no-memory"])
    assert r.exit_code == 0, r.output
    text = flat(r.output)
    assert text.count(MISMATCH) == 1, r.output
    assert flat(r.stderr).count(MISMATCH) == 1
    assert "Figures are this host's (x86_64, 2 cores) running raspberry-pi-5's settings" in flat(r.stdout)
    # the threads note was not printed while the audit ran: the results keep it
    assert "WARNING: threads: the profile runs 4 intra-op threads" in flat(r.stdout)


def test_host_mismatch_warning_once_per_stream_when_redirected(bundle, tmp_path, not_the_device):
    """stdout to a file (not a terminal): the file is the record and keeps the warning; stderr
    says it once too."""
    r = runner.invoke(app, ["audit", str(bundle / "model.onnx"), "--profile", "raspberry-pi-5",
                            "--out", str(tmp_path / "r"), "--no-memory"])
    assert r.exit_code == 0, r.output
    assert flat(r.stdout).count(MISMATCH) == 1 and flat(r.stderr).count(MISMATCH) == 1


def test_profile_command_says_the_mismatch_once(bundle, monkeypatch):
    from edgerobust.edge.runtime import hostcheck
    from edgerobust.edge.runtime.hostcheck import HostFacts

    monkeypatch.setattr(hostcheck, "host_facts", lambda: HostFacts(machine="x86_64", cores=2))
    r = runner.invoke(app, ["profile", str(bundle / "model.onnx"), "-p", "raspberry-pi-5", "--no-memory", "-b", "1"])
    assert r.exit_code == 0, r.output
    assert flat(r.output).count(MISMATCH) == 1, r.output


def test_same_screen_compares_the_terminals(monkeypatch, tmp_path):
    opened = []

    def tty():
        master, slave = os.openpty()
        f = open(slave, "w")
        opened.extend([master, f])
        return f

    one, other = tty(), tty()
    try:
        for err, out, same in ((one, one, True), (one, other, False),
                               (one, open(tmp_path / "log", "w"), False)):
            monkeypatch.setattr(ui, "err", Console(file=err))
            monkeypatch.setattr(ui, "out", Console(file=out))
            assert ui.same_screen() is same
    finally:
        for x in opened:
            x.close() if hasattr(x, "close") else os.close(x)


# ---------------------------------------------------------------------------------------------


def test_profiles_list_fits_80_columns():
    r = runner.invoke(app, ["profiles", "list"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    assert "…" not in r.stdout
    for name in list_profiles():
        # each profile on a line of its own with its providers, threads, batch sizes and budget
        assert any(re.match(rf"^[* ] {re.escape(name)}\s+\S", line) for line in lines), name
    assert "Generic laptop or workstation CPU (onnxruntime CPU build), all cores" in flat(r.stdout)
    assert "best match for this host" in flat(r.stdout)


# ---------------------------------------------------------------------------------------------

LONG = "Measuring latency (base, deployed, fp32, fp16, int8) at every batch size of the profile"
STATUS = "batch 32, round 168 of 200, deployed model"


def test_progress_is_one_plain_line_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    """Rich draws a bar for a log file once, at 80 columns, cutting the description and status."""
    monkeypatch.delenv("COLUMNS", raising=False)
    ui.set_quiet(False)
    assert not ui.err.is_terminal
    with ui.task(LONG, total=200) as advance:
        advance(200, status=STATUS)
    with ui.task("no total known", total=None) as advance:
        advance(3)
    err = capsys.readouterr().err
    assert f"{LONG}: 200/200, {STATUS} (0:00:" in flat(err)  # wrapped at 120 columns, not cut
    assert max(len(line) for line in err.splitlines()) <= ui.LOG_WIDTH
    assert err.splitlines()[-1].startswith("no total known: 3 (0:00:")
    assert "…" not in err and "━" not in err


def test_progress_honours_columns_by_wrapping(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    ui.set_quiet(False)
    with ui.task(LONG, total=2) as advance:
        advance(2, status=STATUS)
    err = capsys.readouterr().err
    assert max(len(line) for line in err.splitlines()) <= 50
    assert f"{LONG}: 2/2, {STATUS}" in flat(err) and "…" not in err


def test_quiet_hides_progress(capsys):
    ui.set_quiet(True)
    with ui.task(LONG, total=2) as advance:
        advance(2, status=STATUS)
    assert capsys.readouterr().err == ""


def test_profile_command_progress_in_a_log_is_not_cut(bundle, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    r = runner.invoke(app, ["profile", str(bundle / "model.onnx"), "--baseline", str(bundle / "base.onnx"),
                            "-p", "laptop-cpu-1thread", "--no-memory", "-b", "1"])
    assert r.exit_code == 0, r.output
    progress = [line for line in r.stderr.splitlines() if line.startswith("Measuring latency")]
    assert progress and "…" not in r.stderr, r.stderr
    assert re.search(r"\d+/\d+, \S.* \(\d:\d\d:\d\d\)$", progress[0]), progress
    r = runner.invoke(app, ["-q", "profile", str(bundle / "model.onnx"), "-p", "laptop-cpu-1thread", "--no-memory",
                            "-b", "1"])
    assert r.exit_code == 0 and "Measuring" not in r.stderr, r.output
