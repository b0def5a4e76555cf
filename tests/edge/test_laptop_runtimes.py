"""The laptop's own runtimes (OpenVINO, Core ML, QNN, DirectML): their profiles, what a host lacks said
in one message, profiles refused when they would cost hours, the precision each model ran in, and
which variant compress deploys for each. Real onnxruntime sessions; the OpenVINO run itself only
where onnxruntime-openvino is installed (never in CI)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgerobust.cli import app
from edgerobust.edge.runtime import precision as prec
from edgerobust.edge.runtime import providers as prov
from edgerobust.edge.runtime.profiles import list_profiles, load_profile, profile_text
from edgerobust.edge.runtime.sessions import open_session, plan_providers
from edgerobust.errors import ProfileError
from edgerobust.workstation.pipeline.target import resolve_target
from edgerobust.workstation.quantize.variants import choose
from onnx_models import make_bundle, write_profile

NEW = {"laptop-openvino-cpu": ("OpenVINOExecutionProvider", "openvino-cpu"),
       "laptop-openvino-gpu": ("OpenVINOExecutionProvider", "openvino-gpu"),
       "laptop-openvino-npu": ("OpenVINOExecutionProvider", "openvino-npu"),
       "apple-coreml": ("CoreMLExecutionProvider", "coreml"),
       "snapdragon-qnn-npu": ("QNNExecutionProvider", "qnn"),
       "windows-directml": ("DmlExecutionProvider", "directml")}
runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("lr") / "tiny", n_eval=40, attacks=(("fgsm", 0.05),))


# --------------------------------------------------------------------------------------------
# profiles


@pytest.mark.parametrize("name", sorted(NEW))
def test_each_runtime_has_a_profile_with_the_cpu_provider_behind_it(name):
    p = load_profile(name)
    first, runtime = NEW[name]
    assert p.provider_names == [first, "CPUExecutionProvider"]
    assert resolve_target(name).runtime == runtime
    assert name in list_profiles()


def test_profiles_say_what_each_runtime_is_asked():
    ov = {n: dict(load_profile(n).providers[0].options) for n in NEW if n.startswith("laptop-openvino")}
    assert {n: o["device_type"] for n, o in ov.items()} == {
        "laptop-openvino-cpu": "CPU", "laptop-openvino-gpu": "GPU", "laptop-openvino-npu": "NPU"}
    assert json.loads(ov["laptop-openvino-cpu"]["load_config"]) == {"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}  # no bf16
    assert load_profile("windows-directml").session.memory_pattern is False  # DirectML requires it off
    assert load_profile("snapdragon-qnn-npu").measure.batch_sizes == (1,)
    assert dict(load_profile("apple-coreml").providers[0].options)["ModelFormat"] == "MLProgram"


def test_a_missing_provider_is_one_message_naming_what_to_install(monkeypatch):
    with pytest.raises(ProfileError) as e:
        plan_providers(load_profile("laptop-openvino-cpu"), available=("CPUExecutionProvider",))
    assert "onnxruntime-openvino" in e.value.fix and "edgerobust[openvino]" in e.value.fix
    assert "never install both" in e.value.fix
    assert "exists only on macOS" in prov.install_hint(["CoreMLExecutionProvider"], system="Linux")
    assert "install onnxruntime" in prov.install_hint(["CoreMLExecutionProvider"], system="Darwin")
    assert "exists only on Windows" in prov.install_hint(["QNNExecutionProvider"], system="Linux")
    assert "onnxruntime-directml" in prov.install_hint(["DmlExecutionProvider"], system="Windows")
    # with allow_fallback the gap is recorded and the CPU provider runs
    plan = plan_providers(load_profile("apple-coreml"), available=("CPUExecutionProvider",), allow_fallback=True)
    assert plan.missing == ("CoreMLExecutionProvider",) and [p for p, _ in plan.use] == ["CPUExecutionProvider"]


def test_apple_coreml_on_this_host_ends_in_one_message_before_any_measuring(bundle):
    import onnxruntime as ort

    if "CoreMLExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host has Core ML")
    r = runner.invoke(app, ["audit", str(bundle / "model.onnx"), "--profile", "apple-coreml",
                            "--out", str(bundle.parent / "coreml-report")])
    assert r.exit_code == 2
    text = flat(r.output)
    assert "CoreMLExecutionProvider" in text and "macOS" in text
    assert text.count("error:") == 1 and "warning" not in text.lower()
    assert "Measuring latency" not in text and not (bundle.parent / "coreml-report").exists()


@pytest.mark.parametrize("devices, want, gap", [
    (("CPU",), "GPU", True), (("CPU", "GPU.0"), "GPU", False), (("CPU", "GPU.0"), "GPU.1", True),
    (("CPU", "NPU"), "NPU", False), (("CPU", "GPU"), "GPU.0", False), (("CPU", "GPU"), "GPU.1", True), (("CPU",), "AUTO:GPU,CPU", True), (("CPU", "GPU"), "HETERO:GPU,CPU", False),
])
def test_an_openvino_device_the_host_lacks_is_found(monkeypatch, devices, want, gap):
    monkeypatch.setattr(prov, "openvino_devices", lambda: devices)
    found = prov.device_gap("OpenVINOExecutionProvider", {"device_type": want})
    assert (found is not None) == gap
    if gap:
        assert "OpenVINO sees" in found and ", ".join(devices) in found


def test_a_present_provider_without_its_device_is_refused_not_silently_replaced(monkeypatch):
    monkeypatch.setattr(prov, "openvino_devices", lambda: ("CPU",))
    avail = ("OpenVINOExecutionProvider", "CPUExecutionProvider")
    with pytest.raises(ProfileError) as e:
        plan_providers(load_profile("laptop-openvino-gpu"), available=avail)
    assert "quietly" in e.value.why and "driver" in e.value.fix
    plan = plan_providers(load_profile("laptop-openvino-gpu"), available=avail, allow_fallback=True)
    assert plan.missing == ("OpenVINOExecutionProvider",) and plan.fallback
    assert plan_providers(load_profile("laptop-openvino-cpu"), available=avail).use[0][0] == "OpenVINOExecutionProvider"


# --------------------------------------------------------------------------------------------
# cost bounds


def _absurd(tmp_path, line: str):
    path = tmp_path / "absurd.toml"
    path.write_text(f'description = "absurd"\n[[providers]]\nname = "CPUExecutionProvider"\n[measure]\n{line}\n')
    return path


@pytest.mark.parametrize("line, field", [
    ("warmup_runs = 1000000000", "measure.warmup_runs"), ("min_seconds = 86400.0", "measure.min_seconds"),
    ("max_rounds = 10000\nruns_per_round = 1000", "measure.max_rounds x measure.runs_per_round"),
    ("processes = 64", "measure.processes"), ("turn_seconds = 60.0", "measure.turn_seconds"),
    ("memory_runs = 100000", "measure.memory_runs"),
])
def test_a_profile_that_would_hang_the_audit_is_refused_on_loading(tmp_path, line, field):
    path = _absurd(tmp_path, line)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert f"'{field}'" in e.value.what and "over its limit" in e.value.what and "Use at most" in e.value.fix


def test_batch_size_bounds_hold_for_the_profile_and_the_cli_override(tmp_path):
    with pytest.raises(ProfileError, match="over its limit of 1,024"):
        load_profile(write_profile(tmp_path / "big.toml", batch_sizes=(1, 4096)))
    with pytest.raises(ProfileError, match="over the limit"):
        load_profile("laptop-cpu").with_batch_sizes((1, 100_000))


def test_every_shipped_profile_is_within_the_bounds():
    for name in list_profiles():
        m = load_profile(name).measure
        assert m.max_rounds * m.runs_per_round <= 100_000 and m.warmup_runs <= 1000


def test_the_cli_refuses_an_absurd_profile_before_measuring(bundle, tmp_path):
    path = _absurd(tmp_path, "warmup_runs = 1000000000")
    r = runner.invoke(app, ["audit", str(bundle / "model.onnx"), "--profile", str(path), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "1,000,000,000, over its limit of 1,000" in flat(r.output)
    assert "Measuring latency" not in r.output


# --------------------------------------------------------------------------------------------
# precision that ran


def _linear(path, half: bool):
    """y = x @ W on 1x8x8 inputs, in fp32 or through a fp16 Cast round trip (reduced-precision arithmetic)."""
    w = np.random.default_rng(3).standard_normal((64, 10)).astype(np.float32)
    inits = [numpy_helper.from_array(w.astype(np.float16) if half else w, "W")]
    nodes = [helper.make_node("Flatten", ["input"], ["f"], axis=1)]
    if half:
        nodes += [helper.make_node("Cast", ["f"], ["fh"], to=TensorProto.FLOAT16),
                  helper.make_node("MatMul", ["fh", "W"], ["yh"]),
                  helper.make_node("Cast", ["yh"], ["logits"], to=TensorProto.FLOAT)]
    else:
        nodes.append(helper.make_node("MatMul", ["f", "W"], ["logits"]))
    g = helper.make_graph(nodes, "lin", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 1, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_the_file_precision_is_read_from_the_graph(tmp_path, bundle):
    assert prec.model_precision(_linear(tmp_path / "a.onnx", half=False)) == "fp32"
    assert prec.model_precision(_linear(tmp_path / "h.onnx", half=True)) == "fp16"
    assert prec.model_precision(bundle / "model.onnx") == "int8"


def test_reduced_precision_arithmetic_is_observed_against_the_cpu_provider(tmp_path):
    import onnxruntime as ort

    fp32 = str(_linear(tmp_path / "a.onnx", half=False))
    half = str(_linear(tmp_path / "h.onnx", half=True))
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    ref = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"])
    same = prec.observe(ort.InferenceSession(fp32, providers=["CPUExecutionProvider"]), ref, x)
    low = prec.observe(ort.InferenceSession(half, providers=["CPUExecutionProvider"]), ref, x)
    assert same["max_rel_diff_vs_cpu"] < 1e-6 and same["top1_agreement_vs_cpu"] == 1.0
    assert low["max_rel_diff_vs_cpu"] > prec.FP32_TOLERANCE
    assert prec.verdict("fp32", same).startswith("fp32 arithmetic")
    assert prec.verdict("fp32", low).startswith("reduced precision")
    assert "not separable" in prec.verdict("int8", low)


@pytest.mark.parametrize("provider, options, model, says", [
    ("OpenVINOExecutionProvider", {"device_type": "CPU", "precision": "FP32"}, "fp32", "fp32"),
    ("OpenVINOExecutionProvider", {"device_type": "GPU"}, "int8", "int8 where quantized; float layers fp16"),
    ("OpenVINOExecutionProvider", {"device_type": "CPU", "load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}})},
     "fp32", "bf16"),
    ("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_int8_enable": True}, "int8",
     "int8 where quantized; float layers fp16"),
    ("CoreMLExecutionProvider", {"MLComputeUnits": "CPUOnly"}, "fp32", "fp32"),
    ("CoreMLExecutionProvider", {"MLComputeUnits": "ALL"}, "fp32", "fp16 on the GPU and Neural Engine"),
    ("QNNExecutionProvider", {"enable_htp_fp16_precision": "1"}, "int8", "int8 where quantized; float layers fp16"),
    ("CPUExecutionProvider", {}, "int8", "int8 where quantized; float layers fp32"),
    ("AzureExecutionProvider", {}, "fp32", "unknown"),
])
def test_what_each_runtime_is_asked_to_run_in(provider, options, model, says):
    declared, source = prec.declared_precision(provider, options, model)
    assert declared.startswith(says) and source


def test_audit_records_the_precision_per_model_and_names_it_in_the_headline(bundle, tmp_path):
    out = tmp_path / "rep"
    r = runner.invoke(app, ["audit", str(bundle / "model.onnx"), "--profile",
                            str(write_profile(tmp_path / "f.toml", batch_sizes=(1,))), "--no-memory", "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "report.json").read_text())["_data"]
    recs = {m["role"]: m["precision"] for m in data["measurement"]["models"]}
    assert recs["base"]["model"] == "fp32" and recs["deployed"]["model"] == "int8"
    assert recs["deployed"]["declared"] == "int8 where quantized; float layers fp32"
    assert recs["base"]["observed"] is None  # the CPU provider is the reference itself
    assert "Precision that ran on CPUExecutionProvider: base (fp32 file) fp32; deployed (int8 file)" in \
        data["summary"]["headline"]
    assert "- precision, deployed: int8 file on CPUExecutionProvider" in (out / "report.md").read_text()


@pytest.mark.skipif("OpenVINOExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
                    reason="needs onnxruntime-openvino (pip install 'edgerobust[openvino]')")
def test_openvino_runs_true_fp32_and_a_bf16_hint_is_caught(bundle, tmp_path):
    p = load_profile("laptop-openvino-cpu")
    s = open_session(bundle / "base.onnx", "base", p)
    assert s.info.providers[0] == "OpenVINOExecutionProvider"
    rec = prec.ran_precision({"base": s})["base"]
    assert rec["observed"]["max_rel_diff_vs_cpu"] < prec.FP32_TOLERANCE
    # the same runtime told to use bf16 (what OpenVINO's CPU plugin may choose by itself for speed)
    bf16 = tmp_path / "bf16.toml"
    bf16.write_text(profile_text("laptop-openvino-cpu").replace('"INFERENCE_PRECISION_HINT": "f32"',
                                                                 '"INFERENCE_PRECISION_HINT": "bf16"'))
    rec2 = prec.ran_precision({"base": open_session(bundle / "base.onnx", "base", load_profile(bf16))})["base"]
    assert rec2["declared"].startswith("bf16")
    if "avx512_bf16" in open("/proc/cpuinfo").read() or "amx_bf16" in open("/proc/cpuinfo").read():
        assert rec2["observed"]["max_rel_diff_vs_cpu"] > prec.FP32_TOLERANCE  # seen, not only declared


# --------------------------------------------------------------------------------------------
# which variant compress deploys


MADE = {"int8": "m8.onnx", "fp16": "m16.onnx", "fp32": "m32.onnx"}


@pytest.mark.parametrize("target, made, pick", [
    ("openvino-cpu", ("int8", "fp32"), "int8"), ("openvino-gpu", ("int8", "fp16", "fp32"), "int8"),
    ("coreml", ("int8", "fp32"), "fp32"), ("coreml", ("int8", "fp16", "fp32"), "fp32"),
    ("qnn", ("fp16", "fp32"), "fp16"), ("qnn", ("int8", "fp32"), "int8"),
    ("directml", ("int8", "fp32"), "fp32"), ("directml", ("int8", "fp16", "fp32"), "fp16"),
])
def test_the_rule_per_runtime_when_it_is_not_at_hand(target, made, pick):
    from pathlib import Path

    d = choose({k: Path(MADE[k]) for k in made}, target, "p", gpu_timer=None)
    assert d.variant == pick and d.timings_ms is None
    assert ("not measured" in d.reason) == (target != "openvino-cpu")


def test_a_runtime_at_hand_is_measured_and_the_fastest_variant_deployed():
    from pathlib import Path

    times = {"m8.onnx": 0.9, "m32.onnx": 0.5}
    d = choose({"int8": Path("m8.onnx"), "fp32": Path("m32.onnx")}, "openvino-gpu", "p",
               gpu_timer=lambda p: times[p.name])
    assert d.variant == "fp32" and d.timings_ms == {"int8": 0.9, "fp32": 0.5} and "measured here" in d.reason


def test_the_runtime_is_measured_only_where_this_workstation_has_it(bundle):
    import onnxruntime as ort

    from edgerobust.workstation.quantize.variants import _provider_timer

    timer = _provider_timer("laptop-openvino-cpu")
    if "OpenVINOExecutionProvider" not in ort.get_available_providers():
        assert timer is None and _provider_timer("apple-coreml") is None
    else:
        assert timer(bundle / "model.onnx") > 0  # a real p50 on OpenVINO, in ms


def test_a_profile_for_another_operating_system_is_not_this_hosts_device():
    from edgerobust.edge.runtime.hostcheck import HostFacts, check_host

    linux = HostFacts(machine="x86_64", cores=8, system="Linux")
    assert check_host(load_profile("windows-directml"), linux).mismatch == ("os: the device runs Windows, this host Linux",)
    assert "os: the device runs macOS, this host Linux" in check_host(load_profile("apple-coreml"), linux).mismatch
    mac = HostFacts(machine="arm64", cores=8, system="Darwin")
    assert check_host(load_profile("apple-coreml"), mac).matches
    assert check_host(load_profile("laptop-cpu"), mac).matches  # "Linux, macOS or Windows"
    assert check_host(load_profile("windows-directml"), HostFacts(machine="x86_64", cores=8)).matches  # unknown: no claim


def test_the_observation_feeds_a_fixed_batch_model_at_its_own_batch(tmp_path):
    import onnxruntime as ort

    from onnx_models import mlp_weights, save_mlp

    fixed = str(save_mlp(tmp_path / "fixed.onnx", mlp_weights(0), input_shape=(1, 1, 8, 8)))
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    sess = ort.InferenceSession(fixed, providers=["CPUExecutionProvider"])
    obs = prec.observe(sess, ort.InferenceSession(fixed, providers=["CPUExecutionProvider"]), x, batch=1)
    assert obs["rows"] == 8 and obs["max_rel_diff_vs_cpu"] == 0.0
