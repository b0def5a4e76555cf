"""The robustness tables of an audit: sections by threat model, heads and rows per layout.

Three layouts: "md" (report.md, everything), "wide" (a terminal of 125+ columns) and "narrow"
(80 columns: no CIs or ASR, which stay in report.md / report.json). Transfer and white-box sets
never share a table, and their columns differ because their Δ compares different things
(:mod:`edgerobust.edge.scores.scoring`); ``COLUMNS_MD`` says what each column compares. Torch-free.
"""
from __future__ import annotations

from edgerobust.edge.scores.stats import Proportion


def pct(p: Proportion | None, ci: bool = True) -> str:
    if p is None or p.value is None:
        return "–"
    s = f"{100 * p.value:.1f}%"
    if ci:
        s += f" [{100 * p.ci_low:.1f}–{100 * p.ci_high:.1f}]"
    return s


def pp(delta: float | None) -> str:
    return "–" if delta is None else f"{100 * delta:+.1f} pp".replace("-", "−")


def pval(p: float) -> str:
    """A p-value with the digits that tell which side of 0.001, 0.01 or 0.05 it lies: 0.00104, not 0.001."""
    return "<0.001" if p < 0.001 else f"{p:.3g}"


# Sections of the robustness tables, by SetResult.source: transfer and white-box sets are never mixed.
SECTIONS = (
    (("clean", "transfer"), "clean and transfer sets (crafted on the base model; both models answer the same inputs)"),
    (("whitebox-fp32",), "white-box fp32 sets (crafted on the pruned model itself; "
                         "base: the same attack crafted on the base)"),
    (("whitebox-int8",), "white-box int8 sets (crafted on an int8 simulation of the pruned model, its int8 "
                         "variant's arithmetic; base: the same attack crafted on the base)"),
)

COLUMNS_MD = """**What each column compares**

- **base / deployed**: accuracy of each model, with its 95% Wilson interval. In the clean and transfer
  tables both models answer the same inputs (the clean eval set, or inputs crafted on the base model).
  In the white-box tables each model answers the same attack crafted on itself: the deployed model this
  set (crafted on the compressed model), the base the transfer set of the same attack, eps and settings
  (crafted on the base, so white-box for the base; named under *base set*), over the clean samples both
  sets hold (*n*).
- **Δ** = deployed − base of those two columns, in percentage points: both sides always face the same
  attack. A white-box set without a matching transfer set has no Δ; the note under its table says why.
- **ASR**: attack success rate, the share of the samples a model gets right clean that the set fools.
- **transfer**: the share of samples that fool the base and also fool the deployed model.
- **flips**: the share of samples where the two models' predictions differ on the same inputs.
- **base on these inputs** (white-box): the base on the inputs crafted against the compressed model, i.e.
  transfer in the other direction; not part of Δ.
- **McNemar p**: exact test of deployed vs base correctness, paired by sample (the same inputs; in the
  white-box tables the same clean sample under each model's own attack).

The headline's worst case of a threat model is its set with the lowest deployed accuracy, not the smallest Δ."""


def sections(report) -> list[tuple[str, list]]:
    """(title, sets) per source present in the report, in SECTIONS order; unknown sources last."""
    known = {src for srcs, _ in SECTIONS for src in srcs}
    out = [(title, [s for s in report.sets if getattr(s, "source", "transfer") in srcs]) for srcs, title in SECTIONS]
    out.append(("other sets", [s for s in report.sets if getattr(s, "source", "transfer") not in known]))
    return [(t, sets) for t, sets in out if sets]


_HEADS = {
    ("transfer", "md"): ["set", "n", "base acc [95% CI]", "deployed acc [95% CI]", "Δ", "ASR base", "ASR deployed",
                         "transfer", "flips", "McNemar p"],
    ("transfer", "wide"): ["set", "n", "base acc [95% CI]", "deployed acc [95% CI]", "Δ", "ASR base → dep.",
                           "transfer", "flips", "McNemar p"],
    ("transfer", "narrow"): ["set", "n", "base", "deployed", "Δ", "transfer", "flips", "McNemar p"],
    ("whitebox", "md"): ["set", "n", "base, own attack [95% CI]", "deployed [95% CI]", "Δ", "base set",
                         "ASR deployed", "base on these inputs", "McNemar p"],
    ("whitebox", "wide"): ["set", "n", "base, own attack [95% CI]", "deployed [95% CI]", "Δ", "ASR deployed",
                           "base on these inputs", "McNemar p"],
    ("whitebox", "narrow"): ["set", "n", "base", "deployed", "Δ", "base on these", "McNemar p"],
}


def _transfer_row(s, mode: str) -> list[str]:
    ci = mode != "narrow"
    asr = [pct(s.base.attack_success, ci=False), pct(s.deployed.attack_success, ci=False)]
    if mode != "md":
        asr = [f"{asr[0]} → {asr[1]}" if s.kind == "adversarial" else "–"]
    row = [s.name, str(s.n), pct(s.base.accuracy, ci), pct(s.deployed.accuracy, ci), pp(s.delta_accuracy),
           *asr, pct(s.transfer_success, ci=False), pct(s.flip_rate, ci=False), pval(s.mcnemar.p_value)]
    return [row[i] for i in (0, 1, 2, 3, 4, 6, 7, 8)] if mode == "narrow" else row


def _whitebox_row(s, mode: str) -> list[str]:
    ci, ref = mode != "narrow", s.reference
    # an 80-column terminal drops the "whitebox-int8/" prefix: the section title says it
    name = s.name.split("/", 1)[-1] if mode == "narrow" else s.name
    row = [name, str(ref.n if ref else s.n), pct(ref.base, ci) if ref else "–",
           pct(ref.deployed if ref else s.deployed.accuracy, ci), pp(s.delta_accuracy)]
    if mode == "md":
        row.append(ref.set if ref else "–")
    if mode != "narrow":
        row.append(pct(s.deployed.attack_success, ci=False))
    return row + [pct(s.base.accuracy, ci=False), pval(ref.mcnemar.p_value) if ref else "–"]


def robustness_table(sets, mode: str) -> tuple[list[str], list[list[str]], list[str]]:
    """(head, rows, notes) of one section; ``mode`` is "md", "wide" or "narrow"."""
    kind = "whitebox" if sets and all(getattr(s, "whitebox", False) for s in sets) else "transfer"
    row = _whitebox_row if kind == "whitebox" else _transfer_row
    notes = [f"{s.name}: {s.delta_note}" for s in sets if getattr(s, "delta_note", None)]
    return _HEADS[(kind, mode)], [row(s, mode) for s in sets], notes
