"""Shared helpers of the bad-input gauntlet, the interrupt tests and the fuzzers: a CliRunner
wrapper, the one-error assertion, and a byte-level snapshot of a folder to prove that a failed
command wrote nothing. The session fixtures (checkpoint, bundles) live in conftest.py.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

def copy_bundle(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    return dest


# ---------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too): relative path -> sha256 of a file, or 'dir'."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def flat(text: str) -> str:
    """Output with Rich's line wrapping undone."""
    return " ".join(text.split())


def cli(*args):
    """Run the real CLI in-process (quiet, wide) and return typer's Result."""
    from edgerobust import ui
    from edgerobust.cli import app

    old = ui.err.width
    ui.err.width = 400  # messages on one line each, so phrases can be matched
    try:
        return CliRunner().invoke(app, ["--quiet", *[str(a) for a in args]])
    finally:
        ui.err.width = old


def assert_user_error(result, *phrases: str) -> str:
    """Exit code 2, one 'error:' message holding every phrase, and no traceback."""
    text = flat(result.output)
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert len(re.findall(r"(?m)^error:", result.output)) == 1, result.output
    for ph in phrases:
        assert flat(ph) in text, f"{ph!r} not in: {text}"
    return text


def fast_profile(path: Path, providers=("CPUExecutionProvider",)) -> Path:
    prov = "\n".join(f'[[providers]]\nname = "{p}"\n' for p in providers)
    path.write_text(f"""description = "fast test profile"
{prov}
[session]
intra_op_threads = 1
[measure]
batch_sizes = [1]
warmup_runs = 1
rounds = 1
runs_per_round = 1
memory_runs = 1
""", encoding="utf-8")
    return path


def tiny_onnx(path: Path, input_name: str = "input", shape=(None, 1, 16, 16), op: tuple[str, str] | None = None,
              classes: int = 10) -> Path:
    """A one-layer ONNX classifier (Flatten -> MatMul), or a graph with one node of an unknown op."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dims = ["N" if d is None else d for d in shape]
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])
    opsets = [helper.make_opsetid("", 17)]
    if op:
        nodes = [helper.make_node(op[0], [input_name], ["logits"], domain=op[1])]
        inits = []
        if op[1]:
            opsets.append(helper.make_opsetid(op[1], 1))
    else:
        feat = int(np.prod([d for d in shape[1:]]))
        w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(feat, classes)).astype(np.float32), "w")
        nodes = [helper.make_node("Flatten", [input_name], ["f"], axis=1), helper.make_node("MatMul", ["f", "w"], ["logits"])]
        inits = [w]
    g = helper.make_graph(nodes, "tiny", [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def save_npz_raw(path: Path, **arrays) -> Path:
    """np.savez as a user would (pickles allowed for object arrays)."""
    np.savez(path, **arrays)
    return path


def rewrite_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
