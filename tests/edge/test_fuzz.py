"""Fuzzing the readers of untrusted files: random and mutated bytes give either a valid object or
an EdgeRobustError (one clear message), never another exception."""
from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerobust.edge.files.bundle import AdvSet, EvalSet, read_manifest
from edgerobust.edge.files.npzio import load_npz
from edgerobust.errors import EdgeRobustError
from edgerobust.workstation.model.load import LoadedModel, load_model
from edgerobust.edge.runtime.profiles import list_profiles, load_profile, profile_text
from edgerobust.edge.runtime.profile_schema import DeviceProfile

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@st.composite
def mutated(draw, seed: bytes):
    """``seed`` with a few bytes overwritten, a slice deleted or inserted, and maybe truncated."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 8))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()) and data:
        i = draw(st.integers(0, len(data) - 1))
        del data[i:i + draw(st.integers(1, 64))]
    if draw(st.booleans()):
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(max_size=32))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


def inputs(seed: bytes):
    return st.one_of(st.binary(max_size=2048), mutated(seed))


def _check(reader, data: bytes, name: str, valid: type):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        try:
            result = reader(path)
        except EdgeRobustError as exc:
            assert exc.what  # a message a person can read
            return
        assert isinstance(result, valid), type(result)


@pytest.fixture(scope="module")
def seeds(gz_bundle, gz_ckpt):
    adv = next((gz_bundle / "adv").glob("*.npz"))
    return {"manifest": (gz_bundle / "manifest.json").read_bytes(), "eval": (gz_bundle / "eval.npz").read_bytes(),
            "adv": adv.read_bytes(), "ckpt": gz_ckpt.read_bytes(),
            "profile": profile_text(list_profiles()[0]).encode()}


def test_manifest_reader(seeds):
    @FUZZ
    @given(inputs(seeds["manifest"]))
    def run(data):
        _check(read_manifest, data, "manifest.json", dict)

    run()


@st.composite
def manifest_with_odd_values(draw, seed: bytes):
    """A valid manifest with one top-level value replaced by arbitrary JSON."""
    m = json.loads(seed)
    key = draw(st.sampled_from(sorted(m) + ["extra"]))
    m[key] = draw(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                               lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                               max_leaves=6))
    return json.dumps(m).encode()


def test_manifest_reader_odd_values(seeds):
    @FUZZ
    @given(manifest_with_odd_values(seeds["manifest"]))
    def run(data):
        _check(read_manifest, data, "manifest.json", dict)

    run()


@pytest.mark.parametrize("reader,seed,valid", [
    (lambda p: load_npz(p, ("x", "y")), "eval", tuple),
    (EvalSet.load, "eval", EvalSet),
    (AdvSet.load, "adv", AdvSet),
], ids=["load_npz", "EvalSet.load", "AdvSet.load"])
def test_npz_readers(reader, seed, valid, seeds):
    @FUZZ
    @given(inputs(seeds[seed]))
    def run(data):
        _check(reader, data, "set.npz", valid)

    run()


def test_profile_reader(seeds):
    @FUZZ
    @given(st.one_of(st.binary(max_size=512), mutated(seeds["profile"]),
                     st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
    def run(data):
        _check(load_profile, data, "p.toml", DeviceProfile)

    run()


@st.composite
def checkpoint_with_mutated_pickle(draw, seed: bytes):
    """The checkpoint re-zipped with its data.pkl mutated: reaches torch's restricted unpickler."""
    zin = zipfile.ZipFile(io.BytesIO(seed))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in zin.namelist():
            data = zin.read(name)
            z.writestr(name, draw(mutated(data)) if name.endswith("data.pkl") else data)
    return buf.getvalue()


def test_model_reader(seeds):
    @settings(FUZZ, max_examples=50)
    @given(st.one_of(inputs(seeds["ckpt"]), checkpoint_with_mutated_pickle(seeds["ckpt"])))
    def run(data):
        _check(load_model, data, "m.pt", LoadedModel)

    run()
