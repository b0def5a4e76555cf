"""Architecture patterns torch-pruning's dependency graph cannot prune as they are, and what is done about each.

- **Channel shuffle** (ShuffleNet v2): the layers feeding the shuffle keep their channels; each
  block's inner channels are pruned (:func:`unprunable_layers`).
- **Window partitions** (Swin, MaxViT): the graph explodes; only the hidden layers of the MLPs,
  Linear or 1x1 convolution, are pruned (:func:`windowed`, :func:`mlp_hidden_layers`).
- **Fused attention** (a ``qkv`` projection split per head by a reshape, as in timm's ViTs,
  EfficientFormer, LeViT, EfficientViT): every layer inside the attention keeps its output
  channels, and so does the residual stream its projection writes to; the rest of the model
  is pruned (:func:`attention_modules`).
- **Stored sizes** (a module that splits, slices or views its channels by a size it stored):
  the modules of :data:`AFTER_PRUNING` have that size updated once their channels are pruned;
  channels that any other module cuts by a stored size stay, and the result names them
  (:func:`cut_is_handled`).
"""
from __future__ import annotations

import contextlib
import math
import sys
from typing import Callable

import torch
import torch.nn as nn

# =============================================================================================
# stored sizes: updated after pruning


def _convs(m: nn.Module) -> list[nn.Module]:
    return [c for c in m.modules() if isinstance(c, nn.modules.conv._ConvNd)]


def _mixed_conv(m, x) -> None:  # timm MixedConv2d: splits its input by self.splits, one conv per part
    parts = list(m.values())
    m.splits = [c.in_channels for c in parts]
    m.in_channels, m.out_channels = sum(m.splits), sum(c.out_channels for c in parts)


def _cross_stage(m, x) -> None:  # timm CSPNet: x.split(self.expand_chs // 2) after conv_exp
    m.expand_chs = _convs(m.conv_exp)[-1].out_channels


def _res2net(m, x) -> None:  # timm Res2Net / DLA: torch.split(conv1's output, self.width) into self.scale parts
    m.width = _convs(m.conv1)[-1].out_channels // max(1, m.scale)


def _rexnet(m, x) -> None:  # timm ReXNet: adds the shortcut to y[:, :self.in_channels] (a partial residual)
    m.in_channels, m.out_channels = x.shape[1], _convs(m)[-1].out_channels


def _partial_conv(m, x) -> None:  # timm FasterNet: a conv on the first self.dim_conv3 channels, the rest as is
    m.dim_conv3 = m.partial_conv3.in_channels
    m.dim_untouched = x.shape[1] - m.dim_conv3


def _inception_dw(m, x) -> None:  # timm InceptionNeXt: split by self.split_indexes, three dw convs on parts
    parts = [m.dwconv_hw.in_channels, m.dwconv_w.in_channels, m.dwconv_h.in_channels]
    m.split_indexes = (x.shape[1] - sum(parts), *parts)


def _scale(m, x) -> None:  # timm MetaFormer's Scale: x * self.scale.view(self.shape)
    m.shape = (m.scale.numel(),) + tuple(m.shape[1:])


def _torchvision_vit(m, x) -> None:  # torchvision reshapes with self.hidden_dim in _process_input
    m.hidden_dim = m.conv_proj.out_channels


# (package, class name) -> what updates the sizes the module stored at construction, from the module
# and its (pruned) input, just before its forward runs
AFTER_PRUNING: dict[tuple[str, str], Callable[[nn.Module, torch.Tensor], None]] = {
    ("timm", "MixedConv2d"): _mixed_conv,
    ("timm", "CrossStage"): _cross_stage,
    ("timm", "CrossStage3"): _cross_stage,
    ("timm", "Bottle2neck"): _res2net,
    ("timm", "DlaBottle2neck"): _res2net,
    ("timm", "LinearBottleneck"): _rexnet,
    ("timm", "Partial_conv3"): _partial_conv,
    ("timm", "InceptionDWConv2d"): _inception_dw,
    ("timm", "Scale"): _scale,
    ("torchvision", "VisionTransformer"): _torchvision_vit,
}


def class_key(m: nn.Module) -> tuple[str, str]:
    """(package, class name) of a module: the key of :data:`AFTER_PRUNING` and :data:`KEEP_INSIDE`."""
    return type(m).__module__.split(".")[0], type(m).__name__


def fix_after_pruning(net: nn.Module, example) -> None:
    """Update the sizes that modules of :data:`AFTER_PRUNING` stored and their forward relies on: one
    forward of ``example``, each module fixed from its input just before it runs (a module's input
    can depend on the fix of one before it)."""
    fixes = [(m, AFTER_PRUNING[class_key(m)]) for m in net.modules() if class_key(m) in AFTER_PRUNING]
    if not fixes:
        return
    hooks = [m.register_forward_pre_hook(lambda mod, args, fix=fix: fix(mod, args[0] if args else None))
             for m, fix in fixes]
    was = net.training
    try:
        with torch.no_grad():
            net.eval()(example)
    finally:
        for h in hooks:
            h.remove()
        net.train(was)


def cut_is_handled(net: nn.Module, cut) -> bool:
    """Whether channels that ``cut`` (a :class:`edgerobust.workstation.prune.trace.ChannelCut`) splits or
    slices may be pruned: its module is one of :data:`AFTER_PRUNING`, or it chunks into equal parts
    by count (``chunk``), which pruning keeps equal."""
    if cut.kind == "chunk":
        return True
    owner = dict(net.named_modules()).get(cut.owner)
    return owner is not None and class_key(owner) in AFTER_PRUNING


def _whole(node) -> bool:
    """A slice that keeps every channel (``x[:, :self.out_chs]`` where that is all of them) stays whole when
    channels are pruned: nothing to update."""
    fn = node.grad_fn
    start, end, step = (getattr(fn, f"_saved_{k}", None) for k in ("start", "end", "step"))
    sizes, dim = getattr(fn, "_saved_self_sym_sizes", None), getattr(fn, "_saved_dim", None)
    if None in (start, end, step, sizes, dim):
        return False
    return start == 0 and step == 1 and end >= sizes[dim]


def cut_constraint(net: nn.Module, dg, group, channels: int) -> tuple[str, int]:
    """(why ``group`` must keep its channels, or ''; how many equal parts its channels must stay in).

    A group is kept when a split or slice of its channels belongs to a module whose stored size
    pruning would leave stale (:func:`cut_is_handled`), when it splits them into equal chunks
    that are not exactly the root layer's channels in order (pruning could not keep them equal), or
    when torch-pruning maps its channels past a layer's end (a reshape it cannot follow).
    """
    from edgerobust.workstation.prune.graph import channel_dim, cut_of
    from edgerobust.workstation.prune.trace import chunk_ranges

    broken = dg.out_of_range(group) if hasattr(dg, "out_of_range") else None
    if broken:
        return (f"torch-pruning maps these channels past the end of `{broken}` (through a reshape it cannot "
                "follow)"), 1
    parts = 1
    for item in group:
        node = item.dep.target
        cut = cut_of(dg, node)
        if cut is None or not channel_dim(node) or _whole(node):
            continue
        who = f"`{cut.owner}` ({cut.owner_type})" if cut.owner else "the model's forward"
        if not cut_is_handled(net, cut):
            verb = "slices" if cut.kind == "slice" else "splits"
            return f"{who} {verb} these channels by a size it stores, which pruning would leave stale", 1
        if cut.equal:
            ranges = chunk_ranges(node.grad_fn) or []
            idxs, roots = list(item.idxs), list(getattr(item, "root_idxs", item.idxs))
            in_order = sorted(idxs) == list(range(channels)) and idxs == roots
            if len({e - s for s, e in ranges}) != 1 or not in_order:
                return f"{who} splits these channels into equal chunks that pruning could not keep equal", 1
            parts = math.lcm(parts, len(ranges))
    return "", parts


# =============================================================================================
# fused attention: its layers keep their channels

ATTENTION_PARTS = ("qkv", "q", "k", "v", "kv")


def attention_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every attention whose projections torch-pruning cannot map: a module with a
    ``qkv`` layer, or ``q`` with ``kv`` or ``k`` (the outermost such module; nn.MultiheadAttention,
    which torch-pruning prunes head by head, is not one)."""
    found: list[tuple[str, nn.Module]] = []
    for name, m in net.named_modules():
        if isinstance(m, nn.MultiheadAttention) or any(name.startswith(f + ".") for f, _ in found if f):
            continue
        parts = {p for p in ATTENTION_PARTS if isinstance(getattr(m, p, None), nn.Module)}
        if "qkv" in parts or ("q" in parts and parts & {"kv", "k"}):
            found.append((name, m))
    return found


# (package, class name) -> why the layers inside keep their channels (named in the result's warnings)
KEEP_INSIDE: dict[tuple[str, str], str] = {
    ("timm", "SplitAttn"): "splits its channels into radix groups by a reshape with stored sizes",  # ResNeSt
}


def kept_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module of :data:`KEEP_INSIDE`."""
    return [(n, m) for n, m in net.named_modules() if class_key(m) in KEEP_INSIDE]


# =============================================================================================
# channel shuffle (ShuffleNet v2): prune around it


def shuffle_blocks(net: nn.Module) -> list[nn.Module]:
    """ShuffleNet v2 blocks: their outputs are concatenated and channel-shuffled (a view/transpose/view)."""
    mod = sys.modules.get("torchvision.models.shufflenetv2")
    return [m for m in net.modules() if mod is not None and isinstance(m, mod.InvertedResidual)]


def unprunable_layers(net: nn.Module) -> list[nn.Module]:
    """Layers whose output channels must stay because they reach an operation torch-pruning cannot map.

    In ShuffleNet v2 every block's output goes through concat + channel shuffle, whose index mapping
    torch-pruning gets wrong; so the layers feeding it keep their channels (branch1, and branch2's
    last 1x1 conv with its BatchNorm) and only each block's inner channels (branch2's first 1x1 conv
    and depthwise conv) are pruned. The shuffle's channel count is unchanged, so its mapping is moot.
    Window partitions keep everything but the MLPs' hidden layers; fused attention keeps every
    layer inside it (:func:`attention_modules`).
    """
    if windowed(net):
        hidden = set(mlp_hidden_layers(net))
        return [m for m in net.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m not in hidden]
    keep: list[nn.Module] = []
    for _, inner in kept_modules(net):
        keep.extend(m for m in inner.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)))
    for _, attn in attention_modules(net):
        keep.extend(m for m in attn.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)))
    for block in shuffle_blocks(net):
        if isinstance(getattr(block, "branch1", None), nn.Sequential) and len(block.branch1):
            keep.extend(block.branch1.modules())
        convs = [m for m in block.branch2 if isinstance(m, nn.Conv2d)]
        keep.append(convs[-1])
    return keep


def tolerant_reshape_mapping(skip_all: bool = False):
    """A context in which torch-pruning skips the reshape index mappings it cannot compute (or, with
    ``skip_all``, every reshape mapping).

    torch-pruning 1.6 divides by an inferred channel count of 0 at the channel shuffle's second
    view, and its recursive shape inference explodes on window partitions (Swin, MaxViT). The
    mapping is only needed to prune channels through a reshape, and :func:`unprunable_layers`
    keeps those channels, so skipping it is safe for these models.
    """
    from torch_pruning.dependency import index_mapping

    original = index_mapping.update_reshape_index_mapping

    def tolerant(graph, node):
        if skip_all:
            return None
        try:
            return original(graph, node)
        except ZeroDivisionError:
            return None

    @contextlib.contextmanager
    def ctx():
        index_mapping.update_reshape_index_mapping = tolerant
        try:
            yield
        finally:
            index_mapping.update_reshape_index_mapping = original

    return ctx()


def reshape_context(net: nn.Module):
    """The reshape mapping ``net`` needs: none skipped, the failing ones (channel shuffles), or all
    (window partitions; fused attention, whose reshapes are inside layers that keep their channels)."""
    if windowed(net) or attention_modules(net):
        return tolerant_reshape_mapping(skip_all=True)
    if shuffle_blocks(net):
        return tolerant_reshape_mapping()
    return contextlib.nullcontext()


# =============================================================================================
# window partitions (Swin, MaxViT): only the MLPs' hidden layers are pruned

WINDOWED = {"SwinTransformer", "MaxVit", "SwinTransformerV2", "MaxxVit"}  # torchvision and timm class names


def windowed(net: nn.Module) -> bool:
    """A model with window/grid partitions, on which torch-pruning's graph explodes."""
    return type(net).__name__ in WINDOWED


def _pointwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (isinstance(m, nn.modules.conv._ConvNd) and m.groups == 1
                                         and all(k == 1 for k in m.kernel_size))


def mlp_hidden_layers(net: nn.Module) -> list[nn.Module]:
    """The first layer of every MLP (Linear or 1x1 convolution -> activation/dropout/norm -> the same):
    its outputs feed only the second layer, so they can be pruned without touching the residual
    stream or attention."""
    out = []
    for m in net.modules():
        fc1, fc2 = getattr(m, "fc1", None), getattr(m, "fc2", None)
        if fc1 is not None and fc2 is not None and _pointwise(fc1) and _pointwise(fc2):  # timm's Mlp, ConvMlp
            out.append(fc1)
        elif isinstance(m, nn.Sequential):
            layers = [c for c in m if _pointwise(c)]
            if len(layers) == 2 and _channels_out(layers[0]) == _channels_in(layers[1]) \
                    and all(not any(p.requires_grad for p in c.parameters()) or _pointwise(c)
                            for c in list(m)[list(m).index(layers[0]):list(m).index(layers[1])]):
                out.append(layers[0])
    return out


def _channels_out(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _channels_in(m: nn.Module) -> int:
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


def check_runs(net: nn.Module, example: torch.Tensor, plans: list, arch: str) -> None:
    """Run the pruned ``net`` once; where a module's forward fails, :func:`named_failure` says which."""
    try:
        with torch.no_grad():
            net(example)
    except Exception as exc:
        raise named_failure(exc, net, plans, arch) or exc


def named_failure(exc: Exception, net: nn.Module, plans: list, arch: str) -> Exception | None:
    """A PruneError naming the module of ``net`` whose forward raised ``exc`` once pruned, and the layers to
    name in `ignore_layers`: the first layer of every pruned group whose channels pass through a module
    of its kind (None where no forward of ``net`` raised it)."""
    from edgerobust.workstation.prune.graph import owner_of
    from edgerobust.workstation.prune.trace import PruneError

    failing = _failing_module(exc, net)
    if failing is None:
        return None
    name, kind, alike = failing
    inside = {m for n in alike for m in dict(net.named_modules())[n].modules()}
    roots = [p.name for p in plans if p.kept < p.channels and any(
        owner_of(p.group._DG, item.dep.target) in inside for item in p.group)]
    order = {n: i for i, (n, _) in enumerate(net.named_modules())}
    names = sorted(roots, key=lambda n: order.get(n, 0)) or alike
    listed = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    error = PruneError(
        f"torch-pruning could not prune {arch}: once pruned, `{name}` ({kind}) fails.",
        why=f"{type(exc).__name__} in its forward: {str(exc)[:200]}. It computes with channel counts it "
            "stored, or reshapes channels in a way torch-pruning's graph does not follow.",
        fix=f"Leave the channels that pass through {kind} unpruned: name them in `ignore_layers` ({listed}).")
    error.__cause__ = exc
    return error


def _failing_module(exc: BaseException, net: nn.Module) -> tuple[str, str, list[str]] | None:
    """(name, class, names of every module of that class) of the innermost module of ``net`` whose forward
    raised ``exc``, or None where no forward of ``net`` is in its traceback."""
    names = {m: n for n, m in net.named_modules() if n}
    found = None
    tb = exc.__traceback__
    while tb is not None:
        me = tb.tb_frame.f_locals.get("self")
        if tb.tb_frame.f_code.co_name == "forward" and isinstance(me, nn.Module) and me in names:
            found = me
        tb = tb.tb_next
    if found is None:
        return None
    return names[found], type(found).__name__, [n for m, n in names.items() if type(m) is type(found)]
