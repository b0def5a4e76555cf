"""`edgerobust compare`: audits of one bundle on two profiles side by side; a synthetic pair of
reports with known disagreements (counts, exact McNemar, the most disputed samples); refusals
of reports of different bundles and of a missing, changed or foreign predictions file."""
import json
import math
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgerobust.edge.audit import AuditConfig, audit
from edgerobust.cli import app
from edgerobust.edge.compare import CompareConfig, compare, to_json
from edgerobust.errors import BundleError, UsageError
from edgerobust.edge.files.predictions import Predictions, SetPredictions, load_predictions, save_predictions
from edgerobust.edge.render.report import write_report
from onnx_models import make_bundle, quick_profiles, write_profile
from test_report_html import assert_self_contained, count_pixels, screenshot, svgs

runner = CliRunner()
PROFILES = ("laptop-cpu", "laptop-cpu-1thread")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """The text with line wrapping undone (stderr wraps at the runner's 80 columns)."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    return shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("cmp") / "tiny")  # this module's own copy


@pytest.fixture(scope="module")
def audits(bundle, tmp_path_factory):
    """The bundle audited through the CLI with the two shipped laptop profiles."""
    root = tmp_path_factory.mktemp("audits")
    out = []
    with pytest.MonkeyPatch.context() as mp:
        quick_profiles(mp)  # the comparison reads the reports; their timings need no seconds of runs
        for name in PROFILES:
            r = run("-q", "audit", bundle / "model.onnx", "--profile", name, "--no-memory", "--out", root / name)
            assert r.exit_code == 0, r.output
            out.append(root / name)
    return out


def fake_device(src, dst, profile: str, edit=None, fallback: bool = False):
    """A copy of the report folder ``src`` as if audited on another device: ``edit(Predictions)``
    returns the new predictions, written and recorded in report.json like an audit does."""
    shutil.copytree(src, dst)
    doc = json.loads((dst / "report.json").read_text())
    d = doc["_data"]
    d["profile"] = profile
    if edit is not None:
        d["predictions"]["sha256"] = save_predictions(dst / "predictions.npz",
                                                      edit(load_predictions(dst / "predictions.npz")))
    if fallback:
        d["summary"]["fallback"] = True
        for m in d["measurement"]["models"]:
            m["session"]["providers"] = ["CPUExecutionProvider"]
    (dst / "report.json").write_text(json.dumps(doc))
    return dst


def edited(preds: Predictions, name: str, pred=None, margin=None) -> Predictions:
    """``preds`` with the deployed model's answers on set ``name`` replaced."""
    def one(s: SetPredictions) -> SetPredictions:
        if s.name != name:
            return s
        return SetPredictions(s.name, s.source, s.y, s.idx, {**s.pred, "deployed": pred if pred is not None else
                                                             s.pred["deployed"]},
                              {**s.margin, "deployed": margin if margin is not None else s.margin["deployed"]})
    return Predictions(tuple(one(s) for s in preds.sets))


# ---------------------------------------------------------------------------------------------
# two real audits


def test_two_profiles_side_by_side_in_the_terminal(audits):
    a, b = (load_predictions(p / "predictions.npz") for p in audits)
    r = run("compare", *audits)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "Agreement of the deployed model: A = laptop-cpu vs B = laptop-cpu-1thread" in out
    for name in PROFILES:
        assert f"│ {name} " in out  # a row of the devices table
    assert all(len(line) <= 80 for line in out.splitlines())
    n = sum(s.n for s in a.sets)
    differ = sum(int((sa.pred["deployed"] != sb.pred["deployed"]).sum()) for sa, sb in zip(a.sets, b.sets))
    if differ == 0:
        assert f"The deployed model gives the same answer on laptop-cpu and laptop-cpu-1thread for all {n} samples" \
            in flat(out)
    else:
        assert f"answers {differ} of {n} samples differently on laptop-cpu and laptop-cpu-1thread" in flat(out)
    for s in a.sets:
        assert f"│ {s.name} " in out


def test_json_matches_the_predictions_and_the_html_is_self_contained(audits, tmp_path):
    r = run("compare", *audits, "--json", "--out", tmp_path / "c")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["_type"], doc["_version"]) == ("edgerobust.edge.compare-report", 1)
    d = doc["_data"]
    assert [x["label"] for x in d["devices"]] == list(PROFILES)
    assert d["bundle"]["deployed_sha256"] == json.loads((audits[0] / "report.json").read_text())["_data"][
        "provenance"]["deployed_sha256"]
    reports = [{s["name"]: s for s in json.loads((p / "report.json").read_text())["_data"]["sets"]} for p in audits]
    for acc in d["accuracy"]:  # accuracy from the predictions equals each audit's own figure
        rep = reports[PROFILES.index(acc["device"])][acc["set"]]
        assert acc["deployed"]["k"] == rep["deployed"]["accuracy"]["k"]
        assert acc["base"]["k"] == rep["base"]["accuracy"]["k"]
    assert [g["set"] for g in d["agreement"]] == ["clean", "fgsm_0.02", "fgsm_0.08"]
    assert {x["device"] for x in d["latency"]} == set(PROFILES)
    assert json.loads((tmp_path / "c" / "compare.json").read_text()) == doc
    page = (tmp_path / "c" / "compare.html").read_text()
    assert_self_contained(page)
    assert len(svgs(page)) == 3 and "laptop-cpu-1thread" in page
    again = run("compare", *audits, "--out", tmp_path / "c")
    assert again.exit_code == 2 and "already holds a comparison" in flat(again.output)


def test_compare_page_renders_in_headless_chromium(audits, tmp_path):
    run("-q", "compare", *audits, "--out", tmp_path / "c")
    img = screenshot(tmp_path / "c" / "compare.html", tmp_path / "c.png", height=2200)
    white = count_pixels(img, lambda r, g, b: min(r, g, b) >= 250)
    assert white < 0.97 * img.width * img.height
    assert count_pixels(img, lambda r, g, b: b > 150 and r < 90 and 90 < g < 150) > 3000  # laptop-cpu's blue bars


# ---------------------------------------------------------------------------------------------
# a synthetic pair with known disagreements


@pytest.fixture
def pair(audits, tmp_path):
    """Device A and device B: B's deployed model answers 10 samples of fgsm_0.08 differently.

    5 that A gets right and B wrong, 2 that A gets wrong and B right, 3 both wrong. The 10
    have margins 1..10 on both devices, so the most disputed comes first in reverse order.
    """
    src = load_predictions(audits[0] / "predictions.npz")
    s = src.get("fgsm_0.08")
    right, wrong = np.flatnonzero(s.pred["deployed"] == s.y), np.flatnonzero(s.pred["deployed"] != s.y)
    assert len(right) >= 5 and len(wrong) >= 5
    chosen = np.concatenate([right[:5], wrong[:5]])
    b_pred = s.pred["deployed"].copy()
    b_pred[right[:5]] = (s.y[right[:5]] + 1) % 10                      # A right, B wrong
    b_pred[wrong[:2]] = s.y[wrong[:2]]                                  # A wrong, B right
    b_pred[wrong[2:5]] = (s.pred["deployed"][wrong[2:5]] + np.where(    # both wrong, differently
        (s.pred["deployed"][wrong[2:5]] + 1) % 10 == s.y[wrong[2:5]], 2, 1)) % 10
    margin = s.margin["deployed"].copy() * 0
    margin[chosen] = np.arange(1, 11, dtype=np.float32)
    a = fake_device(audits[0], tmp_path / "A", "device-a", lambda p: edited(p, "fgsm_0.08", margin=margin))
    b = fake_device(audits[0], tmp_path / "B", "device-b", lambda p: edited(p, "fgsm_0.08", b_pred, margin),
                    fallback=True)
    return a, b, s, chosen, b_pred


def test_known_disagreements_counts_mcnemar_and_disputed_samples(pair):
    a, b, s, chosen, b_pred = pair
    c = compare(CompareConfig(reports=(a, b), top=4))
    g = {x.set: x for x in c.agreement}
    assert {k: v.disagree.k for k, v in g.items()} == {"clean": 0, "fgsm_0.02": 0, "fgsm_0.08": 10}
    fg = g["fgsm_0.08"]
    assert (fg.a, fg.b, fg.n, fg.disagree.n) == ("device-a", "device-b", 90, 90)
    assert (fg.mcnemar.only_a, fg.mcnemar.only_b) == (5, 2)
    assert fg.mcnemar.p_value == pytest.approx(2 * sum(math.comb(7, i) for i in range(3)) / 2 ** 7)  # 0.453125
    assert fg.base_disagree.k == 0
    # most confident disagreement first: margins 10, 9, 8, 7 on both devices
    want = chosen[::-1][:4]
    assert [d.index for d in fg.disputed] == list(want)
    for d in fg.disputed:
        assert (d.row, d.label) == (int(s.idx[d.index]), int(s.y[d.index]))
        assert d.pred == (int(s.pred["deployed"][d.index]), int(b_pred[d.index]))
        assert d.margin == (float(np.where(chosen == d.index)[0][0] + 1),) * 2
    acc = {(x.device, x.set): x.deployed.k for x in c.accuracy}
    assert acc["device-b", "fgsm_0.08"] == acc["device-a", "fgsm_0.08"] - 5 + 2
    assert c.device("device-b").fallback and not c.device("device-a").fallback


def test_fallback_row_is_marked_in_the_terminal_and_the_page(pair, tmp_path):
    a, b, *_ = pair
    r = run("compare", a, b, "--out", tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert "device-b (FALLBACK)" in r.stdout and "device-a (FALLBACK)" not in r.stdout
    assert "WARNING: FALLBACK device-b" in flat(r.stdout)
    assert "answers 10 of 300 samples differently on device-a and device-b" in flat(r.stdout)
    page = (tmp_path / "c" / "compare.html").read_text()
    assert '<tr class="fallback"><td class=l>device-b (FALLBACK)</td>' in page
    assert page.count("<li>#") == 10  # the disputed samples (the default --top 10)


# ---------------------------------------------------------------------------------------------
# refusals


@pytest.fixture(scope="module")
def other_bundle_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("other")
    b = make_bundle(root / "tiny", seed=1)
    r = audit(AuditConfig(model=b / "model.onnx", profile=str(write_profile(root / "fast.toml")),
                          show_progress=False, measure_memory=False))
    return write_report(r, root / "report")


def test_reports_of_different_bundles_are_refused(audits, other_bundle_report):
    with pytest.raises(BundleError, match="audits of different bundles: their base model, deployed model, eval set "
                                          "differ") as e:
        compare(CompareConfig(reports=(audits[0], other_bundle_report)))
    assert "same bundle folder" in e.value.fix
    r = run("compare", audits[0], other_bundle_report)
    assert r.exit_code == 2 and "error: The reports are audits of different bundles" in flat(r.output)
    assert "Traceback" not in r.output


def _drop(path):
    path.unlink()


def _tamper(path):
    p = load_predictions(path)
    s = p.sets[0]
    flipped = s.pred["deployed"].copy()
    flipped[0] = (flipped[0] + 1) % 10
    save_predictions(path, edited(p, s.name, pred=flipped))  # report.json still records the old hash


def _pickled(path):
    np.savez(path, meta=np.array([{"kind": "x"}], dtype=object))


@pytest.mark.parametrize("damage, message", [
    (_drop, "has no predictions.npz"),
    (_tamper, "was changed after the audit wrote it"),
    (_pickled, "was changed after the audit wrote it"),
], ids=["missing", "tampered", "replaced-by-a-pickle"])
def test_missing_or_changed_predictions_are_refused(audits, tmp_path, damage, message):
    b = shutil.copytree(audits[1], tmp_path / "b")
    damage(b / "predictions.npz")
    with pytest.raises(BundleError, match=message):
        compare(CompareConfig(reports=(audits[0], b)))
    r = run("compare", audits[0], b)
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_a_pickled_predictions_file_is_never_unpickled(audits, tmp_path):
    b = shutil.copytree(audits[1], tmp_path / "b")
    _pickled(b / "predictions.npz")
    with pytest.raises(BundleError, match="contains pickled Python objects"):
        load_predictions(b / "predictions.npz")  # without the recorded hash, the reader itself refuses


def test_older_reports_and_folders_without_a_report_are_refused(audits, bundle, tmp_path):
    old = shutil.copytree(audits[1], tmp_path / "old")
    doc = json.loads((old / "report.json").read_text())
    doc["_version"] = 2
    del doc["_data"]["predictions"], doc["_data"]["provenance"]
    (old / "report.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"audit report version 2\) has no per-sample predictions") as e:
        compare(CompareConfig(reports=(audits[0], old)))
    assert "Run the audit again" in e.value.fix
    with pytest.raises(BundleError, match="holds no audit report") as e:
        compare(CompareConfig(reports=(audits[0], audits[0].parent)))
    assert "laptop-cpu, laptop-cpu-1thread" in e.value.fix  # the report folders it holds
    not_report = tmp_path / "x"
    not_report.mkdir()
    (not_report / "report.json").write_text(json.dumps({"_type": "edgerobust.research.sweep", "_data": {}}))
    with pytest.raises(BundleError, match="is not an audit report"):
        compare(CompareConfig(reports=(audits[0], not_report)))


def test_fewer_than_two_reports_or_one_twice_is_a_usage_error(audits):
    with pytest.raises(UsageError, match="two or more report folders"):
        CompareConfig(reports=(audits[0],))
    with pytest.raises(UsageError, match="given twice"):
        CompareConfig(reports=(audits[0], audits[0]))
    r = run("compare", audits[0])
    assert r.exit_code == 2 and "two or more report folders" in flat(r.output)


def test_sets_not_in_every_report_are_left_out_and_said(audits, bundle, tmp_path):
    r = audit(AuditConfig(model=bundle / "model.onnx", profile=str(write_profile(tmp_path / "fast.toml")),
                          adv_sets=(bundle / "adv" / "fgsm_0.02.npz",), show_progress=False, measure_memory=False))
    few = write_report(r, tmp_path / "few")
    c = compare(CompareConfig(reports=(audits[0], few)))
    assert [g.set for g in c.agreement] == ["clean", "fgsm_0.02"] and c.sets_left_out == ("fgsm_0.08",)
    assert {a.set for a in c.accuracy} == {"clean", "fgsm_0.02"}
    out = run("compare", audits[0], few)
    assert "left out: fgsm_0.08" in flat(out.stdout)
