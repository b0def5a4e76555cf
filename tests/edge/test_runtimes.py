"""Every runtime installed here, timed (issue 31): `audit --runtimes` and `profile --runtimes` on a real
bundle (CI has onnxruntime's CPU provider only: one runtime), runtime names checked before anything is
measured, the answers of two runtimes compared, the fastest named only when it is clearly ahead, compare
reading a runtimes folder, and the hint an audit on the CPU provider gives from a measured gain."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from edgerobust.cli import app
from edgerobust.edge import runtimes as rt
from edgerobust.edge.compare import CompareConfig, compare
from edgerobust.edge.files.predictions import CORRUPTION, Predictions, SetPredictions
from edgerobust.edge.render.runtimes_render import fastest_line, table
from edgerobust.edge.runtime import gains
from edgerobust.edge.runtime import profiles as profiles_mod
from edgerobust.errors import UsageError
from onnx_models import QUICK_MEASURE

runner = CliRunner()
CPU_ONLY = ("CPUExecutionProvider",)
HAS_NVIDIA = Path("/dev/nvidia0").exists() or Path("/etc/nv_tegra_release").exists()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def quick(monkeypatch):
    """Every profile a runtime is audited with measures with QUICK_MEASURE (the figures are not the test)."""
    load = profiles_mod.load_profile

    def fast(name):
        p = load(name)
        return dataclasses.replace(p, measure=dataclasses.replace(p.measure, **QUICK_MEASURE))

    monkeypatch.setattr(profiles_mod, "load_profile", fast)


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    return shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("rt") / "tiny")


# ---------------------------------------------------------------------------------------------
# names checked before anything is measured


def test_all_is_every_runtime_this_host_runs_cpu_first():
    assert rt.parse_runtimes("all", CPU_ONLY) == ("cpu",)
    assert rt.parse_runtimes(" CPU , cpu ", CPU_ONLY) == ("cpu",)  # case and repeats
    if not HAS_NVIDIA:  # CUDA offered by the wheel but no GPU: not in all
        assert rt.parse_runtimes("all", CPU_ONLY + ("CUDAExecutionProvider",)) == ("cpu",)


@pytest.mark.parametrize("text, available, words", [
    ("metal", CPU_ONLY, ["Unknown runtime 'metal'", "Known: cpu, openvino-cpu"]),
    ("cpu,openvino", CPU_ONLY, ["The runtime openvino-cpu cannot run on this host",
                                "does not offer OpenVINOExecutionProvider", "onnxruntime-openvino"]),
    ("", CPU_ONLY, ["`runtimes` is empty"]),
])
def test_a_bad_name_is_one_usage_error(text, available, words):
    with pytest.raises(UsageError) as e:
        rt.parse_runtimes(text, available)
    said = flat(" ".join(filter(None, (e.value.what, e.value.why, e.value.fix))))
    assert all(w in said for w in words), said


@pytest.mark.skipif(HAS_NVIDIA, reason="this host has an NVIDIA GPU")
def test_a_runtime_whose_device_is_absent_is_refused():
    with pytest.raises(UsageError, match="cuda cannot run on this host") as e:
        rt.parse_runtimes("cuda", CPU_ONLY + ("CUDAExecutionProvider",))
    assert "no NVIDIA GPU device" in e.value.what


@pytest.mark.parametrize("args, words", [
    (["--runtimes", "metal"], ["Unknown runtime 'metal' in --runtimes"]),
    (["--runtimes", "all", "--estimate", "x.json"], ["--runtimes and --estimate do not go together"]),
    (["--runtimes", "all", "--fail-on-budget"], ["--runtimes and --fail-on-budget"]),
    (["--runtimes", "all", "--profile", "jetson-orin-nano"], ["runs on TensorrtExecutionProvider, not the CPU"]),
])
def test_the_cli_refuses_before_measuring(bundle, tmp_path, args, words):
    out = tmp_path / "rt"
    r = runner.invoke(app, ["audit", str(bundle / "model.onnx"), "--out", str(out), *args])
    assert r.exit_code == 2, r.output
    assert all(w in flat(r.stderr) for w in words), r.stderr
    assert "Traceback" not in r.output and not out.exists()


@pytest.mark.skipif("OpenVINOExecutionProvider" in ort.get_available_providers(), reason="OpenVINO installed")
def test_the_cli_names_a_runtime_that_is_not_installed(bundle, tmp_path):
    r = runner.invoke(app, ["profile", str(bundle / "model.onnx"), "--runtimes", "openvino-cpu"])
    assert r.exit_code == 2 and "does not offer OpenVINOExecutionProvider" in flat(r.stderr), r.output


# ---------------------------------------------------------------------------------------------
# real runs


def test_audit_runtimes_all_writes_one_report_per_runtime_and_compare_reads_it(bundle, tmp_path, quick):
    root = tmp_path / "rt"
    r = runner.invoke(app, ["-q", "audit", str(bundle / "model.onnx"), "--runtimes", "all", "--out", str(root),
                            "--no-memory", "--query-attack", "none", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["_type"] == rt.RUNTIMES_TYPE and data == json.loads((root / rt.RUNTIMES_FILE).read_text())
    rows = {row["runtime"]: row for row in data["_data"]["rows"]}
    available = ort.get_available_providers()
    assert "cpu" in rows and set(rows) == set(rt.parse_runtimes("all", available))
    cpu = rows["cpu"]
    assert cpu["error"] is None and cpu["profile"] == "laptop-cpu" and cpu["providers"][0] == "CPUExecutionProvider"
    report = json.loads((root / "cpu" / "report.json").read_text())["_data"]
    lat = next(x for x in report["measurement"]["models"] if x["role"] == "deployed")["latency"]
    assert cpu["deployed_p50_ms"] == next(x["p50_ms"] for x in lat if x["batch_size"] == 1)
    clean = next(s for s in report["sets"] if s["kind"] == "clean")
    assert cpu["clean"] == clean["deployed"]["accuracy"]["value"] and cpu["agreement"] is None
    assert data["_data"]["fastest"] in rows and data["_data"]["reference"] == "cpu"
    md = (root / "runtimes.md").read_text()
    assert "| cpu | CPU |" in md and "Fastest here:" in md

    # compare takes the folder as its audits: here one runtime beside a plain audit of the same bundle
    other = tmp_path / "plain"
    r = runner.invoke(app, ["-q", "audit", str(bundle / "model.onnx"), "--profile", "laptop-cpu-1thread",
                            "--out", str(other), "--no-memory", "--query-attack", "none"])
    assert r.exit_code == 0, r.output
    c = compare(CompareConfig((root, other)))
    assert [d.profile for d in c.devices] == [rows[n]["profile"] for n in rows] + ["laptop-cpu-1thread"]


def test_profile_runtimes_on_a_lone_model_times_it_without_answers(bundle, tmp_path, quick):
    lone = tmp_path / "lone.onnx"
    shutil.copy(bundle / "model.onnx", lone)
    r = runner.invoke(app, ["profile", str(lone), "--runtimes", "cpu", "--no-memory"])
    assert r.exit_code == 0, r.output
    text = flat(r.stdout)
    assert "Runtimes on this host" in text and "Fastest here: cpu" in text
    assert "no sets were replayed (a lone model): answers were not compared" in text


# ---------------------------------------------------------------------------------------------
# answers compared, the fastest named


def _preds(answers: dict[str, np.ndarray], y: np.ndarray, corrupt: tuple[str, ...] = ()) -> Predictions:
    sets = [SetPredictions(name=n, source=CORRUPTION if n in corrupt else "clean", y=y, idx=np.arange(len(y)),
                           pred={"base": y.copy(), "deployed": a}, margin={"base": np.ones(len(y)),
                                                                            "deployed": np.ones(len(y))})
            for n, a in answers.items()]
    return Predictions(tuple(sets))


def test_agreement_counts_differing_answers_and_keeps_corruption_apart():
    y = np.zeros(50, dtype=np.int64)
    ref = _preds({"clean": y.copy(), "pgd": y.copy(), "noise_s3": y.copy()}, y, corrupt=("noise_s3",))
    moved = y.copy()
    moved[:10] = 1  # ten answers changed, all ten wrong now: McNemar's exact p = 2 * 0.5**10
    other = _preds({"clean": y.copy(), "pgd": moved, "noise_s3": moved[::-1].copy()}, y, corrupt=("noise_s3",))
    a = rt.agreement_with(ref, other)
    assert (a["differ"], a["n"]) == (10, 100) and a["share"] == pytest.approx(0.1)
    assert a["corruption"] == {"differ": 10, "n": 50, "share": 0.2}
    assert a["worst"]["set"] == "pgd" and a["worst"]["p_value"] == pytest.approx(2 * 0.5 ** 10)
    other_rows = _preds({"clean": y[:40].copy()}, y[:40])
    assert rt.agreement_with(ref, other_rows) is None  # no set with the same samples: nothing compared


def _row(name, p50, ci, **kw):
    return rt.RuntimeRow(runtime=name, profile=name, folder=None, providers=("X",), deployed_p50_ms=p50,
                         deployed_ci_ms=ci, precision="int8", **kw)


def test_the_fastest_is_named_and_hedged_when_the_intervals_overlap():
    clear = rt.summarize([_row("cpu", 2.0, (1.9, 2.1)), _row("openvino-cpu", 1.0, (0.95, 1.05))], {})
    line = fastest_line(clear)
    assert clear.fastest == "openvino-cpu" and "2.00x the CPU provider's speed (2.000 ms)" in line
    assert "Not clearly ahead" not in line
    close = rt.summarize([_row("cpu", 1.0, (0.9, 1.2)), _row("openvino-cpu", 1.1, (1.0, 1.3))], {})
    assert close.fastest == "cpu" and "Not clearly ahead of openvino-cpu" in fastest_line(close)
    fell = rt.summarize([_row("cpu", 1.0, (0.9, 1.1)), _row("cuda", 0.1, (0.1, 0.1), fallback=True),
                         rt.RuntimeRow("tensorrt", "t", None, error="no engine")], {})
    assert fell.fastest == "cpu"  # a runtime that fell back to another provider is never the fastest
    head, rows = table(fell)
    assert rows[2][-1] == "not measured: no engine" and rows[1][1].endswith("(fallback)")


# ---------------------------------------------------------------------------------------------
# the hint an audit on the CPU provider gives


def _measurement(isa, available, ran=("CPUExecutionProvider",), fallback=False):
    model = SimpleNamespace(session=SimpleNamespace(providers=list(ran)))
    return SimpleNamespace(model=lambda role: model if role == "deployed" else None, fallback=fallback,
                           host=SimpleNamespace(isa=isa, available_providers=available))


def test_the_hint_names_the_measured_gain_for_this_isa_and_how_to_get_it():
    vnni = ("avx2", "avx512f", "avx512_vnni")
    g = next(g for g in gains.GAINS if g.isa == "vnni")
    hint = gains.runtime_hint(_measurement(vnni, CPU_ONLY))
    assert f"{g.ratio:.2f}x [{g.low:.2f}-{g.high:.2f}]" in hint and g.host in hint and g.measured in hint
    assert "pip install 'edgerobust[openvino]'" in hint and "`target` laptop-openvino-cpu" in hint
    installed = gains.runtime_hint(_measurement(vnni, CPU_ONLY + ("OpenVINOExecutionProvider",)))
    assert "It is installed here: audit with `runtimes` all" in installed and "pip install" not in installed
    assert gains.runtime_hint(_measurement(("avx2", "fma"), CPU_ONLY)) is None  # no measurement for AVX2
    assert gains.runtime_hint(_measurement(vnni, CPU_ONLY, ran=("OpenVINOExecutionProvider",))) is None
    assert gains.runtime_hint(_measurement(vnni, CPU_ONLY, fallback=True)) is None
    assert gains.isa_class(("avx2", "avx512_vnni", "amx_int8")) == "amx" and gains.isa_class(()) == "other"
    # an AMX host reads its own class's measurement, never the VNNI one (AMX CPUs have VNNI too)
    amx = gains.known_gain(vnni + ("amx_int8",), ("CPUExecutionProvider",))
    assert amx.isa == "amx" and amx.ratio != g.ratio and "AMX" in amx.host
    assert f"{amx.ratio:.2f}x" in gains.runtime_hint(_measurement(vnni + ("amx_int8",), CPU_ONLY))
