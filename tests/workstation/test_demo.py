"""`edgerobust demo`: the README's first command, end to end (the zoo model is reused, not retrained)."""
from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from _fixtures_gauntlet import cli


@pytest.mark.slow
def test_demo_writes_a_bundle_with_the_default_sets_and_an_audit(zoo_checkpoint, tmp_path, quick_measure):
    out = tmp_path / "demo"
    shutil.copy(zoo_checkpoint.path, tmp_path / "demo-digits-cnn.pt")  # demo reuses it instead of training
    r = cli("demo", "--out", out, "--model", "digits-cnn", "--profile", "laptop-cpu-1thread")
    assert r.exit_code == 0, r.output
    man = json.loads((out / "manifest.json").read_text())
    assert sorted(man["adv"]) == sorted(f"adv/{a}_{e}-255.npz" for a in ("fgsm", "pgd") for e in (2, 4, 8))
    assert man["config"]["int8"] is True and man["metrics"]["macs_reduction"] > 3
    assert man["corruptions"] and all(p.startswith("corruptions/") for p in man["corruptions"])  # the default subset
    reports = list((out / "reports").glob("*/report.json"))
    assert len(reports) == 1
    assert "report:" in r.output and "compressed" in r.output
    # the audit's short query attack on each runtime where ART is installed, at the sets' largest eps
    data = json.loads(reports[0].read_text())["_data"]
    assert data["corruption"] and data["corruption"]["corruptions"]
    if importlib.util.find_spec("art") is None:
        assert data["query_status"] == "not installed" and "known to flatter" in data["summary"]["headline"]
    else:
        assert data["query_status"] == "ran" and [q["eps_text"] for q in data["query"]] == ["8/255"]
        assert "Robust accuracy against every attack" in data["summary"]["headline"]
