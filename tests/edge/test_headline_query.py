"""The headline's robust accuracy as the worst case over the transfer sets and the query attack
together, and what it says where the query attack cannot run (ART not installed).

A real tiny bundle (onnx_models.make_bundle: an MLP and its int8 twin, FGSM sets at eps 0.02 and
0.08 on 90 of 120 rows); the audit's short default query attack shrunk to a few iterations.
"""
import re
import shutil

import numpy as np
import pytest

from edgerobust.edge.audit import AuditConfig, audit
from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.edge.render.headline import headline
from edgerobust.edge.scores import query as query_mod
from edgerobust.edge.scores.robust import COMBINED
from onnx_models import make_bundle, ort_predictions, write_profile

pytestmark = pytest.mark.usefixtures("quick_measure")


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    return shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("hq") / "tiny")  # this module's own copy


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return str(write_profile(tmp_path_factory.mktemp("p") / "fast.toml"))


@pytest.fixture
def tiny_quick(monkeypatch):
    """The default query attack, as small as a test wants it."""
    monkeypatch.setattr(query_mod, "QUICK_SAMPLES", 60)
    monkeypatch.setattr(query_mod, "QUICK_ITERATIONS", 8)


def _audit(bundle, profile, query):
    return audit(AuditConfig(model=bundle / "model.onnx", profile=profile, show_progress=False,
                             measure_memory=False, variants=False, query=query))


def _pct(v):
    return f"{100 * v:.1f}%"


def _pp(v):
    return f"{100 * v:+.1f} pp".replace("-", "−")


def test_headline_leads_with_the_worst_case_over_transfer_sets_and_query_attack(bundle, profile, tiny_quick):
    pytest.importorskip("art")
    rep = _audit(bundle, profile, query_mod.QUICK)
    assert rep.query_status == "ran"
    (q,) = rep.query
    assert (q["eps_text"], q["n"], q["queries_budget"]) == ("0.08", 60, 8)  # the transfer sets' largest eps
    by = {(r.threat, r.eps_text): r for r in rep.robust}
    both, query = by[(COMBINED, "0.08")], by[("query", "0.08")]
    assert (COMBINED, "0.02") not in by  # the query attack ran at 0.08 only
    # by hand: the rows both hold (the transfer set's among the first 60), robust = clean-correct under
    # onnxruntime and correct on the FGSM set, and not broken by the query attack
    ev, adv = EvalSet.load(bundle / "eval.npz"), AdvSet.load(bundle / "adv/fgsm_0.08.npz")
    rows = adv.idx[adv.idx < 60]
    assert both.n == len(rows) > 20 and list(both.rows) == list(rows)
    models = {"base": "base.onnx", "deployed": "model.onnx"}
    for role, file in models.items():
        clean_ok = ort_predictions(bundle / file, ev.x[rows]) == ev.y[rows]
        adv_ok = (ort_predictions(bundle / file, adv.x) == adv.y)[np.searchsorted(adv.idx, rows)]
        hand = clean_ok & adv_ok & query.correct[role][rows]
        assert both.models[role].k == int(hand.sum()), role
        assert both.models[role].value <= min(adv_ok.mean(), query.correct[role][rows].mean())
    assert both.components == ("fgsm", "square (8 iterations)") and both.grade == "upper-bound"
    # the base faced FGSM crafted on itself, the deployed model only sets transferred to it: no Δ between them
    assert not both.like and both.delta is None and "the deployed model no set" in both.note
    assert both.strongest == {"base": "white-box", "deployed": "query"}
    text = headline(rep)
    lead = (f"Robust accuracy against every attack (per-sample worst case over the FGSM transfer sets (crafted on the "
            f"base) and the query attack square (8 iterations) on each runtime, on the {both.n} evaluation samples all "
            f"ran on; upper bound; the strongest attack faced: deployed a query attack on its own runtime; base a "
            f"gradient attack crafted on itself): eps 0.08 deployed {_pct(both.models['deployed'].value)} vs base "
            f"{_pct(both.models['base'].value)} (no like-for-like Δ). No like-for-like Δ: crafted on itself, the base "
            f"faced FGSM, the deployed model no set")
    assert lead in text
    assert text.index(lead) < text.index("Per threat model (per-sample worst case")  # the headline's figure first
    assert "known to flatter" not in text
    # the report keeps the row, and the gradient-masking check has a black-box attack to compare with
    assert next(c for c in rep.sanity if c.name == "gradient masking").passed is not None


def _sentence(text: str, start: str) -> str:
    m = re.search(re.escape(start) + r".*?\.(?:\s|$)", text)
    assert m, text
    return m.group(0)


@pytest.mark.parametrize("query", [None, "quick"], ids=["library-default", "quick"])
def test_without_art_the_transfer_delta_says_how_to_check_it(bundle, profile, monkeypatch, query):
    monkeypatch.setattr(query_mod, "art_installed", lambda: False)
    rep = _audit(bundle, profile, query)
    assert rep.query_status == "not installed" and rep.query == ()
    assert not [r for r in rep.robust if r.threat in ("query", COMBINED)]
    t = next(r for r in rep.robust if r.threat == "transfer" and r.eps_text == "0.08")
    sentence = _sentence(headline(rep), "Robust accuracy (per-sample worst case")
    assert f"eps 0.08 deployed {_pct(t.models['deployed'].value)} vs base {_pct(t.models['base'].value)}" in sentence
    assert "known to flatter compressed models" in sentence
    assert "pip install 'edgerobust[query]'" in sentence and "`query_attack` square" in sentence


def test_an_explicit_query_attack_still_needs_art(bundle, profile, monkeypatch):
    from edgerobust.errors import DependencyError

    monkeypatch.setattr(query_mod, "art_installed", lambda: False)
    with pytest.raises(DependencyError, match="Adversarial Robustness Toolbox"):
        _audit(bundle, profile, query_mod.QueryConfig(eps=("0.08",), queries=2, samples=4))


def test_turned_off_no_query_attack_and_no_caveat(bundle, profile):
    pytest.importorskip("art")
    rep = _audit(bundle, profile, None)
    assert rep.query_status == "off" and rep.query == ()
    assert "known to flatter" not in headline(rep)


def test_the_short_default_needs_transfer_sets_to_pair_with(tmp_path, profile):
    pytest.importorskip("art")
    bare = make_bundle(tmp_path / "bare", attacks=())
    rep = _audit(bare, profile, query_mod.QUICK)
    assert rep.query_status == "no transfer sets" and rep.query == () and rep.robust == ()
    assert "Robustness not audited" in headline(rep)
