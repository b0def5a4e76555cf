"""What the pruning graph's trace records, and its time budget: the channel cuts (splits, chunks,
slices) each module makes, the progress of graph work, and the stop past the budget
(edgerobust.workstation.prune.graph uses them)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn
from torch.overrides import TorchFunctionMode

from edgerobust.errors import EdgeRobustError

GRAPH_SECONDS = 150.0  # graph work past this stops with a message (within 3 minutes of starting)
ENV = "EDGEROBUST_PRUNE_SECONDS"


class PruneError(EdgeRobustError):
    """torch-pruning cannot prune this architecture as it is: refused with the cause and what to try."""


def budget_seconds(seconds: float | None = None) -> float:
    """The graph budget: ``seconds``, else ``$EDGEROBUST_PRUNE_SECONDS``, else :data:`GRAPH_SECONDS`."""
    if seconds is not None:
        return float(seconds)
    text = os.environ.get(ENV, "").strip()
    if not text:
        return GRAPH_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise PruneError(f"Cannot read {ENV}={text!r}.", fix="Give the seconds as a positive number, e.g. 600.")
    return value


class Progress:
    """What the graph work of one pruning run is doing: the step, the layer whose group it is collecting,
    how many groups it has collected; :meth:`error` says it when the time budget is spent."""

    def __init__(self, arch: str, seconds: float, report: Callable[[str], None] | None = None):
        self.arch, self.seconds, self.report = arch, seconds, report
        self.step = "building the dependency graph"
        self.root: str | None = None
        self.groups = 0

    def group(self, root: str | None) -> None:
        self.root = root
        self.groups += 1
        if self.report is not None:
            self.report(f"{self.step}, at `{root}`")

    def error(self) -> PruneError:
        if self.root:
            stuck = (f"It was collecting the channels coupled to `{self.root}` (group {self.groups}), whose group "
                     "keeps growing through slices and concatenations.")
            fix = f"Leave that group unpruned: name `{self.root}` in `ignore_layers`; or allow more time with {ENV}=600."
        else:
            stuck = "It was tracing the model and mapping its reshapes."
            fix = f"Try a smaller input (`image_size`), or allow more time with {ENV}=600."
        return PruneError(f"Stopped pruning {self.arch}: {self.step} took longer than {self.seconds:g} s.",
                          why=f"{stuck} torch-pruning walks the dependency graph in Python; on some architectures "
                              "that walk grows much faster than the model.", fix=fix)


@dataclass(frozen=True)
class ChannelCut:
    """A split, chunk or slice of tensor channels seen while tracing: the module whose forward made it."""

    owner: str  # module name ('' for the model itself)
    owner_type: str
    kind: str  # split | split_with_sizes | chunk | slice | unbind
    equal: bool  # every chunk the same size (split by one size, chunk): pruning must keep them equal


_CUT_FUNCS = {"split": "split", "split_with_sizes": "split_with_sizes", "chunk": "chunk", "__getitem__": "slice",
              "narrow": "slice", "tensor_split": "split_with_sizes", "unbind": "unbind"}


class RecordCuts(TorchFunctionMode):
    """Records, for the grad_fn of every operation's result, which module's forward called it, and more
    for splits, chunks, slices (:class:`ChannelCut`) and concatenations (their inputs' sizes)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.names = {m: n for n, m in net.named_modules()}
        self.cuts: dict[object, ChannelCut] = {}
        self.cats: dict[object, list[int]] = {}  # grad_fn of a concatenation along dim 1 -> its inputs' sizes
        self.owners: dict[object, nn.Module | None] = {}  # grad_fn of an operation -> the module that ran it

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in ("cat", "concat", "concatenate"):
            self._cat(out, args, kwargs)
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        fn = getattr(first, "grad_fn", None)
        if fn is None or fn in self.owners:
            return out
        owner = self.owners[fn] = self._owner()
        kind = _CUT_FUNCS.get(name)
        if kind is not None:
            if fn not in self.cuts:
                equal = kind == "chunk" or (kind == "split" and isinstance(_arg(args, kwargs, 1, "split_size"), int))
                self.cuts[fn] = ChannelCut(self.names.get(owner, ""), type(owner).__name__ if owner is not None
                                           else "", kind, equal)
        return out

    def _cat(self, out, args, kwargs) -> None:
        tensors, dim = _arg(args, kwargs, 0, "tensors"), _arg(args, kwargs, 1, "dim")
        fn = getattr(out, "grad_fn", None)
        if fn is None or not isinstance(tensors, (list, tuple)) or not tensors:
            return
        dim = 0 if dim is None else dim
        rank = tensors[0].dim()
        if isinstance(dim, int) and -rank <= dim < rank and dim % rank == 1:
            self.cats[fn] = [int(t.shape[1]) for t in tensors if t.requires_grad]

    def _owner(self) -> nn.Module | None:
        frame = sys._getframe(2)
        while frame is not None:
            me = frame.f_locals.get("self")
            if isinstance(me, nn.Module) and me in self.names and frame.f_code.co_name != "_call_impl":
                return me
            frame = frame.f_back
        return None


def _arg(args, kwargs, i: int, name: str):
    if kwargs and name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else None


def chunk_ranges(fn) -> list[tuple[int, int]] | None:
    """(start, end) of every chunk of a split's grad_fn along the channel dimension (1), or None."""
    sizes_in = getattr(fn, "_saved_self_sym_sizes", None)
    dim = getattr(fn, "_saved_dim", None)
    if sizes_in is None or dim is None or not 0 <= dim < len(sizes_in) or dim != 1:
        return None
    total = int(sizes_in[dim])
    if hasattr(fn, "_saved_split_sizes"):
        sizes = [int(s) for s in fn._saved_split_sizes]
    elif hasattr(fn, "_saved_split_size"):
        k = int(fn._saved_split_size)
        sizes = [min(k, total - s) for s in range(0, total, k)] if k > 0 else []
    else:
        return None
    if sum(sizes) != total:
        return None
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [(s, s + n) for s, n in zip(starts, sizes)]
