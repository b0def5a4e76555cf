"""Attack configs: AttackSpec (one attack at one eps) and parsing of command-line lists.

The attacks text is a comma-separated list of items. An item is an attack of ``ATTACKS``
(``pgd``), an attack with its budget (``pgd:50``: steps, or queries for square; it overrides the
`steps` option for that attack), or a family of ``FAMILIES`` (``autoattack``), which stands for its
members, each at its own standard budget (`steps` does not apply to them). A member named next to
its family with a budget changes that member's budget inside the family: ``autoattack,square:1000``.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import numpy as np

from edgerobust.eps import as_float, parse_eps
from edgerobust.errors import UsageError
from .registry import ATTACKS, FAMILIES, OPTIONS, AttackEntry

logger = logging.getLogger(__name__)

def split_eps_grid(text: str) -> list[tuple[str, float]]:
    """``"2/255, 8/255"`` -> ``[("2/255", 0.00784...), ("8/255", 0.0313...)]`` (text as typed)."""
    tokens = [t.strip().replace(" ", "") for t in str(text).split(",")]
    out: list[tuple[str, float]] = []
    for t in tokens:
        if not t:
            raise UsageError(f"The eps list {text!r} has an empty entry.",
                             fix="Separate values with single commas, e.g. 2/255,8/255.")
        v = parse_eps(t)
        if any(v == seen for _, seen in out):
            raise UsageError(f"The eps value {t!r} appears twice in {text!r}.", fix="List each eps once.")
        out.append((t, v))
    return out


def parse_eps_grid(text: str) -> list[float]:
    """Comma-separated eps values (``"0"``, ``"0.03"``, ``"2/255,4/255,8/255"``) as floats."""
    return [v for _, v in split_eps_grid(text)]


def parse_attacks(text: str) -> list[str]:
    """The attack names an attacks text stands for, families expanded (``"fgsm,pgd"``, ``"autoattack"``)."""
    return [item.attack for item in parse_attack_items(text)]


@dataclass(frozen=True)
class AttackItem:
    """One attack of an attacks text: its name, the budget typed for it (None: not typed) and the
    family it came from (None: named alone)."""

    attack: str
    steps: int | None = None
    family: str | None = None


def parse_attack_items(text: str) -> list[AttackItem]:
    """The items of an attacks text (see the module docstring), families expanded, each attack once."""
    tokens = [t.strip().lower().replace(" ", "") for t in str(text).split(",")]
    named = [t.partition(":")[0] for t in tokens]
    dupes = sorted({n for n in named if n and named.count(n) > 1})
    if dupes:
        raise UsageError(f"The attack list {text!r} names {', '.join(dupes)} more than once.",
                         fix="List each attack once.")
    items: list[AttackItem] = []
    for token in tokens:
        name, colon, budget = token.partition(":")
        if name in FAMILIES:
            if colon:
                raise UsageError(f"The family {name} takes no budget ({token!r}).",
                                 why=f"Each member keeps its own standard budget: {_members(name)}.",
                                 fix=f"Change one member's budget by naming it next to the family, e.g. "
                                     f"`attacks` {name},{FAMILIES[name].members[0][0]}:20.")
            items.extend(AttackItem(a, b, name) for a, b in FAMILIES[name].members)
            continue
        _check_attack_name(name)
        items.append(AttackItem(name, _budget(name, budget, token) if colon else None))
    families = {i.attack: i.family for i in items if i.family}
    overrides = {}
    for i in items:
        if i.family is None and i.attack in families:
            if i.steps is None:
                fam = families[i.attack]
                raise UsageError(f"{i.attack} is already part of {fam} in {text!r}.",
                                 why=f"{fam} crafts {_members(fam)}.",
                                 fix=f"Give it a budget to change it inside {fam} (e.g. {i.attack}:20), "
                                     f"or name it without {fam}.")
            overrides[i.attack] = i.steps
    return [AttackItem(i.attack, overrides.get(i.attack, i.steps), i.family) for i in items
            if i.family or i.attack not in families]


def _members(family: str) -> str:
    return ", ".join(f"{a} {b} {'queries' if a == 'square' else 'steps'}" for a, b in FAMILIES[family].members)


def _budget(name: str, text: str, token: str) -> int:
    if not re.fullmatch(r"[0-9]{1,18}", text) or int(text) < 1:  # ASCII digits: int() reads more ('²' is a digit)
        raise UsageError(f"Cannot read the budget in {token!r}.",
                         why="A budget is a whole number >= 1 after the attack's name: its steps (queries for square).",
                         fix=f"Write e.g. {name}:50.")
    if "steps" not in ATTACKS[name].uses:
        raise UsageError(f"{name} takes no budget ({token!r}).", why=f"{name} is a single-step attack.",
                         fix=f"Write {name} alone.")
    return int(text)


def _check_attack_name(name: str) -> None:
    if name not in ATTACKS:
        raise UsageError(f"Unknown attack {name!r}." if name else "An attack name is empty.",
                         why=f"Known attacks: {', '.join(ATTACKS)}; families: {', '.join(FAMILIES)}.",
                         fix="Pick names from that list, comma-separated (e.g. `attacks` fgsm,pgd).")


def eps_slug(eps_text: str) -> str:
    """The file-name-safe form of an eps as typed: ``8/255`` -> ``8-255``, ``0.03`` -> ``0.03``."""
    return re.sub(r"[^0-9a-z.\-]", "_", eps_text.strip().lower().replace("/", "-"))


@dataclass(frozen=True)
class AttackSpec:
    """One attack at one strength. ``None`` options take the attack's default (see its entry).

    attack: a key of ``ATTACKS``. eps: the radius in the attack's norm, in [0, 1] pixel units
    (Linf eps <= 1). eps_text: eps as the user typed it (defaults to ``format(eps, ".6g")``).
    steps: iterations (the query budget for square). alpha: step size (Adam's learning rate
    for cw). random_start: start at a random point of the ball. seed: torch seed for crafting.
    family: the family (a key of ``FAMILIES``) the spec belongs to, recorded in the set's meta.
    n_classes: the model's output width, for the attacks that need it (apgd-t, fab-t); craft_set
    fills it from the model, so a user never gives it.
    """

    attack: str
    eps: float
    eps_text: str | None = None
    steps: int | None = None
    alpha: float | None = None
    random_start: bool | None = None
    seed: int = 0
    family: str | None = None
    n_classes: int | None = None

    def __post_init__(self):
        name = str(self.attack).strip().lower()
        _check_attack_name(name)
        object.__setattr__(self, "attack", name)
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float, np.floating, np.integer)):
            raise UsageError(f"eps must be a number; got {self.eps!r}.", fix="Use e.g. eps=8/255.")
        eps = as_float(self.eps)
        if not math.isfinite(eps) or eps < 0:
            raise UsageError(f"eps must be a finite number >= 0; got {self.eps!r}.", fix="Use e.g. eps=8/255.")
        if self.norm == "Linf" and eps > 1:
            raise UsageError(f"The Linf eps {eps:g} for {name} is larger than 1.",
                             why="Pixels lie in [0, 1], so an Linf radius above 1 means nothing.",
                             fix="Write the eps in [0, 1] pixel units, e.g. 8/255 rather than 8.")
        object.__setattr__(self, "eps", eps)
        if self.eps_text is None:
            object.__setattr__(self, "eps_text", format(eps, ".6g"))
        elif not math.isclose(parse_eps(self.eps_text), eps, rel_tol=1e-5, abs_tol=1e-12):
            raise UsageError(f"eps_text {self.eps_text!r} does not match eps {eps!r}.")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer))
                                       or self.steps < 1):
            raise UsageError(f"`steps` must be an integer >= 1; got {self.steps!r}.", fix="Use e.g. `steps` 10.")
        if self.alpha is not None:
            a = as_float(self.alpha)
            if not math.isfinite(a) or a <= 0:
                raise UsageError(f"`alpha` (the step size) must be a finite number > 0; got {self.alpha!r}.",
                                 fix="Leave it out for the attack's default, or use e.g. `alpha` 2/255.")
            object.__setattr__(self, "alpha", a)
        if self.random_start is not None and not isinstance(self.random_start, bool):
            raise UsageError(f"`random_start` must be True, False or None; got {self.random_start!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**63:
            raise UsageError(f"`seed` must be an integer in [0, 2**63); got {self.seed!r}.", fix="Use e.g. `seed` 0.")
        if self.family is not None and (self.family not in FAMILIES or FAMILIES[self.family].budget(name) is None):
            raise UsageError(f"{name} is not a member of the attack family {self.family!r}.",
                             why=f"Families: {', '.join(f'{k} ({_members(k)})' for k in FAMILIES)}.")
        if self.n_classes is not None and (isinstance(self.n_classes, bool) or not isinstance(self.n_classes, (int, np.integer))
                                           or self.n_classes < 1):
            raise UsageError(f"n_classes must be an integer >= 1; got {self.n_classes!r}.")

    @property
    def entry(self) -> AttackEntry:
        return ATTACKS[self.attack]

    @property
    def norm(self) -> str:
        return ATTACKS[self.attack].norm

    @property
    def name(self) -> str:
        """``<attack>_<eps slug>``: the set's name and file stem (``pgd_8-255``)."""
        return f"{self.attack}_{eps_slug(self.eps_text)}"

    def describe(self) -> str:
        """``pgd eps=8/255``; a family's member also names the family and its budget."""
        if self.family is None:
            return f"{self.attack} eps={self.eps_text}"
        unit = "queries" if self.attack == "square" else "steps"
        return f"{self.family} {self.attack} eps={self.eps_text} ({self.resolved_steps()} {unit})"

    def resolved_steps(self) -> int:
        return self.steps if self.steps is not None else (self.entry.default_steps or 1)

    def params(self) -> dict:
        """The torchattacks constructor arguments (without the model) this spec resolves to."""
        return self.entry.kwargs(self)

    def ignored(self) -> list[str]:
        """The options set on this spec that its attack does not take (they are not used)."""
        given = {"steps": self.steps is not None, "alpha": self.alpha is not None,
                 "random_start": self.random_start is not None, "seed": False}
        return [o for o in OPTIONS if given[o] and o not in self.entry.uses]


def make_specs(attacks: str, eps: str, *, steps: int | None = None, alpha: str | float | None = None,
               random_start: bool | None = None, seed: int = 0) -> list[AttackSpec]:
    """The grid ``attacks x eps`` from command-line text (``"fgsm,pgd:50,autoattack"``, ``"2/255,8/255"``).

    ``steps`` applies to the attacks named alone without a budget; a family's members keep their
    own budgets (see the module docstring).
    """
    a = parse_eps(alpha, "alpha") if isinstance(alpha, str) else alpha
    items = parse_attack_items(attacks)
    families = sorted({i.family for i in items if i.family})
    if steps is not None and families:
        logger.warning(f"`steps` ({steps}) applies to the attacks named alone; "
                       + "; ".join(f"{f} keeps its standard budgets ({_members(f)})" for f in families)
                       + f". To change one, give it a budget in `attacks`, e.g. {FAMILIES[families[0]].members[0][0]}:{steps}.")
    return [AttackSpec(i.attack, v, eps_text=t, steps=i.steps if (i.steps is not None or i.family) else steps,
                       alpha=a, random_start=random_start, seed=seed, family=i.family)
            for i in items for t, v in split_eps_grid(eps)]


ATTACK_TABLE_KEYS = ("names", "eps", "steps", "alpha", "random_start")


def attacks_from_config(value, name: str, where: str, data) -> tuple[AttackSpec, ...]:
    """`attacks` as a config file writes it: a table ``{names = "fgsm,pgd", eps = "2/255,8/255", steps = 10}``
    (the flags' form, with optional ``alpha`` and ``random_start``; names 'none' for no sets; names and eps default to the compress defaults), the
    same text alone (``"fgsm,pgd"``), or a list of AttackSpec tables (as a bundle's manifest records
    them). The table's specs are seeded with ``prepare.seed``."""
    from edgerobust.configio import from_dict
    from edgerobust.defaults import DEFAULT_ATTACKS, DEFAULT_EPS

    if isinstance(value, (list, tuple)):
        return tuple(v if isinstance(v, AttackSpec) else from_dict(AttackSpec, v, where=f"{where} ({name}[{i}])")
                     for i, v in enumerate(value))
    if isinstance(value, str):
        value = {"names": value}
    if not isinstance(value, dict):
        raise UsageError(f"'{name}' in {where} must be a table (names, eps, steps), a text of attack names or a list "
                         f"of attack specs; got {value!r}.")
    unknown = sorted(set(value) - set(ATTACK_TABLE_KEYS))
    if unknown:
        raise UsageError(f"Unknown key '{name}.{unknown[0]}' in {where}.",
                         why=f"The attacks table has the keys {', '.join(ATTACK_TABLE_KEYS)}.")
    names, eps, steps = value.get("names", DEFAULT_ATTACKS), value.get("eps", DEFAULT_EPS), value.get("steps")
    if not isinstance(names, str) or not isinstance(eps, str):
        raise UsageError(f"'{name}.names' and '{name}.eps' in {where} are texts, e.g. \"fgsm,pgd\" and \"2/255,8/255\".")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
        raise UsageError(f"'{name}.steps' in {where} must be a whole number; got {steps!r}.")
    alpha, random_start = value.get("alpha"), value.get("random_start")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (str, int, float))):
        raise UsageError(f"'{name}.alpha' in {where} must be a number or a fraction text; got {alpha!r}.")
    if random_start is not None and not isinstance(random_start, bool):
        raise UsageError(f"'{name}.random_start' in {where} must be true or false; got {random_start!r}.")
    if not names.strip() or names.strip().lower() == "none":
        return ()
    prep = data.get("prepare") if hasattr(data, "get") else None
    seed = prep.get("seed", 0) if isinstance(prep, dict) else getattr(prep, "seed", 0)
    return tuple(make_specs(names, eps, steps=steps, alpha=alpha, random_start=random_start, seed=seed))
