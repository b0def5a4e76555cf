"""The budget search (edgerobust optimize) against random search with the same number of trials and
against the full grid, on the digits zoo model: trials and wall time to reach the grid's best robust
accuracy under the budget (half the base's p50 at batch 1 on one thread).

    .venv/bin/python benchmarks/optimize.py [--quick] [--model m.pt] [--work DIR]

--quick: a 12-point grid (sparsity 0.3/0.5/0.7 x uniform/global x int8/fp32, no fine-tuning), 6
trials per sampler; without it a 24-point grid (fine-tuning 0 or 1 epoch) and 10 trials. Each method
builds its points from scratch in its own folder, so the wall times compare compute. The figures
depend on this host's timing noise: a point near the budget may count as inside for one method and
outside for another.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _space(quick: bool):
    from edgerobust.research.optimize.configs import SearchSpace

    grid = {"sparsity": [0.3, 0.5, 0.7], "ratios": ["uniform", "global"], "round_to": [8], "mode": ["standard"],
            "epochs": [0] if quick else [0, 1], "precision": ["int8", "fp32"], "calibration": ["minmax"],
            "keep_fp32": ["none"]}
    space = SearchSpace(sparsity_min=0.3, sparsity_max=0.7, ratios=("uniform", "global"), round_to=(8,),
                        modes=("standard",), epochs_min=0, epochs_max=0 if quick else 1, calibrations=("minmax",),
                        keep_fp32=("none",))
    return space, grid


def _run(name: str, model: Path, out: Path, trials: int, budget: float, space, sampler) -> dict:
    from edgerobust.errors import QualityGateError
    from edgerobust.research.optimize.configs import OptimizeConfig
    from edgerobust.research.optimize.search import optimize
    from edgerobust.workstation.attacks.spec import make_specs
    from edgerobust.workstation.configs import PrepareConfig

    cfg = OptimizeConfig(PrepareConfig(model, eval_samples=200, device="cpu"), out=out, profile="laptop-cpu-1thread",
                         max_latency_ms=budget, attacks=make_specs("fgsm,pgd", "8/255"), trials=trials,
                         max_clean_drop=100.0, space=space)
    t0 = time.perf_counter()
    try:
        optimize(cfg, sampler=sampler)
    except QualityGateError:
        pass
    data = json.loads((out / "pareto.json").read_text())["_data"]
    return {"name": name, "seconds": time.perf_counter() - t0, "trials": data["trials"],
            "built": sum(t["state"] == "complete" for t in data["trials"])}


def _first_reach(run: dict, target: float) -> tuple[int | None, float]:
    """The first trial (1-based) whose feasible robust accuracy reaches ``target``, and the trials'
    own seconds spent up to it (all of them when it never does)."""
    spent = 0.0
    for i, t in enumerate(sorted(run["trials"], key=lambda t: t["number"]), 1):
        spent += t.get("seconds", 0.0)
        if t.get("feasible") and t["robust"]["value"] >= target - 1e-9:
            return i, spent
    return None, spent


def main() -> None:
    import optuna

    from edgerobust.edge.runtime.host import host_info

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-optimize-"))
    model = args.model
    if model is None:
        from edgerobust.workstation.train.zoo import train_zoo

        model = train_zoo("digits-cnn", work / "digits-cnn.pt").path
    space, grid = _space(args.quick)
    n_grid = 1
    for v in grid.values():
        n_grid *= len(v)
    trials = 6 if args.quick else 10
    probe = _run("probe", model, work / "probe", 1, 1e9, space, None)  # the base's p50, measured
    base = json.loads((work / "probe" / "pareto.json").read_text())["_data"]["base"]["latency"]["p50_ms"]
    budget = base / 2
    # the grid run holds the enqueued reference too (a grid point: reused, not rebuilt), so n_grid + 1 trials
    # visit every grid point (GridSampler does not count the enqueued one as visited)
    runs = [_run("grid", model, work / "grid", n_grid + 1, budget, space, optuna.samplers.GridSampler(grid, seed=0)),
            _run("random", model, work / "random", trials, budget, space, optuna.samplers.RandomSampler(seed=0)),
            _run("tpe (optimize)", model, work / "tpe", trials, budget, space, None)]
    feasible = [t["robust"]["value"] for t in runs[0]["trials"] if t.get("feasible")]
    target = max(feasible) if feasible else None
    h = host_info()
    print(f"host: {h.cpu}, {h.cores} cores, ISA {'/'.join(h.isa) or 'unknown'}; optuna {optuna.__version__}; "
          f"base p50 {base:.3g} ms (laptop-cpu-1thread), budget {budget:.3g} ms; probe {probe['seconds']:.0f} s")
    print(f"grid's best robust accuracy under the budget: {'none' if target is None else f'{100 * target:.1f}%'}")
    grid_s = sum(t.get("seconds", 0.0) for t in runs[0]["trials"])
    print("wall s: the whole run (base stage, trials, the chosen bundle's compress and audit); trial s to reach: "
          "the trials' own seconds until the grid's best was reached, against all the grid's trials")
    print(f"{'method':<16}{'trials':>7}{'built':>7}{'wall s':>8}{'reached at':>12}{'trial s to reach':>18}"
          f"{'of grid':>9}")
    for r in runs:
        at, spent = _first_reach(r, target) if target is not None else (None, 0.0)
        print(f"{r['name']:<16}{len(r['trials']):>7}{r['built']:>7}{r['seconds']:>8.0f}"
              f"{'-' if at is None else f'trial {at}':>12}{spent:>18.0f}{100 * spent / grid_s:>8.0f}%")


if __name__ == "__main__":
    main()
