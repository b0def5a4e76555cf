"""The torch-free registries (edgerobust.registries) are the one source of the names a user types:
the library's tables use the same names, and the CLI's choices and help come from them."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgerobust import registries
from edgerobust.defaults import ARCH_HELP
from edgerobust.errors import UsageError


def test_library_tables_use_the_registry_names():
    from edgerobust.workstation.train import finetune
    from edgerobust.workstation.prune import structural as prune
    from edgerobust.workstation.quantize import int8 as quantize

    assert set(prune.CRITERIA) == set(registries.CRITERIA)
    assert all(callable(factory) and isinstance(needs_grad, bool) for factory, needs_grad in prune.CRITERIA.values())
    assert [k for k, (_, grad) in prune.CRITERIA.items() if grad] == ["taylor"]
    assert set(finetune.OPTIMIZERS) == set(registries.OPTIMIZERS)
    assert set(quantize.TARGETS) == set(registries.INT8_TARGETS)
    for gone in ("RATIO_MODES",):
        assert not hasattr(prune, gone)
    for gone in ("MODES", "MODE_ALIASES"):
        assert not hasattr(finetune, gone)
    for gone in ("MODES", "CALIBRATION", "KEEP_FP32", "STEMS", "FORMATS"):
        assert not hasattr(quantize, gone)


# (config class, field, its registry): every field that takes a name a user types
CONFIG_FIELDS = [("PruneConfig", "criterion", registries.CRITERIA), ("PruneConfig", "ratios", registries.RATIOS),
                 ("TrainConfig", "mode", registries.FINETUNE_MODES), ("TrainConfig", "optimizer", registries.OPTIMIZERS),
                 ("QuantConfig", "mode", registries.INT8_MODES),
                 ("QuantConfig", "calibration", registries.CALIBRATIONS),
                 ("QuantConfig", "keep_fp32", registries.KEEP_FP32), ("QuantConfig", "stem", registries.INT8_STEMS),
                 ("QuantConfig", "route", registries.INT8_ROUTES), ("QuantConfig", "int8_target", registries.INT8_TARGETS)]


@pytest.mark.parametrize("cls,field,reg", CONFIG_FIELDS, ids=[f"{c}.{f}" for c, f, _ in CONFIG_FIELDS])
def test_configs_validate_through_the_registries(cls, field, reg):
    from edgerobust.workstation import configs

    config = getattr(configs, cls)
    for name in reg:
        assert getattr(config(**{field: name}), field) == name
    for alias, target in reg.aliases.items():
        assert getattr(config(**{field: alias}), field) == target
    with pytest.raises(UsageError) as e:
        config(**{field: "no-such-choice"})
    assert e.value.what == f"Unknown `{reg.field}` 'no-such-choice'." and all(n in e.value.fix for n in reg)


def test_arch_help_names_every_zoo_model():
    from edgerobust.workstation.model.nets import ZOO

    assert all(name in ARCH_HELP for name in ZOO)


@pytest.mark.parametrize("name", list(registries.ALL), ids=list(registries.ALL))
def test_registry_resolves_and_refuses_naming_the_field(name):
    reg = registries.ALL[name]
    for n in reg:
        assert reg.resolve(n) == n
    for alias, target in reg.aliases.items():
        assert reg.resolve(alias) == target
    with pytest.raises(UsageError) as e:
        reg.resolve("no-such-choice")
    assert f"`{reg.field}`" in e.value.what and all(n in e.value.fix for n in reg)
    assert not hasattr(reg, "flag")


@pytest.mark.parametrize("name", list(registries.ALL), ids=list(registries.ALL))
def test_every_registry_field_has_a_flag(name):
    from edgerobust.cli.flags import FIELD_FLAGS, to_flags

    field = registries.ALL[name].field
    assert FIELD_FLAGS[field].startswith("--")
    assert to_flags(f"Unknown `{field}` 'x'.") == f"Unknown {FIELD_FLAGS[field]} 'x'."


@pytest.mark.parametrize("flag,reg", [("--criterion", registries.CRITERIA), ("--ratios", registries.RATIOS),
                                      ("--calibration", registries.CALIBRATIONS),
                                      ("--int8-keep-fp32", registries.KEEP_FP32),
                                      ("--int8-stem", registries.INT8_STEMS), ("--int8-route", registries.INT8_ROUTES)],
                         ids=["criterion", "ratios", "calibration", "keep-fp32", "int8-stem", "int8-route"])
def test_compress_help_lists_each_registry_entry(flag, reg):
    from edgerobust.cli import app
    from edgerobust.cli.flags import to_flags

    r = CliRunner().invoke(app, ["compress", "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0
    assert flag in r.output
    # the help column wraps at whatever width the console had: read it as one line of words
    text = " ".join(r.output.replace("│", " ").split())
    for c in reg.values():
        assert to_flags(c.summary)[:30] in text, (c.name, flag)  # the CLI shows flags for the fields


def test_compress_refuses_a_choice_outside_the_registry(tmp_path):
    from edgerobust.cli import app

    r = CliRunner().invoke(app, ["compress", str(tmp_path / "m.pt"), "--calibration", "bogus"])
    assert r.exit_code == 2 and "bogus" in r.output and "--calibration" in r.output
