"""The CLI's shared vocabulary: one `Annotated` alias per option that several commands take, so the
same thing has the same flag, help and default everywhere (README, Commands). torch-free.

Renamed flags keep their old spelling as a hidden option for one release; `pick` merges them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerobust.defaults import ARCH_HELP, DEFAULT_ATTACKS, DEFAULT_EPS, DEFAULT_EVAL_SAMPLES
from edgerobust.cli.flags import to_flags
from edgerobust.errors import UsageError
from edgerobust.workstation.data.normalization import choices_help
from edgerobust.registries import CRITERIA
from edgerobust.workstation.corrupt.registry import help_text as corruption_help

ModelArg = Annotated[Path, typer.Argument(help="The PyTorch model file: an edgerobust checkpoint, a state_dict "
                                               "(with --arch), or a pickled nn.Module (with --trust-model).",
                                          show_default=False)]
Arch = Annotated[Optional[str], typer.Option("--arch", help=f"Architecture of a state_dict: {ARCH_HELP}.",
                                             show_default=False)]
NumClasses = Annotated[Optional[int], typer.Option("--num-classes", help="Classes of a state_dict "
                                                   "(default: read from the last layer's weights).",
                                                   show_default=False)]
TrustModel = Annotated[bool, typer.Option("--trust-model", help="Allow loading a whole pickled nn.Module. "
                                          "Unpickling runs code from the file: only for files you trust.")]
EvalData = Annotated[Optional[str], typer.Option("--eval-data", show_default=False,
                                                 help="Evaluation rows from a separate source (npz:PATH, "
                                                      "folder:PATH, ...), held out of the model's training: the "
                                                      "samples evaluated and attacked. Default: the --data's own "
                                                      "test split (npz x_test/y_test, a folder's test/, CIFAR-10's "
                                                      "test batch), else a random split, which is said to possibly "
                                                      "overlap the model's training data.")]
Normalize = Annotated[str, typer.Option("--normalize", help="Input normalization the model was trained with: "
                                        f"{to_flags(choices_help())}.")]
AllowWeakBase = Annotated[bool, typer.Option("--allow-weak-base", help="Go on when the base model is near chance "
                                             "level on the data (its robustness figures then say little).")]
Attacks = Annotated[str, typer.Option("--attacks", "-a", help="Comma-separated adversarial sets to craft on the "
                                      "base model (see `edgerobust attack --help`); 'autoattack' for the standard AutoAttack "
                                      "components (apgd, apgd-t, fab-t at 100 steps, square at 5000 queries); NAME:N "
                                      "gives one attack its own budget (pgd:50); 'none' for none.")]
Eps = Annotated[str, typer.Option("--eps", help="Comma-separated attack strengths in [0, 1] pixel units, "
                                  "e.g. 2/255,4/255,8/255.")]
AttackSteps = Annotated[Optional[int], typer.Option("--attack-steps", min=1, help="Iterations of iterative "
                                                    "attacks (queries for square). Default: each attack's own.",
                                                    show_default=False)]
OldSteps = Annotated[Optional[int], typer.Option("--steps", min=1, hidden=True, help="Old name of --attack-steps.")]
EvalSamples = Annotated[int, typer.Option("--eval-samples", min=1, help="Cap on the evaluation split: the samples "
                                          "evaluated and attacked (attacks cost time per sample).")]
Criterion = Annotated[str, typer.Option("--criterion", help=f"Channel importance criterion: {to_flags(CRITERIA.help())}.")]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Seeds the data split, pruning, fine-tuning and attacks.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output folder if it exists (only once "
                                         "the new one is complete).")]
Device = Annotated[str, typer.Option("--device", envvar="EDGEROBUST_DEVICE",
                                     help="Where torch runs (fine-tuning, attacks, sensitivity, importance): auto "
                                          "(CUDA when torch sees a GPU, else the CPU), cpu, cuda, cuda:N. Export "
                                          "and ONNX quantization stay on the CPU.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout instead of tables.")]

DEFAULTS = {"attacks": DEFAULT_ATTACKS, "eps": DEFAULT_EPS, "eval_samples": DEFAULT_EVAL_SAMPLES}


def pick(new, old, default=None):
    """The value of a renamed flag: the new spelling, else the old (hidden) one, else ``default``."""
    if new is not None:
        return new
    return old if old is not None else default


def floats(text: Optional[str], flag: str, example: str = "0.3,0.5,0.7") -> tuple[float, ...] | None:
    """A comma list of numbers (``"0.3, 0.5"``); None for None. An empty entry is an error, not skipped."""
    if text is None:
        return None
    tokens = [t.strip() for t in text.split(",")]
    if any(not t for t in tokens):
        raise UsageError(f"{flag} has an empty entry in '{text}'.", fix=f"Separate values with single commas, e.g. "
                                                                        f"{flag} {example}.")
    try:
        return tuple(float(t) for t in tokens)
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated numbers, e.g. {example}; got '{text}'.") from None


def names(text: str) -> tuple[str, ...]:
    """A comma list of names, lower-cased; empty entries are an error."""
    tokens = [t.strip().lower() for t in text.split(",")]
    if any(not t for t in tokens):
        raise UsageError(f"The list '{text}' has an empty entry.", fix="Separate names with single commas.")
    return tuple(tokens)

Corruptions = Annotated[str, typer.Option(
    "--corruptions", help="Common corruptions and camera noise (ImageNet-C, Hendrycks & Dietterich 2019) made from the "
                          "evaluation rows into the bundle's corruptions/ folder, replayed by the audit on every model: "
                          f"{to_flags(corruption_help())}.")]
CorruptionSeverities = Annotated[str, typer.Option(
    "--corruption-severities", help="Severities of every --corruptions entry, 1 (mildest) to 5, comma-separated.")]
