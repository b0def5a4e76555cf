"""The compress side's configs, torch-free: built and validated before torch is imported.

One frozen dataclass per stage (prepare, prune, fine-tune, int8) and one for the whole job,
which embeds them rather than repeating their fields:

    from edgerobust.workstation.configs import CompressConfig, PrepareConfig, PruneConfig
    cfg = CompressConfig(PrepareConfig("model.pt", data="digits"), prune=PruneConfig(sparsity=0.5), int8=True)

Errors name the field in backticks (``"`sparsity` must be ..."``); the CLI shows the flag
instead (edgerobust.cli.flags). Every name a user may type is checked against
:mod:`edgerobust.registries`, the one place names live. Settings that a device profile may
decide (``round_to``, the int8 stem, the int8 target) are None until
:func:`edgerobust.workstation.pipeline.target.resolve_target` settles them, so the API and the CLI build
the same bundle.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgerobust.defaults import (DEFAULT_CRITERION, DEFAULT_EVAL_SAMPLES, DEFAULT_MAX_INT8_DROP, DEFAULT_MAX_PRUNE_DROP,
                                 DEFAULT_MIN_INT8_AGREEMENT)
from edgerobust.errors import UsageError
from edgerobust.registries import (CALIBRATIONS, CRITERIA, FINETUNE_MODES, INT8_MODES, INT8_ROUTES, INT8_STEMS, INT8_TARGETS,
                                   KEEP_FP32, OPTIMIZERS, RATIOS)
from edgerobust.workstation.attacks.spec import attacks_from_config
from edgerobust.workstation.corrupt.registry import load_corruptions, load_severities, parse_corruptions, parse_severities
from edgerobust.workstation.data.normalization import NormSpec, parse_normalize

# The `device` text; whether CUDA is there is asked when torch is imported (workstation.devices)
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
INT8_FORMATS = ("auto", "qdq", "qoperator")  # how static int8 is written (edgerobust.workstation.quantize.int8)


def _positive_int(name: str, value, lo: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise UsageError(f"`{name}` must be an integer >= {lo}; got {value!r}.")


def _finite(name: str, value, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = number and (lo is None or (value > lo if lo_open else value >= lo)) and (hi is None or value <= hi)
    if ok:
        return
    if not number:
        raise UsageError(f"`{name}` must be a finite number; got {value!r}.")
    if hi is not None:
        where = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    else:
        where = "positive" if lo_open and lo == 0 else f"> {lo:g}" if lo_open else f">= {lo:g}"
    raise UsageError(f"`{name}` must be {where}; got {value!r}.")


def check_device(text: str) -> str:
    """``text`` if it names a place torch can run (auto, cpu, cuda, cuda:N), else a UsageError."""
    spec = str(text).strip().lower()
    if not _DEVICE.fullmatch(spec):
        raise UsageError(f"Unknown `device` '{text}'.", fix=f"Use one of: {DEVICE_CHOICES}.")
    return spec


@dataclass(frozen=True)
class PrepareConfig:
    """Which model, which data, how to split it, which normalization, where torch runs.

    ``model``: a checkpoint, a state_dict (with ``arch``) or a pickled module (with
    ``trust_model``); None only where the caller trains one first (recipes). ``data``: the
    source (its own test split, if it has one, is the evaluation); ``eval_data``: a separate
    source whose rows are the evaluation (held out of the model's training by the user's word). ``normalize``: the
    text ``auto``, ``none``, ``data``, ``imagenet`` or ``MEAN/STD``, parsed once here into a NormSpec.
    ``eval_samples`` caps the evaluation split (the samples attacked); ``calib_samples`` the
    calibration split (int8 calibration, the sensitivity batch). ``seed`` seeds the split and
    every stage after it (pruning, fine-tuning, attacks).
    """

    model: str | Path | None = None
    arch: str | None = None
    num_classes: int | None = None
    trust_model: bool = False
    data: str | None = None  # default: the checkpoint's own data, else digits
    eval_data: str | None = None
    image_size: int | None = None
    normalize: str | NormSpec = "auto"
    seed: int = 0
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    calib_samples: int = 256
    allow_weak_base: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.image_size is not None and (isinstance(self.image_size, bool) or self.image_size < 1):
            raise UsageError(f"`image_size` must be a positive number of pixels; got {self.image_size}.")
        if self.num_classes is not None and self.num_classes < 2:
            raise UsageError(f"`num_classes` must be >= 2; got {self.num_classes}.")
        _positive_int("eval_samples", self.eval_samples)
        _positive_int("calib_samples", self.calib_samples)
        _positive_int("seed", self.seed, 0)
        if isinstance(self.normalize, str):
            object.__setattr__(self, "normalize", parse_normalize(self.normalize))
        object.__setattr__(self, "device", check_device(self.device))

    @property
    def name(self) -> str:
        """The model file's stem (a bundle's default name)."""
        return Path(str(self.model)).stem if self.model is not None else "model"


@dataclass(frozen=True)
class PruneConfig:
    """How to prune: per-layer channel ratio, criterion by name, rounding, iterative steps.

    ``round_to``: every layer keeps a multiple of it (rounded up, at least one multiple; see
    edgerobust.workstation.prune.plan); None: the target's choice (resolve_target), 8 when
    pruning alone. ``ratios`` (a name in registries.RATIOS) picks how per-layer ratios are chosen;
    ``global_pruning=True`` is the same as ``ratios="global"``. The ``mrs_*`` fields set the
    sensitivity measurement of ``ratios="mrs"`` (edgerobust.workstation.prune.sensitivity): relative
    weight perturbation bound, ascent steps, the Linf eps of the fixed PGD batch, and how many
    calibration samples it is crafted from. ``ignore_layers``: module names (and their
    sub-modules) whose output channels stay.
    """

    sparsity: float = 0.5
    criterion: str = DEFAULT_CRITERION
    global_pruning: bool = False
    round_to: int | None = None
    iterative_steps: int = 1
    ratios: str = "uniform"
    mrs_eps_rel: float = 0.1
    mrs_steps: int = 10
    mrs_attack_eps: float = 8 / 255
    mrs_samples: int = 128
    ignore_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", RATIOS.resolve(self.ratios))
        object.__setattr__(self, "criterion", CRITERIA.resolve(self.criterion))
        if self.global_pruning and self.ratios == "mrs":
            raise UsageError("`global_pruning` and `ratios` mrs exclude each other.",
                             why="Global pruning ranks channels across layers; mrs sets a ratio per layer.",
                             fix="Choose one of them (`ratios` global is the same as `global_pruning`).")
        if self.global_pruning or self.ratios == "global":
            object.__setattr__(self, "global_pruning", True)
            object.__setattr__(self, "ratios", "global")
        object.__setattr__(self, "ignore_layers", tuple(self.ignore_layers))
        _finite("mrs_eps_rel", self.mrs_eps_rel, 0, lo_open=True)
        _positive_int("mrs_steps", self.mrs_steps)
        _positive_int("mrs_samples", self.mrs_samples)
        _finite("mrs_attack_eps", self.mrs_attack_eps, 0, 1, lo_open=True)
        if isinstance(self.sparsity, bool) or not (isinstance(self.sparsity, (int, float)) and 0.0 < self.sparsity < 1.0):
            raise UsageError(f"`sparsity` must be strictly between 0 and 1; got {self.sparsity}.",
                             why="It is the fraction of channels removed from each layer: 0 removes nothing, "
                                 "1 everything.", fix="Try `sparsity` 0.5.")
        if self.round_to is not None:
            _positive_int("round_to", self.round_to)
        _positive_int("iterative_steps", self.iterative_steps)


@dataclass(frozen=True)
class TrainConfig:
    """How to (fine-)tune: epochs, optimizer by name, learning rate (one-cycle), batch size, mode.

    ``mode`` (registries.FINETUNE_MODES): standard, pgd-at or trades; ``adv_eps``/``adv_steps``
    /``adv_alpha`` set the inner PGD of the adversarial modes (alpha default 2.5 * eps / steps),
    ``trades_beta`` the weight of TRADES' KL term, ``robust_val_samples`` the validation samples
    attacked each epoch to pick the best one. ``augment_shift``: random translation by up to N
    pixels (0 disables).
    """

    epochs: int = 3
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    batch_size: int = 64
    augment_shift: int = 1
    mode: str = "standard"
    adv_eps: float = 8 / 255
    adv_steps: int = 7
    adv_alpha: float | None = None
    trades_beta: float = 6.0
    robust_val_samples: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", FINETUNE_MODES.resolve(str(self.mode).strip().lower()))
        object.__setattr__(self, "optimizer", OPTIMIZERS.resolve(self.optimizer))
        _finite("adv_eps", self.adv_eps, 0, 1, lo_open=True)
        _positive_int("adv_steps", self.adv_steps)
        if self.adv_alpha is not None:
            _finite("adv_alpha", self.adv_alpha, 0, lo_open=True)
        _finite("trades_beta", self.trades_beta, 0)
        _positive_int("robust_val_samples", self.robust_val_samples)
        _positive_int("epochs", self.epochs, 0)
        _finite("lr", self.lr, 0, lo_open=True)
        _finite("weight_decay", self.weight_decay, 0)
        _positive_int("batch_size", self.batch_size)
        _positive_int("augment_shift", self.augment_shift, 0)


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize to int8 (ONNX Runtime): mode, calibration, which layers stay fp32, the
    preset of int8 types (``int8_target``), the format, the first convolution's form and the
    kernel route of the late convolutions.

    ``int8_target`` (cpu or tensorrt), ``stem`` (plain or space-to-depth) and ``route``
    (symmetric or gemm-late): None lets the target profile decide (resolve_target); quantize()
    alone reads None as cpu / plain / symmetric.
    ``keep_fp32`` auto tries every layer int8 first, then the ends in fp32 while the int8
    gate fails (compress only). The calibration samples are the prepared calibration split.
    """

    mode: str = "static"
    calibration: str = "minmax"
    per_channel: bool = True
    int8_target: str | None = None
    keep_fp32: str = "auto"
    format: str = "auto"
    stem: str | None = None
    route: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", INT8_MODES.resolve(self.mode))
        object.__setattr__(self, "calibration", CALIBRATIONS.resolve(self.calibration))
        object.__setattr__(self, "keep_fp32", KEEP_FP32.resolve(self.keep_fp32))
        if self.format not in INT8_FORMATS:
            raise UsageError(f"Unknown int8 `format` '{self.format}'.", fix=f"Use one of: {', '.join(INT8_FORMATS)}.")
        if self.stem is not None:
            object.__setattr__(self, "stem", INT8_STEMS.resolve(self.stem))
        if self.route is not None:
            object.__setattr__(self, "route", INT8_ROUTES.resolve(self.route))
        if self.int8_target is not None:
            object.__setattr__(self, "int8_target", INT8_TARGETS.resolve(self.int8_target))


@dataclass(frozen=True)
class CompressConfig:
    """Everything `compress` needs, its stages' configs embedded; validated when built.

    ``target``: the device profile (a name or a TOML path) the bundle is for; its first
    execution provider decides which variant is model.onnx (``deploy``, a made variant's precision,
    overrides it: `optimize` deploys the precision it scored), and its ``[compress]`` table the
    channel rounding and int8 stem left None (resolve_target). ``max_prune_drop`` /
    ``max_int8_drop``: the quality gates in accuracy points, ``min_int8_agreement`` the share of
    samples on which int8 must give fp32's top-1 answer (None disables a gate, as sweeps do). ``attacks``: AttackSpecs crafted on the base into adv/; ``whitebox`` also crafts them on
    the pruned model. ``corruptions``: common corruptions (names, families, ``default``, ``all``;
    edgerobust.workstation.corrupt.registry) written at ``corruption_severities`` into corruptions/ over
    the eval rows; none by default here, so sweeps and searches that compress many points do not pay for
    them (the CLI's default is the standard subset). ``out``: the bundle folder (default ``export/<name>``).
    """

    prepare: PrepareConfig
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    int8: bool = False
    fp16: bool = False
    target: str | None = None
    deploy: str | None = None
    max_prune_drop: float | None = DEFAULT_MAX_PRUNE_DROP
    max_int8_drop: float | None = DEFAULT_MAX_INT8_DROP
    min_int8_agreement: float | None = DEFAULT_MIN_INT8_AGREEMENT
    parity_atol: float = 1e-3
    attacks: tuple = field(default=(), metadata={"load": attacks_from_config})
    whitebox: bool = False
    corruptions: tuple = field(default=(), metadata={"load": load_corruptions})
    corruption_severities: tuple = field(default=(1, 3, 5), metadata={"load": load_severities})
    out: str | Path | None = None
    name: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "corruptions", parse_corruptions(self.corruptions))
        object.__setattr__(self, "corruption_severities", parse_severities(self.corruption_severities))
        if isinstance(self.prepare, (str, Path)):  # CompressConfig("model.pt"): the model alone
            object.__setattr__(self, "prepare", PrepareConfig(self.prepare))
        if self.prepare.model is None:
            raise UsageError("No `model` to compress.", fix="Give the model file's path.")
        for name in ("max_int8_drop", "max_prune_drop"):
            if getattr(self, name) is not None:
                _finite(name, getattr(self, name), 0)
        if self.min_int8_agreement is not None:
            _finite("min_int8_agreement", self.min_int8_agreement, 0, 1)
        _finite("parity_atol", self.parity_atol, 0, lo_open=True)
        object.__setattr__(self, "attacks", tuple(self.attacks))
        if self.deploy is not None and self.deploy not in ("fp32",) + tuple(p for p in ("int8", "fp16") if getattr(self, p)):
            raise UsageError(f"`deploy` {self.deploy!r} is not a variant this compress makes.",
                             fix="Use fp32, or int8 / fp16 with `int8` / `fp16` on.")
        if self.whitebox and not self.attacks:
            raise UsageError("`whitebox` needs attacks to craft.", fix="Give `attacks`, e.g. pgd at `eps` 8/255.")
        if self.whitebox and self.int8 and self.quant.mode != "static":
            raise UsageError("`whitebox` simulates static int8 only.",
                             fix="Use `int8_mode` static with `whitebox`, or drop `whitebox`.")

    @property
    def bundle_name(self) -> str:
        return self.name or self.prepare.name

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("export") / self.bundle_name
