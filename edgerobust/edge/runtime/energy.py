"""Energy per inference, read from the device's own counters where it has them; absent, with the reason, where not.

Sources, tried in this order under a root folder (``/`` on a device; a fake tree in tests):

* **RAPL** (x86, Linux powercap): ``sys/class/powercap/intel-rapl:N/energy_uj``, one cumulative counter
  per CPU package (AMD Zen exposes the same files). Each package's counter wraps at its
  ``max_energy_range_uj``; a reading below the last one is read as one wrap. Sub-domains
  (``intel-rapl:N:M``: cores, DRAM) are inside the package's figure and are not added again.
* **INA3221** (NVIDIA Jetson): the board's power monitor, an instantaneous power per rail. JetPack 4 names
  it ``sys/bus/i2c/drivers/ina3221x/*/iio:device*/in_power<N>_input`` (mW, with ``rail_name_<N>``), JetPack 5
  and 6 ``sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in<N>_input`` (mV) and ``curr<N>_input`` (mA) with
  ``in<N>_label``. The input rail (VDD_IN, POM_5V_IN) is the whole module; without one, every rail is
  summed and said so. A thread samples it every 20 ms while the model runs, and the samples are integrated.
* **tegrastats** (Jetson, when the sysfs files cannot be read): its ``VDD_IN 4536mW/4536mW`` fields, parsed
  by :func:`parse_tegrastats` from tegrastats sampling every 20 ms.

Energy is never estimated: with no counter, :func:`find_meter` says why (many VMs expose no powercap; the
counters may be root-only) and the report shows "absent" with that reason. The figures are the whole
package or module, idle power and other processes included; the idle power read just before is
recorded beside them. Torch-free, numpy-free.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "VDD_5V_IN")
SAMPLE_S = 0.02


@dataclass(frozen=True)
class EnergyReading:
    """One model's energy over ``runs`` inferences at ``batch_size``: ``joules`` over ``seconds``."""

    role: str
    batch_size: int
    runs: int
    seconds: float
    joules: float
    joules_per_inference: float
    idle_watts: float | None = None


@dataclass(frozen=True)
class EnergyReport:
    """Energy per inference of every model, or why there is none (``available`` False, ``reason``)."""

    available: bool
    source: str | None = None
    domain: str | None = None
    reason: str | None = None
    models: tuple[EnergyReading, ...] = ()
    note: str = "whole package or module, idle and other processes included"

    def of(self, role: str) -> EnergyReading | None:
        return next((m for m in self.models if m.role == role), None)


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii", errors="replace").strip()


# =============================================================================================
# RAPL


class Rapl:
    """Cumulative package energy counters (µJ), read together; wrap-around handled per package."""

    source = "rapl"

    def __init__(self, domains: list[Path]):
        self.domains = domains
        self.max = [int(_read(d / "max_energy_range_uj")) if (d / "max_energy_range_uj").exists() else 0
                    for d in domains]
        self.domain = "+".join(_read(d / "name") if (d / "name").exists() else d.name for d in domains)

    def counters(self) -> list[int]:
        return [int(_read(d / "energy_uj")) for d in self.domains]

    def joules(self, before: list[int], after: list[int]) -> float:
        """Energy between two readings, each package's wrap-around undone once."""
        total = 0
        for b, a, m in zip(before, after, self.max):
            total += a - b if a >= b else a + m - b
        return total / 1e6

    def measure(self, work: Callable[[], int]) -> tuple[float, float, int]:
        """(joules, seconds, runs) of ``work()``, which returns how many inferences it ran."""
        before, t0 = self.counters(), time.perf_counter()
        runs = work()
        after, t1 = self.counters(), time.perf_counter()
        return self.joules(before, after), t1 - t0, runs


def find_rapl(root: Path) -> tuple[Rapl | None, str]:
    base = root / "sys/class/powercap"
    if not base.is_dir():
        return None, "no powercap in sysfs (/sys/class/powercap is absent: a VM, a non-x86 CPU, or a kernel without RAPL)"
    domains = sorted(d for d in base.iterdir() if re.fullmatch(r"intel-rapl:\d+", d.name) and (d / "energy_uj").exists())
    if not domains:
        return None, "powercap has no RAPL package domain (intel-rapl:N with energy_uj)"
    try:
        meter = Rapl(domains)
        meter.counters()
    except PermissionError:
        return None, ("the RAPL counters are readable by root only (energy_uj is mode 0400 since Linux 5.10): "
                      "run as root, or make them readable")
    except (OSError, ValueError) as exc:
        return None, f"the RAPL counters cannot be read: {exc}"
    return meter, ""


# =============================================================================================
# Jetson: INA3221 through sysfs, or tegrastats


@dataclass
class Rail:
    name: str
    read_mw: Callable[[], float]


def _ina_iio(root: Path) -> list[Rail]:
    rails = []
    for dev in sorted(root.glob("sys/bus/i2c/drivers/ina3221x/*/iio:device*")):
        for f in sorted(dev.glob("in_power*_input")):
            n = f.name[len("in_power"):-len("_input")]
            label = dev / f"rail_name_{n}"
            rails.append(Rail(_read(label) if label.exists() else f"rail{n}", lambda f=f: float(_read(f))))
    return rails


def _ina_hwmon(root: Path) -> list[Rail]:
    rails = []
    for dev in sorted(root.glob("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")):
        for f in sorted(dev.glob("in*_label")):
            n = f.name[2:-len("_label")]
            volt, curr = dev / f"in{n}_input", dev / f"curr{n}_input"
            if volt.exists() and curr.exists():
                rails.append(Rail(_read(f), lambda v=volt, c=curr: float(_read(v)) * float(_read(c)) / 1000.0))
    return rails


class PowerSampler:
    """Instantaneous power (mW) of one rail, or the sum of all, sampled in a thread and integrated."""

    def __init__(self, source: str, rails: list[Rail]):
        self.source = source
        inputs = [r for r in rails if r.name.upper() in INPUT_RAILS]
        self.rails = inputs[:1] or rails
        self.domain = self.rails[0].name if inputs else "sum of " + "+".join(r.name for r in rails)

    def power_mw(self) -> float:
        return sum(r.read_mw() for r in self.rails)

    def measure(self, work: Callable[[], int]) -> tuple[float, float, int]:
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((time.perf_counter(), self.power_mw()))
                stop.wait(SAMPLE_S)

        thread = threading.Thread(target=sample, daemon=True)
        t0 = time.perf_counter()
        thread.start()
        runs = work()
        stop.set()
        thread.join()
        t1 = time.perf_counter()
        samples.append((t1, self.power_mw()))
        return integrate(samples) / 1000.0, t1 - t0, runs


def integrate(samples: list[tuple[float, float]]) -> float:
    """Trapezoid integral of (time s, power) samples: energy in power × seconds."""
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(samples, samples[1:]))


_TEGRA = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+)mW/(\d+)mW")


def parse_tegrastats(line: str) -> dict[str, float]:
    """Rails and their current power (mW) in one tegrastats line: ``VDD_IN 4536mW/4536mW`` -> {VDD_IN: 4536}."""
    return {m.group(1): float(m.group(2)) for m in _TEGRA.finditer(line)}


def _long(name: str) -> str:
    """A long option of another program (tegrastats'), not one of edgerobust's flags."""
    return "--" + name


class Tegrastats:
    """Power from tegrastats' lines (one every 20 ms), integrated over the work."""

    source = "tegrastats"

    def __init__(self, exe: str):
        self.exe = exe
        self.domain = "VDD_IN"

    def measure(self, work: Callable[[], int]) -> tuple[float, float, int]:
        proc = subprocess.Popen([self.exe, _long("interval"), str(int(SAMPLE_S * 1000))], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        samples: list[tuple[float, float]] = []

        def read():
            for line in proc.stdout:
                rails = parse_tegrastats(line)
                rail = next((r for r in INPUT_RAILS if r in rails), None)
                if rail:
                    self.domain = rail
                    samples.append((time.perf_counter(), rails[rail]))

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        t0 = time.perf_counter()
        runs = work()
        t1 = time.perf_counter()
        proc.terminate()
        proc.wait(timeout=5)
        thread.join(timeout=5)
        inside = [s for s in samples if t0 <= s[0] <= t1 + SAMPLE_S]
        if len(inside) < 2:
            raise OSError("tegrastats gave fewer than two readings while the model ran")
        mean_mw = sum(p for _, p in inside) / len(inside)
        return mean_mw * (t1 - t0) / 1000.0, t1 - t0, runs


def find_jetson(root: Path) -> tuple[object | None, str]:
    for source, rails in (("ina3221", _ina_hwmon(root)), ("ina3221", _ina_iio(root))):
        if rails:
            try:
                meter = PowerSampler(source, rails)
                meter.power_mw()
                return meter, ""
            except PermissionError:
                return None, "the INA3221 power monitor is readable by root only: run as root"
            except (OSError, ValueError) as exc:
                return None, f"the INA3221 power monitor cannot be read: {exc}"
    exe = shutil.which("tegrastats") if root == Path("/") else None
    if exe:
        return Tegrastats(exe), ""
    return None, "no INA3221 power monitor (not a Jetson)"


# =============================================================================================


def find_meter(root: str | os.PathLike = "/") -> tuple[object | None, str]:
    """The first energy source this host has under ``root``, or None and why there is none."""
    root = Path(root)
    meter, why_rapl = find_rapl(root)
    if meter is not None:
        return meter, ""
    meter, why_jetson = find_jetson(root)
    if meter is not None:
        return meter, ""
    return None, f"{why_rapl}; {why_jetson}"


@dataclass
class _Loop:
    """Runs ``run`` back to back for ``seconds`` (``min_runs`` at least); returns the count."""

    run: Callable[[], object]
    seconds: float
    min_runs: int = 10

    def __call__(self) -> int:
        n, t0 = 0, time.perf_counter()
        while n < self.min_runs or time.perf_counter() - t0 < self.seconds:
            self.run()
            n += 1
        return n


def measure_energy(runners: dict[str, Callable[[], object]], batch_size: int = 1, seconds: float = 2.0,
                   root: str | os.PathLike = "/") -> EnergyReport:
    """Joules per inference of each runner (role -> one inference at ``batch_size``), back to back for
    ``seconds`` each, after the idle power over 0.5 s; absent with the reason where no counter exists."""
    meter, why = find_meter(root)
    if meter is None:
        return EnergyReport(available=False, reason=why)
    readings = []
    try:
        idle_j, idle_s, _ = meter.measure(lambda: time.sleep(0.5) or 0)
        idle_w = idle_j / idle_s if idle_s > 0 else None
        for role, run in runners.items():
            run()  # warm
            joules, secs, runs = meter.measure(_Loop(run, seconds))
            readings.append(EnergyReading(role=role, batch_size=batch_size, runs=runs, seconds=secs, joules=joules,
                                          joules_per_inference=joules / (runs * batch_size), idle_watts=idle_w))
    except (OSError, ValueError) as exc:
        return EnergyReport(available=False, source=meter.source, reason=f"the {meter.source} counters failed while "
                                                                          f"measuring: {exc}")
    return EnergyReport(available=True, source=meter.source, domain=meter.domain, models=tuple(readings))
