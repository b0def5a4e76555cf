"""The device-resident latency path (IO binding, CUDA graphs) and GPU memory (NVML).

On this CPU-only suite the resident path runs with IO binding to "cpu", the same code a GPU
profile runs with "cuda"; the CUDA test at the end runs only where onnxruntime has CUDA.
"""
import dataclasses
import io
import json
import subprocess
import sys
import types

import numpy as np
import pytest
from rich.console import Console

from edgerobust.edge.runtime import _memprobe, resident
from edgerobust.edge.runtime.measure import measure_models
from edgerobust.edge.runtime.profiles import load_profile
from edgerobust.edge.render.report import resident_md, render_measure, to_json
from edgerobust.edge.runtime.sessions import open_sessions
from edgerobust.edge.render.speed_lines import resource_lines, settings_line
from edgerobust.errors import ModelLoadError, ProfileError
from onnx_models import mlp_weights, perturbed, save_mlp, write_profile


def _profile(path, providers=("CPUExecutionProvider",), measure="", batch_sizes=(1, 4)):
    return write_profile(path, tuple(providers), batch_sizes=tuple(batch_sizes), measure=measure)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    w = mlp_weights(0)
    return {"base": save_mlp(d / "base.onnx", w), "deployed": save_mlp(d / "deployed.onnx", perturbed(w, 0.1, 1))}


# --- profile keys -----------------------------------------------------------------------------


def test_defaults_follow_the_first_provider(tmp_path):
    assert load_profile("laptop-cpu").measure.device_resident is False
    for name in ("jetson-orin-nano", "jetson-agx-orin", "jetson-nano"):
        m = load_profile(name).measure
        assert m.device_resident is True and m.cuda_graph is False
    cuda = load_profile(_profile(tmp_path / "c.toml", ("CUDAExecutionProvider", "CPUExecutionProvider")))
    assert cuda.measure.device_resident is True
    cpu = load_profile(_profile(tmp_path / "p.toml", measure="device_resident = true"))
    assert cpu.measure.device_resident is True


@pytest.mark.parametrize("providers, measure, words", [
    (("CPUExecutionProvider",), "device_resident = true\ncuda_graph = true", ["measure.cuda_graph", "first provider"]),
    (("CUDAExecutionProvider",), "device_resident = false\ncuda_graph = true", ["measure.cuda_graph", "device_resident = true"]),
    (("CUDAExecutionProvider",), 'device_resident = "yes"', ["measure.device_resident", "true or false"]),
    (("TensorrtExecutionProvider",), "cuda_graph = 1", ["measure.cuda_graph", "true or false"]),
])
def test_bad_resident_keys_are_refused_with_the_field_named(tmp_path, providers, measure, words):
    with pytest.raises(ProfileError) as e:
        load_profile(_profile(tmp_path / "bad.toml", providers, measure))
    assert all(w in str(e.value) for w in words), str(e.value)


def test_cuda_graph_profile_parses(tmp_path):
    p = load_profile(_profile(tmp_path / "g.toml", ("TensorrtExecutionProvider", "CUDAExecutionProvider"),
                              "cuda_graph = true"))
    assert (p.measure.device_resident, p.measure.cuda_graph) == (True, True)


def test_graph_providers_switch_on_each_providers_own_option():
    use = [("TensorrtExecutionProvider", {"trt_fp16_enable": True}), ("CUDAExecutionProvider", {}),
           ("CPUExecutionProvider", {})]
    assert resident.graph_providers(use) == [
        ("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_cuda_graph_enable": "1"}),
        ("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})]
    assert resident.graph_providers(use[1:])[0] == ("CUDAExecutionProvider", {"enable_cuda_graph": "1"})
    assert resident.binding_device(["CUDAExecutionProvider"], [("CUDAExecutionProvider", {"device_id": 1})]) == ("cuda", 1)
    assert resident.binding_device(["CPUExecutionProvider"], [("CPUExecutionProvider", {})]) == ("cpu", 0)


# --- the resident path on the CPU -------------------------------------------------------------


def test_bound_runner_computes_what_the_host_path_does(models, tmp_path):
    import onnxruntime as ort

    prof = load_profile(_profile(tmp_path / "p.toml", measure="device_resident = true"))
    s = open_sessions({"base": models["base"]}, prof)["base"]
    x = np.random.default_rng(3).random((4, 1, 8, 8), dtype=np.float32)
    host = s.session.run(None, {"input": x})
    run = resident.bind(ort, s.session, "base", "input", x, host, "cpu", 0)
    run.outputs[0].update_inplace(np.zeros_like(host[0]))  # what the bound run writes, not what bind() left
    run()
    np.testing.assert_allclose(run.outputs[0].numpy(), host[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelLoadError, match="device-resident"):
        resident.bind(ort, s.session, "base", "no_such_input", x, host, "cpu", 0)


@pytest.mark.parametrize("isolation", ["pool", "park"])
def test_resident_path_gives_a_second_series_in_the_same_run(models, tmp_path, isolation):
    prof = load_profile(_profile(tmp_path / "p.toml", measure=f'device_resident = true\nisolation = "{isolation}"'))
    sessions = open_sessions(models, prof)
    assert {s.info.isolation for s in sessions.values()} == {isolation}
    from edgerobust.edge.runtime.measure import measure

    m = measure(sessions, prof, memory=False, show_progress=False)
    for model in m.models:
        assert [lat.batch_size for lat in model.resident_latency] == [1, 4]
        for host, res in zip(model.latency, model.resident_latency):
            assert res.runs >= 9 and res.rounds >= 3
            assert 0 < res.p50_ci_low_ms <= res.p50_ms <= res.p50_ci_high_ms
            # the same tiny model on the same CPU: the two paths agree within an order of magnitude
            assert 0.1 < res.p50_ms / host.p50_ms < 10
    sp = m.resident_speedup["deployed"]
    assert [s.batch_size for s in sp] == [1, 4]
    base, dep = m.model("base").resident_latency, m.model("deployed").resident_latency
    assert sp[0].p50 == pytest.approx(base[0].p50_ms / dep[0].p50_ms)
    assert sp[0].p50_low <= sp[0].p50 <= sp[0].p50_high


def test_without_the_setting_there_is_one_path(models, tmp_path):
    m = measure_models(models, load_profile(_profile(tmp_path / "p.toml")), memory=False, show_progress=False)
    assert all(model.resident_latency == () for model in m.models) and m.resident_speedup == {}
    assert "device-resident" not in settings_line(m) and "from host memory" in settings_line(m)
    assert resident_md(m) == []


def test_reports_name_both_paths(models, tmp_path):
    prof = load_profile(_profile(tmp_path / "p.toml", measure='device_resident = true\nisolation = "park"'))
    m = measure_models(models, prof, memory=True, show_progress=False)
    data = json.loads(json.dumps(to_json(m)))["_data"]
    assert data["settings"]["device_resident"] is True and data["settings"]["cuda_graph"] is False
    assert [r["batch_size"] for r in data["models"][0]["resident_latency"]] == [1, 4]
    assert [s["batch_size"] for s in data["resident_speedup"]["deployed"]] == [1, 4]
    assert data["models"][0]["memory"]["gpu_peak_mb"] is None  # CPU session: not attempted
    line = settings_line(m)
    assert "from host memory" in line and "device-resident (IO binding)" in line
    md = "\n".join(resident_md(m))
    assert "Latency device-resident (IO binding)" in md and "deployed speedup" in md and "| 4 |" in md
    buf = io.StringIO()
    render_measure(m, Console(file=buf, width=200))
    out = buf.getvalue()
    assert "from host memory" in out and "device-resident (IO binding)" in out


def test_resource_lines_show_gpu_memory_or_why_not(models, tmp_path):
    m = measure_models({"base": models["base"]}, load_profile(_profile(tmp_path / "p.toml")), show_progress=False)
    model = m.models[0]
    with_gpu = dataclasses.replace(model, memory=dataclasses.replace(model.memory, gpu_peak_mb=312.5, gpu_method="NVML x"))
    why = dataclasses.replace(model, memory=dataclasses.replace(model.memory, gpu_method="nvidia-ml-py not installed"))
    assert "peak GPU memory 312.5 MiB (NVML x)" in resource_lines(dataclasses.replace(m, models=(with_gpu,)))[0]
    assert "GPU memory not measured: nvidia-ml-py" in resource_lines(dataclasses.replace(m, models=(why,)))[0]
    assert "GPU" not in resource_lines(m)[0]


# --- the memory probe -------------------------------------------------------------------------


def _probe(spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "edgerobust.edge.runtime._memprobe", json.dumps(spec)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_memprobe_applies_arena_pattern_and_config_and_says_why_no_gpu_figure(models):
    spec = {"model": str(models["base"]), "providers": [["CPUExecutionProvider", {}]], "intra_op_threads": 1,
            "inter_op_threads": 1, "graph_optimization": "ORT_ENABLE_ALL", "cpu_arena": False,
            "memory_pattern": False, "session_config": {"session.intra_op.allow_spinning": "0"},
            "input_name": "input", "input_shape": [2, 1, 8, 8], "input_dtype": "float32", "runs": 2,
            "gpu_memory": True, "device_id": 0}
    res = _probe(spec)
    assert res["applied"] == {"cpu_arena": False, "memory_pattern": False,
                              "session_config": {"session.intra_op.allow_spinning": "0"}}
    assert res["gpu_peak_mb"] is None and res["gpu_method"]
    assert any(w in res["gpu_method"] for w in ("nvidia-ml-py not installed", "NVML", "Jetson"))
    on = _probe({**spec, "cpu_arena": True, "memory_pattern": True, "session_config": {}, "gpu_memory": False})
    assert on["applied"]["cpu_arena"] is True and on["gpu_method"] is None


def _fake_nvml(processes=None, init_error=None):
    class NVMLError(Exception):
        pass

    calls = iter(processes or [[]])
    last = []

    def running(handle):
        nonlocal last
        last = next(calls, last)
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in last]

    def init():
        if init_error:
            raise NVMLError(init_error)

    def refuse(handle):  # MIG slices and some containers: NVML_ERROR_NOT_SUPPORTED / NO_PERMISSION
        raise NVMLError("Not Supported")

    return types.SimpleNamespace(NVMLError=NVMLError, nvmlInit=init, nvmlShutdown=lambda: None,
                                 nvmlDeviceGetCount=lambda: 1, nvmlDeviceGetHandleByIndex=lambda i: i,
                                 nvmlDeviceGetComputeRunningProcesses=refuse if processes == "refuse" else running)


def test_gpu_sampler_takes_the_max_of_this_process(monkeypatch):
    monkeypatch.setattr(_memprobe, "is_jetson", lambda: False)
    mib = 1 << 20
    seq = [[(42, 100 * mib), (7, 900 * mib)], [(42, 300 * mib)], [(42, None)], [(42, 200 * mib)]]
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(seq))
    g = _memprobe.GpuMemory(pid=42, interval_s=3600).start()
    for _ in range(2):
        g.sample()
    peak, method = g.stop()
    assert peak == 300 and "NVML" in method


@pytest.mark.parametrize("fake, jetson, words", [
    (None, False, "nvidia-ml-py not installed"),
    (_fake_nvml(init_error="Driver Not Loaded"), False, "NVML unavailable"),
    (_fake_nvml([[(1, 5 << 20)]]), False, "NVML sees no process memory"),
    (_fake_nvml([[(42, 5 << 20)]]), True, "memory is unified"),
    (_fake_nvml("refuse"), False, "NVML cannot list this process's GPU memory (NVMLError: Not Supported)"),
])
def test_gpu_sampler_says_why_there_is_no_figure(monkeypatch, fake, jetson, words):
    monkeypatch.setattr(_memprobe, "is_jetson", lambda: jetson)
    monkeypatch.setitem(sys.modules, "pynvml", fake)  # None: `import pynvml` raises ImportError
    peak, why = _memprobe.GpuMemory(pid=42, interval_s=3600).start().stop()
    assert peak is None and words in why


# --- on a real GPU ----------------------------------------------------------------------------


def _has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(not _has_cuda(), reason="needs onnxruntime-gpu with CUDAExecutionProvider and a GPU")
def test_cuda_resident_path_with_cuda_graph(models, tmp_path):
    prof = load_profile(_profile(tmp_path / "g.toml", ("CUDAExecutionProvider",), "cuda_graph = true"))
    m = measure_models(models, prof, show_progress=False)
    assert m.settings.cuda_graph and "CUDA graph" in settings_line(m)
    for model in m.models:
        assert model.session.providers[0] == "CUDAExecutionProvider"
        assert [lat.batch_size for lat in model.resident_latency] == [1, 4]
        assert all(lat.p50_ms > 0 for lat in model.resident_latency)
        assert model.memory.gpu_method
        if model.memory.gpu_peak_mb is not None:
            assert model.memory.gpu_peak_mb > 0
