"""benchmarks/estimate.py's tables and summaries on rows it would write: the shares, the speedups, and the
repeats' spread that says whether a ±10% aim can be checked on this host at all."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import estimate  # noqa: E402


def _row(model: str, predicted: float, runs: list[float], batch: int = 1, set_: str = "check") -> dict:
    measured = min(runs)
    return {"model": model, "set": set_, "batch": batch, "predicted_ms": predicted, "low_ms": predicted * 0.9,
            "high_ms": predicted * 1.1, "measured_ms": measured, "measured_all_ms": runs,
            "spread": estimate.spread(runs), "error": predicted / measured - 1,
            "in_band": predicted * 0.9 <= measured <= predicted * 1.1,
            "narrow": estimate.narrow(predicted, predicted * 0.9, predicted * 1.1), "other_load": 0.0}


ROWS = [
    _row("net base", 10.0, [10.0, 10.2]),  # steady, exact
    _row("net 0.5 fp32", 4.3, [4.0, 4.1]),  # steady, +7.5%
    _row("net 0.5 int8", 1.5, [1.0, 1.4]),  # its repeats 40% apart: +50% against the faster
]


def _table(rows: list[dict]) -> str:
    """The benchmark's printed report of one profile holding ``rows``."""
    return estimate.render({"host": {"cpu": "cpu", "cores": 2, "machine": "x86_64", "isa": ["avx2"], "onnxruntime": "1"},
                            "date": "today", "sizes": [128],
                            "profiles": [{"profile": "p", "calibration": {"seconds": 1.0, "other_load": 0.0, "uptime": "up",
                                                                          "nchwc_block": 8},
                                          "rows": rows, "uptime_after": "up"}]})


def test_spread_is_the_slowest_over_the_fastest_repeat():
    assert estimate.spread([2.0, 2.5, 2.2]) == 0.25
    assert estimate.spread([3.0]) == 0.0 and estimate.spread([]) == 0.0


def test_the_summary_gives_the_shares_again_over_the_steady_models():
    text = estimate.summary(ROWS)
    assert "Within ±10%: 67%, ±20%: 67%, ±25%: 67% of 3 models" in text
    assert "of the 2 models whose repeats were within 5% of each other" in text
    assert "within ±10%: 100%, ±20%: 100%" in text
    assert "speedup within ±15%: 50% of 2" in text  # 10/4.3 = 2.33x vs 2.5x measured: -7%; 6.7x vs 10x: -33%
    assert "largest errors: net 0.5 int8 +50%" in text


def test_one_measurement_a_model_gives_no_spread_and_no_steady_share():
    rows = [_row("net base", 10.0, [10.0]), _row("net 0.5 fp32", 4.0, [4.0])]
    assert "whose repeats" not in estimate.summary(rows)
    table = _table(rows)
    assert "| net base | 10.000 [9.000–11.000] | 10.000 (10.000) | – | +0% | yes | 0% |" in table


def test_the_table_gives_each_models_spread():
    table = _table(ROWS)
    assert "| net 0.5 int8 | 1.500 [1.350–1.650] | 1.000 (1.000, 1.400) | 40% | +50% | no | 0% |" in table
    assert "**check set, batch 1**" in table and "| spread |" in table


def test_an_earlier_runs_measurements_are_read_back_per_model_and_batch():
    earlier = {"profiles": [{"profile": "p", "rows": [dict(ROWS[2], other_load=0.02),
                                                      dict(ROWS[0], batch=8, measured_all_ms=[30.0])]},
                            {"profile": "q", "rows": [ROWS[1]]}]}
    got = estimate.earlier_runs(earlier, "p")
    assert got == {("net 0.5 int8", 1): [(1.0, 0.02), (1.4, 0.02)], ("net base", 8): [(30.0, 0.0)]}
    assert estimate.earlier_runs(earlier, "r") == {}


def test_the_table_names_the_earlier_run_whose_measurements_it_reuses():
    assert "measurements taken earlier" not in _table(ROWS)
    results = {"host": {"cpu": "cpu", "cores": 2, "machine": "x86_64", "isa": ["avx2"], "onnxruntime": "1"},
               "date": "today", "sizes": [128], "measured": "old.json (2026-12-07 17:41 UTC)", "profiles": []}
    assert "measurements taken earlier: old.json (2026-12-07 17:41 UTC)" in estimate.render(results)
