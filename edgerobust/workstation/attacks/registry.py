"""The attacks a user can name: one registry entry per torchattacks attack, with its paper and norm."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .spec import AttackSpec

NORMS = ("Linf", "L2")
OPTIONS = ("steps", "alpha", "random_start", "seed")


@dataclass(frozen=True)
class AttackEntry:
    """One attack a user can name: the torchattacks class, its norm and how options map to it.

    ``uses`` names the common options (of ``OPTIONS``) the attack takes; others are ignored and
    never reach the constructor. ``kwargs(spec)`` returns the constructor arguments (without the
    model). ``doc`` gives the paper, the norm and what the arguments mean.
    """

    name: str
    torchattacks_class: str
    norm: str
    uses: frozenset[str]
    default_steps: int | None
    kwargs: Callable[["AttackSpec"], dict]
    doc: str

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0]


ATTACKS: dict[str, AttackEntry] = {}


def _attack(name: str, cls: str, norm: str, uses: tuple[str, ...] = (), default_steps: int | None = None):
    """Register the decorated ``kwargs(spec)`` function as attack ``name``; its docstring is the doc."""

    def deco(fn: Callable[["AttackSpec"], dict]):
        ATTACKS[name] = AttackEntry(name, cls, norm, frozenset(uses), default_steps, fn, fn.__doc__ or "")
        return fn

    return deco


@_attack("fgsm", "FGSM", "Linf")
def _fgsm(s: "AttackSpec") -> dict:
    """FGSM, one gradient-sign step (Goodfellow et al. 2015, arXiv:1412.6572). Norm Linf.

    x + eps * sign(grad of the loss). eps: the Linf radius. steps, alpha, random_start and seed
    do not apply (the attack is deterministic).
    """
    return {"eps": s.eps}


@_attack("pgd", "PGD", "Linf", ("steps", "alpha", "random_start", "seed"), 10)
def _pgd(s: "AttackSpec") -> dict:
    """PGD, projected gradient descent (Madry et al. 2018, arXiv:1706.06083). Norm Linf.

    eps: the Linf radius. steps (default 10) gradient-sign steps of size alpha (default
    2.5*eps/steps), each projected back onto the eps ball. random_start (default on) starts
    from a uniform random point in the ball; seed drives it.
    """
    steps = s.resolved_steps()
    return {"eps": s.eps, "alpha": s.alpha if s.alpha is not None else 2.5 * s.eps / steps,
            "steps": steps, "random_start": True if s.random_start is None else s.random_start}


@_attack("pgdl2", "PGDL2", "L2", ("steps", "alpha", "random_start", "seed"), 10)
def _pgdl2(s: "AttackSpec") -> dict:
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
def _mifgsm(s: "AttackSpec") -> dict:
    """MI-FGSM, momentum iterative FGSM (Dong et al. 2018, arXiv:1710.06081). Norm Linf; transfer.

    eps: the Linf radius. steps (default 10) sign steps of size alpha (default eps/steps, as in
    the paper) on a gradient accumulated with momentum decay 1.0, which transfers better to
    other models than PGD. No random start.
    """
    steps = s.resolved_steps()
    return {"eps": s.eps, "alpha": s.alpha if s.alpha is not None else s.eps / steps,
            "steps": steps, "decay": 1.0}


@_attack("difgsm", "DIFGSM", "Linf", ("steps", "alpha", "random_start", "seed"), 10)
def _difgsm(s: "AttackSpec") -> dict:
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
def _cw(s: "AttackSpec") -> dict:
    """CW-L2, Carlini & Wagner's minimum-norm attack (2017, arXiv:1608.04644). Norm L2.

    Minimizes ||delta||_2^2 + c * f(x + delta) with Adam in tanh space (c = 1, kappa = 0,
    no binary search over c). steps (default 100) Adam steps of learning rate alpha (default
    0.01). CW has no eps: edgerobust clips each result onto the L2 ball of radius eps afterwards,
    so a sample whose CW perturbation is larger is scaled back (and may no longer fool the model).
    """
    return {"c": 1.0, "kappa": 0.0, "steps": s.resolved_steps(),
            "lr": s.alpha if s.alpha is not None else 0.01}


@_attack("apgd", "APGD", "Linf", ("steps", "seed"), 10)
def _apgd(s: "AttackSpec") -> dict:
    """APGD-CE, AutoAttack's step-size-free PGD on cross-entropy (Croce & Hein 2020, arXiv:2003.01690). Norm Linf.

    eps: the Linf radius. steps (default 10) iterations; the step size adapts by itself (no
    alpha) and it always starts at a random point (one restart) drawn from seed.
    """
    return {"norm": "Linf", "eps": s.eps, "steps": s.resolved_steps(), "n_restarts": 1,
            "seed": s.seed, "loss": "ce", "eot_iter": 1, "rho": 0.75, "verbose": False}


@_attack("square", "Square", "Linf", ("steps", "seed"), 1000)
def _square(s: "AttackSpec") -> dict:
    """Square Attack, query-based black box (Andriushchenko et al. 2020, arXiv:1912.00049). Norm Linf.

    eps: the Linf radius. steps is the query budget per sample (default 1000): random square
    patches of +-eps are kept when they lower the margin loss; needs no gradients. seed drives
    the random search.
    """
    return {"norm": "Linf", "eps": s.eps, "n_queries": s.resolved_steps(), "n_restarts": 1,
            "p_init": 0.8, "loss": "margin", "resc_schedule": True, "seed": s.seed, "verbose": False}
