"""Fuzzing the readers of bundle files: manifest, npz sets, profile TOML, checkpoints. Random and
mutated bytes give either a valid object or an EdgeRobustError (one clear message), never another
exception (tests/fuzzkit.py: the property, the strategies)."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgerobust.edge.files.bundle import AdvSet, EvalSet, read_manifest
from edgerobust.edge.files.npzio import load_npz
from edgerobust.edge.runtime.profile_schema import DeviceProfile
from edgerobust.edge.runtime.profiles import list_profiles, load_profile, profile_text
from edgerobust.workstation.model.load import LoadedModel, load_model
from fuzzkit import FUZZ, check_reader, examples, inputs, mutated, odd_values


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
        check_reader(read_manifest, data, "manifest.json", dict)

    run()


@st.composite
def manifest_with_odd_values(draw, seed: bytes):
    """A valid manifest with one top-level value replaced by arbitrary JSON."""
    m = json.loads(seed)
    key = draw(st.sampled_from(sorted(m) + ["extra"]))
    m[key] = draw(odd_values())
    return json.dumps(m).encode()


def test_manifest_reader_odd_values(seeds):
    @FUZZ
    @given(manifest_with_odd_values(seeds["manifest"]))
    def run(data):
        check_reader(read_manifest, data, "manifest.json", dict)

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
        check_reader(reader, data, "set.npz", valid)

    run()


def test_profile_reader(seeds):
    @FUZZ
    @given(st.one_of(st.binary(max_size=512), mutated(seeds["profile"]),
                     st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
    def run(data):
        check_reader(load_profile, data, "p.toml", DeviceProfile)

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
    @examples(0.5)
    @given(st.one_of(inputs(seeds["ckpt"]), checkpoint_with_mutated_pickle(seeds["ckpt"])))
    def run(data):
        check_reader(load_model, data, "m.pt", LoadedModel)

    run()
