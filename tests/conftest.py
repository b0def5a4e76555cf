"""Shared session fixtures for the compress side: one trained zoo checkpoint and one bundle.

Both are built once per session in a temporary folder and must be treated as read-only.
"""
import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run several times faster on one thread than on two busy cores' worth."""
    try:
        import torch
    except ImportError:  # the torch-free half's tests
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _ui_as_the_library_leaves_it():
    """A CLI run installs its terminal (a handler on the `edgerobust` logger, progress bars, -q, flag
    names) for the process: each test starts from the library's silence."""
    from edgerobust import ui

    yield
    ui.uninstall()


@pytest.fixture
def quick_measure(monkeypatch):
    """Audits in this test measure latency with the fewest runs (onnx_models.QUICK_MEASURE)."""
    from onnx_models import quick_profiles

    quick_profiles(monkeypatch)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """onnx_models.make_bundle's default torch-free bundle (120 eval rows, FGSM sets), built once.
    Read-only: a module copies it (shutil.copytree) before it writes into it or audits it without --out."""
    from onnx_models import make_bundle

    return make_bundle(tmp_path_factory.mktemp("tiny-bundle") / "tiny")


@pytest.fixture(scope="session")
def zoo_checkpoint(tmp_path_factory):
    """The digits-cnn zoo model trained for 2 epochs: a ZooResult (``.path``, ``.eval_acc``)."""
    from edgerobust.workstation.train.zoo import train_zoo

    return train_zoo("digits-cnn", tmp_path_factory.mktemp("zoo") / "digits-cnn.pt", epochs=2)


@pytest.fixture(scope="session")
def compressed(zoo_checkpoint, tmp_path_factory):
    """zoo_checkpoint compressed at sparsity 0.5, int8, one fine-tuning epoch: a CompressResult."""
    from edgerobust.workstation.compress import compress
    from edgerobust.workstation.configs import CompressConfig, PrepareConfig, TrainConfig

    cfg = CompressConfig(PrepareConfig(zoo_checkpoint.path, eval_samples=200), int8=True,
                         finetune=TrainConfig(epochs=1), max_prune_drop=None,
                         out=tmp_path_factory.mktemp("bundles") / "digits")
    return compress(cfg)


@pytest.fixture(scope="session")
def gz_ckpt(zoo_checkpoint):
    """The session's zoo checkpoint as a path, for the gauntlet, interrupt and fuzz tests (read-only)."""
    return zoo_checkpoint.path


@pytest.fixture(scope="session")
def gz_bundle(gz_ckpt, tmp_path_factory):
    """gz_ckpt compressed (no fine-tuning, int8, 64 eval samples, one FGSM set). Copy before changing."""
    from edgerobust.workstation.attacks import make_specs
    from edgerobust.workstation.compress import compress
    from edgerobust.workstation.configs import CompressConfig, PrepareConfig, TrainConfig

    out = tmp_path_factory.mktemp("gauntlet-bundle") / "bundle"
    compress(CompressConfig(PrepareConfig(gz_ckpt, eval_samples=64), finetune=TrainConfig(epochs=0),
                            max_prune_drop=None, int8=True, attacks=tuple(make_specs("fgsm", "8/255")), out=out))
    return out


@pytest.fixture(scope="session")
def gz_state_dict(gz_ckpt, tmp_path_factory):
    """The checkpoint's weights as a bare state_dict (needs --arch digits-cnn)."""
    import torch

    path = tmp_path_factory.mktemp("state-dict") / "digits-cnn-state.pt"
    torch.save(torch.load(gz_ckpt, weights_only=True)["state_dict"], path)
    return path


def _fuzz_profiles():
    """Hypothesis profiles for tests/fuzz (tests/fuzzkit.py): ``ci`` is pyproject's default (a few
    hundred examples per parser, the same ones each run), ``long`` 10,000 per parser, random."""
    from hypothesis import HealthCheck, settings

    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
             HealthCheck.function_scoped_fixture]
    settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True, database=None,
                              suppress_health_check=quiet)
    settings.register_profile("long", max_examples=10_000, deadline=None, database=None, suppress_health_check=quiet,
                              print_blob=True)


_fuzz_profiles()


TINY_CALIBRATION = ["--grid-scale", "0.05", "--passes", "1", "--seconds", "0.01"]  # 3 kernels per kind and precision


@pytest.fixture(scope="session")
def estimate_profile(tmp_path_factory):
    """A CPU profile with batch 1 only (onnx_models.write_profile): the tiny calibration's device."""
    from onnx_models import write_profile

    return str(write_profile(tmp_path_factory.mktemp("p") / "fast.toml", batch_sizes=(1,)))


@pytest.fixture(scope="session")
def tiny_calibration_file(tmp_path_factory, estimate_profile):
    """A tiny calibration of this host through the CLI (`calibrate`): its file, and what the CLI printed."""
    from typer.testing import CliRunner

    from edgerobust.cli import app

    out = tmp_path_factory.mktemp("cal") / "device.json"
    r = CliRunner().invoke(app, ["-q", "calibrate", "-p", estimate_profile, "-o", str(out), *TINY_CALIBRATION])
    assert r.exit_code == 0, r.output
    return out, r.stdout
