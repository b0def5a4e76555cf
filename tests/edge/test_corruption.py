"""Common-corruption sets on the device side: the metrics on hand-made predictions, the file checks, the
bundle's hashes, and an audit of a bundle that holds sets (real onnxruntime sessions)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgerobust.edge.audit import AuditConfig, audit
from edgerobust.edge.files.bundle import Bundle, EvalSet
from edgerobust.edge.files.corruptset import CorruptionSet
from edgerobust.edge.files.npzio import sha256_file
from edgerobust.edge.render.report import to_json, to_markdown, write_report
from edgerobust.edge.scores.corruption import score_set, summarize
from edgerobust.errors import BundleError
from onnx_models import write_profile

pytestmark = pytest.mark.usefixtures("quick_measure")


def _set(name, sev, y, pred, clean, family="noise"):
    meta = {"name": f"{name}_s{sev}", "corruption": name, "severity": sev, "family": family}
    return score_set(meta, np.asarray(y), {r: np.asarray(p) for r, p in pred.items()},
                     {r: np.asarray(p) for r, p in clean.items()})


def test_ce_relative_ce_and_mcnemar_by_hand():
    y = np.zeros(10, dtype=np.int64)
    clean = {"base": np.r_[np.zeros(9), 1], "deployed": np.r_[np.zeros(8), 1, 1]}  # clean errors 0.1 and 0.2
    # severity 1: base errs on 2, deployed on 4; severity 3: base errs on 4, deployed on 8
    s1 = _set("blur", 1, y, {"base": np.r_[np.zeros(8), 1, 1], "deployed": np.r_[np.zeros(6), 1, 1, 1, 1]}, clean)
    s3 = _set("blur", 3, y, {"base": np.r_[np.zeros(6), np.ones(4)], "deployed": np.r_[np.zeros(2), np.ones(8)]}, clean)
    assert s1.delta == pytest.approx(-0.2) and (s1.mcnemar.only_a, s1.mcnemar.only_b) == (2, 0)
    assert s3.mcnemar.only_a == 4 and s3.mcnemar.p_value == pytest.approx(0.125)  # 2 * 0.5**4
    # a corruption the base never errs on: CE undefined (n/a), left out of the mean
    easy = _set("contrast", 1, y, {"base": np.zeros(10), "deployed": np.zeros(10)}, clean, family="digital")
    rep = summarize([s1, s3, easy])
    blur, contrast = rep.corruptions
    assert blur.ce["deployed"] == pytest.approx((0.4 + 0.8) / (0.2 + 0.4))  # 2.0
    assert blur.ce["base"] == pytest.approx(1.0)
    # relative: ((0.4 - 0.2) + (0.8 - 0.2)) / ((0.2 - 0.1) + (0.4 - 0.1))
    assert blur.relative_ce["deployed"] == pytest.approx(0.8 / 0.4)
    assert contrast.ce["deployed"] is None and contrast.relative_ce["deployed"] is None
    assert rep.mce["deployed"] == pytest.approx(2.0) and rep.n_mce["deployed"] == 1
    assert rep.worst is None  # a 4-pair McNemar cannot reach p < 0.05 (0.125 is its smallest)


def test_holm_adjusts_by_hand():
    from edgerobust.edge.scores.stats import holm

    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0]) and holm([]) == []


def test_a_lone_p_of_0_03_among_30_sets_is_not_named_in_the_headline():
    from types import SimpleNamespace

    from edgerobust.edge.render.corruption_lines import corruption_sentence, set_rows

    n = 40
    y = np.zeros(n, dtype=np.int64)
    right = np.zeros(n)
    clean = {"base": right, "deployed": right}
    lone = _set("impulse_noise", 3, y, {"base": right, "deployed": np.r_[np.ones(6), np.zeros(34)]}, clean)
    assert lone.mcnemar.p_value == pytest.approx(2 * 0.5 ** 6) and lone.significant_loss  # 0.031 alone
    same = [_set(f"c{i}", 1, y, {"base": right, "deployed": right}, clean) for i in range(29)]
    rep = summarize([lone] + same)
    held = rep.sets[0]
    assert held.mcnemar.p_value == pytest.approx(2 * 0.5 ** 6) and held.p_holm == pytest.approx(30 * 2 * 0.5 ** 6)
    assert not held.significant_loss and rep.worst is None
    text = corruption_sentence(SimpleNamespace(corruption=rep, deployed_variant="int8"))
    assert "impulse_noise" not in text and "no corruption loss of int8 against the base survives Holm's " \
        "correction" in text and "(1 with uncorrected p < 0.05, none after Holm's correction over 30 sets)" in text
    head, rows = set_rows(rep)
    assert head[6:8] == ["McNemar p", "Holm p"] and rows[0][6:8] == ["0.0312", "0.938"]
    assert rep.to_dict()["sets"][0]["p_holm"] == pytest.approx(0.9375)


def test_worst_is_the_largest_significant_loss():
    n = 40
    y = np.zeros(n, dtype=np.int64)
    right = np.zeros(n)
    clean = {"base": right, "deployed": right}
    big = _set("impulse_noise", 3, y, {"base": right, "deployed": np.r_[np.ones(10), np.zeros(30)]}, clean)
    small = _set("shot_noise", 1, y, {"base": right, "deployed": np.r_[np.ones(6), np.zeros(34)]}, clean)
    gain = _set("fog", 5, y, {"base": np.r_[np.ones(12), np.zeros(28)], "deployed": right}, clean, "weather")
    rep = summarize([small, big, gain])
    assert rep.worst.name == "impulse_noise_s3" and rep.worst.delta == pytest.approx(-0.25)
    assert rep.worst.mcnemar.p_value == pytest.approx(2 * 0.5 ** 10)
    # Holm: fog's gain (2 * 0.5 ** 12) is the smallest of 3 p values (x 3), this loss the next (x 2)
    assert rep.worst.p_holm == pytest.approx(2 * 2 * 0.5 ** 10)
    from types import SimpleNamespace

    from edgerobust.edge.render.corruption_lines import corruption_sentence

    assert "(p = 0.002, Holm-adjusted over 3 sets: 0.0039;" in corruption_sentence(
        SimpleNamespace(corruption=rep, deployed_variant="int8"))
    # the base errs only under fog: CE is n/a for the two noises (0 / 0), 0 for fog, and the mean counts fog alone
    assert [c.ce["deployed"] for c in rep.corruptions] == [None, None, 0.0]
    assert rep.mce["deployed"] == 0.0 and rep.n_mce["deployed"] == 1 and rep.relative_mce["deployed"] == 0.0


def corrupted_copy(src, dst, corruptions: str = "gaussian_noise,impulse_noise,contrast,defocus_blur",
                   severities: str = "1,5"):
    """A copy of the bundle ``src`` at ``dst`` with the common-corruption sets `corrupt_bundle` makes."""
    from edgerobust.workstation.corrupt.sets import CorruptConfig, corrupt_bundle

    root = shutil.copytree(src, dst)
    corrupt_bundle(CorruptConfig(root, corruptions=corruptions, corruption_severities=severities))
    return root


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle (1x8x8) with noise and contrast sets made by `corrupt_bundle`."""
    return corrupted_copy(tiny_bundle, tmp_path_factory.mktemp("corr") / "tiny")


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return write_profile(tmp_path_factory.mktemp("p") / "fast.toml", batch_sizes=(1,))


def test_bundle_lists_hashes_and_verifies_the_sets(bundle):
    b = Bundle.open(bundle)
    names = [p.name for p in b.corruption_paths]
    assert names[:2] == ["gaussian_noise_s1.npz", "gaussian_noise_s5.npz"] and len(names) == 6
    assert all(f"corruptions/{n}" in b.manifest["files"] for n in names)
    skipped = b.manifest["corruption_sets"]["skipped"]
    assert {(s["corruption"], s["severity"]) for s in skipped} == {("defocus_blur", 1), ("defocus_blur", 5)}
    b.verify()


def test_audit_replays_the_sets_on_every_model(bundle, profile, tmp_path):
    r = audit(AuditConfig(model=bundle / "model.onnx", profile=profile, measure_memory=False, show_progress=False))
    c = r.corruption
    assert c is not None and [s.name for s in c.sets][0] == "gaussian_noise_s1" and len(c.sets) == 6
    assert set(c.roles) == {"base", "deployed", "fp32"}
    # the replayed accuracy is the session's: recompute one set with onnxruntime directly
    import onnxruntime as ort

    cs = CorruptionSet.load(bundle / "corruptions" / "contrast_s5.npz")
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    pred = sess.run(None, {sess.get_inputs()[0].name: cs.x})[0].argmax(1)
    got = next(s for s in c.sets if s.name == "contrast_s5")
    assert got.models["deployed"].k == int((pred == cs.y).sum())
    assert c.mce["base"] == pytest.approx(1.0)
    # every set's answers join the predictions (source "corruption") and its file's hash the provenance
    kept = {s.name: s for s in r.predictions.sets if s.source == "corruption"}
    assert list(kept) == [s.name for s in c.sets] and kept["contrast_s5"].idx.tolist() == cs.idx.tolist()
    assert np.array_equal(kept["contrast_s5"].pred["deployed"], pred) and set(kept["contrast_s5"].pred) == set(c.roles)
    assert r.provenance.sets["contrast_s5"] == sha256_file(bundle / "corruptions" / "contrast_s5.npz")
    data = to_json(r)
    assert data["_version"] == 9 and data["_data"]["corruption"]["definitions"]["reference"] == "base"
    md = to_markdown(r)
    assert "## Common corruptions" in md and "| contrast | digital | 5 |" in md
    assert "defocus_blur at severity 1" in md  # left out at 8 px, said where it is read
    assert "sha256 of the 6 corruption sets: in report.json" in md and "sha256 of contrast_s5" not in md
    folder = write_report(r, tmp_path / "rep")
    html = (folder / "report.html").read_text()
    assert "Accuracy under common corruptions" in html and "<svg" in html
    assert json.loads((folder / "report.json").read_text())["_data"]["corruption"]["n_mce"]["deployed"] == 3


def test_a_bundle_without_sets_audits_as_before(tiny_bundle, profile, tmp_path):
    root = shutil.copytree(tiny_bundle, tmp_path / "b")
    r = audit(AuditConfig(model=root / "model.onnx", profile=profile, measure_memory=False, show_progress=False,
                          variants=False))
    assert r.corruption is None and to_json(r)["_data"]["corruption"] is None
    assert [s.source for s in r.predictions.sets] == ["clean", "transfer", "transfer"]
    assert set(r.provenance.sets) == {"fgsm_0.02", "fgsm_0.08"}
    assert "Common corruptions" not in to_markdown(r)


def test_bad_sets_are_refused(bundle, tmp_path):
    good = CorruptionSet.load(bundle / "corruptions" / "contrast_s1.npz")
    x = good.x.copy()
    x[0, 0, 0, 0] = np.nan
    CorruptionSet(x=x, y=good.y, idx=good.idx, meta=good.meta).save(tmp_path / "nan.npz")
    with pytest.raises(BundleError, match="NaN"):
        CorruptionSet.load(tmp_path / "nan.npz")
    CorruptionSet(x=good.x[:, :, :4], y=good.y, idx=good.idx, meta=good.meta).save(tmp_path / "shape.npz")
    from edgerobust.edge.files.corruptset import check_corruption_set

    ev = EvalSet.load(bundle / "eval.npz")
    with pytest.raises(BundleError, match="shape"):
        check_corruption_set(CorruptionSet.load(tmp_path / "shape.npz"), "shape.npz", "", ev.x.shape, ev.y)
    CorruptionSet(x=good.x, y=good.y, idx=good.idx, meta={**good.meta, "severity": 6}).save(tmp_path / "s6.npz")
    with pytest.raises(BundleError, match="severity 6"):
        CorruptionSet.load(tmp_path / "s6.npz")


def test_a_tampered_set_fails_verification(bundle, tmp_path):
    root = shutil.copytree(bundle, tmp_path / "t")
    p = root / "corruptions" / "gaussian_noise_s1.npz"
    cs = CorruptionSet.load(p)
    CorruptionSet(x=np.clip(cs.x + 0.01, 0, 1), y=cs.y, idx=cs.idx, meta=cs.meta).save(p)
    with pytest.raises(BundleError, match="does not match the bundle's manifest"):
        Bundle.open(root).verify()
