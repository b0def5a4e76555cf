"""Fixtures the estimate's test modules share: one tiny calibration of this host, made through the CLI."""
import pytest
from typer.testing import CliRunner

from edgerobust.cli import app
from onnx_models import write_profile

TINY = ["--grid-scale", "0.05", "--passes", "1", "--seconds", "0.01"]  # 3 kernels per kind and precision, 2 networks


@pytest.fixture(scope="session")
def estimate_profile(tmp_path_factory):
    return str(write_profile(tmp_path_factory.mktemp("p") / "fast.toml", batch_sizes=(1,)))


@pytest.fixture(scope="session")
def tiny_calibration_file(tmp_path_factory, estimate_profile):
    """A tiny calibration of this host through the CLI (`calibrate`): its file, and what the CLI printed."""
    out = tmp_path_factory.mktemp("cal") / "device.json"
    r = CliRunner().invoke(app, ["-q", "calibrate", "-p", estimate_profile, "-o", str(out), *TINY])
    assert r.exit_code == 0, r.output
    return out, r.stdout
