"""The finding of each recipe, in one sentence with the numbers behind it, whatever they turn out to be.

Each function takes the recipe's summarized points and its plan (whose ``focus_eps`` it reads)
and returns the sentence; its docstring is the recipe's description (the help of `edgerobust recipe run`).
"""
from __future__ import annotations

from edgerobust.errors import UsageError
from edgerobust.research.points import Point, find, macs_text, pct

COMPARABLE_PP = 5.0  # within this many points of the base, robust accuracy "stays comparable"


def _v(p: list[Point]) -> Point:
    if not p:
        raise UsageError("A recipe's finding needs a point its sweep did not produce.",
                         why="The `sparsities` or `eps` given leave out what the recipe compares.",
                         fix="Include the recipe's focus eps in `eps`, or leave `eps`/`sparsities` out.")
    return p[0]


def _fmt(p: Point) -> str:
    return pct(p.accuracy, p.accuracy_std)


def _n(p: Point) -> str:
    return f"n={p.n}" + (f", mean ± sd over {p.seeds} seeds" if p.seeds > 1 else "")


def _at(p: Point) -> str:
    """A pruned model as findings name it: the requested sparsity and the realized MACs reduction."""
    return f"s={p.sparsity:g} ({macs_text(p)})"


def transfer(points: list[Point], plan) -> str:
    """Base-crafted adversarial inputs replayed on filter-pruned models (no adversarial training).

    Vora et al. (2023) find that adversarial examples crafted on a base model transfer to its
    filter-pruned versions: their robust accuracy stays comparable to the base's. The recipe
    crafts FGSM and PGD sets once on the base, prunes (L1 filters) at each sparsity with
    standard fine-tuning, and replays the sets on every pruned model (fp32).
    Finding: PGD robust accuracy at 8/255 of each pruned model against the base's.
    """
    at = dict(threat="transfer", attack="pgd", eps_text=plan.focus_eps)
    base = _v(find(points, model="base", **at))
    pruned = sorted((p for p in find(points, **at) if p.model != "base"), key=lambda p: p.sparsity)
    diffs = [100 * (p.accuracy - base.accuracy) for p in pruned]
    worst = max(diffs, key=abs)
    verdict = (f"keep PGD-{plan.focus_eps} robust accuracy within {abs(worst):.1f} pp of the base"
               if abs(worst) <= COMPARABLE_PP else
               f"move PGD-{plan.focus_eps} robust accuracy by up to {worst:+.1f} pp from the base")
    parts = ", ".join(f"s={p.sparsity:g}: {_fmt(p)}" for p in pruned)
    return (f"Pruned models at s={'/'.join(f'{p.sparsity:g}' for p in pruned)} "
            f"({'/'.join(f'{p.macs_reduction:.1f}x' for p in pruned)} fewer MACs) {verdict} when the base-crafted "
            f"sets are replayed on them (base {_fmt(base)}, {parts}; {_n(base)}).")


def mrs(points: list[Point], plan) -> str:
    """Sensitivity-guided (module robustness sensitivity) pruning against uniform pruning at equal MACs.

    Bai et al. measure how much each module's perturbation hurts adversarial robustness and
    prune the insensitive modules harder. The recipe prunes at each sparsity once with uniform
    per-layer ratios and once with MRS-guided ratios (PruneConfig(ratios="mrs"), same overall
    budget), fine-tunes both alike, and compares white-box PGD robust accuracy next to the
    measured MACs reduction of each.
    """
    at = dict(threat="whitebox", attack="pgd", eps_text=plan.focus_eps)
    rows, diffs = [], []
    for s in sorted({p.sparsity for p in points if p.group in ("uniform", "mrs")}):
        u = _v(find(points, group="uniform", sparsity=s, precision="fp32", **at))
        m = _v(find(points, group="mrs", sparsity=s, precision="fp32", **at))
        diffs.append(100 * (m.accuracy - u.accuracy))
        rows.append(f"s={s:g}: mrs {_fmt(m)} at {m.macs_reduction:.1f}x fewer MACs vs uniform {_fmt(u)} at "
                    f"{u.macs_reduction:.1f}x")
    mean = sum(diffs) / len(diffs)
    verb = "beats" if mean > 0 else "trails" if mean < 0 else "matches"
    return (f"Sensitivity-guided pruning {verb} uniform pruning on white-box PGD-{plan.focus_eps} robust accuracy "
            f"by {mean:+.1f} pp on average ({'; '.join(rows)}; {_n(u)}).")


def defence(points: list[Point], plan) -> str:
    """Structured pruning with standard fine-tuning only, as a defence; criteria compared.

    Jordao & Pedrini (2021) report that structured pruning with standard training alone raises
    adversarial robustness (FGSM at 8/255 among others). The recipe prunes with the L1, FPGM
    and random criteria at each sparsity, fine-tunes with standard training, and attacks each
    pruned model white-box (FGSM and PGD crafted on the pruned model itself).
    Finding: how many pruned models beat the base's white-box FGSM 8/255 robust accuracy.
    """
    at = dict(threat="whitebox", attack="fgsm", eps_text=plan.focus_eps)
    base = _v(find(points, model="base", **at))
    pruned = [p for p in find(points, precision="fp32", **at) if p.model != "base"]
    better = [p for p in pruned if p.accuracy > base.accuracy]
    per, macs = [], {}
    for c in dict.fromkeys(p.group for p in pruned):
        ps = sorted((p for p in pruned if p.group == c), key=lambda p: p.sparsity)
        macs[c] = "/".join(f"{p.macs_reduction:.1f}x" for p in ps)
        per.append(f"{c} " + "/".join(_fmt(p) for p in ps))
    if len(set(macs.values())) > 1:  # the criteria compressed differently: quote each one's figures
        per = [f"{text} ({macs[c]} fewer MACs)" for c, text in zip(macs, per)]
    verdict = "raises" if len(better) > len(pruned) / 2 else "does not raise"
    spars = "/".join(f"{s:g}" for s in sorted({p.sparsity for p in pruned}))
    realized = f" ({next(iter(macs.values()))} fewer MACs)" if len(set(macs.values())) == 1 else ""
    return (f"With standard fine-tuning only, structured pruning {verdict} white-box FGSM-{plan.focus_eps} robust "
            f"accuracy here: {len(better)} of {len(pruned)} pruned models beat the base ({_fmt(base)}; at "
            f"s={spars}{realized}: {'; '.join(per)}; {_n(base)}).")


def int8(points: list[Point], plan) -> str:
    """Accuracy against attack strength for fp32 and int8, unpruned and pruned.

    Gorsline et al. (2021) study how quantization changes robustness as the attack gets
    stronger. The recipe quantizes the base (and a pruned model) to int8 with ONNX Runtime
    static quantization and replays FGSM and PGD sets from 1/255 to 16/255, crafted on the
    fp32 base, on fp32 and int8 alike.
    Finding: the int8 - fp32 robust accuracy gap of the unpruned model across eps.
    """
    fp = [p for p in points if p.model == "base" and p.threat == "transfer"]
    q = {(p.attack, p.eps_text): p for p in points if p.sparsity == 0 and p.precision == "int8"
         and p.threat == "transfer"}
    gaps = [(p, q[(p.attack, p.eps_text)]) for p in fp if (p.attack, p.eps_text) in q]
    if not gaps:
        raise UsageError("The int8-strength recipe found no unpruned int8 points to compare.")
    d = [100 * (b.accuracy - a.accuracy) for a, b in gaps]
    f8 = _v([a for a, _ in gaps if a.attack == "pgd" and a.eps_text == plan.focus_eps])
    q8 = q[("pgd", plan.focus_eps)]
    clean_fp = _v(find(points, model="base", threat="clean"))
    clean_q = _v([p for p in points if p.threat == "clean" and p.sparsity == 0 and p.precision == "int8"])
    eps = sorted({a.eps for a, _ in gaps})
    return (f"Across FGSM/PGD from {_eps_text(gaps, eps[0])} to {_eps_text(gaps, eps[-1])}, int8 changes the "
            f"unpruned model's robust accuracy by {min(d):+.1f} to {max(d):+.1f} pp against fp32 (clean "
            f"{_fmt(clean_fp)} -> {_fmt(clean_q)}; PGD-{plan.focus_eps} {_fmt(f8)} -> {_fmt(q8)}; {_n(f8)}).")


def _eps_text(gaps, eps: float) -> str:
    return next(a.eps_text for a, _ in gaps if a.eps == eps)


def advft(points: list[Point], plan) -> str:
    """After pruning 0.5/0.7/0.9, a few epochs of PGD adversarial fine-tuning against standard fine-tuning.

    Thorsteinsson et al. (2024) show that adversarial fine-tuning of a compressed model for a
    few epochs recovers robustness that standard fine-tuning does not. The recipe prunes at each
    sparsity, fine-tunes one copy with standard training and one with PGD adversarial training
    (TrainConfig(mode="pgd-at")) for the same epochs, and attacks both white-box with PGD.
    """
    at = dict(threat="whitebox", attack="pgd", eps_text=plan.focus_eps)
    rows, wins = [], 0
    spars = sorted({p.sparsity for p in points if p.group in ("standard", "pgd-at")})
    for s in spars:
        a = _v(find(points, group="pgd-at", sparsity=s, **at))
        b = _v(find(points, group="standard", sparsity=s, **at))
        ca = _v(find(points, group="pgd-at", sparsity=s, threat="clean"))
        cb = _v(find(points, group="standard", sparsity=s, threat="clean"))
        wins += a.accuracy > b.accuracy
        rows.append(f"{_at(a)}: {_fmt(a)} vs {_fmt(b)}, clean {_fmt(ca)} vs {_fmt(cb)}")
    verb = "beats" if wins == len(spars) else "does not always beat" if wins else "does not beat"
    return (f"PGD adversarial fine-tuning {verb} standard fine-tuning on white-box PGD-{plan.focus_eps} robust "
            f"accuracy at {wins} of {len(spars)} sparsities (pgd-at vs standard, {'; '.join(rows)}; {_n(a)}).")


# =============================================================================================
# running
