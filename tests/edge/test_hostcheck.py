"""edgerobust.edge.runtime.hostcheck: the profile's hardware facts against made-up hosts, and against this one."""
import platform

import pytest

from edgerobust.edge.runtime.hostcheck import (HostFacts, architectures, check_host, compare, host_facts, profile_facts,
                                  threads_note)
from edgerobust.edge.runtime.profiles import list_profiles, load_profile

EPYC_2 = HostFacts(machine="x86_64", cores=2)  # the host of issue 16: an x86 EPYC with 2 cores
PI5 = HostFacts(machine="aarch64", cores=4, device_model="Raspberry Pi 5 Model B Rev 1.0")
PI4 = HostFacts(machine="aarch64", cores=4, device_model="Raspberry Pi 4 Model B Rev 1.4")
ORIN_NANO = HostFacts(machine="aarch64", cores=6, device_model="NVIDIA Jetson Orin Nano Developer Kit")


def test_raspberry_pi_5_profile_on_an_x86_server_names_every_difference():
    c = check_host(load_profile("raspberry-pi-5"), EPYC_2)
    assert c.matches is False and c.host == "x86_64, 2 cores"
    assert c.mismatch == ("architecture: the device is aarch64, this host is x86_64",
                          "cores: the device has 4, this host 2",
                          "model: the device is a Raspberry Pi 5, this host reports no board model")
    assert c.threads == ("threads: the profile runs 4 intra-op threads on this host's 2 cores; they contend, "
                         "so latency and its spread (cv) are inflated")
    assert c.settings_line("raspberry-pi-5") == ("figures are this host's (x86_64, 2 cores) running "
                                                 "raspberry-pi-5's settings, not evidence for that device")


def test_raspberry_pi_5_profile_on_a_pi_5_matches_and_on_a_pi_4_does_not():
    c = check_host(load_profile("raspberry-pi-5"), PI5)
    assert (c.matches, c.mismatch, c.threads) == (True, (), None)
    c = check_host(load_profile("raspberry-pi-5"), PI4)
    assert c.mismatch == ("model: the device is a Raspberry Pi 5, this host reports 'Raspberry Pi 4 Model B Rev 1.4'",)


def test_a_profile_that_states_cpu_flags_needs_them_on_the_host(tmp_path):
    from edgerobust.errors import ProfileError

    amx = load_profile("xeon-amx-1thread")
    assert amx.hardware.isa == ("amx_int8",)
    xeon = HostFacts("x86_64", 2, isa=("avx2", "avx512_vnni", "amx_int8"))
    assert check_host(amx, xeon).matches  # generic: 2 cores where the profile uses one is no difference
    epyc = HostFacts("x86_64", 2, isa=("avx2", "avx512_vnni"))
    assert check_host(amx, epyc).mismatch == ("isa: the device's CPU has amx_int8, this host's does not",)
    assert check_host(amx, EPYC_2).matches  # flags unread (no /proc/cpuinfo): not compared
    assert check_host(load_profile("laptop-cpu"), epyc).matches  # states none
    bad = tmp_path / "bad.toml"
    bad.write_text('[[providers]]\nname = "CPUExecutionProvider"\n[hardware]\nisa = ["amx"]\n')
    with pytest.raises(ProfileError, match="hardware.isa"):
        load_profile(str(bad))


def test_jetson_profiles_tell_the_boards_apart():
    assert check_host(load_profile("jetson-orin-nano"), ORIN_NANO).matches
    c = check_host(load_profile("jetson-nano"), ORIN_NANO)  # "Jetson Nano" is not in "Jetson Orin Nano"
    assert c.mismatch == ("cores: the device has 4, this host 6",
                          "model: the device is a Jetson Nano, this host reports "
                          "'NVIDIA Jetson Orin Nano Developer Kit'")
    agx32 = HostFacts(machine="aarch64", cores=8, device_model="Jetson AGX Orin")  # the 32 GB module: 8 cores
    assert check_host(load_profile("jetson-agx-orin"), agx32).matches
    assert check_host(load_profile("jetson-agx-orin"), HostFacts("aarch64", 6, "Jetson AGX Orin")).mismatch == (
        "cores: the device has 12 or 8, this host 6",)


@pytest.mark.parametrize("host", [EPYC_2, HostFacts("x86_64", 16), HostFacts("AMD64", 8), HostFacts("arm64", 10),
                                  HostFacts("aarch64", 4, "Raspberry Pi 5 Model B Rev 1.0")],
                         ids=["epyc-2", "x86-16", "windows-amd64", "apple-arm64", "pi5"])
@pytest.mark.parametrize("name", ["laptop-cpu", "laptop-cpu-1thread"])
def test_generic_laptop_profiles_never_warn_on_ordinary_hosts(name, host):
    facts = profile_facts(load_profile(name))
    assert facts["generic"] is True and facts["model"] is None
    assert set(facts["architecture"]) == {"x86_64", "aarch64"}
    assert compare(facts, host) == []
    assert check_host(load_profile(name), host).threads is None  # 0 (auto) or 1 thread


def test_generic_profile_still_checks_the_architecture():
    assert compare(profile_facts(load_profile("laptop-cpu")), HostFacts("armv7l", 4)) == [
        "architecture: the device is x86_64 or aarch64, this host is arm"]


def _own_device(facts: dict) -> HostFacts:
    arch = facts["architecture"][0] if facts["architecture"] else "x86_64"
    return HostFacts(machine=arch, cores=facts["cores"] or 4,
                     device_model=f"NVIDIA {facts['model']} Developer Kit" if facts["model"] else None)


@pytest.mark.parametrize("name", list_profiles())
def test_every_shipped_profile_matches_its_own_device_and_states_its_facts(name):
    p = load_profile(name)
    facts = profile_facts(p)
    assert facts["architecture"], f"{name}: no architecture can be read from hardware.cpu"
    if not facts["generic"]:
        assert facts["model"] and facts["cores"], f"{name} names a device but not its board or cores"
    assert check_host(p, _own_device(facts)).mismatch == ()


def test_compare_reads_plain_dicts():
    assert compare({}, EPYC_2) == []  # a profile without [hardware] states nothing
    laptop = {"cpu": "Intel Core i7-1165G7", "cores": 4}  # one named laptop CPU: its cores count
    assert compare(laptop, HostFacts("x86_64", 8)) == ["cores: the device has 4, this host 8"]
    assert compare(laptop, HostFacts("x86_64", 4)) == []
    assert compare({"architecture": "aarch64"}, EPYC_2) == [
        "architecture: the device is aarch64, this host is x86_64"]
    assert compare({"cpu": "any CPU", "cores": 1}, EPYC_2) == []  # generic: cores are a setting


@pytest.mark.parametrize("cpu,want", [
    ("4-core Arm Cortex-A76 @ 2.4 GHz (BCM2712)", ("aarch64",)),
    ("any x86-64 or arm64 laptop CPU", ("x86_64", "aarch64")),
    ("AMD EPYC 7B13", ("x86_64",)),
    ("1024-core NVIDIA Ampere GPU", ()),  # "Ampere" is not "arm"
    (None, ()),
])
def test_architectures_from_cpu_text(cpu, want):
    assert architectures(cpu) == want


def test_threads_note_only_when_threads_exceed_cores():
    assert threads_note(0, EPYC_2) is None  # 0 = onnxruntime decides
    assert threads_note(2, EPYC_2) is None
    assert threads_note(3, HostFacts("x86_64", 1)).startswith("threads: the profile runs 3 intra-op threads on "
                                                              "this host's 1 core;")


def test_this_host():
    h = host_facts()
    assert h.machine == platform.machine() and h.cores >= 1
    assert h.describe().startswith(f"{h.architecture}, {h.cores} core")
