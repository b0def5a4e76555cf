"""`edgerobust compare`: audits of one bundle on two profiles side by side; a synthetic pair of
reports with known disagreements (counts, exact McNemar, the most disputed samples); refusals
of reports of different bundles and of a missing, changed or foreign predictions file; common-corruption
sets kept per sample by the audit, compared set by set and shown pooled."""
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
from edgerobust.edge.files.bundle import Bundle
from edgerobust.edge.files.corruptset import CorruptionSet
from edgerobust.edge.files.npzio import sha256_file
from onnx_models import make_bundle, ort_predictions, quick_profiles, write_profile
from test_corruption import corrupted_copy
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
    assert (doc["_type"], doc["_version"]) == ("edgerobust.edge.compare-report", 2)
    assert (doc["_data"]["corruption"], doc["_data"]["corruption_left_out"]) == (None, [])  # none: as before
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


# ---------------------------------------------------------------------------------------------
# common-corruption sets: kept per sample, compared set by set, shown pooled


@pytest.fixture(scope="module")
def corr_audits(tiny_bundle, tmp_path_factory):
    """The tiny bundle with 4 corruption sets (2 corruptions x severities 1, 5), audited with the two laptop
    profiles: (bundle, [report folder, report folder])."""
    root = tmp_path_factory.mktemp("corr")
    b = corrupted_copy(tiny_bundle, root / "tiny", "gaussian_noise,contrast", "1,5")
    out = []
    with pytest.MonkeyPatch.context() as mp:
        quick_profiles(mp)
        for name in PROFILES:
            r = audit(AuditConfig(model=b / "model.onnx", profile=name, measure_memory=False, show_progress=False,
                                  variants=False))
            out.append(write_report(r, root / name))
    return b, out


def corruption_sets(folder) -> list[SetPredictions]:
    return [s for s in load_predictions(folder / "predictions.npz").sets if s.source == "corruption"]


def test_audits_keep_every_corruption_sets_answers_and_hash(corr_audits):
    b, folders = corr_audits
    paths = Bundle.open(b).corruption_paths
    assert sorted(p.stem for p in paths) == ["contrast_s1", "contrast_s5", "gaussian_noise_s1", "gaussian_noise_s5"]
    provs = []
    for folder in folders:
        doc = json.loads((folder / "report.json").read_text())
        d = doc["_data"]
        assert doc["_version"] == 9
        kept = corruption_sets(folder)
        assert [s.name for s in kept] == [p.stem for p in paths] == [s["name"] for s in d["corruption"]["sets"]]
        for s, p in zip(kept, paths):
            cs = CorruptionSet.load(p)
            assert np.array_equal(s.idx, cs.idx) and np.array_equal(s.y, cs.y)
            assert np.array_equal(s.pred["deployed"], ort_predictions(b / "model.onnx", cs.x))
            assert d["provenance"]["sets"][s.name] == sha256_file(p)
        assert d["predictions"]["sets"][:3] == [s["name"] for s in d["sets"]] == ["clean", "fgsm_0.02", "fgsm_0.08"]
        provs.append(d["provenance"]["sets"])
    assert provs[0] == provs[1] and len(provs[0]) == 6  # two audits of one bundle share the sets' hashes


def test_compare_pools_the_shared_corruption_sets(corr_audits, tmp_path):
    _, folders = corr_audits
    c = compare(CompareConfig(reports=tuple(folders)))
    sets = [corruption_sets(f) for f in folders]
    names = [s.name for s in sets[0]]
    n = sum(s.n for s in sets[0])
    assert c.corruption.sets == tuple(names) and c.corruption_left_out == () and c.sets_left_out == ()
    # set by set like the others: every corruption set has its accuracy and agreement rows
    assert [g.set for g in c.agreement] == ["clean", "fgsm_0.02", "fgsm_0.08", *names]
    right = {}
    for label, mine in zip(PROFILES, sets):
        pool = next(p for p in c.corruption.accuracy if p.device == label)
        right[label] = {r: sum(int((s.pred[r] == s.y).sum()) for s in mine) for r in ("base", "deployed")}
        assert (pool.deployed.k, pool.base.k, pool.deployed.n) == (right[label]["deployed"], right[label]["base"], n)
        assert pool.deployed.ci_low is None and "no interval" in pool.deployed.method
    differ = sum(int((a.pred["deployed"] != b.pred["deployed"]).sum()) for a, b in zip(*sets))
    (pair,) = c.corruption.agreement
    assert (pair.a, pair.b, pair.n, pair.disagree.k) == (*PROFILES, n, differ)
    r = run("compare", *folders, "--out", tmp_path / "c")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert all(len(line) <= 80 for line in out.splitlines())
    row = next(line for line in out.splitlines() if line.startswith("│ corrupt ×4*"))  # the accuracy table's
    pct = {lab: f"{100 * right[lab]['deployed'] / n:.1f}% ({100 * right[lab]['base'] / n:.1f}%)" for lab in PROFILES}
    assert f" {n} " in row and all(pct[lab] in row for lab in PROFILES)
    assert not any(f"│ {name} " in out for name in names)  # no row per corruption set
    assert "* 4 common-corruption sets in every report, pooled: each eval row counts once per set (rows repeat " \
           "across sets), so no interval is given" in flat(out)
    if differ == 0:
        assert f"Under 4 corruption sets ({n} samples pooled) the deployed model gives the same answers on " \
               "laptop-cpu and laptop-cpu-1thread." in flat(out)
    doc = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert doc["_data"]["corruption"]["accuracy"][0]["deployed"]["k"] == right["laptop-cpu"]["deployed"]
    assert len(doc["_data"]["agreement"]) == 7 and "rows repeat across sets" in doc["_data"]["corruption"]["note"]
    page = (tmp_path / "c" / "compare.html").read_text()
    assert "corrupt ×4*" in page and "gaussian_noise_s1" not in page


def test_known_corruption_disagreements_are_pooled_and_the_worst_set_named(corr_audits, tmp_path):
    """Device B's deployed model turns 6 right answers wrong on one corruption set and 2 on another."""
    _, folders = corr_audits
    sets = corruption_sets(folders[0])
    big, small = sets[0], sets[1]
    flips = {}
    for s, k in ((big, 6), (small, 2)):
        right = np.flatnonzero(s.pred["deployed"] == s.y)
        assert len(right) >= k
        b_pred = s.pred["deployed"].copy()
        b_pred[right[:k]] = (s.y[right[:k]] + 1) % 10
        flips[s.name] = b_pred

    def edit(p):
        for name, pred in flips.items():
            p = edited(p, name, pred=pred)
        return p

    a = fake_device(folders[0], tmp_path / "A", "device-a")
    b = fake_device(folders[0], tmp_path / "B", "device-b", edit)
    c = compare(CompareConfig(reports=(a, b)))
    n = sum(s.n for s in sets)
    (pair,) = c.corruption.agreement
    assert (pair.n, pair.disagree.k, pair.only_a, pair.only_b, pair.base_disagree.k) == (n, 8, 8, 0, 0)
    assert (pair.worst, pair.worst_disagree.k, pair.worst_disagree.n) == (big.name, 6, big.n)
    assert pair.worst_p_value == pytest.approx(2 * 0.5 ** 6)  # exact McNemar, 6 discordant pairs all one way
    pools = {p.device: p.deployed.k for p in c.corruption.accuracy}
    assert pools["device-b"] == pools["device-a"] - 8
    out = flat(run("compare", a, b).stdout)
    assert (f"Under 4 corruption sets the deployed model answers 8 of {n} pooled samples differently "
            f"({100 * 8 / n:.1f}%); most on {big.name}: {100 * 6 / big.n:.1f}% (McNemar p 0.0312); the base "
            "model differs on 0.") in out
    assert f"│ corrupt ×4* │ {n} │ {100 * 8 / n:.1f}% │ – │ 0.0% │ 8 │ 0 │ – │" in out
    assert "The deployed model gives the same answer on device-a and device-b for all 300 samples" in out


def test_reports_without_corruption_answers_compare_as_before(corr_audits, tmp_path):
    """A version 8 report kept no corruption answers: its sets are left out (counted, not named), the rest
    compares as before. A version 9 report whose predictions lack them is refused."""
    _, folders = corr_audits

    def drop(folder, version):
        doc = json.loads((folder / "report.json").read_text())
        d = doc["_data"]
        p = load_predictions(folder / "predictions.npz")
        plain = Predictions(tuple(s for s in p.sets if s.source != "corruption"))
        d["predictions"]["sha256"] = save_predictions(folder / "predictions.npz", plain)
        d["provenance"]["sets"] = {k: v for k, v in d["provenance"]["sets"].items() if k.startswith("fgsm")}
        doc["_version"] = version
        (folder / "report.json").write_text(json.dumps(doc))
        return folder

    old = drop(shutil.copytree(folders[1], tmp_path / "old"), 8)
    c = compare(CompareConfig(reports=(folders[0], old)))
    assert c.corruption is None and len(c.corruption_left_out) == 4 == len(c.sets_left_out)
    assert [g.set for g in c.agreement] == ["clean", "fgsm_0.02", "fgsm_0.08"]
    out = run("compare", folders[0], old).stdout
    assert "left out: 4 corruption sets" in flat(out) and "corrupt ×" not in out
    both_old = compare(CompareConfig(reports=(drop(shutil.copytree(folders[0], tmp_path / "old0"), 8), old)))
    assert both_old.corruption is None and both_old.sets_left_out == ()
    bad = drop(shutil.copytree(folders[1], tmp_path / "bad"), 9)
    with pytest.raises(BundleError, match="do not match its report.json"):
        compare(CompareConfig(reports=(folders[0], bad)))
