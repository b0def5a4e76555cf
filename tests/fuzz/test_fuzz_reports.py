"""Fuzzing the files a user feeds back to edgerobust: a device's calibration (`audit`/`profile` with
`estimate`) and audit report folders given to `compare` (report.json, predictions.npz, a runtimes
comparison's runtimes.json). Seeds are real files the project's own code wrote, mutated at byte level
and structurally; every input gives a valid result or one EdgeRobustError, never another exception, and
nothing is written outside the output folder (tests/fuzzkit.py: the property, the strategies)."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from _fixtures_gauntlet import cli
from edgerobust.edge.compare import CompareConfig, Comparison, compare
from edgerobust.edge.compare import to_json as cmp_json
from edgerobust.edge.estimate.calibrate import Calibration, CalibrateConfig, calibrate, load_calibration, to_json
from edgerobust.edge.estimate.grid import residual_model
from edgerobust.edge.estimate.predict import Estimate, EstimateConfig, estimate
from edgerobust.edge.estimate.kernels import WEIGHTED
from fuzzkit import FUZZ, examples, expect_cli, expect_error, files_under, inputs, mutated, npz_changed, odd_values, \
    replaced, replaced_deep
from onnx_models import write_profile


def json_inputs(doc: dict):
    """A JSON document's bytes mutated, or the document changed structurally (fuzzkit.replaced and through
    lists too), written back as JSON (NaN and Infinity included, as Python's json writes them)."""
    seed = json.dumps(doc).encode()
    structural = st.one_of(replaced(doc), replaced_deep(doc)).map(lambda d: json.dumps(d).encode())
    return st.one_of(inputs(seed), structural, structural)


# =============================================================================================
# calibration files


@pytest.fixture(scope="module")
def cal_seed(tmp_path_factory, tiny_bundle):
    """A real calibration of this host (the quickest: fp32, wall timing, 3% of the grid, one pass), with a
    cache curve and cold fits as a `nodes` calibration records them (so the fuzzer reaches that code too);
    and the models an estimate predicts: a residual conv block and the tiny bundle's MLP."""
    d = tmp_path_factory.mktemp("cal")
    profile = write_profile(d / "fast.toml", batch_sizes=(1,))
    cal = calibrate(CalibrateConfig(profile=str(profile), dtypes=("fp32",), scale=0.03, passes=1, seconds=0.01,
                                    timing="wall", show_progress=False))
    doc = json.loads(json.dumps(to_json(cal)))
    doc["_data"]["cache"] = [[589824.0, 0.0], [1179648.0, 0.287], [4718592.0, 1.0]]
    fits = doc["_data"]["fits"]
    for key in [k for k in fits if k.split("/")[0] in WEIGHTED]:
        fits[f"{key}/cold"] = copy.deepcopy(fits[key])
    (d / "res.onnx").write_bytes(residual_model())
    load_calibration(_write(d / "seed.json", json.dumps(doc).encode()))  # the seed itself reads
    return {"doc": doc, "models": {"base": tiny_bundle / "base.onnx", "deployed": d / "res.onnx"}}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_calibration_reader(cal_seed):
    @FUZZ
    @given(json_inputs(cal_seed["doc"]))
    def run(data):
        with tempfile.TemporaryDirectory() as d:
            path = _write(Path(d) / "cal.json", data)
            expect_error(lambda: load_calibration(path), Calibration, Path(d))

    run()


def test_calibration_through_an_estimate(cal_seed):
    """What `audit`/`profile` with `estimate` call: the calibration read, then every model predicted from it."""
    @examples(0.5)
    @given(json_inputs(cal_seed["doc"]))
    def run(data):
        with tempfile.TemporaryDirectory() as d:
            path = _write(Path(d) / "cal.json", data)
            expect_error(lambda: estimate(EstimateConfig(path, cal_seed["models"])), Estimate, Path(d))

    run()


def test_calibration_through_the_cli(cal_seed):
    """`edgerobust profile MODEL --baseline BASE --estimate cal.json`, in the terminal and as JSON."""
    m = cal_seed["models"]

    @examples(0.05)
    @given(json_inputs(cal_seed["doc"]), st.booleans())
    def run(data, as_json):
        with tempfile.TemporaryDirectory() as d:
            path = _write(Path(d) / "cal.json", data)
            before = files_under(Path(d))
            r = cli("profile", m["deployed"], "--baseline", m["base"], "--estimate", path, *(["--json"] * as_json))
            expect_cli(r, Path(d), before)

    run()


# =============================================================================================
# report folders given to `compare`


def _quick(load):
    """``load`` (a profile loader) with its profiles measuring the fewest timed runs (onnx_models.QUICK_MEASURE)."""
    import dataclasses

    from onnx_models import QUICK_MEASURE

    def quick(name):
        p = load(name)
        return dataclasses.replace(p, measure=dataclasses.replace(p.measure, **QUICK_MEASURE))

    return quick


@pytest.fixture(scope="module")
def report_seed(tiny_bundle, tmp_path_factory):
    """Real audits of one bundle (with a common-corruption set, so version 9's pooled sets are read too): a plain
    audit on laptop-cpu-1thread, and an audit with `runtimes` cpu (its folder: runtimes.json and cpu/), both
    through the CLI with the fewest timed runs."""
    from edgerobust.edge import audit as audit_mod
    from edgerobust.edge.runtime import profiles as profiles_mod
    from edgerobust.workstation.corrupt.sets import CorruptConfig, corrupt_bundle

    d = tmp_path_factory.mktemp("reports")
    bundle = shutil.copytree(tiny_bundle, d / "tiny")
    corrupt_bundle(CorruptConfig(bundle, corruptions="gaussian_noise", corruption_severities="1"))
    with pytest.MonkeyPatch.context() as mp:  # the audits' timings are not what is read here
        for mod in (audit_mod, profiles_mod):  # a plain audit loads its profile in the one, `runtimes` in the other
            mp.setattr(mod, "load_profile", _quick(mod.load_profile))
        for args in (["--profile", "laptop-cpu-1thread", "--out", d / "plain"], ["--runtimes", "cpu", "--out", d / "rt"]):
            r = cli("audit", bundle / "model.onnx", "--no-memory", "--query-attack", "none", *args)
            assert r.exit_code == 0, r.output
    plain, rt = d / "plain", d / "rt"
    compare(CompareConfig((plain, rt)))  # the seeds themselves compare
    return {"plain": plain, "rt": rt, "report": json.loads((plain / "report.json").read_text()),
            "predictions": plain / "predictions.npz", "runtimes": json.loads((rt / "runtimes.json").read_text())}


def odd_arrays(like):
    """Arrays a hand-edited or foreign predictions file may hold in place of ``like``: another dtype (float with
    NaN, bool, text, complex, object), another shape (2-D, a scalar, empty, one short), extreme values."""
    n = len(like)
    return st.sampled_from([
        np.full(n, np.nan, np.float32), np.ones(n, bool), np.array(["a"] * n), np.ones(n, np.complex64),
        np.array([None] * n, dtype=object), np.ones((n, 2), np.int64), np.array(3), np.zeros(0, np.int64),
        like[:-1], np.full(n, np.iinfo(np.int64).max), np.full(n, -1, np.int64), np.full(n, 2 ** 40, np.int64),
        np.full(n, np.inf, np.float32), like.astype(np.float64), like.astype(np.uint8)])


def predictions_changed(path: Path):
    """The seed's predictions.npz with one array replaced by an odd one, deleted or added, or its metadata
    changed (fuzzkit.npz_changed)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return npz_changed(arrays, odd_arrays)


@st.composite
def report_folder(draw, seed: dict):
    """What to write into a copy of the plain audit's folder ({file name: bytes}): report.json changed, or
    predictions.npz, mostly with report.json recording its new sha256 (else compare refuses it first)."""
    if draw(st.booleans()):
        return {"report.json": draw(json_inputs(seed["report"]))}
    files = {"predictions.npz": draw(st.one_of(mutated(seed["predictions"].read_bytes()),
                                               predictions_changed(seed["predictions"])))}
    if draw(st.sampled_from([True, True, True, True, False])):
        doc = copy.deepcopy(seed["report"])
        doc["_data"]["predictions"]["sha256"] = hashlib.sha256(files["predictions.npz"]).hexdigest()
        files["report.json"] = json.dumps(doc).encode()
    return files


def _changed_copy(src: Path, dst: Path, files: dict) -> Path:
    shutil.copytree(src, dst)
    for name, data in files.items():
        (dst / name).write_bytes(data)
    return dst


def test_report_folder_through_compare(report_seed):
    """compare(CompareConfig((changed, other))): a Comparison (and its JSON), or one BundleError/UsageError."""
    @FUZZ
    @given(report_folder(report_seed))
    def run(files):
        with tempfile.TemporaryDirectory() as d:
            changed = _changed_copy(report_seed["plain"], Path(d) / "a", files)
            result = expect_error(lambda: compare(CompareConfig((changed, report_seed["rt"] / "cpu"))), Comparison,
                                  Path(d))
            if result is not None:
                json.dumps(cmp_json(result))

    run()


def test_runtimes_folder_through_compare(report_seed):
    """A runtimes comparison's folder stands for its audits: its runtimes.json changed."""
    @examples(0.5)
    @given(json_inputs(report_seed["runtimes"]))
    def run(data):
        with tempfile.TemporaryDirectory() as d:
            rt = _changed_copy(report_seed["rt"], Path(d) / "rt", {"runtimes.json": data})
            expect_error(lambda: compare(CompareConfig((rt, report_seed["plain"]))), Comparison, Path(d))

    run()


def test_compare_through_the_cli(report_seed):
    """`edgerobust compare A B --out OUT [--json]`: exit 0 or one error, and nothing written outside OUT."""
    @examples(0.1)
    @given(st.one_of(report_folder(report_seed).map(lambda f: ("plain", f)),
                     json_inputs(report_seed["runtimes"]).map(lambda b: ("rt", {"runtimes.json": b}))),
           st.booleans())
    def run(change, as_json):
        which, files = change
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            changed = _changed_copy(report_seed[which], root / "a", files)
            other = shutil.copytree(report_seed["rt" if which == "plain" else "plain"], root / "b")
            before = files_under(root)
            r = cli("compare", changed, other, "--out", root / "out", *(["--json"] * as_json))
            expect_cli(r, root, before, allowed=("out",))

    run()


# Found by fuzzing


def _set_path(doc: dict, path: tuple, value) -> dict:
    """A copy of ``doc`` with the value at ``path`` (keys and list indices) replaced; DELETE removes it."""
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DELETE = object()


@pytest.mark.parametrize("path, value", [
    (("_data",), DELETE), (("_data",), None),  # KeyError, TypeError in from_json
    (("_data", "fits", "conv/fp32", "holdout"), None),  # AttributeError in predict
    (("_data", "fits", "conv/fp32", "coef"), DELETE),  # KeyError in fit.predict_us
    (("_data", "fits", "linear/fp32", "coef"), [1.0]),  # numpy's shapes not aligned
    (("_data", "cache"), [[1.0]]),  # too many values to unpack in timing.cold_share
    (("_data", "host"), []), (("_data", "host", "isa"), ["avx2", []]),  # AttributeError, TypeError in describe()
    (("_data", "other_load"), []),  # TypeError comparing it with 0.1
    (("_data", "fits", "conv/fp32", "coef", 0), float("nan")),  # silently a NaN estimate
    (("_data", "composed", "fp32/x"), [[1.0, 1.0]]),  # ValueError reading the batch size of the band's networks
    (("_data", "fixed_rounds"), [[1.0, 2.0]]),  # a round of the fixed costs that is not (run, node, profiler)
], ids=["no-data", "null-data", "null-holdout", "no-coef", "short-coef", "cache-pair", "host-list", "isa-list",
        "other-load-list", "nan-coefficient", "composed-key", "fixed-rounds"])
def test_found_calibration_with_damaged_fields_is_one_error(cal_seed, tmp_path, path, value):
    from edgerobust.errors import UsageError

    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(_set_path(cal_seed["doc"], path, value)))
    with pytest.raises(UsageError, match="damaged calibration file") as err:
        estimate(EstimateConfig(cal, cal_seed["models"]))
    assert f"field '{path[min(len(path) - 1, 1)]}'" in err.value.why


def test_found_runtimes_json_whose_rows_are_not_objects_is_one_error(report_seed, tmp_path):
    from edgerobust.errors import UsageError

    rt = _changed_copy(report_seed["rt"], tmp_path / "rt", {"runtimes.json": json.dumps(
        {"_type": "x", "_data": {"rows": " "}}).encode()})  # AttributeError: 'str' object has no attribute 'get'
    with pytest.raises(UsageError, match="is not a runtimes comparison edgerobust wrote"):
        compare(CompareConfig((rt, report_seed["plain"])))


@pytest.mark.parametrize("path, value, field", [
    (("measurement",), [], "_data.measurement"),  # AttributeError in _device
    (("measurement", "models", 1, "session"), [], "_data.measurement.models[1].session"),  # the deployed model's
    (("sets", 0, "name"), DELETE, None),  # KeyError reading the set names
    (("sets", 0), [], "_data.sets[0]"),  # TypeError
    (("corruption",), [1], "_data.corruption"),  # AttributeError
    (("provenance",), [1], "_data.provenance"),  # AttributeError in _same_bundle
    (("provenance", "sets", "fgsm_0.02"), [1], "_data.provenance.sets.fgsm_0.02"),  # unhashable in _shared_sets
    (("measurement", "models", 0, "latency", 0, "batch_size"), "1", "_data.measurement.models[0].latency[0]"),
], ids=["measurement-list", "session-list", "set-without-name", "set-list", "corruption-list", "provenance-list",
        "set-sha-list", "batch-size-text"])
def test_found_report_json_with_damaged_fields_is_one_error(report_seed, tmp_path, path, value, field):
    from edgerobust.errors import BundleError

    doc = _set_path(report_seed["report"], ("_data", *path), value)
    a = _changed_copy(report_seed["plain"], tmp_path / "a", {"report.json": json.dumps(doc).encode()})
    with pytest.raises(BundleError) as err:
        compare(CompareConfig((a, report_seed["rt"] / "cpu")))
    assert field is None or f"its field {field}" in err.value.what


def test_found_latency_without_batch_size_is_left_out(report_seed, tmp_path):
    """A latency row without its batch size (KeyError) is left out of the latency table; the rest compares."""
    doc = _set_path(report_seed["report"], ("_data", "measurement", "models", 1, "latency", 0, "batch_size"), DELETE)
    a = _changed_copy(report_seed["plain"], tmp_path / "a", {"report.json": json.dumps(doc).encode()})
    c = compare(CompareConfig((a, report_seed["rt"] / "cpu")))
    mine = [x for x in c.latency if x.device == c.devices[0].label]
    assert mine and all(x.deployed_p50_ms is None for x in mine) and c.agreement


@pytest.mark.parametrize("key, array", [("s0_deployed_margin", np.array(["a"] * 120)),  # UFuncTypeError
                                        ("s0_deployed_pred", np.array(["a"] * 120))],  # ValueError in astype
                         ids=["text-margins", "text-classes"])
def test_found_predictions_with_arrays_of_another_dtype_are_one_error(report_seed, tmp_path, key, array):
    from edgerobust.errors import BundleError

    with np.load(report_seed["predictions"], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key] = array
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    doc = copy.deepcopy(report_seed["report"])
    doc["_data"]["predictions"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    a = _changed_copy(report_seed["plain"], tmp_path / "a", {"predictions.npz": buf.getvalue(),
                                                            "report.json": json.dumps(doc).encode()})
    with pytest.raises(BundleError, match="not one an audit wrote") as err:
        compare(CompareConfig((a, report_seed["rt"] / "cpu")))
    assert key in err.value.why


def test_found_rich_markup_in_a_report_is_shown_as_text(report_seed, tmp_path):
    """A report whose profile and providers read as Rich markup ('[/x]') crashed `compare` with a
    MarkupError (exit 1): names in files are a user's, shown as they are."""
    doc = copy.deepcopy(report_seed["report"])
    doc["_data"]["profile"] = "[/x]"
    for m in doc["_data"]["measurement"]["models"]:
        m["session"]["providers"] = ["[/y]"]
    a = _changed_copy(report_seed["plain"], tmp_path / "a", {"report.json": json.dumps(doc).encode()})
    r = cli("compare", a, report_seed["rt"] / "cpu", "--out", tmp_path / "out")
    assert r.exit_code == 0 and "[/x]" in r.output, r.output[-2000:]


def test_found_rich_markup_in_a_calibration_is_shown_as_text(cal_seed, tmp_path):
    """The same for `profile --estimate` given a calibration whose profile and host read as markup."""
    doc = copy.deepcopy(cal_seed["doc"])
    doc["_data"]["profile"] = "[/x]"
    doc["_data"]["host"] = {k: ("[/z]" if isinstance(v, str) else v) for k, v in doc["_data"]["host"].items()}
    path = _write(tmp_path / "cal.json", json.dumps(doc).encode())
    m = cal_seed["models"]
    r = cli("profile", m["deployed"], "--baseline", m["base"], "--estimate", path)
    assert r.exit_code == 0, r.output[-2000:]
