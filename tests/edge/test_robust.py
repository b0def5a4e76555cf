"""Robustness as the field measures it: per-sample worst case over attacks (checked against a hand
computation), its grade, the sanity checks, and a query attack on the runtime that catches a
model whose gradients mislead."""
import numpy as np
import pytest

from edgerobust.edge.files.predictions import Predictions, SetPredictions
from edgerobust.edge.scores.robust import AUTOATTACK_STANDARD, grade_of, robust_accuracies
from edgerobust.edge.scores.sanity import check_eps, check_gradient_masking, check_iterations, check_large_eps
from edgerobust.edge.scores.scoring import ModelScores, SetResult
from edgerobust.edge.scores.stats import mcnemar_exact, proportion


def _set(name, source, attack, eps, base_ok, dep_ok, steps=None):
    n = len(base_ok)
    acc = lambda ok: ModelScores(accuracy=proportion(int(np.sum(ok)), n))  # noqa: E731
    params = {"steps": steps} if steps else {}
    if attack == "square":
        params = {"n_queries": steps or 1000}
    return SetResult(name=name, kind="adversarial" if source != "clean" else "clean", path=name, n=n,
                     attack={"attack": attack, "eps": eps, "eps_text": f"{eps:g}", "norm": "Linf", "params": params},
                     base=acc(base_ok), deployed=acc(dep_ok), delta_accuracy=None, flip_rate=proportion(0, n),
                     transfer_success=None, mcnemar=mcnemar_exact(np.asarray(base_ok), np.asarray(dep_ok)),
                     source=source)


def _preds(name, source, idx, y, base_ok, dep_ok):
    y = np.asarray(y)
    wrong = (y + 1) % 10
    return SetPredictions(name=name, source=source, y=y, idx=np.asarray(idx),
                          pred={"base": np.where(base_ok, y, wrong), "deployed": np.where(dep_ok, y, wrong)},
                          margin={"base": np.zeros(len(y)), "deployed": np.zeros(len(y))})


def test_robust_accuracy_is_the_per_sample_worst_case_by_hand():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 10, n)
    clean = {r: rng.random(n) < 0.95 for r in ("base", "deployed")}
    # two attacks at eps 0.1, each on a different subset of rows; one at eps 0.2
    idx_a, idx_b = np.arange(0, 180), np.arange(20, 200)
    a = {r: rng.random(len(idx_a)) < 0.7 for r in clean}
    b = {r: rng.random(len(idx_b)) < 0.6 for r in clean}
    sets = [_set("clean", "clean", None, 0, clean["base"], clean["deployed"]),
            _set("fgsm_0.1", "transfer", "fgsm", 0.1, a["base"], a["deployed"]),
            _set("pgd_0.1", "transfer", "pgd", 0.1, b["base"], b["deployed"], steps=10)]
    preds = Predictions((_preds("clean", "clean", np.arange(n), y, clean["base"], clean["deployed"]),
                         _preds("fgsm_0.1", "transfer", idx_a, y[idx_a], a["base"], a["deployed"]),
                         _preds("pgd_0.1", "transfer", idx_b, y[idx_b], b["base"], b["deployed"])))
    (ra,) = robust_accuracies(sets, preds)
    # by hand: the rows both sets hold (20..179), robust = clean-correct and correct under both attacks
    rows = np.arange(20, 180)
    for role in ("base", "deployed"):
        hand = clean[role][rows] & a[role][rows - 0] & b[role][rows - 20]
        assert ra.models[role].k == int(hand.sum()) and ra.models[role].n == len(rows) == ra.n
        # never above the weakest single attack on the same rows
        assert ra.models[role].value <= min(a[role][rows].mean(), b[role][rows - 20].mean())
    assert ra.threat == "transfer" and ra.eps_text == "0.1" and ra.grade == "upper-bound"
    assert ra.components == ("fgsm", "pgd") and ra.sets["base"] == ("fgsm_0.1", "pgd_0.1")
    assert ra.models["base"].ci_low < ra.models["base"].value < ra.models["base"].ci_high


def test_autoattack_grade_needs_every_standard_component_at_its_budget():
    full = [{"attack": k, "params": {p: v}} for k, (p, v) in AUTOATTACK_STANDARD.items()]
    assert grade_of(full)[0] == "autoattack"
    weak = [dict(a, params={k: v // 10 for k, v in a["params"].items()}) if a["attack"] == "square" else a
            for a in full]
    assert grade_of(weak)[0] == "upper-bound"  # Square with 500 queries is not the standard version
    assert grade_of(full[:3])[0] == "upper-bound"
    assert grade_of([{"attack": "pgd", "params": {"steps": 10}}]) == ("upper-bound", ("pgd",))


def _report(n, y, groups):
    """(SetResults, Predictions) from {name: (source, attack, eps, steps, base_ok, dep_ok)} plus a clean set."""
    ok = np.ones(n, bool)
    sets = [_set("clean", "clean", None, 0, ok, ok)]
    preds = [_preds("clean", "clean", np.arange(n), y, ok, ok)]
    for name, (source, attack, eps, steps, b, d) in groups.items():
        sets.append(_set(name, source, attack, eps, b, d, steps))
        preds.append(_preds(name, source, np.arange(n), y, b, d))
    return sets, Predictions(tuple(preds))


def test_sanity_checks_catch_what_they_are_for():
    from edgerobust.edge.scores.sanity import Rows

    n = 100
    y = np.zeros(n, int)
    some = lambda k: np.arange(n) < k  # noqa: E731
    sets, preds = _report(n, y, {"pgd_0.1": ("transfer", "pgd", 0.1, 10, some(30), some(30)),
                                 "pgd_0.3": ("transfer", "pgd", 0.3, 10, some(60), some(20))})
    c = check_eps(sets, Rows(preds))
    assert c.passed is False and "rose with eps" in c.detail
    sets, preds = _report(n, y, {"pgd_0.1": ("transfer", "pgd", 0.1, 10, some(30), some(30)),
                                 "pgd_0.3": ("transfer", "pgd", 0.3, 10, some(31), some(90))})
    assert check_eps(sets, Rows(preds)).passed is True  # one sample: chance; the deployed side is transferred
    sets, preds = _report(n, y, {"pgd_0.1": ("transfer", "pgd", 0.1, 10, some(30), some(30)),
                                 "apgd_0.1": ("transfer", "apgd", 0.1, 100, some(50), some(30))})
    assert check_iterations(sets, Rows(preds)).passed is False
    assert check_iterations(sets[:2], Rows(preds)).passed is None
    big = [_set("pgd_0.5", "transfer", "pgd", 0.5, some(60), some(5), 10)]
    assert check_large_eps(big, (), 0.1).passed is False
    assert check_large_eps([_set("pgd_0.5", "transfer", "pgd", 0.5, some(5), some(5), 10)], (), 0.1).passed is True
    assert check_large_eps(sets, (), 0.1).passed is None
    sets, preds = _report(n, y, {"pgd_0.1": ("transfer", "pgd", 0.1, 10, some(90), some(90)),
                                 "square_0.1": ("transfer", "square", 0.1, 5000, some(20), some(90))})
    c = check_gradient_masking(sets, (), Rows(preds))
    assert c.passed is False and "GRADIENT MASKING" in c.detail


def test_gradient_masking_needs_more_than_sampling_noise():
    """The query attack runs on the first rows only: a query exactly as strong as PGD, on a subset
    whose accuracy happens to be lower, is no evidence of masking (compared per sample)."""
    from edgerobust.edge.scores.query import QueryResult
    from edgerobust.edge.scores.sanity import Rows

    n = 1000
    y = np.zeros(n, int)
    pgd_ok = np.ones(n, bool)
    pgd_ok[:90] = False  # the first 200 rows: 55% standing; all rows: 91%
    pgd_ok[200:200 + 0] = False
    sets, preds = _report(n, y, {"pgd_0.1": ("transfer", "pgd", 0.1, 10, pgd_ok, pgd_ok)})
    q = QueryResult("square", 0.1, "0.1", 1000, np.arange(200))
    for role in ("base", "deployed"):
        q.clean_correct[role] = np.ones(200, bool)
        q.adv_correct[role] = pgd_ok[:200].copy()  # breaks exactly what PGD breaks
    robust = robust_accuracies(sets, preds, query=[q])
    c = check_gradient_masking(sets, robust, Rows(preds))
    assert c.passed is True, c.detail
    q.adv_correct["base"][100:160] = False  # now it breaks 60 rows PGD left standing
    robust = robust_accuracies(sets, preds, query=[q])
    c = check_gradient_masking(sets, robust, Rows(preds))
    assert c.passed is False and "base at eps 0.1" in c.detail


def test_a_transferred_autoattack_figure_is_graded_for_the_base_only():
    n = 50
    y = np.zeros(n, int)
    some = lambda k: np.arange(n) < k  # noqa: E731
    groups = {f"{k}_0.05": ("transfer", k, 0.05, v, some(20), some(40)) for k, (_, v) in AUTOATTACK_STANDARD.items()}
    sets, preds = _report(n, y, groups)
    for s in sets[1:]:  # the budgets where the audit reads them
        key, v = AUTOATTACK_STANDARD[s.attack["attack"]]
        s.attack["params"] = {key: v}
    (ra,) = robust_accuracies(sets, preds)
    assert ra.grades["base"] == "autoattack" and ra.grades["deployed"] == "upper-bound"
    assert ra.grade == "upper-bound"
    from edgerobust.edge.render.headline import robust_sentences

    text = " ".join(robust_sentences((ra,)))
    assert "AutoAttack-grade for the base" in text and "transfer (AutoAttack-grade)" not in text


@pytest.fixture(scope="module")
def rounding_sets(zoo_checkpoint, tmp_path_factory):
    """A model whose forward rounds its input to 4 levels: its gradients are zero everywhere, so
    PGD crafted on it moves nothing, while a query attack sees its real decision boundary."""
    import torch

    from edgerobust.edge.files.bundle import EvalSet
    from edgerobust.edge.files.npzio import sha256_file
    from edgerobust.workstation.attacks import craft_sets, make_specs
    from edgerobust.workstation.data.sources import load_data, split
    from edgerobust.workstation.model.export import export_onnx
    from edgerobust.workstation.model.load import load_model
    from edgerobust.workstation.model.nets import PixelModel

    class Rounding(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(torch.round(x * 3) / 3)

    out = tmp_path_factory.mktemp("rounding")
    loaded = load_model(zoo_checkpoint.path)
    spec = loaded.input_spec
    model = Rounding(PixelModel(loaded.model, spec["mean"], spec["std"])).eval()
    ev = split(load_data("digits"), seed=0, eval_samples=60).eval
    EvalSet(x=ev.x, y=ev.y).save(out / "eval.npz")
    export_onnx(model, torch.from_numpy(ev.x[:1]), out / "base.onnx")
    craft_sets(model, EvalSet.load(out / "eval.npz"), list(make_specs("pgd", "0.2", steps=10)), out / "adv",
               base_sha256=sha256_file(out / "base.onnx"), eval_sha256=sha256_file(out / "eval.npz"))
    return out


def test_query_attack_flags_gradient_masking_where_pgd_sees_nothing(rounding_sets, quick_measure):
    pytest.importorskip("art")
    from edgerobust.edge.audit import AuditConfig, audit
    from edgerobust.edge.render.headline import headline
    from edgerobust.edge.scores.query import QueryConfig

    out = rounding_sets
    rep = audit(AuditConfig(model=out / "base.onnx", baseline=out / "base.onnx", eval_set=out / "eval.npz",
                            adv_sets=(out / "adv" / "pgd_0.2.npz",), profile="laptop-cpu-1thread",
                            measure_memory=False, show_progress=False,
                            query=QueryConfig(eps=("0.2",), queries=200, samples=60)))
    by = {(r.threat, r.eps_text): r for r in rep.robust}
    pgd, query = by[("transfer", "0.2")], by[("query", "0.2")]
    assert pgd.models["base"].value > 0.5  # zero gradients: PGD leaves most samples standing
    assert query.models["base"].value < pgd.models["base"].value - 0.2  # the boundary is right there
    masking = next(c for c in rep.sanity if c.name == "gradient masking")
    assert masking.passed is False and "base at eps 0.2" in masking.detail
    # compress saw it too, as it crafted the set: the audit repeats its figures
    assert "at compress time" in masking.detail and "pgd_0.2: zero input gradient for 100% of 60" in masking.detail
    assert any(w.startswith("sanity check failed (gradient masking)") for w in rep.warnings)
    assert "SANITY CHECKS FAILED (gradient masking" in headline(rep)
    q = rep.query[0]
    assert q["n"] == 60 and q["queries_used"]["base"] > 60 and q["seconds"]["base"] > 0


def _issue_34(whitebox: bool, source: str = "whitebox-int8"):
    """Issue 34's audit in miniature (60 rows, eps 0.05): AutoAttack sets crafted on the base leave it 14 rows
    (23.3%), the deployed model 40 transferred; a short query attack leaves the base 49 (81.7%), the deployed
    model 35; ``whitebox``: the same AutoAttack components crafted on the deployed int8 model (``source``
    whitebox-fp32: on its fp32 twin) leave it 20."""
    from edgerobust.edge.scores.query import QueryResult

    n = 60
    some = lambda k: np.arange(n) < k  # noqa: E731
    groups = {f"{k}_0.05": ("transfer", k, 0.05, v, some(14), some(40)) for k, (_, v) in AUTOATTACK_STANDARD.items()}
    if whitebox:
        groups.update({f"{source}/{k}_0.05": (source, k, 0.05, v, some(50), some(20))
                       for k, (_, v) in AUTOATTACK_STANDARD.items()})
    sets, preds = _report(n, np.zeros(n, int), groups)
    q = QueryResult("square", 0.05, "0.05", 300, np.arange(n))
    q.clean_correct = {"base": some(n), "deployed": some(n)}
    q.adv_correct = {"base": some(49), "deployed": some(35)}
    return robust_accuracies(sets, preds, deployed_variant="int8", query=[q])


def test_every_attack_withholds_a_delta_between_unlike_attacks():
    from edgerobust.edge.render.headline import robust_sentences
    from edgerobust.edge.scores.robust import COMBINED

    robust = _issue_34(whitebox=False)
    by = {r.threat: r for r in robust}
    assert set(by) == {"transfer", "query", COMBINED}
    every = by[COMBINED]
    # per sample: the base falls to AutoAttack on 46 rows, the deployed model to the query attack on 25
    assert (every.models["base"].k, every.models["deployed"].k, every.n) == (14, 35, 60)
    assert every.strongest == {"base": "autoattack", "deployed": "query"}
    assert every.grades == {"base": "autoattack", "deployed": "upper-bound"} and every.grade == "upper-bound"
    assert not every.like and every.delta is None and every.to_dict()["delta"] is None
    assert "the base faced APGD (100)/APGD-T (100)/FAB-T (100)/SQUARE (5000), the deployed model no set" in every.note
    assert by["query"].delta == pytest.approx(-14 / 60) and by["transfer"].delta == pytest.approx(26 / 60)
    text = " ".join(robust_sentences(robust))
    assert text.startswith(
        "Robust accuracy against every attack (per-sample worst case over the APGD/APGD-T/FAB-T/SQUARE transfer sets "
        "(crafted on the base) and the query attack square (300 iterations) on each runtime, on the 60 evaluation "
        "samples all ran on; upper bound; the strongest attack faced: deployed a query attack on its own runtime; "
        "base AutoAttack crafted on itself): eps 0.05 deployed 58.3% vs base 23.3% (no like-for-like Δ). No "
        "like-for-like Δ: crafted on itself, the base faced")
    assert ("At eps 0.05 the transfer sets (the same sets, crafted on the base, on each model) say +43.3 pp; the same "
            "query attack (300 iterations) on each runtime, −23.3 pp (McNemar p") in text
    assert "the query attack is the weaker one on the base (81.7% standing, 23.3% under the sets crafted on it)" in text
    assert "trust the query figure" not in text
    assert "transfer (upper bound from APGD/APGD-T/FAB-T/SQUARE, transferred; AutoAttack-grade for the base; Δ: the " \
           "same sets, crafted on the base, on each model): eps 0.05 deployed 66.7% vs base 23.3% (+43.3 pp)" in text
    assert "query (square (300 iterations); Δ: the same query attack (300 iterations) on each runtime)" in text


def test_every_attack_gives_a_delta_like_for_like_with_white_box_sets():
    from edgerobust.edge.render.headline import worst_sentence
    from edgerobust.edge.scores.robust import COMBINED

    robust = _issue_34(whitebox=True)
    every = next(r for r in robust if r.threat == COMBINED)
    # the base: AutoAttack on itself (14), the deployed model: AutoAttack on itself (20); the query and the
    # sets crafted on the other model break nothing more
    assert (every.models["base"].k, every.models["deployed"].k) == (14, 20)
    assert every.like and every.delta == pytest.approx(6 / 60)
    assert every.grade == "autoattack" and every.strongest == {"base": "autoattack", "deployed": "autoattack"}
    text = worst_sentence(robust)
    assert "upper bound" not in text and text.endswith(
        "AutoAttack-grade; the strongest attack faced: deployed "
        "AutoAttack crafted on itself; base AutoAttack crafted on itself): eps 0.05 deployed 33.3% vs base 23.3% "
        "(+10.0 pp: each model against every set (each attack also crafted on itself) and the query attack square "
        "(300 iterations) on its own runtime).")


def test_every_attack_on_sets_crafted_on_the_fp32_twin_claims_no_like_for_like_delta():
    """Only whitebox-fp32 sets, the deployed model int8: they were crafted on its fp32 twin, not on itself."""
    from edgerobust.edge.render.headline import worst_sentence
    from edgerobust.edge.scores.robust import COMBINED, STRENGTH

    robust = _issue_34(whitebox=True, source="whitebox-fp32")
    by = {r.threat: r for r in robust}
    every = by[COMBINED]
    # the figures are the same per-sample worst case over every set as when crafted on the int8 model itself
    assert (every.models["base"].k, every.models["deployed"].k, every.n) == (14, 20, 60)
    assert not every.like and every.delta is None and every.compares is None
    assert every.to_dict()["delta"] is None
    assert every.strongest == {"base": "autoattack", "deployed": "autoattack-twin"}
    assert STRENGTH["autoattack-twin"] == "AutoAttack crafted on its fp32 twin"
    assert every.grades == {"base": "autoattack", "deployed": "upper-bound"} and every.grade == "upper-bound"
    assert "crafted on its fp32 twin" in every.note and "the deployed model no set (APGD (100)" in every.note
    text = worst_sentence(robust)
    assert "the strongest attack faced: deployed AutoAttack crafted on its fp32 twin; base AutoAttack crafted on " \
           "itself): eps 0.05 deployed 33.3% vs base 23.3% (no like-for-like Δ)." in text
    assert "deployed AutoAttack crafted on itself" not in text and "each attack also crafted on itself" not in text
    white = by["white-box"]
    assert white.compares == ("the base against the attacks crafted on itself, the deployed model against the same "
                              "attacks crafted on its fp32 twin")
