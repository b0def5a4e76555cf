"""Device profiles: TOML files naming a target device, parsed and validated field by field.

A profile says how to run a model on one device (execution providers in preference order with
their options, threads, graph optimization level), how to measure it (batch sizes, warmup,
rounds) and what it must fit in (budgets), plus hardware facts for the record. Shipped
profiles live in ``device_profiles/*.toml`` (the package ``edgerobust.device_profiles``); a
user passes a shipped name or a path to their own ``.toml``.

Conventions a profile author needs:

* ``intra_op_threads`` / ``inter_op_threads``: 0 means "let ONNX Runtime decide" (its own
  default, usually one thread per physical core); a negative count is an error.
* ``MB`` in budgets means MiB (2**20 bytes), the unit of ``ru_maxrss``/``VmHWM``.
* ``latency_ms_p50`` is the deployed model's median latency at batch size 1, so a profile
  with that budget must measure batch size 1.

This module is torch-free and does not need onnxruntime (``profiles list`` works without it).
"""
from __future__ import annotations

import importlib.resources
import os
import platform
from dataclasses import dataclass
from pathlib import Path

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from edgerobust.errors import ProfileError
from edgerobust.edge.runtime.profile_checker import Checker
from edgerobust.edge.runtime.profile_schema import (DeviceProfile, read_budgets, read_compress, read_hardware,
                                                    read_measure, read_providers, read_session)

PROFILE_PACKAGE = "edgerobust.device_profiles"


# =============================================================================================
# finding profiles


def list_profiles() -> list[str]:
    """Names of the shipped profiles, sorted."""
    root = importlib.resources.files(PROFILE_PACKAGE)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """Load a shipped profile by name, or a user's profile from a path to a ``.toml`` file."""
    text_name = str(name_or_path)
    looks_like_path = (isinstance(name_or_path, os.PathLike) or text_name.endswith(".toml")
                       or os.sep in text_name or "/" in text_name)
    if looks_like_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ProfileError(f"The profile file '{path}' does not exist.",
                               fix="Check the path, or pass a shipped profile name: "
                                   + ", ".join(list_profiles()) + ".")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ProfileError(f"The profile file '{path}' cannot be read.", why=str(exc)) from exc
        return parse_profile(raw, source=str(path), default_name=path.stem)
    names = list_profiles()
    if text_name not in names:
        raise ProfileError(f"There is no shipped device profile named '{text_name}'.",
                           why="Shipped profiles: " + ", ".join(names) + ".",
                           fix="Pick one of those, or pass the path to your own .toml profile.")
    res = importlib.resources.files(PROFILE_PACKAGE) / f"{text_name}.toml"
    return parse_profile(res.read_bytes(), source=f"{text_name}.toml (shipped)", default_name=text_name)


def profile_text(name_or_path: str | os.PathLike) -> str:
    """The TOML source of a profile (validated first), comments and all: the reasons live there."""
    profile = load_profile(name_or_path)
    if profile.source.endswith("(shipped)"):
        return (importlib.resources.files(PROFILE_PACKAGE) / f"{profile.name}.toml").read_text(encoding="utf-8")
    return Path(profile.source).read_text(encoding="utf-8")


# =============================================================================================
# parsing and validation


_TOP = ("name", "description", "providers", "session", "measure", "budgets", "hardware", "compress")


def parse_profile(raw: bytes | str, source: str, default_name: str) -> DeviceProfile:
    """Parse and validate profile TOML; ``source`` names the file in every error message."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"The device profile '{source}' is not valid TOML.", why=str(exc),
                           fix="Fix the syntax at the line and column named above.") from exc
    c = Checker(source)
    c.no_unknown(data, _TOP, "")
    name = c.string(data, "name", "", default_name) or default_name
    description = c.string(data, "description", "", "") or ""
    return DeviceProfile(
        name=name, description=description, source=source,
        providers=read_providers(c, data), session=read_session(c, data), measure=read_measure(c, data),
        budgets=read_budgets(c, data), hardware=read_hardware(c, data), compress=read_compress(c, data),
    )


# =============================================================================================
# the host's best match


@dataclass(frozen=True)
class ProfileMatch:
    """The shipped profile that fits this host best, and why it was chosen."""

    name: str
    reason: str


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_bytes().decode("utf-8", "replace").strip("\x00").strip()
    except OSError:
        return None


def _available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def best_match_profile(*, device_model: str | None = None, is_tegra: bool | None = None,
                       providers: list[str] | None = None) -> ProfileMatch:
    """Pick the shipped profile for this host from the device-tree model and the providers.

    The keyword arguments override what is read from the host (for tests and callers that
    already know): ``device_model`` is ``/proc/device-tree/model``, ``is_tegra`` whether
    ``/etc/nv_tegra_release`` exists, ``providers`` onnxruntime's available providers.
    """
    if device_model is None:
        device_model = _read_text("/proc/device-tree/model") or ""
    if is_tegra is None:
        is_tegra = Path("/etc/nv_tegra_release").exists()
    if providers is None:
        providers = _available_providers()
    model = device_model.lower()
    if is_tegra or "jetson" in model:
        gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in providers]
        if gpu:
            if "agx orin" in model:
                name = "jetson-agx-orin"
            elif "orin" in model:
                name = "jetson-orin-nano"
            elif "nano" in model:
                name = "jetson-nano"
            else:
                name = "jetson-orin-nano"
            return ProfileMatch(name, f"Jetson detected ({device_model or 'L4T'}) with {', '.join(gpu)}")
        return ProfileMatch("laptop-cpu", f"Jetson detected ({device_model or 'L4T'}) but onnxruntime offers "
                            "no CUDA/TensorRT provider (install NVIDIA's onnxruntime-gpu wheel); using the CPU")
    if "raspberry pi 5" in model:
        return ProfileMatch("raspberry-pi-5", f"detected {device_model}")
    if "raspberry pi 4" in model:
        return ProfileMatch("raspberry-pi-4", f"detected {device_model}")
    # A laptop runtime the user installed on purpose (each is its own onnxruntime wheel) is what they deploy with.
    laptop = {"OpenVINOExecutionProvider": "laptop-openvino-cpu", "QNNExecutionProvider": "snapdragon-qnn-npu",
              "DmlExecutionProvider": "windows-directml"}
    for provider, name in laptop.items():
        if provider in providers:
            return ProfileMatch(name, f"onnxruntime here offers {provider} (a laptop runtime installed on purpose); "
                                      "`profile` laptop-cpu measures the CPU provider instead")
    coreml = ("; Core ML is here too: `profile` apple-coreml measures with it"
              if "CoreMLExecutionProvider" in providers else "")
    return ProfileMatch("laptop-cpu", f"no edge device detected ({platform.machine() or 'unknown'} "
                        f"{platform.system() or ''}); using the generic CPU profile{coreml}".replace("  ", " "))
