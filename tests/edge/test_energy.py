"""Energy per inference from the device's counters: RAPL and INA3221 parsed from fake sysfs trees, tegrastats
lines, and a host without counters giving the reason instead of an exception."""
from pathlib import Path

import pytest

from edgerobust.edge.render.estimate_lines import energy_lines
from edgerobust.edge.runtime.energy import (EnergyReport, Rapl, find_meter, integrate, measure_energy,
                                              parse_tegrastats)
from onnx_models import mlp_weights, save_mlp, write_profile

MAX_UJ = 262143328850


def rapl_tree(root: Path, energy_uj: int, packages: int = 1) -> list[Path]:
    """powercap with ``packages`` package domains (and a core sub-domain that must not be added)."""
    out = []
    for n in range(packages):
        d = root / "sys/class/powercap" / f"intel-rapl:{n}"
        d.mkdir(parents=True)
        (d / "name").write_text(f"package-{n}\n")
        (d / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
        (d / "energy_uj").write_text(f"{energy_uj}\n")
        sub = root / "sys/class/powercap" / f"intel-rapl:{n}:0"
        sub.mkdir()
        (sub / "name").write_text("core\n")
        (sub / "energy_uj").write_text("5\n")
        out.append(d)
    return out


def test_rapl_counters_wrap_around_once(tmp_path):
    (d,) = rapl_tree(tmp_path, MAX_UJ - 100)
    meter, why = find_meter(tmp_path)
    assert isinstance(meter, Rapl) and why == "" and meter.domain == "package-0"
    before = meter.counters()
    (d / "energy_uj").write_text("50\n")  # the counter wrapped: 100 µJ to the top, then 50
    assert meter.joules(before, meter.counters()) == pytest.approx(150e-6)
    (d / "energy_uj").write_text("2050\n")
    assert meter.joules([50], meter.counters()) == pytest.approx(2000e-6)


def test_rapl_sums_packages_not_subdomains(tmp_path):
    rapl_tree(tmp_path, 1000, packages=2)
    meter, _ = find_meter(tmp_path)
    assert meter.domain == "package-0+package-1"
    assert meter.joules([1000, 1000], [4000, 3000]) == pytest.approx(5000e-6)


def test_energy_per_inference_from_a_counter_that_moves_with_the_runs(tmp_path):
    (d,) = rapl_tree(tmp_path, MAX_UJ - 2500)  # wraps during the runs

    def run(per_run_uj=1000):
        now = int((d / "energy_uj").read_text())
        (d / "energy_uj").write_text(f"{(now + per_run_uj) % MAX_UJ}\n")

    rep = measure_energy({"base": run, "deployed": lambda: run(250)}, batch_size=1, seconds=0.02, root=tmp_path)
    assert rep.available and rep.source == "rapl" and rep.reason is None
    assert rep.of("base").joules_per_inference == pytest.approx(1000e-6)
    assert rep.of("deployed").joules_per_inference == pytest.approx(250e-6)
    assert rep.of("base").runs >= 10 and rep.of("base").idle_watts == pytest.approx(0.0)
    line = energy_lines(type("M", (), {"energy": rep})())[0]
    assert "rapl" in line and "base 0.001 J/inference" in line and "deployed 0.00025 J/inference" in line


def test_ina3221_hwmon_input_rail(tmp_path):
    """JetPack 5/6: in<N>_input mV x curr<N>_input mA; the input rail VDD_IN is the module's power."""
    d = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    d.mkdir(parents=True)
    for n, (label, mv, ma) in enumerate((("VDD_IN", 5000, 1000), ("VDD_CPU_GPU_CV", 5000, 200)), start=1):
        (d / f"in{n}_label").write_text(label + "\n")
        (d / f"in{n}_input").write_text(f"{mv}\n")
        (d / f"curr{n}_input").write_text(f"{ma}\n")
    meter, _ = find_meter(tmp_path)
    assert meter.source == "ina3221" and meter.domain == "VDD_IN" and meter.power_mw() == pytest.approx(5000)
    rep = measure_energy({"model": lambda: None}, seconds=0.1, root=tmp_path)
    r = rep.of("model")
    assert rep.available and r.joules / r.seconds == pytest.approx(5.0, rel=0.05)  # 5 W for the run's duration
    assert r.idle_watts == pytest.approx(5.0, rel=0.05)


def test_ina3221_iio_rails_summed_without_an_input_rail(tmp_path):
    """JetPack 4: in_power<N>_input in mW with rail_name_<N>; no input rail: every rail, and said so."""
    d = tmp_path / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    d.mkdir(parents=True)
    for n, (name, mw) in enumerate((("VDD_GPU", 1200), ("VDD_CPU", 800))):
        (d / f"rail_name_{n}").write_text(name + "\n")
        (d / f"in_power{n}_input").write_text(f"{mw}\n")
    meter, _ = find_meter(tmp_path)
    assert meter.domain == "sum of VDD_GPU+VDD_CPU" and meter.power_mw() == pytest.approx(2000)


def test_no_counters_is_absent_with_the_reason(tmp_path):
    rep = measure_energy({"model": lambda: None}, root=tmp_path)
    assert rep == EnergyReport(available=False, reason=rep.reason)
    assert "/sys/class/powercap is absent" in rep.reason and "not a Jetson" in rep.reason
    assert energy_lines(type("M", (), {"energy": rep})()) == [f"energy: absent ({rep.reason})"]


def test_tegrastats_line_and_integration():
    line = ("RAM 2034/7620MB (lfb 2x4MB) CPU [3%@729,1%@729] GR3D_FREQ 0% cpu@47.5C VDD_IN 4536mW/4536mW "
            "VDD_CPU_GPU_CV 802mW/802mW VDD_SOC 1402mW/1402mW")
    assert parse_tegrastats(line) == {"VDD_IN": 4536.0, "VDD_CPU_GPU_CV": 802.0, "VDD_SOC": 1402.0}
    assert integrate([(0.0, 1000.0), (1.0, 3000.0), (2.0, 3000.0)]) == pytest.approx(5000.0)


def test_measure_reports_energy_or_why_not(tmp_path):
    """On this host, whatever it has: a measurement carries energy, or the reason it has none; never an error."""
    from edgerobust.edge.runtime.measure import measure_models

    model = save_mlp(tmp_path / "m.onnx", mlp_weights(0))
    profile = write_profile(tmp_path / "p.toml", batch_sizes=(1,), measure='isolation = "park"')
    from edgerobust.edge.runtime.profiles import load_profile

    rep = measure_models({"model": model}, load_profile(profile), memory=False, show_progress=False).energy
    assert rep is not None and (rep.available or rep.reason)
    if not Path("/sys/class/powercap").is_dir():
        assert not rep.available and "powercap" in rep.reason
