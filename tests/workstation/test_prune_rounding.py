"""Sparsity that means what it says (issue 15): every layer keeps ceil((1-s)*c) channels rounded up to
round_to, and the realized MACs reduction never falls as the requested sparsity rises.

The rule is computed here from exact fractions, independently of edgerobust.workstation.prune.plan.
"""
import math
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust import events
from edgerobust.workstation.model.nets import ZOO
from edgerobust.workstation.configs import PruneConfig
from edgerobust.workstation.prune.structural import prune
from edgerobust.workstation.prune.plan import kept_channels

pytestmark = pytest.mark.filterwarnings("ignore:Unwrapped parameters detected")  # the ViT class token
HEADS, HIDDEN = 4, 64  # the tiny ViT below: its embedding keeps a multiple of the head count


def _vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=HEADS, hidden_dim=HIDDEN,
                             mlp_dim=128, num_classes=10)


def _resnet():
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)


def _mobilenet():
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(num_classes=10, width_mult=0.5)


def _densenet():
    from torchvision.models import DenseNet

    return DenseNet(growth_rate=16, block_config=(2, 2), num_init_features=32, bn_size=2, num_classes=10)


# family -> (factory, input shape); small torchvision members: channel counts and MACs need no weights
FAMILIES = {
    "digits-cnn": (lambda: ZOO["digits-cnn"].factory(num_classes=10), (1, 1, 16, 16)),
    "digits-resnet": (lambda: ZOO["digits-resnet"].factory(num_classes=10), (1, 1, 16, 16)),
    "resnet": (_resnet, (1, 3, 32, 32)),
    "mobilenet_v2": (_mobilenet, (1, 3, 32, 32)),
    "densenet": (_densenet, (1, 3, 32, 32)),
    "vit": (_vit, (1, 3, 32, 32)),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run several times faster on one thread than on cores other processes share."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rule(c: int, s: float, multiple: int) -> int:
    """ceil((1 - s) * c) rounded up to ``multiple``, within [multiple, c], in exact arithmetic."""
    raw = math.ceil((1 - Fraction(str(s))) * c)
    return min(c, max(multiple, -(-raw // multiple) * multiple))


def _prune(family: str, s: float, round_to: int, **kw):
    factory, shape = FAMILIES[family]
    torch.manual_seed(0)
    net = factory().eval()
    res = prune(net, torch.randn(shape), 10, PruneConfig(sparsity=s, round_to=round_to, **kw),
                show_progress=False, warn=False)
    return net, res


def _multiple(family: str, row: dict, round_to: int) -> int:
    return math.lcm(round_to, HEADS) if family == "vit" and row["before"] == HIDDEN else round_to


def _check_rows(family: str, res, s: float, round_to: int) -> None:
    pruned = 0
    for row in res.layers:
        if row["requested_sparsity"] == 0:  # the classifier, never pruned
            assert row["after"] == row["before"], row
            continue
        assert row["requested_sparsity"] == pytest.approx(s)
        assert row["after"] == rule(row["before"], s, _multiple(family, row, round_to)), row
        assert row["realized_sparsity"] == pytest.approx(1 - row["after"] / row["before"], abs=1e-6)
        pruned += row["after"] < row["before"]
    assert res.layers[-1]["after"] == 10  # the output layer keeps its classes
    if s >= 0.5:
        assert pruned > 0


@pytest.mark.parametrize("c,s,m,kept", [
    (32, 0.9, 8, 8), (32, 0.9, 1, 4), (64, 0.9, 8, 8), (128, 0.9, 8, 16), (128, 0.8, 8, 32),
    (32, 0.7, 8, 16), (10, 0.7, 1, 3), (4, 0.5, 8, 4), (32, 0.05, 16, 32), (100, 0.95, 1, 5), (24, 0.99, 8, 8),
], ids=lambda v: str(v))
def test_kept_channels_rule(c, s, m, kept):
    assert kept_channels(c, s, m) == kept == rule(c, s, m)


@given(c=st.integers(1, 2048), a=st.integers(1, 999), b=st.integers(1, 999), m=st.sampled_from([1, 2, 8, 16, 24]))
@settings(max_examples=300, deadline=None)
def test_kept_channels_property(c, a, b, m):
    lo, hi = sorted((a / 1000, b / 1000))
    k_lo, k_hi = kept_channels(c, lo, m), kept_channels(c, hi, m)
    assert k_lo == rule(c, lo, m) and k_hi == rule(c, hi, m)
    assert k_hi <= k_lo  # more sparsity never keeps more
    assert k_lo == c or (k_lo % m == 0 and k_lo >= m)


@pytest.mark.parametrize("round_to,sparsities", [(1, (0.3, 0.9)), (8, (0.1, 0.5, 0.8, 0.95)), (16, (0.3, 0.9))],
                         ids=["round1", "round8", "round16"])
@pytest.mark.parametrize("family", list(FAMILIES), ids=list(FAMILIES))
def test_families_follow_the_rule_and_compress_monotonically(family, round_to, sparsities):
    reductions = []
    for s in sparsities:
        net, res = _prune(family, s, round_to)
        _check_rows(family, res, s, round_to)
        reductions.append(res.macs_reduction)
    assert reductions == sorted(reductions), reductions
    with torch.no_grad():
        assert tuple(net(torch.rand(2, *FAMILIES[family][1][1:])).shape) == (2, 10)


@given(a=st.integers(50, 950), b=st.integers(50, 950), round_to=st.sampled_from([1, 8, 16]),
       family=st.sampled_from(["digits-cnn", "digits-resnet"]))
@settings(max_examples=8, deadline=None)
def test_random_sparsities_on_the_zoo(a, b, round_to, family):
    lo, hi = sorted((a / 1000, b / 1000))
    _, r_lo = _prune(family, lo, round_to)
    _, r_hi = _prune(family, hi, round_to)
    _check_rows(family, r_lo, lo, round_to)
    _check_rows(family, r_hi, hi, round_to)
    assert r_hi.macs_reduction >= r_lo.macs_reduction


def test_digits_cnn_compression_grows_with_sparsity_at_the_default_round_to():
    """The issue's table: 0.7/0.8/0.9 gave 15.0x/2.7x/1.2x fewer MACs; 0.9 removed almost nothing."""
    from edgerobust.workstation.pipeline.target import DEFAULT_ROUND_TO, resolve_target

    assert PruneConfig().round_to is None  # the target plan decides: 8 without a profile
    assert resolve_target(None).round_to == DEFAULT_ROUND_TO == 8
    red = [_prune("digits-cnn", s, 8)[1].macs_reduction for s in (0.7, 0.8, 0.9)]
    assert red[0] < red[1] < red[2] and red[2] >= 25, red


@pytest.mark.parametrize("family", ["digits-cnn", "resnet"])
def test_global_pruning_keeps_a_floor_per_layer_and_compresses_monotonically(family):
    reductions = []
    for s in (0.3, 0.6, 0.9):
        net, res = _prune(family, s, 8, global_pruning=True)
        for row in res.layers:
            if row["requested_sparsity"] > 0:
                assert row["after"] >= min(8, row["before"]) and (row["after"] % 8 == 0 or row["after"] == row["before"])
                assert row["after"] == row["target"]
        reductions.append(res.macs_reduction)
    assert reductions == sorted(reductions) and reductions[-1] > 4, reductions
    with torch.no_grad():
        assert tuple(net(torch.rand(2, *FAMILIES[family][1][1:])).shape) == (2, 10)


@pytest.mark.parametrize("global_pruning", [False, True], ids=["local", "global"])
def test_iterative_steps_end_on_the_rule(global_pruning):
    convs = {}
    for steps in (1, 3):
        net, res = _prune("digits-resnet", 0.9, 8, iterative_steps=steps, global_pruning=global_pruning)
        convs[steps] = {n: m.out_channels for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
        assert all(r["after"] == r["target"] for r in res.layers)
        if not global_pruning:
            _check_rows("digits-resnet", res, 0.9, 8)
    assert convs[1] == convs[3]


def test_per_layer_ratios_follow_the_rule():
    """mrs hands prune() per-layer ratios: each layer keeps the rule's count at its own ratio."""
    torch.manual_seed(0)
    net = ZOO["digits-cnn"].factory(num_classes=10).eval()
    ratios = {"features.0.0": 0.2, "features.2.0": 0.93, "features.4.0": 0.61}
    res = prune(net, torch.randn(1, 1, 16, 16), 10, PruneConfig(sparsity=0.5, round_to=8), ratios=ratios,
                show_progress=False, warn=False)
    rows = {r["name"]: r for r in res.layers}
    for name, s in {**ratios, "features.1.0": 0.5, "features.3.0": 0.5}.items():
        assert rows[name]["requested_sparsity"] == pytest.approx(s)
        assert rows[name]["after"] == rule(rows[name]["before"], s, 8)


def test_far_from_the_request_is_said_with_the_layers():
    _, ok = _prune("digits-cnn", 0.5, 8)
    assert ok.honest and ok.warnings == [] and ok.asked_macs_reduction == pytest.approx(4.0)
    factory, shape = FAMILIES["digits-cnn"]
    with events.recording_warnings() as logged:
        res = prune(factory().eval(), torch.randn(shape), 10, PruneConfig(sparsity=0.9, round_to=8),
                    show_progress=False)
    assert not res.honest and len(res.warnings) == 1
    text = res.warnings[0]
    assert "asks for about 100x fewer MACs" in text and f"{res.macs_reduction:.3g}x fewer" in text
    assert "multiples of 8" in text and "`round_to` 1" in text
    said = " ".join(" ".join(logged).split())  # the warnings prune logged
    assert "asks for about 100x fewer MACs" in said
    assert "features.0.0 32 -> 8 sparsity requested 0.90, realized 0.75" in said  # the deviating layer, listed
    assert res.requested_sparsity == 0.9 and res.round_to == 8
