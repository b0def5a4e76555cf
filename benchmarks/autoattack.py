"""edgerobust's `autoattack` family against torchattacks' AutoAttack run by hand, on the same samples.

A small CNN on digits with raw pixels (the zoo's digits-cnn trained with edgerobust's own training
loop, normalization none: the model sees [0, 1] pixels), eps 0.05 in Linf, the evaluation split
(359 samples; `--samples` to shrink). For the base model it reports, each as robust accuracy
(correct clean and on the adversarial input) and seconds (`--rows` picks rows):

  pgd                 PGD-10, PGD-50, one set each (craft_set)
  family              edgerobust's autoattack: craft_sets(make_specs("autoattack", eps)), four sets,
                      per-sample worst case (robust only if correct clean and on every set)
  torchattacks        torchattacks.AutoAttack(version='standard', norm='Linf', eps, n_classes=10) by hand
  torchattacks-paper  torchattacks' APGD, APGDT, FAB (multi-targeted) and Square at the paper's budgets
                      (100, 100, 100 iterations, 5000 queries), chained by MultiAttack, by hand
  family-at-torchattacks-budgets   (not by default) edgerobust's family at torchattacks AutoAttack's
                      own budgets: `autoattack,apgd:10,apgd-t:10,fab-t:10`

and checks issue 25's done-when: edgerobust's figure within 1.5 points of torchattacks'. Note that
torchattacks' AutoAttack builds its APGD, APGD-T and FAB with the classes' default 10 iterations
where the paper's standard version uses 100; edgerobust's family uses the paper's budgets, hence
the torchattacks-paper row (and the last row, like for like the other way). Prints a markdown table and the host; `--json PATH` saves the data. On a shared
host, `--threads 1` keeps torch's threads from waiting on each other.

    .venv/bin/python benchmarks/autoattack.py [--samples 359] [--eps 0.05] [--threads 1] [--rows pgd,family]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.edge.runtime.host import OtherLoad, host_info
from edgerobust.workstation.attacks import craft_set, craft_sets, craft_time, make_specs

TOLERANCE = 1.5  # points: issue 25's done-when


def train_raw_pixels(seed: int, epochs: int) -> tuple[torch.nn.Module, np.ndarray, np.ndarray, float]:
    """The zoo's digits-cnn trained on raw [0, 1] pixels (no normalization) with edgerobust's loop;
    returns the model and the evaluation split it never saw, and the training seconds."""
    from edgerobust.workstation.data.sources import load_data, split
    from edgerobust.workstation.train.finetune import train
    from edgerobust.workstation.configs import TrainConfig
    from edgerobust.workstation.model.nets import ZOO, PixelModel

    entry = ZOO["digits-cnn"]
    ds = load_data(entry.data, image_size=entry.image_size)
    sp = split(ds, seed=seed)
    torch.manual_seed(seed)
    model = PixelModel(entry.factory(num_classes=ds.num_classes, in_channels=ds.input_shape[0]), (0.0,), (1.0,))
    t0 = time.perf_counter()
    train(model, sp.train.x, sp.train.y, sp.val.x, sp.val.y,
          TrainConfig(epochs=epochs, lr=entry.lr, batch_size=entry.batch_size), description="train digits-cnn",
          seed=seed)
    return model.eval(), sp.eval.x, sp.eval.y, time.perf_counter() - t0


def load_checkpoint(path: str, seed: int) -> tuple[torch.nn.Module, np.ndarray, np.ndarray, float]:
    from edgerobust.workstation.configs import PrepareConfig
    from edgerobust.workstation.pipeline.prepare import prepare

    prep = prepare(PrepareConfig(model=path, seed=seed, device="cpu"))
    return prep.base.eval(), prep.splits.eval.x, prep.splits.eval.y, 0.0


def correct(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).argmax(1).numpy() == y


def timed(fn):
    load = OtherLoad().start()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, load.stop()


ROWS = ("pgd", "family", "torchattacks", "torchattacks-paper", "family-at-torchattacks-budgets")
DEFAULT_ROWS = ROWS[:4]
# (edgerobust's row, torchattacks' row) pairs compared against TOLERANCE
PAIRS = (("family", "torchattacks"), ("family", "torchattacks-paper"),
         ("family-at-torchattacks-budgets", "torchattacks"))


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    if args.model:
        model, x, y, train_s = load_checkpoint(args.model, args.seed)
    else:
        model, x, y, train_s = train_raw_pixels(args.seed, args.epochs)
    x, y = x[:args.samples], y[:args.samples]
    clean = correct(model, x, y)
    rows = [{"attack": "clean", "robust_accuracy": float(clean.mean()), "seconds": 0.0}]
    robust: dict[str, np.ndarray] = {}
    for name in args.rows:
        rows += ROW_FUNCS[name](model, x, y, clean, args, robust)
    out = {"n": int(len(y)), "eps": args.eps, "seed": args.seed, "train_seconds": train_s, "rows": rows}
    out["gaps"] = [{"edgerobust": ours, "torchattacks": ref,
                    "points": float(100 * (robust[ours].mean() - robust[ref].mean())),
                    "within_tolerance": bool(abs(100 * (robust[ours].mean() - robust[ref].mean())) <= TOLERANCE),
                    "samples_judged_differently": int((robust[ours] != robust[ref]).sum())}
                   for ours, ref in PAIRS if ours in robust and ref in robust]
    import torchattacks

    h = host_info()
    out["host"] = {"cpu": h.cpu, "cores": h.cores, "isa": list(h.isa), "machine": h.machine,
                   "python": platform.python_version(), "torch": torch.__version__,
                   "torchattacks": torchattacks.__version__, "threads": torch.get_num_threads(),
                   "loadavg_start": args.loadavg}
    return out


def row_pgd(model, x, y, clean, args, robust) -> list[dict]:
    rows = []
    for steps in (10, 50):
        spec = make_specs(f"pgd:{steps}", str(args.eps), seed=args.seed)[0]
        s, sec, load = timed(lambda: craft_set(model, x, y, spec, progress=lambda *a, **k: None))
        robust[f"pgd-{steps}"] = clean & correct(model, s.x, y)
        rows.append({"attack": f"PGD-{steps} (edgerobust pgd:{steps})", "robust_accuracy": float(robust[f"pgd-{steps}"].mean()),
                     "seconds": sec, "other_load": load})
    return rows


def row_family(model, x, y, clean, args, robust, text: str = "autoattack", key: str = "family") -> list[dict]:
    """edgerobust's family as `edgerobust attack --attacks autoattack` crafts it: four sets, then the
    per-sample worst case (what the audit reports)."""
    specs = make_specs(text, str(args.eps), seed=args.seed)
    est = craft_time(model, x, specs, y)
    with tempfile.TemporaryDirectory() as tmp:
        paths, sec, load = timed(lambda: craft_sets(model, EvalSet(x=x, y=y), specs, Path(tmp),
                                                    base_sha256="", eval_sha256=""))
        sets = [AdvSet.load(p) for p in paths]
    per = {s.meta["attack"]: correct(model, s.x, y) for s in sets}
    robust[key] = clean & np.logical_and.reduce(list(per.values()))
    return [{"attack": f"edgerobust {text} (per-sample worst case over its 4 sets)",
             "robust_accuracy": float(robust[key].mean()), "seconds": sec, "other_load": load,
             "expected_seconds": est.total,
             "components": {s.meta["attack"]: {"robust_accuracy": float((clean & per[s.meta["attack"]]).mean()),
                                               "seconds": s.meta["seconds"], "params": s.meta["params"],
                                               "expected_seconds": est.seconds[s.meta["name"]]}
                            for s in sets}}]


def row_torchattacks(model, x, y, clean, args, robust) -> list[dict]:
    """torchattacks.AutoAttack(version='standard') by hand: its APGD, APGD-T and FAB at the classes'
    default 10 iterations, Square at 5000 queries, chained (each on the samples still standing)."""
    import torchattacks

    def attack():
        with torch.random.fork_rng():
            a = torchattacks.AutoAttack(model, norm="Linf", eps=args.eps, version="standard", n_classes=10, seed=args.seed)
            return a(torch.from_numpy(x), torch.from_numpy(y)).detach().numpy()

    adv, sec, load = timed(attack)
    robust["torchattacks"] = clean & correct(model, adv, y)
    return [{"attack": "torchattacks AutoAttack(version='standard'), by hand", "seconds": sec, "other_load": load,
             "robust_accuracy": float(robust["torchattacks"].mean()), "max_perturbation": float(np.abs(adv - x).max())}]


def row_torchattacks_paper(model, x, y, clean, args, robust) -> list[dict]:
    """The paper's standard version through torchattacks' classes by hand: APGD-CE, APGD-T, FAB-T at
    100 iterations, Square at 5000 queries, chained by torchattacks.MultiAttack as AutoAttack does."""
    import torchattacks

    def attack():
        kw = {"norm": "Linf", "eps": args.eps, "seed": args.seed, "n_restarts": 1}
        with torch.random.fork_rng():
            a = torchattacks.MultiAttack([
                torchattacks.APGD(model, loss="ce", steps=100, **kw),
                torchattacks.APGDT(model, steps=100, n_classes=10, **kw),
                torchattacks.FAB(model, steps=100, multi_targeted=True, n_classes=10, **kw),
                torchattacks.Square(model, n_queries=5000, **kw)])
            return a(torch.from_numpy(x), torch.from_numpy(y)).detach().numpy()

    adv, sec, load = timed(attack)
    robust["torchattacks-paper"] = clean & correct(model, adv, y)
    return [{"attack": "torchattacks APGD/APGDT/FAB/Square at the paper's 100/100/100/5000, MultiAttack, by hand",
             "seconds": sec, "other_load": load, "robust_accuracy": float(robust["torchattacks-paper"].mean()),
             "max_perturbation": float(np.abs(adv - x).max())}]


def row_family_at_torchattacks_budgets(model, x, y, clean, args, robust) -> list[dict]:
    """edgerobust's family with torchattacks AutoAttack's own budgets (10 iterations), to compare like with like."""
    return row_family(model, x, y, clean, args, robust, "autoattack,apgd:10,apgd-t:10,fab-t:10",
                      "family-at-torchattacks-budgets")


ROW_FUNCS = {"pgd": row_pgd, "family": row_family, "torchattacks": row_torchattacks,
             "torchattacks-paper": row_torchattacks_paper,
             "family-at-torchattacks-budgets": row_family_at_torchattacks_budgets}


def render(res: dict) -> str:
    h = res["host"]
    pgd10 = next((r["seconds"] for r in res["rows"] if r["attack"].startswith("PGD-10")), None)
    lines = [f"host: {h['cpu']}, {h['cores']} cores, ISA {'/'.join(h['isa']) or 'unknown'}, {h['machine']}; "
             f"torch {h['torch']} ({h['threads']} threads), torchattacks {h['torchattacks']}, python {h['python']}; "
             f"load average at start {h['loadavg_start']:.2f}",
             f"digits-cnn, raw pixels, eps {res['eps']} Linf, {res['n']} samples, seed {res['seed']}", "",
             "| attack | robust accuracy | seconds | x PGD-10 | other load |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        if not r["seconds"]:
            lines.append(f"| {r['attack']} | {100 * r['robust_accuracy']:.1f}% | | | |")
            continue
        load, ratio = r.get("other_load"), f"{r['seconds'] / pgd10:.0f}x" if pgd10 else ""
        lines.append(f"| {r['attack']} | {100 * r['robust_accuracy']:.1f}% | {r['seconds']:.1f} | {ratio} | "
                     f"{'' if load is None else f'{load:.0%}'} |")
    for aa in (r for r in res["rows"] if "components" in r):
        lines += ["", f"{aa['attack']}, per component (each its own set; expected = the estimate said before "
                  "crafting):", "", "| component | budget | robust accuracy | seconds | expected seconds |",
                  "|---|---|---|---|---|"]
        for name, c in aa["components"].items():
            budget = c["params"].get("steps", c["params"].get("n_queries"))
            lines.append(f"| {name} | {budget} | {100 * c['robust_accuracy']:.1f}% | {c['seconds']:.1f} | "
                         f"{c['expected_seconds']:.0f} |")
    for g in res["gaps"]:
        lines.append(f"\n{g['edgerobust']} - {g['torchattacks']}: {g['points']:+.1f} points (within {TOLERANCE}: "
                     f"{'yes' if g['within_tolerance'] else 'NO'}); samples judged differently: "
                     f"{g['samples_judged_differently']}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=359, help="evaluation samples attacked (default: all 359)")
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=8, help="training epochs of the digits CNN")
    ap.add_argument("--model", help="a checkpoint to attack instead of training one (its own data and split)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    ap.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                    help=f"comma-separated rows to run: {', '.join(ROWS)} (default: the first four)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    args.loadavg = os.getloadavg()[0]
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if not set(args.rows) <= set(ROWS):
        ap.error(f"--rows takes {', '.join(ROWS)}")
    res = run(args)
    print(render(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
