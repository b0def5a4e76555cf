"""The expected time of crafting: one timed forward+backward of a small batch, scaled by each attack's
evaluations per sample (``AttackEntry.evals``) and the sample count.

The attacks that skip the samples a model gets wrong (``AttackEntry.only_correct``) are scaled by
the clean accuracy of the timed batch. An upper estimate for those that also stop on a sample
once it is broken (apgd-t and fab-t move to the next target class only with the samples still
standing, square stops querying a broken sample): a model that breaks easily is crafted sooner.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .spec import AttackSpec

if TYPE_CHECKING:  # torch is imported lazily: `edgerobust audit` must run without it
    import torch

PROBE = 32  # samples in the timed batch
REPEATS = 3  # timed passes (the fastest counts), fewer when one pass takes over a second


@dataclass(frozen=True)
class CraftTime:
    """``seconds``: set name -> expected seconds; ``described``: set name -> spec.describe();
    ``grad_s`` / ``forward_s``: measured seconds per sample of one forward+backward / one forward;
    ``clean_accuracy``: on the timed batch (1.0 without labels); ``probe``: the samples timed;
    ``n``: samples to craft."""

    seconds: dict[str, float]
    described: dict[str, str]
    grad_s: float
    forward_s: float
    clean_accuracy: float
    probe: int
    n: int
    device: str

    @property
    def total(self) -> float:
        return float(sum(self.seconds.values()))

    def message(self) -> str:
        per = ", ".join(f"{self.described[k]} {'' if v < 1 else '~'}{duration(v)}" for k, v in self.seconds.items())
        return (f"Expected time on the {self.device}: about {duration(self.total)} for {len(self.seconds)} set(s) of "
                f"{self.n} samples ({per}). Scaled from a timed pass: one forward+backward of {self.probe} samples took "
                f"{1e3 * self.grad_s * self.probe:.3g} ms, scaled by each attack's gradient and forward "
                f"evaluations and by the clean accuracy ({self.clean_accuracy:.0%}) for those that skip wrong "
                f"answers; attacks that stop on broken samples finish sooner.")


def craft_time(model: "torch.nn.Module", x: np.ndarray, specs: list[AttackSpec], y: np.ndarray | None = None, *,
             batch_size: int = 256) -> CraftTime:
    """Time ``model`` (in eval mode, as crafting runs it) on the first samples of ``x`` and scale;
    with labels ``y``, the attacks that skip wrong answers are scaled by the clean accuracy."""
    import torch

    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    b = max(1, min(PROBE, len(x), batch_size))
    xb = torch.from_numpy(np.ascontiguousarray(x[:b], dtype=np.float32)).to(device)
    with torch.no_grad():
        logits = model(xb)  # also the warm-up of the forward
    n_classes, pred = int(logits.shape[-1]), logits.argmax(-1).cpu().numpy()
    acc = 1.0 if y is None else float((pred == np.asarray(y[:b])).mean())
    grad_s = _fastest(lambda: _forward_backward(model, xb)) / b
    forward_s = _fastest(lambda: _forward(model, xb)) / b
    seconds, described = {}, {}
    for spec in specs:
        s = spec if spec.n_classes is not None else dataclasses.replace(spec, n_classes=n_classes)
        grads, forwards = s.entry.evals(s.params()) if s.eps > 0 else (0.0, 0.0)
        share = acc if s.entry.only_correct else 1.0
        seconds[s.name] = len(x) * (share * (grads * grad_s + forwards * forward_s) + 2 * forward_s)  # + 2 checks
        described[s.name] = s.describe()
    return CraftTime(seconds, described, grad_s, forward_s, acc, b, len(x), "GPU" if device.type == "cuda" else "CPU")


def duration(seconds: float) -> str:
    """``0.4`` -> ``<1 s``, ``42`` -> ``42 s``, ``300`` -> ``5.0 min``, ``7200`` -> ``2.0 h``."""
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _forward_backward(model, xb) -> None:
    import torch

    x = xb.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        torch.autograd.grad(torch.nn.functional.cross_entropy(logits, logits.argmax(1)), x)


def _forward(model, xb) -> None:
    import torch

    with torch.no_grad():
        model(xb)


def _fastest(fn) -> float:
    import torch

    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        took = time.perf_counter() - t0
        best = min(best, took)
        if took > 1.0:
            break
    return best
