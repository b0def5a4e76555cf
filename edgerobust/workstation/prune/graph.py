"""torch-pruning's dependency graph, built and walked within a time budget, with channel splits mapped right.

What torch-pruning 1.6 gets wrong on some architectures, fixed here without changing what it
computes where it was right (a pruned model computes what the original computes with the removed
channels zeroed: tests/workstation/test_prune_families.py):

- **Splits and concatenations.** It sizes ``x.split(k)`` as ``k`` times the number of
  *consumers* (a chunk used twice, by a residual add and a conv as in CSPNet, shifts every later
  range), infers a concatenation's input sizes through slices as the whole tensor (ReXNet, DPN),
  and going back from a concatenation to the split feeding it adds the chunk's offset before it
  takes away its place in the concatenation (Res2Net). :class:`Graph` maps each consumer to the
  chunk autograd says it reads (the ``output_nr`` of its edge) and sizes concatenations as traced.
- **Walks that explode.** To collect a group it revisits a layer whenever a channel set reaches it
  by another path, so partial residuals that slice and concatenate (ReXNet) take longer than
  anyone waits. :class:`Graph` visits each (layer, handler, channel) once; the merged group is the
  same. Where one channel is reached from two channels of the root (GhostNet's cheap depthwise
  copy of a residual stream, a gate multiplying two chunks), the two can only go together; the
  group lists such pairs of root channels (``ties``).
- **Partial roots.** It roots a group at the first layer it meets walking back from the output;
  when that layer holds one chunk of a split, the other chunks' channels belong to no group.
  :meth:`Graph.get_all_groups` collects such a group again from the layer it holds partly.
- **Removal after removal.** It collects each group again, through mappings traced on the
  unpruned model, after earlier groups were removed; :class:`Remover` removes every group of a
  step by the indices it had when collected, shifted by what was removed before.
- **Stored sizes.** A module that splits or slices its channels by a size it stored (``self.width``)
  breaks once those channels are pruned. :func:`build` records which module ran each operation,
  split and slice (:class:`ChannelCut`), so :mod:`edgerobust.workstation.prune.arch` can update the
  sizes it knows and keep the channels of the others, naming them.

Graph work runs under a time budget (:func:`edgerobust.workstation.prune.trace.budget_seconds`: ``GRAPH_SECONDS``, or
``$EDGEROBUST_PRUNE_SECONDS``), enforced by :func:`edgerobust.workstation.resources.memguard.time_limit`: past it
the walk stops with the :class:`PruneError` of :meth:`Progress.error`, naming the layer whose group it
was collecting.
"""
from __future__ import annotations

import bisect
from numbers import Number

import torch.nn as nn
import torch_pruning as tp
from torch_pruning import ops
from torch_pruning._helpers import _HybridIndex
from torch_pruning.dependency import index_mapping
from torch_pruning.dependency.dependency import Dependency
from torch_pruning.dependency.group import Group
from torch_pruning.pruner import function

from edgerobust.workstation.prune.trace import ChannelCut, Progress, RecordCuts, chunk_ranges

class _Then:
    """Two index mappings, ``first`` then ``second``. torch-pruning applies a dependency's mappings in slot
    order, the split's (slot 0) before the concatenation's (slot 1); going back from a concatenation
    to the split that feeds it, the concatenation's must come first, or the chunk's offset is added
    before its position in the concatenation is taken away (Res2Net's last chunk)."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def __call__(self, idxs):
        return self.second(self.first(idxs))


class Graph(tp.DependencyGraph):
    """torch-pruning's DependencyGraph with chunks mapped by autograd's output numbers, a group walk that
    visits each (layer, handler, channel) once, telling :class:`Progress` which group it collects."""

    progress: Progress | None = None
    cuts: dict[object, ChannelCut]

    recorded: RecordCuts | None = None

    def _build_dependency(self, module2node):
        """torch-pruning's edges, then each concatenation's input sizes as traced (torch-pruning infers them
        next, and cannot through slices: DPN's ``x[:, :n]`` gave it None)."""
        super()._build_dependency(module2node)
        self.set_concat_sizes(keep_inferred=False)

    def set_concat_sizes(self, keep_inferred: bool) -> None:
        cats = self.recorded.cats if self.recorded is not None else {}
        for node in self.module2node.values():
            if node.type == ops.OPTYPE.CONCAT:
                sizes = cats.get(node.grad_fn)
                if sizes and len(sizes) == len(node.inputs):
                    node.module.concat_sizes = sizes
                elif not keep_inferred:
                    node.module.concat_sizes = None

    def map_splits(self) -> None:
        """Give every split's edges the channel range of the chunk each consumer reads, and every reshape
        of a bare 1-d parameter (a layer scale viewed as (1, C, 1, 1)) the identity: torch-pruning
        infers its output size downstream and maps it as a flatten (InceptionNeXt)."""
        for node in self.module2node.values():
            if node.type == ops.OPTYPE.RESHAPE and any(
                    i.type == ops.OPTYPE.PARAMETER and i.module.dim() == 1 for i in node.inputs):
                for dep in node.dependencies + [d for i in node.inputs + node.outputs for d in i.dependencies
                                                if d.target is node]:
                    dep.index_mapping[0] = None
        for node in self.module2node.values():
            if node.type != ops.OPTYPE.SPLIT or not node.enable_index_mapping:
                continue
            ranges = chunk_ranges(node.grad_fn)
            if ranges is None:
                continue
            sizes = []
            for out in dict.fromkeys(node.outputs):
                nrs = [nr for f, nr in getattr(out.grad_fn, "next_functions", ()) if f is node.grad_fn]
                to_out = [d for d in node.dependencies if d.target is out]
                back = [d for d in out.dependencies if d.target is node]
                if len(nrs) != len(to_out) or len(nrs) != len(back) or any(nr >= len(ranges) for nr in nrs):
                    continue
                for nr, d_out, d_back in zip(nrs, to_out, back):
                    d_out.index_mapping[0] = index_mapping._SplitIndexMapping(offset=list(ranges[nr]), reverse=False)
                    back_map = index_mapping._SplitIndexMapping(offset=list(ranges[nr]), reverse=True)
                    cat_map = d_back.index_mapping[1]
                    if isinstance(d_back.index_mapping[0], _Then) and cat_map is None:
                        cat_map = d_back.index_mapping[0].first
                    if cat_map is not None:  # a chunk concatenated: from the concatenation's channels first
                        d_back.index_mapping[0], d_back.index_mapping[1] = _Then(cat_map, back_map), None
                    else:
                        d_back.index_mapping[0] = back_map
            for out in node.outputs:  # per output position, as torch-pruning's shape inference reads them
                nrs = [nr for f, nr in getattr(out.grad_fn, "next_functions", ()) if f is node.grad_fn]
                sizes.append(ranges[nrs[0]][1] - ranges[nrs[0]][0] if nrs and nrs[0] < len(ranges) else 0)
            node.module.split_sizes = sizes

    def get_pruning_group(self, module, pruning_fn, idxs) -> Group:
        """The group of ``module``'s channels ``idxs``: what torch-pruning's own method returns, walked
        once per (layer, handler, channel)."""
        if module not in self.module2node:
            raise ValueError(f"Module {module} is not in the dependency graph.")
        if isinstance(module, ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
            pruning_fn = function.prune_depthwise_conv_out_channels
        if isinstance(idxs, Number):
            idxs = [idxs]
        if self.progress is not None:
            self.progress.group(self._module2name.get(module))
        idxs = [_HybridIndex(idx=i, root_idx=i) for i in idxs]
        index_mapping.update_index_mapping(self)
        self.map_splits()
        root = self.module2node[module]
        group = Group()
        first = Dependency(pruning_fn, pruning_fn, source=root, target=root)
        group.add_dep(dep=first, idxs=idxs)
        seen: dict[tuple, dict[int, int]] = {(root, pruning_fn): {i.idx: i.root_idx for i in idxs}}
        stack, ties = [(first, idxs)], set()
        while stack:
            dep, cur = stack.pop()
            for new_dep in dep.target.dependencies:
                if not new_dep.is_triggered_by(dep.handler):
                    continue
                new = cur
                for mapping in new_dep.index_mapping:
                    if mapping is not None:
                        new = mapping(new)
                known = seen.setdefault((new_dep.target, new_dep.handler), {})
                fresh = []
                for i in new:
                    if i.idx not in known:
                        known[i.idx] = i.root_idx
                        fresh.append(i)
                    elif known[i.idx] != i.root_idx:
                        ties.add((known[i.idx], i.root_idx))
                if fresh:
                    group.add_dep(new_dep, fresh)
                    stack.append((new_dep, fresh))
        merged = self._merged(group)
        merged.ties = sorted(ties)
        return merged

    def get_all_groups(self, ignored_layers=(), root_module_types=(ops.TORCH_CONV, ops.TORCH_LINEAR)):
        """torch-pruning's groups, each rooted at a layer all of whose channels it holds.

        torch-pruning roots a group at the first layer it meets, walking back from the output; when
        that layer holds only one chunk of a split (CSPNet's residual half), the group holds only that
        chunk of the layer before the split, whose other channels then belong to no group. Here such
        a group is collected again from the layer it holds partly, until it holds every layer whole.
        """
        ignored = {id(m) for m in list(ignored_layers) + list(self.IGNORED_LAYERS_IN_TRACING)}
        types = tuple(root_module_types)
        visited: set[int] = set()
        for m in list(self.module2node):
            if id(m) in ignored or id(m) in visited or not isinstance(m, types):
                continue
            pruner = self.get_pruner_of_module(m)
            if pruner is None or pruner.get_out_channels(m) is None:
                continue
            group = self._whole_group(m, pruner, types)
            prunable = True
            for dep, _ in group:
                if self.is_out_channel_pruning_fn(dep.handler):
                    visited.add(id(dep.target.module))
                    prunable = prunable and id(dep.target.module) not in ignored
            if prunable:
                yield group

    def _whole_group(self, root, pruner, types) -> Group:
        valid = None
        for _ in range(len(self.module2node)):
            group = self.get_pruning_group(root, pruner.prune_out_channels, list(range(pruner.get_out_channels(root))))
            if valid is not None and self.out_of_range(group):
                return valid  # collected again, it maps past a layer's end (a reshape): keep the first
            valid = group
            partial = next((dep.target.module for dep, idxs in group
                            if self.is_out_channel_pruning_fn(dep.handler) and isinstance(dep.target.module, types)
                            and len(set(idxs)) < (self.get_out_channels(dep.target.module) or 0)), None)
            if partial is None:
                return group
            root, pruner = partial, self.get_pruner_of_module(partial)
        return group

    def out_of_range(self, group: Group) -> str | None:
        """The name of a layer the group indexes past its channel count (a reshape torch-pruning maps
        wrongly), or None."""
        for dep, idxs in group:
            module = dep.target.module
            if type(module).__module__ == ops.__name__ or not idxs:
                continue
            try:
                n = self.get_out_channels(module) if self.is_out_channel_pruning_fn(dep.handler) \
                    else self.get_in_channels(module)
            except (AttributeError, TypeError):
                continue
            if n is not None and max(idxs) >= n:
                return self._module2name.get(module) or dep.target.name
        return None

    def _merged(self, group: Group) -> Group:
        merged = Group()
        for dep, idxs in group.items:
            if isinstance(dep.target.module, nn.Parameter) and any(dep.target.module is p for p in self.ignored_params):
                continue
            merged.add_and_merge(dep, idxs)
        merged._DG = self
        for i in range(len(merged)):
            hybrid = merged[i].idxs
            item = tp._helpers.GroupItem(merged[i].dep, tp._helpers.to_plain_idxs(hybrid))
            item.root_idxs = tp._helpers.to_root_idxs(hybrid)
            merged[i] = item
        return merged



class Remover:
    """Prunes several groups collected on one unpruned graph, one after the other.

    Each group names its channels by the indices they had when it was collected; once an earlier
    group removed channels of a layer the two share (a residual stream split into halves, as in
    MixNet), those indices are shifted. torch-pruning would collect the group again through index
    mappings that were traced before anything was removed; this counts, per layer and dimension,
    the channels removed so far, and shifts each index by them.
    """

    def __init__(self, dg: tp.DependencyGraph):
        self.dg = dg
        self.removed: dict[tuple, list[int]] = {}

    def prune(self, group: Group, root_idxs) -> bool:
        """Remove the channels of ``group`` coupled to the root's ``root_idxs``; False (nothing removed)
        where that would empty a layer."""
        keep = set(root_idxs)
        items = []
        for item in group:
            dep, module = item.dep, item.dep.target.module
            if not isinstance(module, nn.Parameter) and type(module).__module__ == ops.__name__:
                continue  # torch-pruning's own bookkeeping of concat/split sizes: traced sizes are used instead
            roots = getattr(item, "root_idxs", None) or item.idxs
            chosen = sorted({i for i, r in zip(item.idxs, roots) if r in keep})
            if chosen:
                key = (dep.target, self.dg.is_out_channel_pruning_fn(dep.handler))
                gone = self.removed.get(key, [])
                items.append((dep, key, chosen, [i - bisect.bisect_left(gone, i) for i in chosen]))
        shifted = Group()
        shifted._DG = self.dg
        for dep, _, _, now in items:
            shifted.add_dep(dep, now)
        if not items or not self.dg.check_pruning_group(shifted):
            return False
        shifted.prune()
        for _, key, chosen, _ in items:
            gone = self.removed.setdefault(key, [])
            for i in chosen:
                bisect.insort(gone, i)
        return True


def _forward(model: nn.Module, x):
    return model(x)


def build(net: nn.Module, example, progress: Progress | None = None, **kwargs) -> Graph:
    """The dependency graph of ``net`` traced on ``example`` (``kwargs`` go to torch-pruning's
    ``build_dependency``: ``unwrapped_parameters``, ``customized_pruners``, ``ignored_params``); its
    ``cuts`` maps each traced split/slice to a :class:`ChannelCut`.

    The forward function is given explicitly: without one, torch-pruning runs ``model(*inputs)`` in a
    bare ``try/except`` and retries on any exception, which swallows a Ctrl-C that lands during the
    trace (the run then carried on and wrote its bundle).
    """
    dg = Graph()
    dg.progress = progress
    recorder = dg.recorded = RecordCuts(net)

    def forward(model, x):
        with recorder:
            return _forward(model, x)

    kwargs.setdefault("verbose", False)
    dg.build_dependency(net, example_inputs=example, forward_fn=forward, **kwargs)
    dg.cuts = recorder.cuts
    dg.map_splits()  # the chunk sizes right first: concatenations not traced are sized from them
    dg.set_concat_sizes(keep_inferred=False)
    index_mapping.update_index_mapping(dg)
    dg.map_splits()
    if progress is not None:
        progress.step = "collecting the dependency groups"
    return dg


def owner_of(dg: Graph, node) -> nn.Module | None:
    """The module a node of ``dg`` belongs to: the layer itself, or the module whose forward ran the operation."""
    if isinstance(node.module, nn.Module) and type(node.module).__module__ != ops.__name__:
        return node.module
    return dg.recorded.owners.get(node.grad_fn) if dg.recorded is not None else None


def cut_of(dg: Graph, node) -> ChannelCut | None:
    """The :class:`ChannelCut` of a split or slice node of ``dg`` (None for other nodes or unrecorded ones)."""
    if node.type not in (ops.OPTYPE.SPLIT, ops.OPTYPE.SLICE, ops.OPTYPE.UNBIND):
        return None
    return dg.cuts.get(node.grad_fn)


def channel_dim(node) -> bool:
    """Whether a split/slice node cuts the channel dimension as torch-pruning maps it (1 of a 4-d or 2-d
    tensor, 2 of a 3-d token tensor)."""
    fn = node.grad_fn
    dim, sizes = getattr(fn, "_saved_dim", None), getattr(fn, "_saved_self_sym_sizes", None)
    if dim is None or sizes is None:
        return False
    rank = len(sizes)
    dim = dim % rank if -rank <= dim < rank else dim
    return dim == (2 if rank == 3 else 1)

