"""Is this host the device a profile describes? Compare the profile's hardware facts with the host.

A profile's ``[hardware]`` table states facts about its target device. When the audit runs on
another machine, its figures are that machine's, running the profile's settings: they are no
evidence for the device, and the report must say so.

What is compared (``compare(facts, host)``, pure, so tests can pass made-up hosts):

* **architecture**: a ``architecture`` fact if the profile has one, else read from ``cpu``
  ("Arm Cortex-A76" -> aarch64; "any x86-64 or arm64 laptop CPU" -> either);
* **operating system**: the systems the profile's ``os`` names (Linux, macOS, Windows), when it
  names any (windows-directml, apple-coreml);
* **CPU flags**: the ``isa`` flags the profile's device has (xeon-amx-1thread: amx_int8), when
  this host's flags can be read (Linux ``/proc/cpuinfo``): a generic profile states them too;
* **cores** and **model**: only for a profile that names one device. A generic profile
  (``cpu`` saying "any ...", as laptop-cpu does, or no ``cpu`` at all) states no device, so
  its ``cores`` (laptop-cpu-1thread: "one core used") describe settings, not hardware. The
  model is a board the profile names (Raspberry Pi 5, Jetson Orin Nano, ...) and must appear
  in the host's ``/proc/device-tree/model``.

``threads_note`` says when the profile asks for more intra-op threads than the host has cores,
which inflates latency spread whatever the device. Torch-free and onnxruntime-free.
"""
from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass

from edgerobust.edge.runtime.host import cpu_isa, cpuinfo, first_line

# Longest first, so "Jetson Orin Nano" is found before "Jetson Nano".
BOARDS = ("Jetson AGX Orin", "Jetson Orin Nano", "Jetson Orin NX", "Jetson AGX Xavier", "Jetson Xavier NX",
          "Jetson TX2", "Jetson Nano", "Raspberry Pi 5", "Raspberry Pi 4", "Raspberry Pi 3")

_ARCH_WORDS = (
    ("x86_64", r"\bx86[-_]?64\b|\bamd64\b|\bintel\b|\bamd\b|\bxeon\b|\bepyc\b|\bryzen\b|\bcore i\d"),
    ("aarch64", r"\baarch64\b|\barm64\b|\barm\b|\bcortex-a\d+|\bneoverse\b|\bcarmel\b|\bapple m\d"),
)
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
             "armv8l": "aarch64", "armv7l": "arm", "armv6l": "arm", "i386": "x86", "i686": "x86"}


@dataclass(frozen=True)
class HostFacts:
    """The machine the audit runs on.

    machine: ``platform.machine()``. cores: cores this process may use. device_model:
    ``/proc/device-tree/model`` (boards such as Jetson and Raspberry Pi report one).
    """

    machine: str
    cores: int | None
    device_model: str | None = None
    system: str | None = None  # platform.system(): Linux, Darwin, Windows; None: not compared
    isa: tuple[str, ...] | None = None  # host.cpu_isa(); None: unread (no /proc/cpuinfo), not compared

    @property
    def architecture(self) -> str:
        return normalize_machine(self.machine)

    def describe(self) -> str:
        """``x86_64, 2 cores`` (with the board when it reports one)."""
        parts = [self.architecture or "unknown architecture"]
        if self.cores:
            parts.append(f"{self.cores} core{'s' if self.cores != 1 else ''}")
        if self.device_model:
            parts.append(self.device_model)
        return ", ".join(parts)


def normalize_machine(machine: str) -> str:
    m = (machine or "").strip().lower()
    return _MACHINES.get(m, m)


def usable_cores() -> int | None:
    """Cores this process may run on (CPU affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def host_facts() -> HostFacts:
    """This machine's facts."""
    text = cpuinfo()
    return HostFacts(machine=platform.machine(), cores=usable_cores(),
                     device_model=first_line("/proc/device-tree/model"), system=platform.system() or None,
                     isa=cpu_isa(text) if text else None)


# =============================================================================================


def architectures(cpu: str | None) -> tuple[str, ...]:
    """The architectures a CPU description names, e.g. ("x86_64", "aarch64") for "x86-64 or arm64"."""
    text = (cpu or "").lower()
    return tuple(arch for arch, pattern in _ARCH_WORDS if re.search(pattern, text))


_SYSTEM_WORDS = (("Linux", r"\blinux\b|\bubuntu\b|\bdebian\b|\bl4t\b|raspberry pi os"),
                 ("Darwin", r"\bmacos\b|\bmac os\b"), ("Windows", r"\bwindows\b"))
_SYSTEM_NAMES = {"Darwin": "macOS"}


def systems(os_text: str | None) -> tuple[str, ...]:
    """The operating systems a profile's ``os`` fact names (platform.system() values)."""
    text = (os_text or "").lower()
    return tuple(name for name, pattern in _SYSTEM_WORDS if re.search(pattern, text))


def board(*texts: str | None) -> str | None:
    """The first known board named in the texts (profile name, description, cpu), or None."""
    joined = " ".join(t for t in texts if t).lower().replace("-", " ")
    joined = re.sub(r"\s+", " ", joined)
    return next((b for b in BOARDS if b.lower() in joined), None)


def is_generic(facts: Mapping) -> bool:
    """A profile names no single device when its cpu is missing or says "any ..."."""
    if facts.get("model"):
        return False
    cpu = str(facts.get("cpu") or "").strip().lower()
    return not cpu or cpu.startswith("any ")


def profile_facts(profile) -> dict:
    """The device facts of a DeviceProfile, as compare() reads them.

    Keys: name, cpu, cores, architecture (tuple), model (a board or None), generic.
    """
    hw = profile.hardware
    stated = getattr(hw, "architecture", None)  # a field profiles may gain; read from cpu otherwise
    facts = {"name": profile.name, "cpu": hw.cpu, "cores": hw.cores, "systems": systems(hw.os), "isa": hw.isa,
             "architecture": (stated,) if stated else architectures(hw.cpu),
             "model": getattr(hw, "model", None) or board(profile.name, profile.description, hw.cpu)}
    facts["generic"] = is_generic(facts)
    return facts


def compare(facts: Mapping, host: HostFacts) -> list[str]:
    """How the host differs from the profile's device; empty when nothing stated differs.

    ``facts``: cpu, cores, architecture (a name or a tuple of names), model, generic (optional:
    derived from cpu and model when absent). Each string names the fact, the device's value
    and the host's.
    """
    out = []
    arch = facts.get("architecture") or architectures(facts.get("cpu"))
    arch = (arch,) if isinstance(arch, str) else tuple(arch)
    arch = tuple(normalize_machine(a) for a in arch)
    if arch and host.architecture and host.architecture not in arch:
        out.append(f"architecture: the device is {' or '.join(arch)}, this host is {host.architecture}")
    named = tuple(facts.get("systems") or ())
    if named and host.system and host.system not in named:
        out.append(f"os: the device runs {' or '.join(_SYSTEM_NAMES.get(x, x) for x in named)}, this host "
                   f"{_SYSTEM_NAMES.get(host.system, host.system)}")
    lacks = [f for f in facts.get("isa") or () if host.isa is not None and f not in host.isa]
    if lacks:
        out.append(f"isa: the device's CPU has {', '.join(lacks)}, this host's does not")
    generic = facts.get("generic", is_generic(facts))
    cores = facts.get("cores")
    if not generic and cores and host.cores:
        # "12-core ... (8-core on the 32 GB module)": every count the cpu text names is the device's
        allowed = {int(cores), *(int(n) for n in re.findall(r"(\d+)-core", str(facts.get("cpu") or "")))}
        if host.cores not in allowed:
            out.append(f"cores: the device has {' or '.join(map(str, sorted(allowed, reverse=True)))}, "
                       f"this host {host.cores}")
    model = facts.get("model")
    if not generic and model:
        norm = re.sub(r"\s+", " ", (host.device_model or "").lower().replace("-", " "))
        if str(model).lower().replace("-", " ") not in norm:
            got = f"reports '{host.device_model}'" if host.device_model else "reports no board model"
            out.append(f"model: the device is a {model}, this host {got}")
    return out


def threads_note(threads: int, host: HostFacts) -> str | None:
    """A line when the profile's intra-op threads exceed the host's cores (0 = auto: never)."""
    if threads and host.cores and threads > host.cores:
        return (f"threads: the profile runs {threads} intra-op threads on this host's {host.cores} "
                f"core{'s' if host.cores != 1 else ''}; they contend, so latency and its spread (cv) are inflated")
    return None


@dataclass(frozen=True)
class HostCheck:
    """The host against a profile's device, as the audit report carries it.

    matches: False when a stated fact differs; True otherwise (also when the profile states
    none). mismatch: one line per differing fact. threads: threads_note, or None.
    """

    host: str
    matches: bool
    mismatch: tuple[str, ...]
    threads: str | None

    def settings_line(self, profile: str) -> str:
        """The sentence every figure of a mismatched host carries."""
        return (f"figures are this host's ({self.host}) running {profile}'s settings, "
                f"not evidence for that device")


def check_host(profile, host: HostFacts) -> HostCheck:
    """Compare a DeviceProfile with a host (see the module docstring)."""
    mismatch = tuple(compare(profile_facts(profile), host))
    return HostCheck(host=host.describe(), matches=not mismatch, mismatch=mismatch,
                     threads=threads_note(profile.session.intra_op_threads, host))
