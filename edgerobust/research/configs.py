"""The research commands' configs: a sweep's variants and grid, a recipe's knobs. torch-free, but
for the check of a recipe's zoo architecture, which reads the zoo (torch) when no model is given.

Both embed the compress side's :class:`~edgerobust.workstation.configs.PrepareConfig` (which
model, which data, the split, the normalization, the seed, where torch runs) and its stage
configs, rather than repeating their fields:

    from edgerobust.research.configs import SweepConfig
    from edgerobust.workstation.configs import PrepareConfig
    cfg = SweepConfig(PrepareConfig("model.pt", eval_samples=200), out="sweeps/digits", sparsities=(0.5, 0.7))

Errors name fields in backticks, as the library does everywhere (edgerobust.cli.flags).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgerobust.defaults import DEFAULT_ATTACKS, DEFAULT_EPS
from edgerobust.errors import UsageError
from edgerobust.workstation.attacks.spec import make_specs, split_eps_grid
from edgerobust.workstation.configs import PrepareConfig, PruneConfig, QuantConfig, TrainConfig
from edgerobust.workstation.corrupt.registry import load_corruptions, load_severities, parse_corruptions, parse_severities

PRECISIONS = ("fp32", "int8")
THREATS = ("transfer", "whitebox")
# The latency profile of sweeps: one thread at batch 1, so a speedup compares the models' compute
# rather than how each one spreads over this host's cores (and a busy host disturbs it less).
SWEEP_PROFILE = "laptop-cpu-1thread"


def _int_at_least(name: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise UsageError(f"`{name}` must be an integer >= {lo}; got {value!r}.")


@dataclass(frozen=True)
class Variant:
    """One compressed model to build: its sparsity, the plot line (``group``) it belongs to, and
    how it is pruned and fine-tuned (None: the sweep's ``prune`` / ``finetune``)."""

    sparsity: float
    group: str = ""
    prune: PruneConfig | None = None  # its sparsity is replaced by the variant's
    finetune: TrainConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) \
                or not 0.0 <= self.sparsity < 1.0:
            raise UsageError(f"A sweep sparsity must lie in [0, 1); got {self.sparsity!r}.",
                             why="0 is the base model unpruned; 1 would remove every channel.",
                             fix="Use e.g. `sparsities` 0.3,0.5,0.7.")

    @property
    def label(self) -> str:
        return f"{self.group} s={self.sparsity:g}".strip()

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in ".-" else "_" for c in self.label.replace(" ", "_"))


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs; validated when built.

    prepare: the base model and its data, as in compress; decided once for every variant (its
    ``seed`` also seeds pruning, fine-tuning and the attacks; its ``device`` is where torch runs:
    the base stage and every point's pruning, fine-tuning and white-box sets, while export, int8
    and scoring stay on the CPU).
    sparsities: the grid (ignored when ``variants`` are given); 0 is the base, unpruned.
    precisions: ``fp32`` and/or ``int8`` (int8 from ONNX Runtime static quantization, ``quant``).
    attacks / eps / steps: the adversarial grid, as text (``"fgsm,pgd"``, ``"2/255,8/255"``).
    threats: ``transfer`` (sets crafted on the base) and/or ``whitebox`` (crafted on each pruned model).
    corruptions / corruption_severities: common corruptions (names, families, ``default``, ``all``;
    edgerobust.workstation.corrupt.registry) made once from the evaluation rows into ``corruptions/`` and
    replayed on every model (edgerobust.research.corruption_axis); none by default.
    focus_eps: the eps (as typed in ``eps``) of the MACs-reduction and speedup plots; default the largest.
    latency_profile / latency_rounds: the device profile and interleaved rounds of the speedup (batch 1).
    fresh: recompute every point instead of reusing the finished ones under ``out``;
    overwrite: also replace an ``out`` that is not a sweep's folder.
    """

    prepare: PrepareConfig
    out: str | Path
    sparsities: tuple[float, ...] = (0.5, 0.7)
    precisions: tuple[str, ...] = PRECISIONS
    attacks: str = DEFAULT_ATTACKS
    eps: str = DEFAULT_EPS
    steps: int | None = None
    threats: tuple[str, ...] = ("transfer",)
    corruptions: tuple = field(default=(), metadata={"load": load_corruptions})
    corruption_severities: tuple = field(default=(1, 3, 5), metadata={"load": load_severities})
    variants: tuple[Variant, ...] = ()
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2))
    quant: QuantConfig = field(default_factory=QuantConfig)
    focus_eps: str | None = None
    latency_profile: str = SWEEP_PROFILE
    latency_rounds: int = 5
    write_report: bool = True
    fresh: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:  # noqa: C901 (one check per field)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if isinstance(self.prepare, (str, Path)):  # SweepConfig("model.pt", ...): the model alone
            set_("prepare", PrepareConfig(self.prepare))
        if self.prepare.model is None:
            raise UsageError("No `model` to sweep.", fix="Give the model file's path.")
        set_("sparsities", tuple(self.sparsities))
        set_("precisions", tuple(self.precisions))
        set_("threats", tuple(self.threats))
        set_("corruptions", parse_corruptions(self.corruptions))
        set_("corruption_severities", parse_severities(self.corruption_severities))
        set_("variants", tuple(self.variants) or tuple(Variant(float(s)) for s in self.sparsities))
        if not self.variants:
            raise UsageError("A sweep needs at least one sparsity.", fix="Use e.g. `sparsities` 0.5,0.7.")
        labels = [v.label for v in self.variants]
        dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
        if dupes:
            raise UsageError(f"The sweep lists {', '.join(dupes)} more than once.", fix="List each sparsity once.")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions or len(set(self.precisions)) != len(self.precisions):
            raise UsageError(f"Unknown or repeated `precisions` in {','.join(self.precisions) or '(none)'}.",
                             fix=f"Use one or both of: {', '.join(PRECISIONS)}.")
        bad = [t for t in self.threats if t not in THREATS]
        if bad or not self.threats or len(set(self.threats)) != len(self.threats):
            raise UsageError(f"Unknown or repeated `threats` in {','.join(self.threats) or '(none)'}.",
                             why="transfer: sets crafted on the base model; whitebox: crafted on each pruned model.",
                             fix=f"Use one or both of: {', '.join(THREATS)}.")
        if all(v.sparsity == 0 for v in self.variants) and "int8" not in self.precisions:
            raise UsageError("Sparsity 0 in fp32 is the base model itself: this sweep would compare nothing.",
                             fix="Add a sparsity above 0 or the int8 precision.")
        _int_at_least("latency_rounds", self.latency_rounds, 1)
        specs = self.specs  # parses attacks and eps, raising UsageError on bad text
        texts = [t for t, _ in split_eps_grid(self.eps)]
        if self.focus_eps is not None and self.focus_eps.strip().replace(" ", "") not in texts:
            raise UsageError(f"`focus_eps` {self.focus_eps!r} is not one of the swept eps ({', '.join(texts)}).",
                             fix="Pick one of the `eps` values, written the same way.")
        if not specs:  # pragma: no cover - make_specs never returns an empty grid
            raise UsageError("The attack grid is empty.")

    @property
    def seed(self) -> int:
        return self.prepare.seed

    @property
    def specs(self) -> list:
        return make_specs(self.attacks, self.eps, steps=self.steps, seed=self.prepare.seed)

    @property
    def focus(self) -> str:
        """The eps text the MACs-reduction and speedup plots use."""
        if self.focus_eps:
            return self.focus_eps.strip().replace(" ", "")
        return max(split_eps_grid(self.eps), key=lambda tv: tv[1])[0]


@dataclass(frozen=True)
class RecipeConfig:
    """How to run a recipe. The defaults are the recipe's full setting (minutes on a laptop CPU);
    the knobs below shrink it (tests, quick looks).

    out: the report folder. prepare: the base model, as in compress; without ``prepare.model``
    the zoo architecture ``prepare.arch`` (default digits-cnn) is trained on its own data per
    seed; its ``seed`` is replaced by each run's. seeds: runs with seeds 0..N-1.
    finetune_epochs: fine-tuning after pruning. zoo_epochs: zoo training epochs (None: the
    zoo's own). sparsities / eps: override the recipe's grid. attack_steps: PGD steps (None: the
    attack's own, 10). latency_rounds: interleaved rounds. fresh: recompute every point;
    overwrite: replace an ``out`` that is not a recipe's folder.
    """

    out: str | Path
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    seeds: int = 1
    finetune_epochs: int = 2
    zoo_epochs: int | None = None
    sparsities: tuple[float, ...] | None = None
    eps: str | None = None
    attack_steps: int | None = None
    latency_rounds: int = 5
    fresh: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name, lo in (("seeds", 1), ("finetune_epochs", 0), ("latency_rounds", 1)):
            _int_at_least(name, getattr(self, name), lo)
        for name in ("zoo_epochs", "attack_steps"):
            if getattr(self, name) is not None:
                _int_at_least(name, getattr(self, name), 1)
        if self.sparsities is not None:
            object.__setattr__(self, "sparsities", tuple(float(s) for s in self.sparsities))
            for s in self.sparsities:
                Variant(s)  # validates the range
        if self.prepare.model is None:
            self._check_zoo()
        elif not Path(self.prepare.model).is_file():
            raise UsageError(f"The `model` '{self.prepare.model}' does not exist.", fix="Check the path.")

    def _check_zoo(self) -> None:
        from edgerobust.workstation.model.nets import ZOO

        arch, data = self.zoo_name, self.prepare.data
        if arch not in ZOO:
            raise UsageError(f"`arch` {self.prepare.arch!r} is not a zoo model, and no `model` was given.",
                             why="Without a model the recipe trains a zoo model itself.",
                             fix=f"Use `arch` {' or '.join(ZOO)}, or give a `model` (with `arch` for a state_dict).")
        if data is not None and data != ZOO[arch].data:
            raise UsageError(f"The zoo model '{arch}' trains on '{ZOO[arch].data}', not on `data` {data!r}.",
                             fix="Give a `model` trained on that data, or leave `data` out.")

    @property
    def zoo_name(self) -> str:
        arch = self.prepare.arch or "digits-cnn"
        return arch[4:] if arch.startswith("zoo:") else arch
