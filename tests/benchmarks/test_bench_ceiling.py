"""benchmarks/ceiling.py --forms on a tiny real bundle: every int8 form is written as it says (read back
from the file), timed beside fp32 and checked for top-1 agreement; a form far below today's is flagged."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import ceiling  # noqa: E402
from onnx_models import make_bundle  # noqa: E402

# what each form's file must say about itself (the tiny model is two Gemms)
READ_BACK = {
    "today": ("Gemm 2", "weights 2 s8 per-channel sym", "activations u8"),
    "today-plain": ("Gemm 2", "weights 2 s8 per-channel sym", "activations u8"),
    "bundle": ("Gemm 2", "weights 2 s8"),  # the fixture quantizes its own way
    "qdq-asym-w": ("Gemm 2", "s8 per-channel", "activations u8"),
    "qdq-tensor": ("Gemm 2", "weights 2 s8 per-tensor sym", "activations u8"),
    "qdq-tensor-asym-w": ("Gemm 2", "s8 per-tensor asym", "activations u8"),
    "qdq-u8u8": ("Gemm 2", "weights 2 u8 per-channel asym", "activations u8"),
    "qdq-s8s8": ("Gemm 2", "weights 2 s8 per-channel sym", "activations s8"),
    "qdq-s8s8-sym": ("Gemm 2", "weights 2 s8 per-channel sym", "activations s8"),
    "qop": ("QGemm 2", "activations u8"),
    "qop-tensor": ("QGemm 2", "activations u8"),
    "dynamic": ("MatMulInteger 2", "s8", "activations u8"),
    "dynamic-u8u8": ("MatMulInteger 2", "weights 2 u8 per-tensor asym", "activations u8"),
    # the GEMM route rewrites convolutions only: on two Gemms the row says so, with no figure
    "gemm-late": None,
    "gemm-all": None,
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("b"), n_eval=48, attacks=())


@pytest.fixture(scope="module")
def forms(bundle, tmp_path_factory):
    return ceiling.build_forms(list(ceiling.FORMS), bundle, tmp_path_factory.mktemp("forms"), log=lambda m: None)


def test_every_form_has_a_read_back_expectation():
    assert set(READ_BACK) == set(ceiling.FORMS) and ceiling.TODAY in ceiling.FORMS


@pytest.mark.parametrize("name", list(ceiling.FORMS), ids=list(ceiling.FORMS))
def test_each_form_is_written_as_it_says(forms, name):
    files, failed = forms
    if READ_BACK[name] is None:
        assert failed[name].startswith("not written: ValueError: GEMM route not applied: no convolution qualifies")
        return
    assert name not in failed, failed.get(name)
    text = ceiling.written_as(files[name])
    for part in READ_BACK[name]:
        assert part in text, (name, text)


def test_forms_timed_beside_fp32_with_agreement(bundle):
    res = ceiling.measure_forms(bundle, ["today", "qdq-tensor", "dynamic"], rounds=2, log=lambda m: None)
    rows = {r["key"]: r for r in res["rows"]}
    assert list(rows) == ["pruned fp32", "today", "qdq-tensor", "dynamic"]
    assert res["eval_rows"] == 48 - ceiling.CALIB and res["rounds"] == 2
    assert rows["pruned fp32"]["agreement"] == 1.0 and rows["pruned fp32"]["x_fp32"]["median"] == 1.0
    assert rows["today"]["x_today"]["median"] == 1.0
    for r in rows.values():
        assert r["status"] is None and r["p50_ms"]["n"] == 2 and 0.0 <= r["agreement"] <= 1.0
        assert r["rel_error"] < 0.2, r  # int8 of a tiny MLP stays close to fp32
    text = ceiling.render_forms(res)
    assert text.splitlines()[0].startswith("| form | written as | p50 ms | x pruned fp32 | x today |")
    assert "| today: QDQ U8S8, per-channel symmetric weights, space-to-depth stem | Gemm 2" in text


def test_a_form_far_below_todays_agreement_is_flagged():
    rows = [{"key": "pruned fp32", "agreement": 1.0}, {"key": "today", "agreement": 0.99},
            {"key": "qop", "agreement": 0.975}, {"key": "dynamic", "agreement": 0.96},
            {"key": "qdq-u8u8", "status": "not written: ValueError"}]
    flags = {r["key"]: r["flag"] for r in ceiling.flag(rows)}
    assert flags == {"pruned fp32": "", "today": "", "qop": "", "dynamic": "agreement below today's",
                     "qdq-u8u8": ""}


def test_a_bundle_without_rows_to_check_on_is_one_message(tmp_path):
    small = make_bundle(tmp_path, n_eval=ceiling.CALIB, attacks=())
    with pytest.raises(SystemExit, match="eval.npz has 16 rows or fewer"):
        ceiling.measure_forms(small, ["today"], rounds=1, log=lambda m: None)
