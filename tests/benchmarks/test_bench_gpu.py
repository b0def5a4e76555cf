"""benchmarks/gpu.py at its tiniest sizes: every section runs on the CPU and its tables have their rows."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu  # noqa: E402

CUDA = torch.cuda.is_available()
TINY = gpu.Sizes(image=32, attack_batch=4, attack_n=8, train_batch=4, train_n=8, repeats=2,
                 compress_samples=40, compress_image=32)


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_every_section_on_the_cpu_at_tiny_sizes(tmp_path):
    res, text = gpu.run_all("cpu", True, tmp_path / "work", sz=TINY)
    rows = res["throughput"]["rows"]
    assert [r["case"].split(" (")[0] for r in rows] == [
        "PGD-10 eps 8/255", "fine-tune epoch: standard, augment_shift 1", "fine-tune epoch: standard, augment_shift 0",
        "fine-tune epoch: PGD-AT"]
    for r in rows:
        assert _positive(r["ratio"]["median"]) and _positive(r["tool_ips"]["min"]) and _positive(r["bare_ips"]["min"])
        assert r["case"] in text
    runs = res["compress"]["runs"]
    assert list(runs) == ["cpu"] and _positive(runs["cpu"]["wall_s"]) and runs["cpu"]["adv_sets"] == 3
    assert res["compress"]["gpu_speedup"] is None and not res["compress"]["issue_config"]
    v = res["variants"]
    assert [r["variant"] for r in v["rows"]] == ["base fp32", "pruned fp32", "pruned fp16", "pruned int8"]
    assert sum(r["deployed"] for r in v["rows"]) == 1
    for r in v["rows"]:
        assert sorted(r["by_batch"]) == [1, 64]
        assert all(_positive(b["speedup"]) and _positive(b["p50_ms"]) for b in r["by_batch"].values())
    for title in ("GPU 1. Throughput on cpu", "GPU 2. Wall time of compress", "GPU 3. The audit's variants"):
        assert title in text
    if not CUDA:
        assert "NO GPU on this host: every figure below is a CPU one" in text
        assert "not run: no CUDA GPU on this host" in text
    assert text.count("ISA ") >= 4  # the host line next to every table


def test_resident_latency_is_printed_when_measure_records_it():
    class Stat:
        batch_size, p50_ms = 64, 1.25

    class WithIt:
        resident_latency = (Stat(),)

    assert gpu._resident(object(), 64) == "not measured"
    assert gpu._resident(WithIt(), 64) == "1.250"
    assert gpu._resident(WithIt(), 1) == "not measured"


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU: run on a GPU machine")
def test_section1_on_cuda_at_tiny_sizes(tmp_path):
    res, text = gpu.run_all("cuda", True, tmp_path, only=("1",), sz=TINY)
    assert res["device"].startswith("cuda:")
    assert all(_positive(r["ratio"]["median"]) for r in res["throughput"]["rows"])
    assert torch.cuda.get_device_name(0) in text
