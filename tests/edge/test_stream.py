"""Streaming reads of .npz arrays: the audit replays large sets chunk by chunk."""
import numpy as np
import pytest

from edgerobust.edge.files.bundle import AdvSet
from edgerobust.edge.files.npzio import iter_npz_rows, npz_array_info, save_npz
from edgerobust.errors import BundleError


@pytest.mark.parametrize("compressed", [True, False], ids=["savez_compressed", "savez"])
@pytest.mark.parametrize("rows", [1, 7, 64, 1000])
def test_chunks_reassemble_the_array(tmp_path, compressed, rows):
    x = np.random.default_rng(0).random((130, 1, 5, 4), dtype=np.float32)
    p = tmp_path / "a.npz"
    (np.savez_compressed if compressed else np.savez)(p, x=x, y=np.arange(130))
    chunks = list(iter_npz_rows(p, "x", rows))
    assert all(len(c) <= rows for c in chunks) and len(chunks) == -(-130 // rows)
    np.testing.assert_array_equal(np.concatenate(chunks), x)
    assert npz_array_info(p, "x") == ((130, 1, 5, 4), np.dtype(np.float32))


def test_fortran_order_is_read_whole(tmp_path):
    x = np.asfortranarray(np.random.default_rng(1).random((9, 3), dtype=np.float32))
    p = tmp_path / "f.npz"
    np.savez(p, x=x)
    np.testing.assert_array_equal(np.concatenate(list(iter_npz_rows(p, "x", 4))), x)


def test_truncated_and_missing_arrays_are_bundle_errors(tmp_path):
    p = tmp_path / "a.npz"
    np.savez_compressed(p, x=np.zeros((50, 8), np.float32))
    q = tmp_path / "cut.npz"
    q.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(BundleError):
        list(iter_npz_rows(q, "x", 10))
    with pytest.raises(BundleError, match="has no array 'z'"):
        list(iter_npz_rows(p, "z", 10))


def test_adv_set_without_inputs_keeps_labels_meta_and_row_shape(tmp_path):
    rng = np.random.default_rng(2)
    s = AdvSet(x=rng.random((20, 1, 4, 4), dtype=np.float32), y=rng.integers(0, 3, 20), idx=np.arange(20),
               meta={"attack": "fgsm", "eps": 0.1})
    s.save(tmp_path / "s.npz")
    light = AdvSet.load(tmp_path / "s.npz", with_x=False)
    assert light.x.shape == (0, 1, 4, 4)
    np.testing.assert_array_equal(light.y, s.y)
    assert light.meta["attack"] == "fgsm"
    save_npz(tmp_path / "bad.npz", meta={"a": 1}, x=np.zeros((3, 2), np.int32), y=np.arange(3), idx=np.arange(3))
    with pytest.raises(BundleError, match="floating point"):
        AdvSet.load(tmp_path / "bad.npz", with_x=False)
