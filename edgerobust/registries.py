"""Every name a user types on the command line, in one torch-free place with one entry shape.

Each registry maps a name to a :class:`Choice` (a one-line summary and, where there is one, the
paper). The CLI builds its choices and `--help` from these, and the library validates against
them, so a name exists in exactly one place. The attacks have their own registry with more to
say per entry (edgerobust.workstation.attacks.registry); data sources are in edgerobust.workstation.data.sources.SOURCES.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from edgerobust.errors import UsageError


@dataclass(frozen=True)
class Choice:
    name: str
    summary: str
    reference: str = ""  # the paper, where the choice comes from one

    @property
    def text(self) -> str:
        return f"{self.summary} ({self.reference})" if self.reference else self.summary


class Registry(dict):
    """name -> Choice, with the config field that takes it (for messages; the CLI shows its flag)."""

    def __init__(self, field: str, choices: list[Choice], aliases: dict[str, str] | None = None):
        super().__init__((c.name, c) for c in choices)
        self.field = field
        self.aliases = dict(aliases or {})

    def help(self) -> str:
        """``name: summary; ...``, for an option's --help."""
        return "; ".join(f"{c.name}: {c.text}" for c in self.values())

    def resolve(self, value: str) -> str:
        """The canonical name for ``value`` (aliases followed); UsageError naming the field otherwise."""
        name = self.aliases.get(value, value)
        if name not in self:
            raise UsageError(f"Unknown `{self.field}` '{value}'.", fix=f"Use one of: {', '.join(self)}.")
        return name

    def enum(self, cls_name: str) -> type[Enum]:
        """A str Enum of the names, for Typer's choices."""
        return Enum(cls_name, {n.replace("-", "_"): n for n in self}, type=str)  # type: ignore[return-value]


CRITERIA = Registry("criterion", [
    Choice("l1", "L1 norm of each channel's weights"),
    Choice("l2", "L2 norm of each channel's weights"),
    Choice("taylor", "first-order Taylor |w * dL/dw| on calibration batches", "Molchanov et al. 2019"),
    Choice("bn-scale", "|gamma| of the BatchNorm after each channel", "Network Slimming, Liu et al. 2017"),
    Choice("random", "random channels: the baseline criterion"),
    Choice("fpgm", "distance to the geometric median", "He et al. 2019"),
    Choice("lamp", "layer-adaptive magnitude", "Lee et al. 2021"),
])

RATIOS = Registry("ratios", [
    Choice("uniform", "the same ratio (`sparsity`) for every prunable layer"),
    Choice("global", "channels ranked across the whole network at the same overall ratio"),
    Choice("mrs", "module robustness sensitivity: layers that matter most under attack keep more channels, "
                  "MACs matched to uniform pruning at `sparsity`", "Zhu et al. 2023; Bai et al. 2024"),
])

FINETUNE_MODES = Registry("finetune", [
    Choice("standard", "cross-entropy on clean inputs"),
    Choice("pgd-at", "cross-entropy on PGD examples crafted against the pruned model ('adversarial' is an alias)",
           "Madry et al. 2018"),
    Choice("trades", "CE(clean) + beta * KL(adv || clean)", "Zhang et al. 2019"),
], aliases={"adversarial": "pgd-at", "pgd": "pgd-at", "at": "pgd-at"})

OPTIMIZERS = Registry("optimizer", [
    Choice("sgd", "SGD with Nesterov momentum 0.9"),
    Choice("adam", "Adam"),
    Choice("adamw", "AdamW (decoupled weight decay)"),
])

INT8_MODES = Registry("int8_mode", [
    Choice("static", "calibrated QDQ: activations and weights int8 (conv nets)"),
    Choice("dynamic", "weights int8, activations quantized at run time (Linear-heavy models)"),
])

CALIBRATIONS = Registry("calibration", [
    Choice("minmax", "activation ranges from the calibration samples' min and max"),
    Choice("entropy", "ranges that minimize the KL divergence of the histograms"),
    Choice("percentile", "ranges clipped at the 99.999th percentile"),
])

# The reasons behind each preset are in edgerobust.workstation.quantize.int8.TARGETS.
INT8_TARGETS = Registry("int8_target", [
    Choice("cpu", "U8S8, the fast path of ONNX Runtime's CPU int8 kernels"),
    Choice("tensorrt", "S8S8 symmetric, what TensorRT's int8 path accepts"),
])

KEEP_FP32 = Registry("keep_fp32", [
    Choice("auto", "every layer int8 (fastest) unless that loses more than `max_int8_drop`, then the first layer "
                   "in fp32 (it sees raw pixels), then both ends"),
    Choice("none", "every compute layer int8"),
    Choice("first", "the first compute layer in fp32"),
    Choice("last", "the last compute layer in fp32"),
    Choice("ends", "the first and the last compute layers in fp32"),
])

INT8_STEMS = Registry("int8_stem", [
    Choice("plain", "the first convolution as ONNX Runtime's quantizer writes it"),
    Choice("space-to-depth", "a stride-2 RGB stem rewritten to read 2x2 blocks as channels, in groups of 4: the fast "
                             "path of ONNX Runtime's CPU int8 convolution; checked against the plain model, the same outputs "
                             "where accumulation is int32 (VNNI, ARM); on AVX-512 VNNI resnet18 1.09-1.19x faster, "
                             "mobilenet_v2 0.96-1.07x (static QDQ, CPU target)"),
])

INT8_ROUTES = Registry("int8_route", [
    Choice("symmetric", "every convolution with symmetric int8 weights, as ONNX Runtime's quantizer writes them: its "
                        "symmetric convolution kernel (AVX-512 VNNI / AVX2 on x86)"),
    Choice("gemm-late", "the late convolutions (16x16 output pixels or fewer, 128+ products per output) written with "
                        "weight zero point -1, the same integers: ONNX Runtime runs them on its integer GEMM, which "
                        "uses AMX; on an AMX Xeon with one thread resnet18 0.5 1.14x faster, resnet50 0.5 1.10x, "
                        "mobilenet_v2 1.00x (static QDQ, CPU target)"),
])

ALL = {"criteria": CRITERIA, "ratios": RATIOS, "finetune modes": FINETUNE_MODES, "optimizers": OPTIMIZERS,
       "int8 modes": INT8_MODES, "calibrations": CALIBRATIONS, "int8 targets": INT8_TARGETS,
       "keep fp32": KEEP_FP32, "int8 stems": INT8_STEMS, "int8 routes": INT8_ROUTES}
