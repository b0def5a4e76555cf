"""Tiny real ONNX classifiers and complete bundles for the audit tests (no torch needed).

The model is Flatten -> Gemm -> Relu -> Gemm on 1x8x8 inputs with 10 classes; the deployed
variant has perturbed weights and is quantized to int8 QDQ with onnxruntime's own tools.
Adversarial sets are real FGSM sets, with the gradient of the cross-entropy computed in numpy.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgerobust.edge.files.bundle import AdvSet, EvalSet, finalize_manifest
from edgerobust.edge.files.npzio import sha256_file
from edgerobust.edge.runtime.host import cpu_isa

C, H, W, CLASSES, HIDDEN = 1, 8, 8, 10, 32


def mlp_weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W1": (rng.standard_normal((C * H * W, HIDDEN)) * 0.4).astype(np.float32),
        "b1": (rng.standard_normal(HIDDEN) * 0.1).astype(np.float32),
        "W2": (rng.standard_normal((HIDDEN, CLASSES)) * 0.4).astype(np.float32),
        "b2": (rng.standard_normal(CLASSES) * 0.1).astype(np.float32),
    }


def perturbed(weights: dict[str, np.ndarray], scale: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v + rng.standard_normal(v.shape).astype(np.float32) * scale * np.abs(v).mean()).astype(np.float32)
            for k, v in weights.items()}


def save_mlp(path: Path, weights: dict[str, np.ndarray], input_name: str = "input",
             input_shape: tuple = ("batch", C, H, W)) -> Path:
    """Write the classifier as an ONNX model with a dynamic batch axis."""
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    nodes = [
        helper.make_node("Flatten", [input_name], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "W2", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def quantize_qdq(fp32_path: Path, out_path: Path, calib: np.ndarray) -> Path:
    """Static int8 QDQ quantization with onnxruntime's tools and a few calibration batches."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib[i:i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out_path


def numpy_logits(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    h = np.maximum(x.reshape(len(x), -1) @ weights["W1"] + weights["b1"], 0)
    return h @ weights["W2"] + weights["b2"]


def fgsm(weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """FGSM (L-inf) on the numpy MLP: x + eps * sign(d CE / d x), clipped to [0, 1]."""
    flat = x.reshape(len(x), -1)
    pre = flat @ weights["W1"] + weights["b1"]
    logits = np.maximum(pre, 0) @ weights["W2"] + weights["b2"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    grad = ((p @ weights["W2"].T) * (pre > 0)) @ weights["W1"].T
    return np.clip(x + eps * np.sign(grad).reshape(x.shape), 0, 1).astype(np.float32)


def make_bundle(root: Path, n_eval: int = 120, seed: int = 0, quantize: bool = True,
                attacks: tuple[tuple[str, float], ...] = (("fgsm", 0.02), ("fgsm", 0.08))) -> Path:
    """Write a complete bundle (manifest, three models, eval set, FGSM sets) into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "adv").mkdir(exist_ok=True)
    base_w = mlp_weights(seed)
    dep_w = perturbed(base_w, 0.12, seed + 1)
    save_mlp(root / "base.onnx", base_w)
    rng = np.random.default_rng(seed + 2)
    x = rng.random((n_eval, C, H, W), dtype=np.float32)
    y = numpy_logits(base_w, x).argmax(1)
    noisy = rng.random(n_eval) < 0.2  # the base model gets about 80 % right
    y[noisy] = rng.integers(0, CLASSES, noisy.sum())
    y = y.astype(np.int64)
    if quantize:
        save_mlp(root / "model_fp32.onnx", dep_w)
        quantize_qdq(root / "model_fp32.onnx", root / "model.onnx", x[:64])
    else:
        save_mlp(root / "model.onnx", dep_w)
    EvalSet(x=x, y=y, meta={"source": "synthetic"}).save(root / "eval.npz")
    base_sha, eval_sha = sha256_file(root / "base.onnx"), sha256_file(root / "eval.npz")
    for i, (attack, eps) in enumerate(attacks):
        idx = np.sort(np.random.default_rng(seed + 10 + i).choice(n_eval, size=n_eval * 3 // 4, replace=False))
        xa = fgsm(base_w, x[idx], y[idx], eps)
        meta = {"attack": attack, "eps": eps, "norm": "Linf", "params": {}, "base_sha256": base_sha,
                "eval_sha256": eval_sha, "base_accuracy": float((numpy_logits(base_w, xa).argmax(1) == y[idx]).mean()),
                "versions": {}, "seconds": 0.0, "name": f"{attack}_{eps}"}
        AdvSet(x=xa, y=y[idx], idx=idx.astype(np.int64), meta=meta).save(root / "adv" / f"{attack}_{eps}.npz")
    manifest = {
        "kind": "edgerobust-bundle", "schema_version": 1, "name": "tiny-mlp",
        "input": {"name": "input", "shape": [None, C, H, W], "dtype": "float32", "layout": "NCHW",
                  "value_range": [0, 1], "mean": [0.0], "std": [1.0], "normalization": "inside-model",
                  "num_classes": CLASSES, "class_names": [str(i) for i in range(CLASSES)]},
        "output": {"name": "logits"},
        "models": {"base": "base.onnx", "deployed": "model.onnx",
                   **({"fp32": "model_fp32.onnx"} if quantize else {})},
        "eval": "eval.npz", "config": {"sparsity": 0.0, "int8": quantize}, "metrics": {},
        "tool": {"versions": {}},
    }
    finalize_manifest(root, manifest)
    return root


def write_profile(path: Path, providers: tuple[str, ...] = ("CPUExecutionProvider",), budgets: str = "",
                  batch_sizes: tuple[int, ...] = (1, 4), measure: str = "") -> Path:
    """A fast test profile: one thread, tiny warmup and rounds; ``measure``: more [measure] lines."""
    prov = "\n".join(f'[[providers]]\nname = "{p}"\n' for p in providers)
    path.write_text(f'''description = "test profile"
{prov}
[session]
intra_op_threads = 1
inter_op_threads = 1
graph_optimization = "all"

[measure]
batch_sizes = {json.dumps(list(batch_sizes))}
warmup_runs = 2
rounds = 3
runs_per_round = 3
memory_runs = 1
{measure}
{budgets}
''', encoding="utf-8")
    return path


# The fewest timed runs a profile's [measure] allows, for tests of what an audit says rather than of
# its timings: a shipped profile asks for seconds of runs per model and batch size (min_seconds,
# processes), which is most of an audit's wall time and proves nothing about its words.
QUICK_MEASURE = dict(warmup_runs=1, rounds=1, runs_per_round=1, min_seconds=0.0, max_seconds=0.0, ci_target=0.0,
                     turn_seconds=0.0, switch_warmup_runs=0, processes=1, memory_runs=1)


def quick_profiles(mp) -> None:
    """Through ``mp`` (a pytest MonkeyPatch): every profile that the audit, ``profile`` and
    ``calibrate`` load, shipped or a file, keeps its providers, session, budgets and hardware but
    measures with QUICK_MEASURE. The conftest's ``quick_measure`` fixture does this for one test."""
    import dataclasses

    from edgerobust.edge import audit as audit_mod

    load = audit_mod.load_profile

    def quick(name_or_path):
        p = load(name_or_path)
        return dataclasses.replace(p, measure=dataclasses.replace(p.measure, **QUICK_MEASURE))

    mp.setattr(audit_mod, "load_profile", quick)


def ort_predictions(model: Path, x: np.ndarray) -> np.ndarray:
    """Argmax predictions from a bare onnxruntime loop, the reference the audit must match."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 7]})[0].argmax(1) for i in range(0, len(x), 7)])


# ---------------------------------------------------------------------------------------------
# a small convolutional classifier for the int8 rewrites (stem, GEMM route)

# With int32 accumulation (VNNI on x86, dot products on ARM) the rewrite gives the same bits;
# AVX2's 16-bit pair sums saturate differently after the re-layout (see the module's docstring).
EXACT_HOST = bool({"avx512_vnni", "avx_vnni"} & set(cpu_isa())) or platform.machine().lower() in ("arm64", "aarch64")


def stem_model(path, *, channels=3, kernel=7, stride=2, pad=3, size=(32, 32), out=8, seed=0):
    """Sub/Div normalization -> stem Conv -> Relu -> 3x3 Conv -> Relu -> global pool -> Gemm (10 classes)."""
    rng = np.random.default_rng(seed)
    f = np.float32
    inits = {
        "mean": np.full((1, channels, 1, 1), 0.45, f), "std": np.full((1, channels, 1, 1), 0.25, f),
        "w1": (rng.standard_normal((out, channels, kernel, kernel)) * 0.2).astype(f),
        "b1": (rng.standard_normal(out) * 0.1).astype(f),
        "w2": (rng.standard_normal((16, out, 3, 3)) * 0.2).astype(f), "b2": np.zeros(16, f),
        "w3": (rng.standard_normal((16, 10)) * 0.5).astype(f), "b3": np.zeros(10, f),
    }
    nodes = [
        helper.make_node("Sub", ["input", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normed"]),
        helper.make_node("Conv", ["normed", "w1", "b1"], ["c1"], name="stem", kernel_shape=[kernel, kernel],
                         strides=[stride, stride], pads=[pad] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"]),
    ]
    h, w = size
    graph = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["batch", channels, h, w])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def images(n, channels=3, size=(32, 32), seed=1):
    return np.random.default_rng(seed).random((n, channels) + size, dtype=np.float32)


def logits(path, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]
