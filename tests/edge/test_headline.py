"""The headline and each Δ on a real tiny bundle with transfer and white-box sets.

White-box sets are real FGSM sets crafted in numpy on the deployed model's fp32 weights
(model_fp32.onnx), as `compress --whitebox` crafts them on the pruned model.
"""
import re
import shutil

import numpy as np
import pytest
from rich.console import Console

from edgerobust.edge.audit import AuditConfig, audit
from edgerobust.edge.files.bundle import AdvSet, EvalSet, finalize_manifest, read_manifest
from edgerobust.edge.files.npzio import sha256_file
from edgerobust.edge.render.headline import headline, worst_per_threat
from edgerobust.edge.runtime.hostcheck import HostCheck
from edgerobust.edge.render.report import render, to_markdown
from edgerobust.edge.scores.robust import COMBINED
from edgerobust.edge.scores.scoring import ModelScores, SetResult
from edgerobust.edge.scores.stats import mcnemar_exact, proportion
from onnx_models import fgsm, mlp_weights, ort_predictions, perturbed, write_profile


def add_whitebox_set(root, eps: float, params: dict | None = None, rows: slice = slice(None)) -> str:
    """Craft FGSM on model_fp32.onnx's weights (as make_bundle made them) and list it in the bundle."""
    ev = EvalSet.load(root / "eval.npz")
    dep_w = perturbed(mlp_weights(0), 0.12, 1)
    idx = np.arange(len(ev.y))[rows]
    name = f"whitebox-fp32/fgsm_{eps}"
    meta = {"attack": "fgsm", "eps": eps, "norm": "Linf", "params": params or {}, "source": "whitebox-fp32",
            "target": "model_fp32.onnx", "target_sha256": sha256_file(root / "model_fp32.onnx"),
            "eval_sha256": sha256_file(root / "eval.npz"), "name": name}
    (root / "adv" / "whitebox-fp32").mkdir(exist_ok=True)
    AdvSet(x=fgsm(dep_w, ev.x[idx], ev.y[idx], eps), y=ev.y[idx], idx=idx.astype(np.int64),
           meta=meta).save(root / "adv" / f"{name}.npz")
    finalize_manifest(root, read_manifest(root / "manifest.json"))
    return name


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    root = shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("headline") / "tiny")  # sets are added below
    add_whitebox_set(root, 0.08)  # all 120 eval rows; the transfer set fgsm_0.08 holds 90 of them
    add_whitebox_set(root, 0.05)  # no transfer set at this eps
    add_whitebox_set(root, 0.02, params={"steps": 3}, rows=slice(0, 60))  # same attack and eps, other settings
    return root


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return write_profile(tmp_path_factory.mktemp("p") / "fast.toml")


@pytest.fixture(scope="module")
def report(bundle, profile):
    return audit(AuditConfig(model=bundle / "model.onnx", profile=str(profile), show_progress=False,
                             measure_memory=False))


def correct(bundle, model: str, adv: AdvSet) -> np.ndarray:
    return ort_predictions(bundle / model, adv.x) == adv.y


def test_whitebox_delta_compares_each_model_under_its_own_attack(bundle, report):
    sets = {s.name: s for s in report.sets}
    wb, tr = sets["whitebox-fp32/fgsm_0.08"], sets["fgsm_0.08"]
    a_wb, a_tr = AdvSet.load(bundle / "adv/whitebox-fp32/fgsm_0.08.npz"), AdvSet.load(bundle / "adv/fgsm_0.08.npz")
    common = np.intersect1d(a_wb.idx, a_tr.idx)
    assert len(common) == 90 and wb.n == 120
    base_ok = correct(bundle, "base.onnx", a_tr)[np.searchsorted(a_tr.idx, common)]
    dep_ok = correct(bundle, "model.onnx", a_wb)[np.searchsorted(a_wb.idx, common)]
    ref = wb.reference
    assert (ref.set, ref.n) == ("fgsm_0.08", 90)
    assert (ref.base.k, ref.deployed.k) == (int(base_ok.sum()), int(dep_ok.sum()))
    assert wb.delta_accuracy == pytest.approx((dep_ok.sum() - base_ok.sum()) / 90)
    assert (ref.mcnemar.only_a, ref.mcnemar.only_b) == (int((base_ok & ~dep_ok).sum()), int((~base_ok & dep_ok).sum()))
    # the base on the white-box inputs (transfer the other way) is still reported, apart from Δ
    assert wb.base.accuracy.k == int(correct(bundle, "base.onnx", a_wb).sum())
    assert wb.base.accuracy.value != pytest.approx(ref.base.value)
    assert wb.delta_note is None
    # a transfer set's Δ stays deployed − base on the very same inputs
    assert tr.delta_accuracy == pytest.approx(tr.deployed.accuracy.value - tr.base.accuracy.value)


def test_whitebox_set_without_a_matching_base_set_has_no_delta_and_says_why(report):
    sets = {s.name: s for s in report.sets}
    no_eps = sets["whitebox-fp32/fgsm_0.05"]
    assert no_eps.delta_accuracy is None and no_eps.reference is None
    assert no_eps.delta_note.startswith("no Δ: no transfer set of fgsm at eps 0.05 to measure the base")
    assert "edgerobust attack" in no_eps.delta_note
    other = sets["whitebox-fp32/fgsm_0.02"]
    assert other.delta_accuracy is None
    assert other.delta_note == ("no Δ: the base's fgsm at eps 0.02 set (fgsm_0.02) used other attack settings "
                                "({} vs {'steps': 3})")
    md = to_markdown(report)
    assert "- whitebox-fp32/fgsm_0.05: no Δ: no transfer set of fgsm at eps 0.05" in md


def test_headline_states_robust_accuracy_per_threat_and_eps_with_its_grade(bundle, report):
    """The headline reads the per-sample worst case (edgerobust.edge.scores.robust) of each threat model,
    graded: these sets are FGSM only, so an upper bound."""
    def p(v):
        return f"{100 * v:.1f}%"

    def d(v):
        return f"{100 * v:+.1f} pp".replace("-", "−")

    text = headline(report)
    threats = {r.threat for r in report.robust}
    assert threats == {"transfer", "white-box", COMBINED}  # both kinds of set at eps 0.02 and 0.08
    for threat in ("transfer", "white-box"):
        rows = [r for r in report.robust if r.threat == threat]
        for r in rows if len(rows) <= 3 else rows[-1:]:
            base = p(r.models["base"].value) if "base" in r.models else "–"
            delta = d(r.delta) if r.delta is not None else "–"
            assert f"eps {r.eps_text} deployed {p(r.models['deployed'].value)} vs base {base} ({delta})" in text
    assert "upper bound from FGSM" in text and "AutoAttack-grade" not in text
    # never above the worst single set of the same eps and threat
    for r in report.robust:
        same = [s for s in report.sets if s.kind == "adversarial" and s.source == "transfer"
                and s.attack.get("eps") == r.eps]
        if r.threat == "transfer" and same:
            assert r.models["deployed"].value <= min(s.deployed.accuracy.value for s in same) + 1e-9
    assert "this host" not in text


def test_every_attack_is_the_worst_case_over_transfer_and_white_box_sets_by_hand(bundle, report):
    """Per model, every set of the eps replayed on it (crafted on the base and on the compressed model); no Δ: the
    deployed int8 model's white-box sets were crafted on its fp32 twin, not on itself (and at 0.02 with other
    settings besides)."""
    by = {r.eps_text: r for r in report.robust if r.threat == COMBINED}
    assert set(by) == {"0.02", "0.08"}  # 0.05 has white-box sets only: its white-box row is already the worst case
    ev = EvalSet.load(bundle / "eval.npz")
    a_tr, a_wb = AdvSet.load(bundle / "adv/fgsm_0.08.npz"), AdvSet.load(bundle / "adv/whitebox-fp32/fgsm_0.08.npz")
    rows = np.intersect1d(a_tr.idx, a_wb.idx)
    r = by["0.08"]
    assert r.n == len(rows) == 90 and list(r.rows) == list(rows)
    for role, file in (("base", "base.onnx"), ("deployed", "model.onnx")):
        hand = ((ort_predictions(bundle / file, ev.x[rows]) == ev.y[rows])
                & correct(bundle, file, a_tr)[np.searchsorted(a_tr.idx, rows)]
                & correct(bundle, file, a_wb)[np.searchsorted(a_wb.idx, rows)])
        assert r.models[role].k == int(hand.sum()), role
    # the white-box sets were crafted on model_fp32.onnx, the deployed model's fp32 twin, not on the int8 model
    # itself: the figures are the same worst case, but no like-for-like Δ is claimed
    assert not r.like and r.delta is None and r.compares is None
    assert (r.strongest["base"], r.strongest["deployed"], r.grade) == ("white-box", "white-box-twin", "upper-bound")
    assert "crafted on its fp32 twin" in r.note and "the deployed model no set (FGSM crafted on its fp32 twin)" in r.note
    low = by["0.02"]
    assert not low.like and low.delta is None and low.models["deployed"].value is not None
    assert "crafted on itself, the base faced FGSM, the deployed model no set (FGSM (3) crafted on its fp32 twin)" \
        in low.note
    text = " ".join(headline(report).split())
    d, b = (f"{100 * low.models[k].value:.1f}%" for k in ("deployed", "base"))
    lead = (f"Robust accuracy against every attack (per-sample worst case over the FGSM transfer sets (crafted on the "
            f"base) and the FGSM white-box sets (crafted on the compressed model), on the 90 evaluation samples all "
            f"ran on; upper bound; the strongest attack faced: deployed a gradient attack crafted on its fp32 twin; "
            f"base a gradient attack crafted on itself): eps 0.02 deployed {d} vs base {b} (no like-for-like Δ); "
            f"eps 0.08 deployed {100 * r.models['deployed'].value:.1f}% vs base {100 * r.models['base'].value:.1f}% "
            f"(no like-for-like Δ).")
    assert "each attack also crafted on itself" not in text and "deployed a gradient attack crafted on itself" \
        not in text
    assert lead in text, text
    assert text.index("Robust accuracy against every attack") < text.index("Per threat model")


def _set(name: str, base_k: int, dep_k: int, n: int = 100) -> SetResult:
    y = np.ones(n, bool)
    return SetResult(name=name, kind="adversarial", path=name, n=n, attack={},
                     base=ModelScores(proportion(base_k, n)), deployed=ModelScores(proportion(dep_k, n)),
                     delta_accuracy=(dep_k - base_k) / n, flip_rate=proportion(0, n), transfer_success=None,
                     mcnemar=mcnemar_exact(y, y))


def test_worst_means_lowest_deployed_accuracy_not_smallest_delta():
    big_drop, lowest = _set("pgd_2-255", base_k=90, dep_k=50), _set("pgd_8-255", base_k=30, dep_k=40)
    (w,) = worst_per_threat([big_drop, lowest])
    assert (w.threat, w.set, w.deployed, w.base, w.delta) == ("transfer", "pgd_8-255", 0.4, 0.3, pytest.approx(0.1))


def test_mismatched_host_is_said_first_in_headline_budgets_and_json(report):
    import dataclasses

    from edgerobust.edge.render.report import to_json

    hc = HostCheck(host="x86_64, 2 cores", matches=False, mismatch=("architecture: the device is aarch64, "
                                                                    "this host is x86_64",), threads=None)
    r = dataclasses.replace(report, profile="raspberry-pi-5", host_check=hc)
    assert headline(r).startswith("Figures are this host's (x86_64, 2 cores) running raspberry-pi-5's settings, "
                                  "not evidence for that device. Deployed vs base:")
    s = to_json(r)["_data"]["summary"]
    assert s["host_matches_profile"] is False and s["host_mismatch"] == list(hc.mismatch)


def test_every_table_fits_80_columns(report):
    con = Console(width=80, record=True, color_system=None)
    render(report, con)
    text = con.export_text()
    table_lines = [ln for ln in text.splitlines() if ln.startswith(("┃", "│", "└", "┏", "┡"))]
    assert table_lines and max(len(ln) for ln in text.splitlines()) <= 80
    # no cell wraps: each set is on one line of its table, with its Δ and p-value
    for name in ("fgsm_0.02", "fgsm_0.08"):
        assert any(re.match(rf"│ {name} +│ +\d+ │ .* pp │ .*│ +[<\d.]+ │$", ln) for ln in table_lines), name
    assert any(re.match(r"│ fgsm_0.05 +│ +120 │ +– │ .*% │ +– │ .*│ +– │$", ln) for ln in table_lines)
    assert "no Δ: no transfer set of fgsm at eps 0.05" in " ".join(text.split())


def test_noise_warnings_say_when_latency_cannot_be_trusted():
    """A busy host or a wide speedup interval is said next to the figures (never a silent number)."""
    from types import SimpleNamespace as NS

    from edgerobust.edge.render.speed_lines import noise_warnings

    settings = NS(batch_sizes=(1, 8))
    none = {"models": (), "model": lambda role: None}  # no per-process figures (one probe process)
    quiet = NS(other_load=0.02, settings=settings, skipped_batch_sizes=(), **none,
               speedup=[NS(p50=3.5, p50_low=3.4, p50_high=3.6), NS(p50=3.0, p50_low=2.9, p50_high=3.1)])
    assert noise_warnings(quiet) == []
    busy = NS(other_load=0.4, settings=settings, skipped_batch_sizes=(), **none,
              speedup=[NS(p50=3.5, p50_low=3.4, p50_high=3.6), NS(p50=22.8, p50_low=4.0, p50_high=30.0)])
    lines = noise_warnings(busy)
    assert any("40% of the cores" in line for line in lines)
    assert any("batch-8 speedup 22.80× is uncertain" in line and "4.00–30.00×" in line for line in lines)
