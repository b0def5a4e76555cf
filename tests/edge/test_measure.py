"""Measurement: interleaved A/B timing, provider planning and fallback, memory probe, summaries."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgerobust.errors import ModelLoadError, ProfileError
from edgerobust.edge.runtime.measure import measure_models
from edgerobust.edge.runtime.latency import interleaved_timings, summarize
from edgerobust.edge.runtime.sessions import open_session, plan_providers
from edgerobust.edge.runtime.profiles import load_profile
from edgerobust.edge.runtime.profile_schema import MeasureSettings
from onnx_models import mlp_weights, perturbed, save_mlp, write_profile


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    w = mlp_weights(0)
    return save_mlp(d / "base.onnx", w), save_mlp(d / "deployed.onnx", perturbed(w, 0.1, 1))


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return load_profile(write_profile(tmp_path_factory.mktemp("p") / "fast.toml"))


def test_summarize_known_values():
    s = summarize(np.array([1.0, 2.0, 3.0, 4.0]) / 1000, batch_size=2)
    assert (s.runs, s.p50_ms, s.mean_ms) == (4, pytest.approx(2.5), pytest.approx(2.5))
    assert s.p90_ms == pytest.approx(3.7) and s.p99_ms == pytest.approx(3.97)
    assert s.std_ms == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s.cv == pytest.approx(s.std_ms / 2.5)
    assert s.throughput_per_s == pytest.approx(2 / 0.0025)


def test_rounds_interleave_and_alternate_order():
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    settings = MeasureSettings(warmup_runs=1, rounds=3, runs_per_round=2)
    t = interleaved_timings(runners, settings)
    assert "".join(calls) == "ab" + "aabb" + "bbaa" + "aabb"
    assert {k: len(v) for k, v in t.items()} == {"a": 6, "b": 6}


def test_min_seconds_adds_rounds_up_to_max_rounds():
    runners = {"a": lambda: time.sleep(0.002)}
    t = interleaved_timings(runners, MeasureSettings(warmup_runs=0, rounds=1, runs_per_round=1,
                                                     min_seconds=10.0, max_rounds=4))
    assert len(t["a"]) == 4
    assert np.all(t["a"] >= 0.002)


def test_missing_providers_need_allow_fallback(tmp_path):
    p = load_profile(write_profile(tmp_path / "gpu.toml",
                                   providers=("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                              "CPUExecutionProvider")))
    with pytest.raises(ProfileError) as e:
        plan_providers(p, available=["CPUExecutionProvider"])
    msg = str(e.value)
    assert "TensorrtExecutionProvider, CUDAExecutionProvider" in msg and "`allow_fallback`" in msg
    plan = plan_providers(p, available=["CPUExecutionProvider"], allow_fallback=True)
    assert plan.fallback and plan.missing == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert plan.use == (("CPUExecutionProvider", {}),)
    # Nothing of the profile available at all: the CPU provider is the last resort.
    only_gpu = load_profile(write_profile(tmp_path / "g.toml", providers=("CUDAExecutionProvider",)))
    assert plan_providers(only_gpu, available=["CPUExecutionProvider"], allow_fallback=True).use[0][0] == \
        "CPUExecutionProvider"


def test_engine_cache_path_is_expanded_and_created(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    p = load_profile("jetson-orin-nano")
    plan = plan_providers(p, available=["TensorrtExecutionProvider", "CPUExecutionProvider"], allow_fallback=True)
    opts = dict(plan.use)["TensorrtExecutionProvider"]
    assert opts["trt_engine_cache_path"] == str(tmp_path / ".cache/edgerobust/trt-engines")
    assert Path(opts["trt_engine_cache_path"]).is_dir()
    assert [n for n, _ in plan.use] == ["TensorrtExecutionProvider", "CPUExecutionProvider"]


def test_measure_two_models(models, profile):
    base, dep = models
    r = measure_models({"base": base, "deployed": dep}, profile, show_progress=False)
    runs = profile.measure.rounds * profile.measure.runs_per_round
    assert [m.role for m in r.models] == ["base", "deployed"]
    for m in r.models:
        assert [lat.batch_size for lat in m.latency] == [1, 4]
        assert all(lat.runs == runs and 0 < lat.p50_ms <= lat.p90_ms <= lat.p99_ms for lat in m.latency)
        assert m.size_bytes == Path(m.path).stat().st_size
        assert m.session.providers == ("CPUExecutionProvider",) and not m.session.fallback
        assert m.session.intra_op_threads == 1 and m.session.creation_s > 0
        assert m.memory.method == "VmHWM" and m.memory.batch_size == 4
        assert m.memory.peak_mb > m.memory.before_model_mb > 1
    for s, b, d in zip(r.speedup, r.models[0].latency, r.models[1].latency):
        assert s.p50 == pytest.approx(b.p50_ms / d.p50_ms)
    assert r.host.cores >= 1 and r.host.onnxruntime and "CPUExecutionProvider" in r.host.available_providers


def test_fixed_batch_axis_skips_other_batch_sizes(tmp_path, profile):
    m = save_mlp(tmp_path / "fixed.onnx", mlp_weights(0), input_shape=(1, 1, 8, 8))
    r = measure_models({"model": m}, profile, memory=False, show_progress=False)
    assert r.skipped_batch_sizes == (4,)
    assert [lat.batch_size for lat in r.models[0].latency] == [1]
    assert r.models[0].memory is None and r.speedup == ()


def test_corrupt_model_is_a_clear_error(tmp_path, profile):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load the deployed model"):
        open_session(bad, "deployed", profile)
    with pytest.raises(ModelLoadError, match="does not exist"):
        open_session(tmp_path / "none.onnx", "deployed", profile)


def test_memprobe_child_is_torch_free(models):
    spec = {"model": str(models[0]), "providers": [["CPUExecutionProvider", {}]], "intra_op_threads": 1,
            "inter_op_threads": 1, "graph_optimization": "ORT_ENABLE_ALL", "input_name": "input",
            "input_shape": [2, 1, 8, 8], "input_dtype": "float32", "runs": 2}
    out = subprocess.run([sys.executable, "-m", "edgerobust.edge.runtime._memprobe", json.dumps(spec)],
                         capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["torch_loaded"] is False and res["peak_kib"] > res["before_model_kib"] > 0


def test_processes_split_the_measurement_and_keep_each_ones_p50(models, tmp_path):
    """measure.processes = 3: three fresh probe processes in turn, their runs pooled, each one's p50 kept."""
    base, dep = models
    p = write_profile(tmp_path / "p3.toml", batch_sizes=(1,))
    p.write_text(p.read_text().replace("[measure]\n", "[measure]\nprocesses = 3\nrounds = 6\n").replace(
        "rounds = 3\n", ""))
    prof = load_profile(p)
    assert prof.measure.processes == 3
    r = measure_models({"base": base, "deployed": dep}, prof, show_progress=False, memory=False)
    for m in r.models:
        lat = m.latency[0]
        assert len(lat.process_p50_ms) == 3 and all(v > 0 for v in lat.process_p50_ms)
        assert lat.runs == 6 * 3  # each process: ceil(6 / 3) rounds of 3 runs
        assert min(lat.process_p50_ms) <= lat.p50_ms <= max(lat.process_p50_ms)
        # the interval covers every process's own p50 (pooled runs hide the process-to-process spread)
        assert lat.p50_ci_low_ms <= min(lat.process_p50_ms) and lat.p50_ci_high_ms >= max(lat.process_p50_ms)
    from edgerobust.edge.runtime.measure import process_speedups

    assert len(process_speedups(r, 1)) == 3
    from edgerobust.edge.render.speed_lines import settings_line

    assert settings_line(r).startswith("Models timed in turn, in 3 fresh processes one after another")
    one = measure_models({"base": base, "deployed": dep}, load_profile(write_profile(tmp_path / "p1.toml")),
                         show_progress=False, memory=False)
    assert one.models[0].latency[0].process_p50_ms == () and process_speedups(one, 1) == ()
    assert settings_line(one).startswith("Models timed in turn, in a fresh process with its sessions sharing")
    # one model: in the probe processes too when the profile asks for several, else alone in this process
    single = measure_models({"model": dep}, prof, show_progress=False, memory=False)
    assert len(single.models[0].latency[0].process_p50_ms) == 3 and single.models[0].session.isolation == "pool"
    assert settings_line(single).startswith("One model, timed in 3 fresh processes one after another (runs pooled):")
    alone = measure_models({"model": dep}, load_profile(tmp_path / "p1.toml"), show_progress=False, memory=False)
    assert alone.models[0].latency[0].process_p50_ms == () and alone.models[0].session.isolation == "alone"
    assert settings_line(alone).startswith("One model, timed alone in this process")


def test_processes_must_be_a_positive_integer(tmp_path):
    p = write_profile(tmp_path / "bad.toml")
    p.write_text(p.read_text().replace("[measure]\n", "[measure]\nprocesses = 0\n"))
    with pytest.raises(ProfileError, match="measure.processes"):
        load_profile(p)


def test_disagreeing_processes_are_said_in_the_warnings_and_the_headline_numbers(models, profile):
    import dataclasses

    from edgerobust.edge.render.speed_lines import noise_warnings

    base, dep = models
    r = measure_models({"base": base, "deployed": dep}, profile, show_progress=False, memory=False)

    def per(m, values):
        lat = (dataclasses.replace(m.latency[0], process_p50_ms=values),) + m.latency[1:]
        return dataclasses.replace(m, latency=lat)

    b, d = r.models
    split = dataclasses.replace(r, models=(per(b, (1.0, 1.0, 1.0)), per(d, (0.1, 0.1, 0.2))))
    text = " ".join(noise_warnings(split))
    assert "the batch-1 speedup was 10.00×, 10.00×, 5.00× in the 3 fresh probe processes" in text
    agree = dataclasses.replace(r, models=(per(b, (1.0, 1.0, 1.05)), per(d, (0.1, 0.1, 0.1))))
    assert "probe processes" not in " ".join(noise_warnings(agree))
    # both models slower in one process: the speedup holds, nothing to say about it
    both = dataclasses.replace(r, models=(per(b, (1.0, 1.0, 2.0)), per(d, (0.1, 0.1, 0.2))))
    assert "probe processes" not in " ".join(noise_warnings(both))
    # one model alone (`edgerobust profile model.onnx`): its own p50 per process is what is said
    one = dataclasses.replace(r, models=(per(d, (0.1, 0.1, 0.2)),), speedup=())
    assert "the deployed model's p50 at batch 1 differed between the 3 probe processes (0.1, 0.1, 0.2 ms)" in \
        " ".join(noise_warnings(one))
