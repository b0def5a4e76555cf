"""Training and fine-tuning loops: evaluation each epoch, best weights kept, a progress bar."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ui
from .errors import UsageError

OPTIMIZERS = {
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True),
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
}


@dataclass(frozen=True)
class TrainConfig:
    """How to (fine-)tune: epochs, optimizer by name, learning rate (cosine-decayed), batch size."""

    epochs: int = 3
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0
    augment_shift: int = 1  # random translation by up to N pixels (0 disables)

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise UsageError(f"Epochs must be >= 0; got {self.epochs}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"The learning rate must be a positive number; got {self.lr}.")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"Unknown optimizer '{self.optimizer}'.", fix=f"Use one of: {', '.join(OPTIMIZERS)}.")
        if self.batch_size < 1:
            raise UsageError(f"The batch size must be >= 1; got {self.batch_size}.")


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # per epoch: loss, train_acc, val_acc
    best_val_acc: float = float("nan")
    best_epoch: int = 0
    seconds: float = 0.0


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Top-1 predictions of ``model`` (in eval mode) on an array of inputs."""
    was_training = model.training
    model.eval()
    preds = []
    for i in range(0, len(x), batch_size):
        preds.append(model(torch.from_numpy(x[i:i + batch_size])).argmax(1).numpy())
    model.train(was_training)
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    return float((predict(model, x, batch_size) == y).mean()) if len(y) else float("nan")


def _shift(xb: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    if k <= 0:
        return xb
    dx, dy = (int(v) for v in torch.randint(-k, k + 1, (2,), generator=gen))
    return torch.roll(xb, shifts=(dy, dx), dims=(2, 3))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
          config: TrainConfig, description: str = "fine-tune") -> TrainResult:
    """Train ``model`` (a pixel-space model) in place; the weights of the best validation epoch are kept."""
    import time

    t0 = time.perf_counter()
    result = TrainResult()
    if config.epochs == 0:
        result.best_val_acc = accuracy(model, x_val, y_val)
        return result
    gen = torch.Generator().manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = OPTIMIZERS[config.optimizer](params, config.lr, config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(x) / config.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch,
                                                pct_start=0.15)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    best_state = copy.deepcopy(model.state_dict())
    best_acc = -1.0
    with ui.task(description, total=config.epochs * steps_per_epoch) as advance:
        for epoch in range(1, config.epochs + 1):
            model.train()
            perm = torch.randperm(len(xt), generator=gen)
            total_loss, correct = 0.0, 0
            for b in range(steps_per_epoch):
                idx = perm[b * config.batch_size:(b + 1) * config.batch_size]
                xb, yb = _shift(xt[idx], config.augment_shift, gen), yt[idx]
                out = model(xb)
                loss = F.cross_entropy(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.item() * len(idx)
                correct += int((out.argmax(1) == yb).sum())
                advance(1, f"epoch {epoch}/{config.epochs} loss {loss.item():.3f}")
            val_acc = accuracy(model, x_val, y_val)
            result.history.append({"epoch": epoch, "loss": total_loss / len(xt), "train_acc": correct / len(xt),
                                   "val_acc": val_acc})
            advance(0, f"epoch {epoch}/{config.epochs} val acc {val_acc:.2%}")
            if val_acc > best_acc:
                best_acc, result.best_epoch = val_acc, epoch
                best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    result.best_val_acc = best_acc
    result.seconds = time.perf_counter() - t0
    return result
