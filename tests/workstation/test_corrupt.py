"""Common corruptions (edgerobust.workstation.corrupt): every registry entry at the sizes the tool takes,
determinism, severity ordering, the texts users type, and the sets written into a folder."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgerobust.edge.files.bundle import EvalSet
from edgerobust.edge.files.corruptset import CorruptionSet
from edgerobust.errors import UsageError
from edgerobust.workstation.corrupt.registry import (CORRUPTIONS, DEFAULT_CORRUPTIONS, LEFT_OUT, parse_corruptions,
                                                     parse_severities)
from edgerobust.workstation.corrupt.sets import corrupt, make_sets

SHAPES = {"digits-16x16x1": (6, 1, 16, 16), "cifar-32x32x3": (4, 3, 32, 32)}


def smooth(shape, seed=0) -> np.ndarray:
    """Images with structure (gradients and a bright square), not white noise: blurs and JPEG act on them."""
    n, c, h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    x = np.empty(shape, dtype=np.float32)
    for i in range(n):
        for k in range(c):
            x[i, k] = 0.2 + 0.5 * (yy * rng.random() + xx * (1 - rng.random())) / 2
            x[i, k, h // 4:h // 2, w // 4:3 * w // 4] = 0.6 + 0.3 * rng.random()
    return x


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_corruption_keeps_shape_dtype_range_and_is_deterministic(name, shape):
    x = smooth(shape)
    entry = CORRUPTIONS[name]
    if entry.reason_out(shape):
        assert name == "saturate" and shape[1] == 1  # the one that needs colour
        return
    for sev in (1, 5):
        a, b = corrupt(x, name, sev, seed=3), corrupt(x, name, sev, seed=3)
        assert a.shape == x.shape and a.dtype == np.float32
        assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
        np.testing.assert_array_equal(a, b)  # same seed, same bytes
    assert not np.shares_memory(a, x)


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "contrast", "gaussian_blur", "pixelate",
                                  "camera_jpeg", "camera_resize", "defocus_blur"])
def test_distortion_grows_with_severity(name):
    x = smooth((4, 3, 50, 50), seed=1)  # 50 px: no block of pixelate lines up with the square
    dist = [float(np.abs(corrupt(x, name, s, seed=0) - x).mean()) for s in (1, 3, 5)]
    assert dist[0] < dist[1] < dist[2], dist


def test_noise_parameters_are_imagenet_c():
    x = np.full((2, 1, 64, 64), 0.5, dtype=np.float32)
    std = corrupt(x, "gaussian_noise", 1, seed=0).std()
    assert std == pytest.approx(0.08, rel=0.05)  # ImageNet-C's severity-1 std, nothing clipped at 0.5 +- 0.24
    hit = (corrupt(x, "impulse_noise", 5, seed=0) != 0.5).mean()
    assert hit == pytest.approx(0.27, abs=0.02)


def test_texts_users_type():
    assert parse_corruptions("none") == () and parse_corruptions("") == ()
    assert parse_corruptions("default") == DEFAULT_CORRUPTIONS
    assert set(parse_corruptions("all")) == set(CORRUPTIONS)
    assert parse_corruptions("contrast, noise") == ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
                                                    "contrast")
    assert parse_severities("5,1,3") == (1, 3, 5) and parse_severities([2]) == (2,)
    with pytest.raises(UsageError, match="Did you mean 'impulse_noise'"):
        parse_corruptions("gaussian_noise,impulse_nosie")
    with pytest.raises(UsageError, match="left out") as e:
        parse_corruptions("frost")
    assert "image assets" in str(e.value) and set(LEFT_OUT) == {"frost", "spatter"}
    for bad in ("0", "6", "1,x", ""):
        with pytest.raises(UsageError, match="1 to 5"):
            parse_severities(bad)


def test_make_sets_writes_checked_sets_and_says_what_it_left_out(tmp_path):
    x = smooth((12, 1, 16, 16))
    ev = EvalSet(x=x, y=np.arange(12) % 3)
    run = make_sets(ev, "gaussian_noise,defocus_blur,saturate", (1, 5), 7, tmp_path / "c", "abc")
    assert run.files == ["corruptions/gaussian_noise_s1.npz", "corruptions/gaussian_noise_s5.npz",
                         "corruptions/defocus_blur_s5.npz"]
    left = {(s["corruption"], s["severity"]) for s in run.skipped}
    assert left == {("defocus_blur", 1), ("saturate", None)}  # radius 3 px at 224 is 0.2 px at 16: no change
    cs = CorruptionSet.load(tmp_path / "c" / "gaussian_noise_s5.npz")
    assert cs.meta["severity"] == 5 and cs.meta["family"] == "noise" and cs.meta["seed"] == 7
    assert cs.meta["eval_sha256"] == "abc" and cs.meta["params"] == 0.38
    np.testing.assert_array_equal(cs.idx, np.arange(12))
    np.testing.assert_array_equal(cs.x, corrupt(x, "gaussian_noise", 5, 7))  # independent of the other sets


def test_corrupt_bundle_swaps_sets_and_manifest_together(tiny_bundle, tmp_path, monkeypatch):
    from edgerobust.edge.files.bundle import Bundle
    from edgerobust.workstation.corrupt import sets

    root = shutil.copytree(tiny_bundle, tmp_path / "b")
    b, run = sets.corrupt_bundle(sets.CorruptConfig(root, corruptions="gaussian_noise", corruption_severities=(1,)))
    b.verify()
    assert run.files == ["corruptions/gaussian_noise_s1.npz"] and b.manifest["corruptions"] == run.files
    old = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}

    def power_cut(path, obj):  # the new sets are written; the manifest write fails
        assert (path.parent / "corruptions" / "contrast_s1.npz").is_file()
        raise RuntimeError("power cut")

    monkeypatch.setattr(sets, "write_json", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        sets.corrupt_bundle(sets.CorruptConfig(root, corruptions="contrast", corruption_severities=(1,),
                                               overwrite=True))
    kept = Bundle.open(root)
    kept.verify()  # the old bundle, consistent
    assert kept.manifest["corruptions"] == ["corruptions/gaussian_noise_s1.npz"]
    assert sorted(p.name for p in (root / "corruptions").iterdir()) == ["gaussian_noise_s1.npz"]
    assert {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()} == old
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temporary folder left beside it

    monkeypatch.undo()
    new, _ = sets.corrupt_bundle(sets.CorruptConfig(root, corruptions="contrast", corruption_severities=(1,),
                                                    overwrite=True))
    new.verify()  # the new bundle, consistent
    assert new.manifest["corruptions"] == ["corruptions/contrast_s1.npz"]
    assert sorted(p.name for p in (root / "corruptions").iterdir()) == ["contrast_s1.npz"]
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_corrupt_bundle_defaults_to_the_seed_the_bundle_was_compressed_with(tiny_bundle, tmp_path):
    """No seed given: the manifest's config.prepare.seed, as compress --corruptions seeds its sets (else 0)."""
    from edgerobust.edge.files.bundle import finalize_manifest, read_manifest
    from edgerobust.workstation.corrupt import sets

    assert sets.bundle_seed({}) == 0 and sets.bundle_seed({"config": {"prepare": {"seed": 7}}}) == 7
    root = shutil.copytree(tiny_bundle, tmp_path / "b")
    m = read_manifest(root / "manifest.json")
    finalize_manifest(root, {**m, "config": {**m.get("config", {}), "prepare": {"seed": 7}}})
    b, run = sets.corrupt_bundle(sets.CorruptConfig(root, corruptions="gaussian_noise", corruption_severities=(1,)))
    assert run.seed == 7 and b.manifest["corruption_sets"]["seed"] == 7
    cs = CorruptionSet.load(root / "corruptions" / "gaussian_noise_s1.npz")
    np.testing.assert_array_equal(cs.x, corrupt(EvalSet.load(root / "eval.npz").x, "gaussian_noise", 1, 7))
    _, run = sets.corrupt_bundle(sets.CorruptConfig(root, corruptions="gaussian_noise", corruption_severities=(1,),
                                                    seed=0, overwrite=True))
    assert run.seed == 0  # a seed given wins
