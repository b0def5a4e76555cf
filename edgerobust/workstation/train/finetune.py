"""Training and fine-tuning loops: standard, PGD-AT or TRADES; evaluation each epoch, best weights kept.

Modes (``TrainConfig.mode``, named in :data:`edgerobust.registries.FINETUNE_MODES`):

- ``standard``: cross-entropy on clean (shift-augmented) batches.
- ``pgd-at``: Madry et al. 2018 (arXiv:1706.06083): cross-entropy on Linf PGD examples crafted
  against the model being trained, in [0, 1] pixel space, from a uniform random start.
- ``trades``: Zhang et al. 2019 (arXiv:1901.08573): CE(f(x), y) + beta * KL(f(x_adv) || f(x)),
  x_adv maximizing that KL (PGD from x + 0.001 * N(0, 1), as in the authors' code).

The inner maximization runs with the model in **eval mode** (BatchNorm uses its running
statistics and the adversarial batches do not update them), as the TRADES reference code
does; the outer step runs in train mode. With an adversarial mode the best epoch is the one
with the highest *robust* validation accuracy (PGD with the same eps and steps, on up to
``robust_val_samples`` validation samples), clean accuracy breaking ties.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgerobust import events
from edgerobust.workstation.resources.torch_device import model_device
from edgerobust.workstation.configs import TrainConfig

OPTIMIZERS = {
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True),
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
}


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # per epoch: loss, train_acc, val_acc (+ val_robust_acc)
    best_val_acc: float = float("nan")
    best_val_robust_acc: float | None = None  # adversarial modes only
    best_epoch: int = 0
    seconds: float = 0.0


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Top-1 predictions of ``model`` (in eval mode) on an array of inputs."""
    was_training = model.training
    model.eval()
    dev = model_device(model)
    preds = []
    for i in range(0, len(x), batch_size):
        preds.append(model(torch.from_numpy(x[i:i + batch_size]).to(dev)).argmax(1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    return float((predict(model, x, batch_size) == y).mean()) if len(y) else float("nan")


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
             alpha: float | None = None, random_start: bool = True, gen: torch.Generator | None = None) -> torch.Tensor:
    """Linf PGD on cross-entropy (Madry et al. 2018) against ``model`` as it is (mode untouched).

    Returns ``x_adv`` with ``|x_adv - x| <= eps`` and ``0 <= x_adv <= 1``; no parameter
    gradients are written. ``alpha`` defaults to ``2.5 * eps / steps``.
    """
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1
        xa = (x + eps * noise.to(x.device)).clamp(0, 1)
    else:
        xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y)
        (g,) = torch.autograd.grad(loss, xa)
        xa = xa.detach() + alpha * g.sign()
        xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    return xa.detach()


def trades_adv(model: nn.Module, x: torch.Tensor, eps: float, steps: int, alpha: float | None = None,
               gen: torch.Generator | None = None) -> torch.Tensor:
    """TRADES' inner maximization: Linf PGD on KL(f(x_adv) || f(x)) from x + 0.001 * N(0, 1)."""
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x = x.detach()
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    xa = (x + 0.001 * torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(model(xa), dim=1), p_clean, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        xa = xa.detach() + alpha * g.sign()
        xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    return xa.detach()


def robust_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float, steps: int,
                    alpha: float | None = None, batch_size: int = 256, seed: int = 0) -> float:
    """Accuracy of ``model`` (eval mode) on Linf PGD examples crafted against it."""
    if not len(y):
        return float("nan")
    was_training = model.training
    model.eval()
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    dev = model_device(model)
    correct = 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = torch.from_numpy(x[i:i + batch_size]).to(dev), torch.from_numpy(y[i:i + batch_size]).to(dev)
            xa = pgd_linf(model, xb, yb, eps, steps, alpha, gen=gen)
            with torch.no_grad():
                correct += int((model(xa).argmax(1) == yb).sum())
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    return correct / len(y)


def _loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, config: TrainConfig,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss of one batch for ``config.mode``, and the logits its accuracy is counted on."""
    if config.mode == "standard":
        out = model(xb)
        return F.cross_entropy(out, yb), out
    model.eval()  # craft with BatchNorm's running statistics (see the module docstring)
    if config.mode == "pgd-at":
        xa = pgd_linf(model, xb, yb, config.adv_eps, config.adv_steps, config.adv_alpha, gen=gen)
        model.train()
        out = model(xa)
        return F.cross_entropy(out, yb), out
    xa = trades_adv(model, xb, config.adv_eps, config.adv_steps, config.adv_alpha, gen=gen)
    model.train()
    out = model(xb)
    kl = F.kl_div(F.log_softmax(model(xa), dim=1), F.softmax(out, dim=1), reduction="batchmean")
    return F.cross_entropy(out, yb) + config.trades_beta * kl, out


STATUS_EVERY = 20  # steps between loss readings on a GPU (each one waits for the GPU)


def _shift(xb: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    if k <= 0:
        return xb
    dx, dy = (int(v) for v in torch.randint(-k, k + 1, (2,), generator=gen))
    return torch.roll(xb, shifts=(dy, dx), dims=(2, 3))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
          config: TrainConfig, description: str = "fine-tune", seed: int = 0) -> TrainResult:
    """Train ``model`` (a pixel-space model) in place; the weights of the best validation epoch are kept.

    ``seed`` seeds the batch order, the shifts and the attacks of the adversarial modes."""
    import time

    t0 = time.perf_counter()
    result = TrainResult()
    adversarial = config.mode != "standard"
    n_rob = min(len(y_val), config.robust_val_samples)

    def val_robust() -> float:
        return robust_accuracy(model, x_val[:n_rob], y_val[:n_rob], config.adv_eps, config.adv_steps,
                               config.adv_alpha, seed=seed)

    if config.epochs == 0:
        result.best_val_acc = accuracy(model, x_val, y_val)
        if adversarial:
            result.best_val_robust_acc = val_robust()
        return result
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = OPTIMIZERS[config.optimizer](params, config.lr, config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(x) / config.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch,
                                                pct_start=0.15)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    dev = model_device(model)
    best_state = copy.deepcopy(model.state_dict())
    best_acc, best_key = -1.0, (-1.0, -1.0)
    with events.task(description, total=config.epochs * steps_per_epoch) as advance:
        for epoch in range(1, config.epochs + 1):
            model.train()
            perm = torch.randperm(len(xt), generator=gen)
            # Sums stay on the model's device: reading a GPU scalar every step would stall the GPU's queue;
            # the progress bar shows the loss every STATUS_EVERY steps.
            total_loss, correct = torch.zeros((), device=dev), torch.zeros((), device=dev, dtype=torch.long)
            for b in range(steps_per_epoch):
                idx = perm[b * config.batch_size:(b + 1) * config.batch_size]
                xb, yb = _shift(xt[idx], config.augment_shift, gen).to(dev), yt[idx].to(dev)
                loss, out = _loss(model, xb, yb, config, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.detach() * len(idx)
                correct += (out.argmax(1) == yb).sum()
                last = b == steps_per_epoch - 1
                advance(1, f"epoch {epoch}/{config.epochs} loss {loss.item():.3f}"
                        if dev.type == "cpu" or last or b % STATUS_EVERY == 0 else None)
            val_acc = accuracy(model, x_val, y_val)
            row = {"epoch": epoch, "loss": float(total_loss) / len(xt), "train_acc": int(correct) / len(xt),
                   "val_acc": val_acc}
            rob = val_robust() if adversarial else -1.0
            if adversarial:
                row["val_robust_acc"] = rob
            result.history.append(row)
            advance(0, f"epoch {epoch}/{config.epochs} val acc {val_acc:.2%}"
                    + (f" robust {rob:.2%}" if adversarial else ""))
            key = (rob, val_acc)  # robust accuracy first when adversarial, clean accuracy breaks ties
            if key > best_key:
                best_key, best_acc, result.best_epoch = key, val_acc, epoch
                best_state = copy.deepcopy(model.state_dict())
                if adversarial:
                    result.best_val_robust_acc = rob
    model.load_state_dict(best_state)
    model.eval()
    result.best_val_acc = best_acc
    result.seconds = time.perf_counter() - t0
    return result
