"""What a torchvision (or timm) constructor needs to fit a state_dict, read from the state_dict itself.

A state_dict names its tensors, and a few of those names and shapes decide constructor arguments
that the default call gets wrong: GoogLeNet and Inception v3 were saved with or without their
auxiliary heads; a ViT's position embedding fixes the image size it was built for. Reading them
here lets ``--arch torchvision:googlenet`` load either checkpoint instead of refusing one of them.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn


def constructor_kwargs(scheme: str, name: str, state: dict[str, Any] | None) -> dict[str, Any]:
    """Extra keyword arguments for ``scheme:name`` so that it fits ``state`` (empty when none are needed)."""
    if not state or scheme != "torchvision":
        return {}
    kwargs: dict[str, Any] = {}
    if name == "googlenet":
        kwargs["aux_logits"] = any(k.startswith(("aux1.", "aux2.")) for k in state)
        kwargs["init_weights"] = False  # the weights come from the file: skip scipy's slow init
    elif name == "inception_v3":
        kwargs["aux_logits"] = any(k.startswith("AuxLogits.") for k in state)
        kwargs["init_weights"] = False
    elif name.startswith("vit_"):
        size = _vit_image_size(state)
        if size:
            kwargs["image_size"] = size
    return kwargs


def _vit_image_size(state: dict[str, Any]) -> int | None:
    pos, proj = state.get("encoder.pos_embedding"), state.get("conv_proj.weight")
    if not isinstance(pos, torch.Tensor) or not isinstance(proj, torch.Tensor) or pos.ndim != 3 or proj.ndim != 4:
        return None
    side = math.isqrt(int(pos.shape[1]) - 1)
    if side * side != int(pos.shape[1]) - 1:
        return None
    return side * int(proj.shape[-1])


def drop_training_heads(model: nn.Module) -> nn.Module:
    """Remove auxiliary classifier heads that only training uses (GoogLeNet, Inception v3).

    They are never run in eval mode, so the exported model does not hold them, but pruning would
    have to keep them consistent and fine-tuning would train them; without them the model
    computes the same logits.
    """
    dropped = False
    for attr in ("aux1", "aux2", "AuxLogits"):
        if isinstance(getattr(model, attr, None), nn.Module):
            setattr(model, attr, None)
            dropped = True
    if dropped and hasattr(model, "aux_logits"):
        model.aux_logits = False
    return model


def keep_metadata(src: dict, dst: dict, model: nn.Module) -> dict:
    """Give ``dst`` the ``_metadata`` (per-module versions) of ``src``, or the model's own when ``src``
    lost it (a plain dict copy does): torchvision's MNASNet refuses weights without a version."""
    meta = getattr(src, "_metadata", None)
    if meta is None:
        meta = getattr(model.state_dict(), "_metadata", None)
    if meta is not None:
        from collections import OrderedDict

        dst = OrderedDict(dst)
        dst._metadata = {k.removeprefix("module."): v for k, v in meta.items()}  # type: ignore[attr-defined]
    return dst


# ---------------------------------------------------------------------------------------------
# channel shuffle (ShuffleNet v2): prune around it


def shuffle_blocks(net: nn.Module) -> list[nn.Module]:
    """ShuffleNet v2 blocks: their outputs are concatenated and channel-shuffled (a view/transpose/view)."""
    import sys

    mod = sys.modules.get("torchvision.models.shufflenetv2")
    return [m for m in net.modules() if mod is not None and isinstance(m, mod.InvertedResidual)]


def unprunable_layers(net: nn.Module) -> list[nn.Module]:
    """Layers whose output channels must stay because they reach an operation torch-pruning cannot map.

    In ShuffleNet v2 every block's output goes through concat + channel shuffle, whose index mapping
    torch-pruning gets wrong; so the layers feeding it keep their channels (branch1, and branch2's
    last 1x1 conv with its BatchNorm) and only each block's inner channels (branch2's first 1x1 conv
    and depthwise conv) are pruned. The shuffle's channel count is unchanged, so its mapping is moot.
    """
    if windowed(net):
        return [m for m in net.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
                and m not in set(mlp_hidden_layers(net))]
    keep: list[nn.Module] = []
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
    import contextlib

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


# ---------------------------------------------------------------------------------------------
# window partitions (Swin, MaxViT): only the MLPs' hidden layers are pruned

WINDOWED = {"SwinTransformer", "MaxVit", "SwinTransformerV2", "MaxxVit"}  # torchvision and timm class names


def windowed(net: nn.Module) -> bool:
    """A model whose attention torch-pruning cannot prune safely: window/grid partitions (its graph
    explodes) or timm's fused-qkv attention (qkv is split per head by a reshape it maps wrongly)."""
    if type(net).__name__ in WINDOWED:
        return True
    return type(net).__module__.startswith("timm.") and any(
        isinstance(getattr(m, "qkv", None), nn.Linear) for m in net.modules())


def mlp_hidden_layers(net: nn.Module) -> list[nn.Module]:
    """The first Linear of every MLP (Linear -> activation/dropout/norm -> Linear): its outputs feed only
    the second Linear, so they can be pruned without touching the residual stream or attention."""
    out = []
    for m in net.modules():
        fc1, fc2 = getattr(m, "fc1", None), getattr(m, "fc2", None)
        if isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear):  # timm's Mlp
            out.append(fc1)
        elif isinstance(m, nn.Sequential):
            linears = [c for c in m if isinstance(c, nn.Linear)]
            if len(linears) == 2 and linears[0].out_features == linears[1].in_features \
                    and all(not any(p.requires_grad for p in c.parameters()) or isinstance(c, nn.Linear)
                            for c in list(m)[list(m).index(linears[0]):list(m).index(linears[1])]):
                out.append(linears[0])
    return out
