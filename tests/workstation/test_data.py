"""Data sources by name and the seeded split: shapes, ranges, labels, and one clear DataError per bad input."""
import pickle

import numpy as np
import pytest
from PIL import Image

from edgerobust.workstation.data.sources import SOURCES, load_data, split
from edgerobust.workstation.data.dataset import Dataset
from edgerobust.errors import DataError


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_registry_names():
    assert set(SOURCES) == {"digits", "npz", "folder", "cifar10"}


def test_digits_shape_range_labels(digits):
    assert digits.x.shape == (1797, 1, 16, 16)
    assert digits.x.dtype == np.float32 and digits.y.dtype == np.int64
    assert digits.x.min() == 0.0 and digits.x.max() <= 1.0 and digits.x.max() > 0.9
    assert sorted(np.unique(digits.y)) == list(range(10))
    assert digits.class_names == [str(i) for i in range(10)]
    assert len(digits.mean) == len(digits.std) == 1 and 0 < digits.mean[0] < 1


def test_digits_native_size():
    assert load_data("digits", image_size=8).x.shape == (1797, 1, 8, 8)


def test_unknown_source():
    with pytest.raises(DataError, match="Unknown data source 'imagenet'") as e:
        load_data("imagenet")
    assert "digits" in e.value.fix


# --------------------------------------------------------------------------------------- npz


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_uint8_nhwc(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    ds = load_data(_npz(tmp_path / "d.npz", x=x, y=y, class_names=np.array(["a", "b", "c"])))
    assert ds.x.shape == (6, 3, 8, 8) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x, x.transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
    assert ds.class_names == ["a", "b", "c"]
    assert ds.y.tolist() == y.tolist()


def test_npz_float_nchw_passes_through(tmp_path):
    x = np.random.default_rng(1).random((5, 3, 4, 4), dtype=np.float32)
    ds = load_data(_npz(tmp_path / "d.npz", x=x, y=np.array([1, 0, 1, 0, 1])))
    np.testing.assert_array_equal(ds.x, x)
    assert ds.class_names == ["0", "1"]


def test_npz_gray_nhw_gets_channel_axis(tmp_path):
    x = np.random.default_rng(2).random((4, 6, 6)).astype(np.float64)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]))
    ds = load_data(str(tmp_path / "d.npz"))  # a bare .npz path means npz:PATH
    assert ds.x.shape == (4, 1, 6, 6)
    np.testing.assert_allclose(ds.x[:, 0], x, atol=1e-6)


def test_npz_resized(tmp_path):
    x = np.random.default_rng(3).random((3, 1, 8, 8), dtype=np.float32)
    ds = load_data(_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1, 1])), image_size=4)
    assert ds.x.shape == (3, 1, 4, 4) and 0 <= ds.x.min() and ds.x.max() <= 1


GOOD_X = np.full((4, 1, 4, 4), 0.5, dtype=np.float32)
GOOD_Y = np.array([0, 1, 0, 1])


def _nan_x():
    x = GOOD_X.copy()
    x[1, 0, 2, 2] = np.nan
    return x


BAD_NPZ = {
    "nan": (dict(x=_nan_x(), y=GOOD_Y), "NaN or infinite"),
    "float-above-1": (dict(x=GOOD_X * 255, y=GOOD_Y), r"float images must be in \[0, 1\]; got 128\.\.128"),
    "float-below-0": (dict(x=GOOD_X - 1, y=GOOD_Y), r"must be in \[0, 1\]"),
    "int-above-255": (dict(x=np.full((4, 1, 2, 2), 300, dtype=np.int32), y=GOOD_Y), r"0\.\.255; got 300\.\.300"),
    "negative-labels": (dict(x=GOOD_X, y=np.array([0, -1, 0, 1])), r"0\.\.K-1; found -1"),
    "fractional-labels": (dict(x=GOOD_X, y=np.array([0.0, 0.5, 1.0, 1.0])), "whole numbers"),
    "string-labels": (dict(x=GOOD_X, y=np.array(["a", "b", "a", "b"])), "labels must be integers"),
    "label-count": (dict(x=GOOD_X, y=np.array([0, 1, 0])), r"one label per image; got \(3,\) for 4 images"),
    "rank-2": (dict(x=np.zeros((4, 16), dtype=np.float32), y=GOOD_Y), r"3 or 4 dimensions.*\(4, 16\)"),
    "rank-5": (dict(x=np.zeros((4, 1, 1, 2, 2), dtype=np.float32), y=GOOD_Y), "3 or 4 dimensions"),
    "object-array": (dict(x=np.array([np.zeros(3), "x", None, 1], dtype=object), y=GOOD_Y), "pickled Python objects"),
    "missing-y": (dict(x=GOOD_X), "lacks the array"),
    "too-few-class-names": (dict(x=GOOD_X, y=np.array([0, 1, 2, 3]), class_names=np.array(["a", "b"])),
                            "labels go up to 3 but only 2 class_names"),
}


@pytest.mark.parametrize("arrays,message", BAD_NPZ.values(), ids=BAD_NPZ.keys())
def test_bad_npz_is_a_data_error(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as e:
        load_data(f"npz:{path}")
    assert str(path) in e.value.what


def test_npz_not_a_zip(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip at all" * 10)
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data(f"npz:{p}")


def test_npz_missing_file_and_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(f"npz:{tmp_path / 'nope.npz'}")
    with pytest.raises(DataError, match="needs a path"):
        load_data("npz")


# ------------------------------------------------------------------------------------ folder


def _png(path, size, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, value).save(path)


def test_folder_two_classes(tmp_path):
    for i in range(3):
        _png(tmp_path / "cat" / f"{i}.png", (6, 5), (255, 0, 0))
    for i in range(2):
        _png(tmp_path / "dog" / f"{i}.png", (6, 5), (0, 0, 255))
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    ds = load_data(f"folder:{tmp_path}")
    assert ds.class_names == ["cat", "dog"]
    assert ds.x.shape == (5, 3, 5, 6)
    assert ds.y.tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_array_equal(ds.x[0, :, 0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(ds.x[4, :, 0, 0], [0.0, 0.0, 1.0])


def test_folder_mixed_sizes_need_image_size(tmp_path):
    _png(tmp_path / "a" / "0.png", (8, 8), (10, 10, 10))
    _png(tmp_path / "b" / "0.png", (12, 9), (20, 20, 20))
    with pytest.raises(DataError, match="mixed sizes") as e:
        load_data(f"folder:{tmp_path}")
    assert "`image_size`" in e.value.fix
    assert load_data(f"folder:{tmp_path}", image_size=4).x.shape == (2, 3, 4, 4)


@pytest.mark.parametrize("layout,message", [
    ("empty", "has no class sub-folders"),
    ("no-images", "holds no images"),
    ("missing", "does not exist"),
    ("broken-image", "Cannot read the image"),
], ids=["empty", "no-images", "missing", "broken-image"])
def test_folder_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "no-images":
        (root / "a").mkdir()
        (root / "a" / "x.txt").write_text("x")
    if layout == "broken-image":
        (root / "a").mkdir()
        (root / "a" / "x.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=message):
        load_data(f"folder:{root}")


# ----------------------------------------------------------------------------------- cifar10


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"fake", b"labels": labels, b"data": data, b"filenames": [b"a"] * n}, f)
    return data, labels


@pytest.fixture
def cifar_root(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    d1 = _cifar_batch(root / "data_batch_1", 6, 1)
    d2 = _cifar_batch(root / "data_batch_2", 4, 2)
    dt = _cifar_batch(root / "test_batch", 5, 3)
    names = [f"n{i}".encode() for i in range(10)]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    return root, (d1, d2, dt)


def test_cifar10_real_layout(cifar_root):
    root, ((x1, y1), (x2, y2), (xt, yt)) = cifar_root
    ds = load_data(f"cifar10:{root.parent}")  # the parent of cifar-10-batches-py works too
    assert ds.x.shape == (10, 3, 32, 32) and ds.test.x.shape == (5, 3, 32, 32)
    np.testing.assert_allclose(ds.x[0], x1[0].reshape(3, 32, 32) / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.x[6], x2[0].reshape(3, 32, 32) / 255.0, atol=1e-7)
    assert ds.y.tolist() == y1 + y2 and ds.test.y.tolist() == yt
    assert ds.class_names == [f"n{i}" for i in range(10)]
    sp = split(ds, seed=0, calib_samples=4)
    assert len(sp.eval) == 5 and sorted(sp.eval.y.tolist()) == sorted(yt)  # its own test batch


class _WritesMarker:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_cifar10_pickle_with_code_is_refused(cifar_root, tmp_path):
    root, _ = cifar_root
    # The payload is live: plain pickle would create the file.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_WritesMarker(control))).close()
    assert control.exists()

    marker = tmp_path / "pwned"
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _WritesMarker(marker), b"labels": [0]}, f)
    with pytest.raises(DataError, match="Cannot read the CIFAR-10 batch") as e:
        load_data(f"cifar10:{root}")
    assert "refusing to load the global" in e.value.why
    assert not marker.exists()


def test_cifar10_missing_test_batch(cifar_root):
    root, _ = cifar_root
    (root / "test_batch").unlink()
    with pytest.raises(DataError, match="lacks 'test_batch'"):
        load_data(f"cifar10:{root}")


# ------------------------------------------------------------------------------------- split


def _indexed(n=200):
    """A dataset whose every image holds its own index, so splits can be compared by id."""
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None, None, None] / n, 4, axis=3).reshape(n, 1, 2, 2)
    return Dataset(x=x, y=np.arange(n) % 3, class_names=["a", "b", "c"], mean=(0.5,), std=(0.3,))


def _ids(ds):
    return (ds.x[:, 0, 0, 0] * 200).round().astype(int).tolist()


def test_split_is_deterministic_per_seed():
    ds = _indexed()
    a, b, c = split(ds, seed=1), split(ds, seed=1), split(ds, seed=2)
    for part in ("train", "val", "calib", "eval"):
        assert _ids(getattr(a, part)) == _ids(getattr(b, part))
    assert _ids(a.eval) != _ids(c.eval)


def test_split_parts_are_disjoint_and_cover_the_data():
    ds = _indexed()
    sp = split(ds, seed=0, calib_samples=50)
    ev, tr, va = set(_ids(sp.eval)), set(_ids(sp.train)), set(_ids(sp.val))
    assert len(ev) == 40 and len(va) == 16 and len(tr) == 144
    assert not (ev & tr) and not (ev & va) and not (tr & va)
    assert ev | tr | va == set(range(200))
    assert set(_ids(sp.calib)) <= tr and len(sp.calib) == 50


def test_split_eval_samples_caps_eval():
    sp = split(_indexed(), seed=0, eval_samples=7)
    assert len(sp.eval) == 7
    with pytest.raises(DataError, match="`eval_samples` must be positive"):
        split(_indexed(), eval_samples=0)


def test_split_too_small():
    with pytest.raises(DataError, match="too few"):
        split(_indexed(2), seed=0)
