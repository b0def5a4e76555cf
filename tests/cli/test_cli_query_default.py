"""`edgerobust audit` runs a short query attack by default where ART is installed, `--query-attack none`
turns it off, and without ART the headline says how to check the transfer figures."""
import json

import pytest
from typer.testing import CliRunner

from edgerobust.cli import app
from edgerobust.edge.scores import query as query_mod
from onnx_models import make_bundle, write_profile

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("quick_measure")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("cliq") / "tiny")


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return str(write_profile(tmp_path_factory.mktemp("p") / "fast.toml"))


def audit_json(bundle, profile, out, *flags):
    r = runner.invoke(app, ["--quiet", "audit", str(bundle / "model.onnx"), "-p", profile, "--out", str(out),
                            "--no-memory", "--deployed-only", "--json", *flags])
    return r, (json.loads(r.stdout)["_data"] if r.exit_code == 0 else None)


def test_default_audit_runs_the_short_query_attack_and_none_turns_it_off(bundle, profile, tmp_path, monkeypatch):
    pytest.importorskip("art")
    monkeypatch.setattr(query_mod, "QUICK_SAMPLES", 40)
    monkeypatch.setattr(query_mod, "QUICK_ITERATIONS", 5)
    r, data = audit_json(bundle, profile, tmp_path / "default")
    assert r.exit_code == 0, r.output
    assert data["query_status"] == "ran"
    (q,) = data["query"]
    assert (q["attack"], q["eps_text"], q["n"], q["queries_budget"]) == ("square", "0.08", 40, 5)
    assert q["queries_used"]["base"] > 40 and q["queries_used"]["deployed"] > 40
    assert {(r["threat"], r["eps_text"]) for r in data["robust"]} >= {("query", "0.08"), ("every attack", "0.08")}
    assert "Robust accuracy against every attack (per-sample worst case over the FGSM transfer sets (crafted on " \
           "the base) and the query attack square (5 iterations) on each runtime" in data["summary"]["headline"]
    r, data = audit_json(bundle, profile, tmp_path / "none", "--query-attack", "none")
    assert r.exit_code == 0, r.output
    assert data["query_status"] == "off" and data["query"] == []
    assert not [r for r in data["robust"] if r["threat"] != "transfer"]


def test_without_art_the_default_audit_says_how_to_check_and_square_asks_for_it(bundle, profile, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(query_mod, "art_installed", lambda: False)
    r, data = audit_json(bundle, profile, tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert data["query_status"] == "not installed" and data["query"] == []
    head = data["summary"]["headline"]
    assert "known to flatter compressed models; to check, pip install 'edgerobust[query]'" in head
    r, _ = audit_json(bundle, profile, tmp_path / "b", "--query-attack", "square")
    assert r.exit_code == 2 and "pip install 'edgerobust[query]'" in " ".join(r.stderr.split())
    assert "Traceback" not in r.output
