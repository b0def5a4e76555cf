"""Precision variants (fp32, fp16, int8) in one bundle, and which one is deployed for the target."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from _fixtures_gauntlet import cli
from edgerobust.errors import QualityGateError
from edgerobust.workstation.pipeline.target import resolve_target
from edgerobust.workstation.quantize.variants import choose, fp16_gate


@pytest.fixture(scope="module")
def fp16_bundle(zoo_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fp16") / "b"
    r = cli("compress", zoo_checkpoint.path, "--int8", "--fp16", "--device", "cpu", "--attacks", "none",
            "--finetune-epochs", "1", "--eval-samples", "120", "--max-prune-drop", "100", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_fp16_variant_takes_float32_and_agrees_with_fp32(fp16_bundle):
    man = json.loads((fp16_bundle / "manifest.json").read_text())
    assert man["variants"] == {"fp32": "model_fp32.onnx", "fp16": "model_fp16.onnx", "int8": "model.onnx"}
    assert man["deployment"]["variant"] == "int8" and man["deployment"]["target"] == "cpu"
    assert man["metrics"]["fp16_top1_agreement_with_fp32"] >= 0.99
    half = onnx.load(str(fp16_bundle / "model_fp16.onnx"))
    inits = [i for i in half.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert inits, "no fp16 weights"
    sess = ort.InferenceSession(str(fp16_bundle / "model_fp16.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float)" and sess.get_outputs()[0].type == "tensor(float)"
    ev = np.load(fp16_bundle / "eval.npz")
    f32 = ort.InferenceSession(str(fp16_bundle / "model_fp32.onnx"), providers=["CPUExecutionProvider"])
    a = sess.run(None, {sess.get_inputs()[0].name: ev["x"]})[0].argmax(1)
    b = f32.run(None, {f32.get_inputs()[0].name: ev["x"]})[0].argmax(1)
    assert (a == b).mean() >= 0.99
    assert set(man["models"]) == {"base", "deployed", "fp32", "fp16"}


def test_fp16_gate_refuses_a_disagreeing_model():
    fp32 = np.eye(10)[np.arange(100) % 10]
    fp16 = np.eye(10)[(np.arange(100) + (np.arange(100) < 5)) % 10]  # 5 of 100 flipped
    assert fp16_gate(fp32, fp32) == 1.0
    with pytest.raises(QualityGateError, match="95.00% of 100"):
        fp16_gate(fp32, fp16)


MADE = {"fp32": Path("model_fp32.onnx"), "fp16": Path("model_fp16.onnx"), "int8": Path("model_int8.onnx")}


@pytest.mark.parametrize("target,made,expected", [
    ("cpu", MADE, "int8"), ("cpu", {"fp32": 1, "fp16": 1}, "fp32"), ("cpu", {"fp32": 1}, "fp32"),
    ("tensorrt", MADE, "int8"), ("tensorrt", {"fp32": 1, "fp16": 1}, "fp16"),
    ("cuda", MADE, "fp16"), ("cuda", {"fp32": 1, "int8": 1}, "fp32"),
], ids=["cpu-all", "cpu-no-int8", "cpu-fp32", "trt-all", "trt-no-int8", "cuda-no-gpu-here", "cuda-never-int8"])
def test_variant_rule_per_target(target, made, expected):
    d = choose(made, target, "p", gpu_timer=None)  # no GPU to measure on
    assert d.variant == expected and d.target == target and d.reason


def test_cuda_measures_fp16_against_fp32_on_the_workstation_gpu():
    times = {"model_fp16.onnx": 0.40, "model_fp32.onnx": 0.33}
    d = choose(MADE, "cuda", "jetson", gpu_timer=lambda p: times[p.name])
    assert d.variant == "fp32" and d.timings_ms == {"fp16": 0.40, "fp32": 0.33} and "faster" in d.reason


def test_targets_of_the_shipped_profiles():
    none = resolve_target(None)
    assert (none.profile, none.runtime, none.int8_target) == (None, "cpu", "cpu")
    assert none.reasons["runtime"] == "no target profile: the CPU"
    assert resolve_target("laptop-cpu").runtime == "cpu" and resolve_target("laptop-cpu").profile == "laptop-cpu"
    jetson = resolve_target("jetson-orin-nano")
    assert (jetson.runtime, jetson.int8_target) == ("tensorrt", "tensorrt") and "TensorRT" in jetson.reasons["int8_target"]


def test_target_plan_follows_the_profile_unless_given():
    plan = resolve_target(None)
    assert (plan.round_to, plan.stem) == (8, "plain")
    assert plan.reasons["round_to"] == plan.reasons["stem"] == "the default"
    laptop = resolve_target("laptop-cpu")
    assert (laptop.round_to, laptop.stem) == (16, "space-to-depth")
    assert "laptop-cpu" in laptop.reasons["round_to"] and "compress.int8_stem" in laptop.reasons["stem"]
    pi = resolve_target("raspberry-pi-5")  # not measured there: compress's default
    assert pi.round_to == 8 and pi.reasons["round_to"] == "the default"
    jetson = resolve_target("jetson-orin-nano")
    assert jetson.stem == "plain" and jetson.reasons["stem"] == "the default"
    assert laptop.route == "symmetric" and laptop.reasons["route"] == "the default"
    amx = resolve_target("xeon-amx-1thread")
    assert (amx.route, amx.stem, amx.round_to) == ("gemm-late", "space-to-depth", 16)
    assert "xeon-amx-1thread's compress.int8_route" in amx.reasons["route"]
    given = resolve_target("laptop-cpu", round_to=4, stem="plain", int8_target="tensorrt", route="gemm-late")
    assert (given.round_to, given.stem, given.int8_target, given.route) == (4, "plain", "tensorrt", "gemm-late")
    assert given.runtime == "cpu" and all(given.reasons[k] == "given"
                                          for k in ("round_to", "stem", "int8_target", "route"))
    d = given.to_dict()
    assert set(d) == {"profile", "runtime", "round_to", "stem", "int8_target", "reasons", "route"} and json.dumps(d)


def test_target_plan_refuses_unknown_names():
    from edgerobust.errors import ProfileError, UsageError

    with pytest.raises(ProfileError):
        resolve_target("no-such-profile")
    with pytest.raises(UsageError, match="Unknown `int8_stem` 'sideways'"):
        resolve_target(None, stem="sideways")
    with pytest.raises(UsageError, match="Unknown `int8_target` 'gpu'"):
        resolve_target(None, int8_target="gpu")
    with pytest.raises(UsageError, match="Unknown `int8_route` 'amx'"):
        resolve_target(None, route="amx")


def test_tensorrt_profile_deploys_s8s8_int8(zoo_checkpoint, tmp_path):
    r = cli("compress", zoo_checkpoint.path, "--int8", "--profile", "jetson-orin-nano", "--attacks", "none",
            "--finetune-epochs", "1", "--eval-samples", "64", "--max-prune-drop", "100", "--max-int8-drop", "100",
            "--int8-route", "gemm-late", "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["deployment"] == {**man["deployment"], "variant": "int8", "target": "tensorrt",
                                 "profile": "jetson-orin-nano"}
    assert man["target"]["int8_target"] == "tensorrt" and man["target"]["runtime"] == "tensorrt"
    assert man["target"]["profile"] == "jetson-orin-nano" and man["config"]["target"] == "jetson-orin-nano"
    assert man["config"]["quant"]["int8_target"] is None  # as given: the plan decided it
    assert man["target"]["route"] == "gemm-late" and man["config"]["quant"]["route"] == "gemm-late"
    # the route given reaches the quantizer, which says why it leaves a TensorRT model symmetric
    assert man["quantization"]["route"].startswith("GEMM route not applied: it is written for static QDQ int8 on the "
                                                   "CPU target")


def test_compress_follows_the_profile_unless_given(zoo_checkpoint, tmp_path):
    args = ("compress", zoo_checkpoint.path, "--attacks", "none", "--finetune-epochs", "0", "--eval-samples", "32",
            "--max-prune-drop", "100", "--profile", "laptop-cpu")
    r = cli(*args, "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "p" / "manifest.json").read_text())
    pruned = [layer for layer in man["pruning"]["layers"] if layer["after"] != layer["before"]]
    assert man["pruning"]["round_to"] == 16 and pruned and all(layer["after"] % 16 == 0 for layer in pruned)
    assert man["target"]["stem"] == "space-to-depth"  # the profile's compress.int8_stem
    assert man["target"]["round_to"] == 16 and "laptop-cpu" in man["target"]["reasons"]["round_to"]
    r = cli(*args, "--round-to", "4", "--int8-stem", "plain", "--out", tmp_path / "q")
    assert r.exit_code == 0, r.output
    assert "--int8-stem has no effect without --int8" in " ".join(r.output.split())
    man = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert man["pruning"]["round_to"] == 4 and man["target"]["stem"] == "plain"
    assert man["target"]["reasons"]["round_to"] == man["target"]["reasons"]["stem"] == "given"
    assert man["config"]["prune"]["round_to"] == 4 and man["config"]["quant"]["stem"] == "plain"
