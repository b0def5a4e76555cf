"""The machine numbers are measured on: CPU, the instruction sets that decide int8 speed, and how
busy the rest of the machine was while we measured.

Torch-free; onnxruntime only for its version and providers.
"""
from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from edgerobust.errors import require

# The CPU features that pick onnxruntime's int8 and fp32 kernels: x86 AVX2 / AVX-512 / VNNI
# (u8s8 dot products in one instruction) / AMX, Arm NEON dot product and i8mm.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16",
             "asimd", "asimddp", "i8mm", "sve")


@dataclass(frozen=True)
class HostInfo:
    """The machine the numbers were measured on."""

    cpu: str
    cores: int | None
    machine: str
    os: str
    python: str
    onnxruntime: str
    available_providers: tuple[str, ...]
    device_model: str | None
    l4t_release: str | None
    isa: tuple[str, ...] = ()


def first_line(path: str) -> str | None:
    """The first line of a small system file (NULs stripped), or None."""
    try:
        text = Path(path).read_bytes().decode("utf-8", "replace").strip("\x00").strip()
    except OSError:
        return None
    return text.splitlines()[0] if text else None


def cpuinfo() -> str:
    """The text of /proc/cpuinfo; "" where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpu_model(text: str) -> str:
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_isa(text: str | None = None) -> tuple[str, ...]:
    """The ISA_FLAGS this CPU reports (Linux ``flags`` / ``Features`` lines), in ISA_FLAGS order."""
    text = cpuinfo() if text is None else text
    found: set[str] = set()
    for line in text.splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            found.update(line.split(":", 1)[1].split())
    return tuple(f for f in ISA_FLAGS if f in found)


def host_info() -> HostInfo:
    rt = require("onnxruntime", extra="cpu")
    text = cpuinfo()
    return HostInfo(cpu=_cpu_model(text), cores=os.cpu_count(), machine=platform.machine(),
                    os=platform.platform(), python=platform.python_version(), onnxruntime=rt.__version__,
                    available_providers=tuple(rt.get_available_providers()),
                    device_model=first_line("/proc/device-tree/model"),
                    l4t_release=first_line("/etc/nv_tegra_release"), isa=cpu_isa(text))


class OtherLoad:
    """The share of all cores that other processes used between start() and stop() (Linux only).

    Busy time from /proc/stat minus this process's own CPU time (and its waited-for children's),
    over cores x wall time: 0.5
    on a 2-core host means another process took a whole core while we measured.
    """

    def __init__(self) -> None:
        self._t0 = self._busy0 = self._own0 = None

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        """This process's CPU time and its finished children's (e.g. the latency probe's)."""
        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                      resource.getrusage(resource.RUSAGE_CHILDREN)))

    def start(self) -> "OtherLoad":
        self._t0, self._busy0, self._own0 = time.perf_counter(), self._busy(), self._own()
        return self

    def stop(self) -> float | None:
        busy = self._busy()
        if busy is None or self._busy0 is None:
            return None
        wall = time.perf_counter() - self._t0
        other = (busy - self._busy0) - (self._own() - self._own0)
        return round(min(max(other / ((os.cpu_count() or 1) * wall), 0.0), 1.0), 3) if wall > 0 else None
