"""The reference point: what `compress` with `sparsity` 0.5, `int8` and `target` the profile gives.

Built with compress's own defaults (uniform ratios, the profile's rounding, 3 epochs of standard
fine-tuning, int8 with minmax calibration and keep_fp32 auto, compress's quality gates) into
``OUT/reference/bundle``, and scored exactly as a trial is (:func:`.trial.measure`: the search's
attack sets, on the profile's session, latency by the same method). It is not drawn by the sampler,
so it does not count as a trial; ``reference.json``, written last, holds the key of what it was built
from, and a rerun reuses it. If compress itself refuses it (a quality gate), the record says so and
the search goes on without a reference.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from edgerobust import __version__
from edgerobust.edge.files.atomic import atomic_dir
from edgerobust.edge.files.npzio import json_shape_error, sha256_file, write_json
from edgerobust.errors import QualityGateError

logger = logging.getLogger(__name__)

LABEL = "s=0.5 int8 (compress's defaults)"  # with the precision compress deployed, when not int8


def compress_config(ctx, out):
    """The CompressConfig of compress at `sparsity` 0.5 with `int8` for the search's model, data and profile."""
    from edgerobust.workstation.configs import CompressConfig, PruneConfig

    prepare = dataclasses.replace(ctx.shared.prepare, device=ctx.device)
    return CompressConfig(prepare, prune=PruneConfig(sparsity=0.5), int8=True, target=ctx.cfg.profile, out=out,
                          name="reference", overwrite=True)


def _key(ctx) -> str:
    from edgerobust.configio import to_dict

    d = {k: v for k, v in to_dict(compress_config(ctx, "x")).items() if k not in ("out", "_version")}
    desc = {"tool": __version__, "model": ctx.shared.model_sha256, "data": ctx.shared.data_digest, "config": d}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


def manifest(bundle: Path) -> dict:
    """The reference bundle's manifest.json; ValueError where it is not the JSON object compress writes."""
    m = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    if json_shape_error(m, {"metrics": {}, "deployment": {"variant": (str, type(None))}}, "manifest"):
        raise ValueError(f"'{bundle / 'manifest.json'}' is not a bundle's manifest")
    return m


def build_reference(ctx) -> tuple[str | None, str | None]:
    """(the reference's model.onnx relative to OUT, or None; why it could not be built, or None)."""
    folder, key = Path(ctx.out) / "reference", _key(ctx)
    try:
        rec = json.loads((folder / "reference.json").read_text())
        model = folder / "bundle" / "model.onnx"
        if rec["key"] == key and isinstance(rec.get("refused"), str):
            return None, rec["refused"]
        if rec["key"] == key and sha256_file(model) == rec["sha256"]:
            manifest(folder / "bundle")  # read back below: a damaged one is built again
            return model.relative_to(ctx.out).as_posix(), None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from edgerobust.workstation.compress import compress

    logger.info("optimize: the reference point (compress at sparsity 0.5 with int8, its defaults)")
    with atomic_dir(folder, overwrite=True) as tmp:
        refused = None
        try:
            compress(compress_config(ctx, tmp / "bundle"))
        except QualityGateError as exc:  # the user would have met it too: said, and kept
            refused = f"compress refused it: {exc}"
            logger.warning(f"the reference point: {refused}")
        sha = None if refused else sha256_file(tmp / "bundle" / "model.onnx")
        write_json(tmp / "reference.json", {"key": key, "sha256": sha, "refused": refused})
    return (None, refused) if refused else ((folder / "bundle" / "model.onnx").relative_to(ctx.out).as_posix(), None)


def evaluate_reference(ctx) -> dict:
    """The reference's record, scored as a trial is (not halved, never stopped at the clean gate)."""
    from edgerobust.research.optimize.trial import measure

    rel, refused = build_reference(ctx)
    rec = {"params": None, "config": LABEL, "state": "complete", "reference": True, "number": None}
    if rel is None:
        return {**rec, "state": "refused", "feasible": False, "latency": None, "why": refused, "robust": None,
                "clean": None}
    written = manifest(Path(ctx.out) / "reference" / "bundle")
    m = written.get("metrics", {})
    deployed = written.get("deployment", {}).get("variant")
    rec.update(model=rel, macs=m.get("macs_after"), deployed=deployed)
    if deployed and deployed != "int8":  # e.g. the CUDA provider's profile: compress deploys fp32 or fp16 there
        rec["config"] = f"s=0.5 int8 asked, {deployed} deployed (compress's defaults)"
    return measure(ctx, rec, Path(ctx.out) / rel, reference=True)
