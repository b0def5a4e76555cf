"""The bad-input gauntlet: every failure a user can cause, through the real CLI.

Each case builds one bad input in tmp_path, runs `edgerobust ...` in-process and asserts exit
code 2, one message with a specific phrase, no traceback, and that nothing under tmp_path (the
inputs, the bundle copy, the would-be output folder) was written or changed.
"""
from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from _fixtures_gauntlet import (assert_user_error, cli, copy_bundle, fast_profile, flat, rewrite_json,
                                save_npz_raw, snapshot, tiny_onnx)
from edgerobust.edge.files.bundle import AdvSet, finalize_manifest, read_manifest


@dataclass
class Ctx:
    tmp: Path
    ckpt: Path
    sd: Path
    bundle_src: Path
    _bundle: Path | None = None

    @property
    def bundle(self) -> Path:
        """A private copy of the session bundle, made on first use."""
        if self._bundle is None:
            self._bundle = copy_bundle(self.bundle_src, self.tmp / "bundle")
        return self._bundle

    @property
    def model(self) -> Path:
        return self.bundle / "model.onnx"

    @property
    def profile(self) -> Path:
        p = self.tmp / "fast.toml"
        return p if p.exists() else fast_profile(p)

    def compress(self, model, *extra):
        return ["compress", model, "--out", self.tmp / "out", "--finetune-epochs", "0", "--max-prune-drop", "100", "--eval-samples", "32",
                "--calib-samples", "16", *extra]

    def data(self, *extra, **arrays):
        path = save_npz_raw(self.tmp / "data.npz", **arrays)
        return self.compress(self.ckpt, "--data", f"npz:{path}", *extra)

    def audit(self, *extra, model=None):
        return ["audit", model or self.model, "--profile", self.profile, "--no-memory", *extra]

    def refinalize(self) -> None:
        finalize_manifest(self.bundle, read_manifest(self.bundle / "manifest.json"))

    def adv(self) -> Path:
        return self.bundle / "adv" / "fgsm_8-255.npz"

    def rewrite_adv(self, **meta) -> None:
        a = AdvSet.load(self.adv())
        a.meta.update(meta)
        a.save(self.adv())
        self.refinalize()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


class Evil:
    """Unpickling it creates the file 'pwned' beside it: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(t: Ctx) -> Path:
    torch.save(Evil(t.tmp / "pwned"), t.tmp / "evil.pt")
    return t.tmp / "evil.pt"


def _torchscript(t: Ctx) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(nn.Sequential(nn.Linear(3, 2))).save(str(t.tmp / "ts.pt"))
    return t.tmp / "ts.pt"


def _zip(t: Ctx) -> Path:
    with zipfile.ZipFile(t.tmp / "m.pt", "w") as z:
        z.writestr("readme.txt", "not a model")
    return t.tmp / "m.pt"


def _future_ckpt(t: Ctx) -> Path:
    obj = torch.load(t.ckpt, weights_only=True)
    obj["version"] = 99
    torch.save(obj, t.tmp / "future.pt")
    return t.tmp / "future.pt"


def _folder_data(t: Ctx, sizes) -> Path:
    from PIL import Image

    root = t.tmp / "images"
    for i, s in enumerate(sizes):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((s, s), 128, np.uint8)).save(root / f"c{i % 2}" / f"{i}.png")
    return root


def _imgs(n=40, c=1, s=16, dtype=np.uint8, seed=0):
    x = np.random.default_rng(seed).integers(0, 256, (n, c, s, s))
    return x.astype(dtype)


def _labels(n=40, k=10):
    return np.arange(n) % k


def _profile(t: Ctx, text: str) -> Path:
    p = t.tmp / "bad.toml"
    p.write_text(text)
    return p


CPU = '[[providers]]\nname = "CPUExecutionProvider"\n'

# id -> build(ctx) -> (argv, phrases)
CASES = {
    # ----------------------------------------------------------------------------- model files
    "model-missing": lambda t: (t.compress(t.tmp / "nope.pt"), ["does not exist"]),
    "model-empty": lambda t: (t.compress(_write(t.tmp / "m.pt", b"")), ["is empty"]),
    "model-truncated": lambda t: (t.compress(_write(t.tmp / "m.pt", t.ckpt.read_bytes()[: t.ckpt.stat().st_size // 2])),
                                  ["not a readable PyTorch model file"]),
    "model-random-bytes": lambda t: (t.compress(_write(t.tmp / "m.pt", np.random.default_rng(0).bytes(4096))),
                                     ["not a readable PyTorch model file"]),
    "model-zip-not-torch": lambda t: (t.compress(_zip(t)), ["zip archive but not a PyTorch model file"]),
    "model-pickle-runs-code": lambda t: (t.compress(_evil(t)), ["needs code to be run", "--trust-model"]),
    "model-torchscript": lambda t: (t.compress(_torchscript(t)), ["is a TorchScript archive"]),
    "model-onnx": lambda t: (t.compress(tiny_onnx(t.tmp / "m.onnx")), ["is an ONNX model"]),
    "model-folder": lambda t: (t.compress(t.tmp), ["is a folder, not a model file"]),
    "model-not-a-model": lambda t: (t.compress(_save(t, {"a": 1})), ["holds a dict, not a model or a state_dict"]),
    "model-future-checkpoint": lambda t: (t.compress(_future_ckpt(t)), ["checkpoint of version 99"]),
    "state-dict-without-arch": lambda t: (t.compress(t.sd), ["is a state_dict", "--arch"]),
    "state-dict-wrong-arch": lambda t: (t.compress(t.sd, "--arch", "digits-resnet"), ["do not fit --arch digits-resnet"]),
    "state-dict-wrong-num-classes": lambda t: (t.compress(t.sd, "--arch", "digits-cnn", "--num-classes", "5"),
                                               ["do not fit --arch digits-cnn with 5 classes", "shape mismatches"]),
    "state-dict-unknown-arch": lambda t: (t.compress(t.sd, "--arch", "zoo:nope"), ["Unknown zoo model 'nope'"]),
    "checkpoint-num-classes-contradiction": lambda t: (t.compress(t.ckpt, "--num-classes", "5"),
                                                       ["contradicts the checkpoint"]),
    # ------------------------------------------------------------------------------------ data
    "data-empty": lambda t: (t.data(x=_imgs(0), y=_labels(0)), ["holds no images"]),
    "data-nan": lambda t: (t.data(x=np.where(_imgs() > 250, np.nan, 0.5).astype(np.float32), y=_labels()),
                           ["NaN or infinite"]),
    "data-inf": lambda t: (t.data(x=np.full((40, 1, 16, 16), np.inf, np.float32), y=_labels()), ["NaN or infinite"]),
    "data-bool-dtype": lambda t: (t.data(x=_imgs() > 128, y=_labels()), ["images must be numeric; got dtype bool"]),
    "data-rank-2": lambda t: (t.data(x=_imgs().reshape(40, -1), y=_labels()), ["must have 3 or 4 dimensions"]),
    "data-float-out-of-range": lambda t: (t.data(x=_imgs(dtype=np.float32), y=_labels()),
                                          ["float images must be in [0, 1]"]),
    "data-labels-beyond-model": lambda t: (t.data(x=_imgs(), y=_labels(k=15)),
                                           ["has 15 classes but the model outputs 10"]),
    "data-labels-negative": lambda t: (t.data(x=_imgs(), y=_labels() - 1), ["labels must be 0..K-1"]),
    "data-labels-fractional": lambda t: (t.data(x=_imgs(), y=_labels() + 0.5), ["labels must be whole numbers"]),
    "data-labels-count": lambda t: (t.data(x=_imgs(), y=_labels(39)), ["one label per image"]),
    "data-pickled-npz": lambda t: (t.data(x=np.array([object()] * 4, dtype=object), y=_labels(4)),
                                   ["contains pickled Python objects"]),
    "data-missing-labels": lambda t: (t.data(x=_imgs()), ["lacks the array(s) y"]),
    "data-not-npz": lambda t: (t.compress(t.ckpt, "--data", f"npz:{_write(t.tmp / 'd.npz', b'PK garbage')}"),
                               ["is not a readable .npz file", "not a zip of .npy arrays"]),
    "data-one-sample": lambda t: (t.data(x=_imgs(1), y=_labels(1)), ["at least 2 are needed"]),
    "data-shape-vs-checkpoint": lambda t: (t.data(x=_imgs(s=8), y=_labels()),
                                           ["images of shape (1, 8, 8)", "trained on (1, 16, 16)"]),
    "data-shape-model-rejects": lambda t: (
        t.compress(t.sd, "--arch", "digits-cnn", "--data", f"npz:{save_npz_raw(t.tmp / 'd.npz', x=_imgs(c=3), y=_labels())}"),
        ["The model rejects inputs of shape (3, 16, 16)"]),
    "data-folder-mixed-sizes": lambda t: (t.compress(t.ckpt, "--data", f"folder:{_folder_data(t, [16, 16, 12, 16])}"),
                                          ["have mixed sizes", "--image-size"]),
    "data-folder-no-classes": lambda t: (t.compress(t.ckpt, "--data", f"folder:{_mkdir(t.tmp / 'empty')}"),
                                         ["has no class sub-folders"]),
    "data-folder-missing": lambda t: (t.compress(t.ckpt, "--data", f"folder:{t.tmp / 'nope'}"), ["does not exist"]),
    "data-unknown-source": lambda t: (t.compress(t.ckpt, "--data", "[/x]"), ["Unknown data source '[/x]'"]),
    # ------------------------------------------------------------------------------------ ONNX
    "onnx-truncated": lambda t: (t.audit("--no-verify", model=_write(t.model, t.model.read_bytes()[:3000])),
                                 ["onnxruntime cannot load the deployed model"]),
    "onnx-not-onnx": lambda t: (["profile", _write(t.tmp / "m.onnx", b"\x00garbage" * 50), "--profile", t.profile],
                                ["onnxruntime cannot load the model"]),
    "onnx-missing": lambda t: (["profile", t.tmp / "nope.onnx", "--profile", t.profile], ["does not exist"]),
    "onnx-unknown-op-domain": lambda t: (["profile", tiny_onnx(t.tmp / "m.onnx", op=("Frobnicate", "com.example")),
                                          "--profile", t.profile], ["uses an operator this onnxruntime cannot run", "com.example:Frobnicate"]),
    "onnx-unknown-op": lambda t: (t.audit("--no-verify", model=tiny_onnx(t.model, op=("NoSuchOp", ""))),
                                  ["deployed model", "uses an operator this onnxruntime cannot run", "NoSuchOp"]),
    "onnx-input-name-mismatch": lambda t: (t.audit("--no-verify", model=tiny_onnx(t.model, input_name="pixels")),
                                           ["takes an input named 'pixels'", "the bundle manifest says 'input'"]),
    "onnx-input-shape-mismatch": lambda t: (t.audit("--no-verify", model=tiny_onnx(t.model, shape=(None, 3, 16, 16))),
                                            ["takes input shape [N, 3, 16, 16]", "says [N, 1, 16, 16]"]),
    # --------------------------------------------------------------------------------- bundles
    "bundle-tampered-file": lambda t: (t.audit(model=_append(t.bundle / "model_fp32.onnx")),
                                       ["does not match the bundle's manifest", "--no-verify"]),
    "bundle-adv-other-model": lambda t: (_then(t.rewrite_adv(base_sha256="0" * 64), t.audit()),
                                         ["was crafted on another base model"]),
    "bundle-adv-other-eval-set": lambda t: (_then(t.rewrite_adv(eval_sha256="1" * 64), t.audit()),
                                            ["was crafted on another evaluation set"]),
    "bundle-adv-pickled": lambda t: (_then(_pickled_adv(t), t.audit()), ["contains pickled Python objects"]),
    "bundle-adv-idx-out-of-range": lambda t: (_then(_adv_idx(t), t.audit()), ["indexes rows outside the eval set"]),
    "bundle-adv-no-metadata": lambda t: (_then(_adv_nometa(t), t.audit()), ["carries no metadata"]),
    "bundle-eval-truncated": lambda t: (_then(_truncate_eval(t), t.audit()), ["is not a readable .npz file"]),
    "bundle-newer-schema": lambda t: (_then(rewrite_json(t.bundle / "manifest.json", schema_version=2), t.audit()),
                                      ["uses schema version 2", "Upgrade edgerobust"]),
    "bundle-missing-file": lambda t: (_then(t.adv().unlink(), t.audit()), ["is missing 'adv/fgsm_8-255.npz'"]),
    "bundle-manifest-not-json": lambda t: (_then(_write(t.bundle / "manifest.json", b"{\"kind\": "), t.audit()),
                                           ["is not valid JSON"]),
    "bundle-manifest-not-ours": lambda t: (_then(_write(t.bundle / "manifest.json", b"{}"), t.audit()),
                                           ["is not an edgerobust bundle manifest"]),
    "bundle-manifest-bad-shape": lambda t: (_then(_manifest_input(t, shape="abc"), t.audit()),
                                            ["has an invalid 'input.shape'"]),
    "bundle-manifest-path-escapes": lambda t: (_then(_manifest_models(t, base="../../base.onnx"), t.audit()),
                                               ["has an invalid 'models.base'", "points outside the bundle folder"]),
    "bundle-manifest-model-not-a-name": lambda t: (_then(_manifest_models(t, base=5), t.audit()),
                                                   ["has an invalid 'models.base'"]),
    "bundle-no-manifest": lambda t: (_then((t.bundle / "manifest.json").unlink(), t.audit()),
                                     ["There is no bundle (manifest.json)"]),
    # -------------------------------------------------------------------------------- profiles
    "profile-malformed-toml": lambda t: (t.audit("--profile", _profile(t, "[[providers]\nname = 'x'")),
                                         ["is not valid TOML"]),
    "profile-unknown-field": lambda t: (t.audit("--profile", _profile(t, CPU + "[sesion]\nx = 1\n")),
                                        ["field 'sesion' is not a known field"]),
    "profile-unknown-provider": lambda t: (t.audit("--profile", _profile(t, '[[providers]]\nname = "FooExecutionProvider"\n')),
                                           ["unknown execution provider 'FooExecutionProvider'"]),
    "profile-negative-threads": lambda t: (t.audit("--profile", _profile(t, CPU + "[session]\nintra_op_threads = -2\n")),
                                           ["session.intra_op_threads", "must be at least 0"]),
    "profile-negative-budget": lambda t: (t.audit("--profile", _profile(t, CPU + "[budgets]\nlatency_ms_p50 = -1\n")),
                                          ["budgets.latency_ms_p50", "must be greater than 0"]),
    "profile-zero-batch": lambda t: (t.audit("--profile", _profile(t, CPU + "[measure]\nbatch_sizes = [0]\n")),
                                     ["measure.batch_sizes", "positive integers"]),
    "profile-table-not-table": lambda t: (t.audit("--profile", _profile(t, "session = 3\n" + CPU)),
                                          ["must be a table ([session])"]),
    "audit-a-bundle-folder": lambda t: (t.audit(model=t.bundle), ["is a folder", "model.onnx"]),
    "profile-missing-file": lambda t: (t.audit("--profile", t.tmp / "nope.toml"), ["does not exist"]),
    "profile-unknown-name": lambda t: (t.audit("--profile", "no-such-device"), ["no shipped device profile named"]),
    "profile-provider-not-here": lambda t: (t.audit("--profile", _profile(t, '[[providers]]\nname = "CUDAExecutionProvider"\n')),
                                            ["asks for CUDAExecutionProvider", "--allow-fallback"]),
    # ----------------------------------------------------------------------------------- flags
    "sparsity-zero": lambda t: (t.compress(t.ckpt, "--sparsity", "0"), ["--sparsity must be strictly between 0 and 1"]),
    "sparsity-one": lambda t: (t.compress(t.ckpt, "--sparsity", "1"), ["--sparsity must be strictly between 0 and 1"]),
    "sparsity-negative": lambda t: (t.compress(t.ckpt, "--sparsity", "-0.5"), ["strictly between 0 and 1"]),
    "eps-negative": lambda t: (t.compress(t.ckpt, "--attacks", "fgsm", "--eps", "-1/255"), ["eps must be >= 0"]),
    "eps-unparseable": lambda t: (t.compress(t.ckpt, "--attacks", "fgsm", "--eps", "8/255,abc"),
                                  ["Cannot read the eps value 'abc'"]),
    "eps-empty-entry": lambda t: (t.compress(t.ckpt, "--attacks", "fgsm", "--eps", "8/255,,4/255"), ["has an empty entry"]),
    "eps-linf-above-one": lambda t: (t.compress(t.ckpt, "--attacks", "fgsm", "--eps", "8"), ["is larger than 1"]),
    "eps-divide-by-zero": lambda t: (["attack", t.ckpt, "--out", t.tmp / "adv", "--eps", "8/0"], ["divides by zero"]),
    "attack-unknown": lambda t: (t.compress(t.ckpt, "--attacks", "fgsm,nope"), ["Unknown attack 'nope'"]),
    "out-under-a-file": lambda t: (["compress", t.ckpt, "--out", _write(t.tmp / "afile", b"x") / "sub", "--finetune-epochs", "0"],
                                   ["Cannot create the output folder"]),
    "attack-out-under-a-file": lambda t: (["attack", t.ckpt, "--out", _write(t.tmp / "afile", b"x") / "sub", "-a", "fgsm", "-n", "8"],
                                          ["Cannot create the output folder"]),
    "out-exists": lambda t: (t.compress(t.ckpt) if _mkdir(t.tmp / "out") else None, ["already exists", "--overwrite"]),
    "mean-without-std": lambda t: (t.compress(t.ckpt, "--mean", "0.5"), ["--mean and --std go together"]),
    "mean-not-numbers": lambda t: (t.compress(t.ckpt, "--mean", "a,b", "--std", "1"), ["--mean must be comma-separated numbers"]),
    "max-int8-drop-negative": lambda t: (t.compress(t.ckpt, "--max-int8-drop", "-1"), ["--max-int8-drop must be >= 0"]),
    "parity-atol-zero": lambda t: (t.compress(t.ckpt, "--parity-atol", "0"), ["--parity-atol must be positive"]),
    "audit-out-is-a-file": lambda t: (t.audit("--out", _write(t.tmp / "afile", b"x")), ["is a file, not a folder"]),
}


def _save(t: Ctx, obj) -> Path:
    torch.save(obj, t.tmp / "m.pt")
    return t.tmp / "m.pt"


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _then(_, value):
    return value


def _append(p: Path) -> Path:
    with open(p, "ab") as f:
        f.write(b"\0")
    return p


def _manifest_input(t: Ctx, **changes) -> None:
    m = json.loads((t.bundle / "manifest.json").read_text())
    m["input"].update(changes)
    (t.bundle / "manifest.json").write_text(json.dumps(m))


def _manifest_models(t: Ctx, **changes) -> None:
    m = json.loads((t.bundle / "manifest.json").read_text())
    m["models"].update(changes)
    (t.bundle / "manifest.json").write_text(json.dumps(m))


def _pickled_adv(t: Ctx) -> None:
    np.savez(t.adv(), x=np.array([object()], dtype=object), y=np.zeros(1, np.int64), idx=np.zeros(1, np.int64))
    t.refinalize()


def _adv_idx(t: Ctx) -> None:
    a = AdvSet.load(t.adv())
    a.idx = a.idx + 1000
    a.save(t.adv())
    t.refinalize()


def _adv_nometa(t: Ctx) -> None:
    a = AdvSet.load(t.adv())
    np.savez(t.adv(), x=a.x, y=a.y, idx=a.idx)
    t.refinalize()


def _truncate_eval(t: Ctx) -> None:
    p = t.bundle / "eval.npz"
    p.write_bytes(p.read_bytes()[:200])
    t.refinalize()


@pytest.fixture
def ctx(tmp_path, gz_ckpt, gz_state_dict, gz_bundle, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    monkeypatch.chdir(work)  # a stray default output (export/...) would land here and be caught
    return Ctx(tmp=work, ckpt=gz_ckpt, sd=gz_state_dict, bundle_src=gz_bundle)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_one_clear_error_and_writes_nothing(case, ctx, gz_ckpt):
    argv, phrases = CASES[case](ctx)
    before, ckpt_before = snapshot(ctx.tmp), gz_ckpt.read_bytes()
    result = cli(*argv)
    assert_user_error(result, *phrases)
    assert snapshot(ctx.tmp) == before, "a failed command wrote or changed files"
    assert gz_ckpt.read_bytes() == ckpt_before


def test_the_gauntlet_has_at_least_40_distinct_inputs():
    assert len(CASES) >= 40


# ------------------------------------------------------------------ the other side of each refusal


def test_trust_model_does_run_the_pickle(ctx):
    """The refusal test above can fail: with --trust-model the same file's code does run."""
    evil = _evil(ctx)
    assert not (ctx.tmp / "pwned").exists()
    result = cli(*ctx.compress(evil, "--trust-model"))
    assert (ctx.tmp / "pwned").exists()
    # it unpickled to a file object, not a model: still one clear error, and no bundle
    assert_user_error(result, "not a torch.nn.Module")
    assert not (ctx.tmp / "out").exists()


def test_no_verify_accepts_a_tampered_file_that_verify_refuses(ctx):
    _append(ctx.bundle / "pruned.pt")  # not used by the audit, so --no-verify can go on
    assert_user_error(cli(*ctx.audit("--out", ctx.tmp / "r1")), "does not match the bundle's manifest")
    assert not (ctx.tmp / "r1").exists()
    result = cli(*ctx.audit("--no-verify", "--out", ctx.tmp / "r2"))
    assert result.exit_code == 0, result.output
    assert (ctx.tmp / "r2" / "report.json").is_file()
    assert "bundle hashes were not checked" in flat(result.output)


def test_internal_bug_keeps_its_traceback_and_another_exit_code(ctx, monkeypatch):
    import edgerobust.edge.runtime.profiles as profiles

    def boom(*a, **k):
        raise ZeroDivisionError("an internal bug")

    monkeypatch.setattr(profiles, "parse_profile", boom)
    result = cli("profiles", "show", ctx.profile)
    assert result.exit_code not in (0, 2)
    assert isinstance(result.exception, ZeroDivisionError)


def test_debug_shows_the_traceback_of_a_user_error(ctx):
    from edgerobust.cli import app
    from edgerobust.errors import ProfileError
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["--debug", "profiles", "show", str(ctx.tmp / "nope.toml")])
    assert isinstance(result.exception, ProfileError)


# ---------------------------------------------------------------------------------- quality gates


@pytest.fixture(scope="module")
def int8_hostile_ckpt(gz_ckpt, tmp_path_factory) -> Path:
    """gz_ckpt with an outlier of 1000 added to one input column of every row of the output layer.

    Every class gets the same extra term, so fp32 predictions do not change; but per-channel int8
    sets each row's scale from the outlier (1000/127), which rounds every other weight of the
    row to 0 and leaves int8 predicting one class. The loss is built into the weights, so it
    does not depend on the CPU's int8 kernels (AVX2 u8s8 saturation or AVX-512 VNNI alike).
    """
    from edgerobust.workstation.model.load import load_model, save_checkpoint

    loaded = load_model(gz_ckpt)
    with torch.no_grad():
        loaded.model.fc.weight[:, 0] += 1000.0
    path = tmp_path_factory.mktemp("int8-hostile") / "hostile.pt"
    save_checkpoint(path, loaded.model, loaded.arch, loaded.num_classes, loaded.input_spec)
    return path


def test_int8_quality_gate_stops_compress_with_the_figures(ctx, int8_hostile_ckpt):
    result = cli(*ctx.compress(int8_hostile_ckpt, "--int8", "--max-int8-drop", "0", "--int8-keep-fp32", "none",
                               "--eval-samples", "200", "--sparsity", "0.2", "--max-prune-drop", "100"))
    text = assert_user_error(result, "int8 lost", "accuracy points against fp32", "--max-int8-drop 0",
                             "No bundle was written", "--calibration entropy")
    m = re.search(r"int8 lost (\d+\.\d) accuracy points .*?(\d+\.\d+)% -> (\d+\.\d+)% on 200 samples", text)
    assert m, text
    assert float(m.group(1)) > 30, text  # far beyond any kernel's rounding: the weights were built to fail
    assert not (ctx.tmp / "out").exists()
    assert not [p for p in ctx.tmp.iterdir() if p.name.startswith(".out.")], "a temporary folder was left"


def test_int8_gate_auto_keeps_the_hostile_layer_in_fp32(ctx, int8_hostile_ckpt):
    """--int8-keep-fp32 auto tries all-int8, then the first layer, then both ends in fp32: only
    the last passes (the outlier is in the last layer), and the manifest records every attempt."""
    result = cli(*ctx.compress(int8_hostile_ckpt, "--int8", "--eval-samples", "200", "--sparsity", "0.2",
                               "--max-prune-drop", "100", "--attacks", "none"))
    assert result.exit_code == 0, result.output
    m = read_manifest(ctx.tmp / "out" / "manifest.json")["metrics"]
    assert [a["keep_fp32"] for a in m["int8_attempts"]] == ["none", "first", "ends"]
    assert m["int8_keep_fp32"] == "ends" and m["int8_drop_points"] <= 2.0
    assert m["int8_attempts"][0]["drop_points"] > 30


def test_parity_gate_stops_compress(ctx):
    result = cli(*ctx.compress(ctx.ckpt, "--parity-atol", "1e-12"))
    assert_user_error(result, "does not match the torch model", "max |logit diff|", "--parity-atol")
    assert not (ctx.tmp / "out").exists()
    assert not [p for p in ctx.tmp.iterdir() if p.name.startswith(".out.")]
