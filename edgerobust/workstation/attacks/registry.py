"""The attacks a user can name: one registry entry per torchattacks attack, with its paper and norm,
and the families (``autoattack``) that name several of them at their standard budgets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from edgerobust.errors import UsageError

NORMS = ("Linf", "L2")
OPTIONS = ("steps", "alpha", "random_start", "seed")


class SpecFields(Protocol):
    """What a registry entry reads of an attack config (edgerobust.workstation.attacks.spec.AttackSpec).

    ``n_classes``: the model's output width, filled in at craft time (None before).
    """

    eps: float
    steps: int | None
    alpha: float | None
    random_start: bool | None
    seed: int
    n_classes: int | None

    def resolved_steps(self) -> int: ...


@dataclass(frozen=True)
class AttackEntry:
    """One attack a user can name: the torchattacks class, its norm and how options map to it.

    ``uses`` names the common options (of ``OPTIONS``) the attack takes; others are ignored and
    never reach the constructor. ``kwargs(spec)`` returns the constructor arguments (without the
    model). ``evals(params)`` gives, per sample, the gradient evaluations (forward + backward)
    and the forward-only evaluations the attack makes at most with those arguments: the basis
    of the expected-time message. ``only_correct``: the attack skips the samples the model
    already gets wrong (so it costs less on a weak model). ``doc`` gives the paper, the norm and
    what the arguments mean.
    """

    name: str
    torchattacks_class: str
    norm: str
    uses: frozenset[str]
    default_steps: int | None
    kwargs: Callable[[SpecFields], dict]
    evals: Callable[[dict], tuple[float, float]]
    only_correct: bool
    doc: str

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0]


@dataclass(frozen=True)
class AttackFamily:
    """Several attacks named at once, each at its own standard budget.

    ``members``: (attack, budget) pairs in the order they are crafted; the budget is the attack's
    ``steps`` (queries for square). ``doc`` gives the paper and what the family stands for.
    """

    name: str
    members: tuple[tuple[str, int], ...]
    doc: str

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0]

    def budget(self, attack: str) -> int | None:
        return dict(self.members).get(attack)


ATTACKS: dict[str, AttackEntry] = {}


def _attack(name: str, cls: str, norm: str, uses: tuple[str, ...] = (), default_steps: int | None = None,
            evals: Callable[[dict], tuple[float, float]] = lambda p: (float(p.get("steps", 1)), 0.0),
            only_correct: bool = False):
    """Register the decorated ``kwargs(spec)`` function as attack ``name``; its docstring is the doc."""

    def deco(fn: Callable[[SpecFields], dict]):
        ATTACKS[name] = AttackEntry(name, cls, norm, frozenset(uses), default_steps, fn, evals, only_correct,
                                    fn.__doc__ or "")
        return fn

    return deco


# AutoAttack's targeted attacks try the 9 classes with the highest logits after the true one
# (Croce & Hein 2020, standard version); torchattacks takes that as n_classes = targets + 1.
AUTOATTACK_TARGETS = 9


def _target_classes(s: SpecFields, attack: str) -> int:
    """torchattacks' ``n_classes`` for a targeted AutoAttack component: the model's classes, at most 10."""
    if s.n_classes is None:
        raise UsageError(f"{attack} needs the number of classes the model outputs.",
                         why="Its targets are the classes with the highest logits after the true one.",
                         fix="Craft through craft_set, which reads it from the model's output width "
                             "(or set n_classes on the AttackSpec).")
    if s.n_classes < 2:
        raise UsageError(f"{attack} needs a model with at least 2 classes; this one outputs {s.n_classes}.")
    return min(int(s.n_classes), AUTOATTACK_TARGETS + 1)


@_attack("fgsm", "FGSM", "Linf")
def _fgsm(s: SpecFields) -> dict:
    """FGSM, one gradient-sign step (Goodfellow et al. 2015, arXiv:1412.6572). Norm Linf.

    x + eps * sign(grad of the loss). eps: the Linf radius. steps, alpha, random_start and seed
    do not apply (the attack is deterministic).
    """
    return {"eps": s.eps}


@_attack("pgd", "PGD", "Linf", ("steps", "alpha", "random_start", "seed"), 10)
def _pgd(s: SpecFields) -> dict:
    """PGD, projected gradient descent (Madry et al. 2018, arXiv:1706.06083). Norm Linf.

    eps: the Linf radius. steps (default 10) gradient-sign steps of size alpha (default
    2.5*eps/steps), each projected back onto the eps ball. random_start (default on) starts
    from a uniform random point in the ball; seed drives it.
    """
    steps = s.resolved_steps()
    return {"eps": s.eps, "alpha": s.alpha if s.alpha is not None else 2.5 * s.eps / steps,
            "steps": steps, "random_start": True if s.random_start is None else s.random_start}


@_attack("pgdl2", "PGDL2", "L2", ("steps", "alpha", "random_start", "seed"), 10)
def _pgdl2(s: SpecFields) -> dict:
    """PGD in L2 (Madry et al. 2018, arXiv:1706.06083). Norm L2.

    eps: the per-sample L2 radius (over all C*H*W pixels). steps (default 10) steps of length
    alpha (default 2.5*eps/steps) along the L2-normalized gradient, each projected onto the
    ball. random_start (default on) starts from a random point in the ball; seed drives it.
    """
    steps = s.resolved_steps()
    return {"eps": s.eps, "alpha": s.alpha if s.alpha is not None else 2.5 * s.eps / steps,
            "steps": steps, "random_start": True if s.random_start is None else s.random_start,
            "eps_for_division": 1e-10}


@_attack("mifgsm", "MIFGSM", "Linf", ("steps", "alpha"), 10)
def _mifgsm(s: SpecFields) -> dict:
    """MI-FGSM, momentum iterative FGSM (Dong et al. 2018, arXiv:1710.06081). Norm Linf; transfer.

    eps: the Linf radius. steps (default 10) sign steps of size alpha (default eps/steps, as in
    the paper) on a gradient accumulated with momentum decay 1.0, which transfers better to
    other models than PGD. No random start.
    """
    steps = s.resolved_steps()
    return {"eps": s.eps, "alpha": s.alpha if s.alpha is not None else s.eps / steps,
            "steps": steps, "decay": 1.0}


@_attack("difgsm", "DIFGSM", "Linf", ("steps", "alpha", "random_start", "seed"), 10)
def _difgsm(s: SpecFields) -> dict:
    """DI-FGSM, diverse-input iterative FGSM (Xie et al. 2019, arXiv:1803.06978). Norm Linf; transfer.

    eps: the Linf radius. steps (default 10) sign steps of size alpha (default eps/steps); at
    each step, with probability 0.5, the input is shrunk to 90-100% and randomly padded back,
    which makes the perturbation transfer better. random_start (default off); seed drives the
    input transformations.
    """
    steps = s.resolved_steps()
    return {"eps": s.eps, "alpha": s.alpha if s.alpha is not None else s.eps / steps,
            "steps": steps, "decay": 0.0, "resize_rate": 0.9, "diversity_prob": 0.5,
            "random_start": False if s.random_start is None else s.random_start}


@_attack("cw", "CW", "L2", ("steps", "alpha"), 100)
def _cw(s: SpecFields) -> dict:
    """CW-L2, Carlini & Wagner's minimum-norm attack (2017, arXiv:1608.04644). Norm L2.

    Minimizes ||delta||_2^2 + c * f(x + delta) with Adam in tanh space (c = 1, kappa = 0,
    no binary search over c). steps (default 100) Adam steps of learning rate alpha (default
    0.01). CW has no eps: edgerobust clips each result onto the L2 ball of radius eps afterwards,
    so a sample whose CW perturbation is larger is scaled back (and may no longer fool the model).
    """
    return {"c": 1.0, "kappa": 0.0, "steps": s.resolved_steps(),
            "lr": s.alpha if s.alpha is not None else 0.01}


@_attack("apgd", "APGD", "Linf", ("steps", "seed"), 10, evals=lambda p: (float(p["steps"] * p["n_restarts"]), 0.0), only_correct=True)
def _apgd(s: SpecFields) -> dict:
    """APGD-CE, AutoAttack's step-size-free PGD on cross-entropy (Croce & Hein 2020, arXiv:2003.01690). Norm Linf.

    eps: the Linf radius. steps (default 10 alone, 100 in the autoattack family) iterations; the step size adapts by itself (no
    alpha) and it always starts at a random point (one restart) drawn from seed.
    """
    return {"norm": "Linf", "eps": s.eps, "steps": s.resolved_steps(), "n_restarts": 1,
            "seed": s.seed, "loss": "ce", "eot_iter": 1, "rho": 0.75, "verbose": False}


@_attack("square", "Square", "Linf", ("steps", "seed"), 1000,
         evals=lambda p: (0.0, float(p["n_queries"] * p["n_restarts"])), only_correct=True)
def _square(s: SpecFields) -> dict:
    """Square Attack, query-based black box (Andriushchenko et al. 2020, arXiv:1912.00049). Norm Linf.

    eps: the Linf radius. steps is the query budget per sample (default 1000 alone, 5000 in the
    autoattack family): random square
    patches of +-eps are kept when they lower the margin loss; needs no gradients. seed drives
    the random search.
    """
    return {"norm": "Linf", "eps": s.eps, "n_queries": s.resolved_steps(), "n_restarts": 1,
            "p_init": 0.8, "loss": "margin", "resc_schedule": True, "seed": s.seed, "verbose": False}


@_attack("apgd-t", "APGDT", "Linf", ("steps", "seed"), 10,
         evals=lambda p: (float(p["steps"] * p["n_restarts"] * (p["n_classes"] - 1)), 0.0), only_correct=True)
def _apgdt(s: SpecFields) -> dict:
    """APGD-T, AutoAttack's targeted APGD on the DLR loss (Croce & Hein 2020, arXiv:2003.01690). Norm Linf.

    eps: the Linf radius. For each of the 9 classes with the highest logits after the true one
    (fewer when the model has fewer classes), steps (default 10 alone, 100 in the autoattack
    family) iterations of APGD towards that class, on the samples not yet broken; one restart
    from a random point drawn from seed. The number of classes is read from the model's output
    width at craft time (torchattacks' ``n_classes``, capped at 10 for AutoAttack's 9 targets).
    """
    return {"norm": "Linf", "eps": s.eps, "steps": s.resolved_steps(), "n_restarts": 1, "seed": s.seed,
            "eot_iter": 1, "rho": 0.75, "verbose": False, "n_classes": _target_classes(s, "apgd-t")}


@_attack("fab-t", "FAB", "Linf", ("steps", "seed"), 10,
         evals=lambda p: (float(p["steps"] * p["n_restarts"] * (p["n_classes"] - 1)),) * 2, only_correct=True)
def _fabt(s: SpecFields) -> dict:
    """FAB-T, targeted Fast Adaptive Boundary attack (Croce & Hein 2020, arXiv:1907.02044). Norm Linf.

    A minimum-norm attack: for each of the 9 classes with the highest logits after the true one
    (fewer when the model has fewer classes), steps (default 10 alone, 100 in the autoattack
    family) projections onto the linearized decision boundary with that class, on the samples
    not yet broken; a sample counts as broken only within eps. AutoAttack's standard settings:
    one restart, alpha_max 0.1, eta 1.05, beta 0.9; seed drives the restarts. The number of
    classes is read from the model at craft time (``n_classes``, capped at 10 for 9 targets).
    """
    return {"norm": "Linf", "eps": s.eps, "steps": s.resolved_steps(), "n_restarts": 1, "alpha_max": 0.1,
            "eta": 1.05, "beta": 0.9, "verbose": False, "seed": s.seed, "multi_targeted": True,
            "n_classes": _target_classes(s, "fab-t")}


FAMILIES: dict[str, AttackFamily] = {
    "autoattack": AttackFamily(
        "autoattack", (("apgd", 100), ("apgd-t", 100), ("fab-t", 100), ("square", 5000)),
        """AutoAttack, standard version (Croce & Hein 2020, arXiv:2003.01690). Norm Linf.

        APGD-CE and APGD-T (100 iterations each), FAB-T (100 iterations) and Square (5000
        queries), each its own set at each eps. A sample counts as robust only when it stands
        against all four (the audit's per-sample worst case); then the figure is AutoAttack-grade.
        """),
}
