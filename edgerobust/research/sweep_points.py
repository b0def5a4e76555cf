"""A sweep's points: one variant each (sparsity x pruning x fine-tuning, at the sweep's seed),
compressed, attacked white-box if asked, and scored, as one task that runs anywhere.

A point is stored atomically under ``<out>/points/<slug>-<key>/`` with ``point.json`` last;
``key`` is a sha256 of everything that changes its result (the model file's hash, the data and
its split, the normalization, the variant's pruning and fine-tuning, precisions, threats, the
attack grid, int8 settings, the tool version, and whether torch ran on CUDA). A rerun reuses a point whose ``point.json``
names the same key and whose files still hash as recorded; anything else is built again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
import numpy as np

from edgerobust import __version__
from edgerobust.edge.files.bundle import EvalSet
from edgerobust.edge.files.atomic import atomic_dir
from edgerobust.edge.files.npzio import sha256_file, write_json
from edgerobust.research.configs import SweepConfig, Variant
from edgerobust.research.points import to_json
from edgerobust.research.sweep_eval import Built, score_models
from edgerobust.workstation.configs import PrepareConfig

POINT_TYPE = "edgerobust.research.sweep-point"


@dataclass(frozen=True)
class Shared:
    """What the parent decided once and every point reads: the prepare config as decided (the data
    name, image size and normalization settled, so every variant uses the same ones), the model's
    and the prepared data's digests, and the base files under ``root``."""

    root: str
    prepare: PrepareConfig
    model_sha256: str
    data_digest: str  # the eval and calibration arrays
    base_params: int
    base_macs: int
    transfer: dict  # attack set name -> file relative to root
    corruptions: tuple = ()  # common-corruption set files relative to root (edgerobust.research.corruption_axis)
    corruption_record: dict | None = None  # what was made and left out (the manifest's corruption_sets form)


@dataclass(frozen=True)
class PointTask:
    """One point to build: a picklable description (a Ray task argument). ``device``: where its torch
    work runs, as ``device`` text for the process that builds it (``cuda`` in a Ray task: the GPU Ray
    assigned it, see :func:`edgerobust.research.runners.point_device`)."""

    config: SweepConfig
    variant: Variant
    shared: Shared
    key: str
    device: str = "cpu"

    @property
    def folder(self) -> str:
        return f"points/{self.variant.slug}-{self.key[:16]}"


def _resolved(config: SweepConfig, v: Variant):
    """The variant's pruning (at its sparsity) and fine-tuning configs; None for the unpruned base."""
    if v.sparsity == 0:
        return None, None
    return replace(v.prune or config.prune, sparsity=v.sparsity), v.finetune or config.finetune


def point_key(config: SweepConfig, v: Variant, shared: Shared) -> str:
    """sha256 of every input that changes the point's result (not latency, not the runner or which GPU).

    A point built with torch on CUDA is keyed apart from one built on the CPU (float sums, and so
    fine-tuned weights, differ); a CPU point's key is the one it had before sweeps took a ``device``.
    """
    from edgerobust.workstation.resources.torch_device import resolve_device

    pc, tc = _resolved(config, v)
    kind = resolve_device(config.prepare.device).type
    sp = shared.prepare
    desc = {"tool": __version__, "model": shared.model_sha256, "arch": sp.arch, "num_classes": sp.num_classes,
            "data": sp.data, "image_size": sp.image_size, "data_digest": shared.data_digest,
            "norm": [sp.normalize.mean, sp.normalize.std], "seed": sp.seed, "eval_samples": sp.eval_samples,
            "sparsity": v.sparsity, "group": v.group, "prune": asdict(pc) if v.sparsity > 0 else None,
            "finetune": asdict(tc) if v.sparsity > 0 else None, "precisions": config.precisions,
            "threats": config.threats, "specs": [asdict(s) for s in config.specs], "quant": asdict(config.quant)}
    if kind != "cpu":
        desc["device"] = kind
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


def load_point(task: PointTask) -> dict | None:
    """The stored record of ``task`` if it is complete and intact, else None (it is then rebuilt)."""
    root = Path(task.shared.root)
    try:
        doc = json.loads((root / task.folder / "point.json").read_text())
        data = doc["_data"]
        if doc.get("_type") != POINT_TYPE or data.get("key") != task.key:
            return None
        for rel, sha in data["files"].items():
            if not (root / rel).is_file() or sha256_file(root / rel) != sha:
                return None
        return data
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def build_point(task: PointTask) -> dict:
    """Build, score and store one point; returns its record (what ``point.json`` holds)."""
    root, cfg = Path(task.shared.root), task.config
    with atomic_dir(root / task.folder, overwrite=True) as tmp:
        models = _make_models(task, tmp)
    ev = EvalSet.load(root / "eval.npz")
    scores = score_models(models, root, ev, cfg.threats, cfg.specs, task.shared.transfer, cfg.latency_profile)
    rels = {m.path for m in models} | {p for m in models for p in m.whitebox.values()}
    record = {"key": task.key, "variant": task.variant.label, "models": [m.to_dict() for m in models],
              "sets": [asdict(s) for s in scores], "files": {r: sha256_file(root / r) for r in sorted(rels)}}
    write_json(root / task.folder / "point.json", to_json(POINT_TYPE, record))  # last: marks the point complete
    return record


def _make_models(task: PointTask, tmp: Path) -> list[Built]:
    v, cfg, sh = task.variant, task.config, task.shared
    root = Path(sh.root)
    calib_x = np.load(root / "calib.npz", allow_pickle=False)["x"]
    if v.sparsity == 0:  # the base itself; only its int8 is a new model
        if "int8" not in cfg.precisions:
            return []
        from edgerobust.workstation.quantize.int8 import quantize

        quantize(root / "base.onnx", tmp / "base_int8.onnx", calib_x, cfg.quant)
        name = f"{v.group} int8" if v.group else "base int8"
        return [Built(name, v.group, 0.0, "int8", f"{task.folder}/base_int8.onnx", sh.base_params, sh.base_macs, 1.0)]
    from edgerobust.workstation.compress import compress
    from edgerobust.workstation.configs import CompressConfig

    pc, tc = _resolved(cfg, v)
    int8 = "int8" in cfg.precisions
    res = compress(CompressConfig(  # a sweep measures every point: no gates, which would hide some
        replace(sh.prepare, device=task.device), prune=pc, finetune=tc, int8=int8, quant=cfg.quant,
        out=tmp / "bundle", max_int8_drop=None, min_int8_agreement=None, max_prune_drop=None, overwrite=True))
    ft = {k: (x if isinstance(x, (int, float, str, bool, type(None))) else str(x)) for k, x in asdict(tc).items()}
    common = dict(group=v.group, sparsity=v.sparsity, params=res.prune.params_after, macs=res.prune.macs_after,
                  macs_reduction=res.prune.macs_reduction, finetune=ft)
    fp32 = Built(f"{v.label} fp32", precision="fp32",
                 path=f"{task.folder}/bundle/{'model_fp32.onnx' if int8 else 'model.onnx'}", **common)
    q = Built(f"{v.label} int8", precision="int8", path=f"{task.folder}/bundle/model.onnx", **common) if int8 else None
    if "whitebox" in cfg.threats:
        wb = _whitebox(task, tmp, tmp / "bundle" / Path(fp32.path).name)
        fp32.whitebox = wb
        if q is not None:  # crafted on the pruned fp32 model; its int8 model is scored on the same sets
            q.whitebox = dict(wb)
    return [m for m in (fp32, q) if m is not None and m.precision in cfg.precisions]


def _whitebox(task: PointTask, tmp: Path, fp32_path: Path) -> dict[str, str]:
    """Craft the attack grid on the pruned fp32 model itself; attack set name -> file relative to root."""
    from edgerobust.workstation.resources.torch_device import on_device, resolve_device
    from edgerobust.workstation.model.load import load_model
    from edgerobust.workstation.model.nets import PixelModel
    from edgerobust.workstation.attacks.whitebox import whitebox_sets

    sh, specs = task.shared, task.config.specs
    norm = sh.prepare.normalize
    target = PixelModel(load_model(tmp / "bundle" / "pruned.pt").model, norm.mean, norm.std).eval()
    ev = EvalSet.load(Path(sh.root) / "eval.npz")
    with on_device(target, resolve_device(task.device)) as model:
        sets = whitebox_sets(model, ev.x, ev, list(specs), False, fp32_sha256=sha256_file(fp32_path),
                             eval_sha256=sha256_file(Path(sh.root) / "eval.npz"), fp32_target=fp32_path.name)
    (tmp / "whitebox").mkdir()
    out = {}
    for s, adv in zip(specs, sets):
        adv.save(tmp / "whitebox" / f"{s.name}.npz")
        out[s.name] = f"{task.folder}/whitebox/{s.name}.npz"
    return out
