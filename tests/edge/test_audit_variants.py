"""The audit of every precision variant in a bundle: base, deployed and the other variants in one run.

One bundle made for a CUDA target (fp16 deployed: no GPU here to measure on), with fp32 and int8
beside it and white-box sets crafted on the pruned model and its int8 simulation.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from _fixtures_gauntlet import cli, fast_profile
from edgerobust.edge.audit import AuditConfig, audit
from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.edge.render.headline import headline
from edgerobust.edge.files.predictions import load_predictions
from edgerobust.edge.render.variant_table import better_variant, fastest, fastest_lines, slower_than_base


@pytest.fixture(scope="module")
def bundle(zoo_checkpoint, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("variants")
    cuda = fast_profile(tmp / "cuda.toml", providers=("CUDAExecutionProvider",))
    out = tmp / "b"
    r = cli("compress", zoo_checkpoint.path, "--int8", "--fp16", "--whitebox", "--profile", cuda, "--device", "cpu",
            "--attacks", "fgsm", "--eps", "8/255", "--finetune-epochs", "0", "--eval-samples", "120",
            "--max-prune-drop", "100", "--max-int8-drop", "100", "--out", out)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    return fast_profile(tmp_path_factory.mktemp("p") / "fast.toml")


@pytest.fixture(scope="module")
def report(bundle, profile):
    return audit(AuditConfig(model=bundle / "model.onnx", profile=str(profile), show_progress=False,
                             measure_memory=False))


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float((s.run(None, {s.get_inputs()[0].name: x})[0].argmax(1) == y).mean())


def test_the_bundle_deploys_fp16_for_cuda_and_keeps_the_others(bundle):
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["deployment"]["variant"] == "fp16" and man["deployment"]["target"] == "cuda"
    assert man["variants"] == {"fp32": "model_fp32.onnx", "fp16": "model.onnx", "int8": "model_int8.onnx"}


def test_audit_measures_and_replays_all_four_models(bundle, report):
    assert [m.role for m in report.measurement.models] == ["base", "deployed", "fp32", "int8"]
    assert report.deployed_variant == "fp16"
    assert report.variants == {"deployed": "fp16", "fp32": "fp32", "int8": "int8"}
    assert all(len(m.latency) == 1 and m.latency[0].p50_ms > 0 for m in report.measurement.models)
    # every variant's score on every set is that file's own accuracy, as a bare onnxruntime loop gives it
    ev = EvalSet.load(bundle / "eval.npz")
    clean = next(s for s in report.sets if s.kind == "clean")
    for role, f in (("fp32", "model_fp32.onnx"), ("int8", "model_int8.onnx")):
        assert clean.variants[role].accuracy.value == pytest.approx(_accuracy(bundle / f, ev.x, ev.y))
    for s in report.sets:
        assert set(s.variants) == {"fp32", "int8"}
        if s.kind == "adversarial":
            adv = AdvSet.load(Path(s.path))
            assert s.variants["int8"].accuracy.value == pytest.approx(_accuracy(bundle / "model_int8.onnx",
                                                                               adv.x, adv.y))
            assert s.variants["fp32"].attack_success is not None


def test_whitebox_int8_sets_are_accepted_when_fp16_is_deployed(bundle, report):
    sources = {s.source for s in report.sets}
    assert {"transfer", "whitebox-fp32", "whitebox-int8"} <= sources
    white = AdvSet.load(next((bundle / "adv" / "whitebox-int8").glob("*.npz")), with_x=False)
    assert white.meta["target"] == "model_int8.onnx"  # the file it names is the one it was crafted on


def test_report_md_names_the_fastest_and_predictions_hold_every_model(report, tmp_path):
    from edgerobust.edge.render.report import write_report

    folder = write_report(report, tmp_path / "r")
    md = (folder / "report.md").read_text()
    assert "## Precision variants" in md
    lines = fastest_lines(report)
    assert len(lines) == 1 and f"- {lines[0]}" in md.split("## Precision variants")[1]
    for name in ("base.onnx", "model.onnx", "model_fp32.onnx", "model_int8.onnx"):
        assert f"| {name} |" in md
    preds = load_predictions(folder / "predictions.npz")
    assert set(preds.roles) == {"base", "deployed", "fp32", "int8"}
    data = json.loads((folder / "report.json").read_text())["_data"]
    assert data["variants"] == report.variants and "variants" in data["sets"][0]


def test_deployed_only_audits_two_models(bundle, profile, tmp_path):
    r = cli("audit", bundle / "model.onnx", "--profile", profile, "--no-memory", "--deployed-only",
            "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "r" / "report.json").read_text())["_data"]
    assert [m["role"] for m in data["measurement"]["models"]] == ["base", "deployed"]
    assert "Precision variants" not in (tmp_path / "r" / "report.md").read_text()


def _with_p50(report, p50: dict[str, float]):
    """The report with each role's batch-1 latency set to ``p50`` ms (interval ±1%), speedups recomputed."""
    from edgerobust.edge.runtime.measure import speedup_of

    models = []
    for m in report.measurement.models:
        v = p50[m.role]
        lat = dataclasses.replace(m.latency[0], p50_ms=v, p50_ci_low_ms=0.99 * v, p50_ci_high_ms=1.01 * v, mean_ms=v)
        models.append(dataclasses.replace(m, latency=(lat,)))
    by = {m.role: m for m in models}
    speed = (speedup_of(by["base"].latency[0], by["deployed"].latency[0]),)
    return dataclasses.replace(report, measurement=dataclasses.replace(report.measurement, models=tuple(models),
                                                                       speedup=speed))


def test_headline_says_when_the_deployed_model_is_slower_than_base_and_a_variant_is_faster(report):
    slow = _with_p50(report, {"base": 1.0, "deployed": 1.7, "fp32": 0.6, "int8": 2.5})
    text = headline(slow)
    assert "SLOWER than the base" in text and "0.59×" in text
    assert "fp32 variant (model_fp32.onnx) is 2.83× faster here than the deployed fp16" in text
    f = fastest(slow, 1)
    assert (f.role, f.ties, f.deployed_clear) == ("fp32", (), True)
    assert fastest_lines(slow) == ["batch 1: **fp32** is the fastest (0.6 ms p50); the deployed model takes 2.83× as long."]
    # the base fastest of all: the headline still names the fastest variant the bundle holds
    base_first = _with_p50(report, {"base": 0.4, "deployed": 1.7, "fp32": 0.6, "int8": 2.5})
    assert "fp32 variant (model_fp32.onnx) is 2.83× faster here than the deployed fp16" in headline(base_first)


def test_no_verdict_when_the_deployed_model_is_fastest_or_too_close_to_call(report):
    fast = _with_p50(report, {"base": 1.0, "deployed": 0.5, "fp32": 0.6, "int8": 0.8})
    assert slower_than_base(fast) is None and better_variant(fast) is None
    assert fastest(fast, 1).role == "deployed"
    close = _with_p50(report, {"base": 1.0, "deployed": 0.505, "fp32": 0.5, "int8": 0.8})
    assert better_variant(close) is None  # intervals overlap: not said
    assert fastest(close, 1).ties == ("deployed (fp16)",)
    no_faster = _with_p50(report, {"base": 1.0, "deployed": 1.005, "fp32": 0.6, "int8": 0.8})
    assert "no faster than the base" in slower_than_base(no_faster)


def test_variants_on_the_device_resident_path_too(bundle, tmp_path):
    """A profile that also times the device-resident path (IO binding; on the CPU here) gets it per variant."""
    from edgerobust.edge.render.variant_table import fastest_lines, variant_table

    p = fast_profile(tmp_path / "resident.toml")
    p.write_text(p.read_text().replace("[measure]\n", "[measure]\ndevice_resident = true\n"))
    r = audit(AuditConfig(model=bundle / "model.onnx", profile=str(p), show_progress=False, measure_memory=False))
    assert all(m.resident_latency and m.resident_latency[0].p50_ms > 0 for m in r.measurement.models)
    head, rows = variant_table(r)
    assert "resident p50 b1" in head and len(rows) == 4
    col = head.index("resident × b1")
    assert rows[0][col] == "1" and all(row[col].endswith("×") for row in rows[1:])
    lines = fastest_lines(r)
    assert [line.split(",")[0] for line in lines] == ["from host memory", "device-resident"]


def test_headline_gives_the_speedup_range_when_probe_processes_disagree(report):
    def per(m, values):
        return dataclasses.replace(m, latency=(dataclasses.replace(m.latency[0], process_p50_ms=values),))

    by = {m.role: m for m in report.measurement.models}
    models = (per(by["base"], (1.0, 1.0, 1.0)), per(by["deployed"], (0.5, 0.5, 0.25))) + tuple(
        m for m in report.measurement.models if m.role not in ("base", "deployed"))
    split = dataclasses.replace(report, measurement=dataclasses.replace(report.measurement, models=models))
    assert "2.00–4.00× in separate fresh processes, pooled" in headline(split)
    steady = tuple(per(m, (1.0, 1.0, 1.0)) if m.role in ("base", "deployed") else m for m in models)
    same = dataclasses.replace(report, measurement=dataclasses.replace(report.measurement, models=steady))
    assert "separate fresh processes" not in headline(same)


def _audit_altered(bundle, profile, tmp_path, alter):
    """Audit a copy of the bundle whose variant files ``alter`` changed (unverified; transfer sets only:
    the white-box int8 sets name the int8 file's old hash)."""
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("reports"))
    alter(copy)
    return audit(AuditConfig(model=copy / "model.onnx", profile=str(profile), show_progress=False,
                             measure_memory=False, verify=False, adv_sets=tuple(sorted((copy / "adv").glob("*.npz")))))


def test_a_variant_with_a_fixed_batch_axis_is_left_out_with_a_warning(bundle, profile, tmp_path):
    import onnx

    def fix_batch(copy):
        m = onnx.load(str(copy / "model_int8.onnx"))
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
        onnx.save(m, str(copy / "model_int8.onnx"))

    r = _audit_altered(bundle, profile, tmp_path, fix_batch)
    assert [m.role for m in r.measurement.models] == ["base", "deployed", "fp32"]
    assert r.variants == {"deployed": "fp16", "fp32": "fp32"}
    assert any("variant int8 (model_int8.onnx) left out: its batch axis is fixed to 4" in w for w in r.warnings)
    assert [lat.batch_size for lat in r.measurement.model("base").latency] == [1]


def test_a_variant_onnxruntime_cannot_load_is_left_out_not_fatal(bundle, profile, tmp_path):
    r = _audit_altered(bundle, profile, tmp_path, lambda copy: (copy / "model_fp32.onnx").write_bytes(b"not onnx"))
    assert [m.role for m in r.measurement.models] == ["base", "deployed", "int8"]
    assert any(w.startswith("variant fp32 (model_fp32.onnx) left out: onnxruntime cannot load") for w in r.warnings)
    assert all(set(s.variants) == {"int8"} for s in r.sets)
