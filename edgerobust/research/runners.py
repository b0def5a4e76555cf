"""Where a study's points run: in this process (``local``, the default) or as Ray tasks (``ray``).

A runner has one method, ``map(fn, items, done)``: call ``fn(item)`` for every item, in any
order, and ``done(index, result)`` as each finishes. A point writes its own result under the
output folder, so whatever finished before a failure or a crash is kept for the next run.

Ray is an optional extra (``pip install 'edgerobust[ray]'``). ``RayRunner`` starts a local Ray
instance with this machine's cores, or joins the cluster at ``address`` (``RAY_ADDRESS``); on a
cluster, the output folder must be on storage every node sees (the points read the base files
from it and write their results into it). When torch runs on CUDA (``device`` cuda, or auto
on a host with a GPU), every Ray task asks for one whole GPU (:func:`gpus_per_task`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from edgerobust.errors import DependencyError, UsageError


class Runner(Protocol):
    name: str

    def map(self, fn: Callable[[Any], Any], items: list, done: Callable[[int, Any], None]) -> None: ...


class LocalRunner:
    """Every point in turn, in this process."""

    name = "local"

    def map(self, fn, items, done) -> None:
        for i, item in enumerate(items):
            done(i, fn(item))


@dataclass
class RayRunner:
    """Every point as a Ray task of ``cpus`` CPUs (and ``gpus`` GPUs), results as they finish.

    A task runs torch with ``cpus`` threads; by default as many as torch uses in this process, so
    a point computes exactly what it computes in-process (float sums depend on the thread count).
    ``gpus``: what each task asks Ray for; :func:`make_runner` sets it from the device
    (:func:`gpus_per_task`: 1 for CUDA, 0 for the CPU). A sweep on CUDA refuses a runner with 0.
    """

    address: str | None = None
    cpus: int | None = None
    gpus: float = 0
    name: str = "ray"

    def __post_init__(self) -> None:
        self.ray = require_ray()
        if self.cpus is None:
            import torch

            self.cpus = torch.get_num_threads()

    def start(self) -> None:
        import logging

        ray = self.ray
        if ray.is_initialized():
            return
        quiet = dict(ignore_reinit_error=True, log_to_driver=False, logging_level=logging.ERROR)
        if self.address:
            ray.init(address=self.address, **quiet)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **quiet)

    def map(self, fn, items, done) -> None:
        if not items:
            return
        self.start()
        ray = self.ray
        remote = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)(in_worker)
        pending = {remote.remote(fn, item, self.cpus): i for i, item in enumerate(items)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    for other in pending:
                        ray.cancel(other)
                    cause = getattr(exc, "cause", None)
                    raise (cause if isinstance(cause, Exception) else exc) from None
                done(i, result)


def in_worker(fn, item, threads: int):
    """``fn(item)`` in a worker process: ``threads`` torch threads, no progress bars."""
    import torch

    from edgerobust import events

    torch.set_num_threads(threads)
    events.set_progress(None)
    return fn(item)


def gpus_per_task(device) -> float:
    """GPUs one Ray task asks for when the points' torch runs on ``device`` (a torch.device or
    ``device`` text): one whole GPU for CUDA, none for the CPU.

    A whole GPU rather than a fraction: Ray does not divide GPU memory, and a point (fine-tuning,
    PGD-AT, white-box crafting) on a large model can fill a card; with one GPU per task the points
    of a node run side by side on its GPUs and never compete for one. Ray makes the GPU it assigns
    visible to the task as ``cuda`` (see :func:`point_device`).
    """
    from edgerobust.workstation.resources.torch_device import resolve_device

    return 1.0 if resolve_device(device).type == "cuda" else 0.0


def point_device(runner, device) -> str:
    """The ``device`` text a point runs with on ``runner`` when the sweep resolved ``device``.

    In this process: the device itself (``cuda:1`` stays ``cuda:1``). In a Ray task that asked for
    GPUs: ``cuda``, the GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES, so the index asked for here
    names no GPU there). A CUDA sweep on a Ray runner that asks for no GPU is refused.
    """
    if device.type != "cuda" or getattr(runner, "name", "") != "ray":
        return str(device)
    if not getattr(runner, "gpus", 0):
        raise UsageError(f"The sweep runs torch on {device}, but its Ray runner asks Ray for no GPU per task.",
                         fix="Build it with make_runner('ray', device=...) or RayRunner(gpus=1), or use "
                             "`device` cpu.")
    return "cuda"


RUNNERS: dict[str, str] = {
    "local": "every point in turn in this process (the default)",
    "ray": "every point as a Ray task on a local Ray instance or a Ray cluster (its address, or RAY_ADDRESS), "
           "one GPU per task when torch runs on CUDA; needs pip install 'edgerobust[ray]'",
}


def require_ray():
    """The ray module, or one DependencyError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise DependencyError("Running points on Ray needs the ray package, which is not installed.",
                              why="Ray is an optional extra of edgerobust.",
                              fix="pip install 'edgerobust[ray]' (or run the points in this process, with the local "
                                  "runner).") from None
    return ray


def make_runner(name: str = "local", address: str | None = None, device="auto") -> LocalRunner | RayRunner:
    """The runner called ``name`` (a key of RUNNERS) for points whose torch runs on ``device``
    (a Ray task then asks for :func:`gpus_per_task` GPUs)."""
    if name not in RUNNERS:
        raise UsageError(f"Unknown runner {name!r}.", fix=f"Use one of: {', '.join(RUNNERS)}.")
    if name == "ray":
        gpus = gpus_per_task(device)  # a bad device is refused before Ray is looked for
        return RayRunner(address=address or os.environ.get("RAY_ADDRESS") or None, gpus=gpus)
    if address:
        raise UsageError("A Ray cluster's address needs the ray runner.",
                         fix="Use make_runner('ray', address), or leave the address out.")
    return LocalRunner()
