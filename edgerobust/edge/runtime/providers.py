"""What each execution provider needs on a host, and whether the device a profile asks of it is there.

onnxruntime reports a provider as available when its library is in the installed build, not when
the hardware behind it is: the OpenVINO provider is "available" on a machine without an Intel GPU,
and a session asked for ``device_type = "GPU"`` then quietly runs on the CPU provider. So the
check is in two steps: the provider is in this build (else: which package brings it, on which
operating system), and, where the runtime can say, the device it is asked for exists here.

Torch-free: plain data and onnxruntime's own queries.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderNeed:
    """Where a provider comes from: the pip package (and edgerobust extra), and the systems it exists on."""

    package: str
    extra: str | None
    systems: tuple[str, ...]  # platform.system() values with a wheel; () = every system
    where: str  # the hardware, in words
    note: str = ""


_SOLE = ("it provides the `onnxruntime` module itself: uninstall onnxruntime (and onnxruntime-gpu) first, "
         "never install both in one environment")

NEEDS = {
    "OpenVINOExecutionProvider": ProviderNeed(
        "onnxruntime-openvino", "openvino", ("Linux", "Windows"), "Intel CPUs, integrated GPUs and NPUs", _SOLE),
    "CoreMLExecutionProvider": ProviderNeed(
        "onnxruntime", "cpu", ("Darwin",), "Apple silicon and Intel Macs (CPU, GPU, Neural Engine)",
        "the macOS wheels of onnxruntime include the CoreML provider; no other system has it"),
    "QNNExecutionProvider": ProviderNeed(
        "onnxruntime-qnn", "qnn", ("Windows",), "Snapdragon X laptops' Hexagon NPU", _SOLE),
    "DmlExecutionProvider": ProviderNeed(
        "onnxruntime-directml", "directml", ("Windows",), "any DirectX 12 GPU on Windows 10/11", _SOLE),
    "TensorrtExecutionProvider": ProviderNeed(
        "onnxruntime-gpu", "gpu", ("Linux", "Windows"), "NVIDIA GPUs and Jetsons",
        "on a Jetson, NVIDIA's onnxruntime-gpu wheel for your JetPack; TensorRT's libraries must be installed"),
    "CUDAExecutionProvider": ProviderNeed(
        "onnxruntime-gpu", "gpu", ("Linux", "Windows"), "NVIDIA GPUs and Jetsons",
        "on a Jetson, NVIDIA's onnxruntime-gpu wheel for your JetPack"),
}
_SYSTEM_NAMES = {"Darwin": "macOS", "Linux": "Linux", "Windows": "Windows"}


def install_hint(names, system: str | None = None) -> str:
    """What to install (or where to run) for each provider in ``names`` that this host lacks."""
    system = system or platform.system()
    out = []
    for name in names:
        need = NEEDS.get(name)
        if need is None:
            out.append(f"{name}: install an onnxruntime build that includes it (see onnxruntime's "
                       "execution provider pages)")
            continue
        if need.systems and system not in need.systems:
            there = " or ".join(_SYSTEM_NAMES.get(s, s) for s in need.systems)
            out.append(f"{name} exists only on {there} ({need.where}); this host runs "
                       f"{_SYSTEM_NAMES.get(system, system or 'an unknown system')}: run the audit on that device")
            continue
        extra = f" (`pip install 'edgerobust[{need.extra}]'`)" if need.extra else ""
        out.append(f"{name}: install {need.package}{extra}; {need.note}" if need.note
                   else f"{name}: install {need.package}{extra}")
    return "; ".join(out)


def openvino_device(options: dict) -> str:
    """The device an OpenVINO provider's ``device_type`` asks for first: CPU, GPU.1, NPU (AUTO:GPU,CPU -> GPU)."""
    return str(options.get("device_type") or "CPU").split(":", 1)[-1].split(",")[0].strip()


def openvino_devices() -> tuple[str, ...] | None:
    """The devices the OpenVINO provider sees here (e.g. CPU, GPU.0, NPU), or None when it cannot say."""
    try:
        from onnxruntime.capi import _pybind_state as C  # noqa: N812 - onnxruntime's own name

        return tuple(str(d) for d in C.get_available_openvino_device_ids())
    except (ImportError, AttributeError, RuntimeError):
        return None


def device_gap(provider: str, options: dict) -> str | None:
    """Why the device ``options`` ask of ``provider`` is not on this host, or None (there, or unknown).

    Only the OpenVINO provider can be asked today: ``device_type`` names CPU, GPU, GPU.1, NPU, or a
    composite such as AUTO:GPU,CPU (its first device is the one the profile is for).
    """
    if provider != "OpenVINOExecutionProvider":
        return None
    want = str(options.get("device_type") or "CPU")
    devices = openvino_devices()
    if devices is None:
        return None
    first = openvino_device(options)
    base = first.split(".")[0]
    # "GPU" asks for any GPU; "GPU.0" is the first, which OpenVINO names plain "GPU" when there is only one
    if any(d == first or f"{d}.0" == first or (first == base and d.split(".")[0] == base) for d in devices):
        return None
    return (f"OpenVINO sees {', '.join(devices) or 'no device'} on this host, not the {first} that "
            f"device_type = \"{want}\" asks for")


def device_fix(provider: str, options: dict) -> str:
    """What to do about a missing device (device_gap)."""
    first = openvino_device(options).split(".")[0]
    driver = {"GPU": "Intel's GPU driver (the compute runtime, OpenCL/Level Zero)",
              "NPU": "Intel's NPU driver (Core Ultra laptops)"}.get(first, "the device's driver")
    return (f"Run on a laptop with that device and {driver} installed, choose the profile for this host's "
            "device (laptop-openvino-cpu runs OpenVINO on the CPU), or pass `allow_fallback` to measure with "
            "what runs here (the report says so).")


_SHORT = {"TensorrtExecutionProvider": "TensorRT", "DmlExecutionProvider": "DirectML", "CoreMLExecutionProvider": "Core ML"}


def short_name(name: str, options: dict | None = None) -> str:
    """A provider as a person names it: TensorRT, CUDA, CPU, DirectML, OpenVINO (GPU)."""
    short = _SHORT.get(name, name.replace("ExecutionProvider", ""))
    if name == "OpenVINOExecutionProvider" and options and options.get("device_type"):
        short += f" ({options['device_type']})"
    return short
