"""benchmarks/optimize.py's pure helpers (torch-free): the 2-D hypervolume under the budget, its value
after each trial, and the first trial reaching the grid's best."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "optimize.py"
_spec = importlib.util.spec_from_file_location("bench_optimize", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_hypervolume_2d_self_check_and_staircase():
    bench._check_hypervolume()
    hv = bench.hypervolume_2d
    assert hv([(0.1, 0.5), (0.3, 0.8), (0.3, 0.2)], (0.4, 0.0)) == pytest.approx(0.2 * 0.5 + 0.1 * 0.8)
    assert hv([(0.5, 0.9)], (0.4, 0.0)) == 0.0  # over the budget
    assert hv([(0.0, 1.0)], (2.0, 0.0)) / 2.0 == pytest.approx(1.0)  # the ideal point normalizes to 1


def _row(n, feasible, ms, rob, seconds=1.0, **extra):
    return {"number": n, "feasible": feasible, "check_ms": ms, "seconds": seconds, "state": "complete",
            "robust": None if rob is None else {"value": rob, "ci_low": rob, "ci_high": rob}, **extra}


def test_hv_per_trial_is_cumulative_in_trial_order_and_skips_infeasible_rows():
    trials = [_row(2, True, 0.05, 0.4), _row(0, False, 0.2, 0.9), _row(1, True, 0.08, 0.3),
              {"number": 3, "state": "skipped", "feasible": False}]
    curve = bench.hv_per_trial(trials, 0.1)
    assert curve == pytest.approx([0.0, 0.2 * 0.3, 0.5 * 0.4, 0.5 * 0.4])


def test_first_reach_counts_trial_seconds_until_the_target():
    run = {"trials": [_row(1, True, 0.05, 0.3, 2.0), _row(0, True, 0.05, 0.1, 1.0), _row(2, True, 0.05, 0.5, 4.0)]}
    assert bench._first_reach(run, 0.3) == (2, 3.0)
    assert bench._first_reach(run, 0.9) == (None, 7.0)
