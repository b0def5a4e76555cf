"""benchmarks/peers.py without OpenVINO: rows that cannot run say why, the table is assembled from
given numbers (per-round ratios, the best peer), a row runs alone in a child process, and the
precision read from a file. The OpenVINO child runs only where openvino is installed."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import peers  # noqa: E402
from onnx_models import mlp_weights, quantize_qdq, save_mlp  # noqa: E402

TINY = (1, 1, 8, 8)


def _rec(p50, load=0.1, status=None):
    return {"p50": list(p50), "other_load": [load] * len(p50), "info": {"runs_on": "here", "precision": "fp32"},
            "status": status}


def test_without_openvino_its_rows_say_why_and_a_bad_ovep_python_too():
    missing = lambda m: None if m in ("openvino", "nncf") else object()  # noqa: E731
    why = peers.availability("/nonexistent/python", has=missing)
    for r in peers.ROWS:
        if r.runtime == "openvino":
            assert why[r.key].startswith("not run: openvino is not installed"), r.key
    assert why["ort-fp32"] is None and why["ort-int8"] is None and why["er-cpu"] is None
    assert why["er-ovep"].startswith("not run: /nonexistent/python did not start")
    assert why["er-cpu-ovep"] == why["er-ovep"]  # the laptop-cpu file on the OpenVINO provider: the same probe


def test_ovep_row_needs_an_onnxruntime_with_the_openvino_provider():
    import onnxruntime as ort

    why = peers.probe_ovep(sys.executable)
    if "OpenVINOExecutionProvider" in ort.get_available_providers():
        assert why is None
    else:
        assert "install onnxruntime-openvino in a separate environment" in why and "--ovep-python" in why


def test_table_from_given_numbers_ratios_per_round_and_the_best_peer():
    records = {"m": {
        "ort-fp32": _rec([10.0, 12.0, 11.0]),
        "ort-int8": _rec([4.0, 6.0, 5.0]),
        "nncf-int8": _rec([2.0, 3.0, 4.0], load=0.4),  # fastest peer by median (3.0)
        "ov-fp32": _rec([], status="not run: openvino is not installed here"),
        "er-cpu": _rec([1.0, 1.5, 1.0]),  # edgerobust: faster still, never the best *peer*
        "er-ovep": _rec([1.0], status="failed: the requested provider was not used"),
    }}
    s = peers.summarize(records)["m"]
    assert s["best_peer"] == "nncf-int8"
    rows = {r["key"]: r for r in s["rows"]}
    assert [r["key"] for r in s["rows"]] == [r.key for r in peers.ROWS]
    er = rows["er-cpu"]
    assert er["p50_ms"] == {"median": 1.0, "min": 1.0, "max": 1.5, "n": 3}
    assert er["x_ort_fp32"]["median"] == pytest.approx(10.0) and er["x_ort_fp32"]["min"] == pytest.approx(8.0)
    assert er["x_best_peer"]["median"] == pytest.approx(2.0)  # rounds: 2/1, 3/1.5, 4/1
    assert rows["nncf-int8"]["best_peer"] and rows["nncf-int8"]["x_best_peer"]["median"] == 1.0
    assert rows["nncf-int8"]["other_load"] == 0.4
    assert rows["er-ovep"]["status"].startswith("failed:") and rows["er-ovep"]["p50_ms"] is None
    assert rows["ov-default"]["status"] == "not run" and rows["ov-fp32"]["x_best_peer"] is None
    text = peers.render({"m": s})
    assert "| m | OpenVINO + NNCF int8 (best peer) |" in text
    assert "not run: openvino is not installed here" in text and "failed: the requested provider" in text
    assert "| 1.000 [1.000-1.500] | 10.00 [8.00-11.00] | 2.00 [2.00-4.00] | 0.10 |" in text
    note, *claims = peers.headline({"m": s})
    assert note.startswith("NOTE: rows measured while other processes used over 15% of the cores: 1;")  # nncf-int8's 0.4
    assert claims == ["m: edgerobust 0.5+int8 laptop-cpu, ORT CPU EP: 10.00x ORT fp32, "
                                        "2.00x the best peer (OpenVINO + NNCF int8)"]


def test_precision_read_from_the_file(tmp_path):
    fp32 = save_mlp(tmp_path / "fp32.onnx", mlp_weights(0))
    calib = np.random.default_rng(0).random((8, *TINY[1:]), dtype=np.float32)
    int8 = quantize_qdq(fp32, tmp_path / "int8.onnx", calib)
    assert peers.onnx_precision(fp32) == "fp32"
    assert peers.onnx_precision(int8) == "int8 2/2 conv/fc, rest fp32"


@pytest.mark.parametrize("runtime", ["ort", pytest.param("openvino", marks=pytest.mark.skipif(
    peers.importlib.util.find_spec("openvino") is None, reason="openvino is not installed"))])
def test_a_row_runs_alone_in_a_child_process(tmp_path, runtime):
    model = save_mlp(tmp_path / "m.onnx", mlp_weights(0))
    rec = peers.run_child(sys.executable, {"model": str(model), "runtime": runtime, "hint": "f32", "threads": 1,
                                           "warmup": 2, "seconds": 0.2, "shape": list(TINY)}, timeout=120)
    assert rec["p50_ms"] > 0 and rec["runs"] >= 1
    if runtime == "openvino":
        assert rec["hint"] == "f32" and rec["precision"].startswith("hint f32 (forced); ")
        assert "f32" in rec["precision"].split("ran ")[1] and "bf16" not in rec["precision"]
    else:
        assert rec["precision"] == "fp32" and rec["runs_on"].endswith("CPUExecutionProvider")


def test_issue_table_names_the_best_peer_and_the_openvino_provider_over_the_cpu_provider():
    records = {"resnet18": {
        "ort-fp32": _rec([20.0, 18.0, 22.0]),
        "nncf-int8": _rec([4.0, 3.0, 4.0]),
        "er-cpu": _rec([2.0, 3.0, 2.0]),
        "er-cpu-ovep": _rec([1.0, 1.5, 0.8]),  # per round: 2.0, 2.0, 2.5
        "er-ovep": _rec([1.0, 1.0, 1.0]),
        "er-ov": _rec([], status="not run: openvino is not installed here"),
    }}
    s = peers.summarize(records)
    vs = s["resnet18"]["vs_cpu_provider"]
    assert vs["er-cpu-ovep"] == {"median": 2.0, "min": 2.0, "max": 2.5, "n": 3}
    assert vs["er-ovep"]["median"] == pytest.approx(2.0) and vs["er-ovep"]["max"] == pytest.approx(3.0)
    assert vs["er-ov"] is None and vs["er-cpu-ov"] is None
    text = peers.render_issue(s)
    lines = text.splitlines()
    assert lines[:4] == ["resnet18:", "", "| what | ms | speedup over ORT fp32 |", "|---|---|---|"]
    assert lines[4] == "| onnxruntime fp32 (the reference) | 20.00 [18.00-22.00] | 1.00 [1.00-1.00]x |"
    assert lines[5] == "| OpenVINO + NNCF int8 (the best peer) | 4.00 [3.00-4.00] | 5.50 [5.00-6.00]x |"
    assert lines[6].startswith("| this bundle (laptop-cpu) on onnxruntime's CPU provider (the default) | 2.00 [2.00-3.00]")
    assert "| the same file on onnxruntime's OpenVINO provider | 1.00 [0.80-1.50] |" in text
    assert "| built for laptop-openvino-cpu, on the OpenVINO runtime | not run: openvino is not installed here | |" in text
    assert ("resnet18: the same file on onnxruntime's OpenVINO provider / on the CPU provider: "
            "2.00x [2.00-2.50] over 3 rounds") in lines
    assert ("resnet18: built for laptop-openvino-cpu, on the OpenVINO runtime / on the CPU provider: "
            "not measured (not run: openvino is not installed here)") in lines


def test_isa_line_names_the_class_and_the_flags():
    from common import isa_class, isa_line

    assert isa_class(("avx2", "fma", "avx512f", "avx512_vnni", "amx_int8")) == "amx"
    assert isa_class(("avx2", "avx512f", "avx512bw", "avx512_vnni")) == "vnni"
    assert isa_class(("avx2", "avx_vnni")) == "vnni"
    assert isa_class(("avx2", "fma")) == "avx2" and isa_class(("asimd",)) == "other"
    assert isa_line().startswith("ISA ") and "(" in isa_line()
