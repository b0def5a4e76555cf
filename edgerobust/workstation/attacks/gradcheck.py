"""Craft-time gradient check: does a gradient attack see any gradient at all (AutoAttack's ``check_zero_gradients``)?

A model that rounds or quantizes its input (``torch.round`` in forward, a fake-quantized stem)
has an input gradient of exactly zero almost everywhere: FGSM and PGD then move nothing, and the
set's accuracy is the clean accuracy, read as robustness. ``gradient_check`` measures, for one
gradient attack's set, the share of probed samples whose input gradient of the cross-entropy is
exactly zero (every element) and the share of correctly classified samples whose prediction the
attack changed. Only the first marks the set ``masked`` (AutoAttack's rule): an attack that changes
almost nothing is also what a really robust model shows at a small eps (the demo's base at 2/255),
so that share is recorded for the reader, not taken as proof. ``craft_set`` records the
result in the set's meta as ``gradient_check`` and warns; the audit's gradient-masking sanity
check (edgerobust.edge.scores.sanity) reads it back.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

PROBE = 256  # samples of the first batch whose input gradient is computed (one forward + backward)
ZERO_GRADIENT_MASKED = 0.9  # this share of probed samples with an all-zero input gradient: masked


def zero_gradient_share(model: "torch.nn.Module", xb: "torch.Tensor", yb: "torch.Tensor") -> float:
    """The share of samples in ``xb`` whose input gradient of the cross-entropy is exactly zero.

    The loss is summed (not averaged), so no sample's gradient is scaled towards underflow; the
    model's parameters get no ``.grad`` (only the input's gradient is taken).
    """
    import torch

    x = xb.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(x), yb, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:  # the output does not depend on the input at all
        return 1.0
    return float((grad.flatten(1) == 0).all(1).float().mean())


def probe_gradients(model: "torch.nn.Module", x: np.ndarray, y: np.ndarray, limit: int, clean_ok: np.ndarray,
                    adv_ok: np.ndarray) -> dict:
    """The ``gradient_check`` of a crafted set: the zero-gradient share on the first ``min(limit, PROBE)``
    samples of ``x``/``y`` (on the model's device), with the changed share from the whole set."""
    import torch

    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    probe = min(limit, PROBE)
    zero = zero_gradient_share(model, torch.from_numpy(x[:probe]).to(device), torch.from_numpy(y[:probe]).to(device))
    return gradient_check(zero, clean_ok, adv_ok, probe)


def gradient_check(zero_share: float, clean_ok: np.ndarray, adv_ok: np.ndarray, probed: int) -> dict:
    """The record kept in a gradient attack's set meta as ``gradient_check``.

    ``zero_gradient_share``: of the ``probed`` samples; ``changed_share``: of the correctly
    classified samples, those the attack made wrong (None when the model gets none right);
    ``masked``: the zero-gradient share past ZERO_GRADIENT_MASKED (the changed share alone proves nothing).
    """
    n_ok = int(clean_ok.sum())
    changed = float((clean_ok & ~adv_ok).sum() / n_ok) if n_ok else None
    masked = zero_share >= ZERO_GRADIENT_MASKED
    return {"zero_gradient_share": round(float(zero_share), 6),
            "changed_share": None if changed is None else round(changed, 6),
            "masked": bool(masked), "probed": int(probed)}


def masking_warning(what: str, check: dict) -> str | None:
    """One sentence for a set whose ``gradient_check`` says masked, else None."""
    if not check.get("masked"):
        return None
    changed = check.get("changed_share")
    changed_text = "n/a" if changed is None else f"{changed:.1%}"
    return (f"{what}: the input gradient of the loss is exactly zero for {check['zero_gradient_share']:.0%} of "
            f"{check['probed']} probed samples and the attack changed the prediction of {changed_text} of the "
            "correctly classified samples: the model's gradients are masked (e.g. it rounds or quantizes its input), "
            "so this gradient attack's figure is no evidence of robustness; trust only the audit's query attack "
            "(`query_attack` square).")
