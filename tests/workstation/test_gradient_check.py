"""Craft-time gradient check: a model that rounds its input is flagged when its sets are crafted,
the flag travels in the set's meta, and the audit's gradient-masking sanity check reads it back."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.edge.scores.sanity import Rows, check_gradient_masking
from edgerobust.edge.scores.scoring import ModelScores, SetResult
from edgerobust.edge.scores.stats import mcnemar_exact, proportion
from edgerobust.workstation.attacks import AttackSpec, craft_set, craft_sets


class Rounding(torch.nn.Module):
    """Rounds its input to 8-bit levels before the net: the input gradient is exactly zero."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 255) / 255)


def _quiet(n, status=None):
    pass


@pytest.fixture(scope="module")
def tiny():
    """A seeded linear net on random 8x8 images, and labels it gets all right (its own answers)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    x = np.random.default_rng(0).random((48, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)
    return net, x, y


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("edgerobust")]


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_a_rounding_model_is_flagged_at_craft_time(attack, tiny, caplog):
    net, x, y = tiny
    caplog.set_level(logging.WARNING, logger="edgerobust")
    s = craft_set(Rounding(net), x, y, AttackSpec(attack, 0.1, steps=3), batch_size=16, progress=_quiet)
    check = s.meta["gradient_check"]
    assert check["masked"] is True and check["zero_gradient_share"] == 1.0 and check["probed"] == 16
    assert check["changed_share"] < 0.25  # PGD's random start alone may change a few; FGSM moves nothing
    if attack == "fgsm":
        assert check["changed_share"] == 0.0 and np.array_equal(s.x, x)
    (msg,) = _warnings(caplog)
    assert msg.startswith(f"{attack} eps=0.1: the input gradient of the loss is exactly zero for 100% of 16 probed")
    assert "gradients are masked" in msg and "`query_attack` square" in msg


def test_an_ordinary_model_is_not_flagged(tiny, caplog):
    net, x, y = tiny
    caplog.set_level(logging.WARNING, logger="edgerobust")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = craft_set(net, x, y, AttackSpec("fgsm", 0.1), progress=_quiet)
    check = s.meta["gradient_check"]
    assert check == {"zero_gradient_share": 0.0, "changed_share": check["changed_share"], "masked": False,
                     "probed": 48}
    assert check["changed_share"] > 0.5 and _warnings(caplog) == []
    assert all(p.grad is None for p in net.parameters())  # the probe takes the input's gradient only
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_no_check_for_query_attacks_or_eps_zero(tiny, caplog):
    net, x, y = tiny
    caplog.set_level(logging.WARNING, logger="edgerobust")
    for spec in (AttackSpec("square", 0.1, steps=20), AttackSpec("pgd", 0.0, "0")):
        assert "gradient_check" not in craft_set(Rounding(net), x[:8], y[:8], spec, progress=_quiet).meta
    assert _warnings(caplog) == []


def test_the_check_is_saved_in_the_sets_npz(tiny, tmp_path):
    net, x, y = tiny
    (path,) = craft_sets(Rounding(net), EvalSet(x=x, y=y), [AttackSpec("fgsm", 0.1)], tmp_path / "adv",
                         base_sha256="", eval_sha256="")
    check = AdvSet.load(path, with_x=False).meta["gradient_check"]
    assert check == {"zero_gradient_share": 1.0, "changed_share": 0.0, "masked": True, "probed": 48}


def _result(name, attack, check=None, n=50):
    ok = np.ones(n, bool)
    meta = {"attack": attack, "eps": 0.1, "eps_text": "0.1", "norm": "Linf", "params": {}}
    if check is not None:
        meta["gradient_check"] = check
    acc = ModelScores(accuracy=proportion(n, n))
    return SetResult(name=name, kind="adversarial", path=name, n=n, attack=meta, base=acc, deployed=acc,
                     delta_accuracy=None, flip_rate=proportion(0, n), transfer_success=None,
                     mcnemar=mcnemar_exact(ok, ok))


def test_the_audit_sanity_check_reads_the_craft_time_figures():
    masked = {"zero_gradient_share": 0.96, "changed_share": 0.004, "masked": True, "probed": 256}
    c = check_gradient_masking([_result("pgd_0.1", "pgd", masked)], (), Rows(None))
    assert c.passed is False and "at compress time" in c.detail and "GRADIENT MASKING" in c.detail
    assert "pgd_0.1: zero input gradient for 96% of 256 probed samples, 0.4% of the correct predictions" in c.detail
    fine = {"zero_gradient_share": 0.0, "changed_share": 0.4, "masked": False, "probed": 256}
    # an unmasked record, or a set crafted before the check existed: as before (no query attack: n/a)
    for s in (_result("pgd_0.1", "pgd", fine), _result("pgd_0.1", "pgd")):
        c = check_gradient_masking([s], (), Rows(None))
        assert c.passed is None and "no black-box attack" in c.detail
