"""The memory guard stops a step that eats memory with a ResourceError (what, why, what to try) instead
of the kernel's OOM killer. The blow-ups are built on purpose and kept small: the limit is set just
above what the process already holds, never gigabytes."""
import pytest
import torch
import torch.nn as nn

from edgerobust.workstation.resources import memguard
from edgerobust.workstation.resources.memguard import ResourceError, guard, parse_size, resolve_limit, rss_bytes
from edgerobust.workstation.prune.structural import prune
from edgerobust.workstation.configs import PruneConfig

pytestmark = pytest.mark.skipif(rss_bytes() is None, reason="needs /proc (Linux)")

MB = 2**20


class BlowsUpWhenTraced(nn.Module):
    """A conv net whose forward, when traced for pruning (grad enabled), hoards memory without end."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)
        self.hoard = []

    def forward(self, x):
        if torch.is_grad_enabled():
            while True:  # torch-pruning's graph on Swin grows like this, until the OOM killer
                self.hoard.append(torch.ones(4 * MB // 4))
        return self.fc(self.conv(x).mean((2, 3)))


class RecursesWhenTraced(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x, depth=0):
        if torch.is_grad_enabled():
            return self.forward(x, depth + 1)
        return self.fc(x.flatten(1)[:, :4])


def test_guard_stops_a_growing_step_and_says_what_to_try():
    hoard = []
    with pytest.raises(ResourceError) as err:
        with guard("building the dependency graph", arch="toy", max_memory=rss_bytes() + 64 * MB):
            while True:
                hoard.append(bytearray(MB))
    hoard.clear()
    text = str(err.value)
    assert "Stopped building the dependency graph for toy" in text and "the limit is" in text
    assert "`image_size`" in text and "`global_pruning`" in text and "`ignore_layers`" in text


def test_prune_of_a_model_built_to_blow_up_is_a_resource_error(monkeypatch):
    torch.set_num_threads(1)
    net = BlowsUpWhenTraced()
    monkeypatch.setenv(memguard.ENV, str(rss_bytes() + 96 * MB))
    with pytest.raises(ResourceError, match="Stopped pruning for BlowsUpWhenTraced"):
        prune(net, torch.rand(1, 3, 8, 8), 4, PruneConfig(sparsity=0.5), show_progress=False, warn=False)
    net.hoard.clear()


def test_runaway_recursion_is_a_resource_error():
    with pytest.raises(ResourceError, match="recursion went deeper"):
        prune(RecursesWhenTraced(), torch.rand(1, 4), 2, PruneConfig(sparsity=0.5), show_progress=False, warn=False)


def test_a_step_within_the_limit_runs_untouched():
    with guard("a small step", max_memory="64G"):
        total = sum(range(100_000))
    assert total == 4999950000


@pytest.mark.parametrize("text, value", [("8G", 8 * 2**30), ("512M", 512 * MB), ("1.5g", int(1.5 * 2**30)),
                                         ("2GiB", 2 * 2**30), ("1048576", MB)])
def test_sizes_are_read_as_people_write_them(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["lots", "-1G", "0"])
def test_bad_sizes_name_the_value(text):
    with pytest.raises(ResourceError, match="Cannot read the memory limit"):
        parse_size(text)


def test_default_limit_comes_from_the_host(monkeypatch):
    monkeypatch.delenv(memguard.ENV, raising=False)
    limit = resolve_limit()
    assert limit is not None and rss_bytes() < limit <= memguard.available_bytes() + rss_bytes()
    monkeypatch.setenv(memguard.ENV, "3G")
    assert resolve_limit() == 3 * 2**30
