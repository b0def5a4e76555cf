"""Module robustness sensitivity and the ratio allocation built on it (edgerobust.workstation.prune.sensitivity)."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgerobust.errors import UsageError
from edgerobust.workstation.train.finetune import pgd_linf
from edgerobust.workstation.model.nets import DigitsCNN, DigitsResNet, PixelModel
from edgerobust.workstation.configs import PruneConfig
from edgerobust.workstation.prune.structural import prunable_layers, prune
from edgerobust.workstation.prune.sensitivity import allocate_ratios, module_sensitivity


def _tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    model = PixelModel(net, [0.5], [0.25]).eval()
    x = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(2))
    return model, x, y


def _increase_along(model, layer, x_adv, y, direction, eps_rel):
    """Loss increase with ``layer.weight`` moved by ``direction`` scaled to the bound (independent loop)."""
    w0 = layer.weight.detach().clone()
    with torch.no_grad():
        base = float(F.cross_entropy(model(x_adv), y))
        layer.weight.copy_(w0 + eps_rel * w0.norm() * direction / direction.norm())
        moved = float(F.cross_entropy(model(x_adv), y))
        layer.weight.copy_(w0)
    return moved - base


def test_score_beats_first_order_and_random_directions_and_restores_weights():
    model, x, y = _tiny()
    before = copy.deepcopy(model.state_dict())
    layers = {"net.1": model.net[1], "net.3": model.net[3]}
    scores = module_sensitivity(model, x, y, layers, eps_rel=0.1, steps=10, attack_eps=0.1, attack_steps=5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # bit-exact restore
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())
    assert not model.training

    # the same fixed adversarial batch, crafted independently
    for p in model.parameters():
        p.requires_grad_(False)
    x_adv = pgd_linf(model, x, y, 0.1, 5, gen=torch.Generator().manual_seed(0))
    for name, layer in layers.items():
        layer.weight.requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), layer.weight)
        layer.weight.requires_grad_(False)
        first_order = _increase_along(model, layer, x_adv, y, g, 0.1)
        gen = torch.Generator().manual_seed(3)
        rand = max(_increase_along(model, layer, x_adv, y, torch.randn(layer.weight.shape, generator=gen), 0.1)
                   for _ in range(20))
        assert scores[name] >= first_order - 1e-6 and scores[name] >= rand - 1e-6
        assert scores[name] > 0


def test_score_grows_with_the_bound():
    model, x, y = _tiny()
    small = module_sensitivity(model, x, y, {"a": model.net[1]}, eps_rel=0.02, attack_eps=0.1, attack_steps=3)
    large = module_sensitivity(model, x, y, {"a": model.net[1]}, eps_rel=0.2, attack_eps=0.1, attack_steps=3)
    assert large["a"] > small["a"] >= 0


def test_module_without_weight_is_refused():
    model, x, y = _tiny()
    with pytest.raises(UsageError, match="no weight"):
        module_sensitivity(model, x, y, {"relu": model.net[2]})


def _wmean(r, c):
    return sum(r[k] * c[k] for k in r) / sum(c.values())


def test_allocation_keeps_the_target_and_orders_inversely():
    scores = {"a": 0.1, "b": 1.0, "c": 3.0, "d": 0.5}
    channels = {"a": 64, "b": 128, "c": 32, "d": 64}
    r = allocate_ratios(scores, 0.5, channels, round_to=1)
    assert _wmean(r, channels) == pytest.approx(0.5, abs=1e-6)
    by_score = sorted(scores, key=scores.get)
    assert [r[k] for k in by_score] == sorted(r.values(), reverse=True)
    assert r["a"] > r["d"] > r["b"] > r["c"]
    assert all(0 <= v <= 0.9 for v in r.values())


def test_equal_scores_give_the_uniform_ratio_and_clipping_renormalizes():
    c = {"a": 32, "b": 64}
    r = allocate_ratios({"a": 1.0, "b": 1.0}, 0.4, c)
    assert r == pytest.approx({"a": 0.4, "b": 0.4})
    r = allocate_ratios({"a": 0.0, "b": 100.0}, 0.5, c, max_ratio=0.7)  # a hits the ceiling, b takes the rest
    assert r["a"] == pytest.approx(0.7) and _wmean(r, c) == pytest.approx(0.5, abs=1e-6)


def test_allocation_rounds_kept_channels_and_stays_near_the_target():
    scores = {"a": 0.2, "b": 2.0, "c": 5.0, "d": 1.0, "e": 0.7}
    channels = {"a": 32, "b": 32, "c": 64, "d": 64, "e": 128}
    r = allocate_ratios(scores, 0.5, channels, round_to=8)
    kept = {k: round(channels[k] * (1 - r[k])) for k in r}
    assert all(k % 8 == 0 and k >= 8 for k in kept.values())
    assert abs(_wmean(r, channels) - 0.5) <= 4 / sum(channels.values()) + 1e-6


@pytest.mark.parametrize("kwargs, message", [
    (dict(target=0.95), "must lie within"),
    (dict(target=0.5, channels={"a": 8}), "No channel count"),
])
def test_allocation_rejects(kwargs, message):
    args = dict(scores={"a": 1.0, "b": 2.0}, channels={"a": 8, "b": 8})
    args.update(kwargs)
    with pytest.raises(UsageError, match=message):
        allocate_ratios(**args)


def test_pruned_channel_counts_follow_the_ratios():
    net = DigitsCNN().eval()
    example = torch.zeros(1, 1, 16, 16)
    layers = prunable_layers(net, example, 10)
    assert set(layers) == {f"features.{i}.0" for i in range(5)}
    channels = {k: m.out_channels for k, m in layers.items()}
    scores = {"features.0.0": 5.0, "features.1.0": 0.1, "features.2.0": 1.0, "features.3.0": 1.0, "features.4.0": 0.2}
    ratios = allocate_ratios(scores, 0.5, channels, round_to=8)
    prune(net, example, 10, PruneConfig(sparsity=0.5, ratios="uniform"), ratios=ratios)
    after = {k: m.out_channels for k, m in layers.items()}
    assert after == {k: round(channels[k] * (1 - ratios[k])) for k in channels}
    assert after["features.0.0"] > 16 and after["features.1.0"] < 16  # sensitive kept, insensitive cut
    assert sum(after.values()) == sum(channels.values()) // 2


def test_residual_groups_take_their_root_ratio():
    net = DigitsResNet().eval()
    example = torch.zeros(1, 1, 16, 16)
    layers = prunable_layers(net, example, 10)
    assert "stem.0" in layers and "layer1.0.conv2" not in layers  # coupled with the stem through the sums
    prune(net, example, 10, PruneConfig(sparsity=0.5), ratios={"stem.0": 0.75, "layer1.0.conv1": 0.25})
    assert net.stem[0].out_channels == 8 and net.layer1[0].conv2.out_channels == 8
    assert net.layer1[0].conv1.out_channels == 24 and net.layer1[1].conv1.out_channels == 16


def test_prune_config_ratio_modes():
    assert PruneConfig(global_pruning=True).ratios == "global"
    assert PruneConfig(ratios="global").global_pruning
    with pytest.raises(UsageError, match="Unknown `ratios` 'bogus'"):
        PruneConfig(ratios="bogus")
    with pytest.raises(UsageError, match="exclude each other"):
        PruneConfig(ratios="mrs", global_pruning=True)
