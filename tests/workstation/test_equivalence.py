"""The Python API builds what the CLI builds: the same target plan, the same manifest (minus
times and paths), the same model files, for a CPU profile and a TensorRT one."""
import json

import pytest
from typer.testing import CliRunner

from edgerobust.cli import app

VOLATILE = {"created", "seconds", "out"}  # when it ran, how long it took, where it went


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


@pytest.mark.parametrize("profile", ["laptop-cpu", "jetson-orin-nano"])
def test_api_and_cli_build_the_same_bundle(profile, zoo_checkpoint, tmp_path):
    from edgerobust.workstation.compress import compress
    from edgerobust.workstation.configs import CompressConfig, PrepareConfig, TrainConfig

    cli_out, api_out = tmp_path / "cli" / "b", tmp_path / "api" / "b"
    r = CliRunner().invoke(app, ["compress", str(zoo_checkpoint.path), "--int8", "--profile", profile,
                                 "--finetune-epochs", "0", "--eval-samples", "48", "--calib-samples", "32",
                                 "--attacks", "none", "--max-prune-drop", "100", "--max-int8-drop", "100",
                                 "--min-int8-agreement", "0", "--out", str(cli_out)])
    assert r.exit_code == 0, r.output  # the gates open: int8 numerics differ by ISA (u8s8 saturation on AVX2)
    res = compress(CompressConfig(PrepareConfig(zoo_checkpoint.path, eval_samples=48, calib_samples=32),
                                  finetune=TrainConfig(epochs=0), int8=True, target=profile, max_prune_drop=100,
                                  max_int8_drop=100, min_int8_agreement=0.0,
                                  corruptions="default", out=api_out))  # the CLI's default; the API's is none
    cli, api = _manifest(cli_out), _manifest(api_out)
    # the profile decided the same things for both, and said why
    assert cli["target"] == api["target"] == res.target
    plan = api["target"]
    assert plan["profile"] == profile
    if profile == "laptop-cpu":
        assert (plan["runtime"], plan["round_to"], plan["stem"], plan["int8_target"]) == \
            ("cpu", 16, "space-to-depth", "cpu")
        assert "laptop-cpu" in plan["reasons"]["round_to"] and "laptop-cpu" in plan["reasons"]["stem"]
    else:
        assert (plan["runtime"], plan["round_to"], plan["stem"], plan["int8_target"]) == \
            ("tensorrt", 8, "plain", "tensorrt")
    assert api["pruning"]["round_to"] == plan["round_to"]
    assert _stable(cli) == _stable(api)
    # the files themselves: same names, same bytes
    files = sorted(p.relative_to(api_out).as_posix() for p in api_out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(cli_out).as_posix() for p in cli_out.rglob("*") if p.is_file())
    for rel in files:
        if rel != "manifest.json":
            assert (cli_out / rel).read_bytes() == (api_out / rel).read_bytes(), rel


def test_a_given_value_wins_over_the_profile_and_is_recorded(zoo_checkpoint, tmp_path):
    from edgerobust.workstation.compress import compress
    from edgerobust.workstation.configs import CompressConfig, PrepareConfig, PruneConfig, QuantConfig, TrainConfig

    res = compress(CompressConfig(PrepareConfig(zoo_checkpoint.path, eval_samples=32, calib_samples=16),
                                  prune=PruneConfig(round_to=4), quant=QuantConfig(stem="plain"),
                                  finetune=TrainConfig(epochs=0), int8=True, target="laptop-cpu",
                                  max_prune_drop=None, out=tmp_path / "b"))
    plan = _manifest(res.bundle)["target"]
    assert (plan["round_to"], plan["stem"]) == (4, "plain")
    assert plan["reasons"]["round_to"] == plan["reasons"]["stem"] == "given"
    assert res.prune.round_to == 4
    layers = [row for row in res.prune.layers if row["after"] != row["before"]]
    assert layers and all(row["after"] % 4 == 0 for row in layers)
