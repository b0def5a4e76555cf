"""What another runtime was measured to gain over onnxruntime's CPU provider, per CPU instruction set.

An audit on the CPU provider reads :data:`GAINS` for this host's ISA class (:func:`isa_class`) and,
where another runtime was measured faster on a host of that class, says by how much, on which model
and host, and the command to get it: an installed runtime is named with ``runtimes``, an installable
one with its pip extra. Every entry is a measurement (benchmarks/peers.py: each row alone in a fresh
process, batch 1, median over rounds), never an estimate; a class without an entry says nothing.
Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gain:
    """``runtime`` ran the deployed model ``ratio`` times as fast as the CPU provider (p50, batch 1)."""

    isa: str  # amx, vnni, avx2 (isa_class)
    runtime: str  # a name of edgerobust.edge.runtimes.RUNTIMES
    provider: str  # its execution provider
    profile: str  # the shipped profile a bundle is built for it with
    what: str  # the runtime as a person names it
    extra: str  # the pip extra that installs it
    ratio: float
    low: float  # the ratio's min and max over the rounds
    high: float
    model: str
    host: str
    measured: str  # date and tool


GAINS: tuple[Gain, ...] = (
    # docs/benchmarks.md, "One table per ISA", VNNI: 12 rounds, each row alone in a fresh process.
    Gain(isa="vnni", runtime="openvino-cpu", provider="OpenVINOExecutionProvider", profile="laptop-openvino-cpu",
         what="OpenVINO on the CPU", extra="openvino", ratio=1.24, low=1.00, high=1.32,
         model="resnet18 sparsity 0.5 + int8 at 224 px, batch 1, 2 threads", host="AMD EPYC, 2 cores, AVX-512 VNNI",
         measured="2026-12-06, benchmarks/peers.py"),
    # docs/benchmarks.md, "One table per ISA", AMX: 12 rounds over two runs, each row alone in a fresh process.
    # onnxruntime's CPU provider runs int8 convolutions on AVX-512 VNNI there, not on the AMX tiles; OpenVINO does.
    Gain(isa="amx", runtime="openvino-cpu", provider="OpenVINOExecutionProvider", profile="laptop-openvino-cpu",
         what="OpenVINO on the CPU", extra="openvino", ratio=2.03, low=1.58, high=2.33,
         model="resnet18 sparsity 0.5 + int8 at 224 px, batch 1, 2 threads", host="Intel Xeon, 2 cores, AMX",
         measured="2026-12-07, benchmarks/peers.py"),
)


def isa_class(isa: tuple[str, ...]) -> str:
    """amx (AMX int8 tiles), vnni (AVX-512 or AVX VNNI), avx2, or other: what decides int8 kernel speed."""
    flags = set(isa)
    if "amx_int8" in flags:
        return "amx"
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    return "avx2" if "avx2" in flags else "other"


def known_gain(isa: tuple[str, ...], providers: tuple[str, ...]) -> Gain | None:
    """The largest measured gain over the CPU provider for this ISA class, of a runtime the audit did not
    use (``providers``: what the deployed model ran on); None without one."""
    cls = isa_class(isa)
    found = [g for g in GAINS if g.isa == cls and g.ratio > 1 and g.provider not in providers]
    return max(found, key=lambda g: g.ratio) if found else None


def runtime_hint(measurement) -> str | None:
    """For a MeasureReport whose deployed model ran on onnxruntime's CPU provider: the runtime measured
    faster on a host of this ISA class, by how much, and how to get it (installed here or not); else None."""
    dep = measurement.model("deployed") or measurement.model("model")
    if dep is None or measurement.fallback or tuple(dep.session.providers[:1]) != ("CPUExecutionProvider",):
        return None
    host = measurement.host
    g = known_gain(tuple(host.isa), tuple(dep.session.providers))
    if g is None:
        return None
    text = (f"Faster on this CPU class ({g.isa}), by measurement on a host of it: {g.model}, built for "
            f"{g.profile}, ran {g.ratio:.2f}x [{g.low:.2f}-{g.high:.2f}] as fast on {g.what} as the laptop-cpu "
            f"build on onnxruntime's CPU provider ({g.host}; {g.measured}). ")
    if g.provider in host.available_providers:
        return text + (f"It is installed here: audit with `runtimes` all to time this bundle on it, and compress "
                       f"with `target` {g.profile} to build for it.")
    return text + (f"Install it in a separate environment (its onnxruntime wheel replaces the CPU build): "
                   f"pip install 'edgerobust[{g.extra}]'; then compress with `target` {g.profile} and audit with "
                   f"`runtimes` all to measure both here.")
