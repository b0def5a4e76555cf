"""Device profiles: every shipped profile parses; bad profiles are refused naming file and field."""
import dataclasses
from importlib import resources

import pytest

from edgerobust.errors import ProfileError
from edgerobust.edge.runtime.profiles import best_match_profile, list_profiles, load_profile, profile_text
from edgerobust.edge.runtime.profile_schema import KNOWN_PROVIDERS

REQUIRED = {"laptop-cpu", "laptop-cpu-1thread", "jetson-orin-nano", "jetson-agx-orin", "jetson-nano",
            "raspberry-pi-5", "raspberry-pi-4"}


def test_the_required_profiles_ship():
    assert REQUIRED <= set(list_profiles())


@pytest.mark.parametrize("name", list_profiles())
def test_shipped_profile_parses(name):
    p = load_profile(name)
    assert p.name == name
    assert p.description
    assert p.providers and all(s.name in KNOWN_PROVIDERS for s in p.providers)
    # The CPU provider closes every list, so operators no accelerator takes still run.
    assert p.providers[-1].name == "CPUExecutionProvider"
    assert p.measure.batch_sizes[0] == 1 and p.budgets.latency_ms_p50 > 0
    assert p.budgets.peak_memory_mb > 0 and p.budgets.model_size_mb > 0
    # Named presets carry their reasons as comments.
    comments = [ln for ln in profile_text(name).splitlines() if ln.strip().startswith("#")]
    assert len(comments) >= 5


def test_jetson_profiles_put_tensorrt_first_with_its_options():
    for name in ("jetson-orin-nano", "jetson-agx-orin", "jetson-nano"):
        p = load_profile(name)
        assert p.provider_names == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        trt = p.providers[0].options
        assert trt["trt_fp16_enable"] is True and trt["trt_engine_cache_enable"] is True
        assert trt["trt_engine_cache_path"]
    # No int8 kernels on the Nano's Maxwell GPU.
    assert load_profile("jetson-nano").providers[0].options["trt_int8_enable"] is False
    assert load_profile("jetson-orin-nano").providers[0].options["trt_int8_enable"] is True


@pytest.mark.parametrize("name", list_profiles())
def test_shipped_profiles_measure_long_enough_and_say_how(name):
    m, s = load_profile(name).measure, load_profile(name).session
    # Seconds, not runs: a 2 ms model and a 20 ms one both get enough runs for a stable p50.
    assert m.min_seconds >= 1 and m.ci_target == 0.02 and m.max_seconds >= m.min_seconds
    assert m.isolation == "pool" and m.turn_seconds > 0
    assert isinstance(s.allow_spinning, bool) and isinstance(s.cpu_arena, bool)


def test_session_settings_parse(tmp_path):
    f = tmp_path / "pinned.toml"
    f.write_text(GOOD.replace("intra_op_threads = 2", 'intra_op_threads = 3\nallow_spinning = false\n'
                              'thread_affinity = "2;3-4"\ncpu_arena = false\nmemory_pattern = false')
                 .replace("[measure]", "[measure]\nmin_seconds = 2.5\nmax_seconds = 20\nci_target = 0.02\n"
                                       "turn_seconds = 0.1\nswitch_warmup_runs = 1\nisolation = 'none'"))
    p = load_profile(f)
    assert (p.session.allow_spinning, p.session.thread_affinity, p.session.cpu_arena, p.session.memory_pattern) == \
        (False, "2;3-4", False, False)
    m = p.measure
    assert (m.min_seconds, m.max_seconds, m.ci_target, m.turn_seconds, m.switch_warmup_runs, m.isolation) == \
        (2.5, 20.0, 0.02, 0.1, 1, "none")


def test_pi4_uses_four_threads():
    s = load_profile("raspberry-pi-4").session
    assert (s.intra_op_threads, s.inter_op_threads) == (4, 1)


GOOD = '''
description = "ok"
[[providers]]
name = "CPUExecutionProvider"
[session]
intra_op_threads = 2
[measure]
batch_sizes = [1, 2]
[budgets]
latency_ms_p50 = 5
'''


def test_user_profile_from_path(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(GOOD)
    p = load_profile(f)
    assert (p.name, p.source, p.session.intra_op_threads, p.measure.batch_sizes) == ("mine", str(f), 2, (1, 2))
    assert p.session.inter_op_threads == 0  # 0 = onnxruntime's default
    assert load_profile(str(f)) == p


BAD = {
    "malformed-toml": ("[[providers]\nname = 'x'", None, "not valid TOML"),
    "unknown-top-field": ("colour = 'red'\n" + GOOD, "colour", "not a known field"),
    "unknown-provider": (GOOD.replace("CPUExecutionProvider", "TurboExecutionProvider"), "providers[0].name",
                         "unknown execution provider 'TurboExecutionProvider'"),
    "missing-providers": ("description = 'x'\n", "providers", "is missing"),
    "duplicate-provider": (GOOD.replace('[session]', '[[providers]]\nname = "CPUExecutionProvider"\n[session]'),
                           "providers[1].name", "repeats"),
    "provider-option-table": (GOOD.replace('name = "CPUExecutionProvider"',
                                           'name = "CPUExecutionProvider"\noptions = { a = [1] }'),
                              "providers[0].options.a", "string, number or boolean"),
    "negative-threads": (GOOD.replace("intra_op_threads = 2", "intra_op_threads = -1"),
                         "session.intra_op_threads", "at least 0"),
    "string-threads": (GOOD.replace("intra_op_threads = 2", "intra_op_threads = 'four'"),
                       "session.intra_op_threads", "must be an integer"),
    "bad-opt-level": (GOOD.replace("intra_op_threads = 2", "graph_optimization = 'max'"),
                      "session.graph_optimization", "must be one of"),
    "zero-batch": (GOOD.replace("[1, 2]", "[1, 0]"), "measure.batch_sizes", "positive integers"),
    "empty-batches": (GOOD.replace("[1, 2]", "[]"), "measure.batch_sizes", "non-empty"),
    "repeated-batch": (GOOD.replace("[1, 2]", "[1, 1]"), "measure.batch_sizes", "twice"),
    "zero-rounds": (GOOD.replace("[measure]", "[measure]\nrounds = 0"), "measure.rounds", "at least 1"),
    "negative-budget": (GOOD.replace("latency_ms_p50 = 5", "latency_ms_p50 = -5"),
                        "budgets.latency_ms_p50", "greater than 0"),
    "zero-memory-budget": (GOOD + "peak_memory_mb = 0\n", "budgets.peak_memory_mb", "greater than 0"),
    "unknown-budget": (GOOD + "energy_mj = 3\n", "budgets.energy_mj", "not a known field"),
    "latency-budget-without-batch-1": (GOOD.replace("[1, 2]", "[2, 4]"), "budgets.latency_ms_p50", "lacks 1"),
    "spinning-not-bool": (GOOD.replace("intra_op_threads = 2", "intra_op_threads = 2\nallow_spinning = 1"),
                          "session.allow_spinning", "true or false"),
    "arena-not-bool": (GOOD.replace("intra_op_threads = 2", "intra_op_threads = 2\ncpu_arena = 'no'"),
                       "session.cpu_arena", "true or false"),
    "affinity-groups": (GOOD.replace("intra_op_threads = 2", "intra_op_threads = 2\nthread_affinity = '1;2'"),
                        "session.thread_affinity", "needs 1"),
    "affinity-one-thread": (GOOD.replace("intra_op_threads = 2", "intra_op_threads = 1\nthread_affinity = '1'"),
                            "session.thread_affinity", "2 or more"),
    "affinity-zero-based": (GOOD.replace("intra_op_threads = 2", "intra_op_threads = 2\nthread_affinity = '0'"),
                            "session.thread_affinity", "1-based"),
    "affinity-bad-range": (GOOD.replace("intra_op_threads = 2", "intra_op_threads = 2\nthread_affinity = '4-2'"),
                           "session.thread_affinity", "1-based"),
    "bad-isolation": (GOOD.replace("[measure]", "[measure]\nisolation = 'pause'"), "measure.isolation",
                      "must be one of pool, park, none"),
    "ci-target-percent": (GOOD.replace("[measure]", "[measure]\nci_target = 2"), "measure.ci_target", "0.02"),
    "max-below-min-seconds": (GOOD.replace("[measure]", "[measure]\nmin_seconds = 3\nmax_seconds = 1"),
                              "measure.max_seconds", "at least measure.min_seconds"),
    "negative-turn": (GOOD.replace("[measure]", "[measure]\nturn_seconds = -1"), "measure.turn_seconds",
                      "not be negative"),
    "session-not-a-table": ("session = 3\n" + GOOD.replace("[session]\nintra_op_threads = 2\n", ""), "session",
                            "must be a table"),
}


@pytest.mark.parametrize("text,field,what", list(BAD.values()), ids=list(BAD))
def test_bad_profile_names_file_and_field(tmp_path, text, field, what):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ProfileError) as e:
        load_profile(f)
    msg = str(e.value)
    assert str(f) in msg
    if field:
        assert f"'{field}'" in msg
    assert what in msg


def test_unknown_name_lists_shipped_profiles():
    with pytest.raises(ProfileError) as e:
        load_profile("jetson-xavier")
    assert "jetson-xavier" in e.value.what and "jetson-orin-nano" in str(e.value)


def test_missing_path(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "nope.toml")


def test_with_batch_sizes_leaves_the_original_alone():
    p = load_profile("laptop-cpu")
    q = p.with_batch_sizes((2, 16))
    assert q.measure.batch_sizes == (2, 16) and p.measure.batch_sizes == (1, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"
    with pytest.raises(ProfileError):
        p.with_batch_sizes((0,))


GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("model,tegra,providers,expected", [
    ("NVIDIA Jetson Orin Nano Developer Kit", True, GPU, "jetson-orin-nano"),
    ("NVIDIA Jetson AGX Orin Developer Kit", True, GPU, "jetson-agx-orin"),
    ("NVIDIA Jetson Nano Developer Kit", True, GPU, "jetson-nano"),
    ("NVIDIA Jetson Orin Nano Developer Kit", True, ["CPUExecutionProvider"], "laptop-cpu"),
    ("Raspberry Pi 5 Model B Rev 1.0", False, ["CPUExecutionProvider"], "raspberry-pi-5"),
    ("Raspberry Pi 4 Model B Rev 1.4", False, ["CPUExecutionProvider"], "raspberry-pi-4"),
    ("", False, ["CPUExecutionProvider"], "laptop-cpu"),
    ("", False, ["OpenVINOExecutionProvider", "CPUExecutionProvider"], "laptop-openvino-cpu"),
    ("", False, ["DmlExecutionProvider", "CPUExecutionProvider"], "windows-directml"),
    ("", False, ["QNNExecutionProvider", "CPUExecutionProvider"], "snapdragon-qnn-npu"),
    ("", False, ["CoreMLExecutionProvider", "CPUExecutionProvider"], "laptop-cpu"),
], ids=["orin-nano", "agx-orin", "nano", "jetson-without-gpu-ort", "pi5", "pi4", "laptop", "openvino", "directml",
        "qnn", "mac"])
def test_best_match(model, tegra, providers, expected):
    m = best_match_profile(device_model=model, is_tegra=tegra, providers=providers)
    assert m.name == expected and m.name in list_profiles()
    if expected == "laptop-cpu" and tegra:
        assert "onnxruntime-gpu" in m.reason
    if "CoreMLExecutionProvider" in providers:  # Core ML is offered, not chosen: most Mac wheels carry it
        assert "`profile` apple-coreml" in m.reason


def test_profile_files_are_package_data():
    names = {p.name for p in resources.files("edgerobust.device_profiles").iterdir()}
    assert {f"{n}.toml" for n in REQUIRED} <= names


def test_compress_round_to_is_validated(tmp_path):
    from edgerobust.edge.runtime.profiles import load_profile as load

    good = tmp_path / "good.toml"
    good.write_text('description = "x"\n[[providers]]\nname = "CPUExecutionProvider"\n[compress]\nround_to = 32\n')
    assert load(good).compress.round_to == 32
    for bad, what in (("round_to = 0", "at least 1"), ("round_to = 1.5", "integer"), ("multiple = 8", "not a known")):
        p = tmp_path / "bad.toml"
        p.write_text(f'description = "x"\n[[providers]]\nname = "CPUExecutionProvider"\n[compress]\n{bad}\n')
        with pytest.raises(ProfileError, match="compress"):
            load(p)
