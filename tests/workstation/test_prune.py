"""Structural pruning: channels physically removed, the classifier kept, MACs down, every criterion runs."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from edgerobust.errors import UsageError
from edgerobust.workstation.model.nets import ZOO, DigitsCNN
from edgerobust.workstation.configs import PruneConfig
from edgerobust.workstation.prune.structural import CRITERIA, count, prune

EXAMPLE = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
CALIB = (np.random.default_rng(0).random((32, 1, 16, 16), dtype=np.float32),
         np.random.default_rng(1).integers(0, 10, 32))


def _net(name="digits-cnn"):
    torch.manual_seed(0)
    return ZOO[name].factory(num_classes=10).eval()


def _convs(net):
    return {n: m.out_channels for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}


def _runs(net, n=3):
    with torch.no_grad():
        out = net.eval()(torch.rand(n, 1, 16, 16))
    return tuple(out.shape)


@pytest.mark.parametrize("criterion", list(CRITERIA), ids=list(CRITERIA))
def test_every_criterion_removes_channels(criterion):
    net = _net()
    res = prune(net, EXAMPLE, 10, PruneConfig(sparsity=0.5, criterion=criterion), calib=CALIB)
    assert list(_convs(net).values()) == [16, 16, 32, 32, 64]  # 32-32-64-64-128 halved
    assert (net.fc.in_features, net.fc.out_features) == (64, 10)
    assert _runs(net) == (3, 10)
    assert {l["name"]: (l["before"], l["after"]) for l in res.layers}["fc"] == (10, 10)  # the classifier keeps its outputs
    assert res.params_after < res.params_before / 3
    assert (res.macs_after, res.params_after) == count(net, EXAMPLE)


def test_taylor_needs_data():
    with pytest.raises(UsageError, match="'taylor' criterion needs data"):
        prune(_net(), EXAMPLE, 10, PruneConfig(criterion="taylor"))


@pytest.mark.parametrize("name", list(ZOO), ids=list(ZOO))
def test_half_sparsity_cuts_macs_3x(name):
    net = _net(name)
    res = prune(net, EXAMPLE, 10, PruneConfig(sparsity=0.5, round_to=8))
    assert res.macs_reduction >= 3.0
    assert _runs(net) == (3, 10)



@pytest.mark.parametrize("sparsity", [0.3, 0.6], ids=["s0.3", "s0.6"])
def test_round_to_keeps_multiples_of_8(sparsity):
    net = _net()
    prune(net, EXAMPLE, 10, PruneConfig(sparsity=sparsity, round_to=8))
    before = _convs(_net())
    after = _convs(net)
    assert all(c % 8 == 0 for c in after.values()), after
    assert all(after[n] < before[n] for n in before)


def test_global_pruning():
    net = _net()
    res = prune(net, EXAMPLE, 10, PruneConfig(sparsity=0.5, global_pruning=True))
    after = _convs(net)
    assert all(c % 8 == 0 and c > 0 for c in after.values()), after
    assert sum(after.values()) <= 0.5 * sum(_convs(_net()).values()) + 8 * len(after)
    assert res.macs_reduction > 1.5
    assert _runs(net) == (3, 10)


def test_iterative_steps_reach_the_same_target():
    one, three = _net(), _net()
    prune(one, EXAMPLE, 10, PruneConfig(sparsity=0.5))
    prune(three, EXAMPLE, 10, PruneConfig(sparsity=0.5, iterative_steps=3))
    assert _convs(three) == _convs(one)
    assert _runs(three) == (3, 10)


def test_per_layer_ratios():
    net = _net()
    prune(net, EXAMPLE, 10, PruneConfig(sparsity=0.5), ratios={"features.4.0": 0.75})
    assert _convs(net)["features.4.0"] == 32 and _convs(net)["features.0.0"] == 16
    with pytest.raises(UsageError, match="unknown layers: nope"):
        prune(_net(), EXAMPLE, 10, PruneConfig(), ratios={"nope": 0.5})


BAD_CONFIGS = {
    "sparsity-0": (dict(sparsity=0), "strictly between 0 and 1; got 0"),
    "sparsity-1": (dict(sparsity=1), "strictly between 0 and 1; got 1"),
    "sparsity-neg": (dict(sparsity=-0.1), "got -0.1"),
    "sparsity-1.5": (dict(sparsity=1.5), "got 1.5"),
    "sparsity-bool": (dict(sparsity=True), "`sparsity` must be strictly between 0 and 1"),
    "criterion": (dict(criterion="magic"), "Unknown `criterion` 'magic'"),
    "round-to-0": (dict(round_to=0), "`round_to` must be an integer >= 1"),
    "steps-0": (dict(iterative_steps=0), "`iterative_steps` must be an integer >= 1"),
    "mrs-samples-0": (dict(mrs_samples=0), "`mrs_samples` must be an integer >= 1"),
}


@pytest.mark.parametrize("kwargs,message", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_prune_config_rejects(kwargs, message):
    with pytest.raises(UsageError, match=message):
        PruneConfig(**kwargs)


def test_round_to_none_is_8_when_pruning_alone():
    net = _net()
    assert PruneConfig().round_to is None
    res = prune(net, EXAMPLE, 10, PruneConfig(sparsity=0.3))
    assert res.round_to == 8 and all(c % 8 == 0 for c in _convs(net).values())


def test_the_seed_is_a_keyword_of_prune_not_a_config_field():
    import dataclasses

    assert "seed" not in {f.name for f in dataclasses.fields(PruneConfig)}
    cfg = PruneConfig(sparsity=0.5, criterion="random", round_to=1)
    a, b, c = _net(), _net(), _net()
    prune(a, EXAMPLE, 10, cfg, seed=0)
    prune(b, EXAMPLE, 10, cfg, seed=0)
    prune(c, EXAMPLE, 10, cfg, seed=1)
    w = [net.state_dict()["features.0.0.weight"] for net in (a, b, c)]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])  # the random criterion follows the seed


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "resnet18"])
def test_torchvision_models_prune_and_run(arch):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None, num_classes=10).eval()
    example = torch.randn(1, 3, 64, 64)
    res = prune(net, example, 10, PruneConfig(sparsity=0.5))
    assert res.macs_reduction > 2.0 and res.params_after < res.params_before
    with torch.no_grad():
        assert tuple(net(torch.randn(2, 3, 64, 64)).shape) == (2, 10)
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    assert last.out_features == 10


def test_ctrl_c_during_the_dependency_trace_is_not_swallowed():
    """torch-pruning retries a failed trace in a bare except; a Ctrl-C there must still stop the run."""
    import torch
    import torch.nn as nn

    from edgerobust.workstation.prune.structural import dependency_graph

    class Once(nn.Module):  # the first forward is "interrupted", later ones succeed
        def __init__(self):
            super().__init__()
            self.conv, self.calls = nn.Conv2d(1, 4, 3), 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 1:
                raise KeyboardInterrupt
            return self.conv(x)

    with pytest.raises(KeyboardInterrupt):
        dependency_graph(Once(), torch.zeros(1, 1, 8, 8))
