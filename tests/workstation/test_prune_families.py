"""Graph patterns of the model families torch-pruning refused or walked for hours, rebuilt as tiny torch
modules: splits whose chunks are used twice, splits by a stored size, unequal splits of a residual
stream, partial residuals through slices, bare layer-scale parameters, 1x1-convolution MLPs, fused
attention, and the time budget of the graph work.

The strongest check: a pruned model computes exactly what the original computes with the removed
channels zeroed (BatchNorm models, so a zero channel stays zero). timm models are checked at the end
where timm is installed.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from edgerobust.workstation.prune import arch as prune_arch, graph as prune_graph, trace as prune_trace
from edgerobust.workstation.configs import PruneConfig
from edgerobust.workstation.prune.structural import prune, prunable_layers
from edgerobust.workstation.prune.trace import PruneError

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def cbr(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class Head(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class Res2Block(nn.Module):
    """Res2Net: conv1's output split by a stored width; chunk i is added to conv i-1's output."""

    def __init__(self, c: int = 32, scale: int = 4):
        super().__init__()
        self.scale, self.width = scale, c // scale
        self.conv1 = cbr(c, c)
        self.convs = nn.ModuleList(cbr(self.width, self.width, 3) for _ in range(scale - 1))
        self.conv3 = cbr(c, c)

    def forward(self, x):
        spx = torch.split(self.conv1(x), self.width, 1)
        out, sp = [], spx[0]
        for i, conv in enumerate(self.convs):
            sp = conv(sp if i == 0 else sp + spx[i])
            out.append(sp)
        return x + self.conv3(torch.cat(out + [spx[-1]], 1))


class CrossStage(nn.Module):
    """CSPNet: x.split(expand // 2); the second chunk feeds a residual block (used twice), then both concat."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.expand_chs = 2 * c
        self.conv_exp = cbr(c, 2 * c)
        self.block = cbr(c, c, 3)
        self.conv_transition = cbr(2 * c, c)

    def forward(self, x):
        xs, xb = self.conv_exp(x).split(self.expand_chs // 2, dim=1)
        xb = xb + self.block(xb)
        return self.conv_transition(torch.cat([xs, xb], 1))


class MixedConv(nn.Module):
    """MixNet: the input split by stored (unequal) sizes, one conv per part, concatenated."""

    def __init__(self, cin: int, cout: int, parts: tuple[int, ...]):
        super().__init__()
        outs = [cout * p // cin for p in parts]
        self.splits = list(parts)
        self.convs = nn.ModuleList(nn.Conv2d(p, o, 2 * i + 1, padding=i, bias=False)
                                   for i, (p, o) in enumerate(zip(parts, outs)))

    def forward(self, x):
        return torch.cat([c(p) for c, p in zip(self.convs, torch.split(x, self.splits, 1))], 1)


class MixBlock(nn.Module):
    def __init__(self, c: int = 24):
        super().__init__()
        self.pw = MixedConv(c, 4 * c, (c // 3, c - c // 3))
        self.bn1, self.act = nn.BatchNorm2d(4 * c), nn.ReLU()
        self.pwl = MixedConv(4 * c, c, (2 * c, 2 * c))
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return x + self.bn2(self.pwl(self.act(self.bn1(self.pw(x)))))


class PartialResidual(nn.Module):
    """ReXNet: the shortcut is added to the first `in_channels` of a wider output."""

    def __init__(self, cin: int = 16, cout: int = 24):
        super().__init__()
        self.in_channels = cin
        self.conv = cbr(cin, 2 * cin, 3)
        self.pwl = nn.Sequential(nn.Conv2d(2 * cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.pwl(self.conv(x))
        return torch.cat([y[:, :self.in_channels] + x, y[:, self.in_channels:]], 1)


class Scale(nn.Module):
    """MetaFormer's layer scale: a bare parameter viewed with a stored shape."""

    def __init__(self, c: int):
        super().__init__()
        self.shape = (c, 1, 1)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, c))

    def forward(self, x):
        return x * self.scale.view(self.shape)


class ConvMlp(nn.Module):
    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Conv2d(c, hidden, 1), nn.GELU(), nn.Conv2d(hidden, c, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class MetaBlock(nn.Module):
    """PoolFormer: pooling token mixer, a 1x1-convolution MLP, layer scales on both residual branches."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.scale1, self.mlp, self.scale2 = Scale(c), ConvMlp(c, 4 * c), Scale(c)

    def forward(self, x):
        x = x + self.scale1(self.pool(x) - x)
        return x + self.scale2(self.mlp(x))


class Attention(nn.Module):
    """A fused qkv projection split per head by a reshape (timm's ViT attention)."""

    def __init__(self, c: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class TinyVit(nn.Module):
    """A conv stage, then flattened tokens through attention and a Linear MLP."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.stem = cbr(3, 16, 3)
        self.stage = cbr(16, 48, 3)
        self.embed = nn.Conv2d(48, c, 1)
        self.attn, self.norm = Attention(c), nn.LayerNorm(c)
        self.fc1, self.act, self.fc2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = self.embed(self.stage(self.stem(x))).flatten(2).transpose(1, 2)
        x = x + self.attn(self.norm(x))
        x = x + self.fc2(self.act(self.fc1(x)))
        return self.head(x.mean(1))


class Gated(nn.Module):
    """A gated unit: x.chunk(2) by count, so pruning must keep the two halves equal."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.conv = cbr(c, 2 * c)
        self.out = cbr(c, c)

    def forward(self, x):
        a, b = self.conv(x).chunk(2, dim=1)
        return self.out(a * torch.sigmoid(b))


def net(*blocks: nn.Module, stem: int = 32, out: int | None = None) -> nn.Sequential:
    """A stem conv, ``blocks``, and a classifier on ``out`` channels (default ``stem``), with BatchNorm
    statistics that are not the identity."""
    torch.manual_seed(0)
    model = nn.Sequential(cbr(3, stem, 3), *blocks, Head(out or stem))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


class Recording(prune_graph.Remover):
    """The Remover that prune() uses, remembering itself, so a test can read what was removed."""

    made: list[prune_graph.Remover] = []

    def __init__(self, dg):
        super().__init__(dg)
        Recording.made.append(self)


@pytest.fixture
def removed(monkeypatch):
    Recording.made = []
    monkeypatch.setattr(prune_graph, "Remover", Recording)
    return Recording.made


def masked(original: nn.Module, pruned: nn.Module, removers: list[prune_graph.Remover]) -> nn.Module:
    """``original`` with a hook zeroing every output channel pruning removed from ``pruned``."""
    names = {id(m): n for n, m in pruned.named_modules()}
    mods = dict(original.named_modules())
    for remover in removers:
        for (node, is_out), gone in remover.removed.items():
            if is_out and isinstance(node.module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) \
                    and id(node.module) in names:
                idx = torch.tensor(sorted(set(gone)))

                def zero(_m, _i, out, idx=idx):
                    out = out.clone()
                    if out.dim() == 3:  # tokens: channels last
                        out[..., idx] = 0
                    else:
                        out[:, idx] = 0
                    return out

                mods[names[id(node.module)]].register_forward_hook(zero)
    return original


def prune_and_compare(model: nn.Module, removed, sparsity: float = 0.5, **kwargs):
    original = copy.deepcopy(model)
    res = prune(model, X[:1], 10, PruneConfig(sparsity=sparsity, round_to=1, **kwargs), show_progress=False,
                warn=False)
    with torch.no_grad():
        want, got = masked(original, model, removed)(X), model(X)
    assert got.shape == (2, 10)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    return res


# ---------------------------------------------------------------------------------------------
# splits, slices and stored sizes


def _register(monkeypatch, cls, fix):
    monkeypatch.setitem(prune_arch.AFTER_PRUNING, (cls.__module__.split(".")[0], cls.__name__), fix)


def test_a_split_by_a_stored_width_is_pruned_in_equal_chunks(monkeypatch, removed):
    """Res2Net: the chunks stay equal (the width is one number) and the stored width follows."""
    _register(monkeypatch, Res2Block, lambda m, x: setattr(m, "width", m.conv1[0].out_channels // m.scale))
    model = net(Res2Block(), Res2Block())
    res = prune_and_compare(model, removed)
    block = model[1]
    assert block.conv1[0].out_channels == 16 and block.width == 4
    assert [c[0].out_channels for c in block.convs] == [4, 4, 4]
    assert res.macs_reduction > 2.5 and res.kept == []


def test_an_unknown_module_that_splits_by_a_stored_size_keeps_its_channels_and_is_named():
    model = net(Res2Block())
    res = prune(model, X[:1], 10, PruneConfig(sparsity=0.5), show_progress=False, warn=False)
    assert model[1].conv1[0].out_channels == 32  # kept: its forward splits by self.width
    assert [c[0].out_channels for c in model[1].convs] == [8, 8, 8]
    (kept,) = res.kept
    assert kept["name"].startswith("1.conv") and "`1` (Res2Block) splits these channels by a size it stores" \
        in kept["reason"]
    assert any(f"`{kept['name']}`" in w and "keep their channels" in w for w in res.warnings)
    assert model[0][0].out_channels == 16  # the rest is pruned
    with torch.no_grad():
        assert model(X).shape == (2, 10)


def test_a_chunk_used_twice_maps_to_its_own_channels(monkeypatch, removed):
    """CSPNet: torch-pruning sized x.split(k) by its consumers (3 here, for 2 chunks) and indexed past
    the layer's end; the chunks are mapped by autograd's output numbers instead."""
    _register(monkeypatch, CrossStage, lambda m, x: setattr(m, "expand_chs", m.conv_exp[0].out_channels))
    model = net(CrossStage(), CrossStage())
    res = prune_and_compare(model, removed)
    assert model[1].conv_exp[0].out_channels == 32 and model[1].expand_chs == 32
    assert res.macs_reduction > 2.5


def test_unequal_splits_of_a_residual_stream(monkeypatch, removed):
    """MixNet: two groups share the stream's BatchNorm; the second is removed at shifted indices."""
    _register(monkeypatch, MixedConv, lambda m, x: setattr(m, "splits", [c.in_channels for c in m.convs]))
    model = net(MixBlock(), MixBlock(), stem=24)
    res = prune_and_compare(model, removed)
    assert sum(model[1].pw.splits) == model[1].pw.convs[0].in_channels + model[1].pw.convs[1].in_channels
    assert res.macs_reduction > 2.5


def test_a_partial_residual_through_slices(monkeypatch, removed):
    """ReXNet: x[:, :in] + shortcut, concatenated with x[:, in:]; torch-pruning sized the slice as the whole
    tensor and its group walk grew without end on a deep stack of these."""
    _register(monkeypatch, PartialResidual, lambda m, x: setattr(m, "in_channels", x.shape[1]))
    model = net(PartialResidual(32, 40), PartialResidual(40, 48), PartialResidual(48, 56), out=56)
    res = prune_and_compare(model, removed)
    assert model[2].in_channels == model[1].pwl[0].out_channels
    assert res.macs_reduction > 2.5


def test_chunks_by_count_stay_equal_without_help(removed):
    model = net(Gated())
    res = prune_and_compare(model, removed)
    assert model[1].conv[0].out_channels == 32 and res.kept == []


# ---------------------------------------------------------------------------------------------
# layer scales, 1x1-convolution MLPs, attention


def test_a_layer_scale_and_a_1x1_conv_mlp_are_pruned(monkeypatch, removed):
    """PoolFormer: the bare layer-scale parameters are pruned with the stream, their stored view shape
    follows, and the MLP's hidden 1x1 convolution loses half its channels."""
    _register(monkeypatch, Scale, prune_arch.AFTER_PRUNING[("timm", "Scale")])
    model = net(MetaBlock(), MetaBlock())
    original = copy.deepcopy(model)
    res = prune(model, X[:1], 10, PruneConfig(sparsity=0.5, round_to=1), show_progress=False, warn=False)
    assert model[1].scale1.scale.numel() == 16 and model[1].scale1.shape == (16, 1, 1)
    assert model[1].mlp.fc1.out_channels == 64
    assert res.macs_reduction > 3.0
    with torch.no_grad():
        assert model(X).shape == original(X).shape == (2, 10)


def test_mlp_hidden_layers_include_1x1_convolutions():
    model = net(MetaBlock())
    hidden = prune_arch.mlp_hidden_layers(model)
    assert model[1].mlp.fc1 in hidden and model[1].mlp.fc2 not in hidden


def test_fused_attention_keeps_its_layers_and_the_rest_is_pruned():
    torch.manual_seed(0)
    model = TinyVit().eval()
    res = prune(model, X[:1], 10, PruneConfig(sparsity=0.5, round_to=1), show_progress=False, warn=False)
    assert (model.attn.qkv.out_features, model.attn.proj.out_features) == (96, 32)  # attention and stream kept
    assert model.fc1.out_features == 64 and model.stem[0].out_channels == 8 and model.stage[0].out_channels == 24
    assert any("`attn`" in w and "attention" in w for w in res.warnings)
    with torch.no_grad():
        assert model(X).shape == (2, 10)
    assert [n for n, _ in prune_arch.attention_modules(model)] == ["attn"]


def test_prunable_layers_leave_out_kept_groups():
    model = net(Res2Block())
    names = prunable_layers(model, X[:1], 10)
    assert "1.convs.2.0" in names  # the last part only feeds the concatenation: its own group
    assert not {"1.conv1.0", "1.convs.0.0", "1.convs.1.0"} & set(names)  # coupled to the split by a stored width


class Gain(nn.Module):
    """A per-channel gain held in a buffer: pruning cannot see it, so the pruned forward fails."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.register_buffer("gain", torch.linspace(0.5, 1.5, c))

    def forward(self, x):
        return x * self.gain.view(1, -1, 1, 1)


def test_a_module_that_fails_once_pruned_is_named_with_its_kind():
    model = net(nn.Sequential(cbr(32, 32, 3), Gain()), nn.Sequential(cbr(32, 32, 3), Gain()))
    with pytest.raises(PruneError) as err:
        prune(model, X[:1], 10, PruneConfig(), show_progress=False, warn=False)
    text = str(err.value)
    assert "once pruned, `1.1` (Gain) fails" in text and "RuntimeError in its forward" in text
    assert "name them in `ignore_layers` (1.0.0, 2.0.0)" in text  # the layers whose channels pass through Gain
    model = net(nn.Sequential(cbr(32, 32, 3), Gain()), nn.Sequential(cbr(32, 32, 3), Gain()))
    res = prune(model, X[:1], 10, PruneConfig(ignore_layers=("1.0.0", "2.0.0")), show_progress=False, warn=False)
    assert model[0][0].out_channels == 16 and model[1][0][0].out_channels == 32 and res.macs_reduction > 1.2


# ---------------------------------------------------------------------------------------------
# the time budget


class SlowWhenTraced(nn.Module):
    """A model whose forward, when traced for pruning (grad enabled), never ends."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8, 10)

    def forward(self, x):
        import time

        while torch.is_grad_enabled():
            time.sleep(0.01)
        return self.fc(self.conv(x).mean((2, 3)))


def test_graph_work_past_its_budget_stops_with_a_message():
    with pytest.raises(PruneError) as err:
        prune(SlowWhenTraced(), X[:1], 10, PruneConfig(), show_progress=False, warn=False, graph_seconds=0.3)
    text = str(err.value)
    assert "Stopped pruning SlowWhenTraced: building the dependency graph took longer than 0.3 s" in text
    assert prune_trace.ENV in text and "`image_size`" in text


def test_time_limit_stops_a_loop_that_never_ends_and_then_lets_go():
    from edgerobust.workstation.resources.memguard import time_limit

    with pytest.raises(PruneError, match="too late"):
        with time_limit(0.2, lambda: PruneError("too late")):
            while True:
                pass
    with time_limit(60, lambda: PruneError("too late")):  # within its time: untouched
        total = sum(range(1000))
    assert total == 499500


def test_the_stop_names_the_group_being_collected():
    progress = prune_trace.Progress("RexNet", 120)
    progress.step = "collecting the dependency groups"
    progress.group("features.3.conv_pwl.conv")
    text = str(progress.error())
    assert "collecting the dependency groups took longer than 120 s" in text
    assert "name `features.3.conv_pwl.conv` in `ignore_layers`" in text


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(prune_trace.ENV, raising=False)
    assert prune_trace.budget_seconds() == prune_trace.GRAPH_SECONDS
    assert prune_trace.budget_seconds(5) == 5.0
    monkeypatch.setenv(prune_trace.ENV, "90")
    assert prune_trace.budget_seconds() == 90.0
    monkeypatch.setenv(prune_trace.ENV, "soon")
    with pytest.raises(PruneError, match="Cannot read EDGEROBUST_PRUNE_SECONDS='soon'"):
        prune_trace.budget_seconds()


def test_the_progress_line_counts_groups():
    seen = []
    model = net(CrossStage())
    progress = prune_trace.Progress("Sequential", 60, report=seen.append)
    dg = prune_graph.build(model, X[:1], progress)
    groups = list(dg.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]))
    assert groups and progress.groups >= len(groups)
    assert len(seen) == progress.groups and seen[-1].startswith("collecting the dependency groups, at `")


# ---------------------------------------------------------------------------------------------
# timm, where installed: the families torch-pruning refused or walked for hours (64 px, random weights)

# name -> BatchNorm only (the pruned model equals the masked original exactly)
TIMM = {"cspresnet50": True, "mixnet_s": True, "rexnet_100": True, "fasternet_t0": True, "poolformer_s12": False,
        "inception_next_atto": False}


@pytest.mark.parametrize("name", list(TIMM), ids=list(TIMM))
def test_timm_families_prune_to_half(name, removed):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    original = copy.deepcopy(model)
    res = prune(model, x[:1], 10, PruneConfig(sparsity=0.5), show_progress=False, warn=False)
    assert res.macs_reduction >= 2.0 and res.kept == []
    with torch.no_grad():
        got = model(x)
        if TIMM[name]:  # exactly the original with the removed channels zeroed
            assert torch.allclose(got, masked(original, model, removed)(x), atol=1e-4)
    assert got.shape == (2, 10)
