"""Which input normalization a model expects: parsed from `normalize`, or decided from evidence.

torch-free: the decision takes accuracies that the caller measured.

A model trained on raw [0, 1] pixels and one trained on standardized pixels look alike from
outside. Where the checkpoint does not record its normalization and the user does not name it,
`normalize` auto evaluates the base model under each candidate on held-out samples and takes
the clearly better one; when none is clearly better it refuses, naming the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgerobust.errors import DataError, UsageError
from edgerobust.edge.scores.stats import mcnemar_exact

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# The `normalize` choices (a registry: CLI help is built from it).
CHOICES: dict[str, str] = {
    "auto": "the checkpoint's own if it records one; else the base is evaluated without normalization and "
            "with the data's (and ImageNet's, for 3-channel data) on validation samples, and the clearly "
            "better one is taken (refused when none is clearly better)",
    "none": "the model takes [0, 1] pixels as they are",
    "data": "the data's per-channel mean/std",
    "imagenet": "ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)",
    "MEAN/STD": "your own, e.g. 0.5/0.25 or 0.485,0.456,0.406/0.229,0.224,0.225",
}
# A candidate wins `auto` only if it beats every other by at least this many accuracy points.
CLEAR_MARGIN_POINTS = 5.0
CLEAR_P_VALUE = 1e-3
# A base model this close to chance (points above the majority class's share) is "weak".
WEAK_MARGIN_POINTS = 10.0


def choices_help() -> str:
    return "; ".join(f"{k}: {v}" for k, v in CHOICES.items())


@dataclass(frozen=True)
class NormSpec:
    """A parsed `normalize`: a kind (auto, none, data, imagenet, custom) and, for custom, the values."""

    kind: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:  # a NormSpec read back from a config table is checked as parse_normalize checks
        if self.kind not in ("auto", "none", "data", "imagenet", "custom"):
            raise UsageError(f"Unknown `normalize` kind '{self.kind}'.", fix=f"Use one of: {choices_help()}.")
        if self.kind == "custom":
            if not self.mean or not self.std:
                raise UsageError("A custom `normalize` needs its mean and std values.",
                                 fix="Write e.g. `normalize` 0.5/0.25.")
            if len(self.mean) != len(self.std):
                raise UsageError(f"The normalization has {len(self.mean)} mean but {len(self.std)} std values.")
            if any(not s > 0 for s in self.std):
                raise UsageError(f"std values must be positive; got {tuple(self.std)}.")
            object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
            object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def values(self, channels: int, data_mean, data_std) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Mean and std for ``channels`` input channels (single values are repeated)."""
        if self.kind == "none":
            return (0.0,) * channels, (1.0,) * channels
        if self.kind == "data":
            return tuple(data_mean), tuple(data_std)
        mean, std = IMAGENET if self.kind == "imagenet" else (self.mean, self.std)
        if self.kind == "imagenet" and channels != 3:
            raise UsageError(f"`normalize` imagenet is for 3-channel images; these have {channels}.",
                             fix="Pass `normalize` none, data, or MEAN/STD.")
        if len(mean) == 1 and channels > 1:
            mean, std = mean * channels, std * channels
        if len(mean) != channels or len(std) != channels:
            raise UsageError(f"`normalize` gives {len(mean)} mean and {len(std)} std values but the images have "
                             f"{channels} channels.", fix="Give one value, or one per channel.")
        return tuple(mean), tuple(std)


def _numbers(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"Cannot read the {what} values '{text}' of `normalize`.",
                         fix="Write e.g. `normalize` 0.485,0.456,0.406/0.229,0.224,0.225.") from None
    return vals


def parse_normalize(text: str | None, mean=None, std=None) -> NormSpec:
    """``normalize`` text (and the older ``mean``/``std`` pair, which wins when given) as a NormSpec."""
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise UsageError("`mean` and `std` go together: pass both or neither.")
        if text not in (None, "auto"):
            raise UsageError("`normalize` and `mean`/`std` say the same thing twice.", fix="Pass one of them.")
        return _custom(tuple(mean), tuple(std))
    t = (text or "auto").strip().lower()
    if t in ("auto", "none", "data", "imagenet"):
        return NormSpec(t)
    if "/" not in t:
        raise UsageError(f"Unknown `normalize` '{text}'.", fix=f"Use one of: {choices_help()}.")
    m, _, s = t.partition("/")
    return _custom(_numbers(m, "mean"), _numbers(s, "std"))


def _custom(mean: tuple[float, ...], std: tuple[float, ...]) -> NormSpec:
    if len(mean) != len(std):
        raise UsageError(f"The normalization has {len(mean)} mean but {len(std)} std values.")
    if any(not s > 0 for s in std):
        raise UsageError(f"std values must be positive; got {std}.")
    return NormSpec("custom", mean, std)


@dataclass
class Decision:
    """What normalization was used and why: goes into the manifest and the output."""

    choice: str  # none, data, imagenet, custom, checkpoint
    source: str  # flag, checkpoint, auto
    mean: tuple[float, ...]
    std: tuple[float, ...]
    reason: str
    val_accuracy: dict[str, float] = field(default_factory=dict)  # candidate -> accuracy on val samples
    val_samples: int = 0

    def to_dict(self) -> dict:
        return {"choice": self.choice, "source": self.source, "mean": list(self.mean), "std": list(self.std),
                "reason": self.reason, "val_accuracy": self.val_accuracy, "val_samples": self.val_samples}


def decide(correct: dict[str, np.ndarray]) -> tuple[str, str]:
    """The clearly better candidate, with the reason; else DataError naming `normalize`.

    ``correct`` holds, per candidate, whether the base got each of the same samples right.
    Clearly better: a lead of CLEAR_MARGIN_POINTS, or of at least 1 point that an exact McNemar
    test on the paired samples finds significant (p < CLEAR_P_VALUE).
    """
    accs = {k: float(np.mean(v)) for k, v in correct.items()}
    ranked = sorted(accs.items(), key=lambda kv: -kv[1])
    best, acc = ranked[0]
    n = len(correct[best])
    figures = ", ".join(f"{k} {v:.1%}" for k, v in ranked)
    runner_up = ranked[1][0] if len(ranked) > 1 else None
    margin = 100 * (acc - accs[runner_up]) if runner_up else 100.0
    p = mcnemar_exact(correct[best], correct[runner_up]).p_value if runner_up else 0.0
    if margin >= CLEAR_MARGIN_POINTS or (margin >= 1.0 and p < CLEAR_P_VALUE):
        return best, (f"the model does clearly best with '{best}' on {n} held-out samples ({figures}; exact "
                      f"McNemar p={p:.1g} against '{runner_up}'); the checkpoint does not record its normalization")
    raise DataError(f"Cannot tell which input normalization the model expects ({figures} on {n} samples; "
                    f"exact McNemar p={p:.2g}: a choice needs a lead of {CLEAR_MARGIN_POINTS:g} points, or of 1 "
                    f"point with p < {CLEAR_P_VALUE:g}).",
                    why="The checkpoint does not record it, and every guess would change what the robustness "
                        "figures mean (eps is measured in pixels, before normalization).",
                    fix=f"Pass `normalize` naming what the model was trained with: "
                        f"{', '.join(k for k in CHOICES if k != 'auto')}.")


def weak_base_check(accuracy: float, chance: float, n: int, allow: bool) -> str | None:
    """None if the base is clearly above chance; else a warning (allow) or a DataError."""
    if 100 * (accuracy - chance) >= WEAK_MARGIN_POINTS:
        return None
    what = (f"The base model is near chance level on this data: {accuracy:.1%} on {n} validation samples "
            f"(the largest class is {chance:.1%}).")
    if allow:
        return what + " Every robustness figure of it says little."
    raise DataError(what, why="A model that does not work on the data has no robustness to measure; usually the "
                              "data, the normalization or the checkpoint is not the one the model was trained with.",
                    fix="Check `data`, `normalize`, `arch`/`num_classes`; pass `allow_weak_base` to go on anyway.")
