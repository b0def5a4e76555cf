"""The budget search (edgerobust optimize) against random search with the same number of trials and
against the full grid, per model: trials and wall time to reach the grid's best robust accuracy under
the budget (half the base's p50 at batch 1 on one thread), and the hypervolume after each trial.

    .venv/bin/python benchmarks/optimize.py [--quick] [--models digits,resnet18] [--model m.pt] [--work DIR]
                                            [--trials N] [--grid-trials N] [--eval-samples N] [--eps E] [--r18-epochs N]

--models: comma-separated, run one after another, one table each. ``digits`` is the digits-cnn zoo
model (the figures in docs/optimize.md); any other zoo name (``digits-resnet``, the demo's model) is
trained the same way; ``resnet18`` is torchvision's resnet18 (10 classes, random init) trained here
for --r18-epochs epochs on the bundled digits resized to 32x32 and repeated to 3 channels (saved as
an npz next to it, so the search reads the same pixels and the same seeded split). Trained models
are kept in --work and reused on a rerun. --model: use this checkpoint instead (one model only).

--quick: a 12-point grid (sparsity 0.3/0.5/0.7 x uniform/global x int8/fp32, one epoch of standard
fine-tuning: without it a pruned model keeps too little accuracy for the comparison to mean anything),
6 trials per sampler; without it a 24-point grid (fine-tuning 1 or 2 epochs) and 10 trials. --trials
overrides the trials per sampler; --grid-trials caps the grid's trials (smoke tests only: the
"grid's best" is then that of the points visited). Each method builds its points from scratch in its
own folder (removed first on a rerun), so the wall times compare compute. The figures depend on this
host's timing noise: a point near the budget may count as inside for one method and outside for
another. --eps: the FGSM and PGD budget (default 8/255; the briefly trained resnet18 keeps about 2%
robust accuracy at 8/255, so a smaller one, e.g. 2/255, separates its points better).

Hypervolume: of the feasible trials' (latency checked against the budget, robust accuracy) points,
the area they dominate up to the reference point (budget ms, robust accuracy 0), divided by
budget x 1.0: 1.0 would be 100% robust accuracy at 0 ms. Printed after each trial, in trial order.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

R18_SIZE = 32  # resnet18's input: the digits resized to 32x32, 3 channels


def hypervolume_2d(points, ref) -> float:
    """The area dominated by ``points`` (cost, value): lower cost and higher value are better, bounded
    by ``ref`` (cost_ref, value_ref). Points with cost above cost_ref or value at or below value_ref
    add nothing. Pure; O(n log n)."""
    c_ref, v_ref = float(ref[0]), float(ref[1])
    pts = sorted((float(c), float(v)) for c, v in points if float(c) <= c_ref and float(v) > v_ref)
    area, best = 0.0, v_ref
    for i, (c, v) in enumerate(pts):
        best = max(best, v)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else c_ref
        area += (nxt - c) * (best - v_ref)
    return area


def _check_hypervolume() -> None:
    """A unit-test-like self-check of hypervolume_2d (also in tests/benchmarks/test_bench_optimize.py)."""
    assert hypervolume_2d([], (1.0, 0.0)) == 0.0
    assert abs(hypervolume_2d([(0.5, 0.4)], (1.0, 0.0)) - 0.2) < 1e-12
    # a dominated point adds nothing; a point over the budget or at value 0 adds nothing
    assert abs(hypervolume_2d([(0.5, 0.4), (0.6, 0.3), (1.5, 0.9), (0.1, 0.0)], (1.0, 0.0)) - 0.2) < 1e-12
    # two non-dominated points: a staircase, order-independent
    hv = (0.5 - 0.2) * 0.1 + (1.0 - 0.5) * 0.4  # (0.2, 0.1) alone from 0.2 to 0.5, then (0.5, 0.4) up to 1.0
    assert abs(hypervolume_2d([(0.5, 0.4), (0.2, 0.1)], (1.0, 0.0)) - hv) < 1e-12
    assert abs(hypervolume_2d([(0.2, 0.1), (0.5, 0.4)], (1.0, 0.0)) - hv) < 1e-12


def _ordered(trials: list[dict]) -> list[dict]:
    return sorted(trials, key=lambda t: t["number"])


def _robust(t: dict) -> float | None:
    r = t.get("robust")
    return r.get("value") if isinstance(r, dict) else None


def hv_per_trial(trials: list[dict], budget_ms: float) -> list[float]:
    """The normalized hypervolume of the feasible trials under the budget after each trial, in order."""
    out, pts = [], []
    for t in _ordered(trials):
        ms, rob = t.get("check_ms"), _robust(t)
        if t.get("feasible") and ms is not None and rob is not None:
            pts.append((ms, rob))
        out.append(hypervolume_2d(pts, (budget_ms, 0.0)) / (budget_ms * 1.0))
    return out


def _space(quick: bool):
    from edgerobust.research.optimize.configs import SearchSpace

    grid = {"sparsity": [0.3, 0.5, 0.7], "ratios": ["uniform", "global"], "round_to": [8], "mode": ["standard"],
            "epochs": [1] if quick else [1, 2], "precision": ["int8", "fp32"], "calibration": ["minmax"],
            "keep_fp32": ["none"]}
    space = SearchSpace(sparsity_min=0.3, sparsity_max=0.7, ratios=("uniform", "global"), round_to=(8,),
                        modes=("standard",), epochs_min=1, epochs_max=1 if quick else 2, calibrations=("minmax",),
                        keep_fp32=("none",))
    return space, grid


def _run(name: str, model: Path, out: Path, trials: int, budget: float, space, sampler, eval_samples: int,
         eps: str) -> dict:
    from edgerobust.errors import QualityGateError
    from edgerobust.research.optimize.configs import OptimizeConfig
    from edgerobust.research.optimize.search import optimize
    from edgerobust.workstation.attacks.spec import make_specs
    from edgerobust.workstation.configs import PrepareConfig

    if out.exists():  # a study in it would be resumed, not rebuilt
        shutil.rmtree(out)
    cfg = OptimizeConfig(PrepareConfig(model, eval_samples=eval_samples, device="cpu"), out=out,
                         profile="laptop-cpu-1thread", max_latency_ms=budget, attacks=make_specs("fgsm,pgd", eps),
                         trials=trials, max_clean_drop=100.0, space=space)
    t0 = time.perf_counter()
    try:
        optimize(cfg, sampler=sampler)
    except QualityGateError:
        pass
    data = json.loads((out / "pareto.json").read_text())["_data"]
    return {"name": name, "seconds": time.perf_counter() - t0, "trials": data["trials"], "data": data,
            "built": sum(t.get("state") == "complete" for t in data["trials"])}


def _first_reach(run: dict, target: float) -> tuple[int | None, float]:
    """The first trial (1-based) whose feasible robust accuracy reaches ``target``, and the trials'
    own seconds spent up to it (all of them when it never does)."""
    spent = 0.0
    for i, t in enumerate(_ordered(run["trials"]), 1):
        spent += t.get("seconds") or 0.0
        rob = _robust(t)
        if t.get("feasible") and rob is not None and rob >= target - 1e-9:
            return i, spent
    return None, spent


# =============================================================================================
# the models


def _digits_rgb32(path: Path) -> str:
    """The bundled digits at 32x32, repeated to 3 channels, saved as an npz; returns its data spec."""
    import numpy as np

    from edgerobust.workstation.data.sources import load_data

    if not path.exists():
        ds = load_data("digits", image_size=R18_SIZE)
        np.savez(path, x=np.repeat(ds.x, 3, axis=1), y=ds.y, class_names=np.asarray(ds.class_names))
    return f"npz:{path.resolve()}"


def train_resnet18(out: Path, epochs: int, seed: int = 0) -> dict:
    """torchvision's resnet18 (10 classes, random init) trained on the digits at 32x32x3 with the
    project's own trainer and split, saved as an edgerobust checkpoint (arch torchvision:resnet18)."""
    import torch
    import torchvision

    from edgerobust.workstation.configs import TrainConfig
    from edgerobust.workstation.data.sources import load_data, split
    from edgerobust.workstation.model.load import save_checkpoint
    from edgerobust.workstation.model.nets import PixelModel
    from edgerobust.workstation.train.finetune import accuracy, train
    from edgerobust.workstation.train.zoo import input_spec

    t0 = time.perf_counter()
    data = _digits_rgb32(out.with_name("digits-rgb32.npz"))
    torch.manual_seed(seed)
    ds = load_data(data)
    sp = split(ds, seed=seed)
    net = torchvision.models.resnet18(weights=None, num_classes=ds.num_classes)
    model = PixelModel(net, ds.mean, ds.std)
    cfg = TrainConfig(epochs=epochs, lr=3e-3, batch_size=64)
    res = train(model, sp.train.x, sp.train.y, sp.val.x, sp.val.y, cfg, description="train resnet18", seed=seed)
    eval_acc = accuracy(model.eval(), sp.eval.x, sp.eval.y)
    save_checkpoint(out, net, "torchvision:resnet18", ds.num_classes, input_spec(ds, data, R18_SIZE),
                    info={"eval_acc": eval_acc, "seed": seed, "epochs": epochs, "history": res.history,
                          "trained_on": {"data": data, "image_size": R18_SIZE, "seed": seed, "split": "train"}})
    return {"eval_acc": eval_acc, "seconds": time.perf_counter() - t0, "eval_samples": len(sp.eval.y)}


def _model(kind: str, work: Path, r18_epochs: int) -> tuple[Path, str]:
    """The checkpoint for ``kind`` (trained into ``work`` unless there already) and a line about it."""
    from edgerobust.workstation.model.nets import ZOO

    if kind == "resnet18":
        path = work / f"resnet18-digits32-e{r18_epochs}.pt"
        meta = path.with_suffix(".json")
        if not (path.exists() and meta.exists()):
            meta.write_text(json.dumps(train_resnet18(path, r18_epochs)))
        m = json.loads(meta.read_text())
        return path, (f"torchvision resnet18 (random init), trained {r18_epochs} epochs on digits 32x32x3 in "
                      f"{m['seconds']:.0f} s: clean accuracy {100 * m['eval_acc']:.1f}% on {m['eval_samples']} "
                      f"held-out samples")
    name = "digits-cnn" if kind == "digits" else kind
    if name not in ZOO:
        raise SystemExit(f"unknown model kind '{kind}': use digits, resnet18 or a zoo name ({', '.join(ZOO)})")
    path = work / f"{name}.pt"
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        from edgerobust.workstation.train.zoo import train_zoo

        r = train_zoo(name, path)
        meta.write_text(json.dumps({"eval_acc": r.eval_acc, "seconds": r.seconds}))
    m = json.loads(meta.read_text())
    return path, (f"zoo {name} (default training, {m['seconds']:.0f} s): clean accuracy "
                  f"{100 * m['eval_acc']:.1f}% on its held-out split")


def _describe_given(model: Path) -> str:
    from edgerobust.workstation.model.load import load_model

    lm = load_model(model)
    acc = (lm.info or {}).get("eval_acc")
    return f"{model} ({lm.arch}){'' if acc is None else f': clean accuracy {100 * acc:.1f}% as recorded'}"


# =============================================================================================
# one model's comparison


def compare(kind: str, model: Path, about: str, work: Path, quick: bool, trials: int, grid_trials: int | None,
            eval_samples: int, eps: str = "8/255") -> dict:
    import optuna

    from edgerobust.edge.runtime.host import host_info

    space, grid = _space(quick)
    n_grid = 1
    for v in grid.values():
        n_grid *= len(v)
    # the reference point (compress's s=0.5 int8) is built beside every study, not a trial: n_grid trials
    g_trials = n_grid if grid_trials is None else min(grid_trials, n_grid)
    probe = _run("probe", model, work / "probe", 1, 1e9, space, None, eval_samples, eps)  # the base's p50, measured
    base = probe["data"]["base"]["latency"]["p50_ms"]
    budget = base / 2
    runs = [_run("grid", model, work / "grid", g_trials, budget, space, optuna.samplers.GridSampler(grid, seed=0),
                 eval_samples, eps),
            _run("random", model, work / "random", trials, budget, space, optuna.samplers.RandomSampler(seed=0),
                 eval_samples, eps),
            _run("tpe (optimize)", model, work / "tpe", trials, budget, space, None, eval_samples, eps)]
    feasible = [_robust(t) for t in runs[0]["trials"] if t.get("feasible") and _robust(t) is not None]
    target = max(feasible) if feasible else None
    h = host_info()
    print(f"\n== {kind}: {about}")
    print(f"host: {h.cpu}, {h.cores} cores, ISA {'/'.join(h.isa) or 'unknown'}; optuna {optuna.__version__}; "
          f"base p50 {base:.3g} ms (laptop-cpu-1thread), budget {budget:.3g} ms; probe {probe['seconds']:.0f} s; "
          f"{eval_samples} eval samples, FGSM+PGD {eps}")
    grid_note = "" if g_trials == n_grid else f" (of {g_trials} of its {n_grid} trials: --grid-trials)"
    print(f"grid's best robust accuracy under the budget{grid_note}: "
          f"{'none' if target is None else f'{100 * target:.1f}%'}")
    grid_s = sum(t.get("seconds") or 0.0 for t in runs[0]["trials"])
    print("wall s: the whole run (base stage, trials, the chosen bundle's compress and audit); trial s to reach: "
          "the trials' own seconds until the grid's best was reached, against all the grid's trials; HV: the "
          "final hypervolume under the budget (/ budget x 1.0)")
    print(f"{'method':<16}{'trials':>7}{'built':>7}{'wall s':>8}{'reached at':>12}{'trial s to reach':>18}"
          f"{'of grid':>9}{'HV':>7}")
    rows = []
    for r in runs:
        at, spent = _first_reach(r, target) if target is not None else (None, 0.0)
        hv = hv_per_trial(r["trials"], budget)
        of_grid = f"{100 * spent / grid_s:.0f}%" if grid_s > 0 else "-"
        print(f"{r['name']:<16}{len(r['trials']):>7}{r['built']:>7}{r['seconds']:>8.0f}"
              f"{'-' if at is None else f'trial {at}':>12}{spent:>18.0f}{of_grid:>9}{hv[-1] if hv else 0.0:>7.3f}")
        rows.append({"method": r["name"], "trials": len(r["trials"]), "built": r["built"], "wall_s": r["seconds"],
                     "reached_at": at, "trial_s_to_reach": spent, "grid_trial_s": grid_s, "hv_per_trial": hv})
    print("hypervolume after each trial (/ budget x 1.0):")
    for row in rows:
        print(f"  {row['method']:<16}" + " ".join(f"{v:.3f}" for v in row["hv_per_trial"]))
    summary = {"model": kind, "about": about, "host": {"cpu": h.cpu, "cores": h.cores, "isa": list(h.isa)},
               "optuna": optuna.__version__, "base_p50_ms": base, "budget_ms": budget, "eval_samples": eval_samples, "eps": eps,
               "quick": quick, "grid_trials": g_trials, "grid_points": n_grid, "target": target, "rows": rows}
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    _check_hypervolume()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default="digits", help="comma-separated: digits, resnet18, or zoo names")
    ap.add_argument("--model-kind", dest="models", help="alias of --models")
    ap.add_argument("--model", type=Path, help="this checkpoint instead of training one (one model only)")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--trials", type=int, help="trials per sampler (default 6 with --quick, else 10)")
    ap.add_argument("--grid-trials", type=int, help="cap the grid's trials (smoke tests; default the full grid)")
    ap.add_argument("--eval-samples", type=int, default=200, help="samples attacked per point (default 200)")
    ap.add_argument("--eps", default="8/255", help="the FGSM and PGD budget (default 8/255)")
    ap.add_argument("--r18-epochs", type=int, default=8, help="resnet18's training epochs (default 8, about 45 s on 2 cores)")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    if args.model is not None and len(kinds) != 1:
        ap.error("--model goes with one model kind")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-optimize-"))
    trials = args.trials or (6 if args.quick else 10)
    print(f"work: {work}")
    for kind in kinds:
        kwork = work / kind
        kwork.mkdir(parents=True, exist_ok=True)
        if args.model is not None:
            model, about = args.model, _describe_given(args.model)
        else:
            model, about = _model(kind, work, args.r18_epochs)
        print(f"{kind}: model ready ({model}), comparing...", flush=True)
        compare(kind, model, about, kwork, args.quick, trials, args.grid_trials, args.eval_samples, args.eps)


if __name__ == "__main__":
    main()
