"""The torch-free registries (edgerobust.registries) are the one source of the names a user types:
the library's tables use the same names, and the CLI's choices and help come from them."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgerobust import registries
from edgerobust.defaults import ARCH_HELP
from edgerobust.errors import UsageError


def test_library_tables_use_the_registry_names():
    from edgerobust.workstation import finetune
    from edgerobust.workstation import prune
    from edgerobust.workstation import quantize

    assert set(prune.CRITERIA) == set(registries.CRITERIA)
    assert set(prune.RATIO_MODES) == set(registries.RATIOS)
    assert set(finetune.MODES) == set(registries.FINETUNE_MODES)
    assert finetune.MODE_ALIASES == registries.FINETUNE_MODES.aliases
    assert set(finetune.OPTIMIZERS) == set(registries.OPTIMIZERS)
    assert set(quantize.MODES) == set(registries.INT8_MODES)
    assert set(quantize.CALIBRATION) == set(registries.CALIBRATIONS)
    assert set(quantize.TARGETS) == set(registries.INT8_TARGETS)
    assert set(quantize.KEEP_FP32) == set(registries.KEEP_FP32)
    assert set(quantize.STEMS) == set(registries.INT8_STEMS)


def test_arch_help_names_every_zoo_model():
    from edgerobust.workstation.nets import ZOO

    assert all(name in ARCH_HELP for name in ZOO)


@pytest.mark.parametrize("name", list(registries.ALL), ids=list(registries.ALL))
def test_registry_resolves_and_refuses_naming_the_flag(name):
    reg = registries.ALL[name]
    for n in reg:
        assert reg.resolve(n) == n
    for alias, target in reg.aliases.items():
        assert reg.resolve(alias) == target
    with pytest.raises(UsageError) as e:
        reg.resolve("no-such-choice")
    assert reg.flag in e.value.what and all(n in e.value.fix for n in reg)


@pytest.mark.parametrize("flag,reg", [("--criterion", registries.CRITERIA), ("--ratios", registries.RATIOS),
                                      ("--calibration", registries.CALIBRATIONS),
                                      ("--int8-keep-fp32", registries.KEEP_FP32),
                                      ("--int8-stem", registries.INT8_STEMS)],
                         ids=["criterion", "ratios", "calibration", "keep-fp32", "int8-stem"])
def test_compress_help_lists_each_registry_entry(flag, reg):
    from edgerobust.cli import app

    r = CliRunner().invoke(app, ["compress", "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0
    assert flag in r.output
    # the help column wraps at whatever width the console had: read it as one line of words
    text = " ".join(r.output.replace("│", " ").split())
    for c in reg.values():
        assert c.summary[:30] in text, (c.name, flag)


def test_compress_refuses_a_choice_outside_the_registry(tmp_path):
    from edgerobust.cli import app

    r = CliRunner().invoke(app, ["compress", str(tmp_path / "m.pt"), "--calibration", "bogus"])
    assert r.exit_code == 2 and "bogus" in r.output
