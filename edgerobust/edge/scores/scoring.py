"""Scores of base and deployed on one set, and what each Δ compares.

Every Δ answers one question with both models facing the same attack:

* clean and **transfer** sets (crafted on the base model): Δ = deployed − base accuracy on the
  very same inputs;
* **white-box** sets (crafted on the compressed model itself): Δ = the deployed model's
  accuracy on inputs crafted against itself − the base's accuracy on inputs crafted against
  the base by the same attack, eps and settings. That base-side set is the transfer set of the
  same attack (crafted on the base, so white-box for the base), over the clean samples both
  sets hold. Without such a set there is no Δ, and ``delta_note`` says why.

Torch-free.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerobust.edge.files.bundle import AdvSet, adv_source
from edgerobust.edge.scores.stats import (McNemar, Proportion, accuracy, attack_success_rate, flip_rate, mcnemar_exact, proportion,
                    transfer_success_rate)

# Attack metadata an adversarial set's scores carry into the report.
ATTACK_KEYS = ("attack", "eps", "eps_text", "norm", "params", "base_accuracy", "target", "gradient_check")


@dataclass(frozen=True)
class ModelScores:
    """One model on one set. For an adversarial set, ``clean_accuracy`` is on the same samples."""

    accuracy: Proportion
    clean_accuracy: Proportion | None = None
    attack_success: Proportion | None = None


@dataclass(frozen=True)
class Reference:
    """The two sides of a white-box set's Δ, over the clean samples both sets hold.

    set: the transfer set the base answered (same attack, eps and settings, crafted on the
    base). n: the samples paired. base / deployed: each model on inputs crafted against
    itself. mcnemar: exact test of the paired correctness.
    """

    set: str
    n: int
    base: Proportion
    deployed: Proportion
    mcnemar: McNemar


@dataclass(frozen=True)
class SetResult:
    """Base and deployed on one set (clean or adversarial), side by side.

    ``base`` and ``deployed`` are both models on this set's inputs. ``delta_accuracy`` is
    defined in the module docstring: on these inputs for clean and transfer sets, from
    ``reference`` for white-box sets (None, with ``delta_note``, when there is no reference).
    """

    name: str
    kind: str  # "clean" or "adversarial"
    path: str
    n: int
    attack: dict
    base: ModelScores
    deployed: ModelScores
    delta_accuracy: float | None
    flip_rate: Proportion
    transfer_success: Proportion | None
    mcnemar: McNemar
    # "clean"; "transfer" (crafted on the base model); "whitebox-fp32" / "whitebox-int8" (crafted
    # on the pruned model / an int8 simulation of its int8 variant: edgerobust.workstation.attacks.whitebox)
    source: str = "transfer"
    reference: Reference | None = None
    delta_note: str | None = None
    # the bundle's other precision variants (e.g. "fp32", "fp16") on this set's inputs, when the
    # audit replayed them: accuracy (and, on adversarial sets, clean accuracy and attack success)
    variants: dict[str, ModelScores] = dataclasses.field(default_factory=dict)

    @property
    def whitebox(self) -> bool:
        return self.source.startswith("whitebox")


@dataclass(frozen=True)
class Outcome:
    """Per-sample correctness of both models on one adversarial set, keyed by eval row (idx)."""

    idx: np.ndarray
    base: np.ndarray
    deployed: np.ndarray


def _delta(a: Proportion, b: Proportion) -> float | None:
    return None if a.value is None or b.value is None else a.value - b.value


MAIN_ROLES = ("base", "deployed")


def score_clean(name: str, path: Path, y: np.ndarray, pred: dict[str, np.ndarray]) -> SetResult:
    base, dep = accuracy(pred["base"], y), accuracy(pred["deployed"], y)
    return SetResult(
        name=name, kind="clean", path=str(path), n=len(y), attack={},
        base=ModelScores(accuracy=base), deployed=ModelScores(accuracy=dep),
        delta_accuracy=_delta(dep, base), flip_rate=flip_rate(pred["base"], pred["deployed"]),
        transfer_success=None, mcnemar=mcnemar_exact(pred["base"] == y, pred["deployed"] == y), source="clean",
        variants={r: ModelScores(accuracy=accuracy(p, y)) for r, p in pred.items() if r not in MAIN_ROLES})


def score_adversarial(name: str, path: Path, adv: AdvSet, clean: dict[str, np.ndarray],
                      pred: dict[str, np.ndarray]) -> SetResult:
    """Scores on one adversarial set; ``clean`` are the predictions on the eval rows at adv.idx.

    A white-box set's Δ is filled in later by :func:`with_references`.
    """
    y = adv.y
    scores = {
        role: ModelScores(accuracy=accuracy(pred[role], y), clean_accuracy=accuracy(clean[role], y),
                          attack_success=attack_success_rate(clean[role], pred[role], y))
        for role in pred
    }
    source = adv_source(adv.meta)
    white = source.startswith("whitebox")
    return SetResult(
        name=name, kind="adversarial", path=str(path), n=len(y),
        attack={k: adv.meta.get(k) for k in ATTACK_KEYS if k in adv.meta},
        base=scores["base"], deployed=scores["deployed"],
        delta_accuracy=None if white else _delta(scores["deployed"].accuracy, scores["base"].accuracy),
        flip_rate=flip_rate(pred["base"], pred["deployed"]),
        # transfer success is base -> deployed; a white-box set was crafted on the compressed model
        transfer_success=None if white else
        transfer_success_rate(clean["base"], pred["base"], clean["deployed"], pred["deployed"], y),
        mcnemar=mcnemar_exact(pred["base"] == y, pred["deployed"] == y), source=source,
        variants={r: v for r, v in scores.items() if r not in MAIN_ROLES})


# =============================================================================================
# white-box Δ: pair each white-box set with the base's own white-box set


def describe_attack(attack: dict) -> str:
    """``pgd at eps 8/255`` from a set's attack metadata."""
    eps = attack.get("eps_text") or (f"{attack['eps']:.4g}" if isinstance(attack.get("eps"), (int, float)) else "?")
    return f"{attack.get('attack', '?')} at eps {eps}"


def _same_attack(a: dict, b: dict) -> bool:
    ea, eb = a.get("eps"), b.get("eps")
    close = isinstance(ea, (int, float)) and isinstance(eb, (int, float)) and abs(ea - eb) <= 1e-9 * max(1.0, abs(ea))
    return a.get("attack") == b.get("attack") and a.get("norm") == b.get("norm") and close


def match_transfer(white: SetResult, transfers: list[SetResult]) -> tuple[SetResult | None, str | None]:
    """The transfer set of the same attack, eps and settings as a white-box set, or why there is none."""
    same = [t for t in transfers if _same_attack(t.attack, white.attack)]
    exact = [t for t in same if (t.attack.get("params") or {}) == (white.attack.get("params") or {})]
    if exact:
        return exact[0], None
    what = describe_attack(white.attack)
    if same:
        return None, (f"no Δ: the base's {what} set ({same[0].name}) used other attack settings "
                      f"({same[0].attack.get('params')} vs {white.attack.get('params')})")
    return None, (f"no Δ: no transfer set of {what} to measure the base under the same attack crafted on "
                  "itself; craft one with `edgerobust attack` (or compress with the same attacks and eps)")


def reference(white: SetResult, base_set: SetResult, outcomes: dict[str, Outcome]) -> Reference | None:
    """Base on ``base_set`` and deployed on ``white``, paired by eval row; None when no row is shared."""
    w, b = outcomes[white.name], outcomes[base_set.name]
    _, iw, ib = np.intersect1d(w.idx, b.idx, assume_unique=False, return_indices=True)
    if not len(iw):
        return None
    base_ok, dep_ok = b.base[ib], w.deployed[iw]
    return Reference(set=base_set.name, n=len(iw), base=proportion(int(base_ok.sum()), len(iw)),
                     deployed=proportion(int(dep_ok.sum()), len(iw)), mcnemar=mcnemar_exact(base_ok, dep_ok))


def with_references(results: list[SetResult], outcomes: dict[str, Outcome]) -> list[SetResult]:
    """The results with each white-box set's like-for-like Δ (or the reason it has none)."""
    transfers = [s for s in results if s.source == "transfer"]
    out = []
    for s in results:
        if not s.whitebox:
            out.append(s)
            continue
        match, why = match_transfer(s, transfers)
        ref = reference(s, match, outcomes) if match is not None else None
        if match is not None and ref is None:
            why = f"no Δ: {s.name} and {match.name} hold no clean sample in common"
        out.append(dataclasses.replace(s, reference=ref, delta_note=why,
                                       delta_accuracy=_delta(ref.deployed, ref.base) if ref else None))
    return out
