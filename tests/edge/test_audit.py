"""The audit end to end on a tiny real bundle: numbers equal a bare onnxruntime loop; refusals."""
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgerobust.edge.audit import AuditConfig, audit
from edgerobust.edge.scores.replay import predict
from edgerobust.edge.files.bundle import AdvSet, EvalSet, finalize_manifest, read_manifest
from edgerobust.edge.files.npzio import sha256_file
from edgerobust.errors import BundleError, ProfileError, UsageError
from edgerobust.edge.runtime.sessions import open_session
from edgerobust.edge.runtime.profiles import load_profile
from edgerobust.edge.render.report import to_json, write_report
from onnx_models import mlp_weights, ort_predictions, save_mlp, write_profile


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    return shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("bundle") / "tiny")  # this module's own copy


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return write_profile(tmp_path_factory.mktemp("p") / "fast.toml",
                         budgets="[budgets]\nlatency_ms_p50 = 1000\nmodel_size_mb = 0.001\n")


@pytest.fixture(scope="module")
def report(bundle, profile):
    return audit(AuditConfig(model=bundle / "model.onnx", profile=str(profile), batch_size=16, show_progress=False))


@pytest.fixture
def copy(bundle, tmp_path):
    return shutil.copytree(bundle, tmp_path / "copy", ignore=shutil.ignore_patterns("reports"))


def fast(model, profile, **kw):
    return AuditConfig(model=model, profile=str(profile), show_progress=False, measure_memory=False, **kw)


def test_every_accuracy_equals_a_bare_onnxruntime_loop(bundle, report):
    ev = EvalSet.load(bundle / "eval.npz")
    clean = {r: ort_predictions(bundle / f, ev.x) for r, f in (("base", "base.onnx"), ("deployed", "model.onnx"))}
    data = to_json(report)["_data"]
    sets = {s["name"]: s for s in data["sets"]}
    assert list(sets) == ["clean", "fgsm_0.02", "fgsm_0.08"]
    for role in ("base", "deployed"):
        assert sets["clean"][role]["accuracy"]["k"] == int((clean[role] == ev.y).sum())
        assert sets["clean"][role]["accuracy"]["n"] == len(ev.y) == 120
    for name in ("fgsm_0.02", "fgsm_0.08"):
        adv = AdvSet.load(bundle / "adv" / f"{name}.npz")
        s = sets[name]
        pred = {r: ort_predictions(bundle / f, adv.x) for r, f in (("base", "base.onnx"), ("deployed", "model.onnx"))}
        for role in ("base", "deployed"):
            right_clean = clean[role][adv.idx] == adv.y
            assert s[role]["accuracy"]["k"] == int((pred[role] == adv.y).sum())
            assert s[role]["clean_accuracy"]["k"] == int(right_clean.sum())
            assert s[role]["attack_success"]["n"] == int(right_clean.sum())
            assert s[role]["attack_success"]["k"] == int((right_clean & (pred[role] != adv.y)).sum())
        assert s["flip_rate"]["k"] == int((pred["base"] != pred["deployed"]).sum())
        assert s["mcnemar"]["only_a"] == int(((pred["base"] == adv.y) & (pred["deployed"] != adv.y)).sum())
        assert s["delta_accuracy"] == pytest.approx(s["deployed"]["accuracy"]["value"] - s["base"]["accuracy"]["value"])
        assert 0 <= s["mcnemar"]["p_value"] <= 1 and s["attack"]["eps"] == float(name.split("_")[1])
    # The stronger attack fools more: a sanity check that the sets are real attacks.
    assert sets["fgsm_0.08"]["base"]["accuracy"]["value"] < sets["fgsm_0.02"]["base"]["accuracy"]["value"] \
        < sets["clean"]["base"]["accuracy"]["value"]


def test_report_structure_and_budgets(report):
    j = to_json(report)
    assert (j["_type"], j["_version"]) == ("edgerobust.edge.audit-report", 9)  # 9: corruption answers kept
    d = j["_data"]
    assert d["verified"] is True and d["profile"] == "fast" and d["bundle_name"] == "tiny-mlp"
    m = d["measurement"]
    # the bundle keeps the pruned fp32 model beside the int8 one: the audit times and replays it too
    assert [x["role"] for x in m["models"]] == ["base", "deployed", "fp32"]
    assert (d["deployed_variant"], d["variants"]) == ("int8", {"deployed": "int8", "fp32": "fp32"})
    assert [s["batch_size"] for s in m["speedup"]] == [1, 4]
    budgets = {b["name"]: b for b in d["budgets"]}
    assert budgets["latency_ms_p50"]["passed"] is True
    assert budgets["model_size_mb"]["passed"] is False  # 0.001 MiB is smaller than any model
    s = d["summary"]
    assert (s["fallback"], s["budgets_passed"], s["host_matches_profile"], s["host_mismatch"]) == (False, False, True, [])
    # the test profile states no hardware: nothing to compare, so nothing is marked
    assert d["host_check"]["matches"] is True and all(b["evidence"] for b in d["budgets"])
    fgsm = {x["name"]: x for x in d["sets"]}["fgsm_0.08"]
    assert [w["threat"] for w in s["worst_robust"]] == ["transfer"]
    assert s["worst_robust"][0]["deployed"] == fgsm["deployed"]["accuracy"]["value"]
    assert s["headline"].startswith("Deployed vs base:")
    json.dumps(j)  # plain JSON all the way down


def test_provenance_records_every_audited_file_by_hash(bundle, report):
    p = to_json(report)["_data"]["provenance"]
    assert p["base_sha256"] == sha256_file(bundle / "base.onnx")
    assert p["deployed_sha256"] == sha256_file(bundle / "model.onnx")
    assert p["eval_sha256"] == sha256_file(bundle / "eval.npz")
    assert p["sets"] == {n: sha256_file(bundle / "adv" / f"{n}.npz") for n in ("fgsm_0.02", "fgsm_0.08")}
    assert p["manifest_sha256"] == sha256_file(bundle / "manifest.json")
    assert p["compression"] == {"sparsity": 0.0, "int8": True}


def _bare_logits(model, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_predictions_file_holds_every_models_answer_on_every_sample(bundle, report, tmp_path):
    folder = write_report(report, tmp_path / "r")
    doc = json.loads((folder / "report.json").read_text())["_data"]
    rec = doc["predictions"]
    assert rec["file"] == "predictions.npz" and rec["sha256"] == sha256_file(folder / "predictions.npz")
    assert rec["sets"] == ["clean", "fgsm_0.02", "fgsm_0.08"] and rec["roles"] == ["base", "deployed", "fp32"]
    with np.load(folder / "predictions.npz", allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        assert [s["name"] for s in meta["sets"]] == rec["sets"]
        assert z["s0_deployed_pred"].dtype == np.int16 and z["s0_deployed_margin"].dtype == np.float32
    ev = EvalSet.load(bundle / "eval.npz")
    inputs = {"clean": (ev.x, ev.y, np.arange(len(ev.y)))}
    for name in ("fgsm_0.02", "fgsm_0.08"):
        adv = AdvSet.load(bundle / "adv" / f"{name}.npz")
        inputs[name] = (adv.x, adv.y, adv.idx)
    from edgerobust.edge.files.predictions import load_predictions

    preds = load_predictions(folder / "predictions.npz", sha256=rec["sha256"])
    for s in preds.sets:
        x, y, idx = inputs[s.name]
        assert np.array_equal(s.y, y) and np.array_equal(s.idx, idx)
        for role, f in (("base", "base.onnx"), ("deployed", "model.onnx")):
            logits = np.sort(_bare_logits(bundle / f, x), axis=1)
            assert np.array_equal(s.pred[role], ort_predictions(bundle / f, x))
            np.testing.assert_allclose(s.margin[role], logits[:, -1] - logits[:, -2], rtol=1e-5, atol=1e-5)
            assert (s.margin[role] >= 0).all()


def test_reports_never_overwrite(report, tmp_path):
    a = write_report(report)
    b = write_report(report)
    assert a != b and a.parent == b.parent and a.parent.name == "reports"
    assert json.loads((a / "report.json").read_text())["_data"]["sets"][0]["name"] == "clean"
    assert "| clean |" in (a / "report.md").read_text()
    assert sorted(p.name for p in a.iterdir()) == ["predictions.npz", "report.html", "report.json", "report.md"]
    out = write_report(report, tmp_path / "mine")
    with pytest.raises(UsageError, match="already holds a report"):
        write_report(report, out)
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "predictions.npz").write_bytes(b"")
    with pytest.raises(UsageError, match=r"already holds a report \(predictions.npz\)"):
        write_report(report, lone)


def test_report_failing_mid_write_leaves_no_folder(report, tmp_path, monkeypatch):
    from edgerobust.edge.render import report as report_mod

    kept = write_report(report)
    before = sorted(p.name for p in kept.parent.iterdir())
    monkeypatch.setattr(report_mod, "to_markdown", lambda r: (_ for _ in ()).throw(RuntimeError("killed")))
    for out in (None, tmp_path / "mine", tmp_path / "empty"):
        if out is not None and out.name == "empty":
            out.mkdir()
        with pytest.raises(RuntimeError, match="killed"):
            write_report(report, out)
        if out is not None:
            assert not out.exists()  # an empty folder given as out_dir is written as if absent
    assert sorted(p.name for p in kept.parent.iterdir()) == before  # no half report, no hidden leftover
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")  # other files: written beside them
    monkeypatch.undo()
    assert sorted(p.name for p in write_report(report, tmp_path / "mine").iterdir()) == \
        ["notes.txt", "predictions.npz", "report.html", "report.json", "report.md"]


def test_tampered_file_refused_unless_no_verify(copy, profile):
    import onnx

    m = onnx.load(str(copy / "model.onnx"))
    m.doc_string = "edited on the device"  # still a valid model, but not the one the manifest lists
    onnx.save(m, str(copy / "model.onnx"))
    with pytest.raises(BundleError, match="does not match the bundle's manifest") as e:
        audit(fast(copy / "model.onnx", profile))
    assert "`verify`" in e.value.fix
    r = audit(fast(copy / "model.onnx", profile, verify=False))
    assert any("hashes were not checked" in w for w in r.warnings) and r.verified is False
    assert r.sets[0].deployed.accuracy.k == int((ort_predictions(copy / "model.onnx", EvalSet.load(
        copy / "eval.npz").x) == EvalSet.load(copy / "eval.npz").y).sum())


def test_adv_set_from_another_model_refused(copy, profile):
    adv = AdvSet.load(copy / "adv" / "fgsm_0.02.npz")
    adv.meta["base_sha256"] = "0" * 64
    adv.save(copy / "adv" / "fgsm_0.02.npz")
    finalize_manifest(copy, read_manifest(copy / "manifest.json"))  # hashes fine, provenance not
    with pytest.raises(BundleError) as e:
        audit(fast(copy / "model.onnx", profile))
    assert "crafted on another base model" in e.value.what and "fgsm_0.02.npz" in e.value.what


def test_adv_set_from_another_eval_set_refused(copy, profile):
    adv = AdvSet.load(copy / "adv" / "fgsm_0.08.npz")
    del adv.meta["eval_sha256"]
    adv.save(copy / "adv" / "fgsm_0.08.npz")
    finalize_manifest(copy, read_manifest(copy / "manifest.json"))
    with pytest.raises(BundleError, match="another evaluation set") as e:
        audit(fast(copy / "model.onnx", profile))
    assert "lacks eval_sha256" in e.value.why


def test_fallback_rule(bundle, tmp_path):
    gpu = write_profile(tmp_path / "gpu.toml", providers=("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                           "CPUExecutionProvider"))
    with pytest.raises(ProfileError, match="`allow_fallback`"):
        audit(fast(bundle / "model.onnx", gpu))
    r = audit(fast(bundle / "model.onnx", gpu, allow_fallback=True))
    assert r.fallback and to_json(r)["_data"]["summary"]["fallback"] is True
    dep = r.measurement.model("deployed").session
    assert dep.providers == ("CPUExecutionProvider",)
    assert dep.missing_providers == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert any(w.startswith("fallback:") for w in r.warnings)


def test_input_spec_mismatch_refused(copy, profile):
    m = read_manifest(copy / "manifest.json")
    m["input"] = dict(m["input"], shape=[None, 3, 8, 8])
    finalize_manifest(copy, m)
    with pytest.raises(BundleError, match=r"takes input shape \[N, 1, 8, 8\], but the bundle manifest says \[N, 3, 8, 8\]"):
        audit(fast(copy / "model.onnx", profile))


def test_model_without_bundle(bundle, profile, tmp_path):
    lone = shutil.copy(bundle / "model.onnx", tmp_path / "lone.onnx")
    with pytest.raises(BundleError, match="no bundle"):
        audit(fast(lone, profile))
    r = audit(fast(lone, profile, baseline=bundle / "base.onnx", eval_set=bundle / "eval.npz",
                   adv_sets=(bundle / "adv" / "fgsm_0.08.npz",)))
    assert [s.name for s in r.sets] == ["clean", "fgsm_0.08"] and r.bundle is None and not r.verified


def test_bad_batch_size_is_a_usage_error(bundle):
    with pytest.raises(UsageError, match="batch_size"):
        AuditConfig(model=bundle / "model.onnx", batch_size=0)


def test_predict_streams_with_fixed_batch_axis(tmp_path, profile):
    w = mlp_weights(0)
    fixed = open_session(save_mlp(tmp_path / "fixed.onnx", w, input_shape=(4, 1, 8, 8)), "m", load_profile(profile))
    x = np.random.default_rng(0).random((10, 1, 8, 8), dtype=np.float32)
    got = predict(fixed, x, batch_size=64)
    want = ort_predictions(save_mlp(tmp_path / "dyn.onnx", w), x)
    assert got.dtype == np.int64 and np.array_equal(got, want)


def test_audit_runs_without_torch(bundle, profile, tmp_path):
    code = textwrap.dedent(f"""
        import importlib.machinery, sys

        find = importlib.machinery.PathFinder.find_spec
        def not_installed(name, path=None, target=None):  # torch and matplotlib as if not installed: an import
            if name.split('.')[0] in ('torch', 'matplotlib'):  # fails, find_spec says None (ART, which the
                return None  # query attack imports, looks torch up that way); report.html draws its own SVG
            return find(name, path, target)
        importlib.machinery.PathFinder.find_spec = not_installed
        from edgerobust.cli import app
        from typer.testing import CliRunner
        r = CliRunner().invoke(app, ['--quiet', 'audit', {str(bundle / 'model.onnx')!r}, '--profile',
                                     {str(profile)!r}, '--out', {str(tmp_path / 'r')!r}, '--json'])
        assert r.exit_code == 0, r.output
        assert 'torch' not in sys.modules
        print('OK')
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout + proc.stderr
    assert json.loads((tmp_path / "r" / "report.json").read_text())["_type"] == "edgerobust.edge.audit-report"
    assert (tmp_path / "r" / "report.html").read_text().count("<svg") >= 2
    assert (tmp_path / "r" / "predictions.npz").is_file()
