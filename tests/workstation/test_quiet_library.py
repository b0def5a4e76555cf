"""The library prints nothing and leaves the process's logging as it found it (issue 29, item 3).

Status lines and warnings are records of the `edgerobust` logger, which has only a NullHandler
until an application adds one; progress goes to a hook nobody installed. So a real compress
through the API, run in a fresh interpreter, writes nothing on stdout or stderr, even at the level
of the file descriptors, and the root logger keeps its level, handlers and filters.
"""
import subprocess
import sys

import pytest

# Run in a subprocess: a fresh interpreter, with no CLI handler or pytest capture installed.
SCRIPT = r'''
import contextlib, io, logging, sys

import torch

torch.set_num_threads(1)  # a tiny model: one thread is faster than two busy cores' worth
root = logging.getLogger()
before = (root.level, list(root.handlers), list(root.filters))

import edgerobust as er
from edgerobust import events
from edgerobust.edge.files.bundle import EvalSet
from edgerobust.workstation.attacks import make_specs
from edgerobust.workstation.quantize.int8 import quantize

model, out = sys.argv[1], sys.argv[2]
said, shown = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(said), contextlib.redirect_stderr(shown), events.recording_warnings() as warned:
    result = er.compress(er.CompressConfig(
        er.PrepareConfig(model, eval_samples=64), prune=er.PruneConfig(sparsity=0.5), int8=True,
        finetune=er.TrainConfig(epochs=0), max_prune_drop=None, attacks=tuple(make_specs("fgsm", "8/255")), out=out))
    # TensorRT's symmetric int8 written as QOperator: ONNX Runtime's quantizer warns through the root
    # logger ("Please use QuantFormat.QDQ ..."), which would also configure it (logging.basicConfig)
    quantize(result.bundle / "model_fp32.onnx", f"{out}-trt.onnx", EvalSet.load(result.bundle / "eval.npz").x[:16],
             er.QuantConfig(int8_target="tensorrt", format="qoperator"))
assert said.getvalue() == "", said.getvalue()
assert shown.getvalue() == "", shown.getvalue()
assert (result.bundle / "manifest.json").is_file() and [p.name for p in (result.bundle / "adv").iterdir()]
assert all(w in warned for w in result.warnings), (warned, result.warnings)  # logged, though nobody listened
assert (root.level, list(root.handlers), list(root.filters)) == before, (root.level, root.handlers, root.filters)
logger = logging.getLogger("edgerobust")
assert logger.level == logging.NOTSET and [type(h).__name__ for h in logger.handlers] == ["NullHandler"]
'''


@pytest.mark.slow
def test_compress_through_the_api_prints_nothing_and_leaves_the_root_logger(zoo_checkpoint, tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(zoo_checkpoint.path), str(tmp_path / "bundle")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == ""
    assert proc.stderr == ""
