"""What a torchvision (or timm) constructor needs to fit a state_dict, read from the state_dict itself.

A state_dict names its tensors, and a few of those names and shapes decide constructor arguments
that the default call gets wrong: GoogLeNet and Inception v3 were saved with or without their
auxiliary heads; a ViT's position embedding fixes the image size it was built for. Reading them
here lets the `arch` torchvision:googlenet load either checkpoint instead of refusing one of them.
(What pruning needs to know about architectures is in edgerobust.workstation.prune.arch.)
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
