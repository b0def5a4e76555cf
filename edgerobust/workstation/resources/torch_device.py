"""Where torch runs: `device` auto, cpu, cuda or cuda:N.

Every torch step of the workstation half (importance scores, fine-tuning, MRS sensitivity,
attack crafting, white-box sets) runs on the model's device; code that feeds a model numpy
arrays moves each batch to ``model_device(model)``. Export and ONNX quantization stay on the CPU.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from edgerobust.errors import UsageError

CHOICES = "auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda, cuda:N"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``spec``; UsageError when CUDA is asked for and not there."""
    if isinstance(spec, torch.device):
        return spec
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not m:
        raise UsageError(f"Unknown `device` '{spec}'.", fix=f"Use one of: {CHOICES}.")
    if not torch.cuda.is_available():
        raise UsageError(f"`device` {text} asks for CUDA, but torch sees no CUDA GPU on this host.",
                         why=f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}) reports "
                             "torch.cuda.is_available() == False.",
                         fix="Use `device` cpu (or auto), or run on a machine with an NVIDIA GPU and a CUDA build of torch.")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UsageError(f"`device` {text}: this host has {torch.cuda.device_count()} CUDA device(s).",
                         fix=f"Use cuda:0 .. cuda:{torch.cuda.device_count() - 1}.")
    return torch.device("cuda", index)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for a stateless model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def describe(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)`` for the manifest and the closing table."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


class on_device:
    """``with on_device(model, device):`` the model's torch work runs on ``device``; it is back on the
    CPU afterwards (export and ONNX quantization read it there)."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.model, self.device = model, device

    def __enter__(self) -> nn.Module:
        return self.model.to(self.device)

    def __exit__(self, *exc) -> None:
        self.model.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
