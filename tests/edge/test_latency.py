"""Latency timing: the p50's interval, the stopping rule, turn lengths, and the session settings
that keep interleaved sessions from competing (recorded in what the report holds).

Nothing here times anything against a threshold: the rules are tested on synthetic samples
and call logs, the settings by reading them back from onnxruntime.
"""
import math

import numpy as np
import pytest

from edgerobust.edge.runtime.host import cpu_isa
from edgerobust.edge.runtime.latency import ci_halfwidth, enough, interleaved_timings, median_ci, summarize, turn_lengths
from edgerobust.edge.runtime.measure import measure_models
from edgerobust.edge.runtime.profiles import load_profile
from edgerobust.edge.runtime.profile_schema import MeasureSettings, SessionSettings
from edgerobust.edge.runtime.sessions import config_entries, open_sessions
from onnx_models import mlp_weights, perturbed, save_mlp, write_profile


def test_median_ci_matches_the_binomial_table():
    # The classical distribution-free 95% interval for the median of 100 samples: x(40), x(61).
    assert median_ci(np.arange(1, 101)) == (40.0, 61.0)
    lo, hi = median_ci([5.0])
    assert lo == hi == 5.0


def test_median_ci_covers_the_true_median():
    rng = np.random.default_rng(0)
    true = math.log(2)  # median of Exp(1)
    hits = sum(lo <= true <= hi for lo, hi in (median_ci(rng.exponential(size=200)) for _ in range(2000)))
    assert 0.93 <= hits / 2000 <= 0.97


def test_ci_halfwidth_shrinks_with_more_samples():
    rng = np.random.default_rng(1)
    x = 2.0 + 0.2 * rng.standard_normal(4000)
    assert ci_halfwidth(x[:50]) > ci_halfwidth(x[:500]) > ci_halfwidth(x)
    assert ci_halfwidth(x) < 0.01


def test_summarize_reports_the_interval_and_time():
    s = summarize(np.arange(1, 101) / 1000, batch_size=1, rounds=7)
    assert (s.p50_ci_low_ms, s.p50_ci_high_ms, s.ci_level) == (40.0, 61.0, 0.95)
    assert s.p50_ci_halfwidth == pytest.approx((61 - 40) / 2 / 50.5)
    assert s.measured_s == pytest.approx(5.05) and s.rounds == 7


def _times(per_run: float, n: int, spread: float = 0.0, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(per_run * (1 + spread * rng.standard_normal(n)))


def test_min_seconds_counts_each_models_own_time():
    s = MeasureSettings(rounds=1, min_seconds=1.0, max_rounds=10_000)
    # The slow model has 2 s, the fast one 0.2 s: not enough until both have 1 s.
    assert not enough(5, {"slow": _times(0.02, 100), "fast": _times(0.002, 100)}, s)
    assert enough(5, {"slow": _times(0.02, 100), "fast": _times(0.002, 600)}, s)


def test_ci_target_asks_for_more_runs_until_the_p50_is_known():
    s = MeasureSettings(rounds=1, ci_target=0.02, max_rounds=10_000)
    assert not enough(3, {"a": _times(0.01, 30, spread=0.3)}, s)
    assert enough(3, {"a": _times(0.01, 30, spread=0.001)}, s)


def test_caps_end_the_measurement():
    noisy = {"a": _times(0.01, 30, spread=0.3)}
    assert enough(8, noisy, MeasureSettings(rounds=1, ci_target=0.02, max_rounds=8))
    assert enough(3, noisy, MeasureSettings(rounds=1, ci_target=0.02, max_rounds=100, max_seconds=0.2))
    assert not enough(3, noisy, MeasureSettings(rounds=1, ci_target=0.02, max_rounds=100, max_seconds=1.0))
    assert not enough(2, {"a": _times(0.01, 30)}, MeasureSettings(rounds=3))


def test_turns_last_about_the_same_time():
    s = MeasureSettings(runs_per_round=10, turn_seconds=0.1)
    # 10 runs of the slow model last 0.2 s, longer than turn_seconds: the fast one fills 0.2 s too.
    assert turn_lengths({"slow": 0.02, "fast": 0.001}, s) == {"slow": 10, "fast": 200}
    assert turn_lengths({"slow": 0.002, "fast": 0.001}, s) == {"slow": 50, "fast": 100}
    assert turn_lengths({"slow": 0.02, "fast": 0.001}, MeasureSettings(runs_per_round=10)) == {"slow": 10, "fast": 10}


def test_min_seconds_rule_makes_more_runs():
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    few = interleaved_timings(runners, MeasureSettings(warmup_runs=0, rounds=2, runs_per_round=2))
    many = interleaved_timings(runners, MeasureSettings(warmup_runs=0, rounds=2, runs_per_round=2,
                                                        min_seconds=1e-3, max_rounds=10_000))
    assert len(few["a"]) == 4 and len(many["a"]) > 4 and many["a"].sum() >= 1e-3


def test_switch_warmup_runs_are_untimed():
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    t = interleaved_timings(runners, MeasureSettings(warmup_runs=1, rounds=2, runs_per_round=2, switch_warmup_runs=1))
    assert "".join(calls) == "ab" + "a" + "aa" + "b" + "bb" + "b" + "bb" + "a" + "aa"
    assert {k: len(v) for k, v in t.items()} == {"a": 4, "b": 4}


def test_config_entries_carry_the_session_settings():
    spin = dict(config_entries(SessionSettings(intra_op_threads=3, thread_affinity="2;3")))
    assert spin == {"session.intra_op.allow_spinning": "1", "session.inter_op.allow_spinning": "1",
                    "session.intra_op_thread_affinities": "2;3"}
    parked = dict(config_entries(SessionSettings(), park_between_runs=True))
    assert parked["session.force_spinning_stop"] == "1"
    quiet = dict(config_entries(SessionSettings(allow_spinning=False), park_between_runs=True))
    assert quiet["session.intra_op.allow_spinning"] == "0" and "session.force_spinning_stop" not in quiet


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    w = mlp_weights(0)
    return {"base": save_mlp(d / "base.onnx", w), "deployed": save_mlp(d / "dep.onnx", perturbed(w, 0.1, 1))}


def _profile(tmp_path, session: str = "", measure: str = ""):
    f = write_profile(tmp_path / "p.toml", batch_sizes=(1,))
    text = f.read_text().replace("[session]\n", "[session]\n" + session).replace("[measure]\n", "[measure]\n" + measure)
    f.write_text(text.replace("intra_op_threads = 1", "intra_op_threads = 2"))
    return load_profile(f)


@pytest.mark.parametrize("isolation,session,models,recorded", [
    ("pool", "", 2, "pool"), ("park", "", 2, "park"), ("none", "", 2, "none"), ("pool", "", 1, "alone"),
    ("pool", "allow_spinning = false\n", 2, "park"), ("pool", 'thread_affinity = "1"\n', 2, "park"),
], ids=["pool", "park", "none", "one-model-alone", "pool-without-spinning-parks", "pool-with-affinity-parks"])
def test_isolation_is_chosen_and_recorded(tmp_path, pair, isolation, session, models, recorded):
    p = _profile(tmp_path, session=session, measure=f'isolation = "{isolation}"\n')
    sessions = open_sessions(dict(list(pair.items())[:models]), p)
    for s in sessions.values():
        opts = s.session.get_session_options()
        parked = recorded == "park" and p.session.allow_spinning
        assert s.info.isolation == recorded
        assert (("session.force_spinning_stop", "1") in s.info.config_entries) is parked
        if parked:
            assert opts.get_session_config_entry("session.force_spinning_stop") == "1"
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if p.session.allow_spinning else "0")


@pytest.mark.parametrize("isolation", ["pool", "park"])
def test_every_isolation_measures_every_model(tmp_path, pair, isolation):
    p = _profile(tmp_path, measure=f'isolation = "{isolation}"\n')
    r = measure_models(pair, p, memory=False, show_progress=False)
    for m in r.models:
        assert m.session.isolation == isolation
        lat = m.latency[0]
        assert lat.runs == lat.rounds * 3 and lat.rounds >= 3 and lat.p50_ms > 0


def test_report_records_session_settings_interval_and_load(tmp_path, pair):
    p = _profile(tmp_path, session='allow_spinning = false\nthread_affinity = "1"\ncpu_arena = false\n')
    r = measure_models(pair, p, memory=False, show_progress=False)
    for m in r.models:
        info = m.session
        assert (info.allow_spinning, info.thread_affinity, info.cpu_arena, info.memory_pattern) == (False, "1", False, True)
        assert dict(info.config_entries)["session.intra_op.allow_spinning"] == "0"
        lat = m.latency[0]
        assert lat.p50_ci_low_ms <= lat.p50_ms <= lat.p50_ci_high_ms and lat.rounds >= 3 and lat.measured_s > 0
    sp = r.speedup[0]
    assert sp.p50_low <= sp.p50 <= sp.p50_high
    assert r.other_load is None or 0.0 <= r.other_load <= 1.0


def test_cpu_isa_reads_x86_and_arm_flags():
    x86 = "processor : 0\nflags : fpu sse2 avx2 fma avx512f avx512_vnni\n"
    arm = "processor : 0\nFeatures : fp asimd asimddp i8mm\n"
    assert cpu_isa(x86) == ("avx2", "fma", "avx512f", "avx512_vnni")
    assert cpu_isa(arm) == ("asimd", "asimddp", "i8mm")
    assert cpu_isa("") == ()
