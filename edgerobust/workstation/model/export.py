"""ONNX export and verification: opset 17, dynamic batch, named input/output, onnx.checker, and a
parity check of ONNX Runtime against torch on evaluation samples (beyond tolerance: an error)."""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from edgerobust.edge.files.atomic import atomic_file
from edgerobust.workstation.resources import memguard
from edgerobust.errors import ExportError, QualityGateError

OPSET = 17
DYNAMO_OPSET = 18  # the dynamo exporter's own opset (converting it down to 17 fails on some graphs)
EXPORTER_KEY = "edgerobust.exporter"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# A bundle keeps each model in one .onnx file, which protobuf caps at 2 GB (weights beyond that
# would need ONNX external data files, which this bundle format does not hold yet).
MAX_ONNX_BYTES = 1_900_000_000


@dataclass
class Parity:
    """Agreement of an ONNX model with a reference on the same inputs."""

    max_abs_diff: float  # raw max |logit difference|
    top1_agreement: float
    n: int
    atol: float  # tolerance per unit of the largest |logit| (at least 1)
    min_agreement: float
    logit_scale: float = 1.0

    @property
    def ok(self) -> bool:
        return (self.max_abs_diff <= self.atol * max(1.0, self.logit_scale)
                and self.top1_agreement >= self.min_agreement)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export a pixel-space model to ONNX and check it with onnx.checker.

    The TorchScript-based exporter (opset 17) first: fast, and it handles most of the torchvision
    zoo. Where it cannot (adaptive pooling to a size that does not divide the input, as AlexNet and
    VGG at small inputs), the dynamo-based exporter (opset 18) takes over. The exporter used is
    recorded in the file's metadata (:data:`EXPORTER_KEY`, read with :func:`exporter_of`).
    """
    path = Path(path)
    model.eval()
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    if size > MAX_ONNX_BYTES:
        params = sum(p.numel() for p in model.parameters())
        raise ExportError(f"{type(model.net).__name__ if hasattr(model, 'net') else type(model).__name__} has "
                          f"{params / 1e6:.0f}M parameters ({size / 1e9:.2f} GB): over the 2 GB that one ONNX "
                          "file can hold.",
                          why="An edgerobust bundle keeps each model in one .onnx file; larger models need ONNX's "
                              "external data files, which the bundle format does not support yet.",
                          fix="Use a smaller model of the family (e.g. vit_l_16 instead of vit_h_14).")
    mha_fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        # nn.MultiheadAttention's inference fast path (aten::_native_multi_head_attention) has no
        # ONNX export: trace the plain composite ops instead.
        torch.backends.mha.set_fastpath_enabled(False)
        with memguard.guard("exporting to ONNX", arch=type(model).__name__), atomic_file(path) as tmp:
            exporter = _export_either(model, example, tmp)
            check_onnx(tmp, shown=path)
            _record_exporter(tmp, exporter)
    finally:
        torch.backends.mha.set_fastpath_enabled(mha_fastpath)
    return path


def _export_either(model: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Export with TorchScript, else dynamo; the name of the one that worked, or ExportError with both causes."""
    try:
        _export(model, example, path, dynamo=False)
        return "torchscript"
    except OSError:  # a full disk or a vanished folder is not an export problem: let it surface as such
        raise
    except Exception as exc:  # the exporter raises many types for unsupported constructs
        first = f"{type(exc).__name__}: {str(exc)[:300]}"
    try:
        _export(model, example, path, dynamo=True)
        return "dynamo"
    except OSError:
        raise
    except Exception as exc:
        raise ExportError("The model could not be exported to ONNX.",
                          why=f"the TorchScript exporter: {first}; the dynamo exporter: "
                              f"{type(exc).__name__}: {str(exc)[:300]}",
                          fix="Models with data-dependent control flow or custom ops may need changes to export; "
                              "a larger `image_size` helps where adaptive pooling is the cause.") from exc


@contextlib.contextmanager
def _quiet_stdout():
    """Silence the exporters' prints (the TorchScript one writes its IR graph to fd 1 from C++ on failure),
    which would corrupt a caller's JSON output."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _export(model: nn.Module, example: torch.Tensor, path: Path, dynamo: bool) -> None:
    with warnings.catch_warnings(), torch.no_grad(), _quiet_stdout():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (example,), str(path), opset_version=DYNAMO_OPSET, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
                              dynamo=True, verbose=False, optimize=True)
        else:
            torch.onnx.export(model, (example,), str(path), opset_version=OPSET, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True, dynamo=False)


def _record_exporter(path: Path, exporter: str) -> None:
    if path.stat().st_size > 1_500_000_000:  # rewriting would pass protobuf's 2 GB limit: left unrecorded
        return
    m = onnx.load(str(path))
    onnx.helper.set_model_props(m, {**{p.key: p.value for p in m.metadata_props}, EXPORTER_KEY: exporter})
    onnx.save(m, str(path))


def exporter_of(path: str | Path) -> str | None:
    """Which exporter wrote ``path`` ("torchscript" or "dynamo"), from its metadata; None if not recorded."""
    m = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in m.metadata_props if p.key == EXPORTER_KEY), None)


def check_onnx(path: str | Path, shown: str | Path | None = None) -> None:
    """onnx.checker's full check of ``path``; an ExportError naming ``shown`` (default ``path``)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"'{shown or path}' fails the ONNX checker.", why=str(exc)[:300]) from exc


def session(path: str | Path, threads: int = 0):
    """A CPU ONNX Runtime session (compress-side checks; audit builds its own from a profile)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnx_logits(path: str | Path, x: np.ndarray, batch_size: int = 256, sess=None) -> np.ndarray:
    sess = sess or session(path)
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)


def torch_logits(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch_size])).numpy()
                               for i in range(0, len(x), batch_size)])


def parity(model: nn.Module, path: str | Path, x: np.ndarray, atol: float = 1e-3,
           min_agreement: float = 0.99) -> Parity:
    """Compare ONNX Runtime's logits with torch's on ``x`` (pixel space)."""
    return parity_of(torch_logits(model, x), onnx_logits(path, x), atol, min_agreement)


def parity_of(ref: np.ndarray, got: np.ndarray, atol: float = 1e-3, min_agreement: float = 0.99) -> Parity:
    """Parity of ONNX logits ``got`` against reference logits ``ref`` on the same inputs."""
    diff = float(np.abs(ref - got).max())
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    return Parity(max_abs_diff=diff, top1_agreement=agree, n=len(ref), atol=atol, min_agreement=min_agreement,
                  logit_scale=float(np.abs(ref).max()))


def require_parity(p: Parity, what: str) -> None:
    if not p.ok:
        raise QualityGateError(
            f"The exported {what} does not match the torch model: max |logit diff| {p.max_abs_diff:.2e} "
            f"(tolerance {p.atol * max(1.0, p.logit_scale):.1e}), top-1 agreement {p.top1_agreement:.2%} "
            f"(required {p.min_agreement:.0%}) on {p.n} samples.",
            why="ONNX export changed the model's computation; shipping it would misreport everything downstream.",
            fix="Check for ops that export differently (custom layers, in-place tricks); `parity_atol` relaxes the check.")
