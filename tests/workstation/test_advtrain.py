"""Adversarial fine-tuning (PGD-AT, TRADES) in edgerobust.workstation.train.finetune: configs, the attacks, the effect."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgerobust.workstation.data.sources import load_data, split
from edgerobust.errors import UsageError
from edgerobust.registries import FINETUNE_MODES
from edgerobust.workstation.configs import TrainConfig
from edgerobust.workstation.train.finetune import pgd_linf, robust_accuracy, train, trades_adv
from edgerobust.workstation.model.nets import PixelModel

EPS = 0.1


@pytest.fixture(scope="module")
def digits():
    return split(load_data("digits"), seed=0, eval_samples=200)


@pytest.fixture(scope="module")
def clean_model(digits):
    """A small MLP trained on clean digits (standard), shared read-only: tests copy it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))
    model = PixelModel(net, [0.5], [0.5])
    train(model, digits.train.x, digits.train.y, digits.val.x, digits.val.y,
          TrainConfig(epochs=4, lr=3e-3, augment_shift=0))
    return model


def _adv_loss(model, x, y):
    """Mean CE on PGD examples crafted afresh against ``model``."""
    model.eval()
    xa = pgd_linf(model, torch.from_numpy(x), torch.from_numpy(y), EPS, 10, gen=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float(F.cross_entropy(model(xa), torch.from_numpy(y)))


def test_config_modes_and_alias():
    assert set(FINETUNE_MODES) == {"standard", "pgd-at", "trades"}
    assert TrainConfig(mode="adversarial").mode == "pgd-at"
    assert TrainConfig(mode="TRADES").mode == "trades"
    assert TrainConfig().adv_eps == pytest.approx(8 / 255) and TrainConfig().adv_steps == 7


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="fgsm-at"), "Unknown `finetune` 'fgsm-at'"),
    (dict(adv_eps=0), "`adv_eps` must be in \\(0, 1\\]"),
    (dict(adv_eps=2.0), "`adv_eps` must be in \\(0, 1\\]"),
    (dict(adv_steps=0), "`adv_steps` must be an integer >= 1"),
    (dict(trades_beta=-1), "`trades_beta` must be >= 0"),
    (dict(adv_alpha=-0.1), "`adv_alpha` must be positive"),
    (dict(optimizer="lbfgs"), "Unknown `optimizer` 'lbfgs'"),
    (dict(epochs=-1), "`epochs` must be an integer >= 0"),
    (dict(lr=0), "`lr` must be positive"),
    (dict(batch_size=0), "`batch_size` must be an integer >= 1"),
], ids=["mode", "eps0", "eps2", "steps", "beta", "alpha", "optimizer", "epochs", "lr", "batch"])
def test_config_rejects(kwargs, message):
    with pytest.raises(UsageError, match=message):
        TrainConfig(**kwargs)


def test_inner_maximizations_respect_the_bound_and_raise_the_loss(clean_model, digits):
    x, y = torch.from_numpy(digits.eval.x[:64]), torch.from_numpy(digits.eval.y[:64])
    clean_model.eval().zero_grad(set_to_none=True)
    for xa in (pgd_linf(clean_model, x, y, EPS, 5), trades_adv(clean_model, x, EPS, 5)):
        assert float((xa - x).abs().max()) <= EPS + 1e-6 and xa.min() >= 0 and xa.max() <= 1
        with torch.no_grad():
            assert F.cross_entropy(clean_model(xa), y) > F.cross_entropy(clean_model(x), y)
    assert all(p.grad is None for p in clean_model.parameters())


@pytest.mark.parametrize("mode", ["pgd-at", "trades"])
def test_adversarial_finetuning_lowers_the_adversarial_loss(clean_model, digits, mode):
    x, y = digits.eval.x, digits.eval.y
    before = _adv_loss(clean_model, x, y)
    cfg = dict(epochs=2, lr=2e-3, augment_shift=0, adv_eps=EPS, adv_steps=3, robust_val_samples=64)
    adv, std = copy.deepcopy(clean_model), copy.deepcopy(clean_model)
    r = train(adv, digits.train.x, digits.train.y, digits.val.x, digits.val.y, TrainConfig(mode=mode, **cfg))
    train(std, digits.train.x, digits.train.y, digits.val.x, digits.val.y, TrainConfig(mode="standard", **cfg))
    after = _adv_loss(adv, x, y)
    assert after < 0.9 * before, (before, after)
    rob = {name: robust_accuracy(m, x, y, EPS, 10) for name, m in (("adv", adv), ("std", std))}
    assert rob["adv"] > rob["std"], rob  # standard fine-tuning does not buy robustness
    # the best epoch is picked on robust validation accuracy
    assert all("val_robust_acc" in h for h in r.history)
    assert r.best_val_robust_acc == max(h["val_robust_acc"] for h in r.history)
    assert r.history[r.best_epoch - 1]["val_robust_acc"] == r.best_val_robust_acc


def test_the_seed_is_a_keyword_of_train_not_a_config_field(clean_model, digits):
    import dataclasses

    assert "seed" not in {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(epochs=1, augment_shift=1)
    runs = []
    for seed in (0, 0, 1):
        m = copy.deepcopy(clean_model)
        train(m, digits.train.x[:128], digits.train.y[:128], digits.val.x, digits.val.y, cfg, seed=seed)
        runs.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])  # batch order and shifts follow it


def test_standard_mode_keeps_its_history_shape(clean_model, digits):
    m = copy.deepcopy(clean_model)
    r = train(m, digits.train.x[:128], digits.train.y[:128], digits.val.x, digits.val.y,
              TrainConfig(epochs=1, augment_shift=0))
    assert set(r.history[0]) == {"epoch", "loss", "train_acc", "val_acc"} and r.best_val_robust_acc is None
