"""Adversarial sets are validated before replay: NaN/Inf, out of range, or farther than eps from their
clean rows is one clear BundleError naming the set, also with --no-verify. Torch-free."""
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgerobust.edge.scores.advcheck import check_adv_set, check_adv_sets
from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.cli import app
from edgerobust.errors import BundleError
from onnx_models import make_bundle, write_profile

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture()
def clean():
    rng = np.random.default_rng(0)
    return EvalSet(x=rng.random((300, 1, 4, 4), dtype=np.float32), y=rng.integers(0, 3, 300))


def write_set(path, ev, x=None, eps=0.1, norm="Linf", idx=None):
    idx = np.arange(len(ev.x)) if idx is None else idx
    if x is None:
        rng = np.random.default_rng(1)
        x = np.clip(ev.x[idx] + rng.uniform(-eps, eps, ev.x[idx].shape).astype(np.float32), 0, 1)
    AdvSet(x=x, y=np.zeros(len(idx), dtype=np.int64), idx=np.asarray(idx, dtype=np.int64),
           meta={"attack": "fgsm", "eps": eps, "norm": norm, "name": f"fgsm_{eps}"}).save(path)
    return path


def test_a_true_set_passes_in_every_norm(clean, tmp_path):
    check_adv_set(write_set(tmp_path / "a.npz", clean), clean, 0.0, 1.0)
    # an L2 set exactly on its eps sphere, streamed over several chunks (300 rows > 256)
    d = np.random.default_rng(2).normal(size=clean.x.shape).astype(np.float32)
    d *= 0.05 / np.sqrt((d.reshape(len(d), -1) ** 2).sum(1)).reshape(-1, 1, 1, 1)
    x = (0.5 + d).astype(np.float32)
    ev = EvalSet(x=np.full_like(clean.x, 0.5), y=clean.y)
    check_adv_sets([write_set(tmp_path / "l2.npz", ev, x=x, eps=0.05, norm="L2")], ev, [0, 1])


@pytest.mark.parametrize("bad, words", [
    (np.nan, ["NaN", "row 7"]),
    (np.inf, ["Inf"]),
    (1.5, ["outside the bundle's value range [0, 1]", "max 1.5"]),
])
def test_bad_values_name_the_set_and_the_problem(clean, tmp_path, bad, words):
    path = write_set(tmp_path / "fgsm_0.1.npz", clean)
    adv = AdvSet.load(path)
    adv.x[7, 0, 1, 1] = bad
    adv.save(path)
    with pytest.raises(BundleError) as err:
        check_adv_set(path, clean, 0.0, 1.0)
    text = str(err.value)
    assert "'fgsm_0.1'" in text and all(w in text for w in words), text


def test_a_set_beyond_its_eps_or_from_other_rows_is_refused(clean, tmp_path):
    far = write_set(tmp_path / "far.npz", clean, x=np.clip(clean.x + 0.3, 0, 1), eps=0.1)
    with pytest.raises(BundleError, match="farther from its clean samples than its eps"):
        check_adv_set(far, clean, 0.0, 1.0)
    shuffled = write_set(tmp_path / "shuf.npz", clean, idx=np.arange(len(clean.x))[::-1].copy(), x=clean.x.copy())
    with pytest.raises(BundleError, match="eval row"):
        check_adv_set(shuffled, clean, 0.0, 1.0)
    outside = write_set(tmp_path / "idx.npz", clean, idx=np.array([0, 400]), x=clean.x[:2].copy())
    with pytest.raises(BundleError, match="do not exist: idx 400"):
        check_adv_set(outside, clean, 0.0, 1.0)


def test_audit_no_verify_still_refuses_a_nan_set(tmp_path):
    bundle = make_bundle(tmp_path / "b", n_eval=40, quantize=False)
    profile = write_profile(tmp_path / "p.toml")
    path = bundle / "adv" / "fgsm_0.08.npz"
    adv = AdvSet.load(path)
    adv.x[0] = np.nan
    adv.x[1] = np.inf
    adv.save(path)
    r = runner.invoke(app, ["audit", str(bundle / "model.onnx"), "-p", str(profile), "--no-memory", "--no-verify"])
    text = flat(r.stderr)
    assert r.exit_code == 2, r.output
    assert "fgsm_0.08" in text and "NaN and Inf" in text, text


def test_copied_bundle_sets_pass(tmp_path):
    bundle = make_bundle(tmp_path / "b", n_eval=40, quantize=False)
    copy = shutil.copytree(bundle, tmp_path / "c")
    ev = EvalSet.load(copy / "eval.npz")
    check_adv_sets(sorted((copy / "adv").glob("*.npz")), ev, [0, 1])
