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


@pytest.fixture(scope="session")
def zoo_checkpoint(tmp_path_factory):
    """The digits-cnn zoo model trained for 2 epochs: a ZooResult (``.path``, ``.eval_acc``)."""
    from edgerobust.zoo import train_zoo

    return train_zoo("digits-cnn", tmp_path_factory.mktemp("zoo") / "digits-cnn.pt", epochs=2)


@pytest.fixture(scope="session")
def compressed(zoo_checkpoint, tmp_path_factory):
    """zoo_checkpoint compressed at sparsity 0.5, int8, one fine-tuning epoch: a CompressResult."""
    from edgerobust.compress import CompressConfig, compress
    from edgerobust.finetune import TrainConfig

    cfg = CompressConfig(model=zoo_checkpoint.path, int8=True, finetune=TrainConfig(epochs=1), max_prune_drop=None,
                         eval_samples=200, out=tmp_path_factory.mktemp("bundles") / "digits")
    return compress(cfg)
