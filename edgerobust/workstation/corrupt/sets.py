"""Write corruption sets: every corruption x severity over the evaluation rows, into a folder or a bundle.

``make_sets`` is the compress stage (into the temporary bundle folder, hashed with everything else);
``corrupt_bundle`` makes them after the fact for a finished bundle (`edgerobust corrupt`): it verifies
the bundle, then builds the new bundle in a temporary sibling folder (hard links to the unchanged files,
the new sets, the manifest with new ``corruptions``, ``corruption_sets`` and ``files``) and swaps the whole
folder in (edgerobust.edge.files.atomic.atomic_dir): an interruption leaves the old bundle or the new
one, each consistent with its manifest. Each set draws from its own generator seeded by
(seed, crc32 of the name, severity): the same seed gives the same bytes whichever other sets are made.
A corruption that cannot run on the inputs' shape, or a severity that changes no pixel by half a grey
level at this size, is left out with its reason (manifest ``corruption_sets.skipped``). Torch-free.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerobust.edge.files.atomic import atomic_dir
from edgerobust.edge.files.bundle import MANIFEST, Bundle, EvalSet
from edgerobust.edge.files.corruptset import CORRUPTION_DIR, CorruptionSet, set_name
from edgerobust.edge.files.npzio import sha256_file, write_json
from edgerobust.errors import UsageError

from .deps import require_corruption_deps
from .registry import (CORRUPTIONS, DEFAULT_CORRUPTIONS, DEFAULT_SEVERITIES, LEFT_OUT, load_corruptions,
                       load_severities, parse_corruptions, parse_severities)

logger = logging.getLogger(__name__)
IMPLEMENTATION = ("edgerobust.workstation.corrupt: numpy/scipy/Pillow, ImageNet-C's parameters (Hendrycks & "
                  "Dietterich 2019), pixel parameters scaled by the image side / 224")
CHUNK = 256  # rows corrupted at a time


@dataclass
class CorruptionRun:
    """What was written: ``files`` relative to the bundle (corruptions/<name>_s<k>.npz), ``skipped`` as
    {corruption, severity (None: every one), reason}, and the seconds it took."""

    files: list[str]
    skipped: list[dict]
    seconds: float
    names: tuple[str, ...] = ()
    severities: tuple[int, ...] = ()
    seed: int = 0
    sets: list[dict] = field(default_factory=list)  # per set: name, corruption, severity, family

    def record(self) -> dict:
        """The manifest's ``corruption_sets`` section."""
        return {"names": list(self.names), "severities": list(self.severities), "seed": self.seed,
                "skipped": self.skipped, "seconds": round(self.seconds, 3), "implementation": IMPLEMENTATION,
                "left_out": dict(LEFT_OUT)}


def corrupt(x: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """``x`` (N, C, H, W) in [0, 1] under one corruption at one severity; deterministic given ``seed``."""
    entry = CORRUPTIONS[name]
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(severity)])
    out = np.empty(x.shape, dtype=np.float32)
    for i in range(0, len(x), CHUNK):
        out[i:i + CHUNK] = entry.apply(np.array(x[i:i + CHUNK], dtype=np.float32), severity, rng)
    return out


def make_sets(ev: EvalSet, names, severities, seed: int, folder: Path, eval_sha256: str) -> CorruptionRun:
    """Write every set of ``names`` x ``severities`` over all rows of ``ev`` into ``folder``."""
    t0 = time.perf_counter()
    names, severities = parse_corruptions(names), parse_severities(severities)
    if names:
        require_corruption_deps()
    folder.mkdir(parents=True, exist_ok=True)
    run = CorruptionRun([], [], 0.0, names, severities, int(seed))
    idx = np.arange(len(ev.y), dtype=np.int64)
    for name in names:
        entry = CORRUPTIONS[name]
        why = entry.reason_out(ev.x.shape)
        if why:
            run.skipped.append({"corruption": name, "severity": None, "reason": why})
            logger.info(f"corruption {name} left out: {why}")
            continue
        for sev in severities:
            x = corrupt(ev.x, name, sev, seed)
            change = float(np.abs(x - ev.x).max()) if x.size else 0.0
            if change < 0.5 / 255:
                why = (f"at {ev.x.shape[-1]} px it changes no pixel by half a grey level (ImageNet-C's parameters "
                       "for 224 px, scaled to this size, are below one pixel)")
                run.skipped.append({"corruption": name, "severity": sev, "reason": why})
                logger.info(f"corruption {set_name(name, sev)} left out: {why}")
                continue
            meta = {"name": set_name(name, sev), "corruption": name, "family": entry.family, "severity": sev,
                    "seed": int(seed), "params": entry.params[sev - 1], "reference": entry.reference,
                    "eval_sha256": eval_sha256, "n": int(len(idx)), "max_abs_change": change,
                    "implementation": IMPLEMENTATION}  # no timing inside: the same seed gives the same bytes
            CorruptionSet(x=x, y=ev.y, idx=idx, meta=meta).save(folder / f"{set_name(name, sev)}.npz")
            run.files.append(f"{CORRUPTION_DIR}/{set_name(name, sev)}.npz")
            run.sets.append({"name": meta["name"], "corruption": name, "severity": sev, "family": entry.family})
    run.seconds = time.perf_counter() - t0
    return run


@dataclass(frozen=True)
class CorruptConfig:
    """`edgerobust corrupt`: the ``bundle`` (its folder or a model in it), the ``corruptions`` (names,
    families, default, all), their ``corruption_severities`` (1..5), the ``seed`` (None: the bundle's, see
    ``bundle_seed``), and ``overwrite`` to replace sets the bundle already holds."""

    bundle: str | Path
    corruptions: tuple = field(default=DEFAULT_CORRUPTIONS, metadata={"load": load_corruptions})
    corruption_severities: tuple = field(default=DEFAULT_SEVERITIES, metadata={"load": load_severities})
    seed: int | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "corruptions", parse_corruptions(self.corruptions))
        object.__setattr__(self, "corruption_severities", parse_severities(self.corruption_severities))
        if not self.corruptions:
            raise UsageError("No `corruptions` to make.", fix="Name some, e.g. `corruptions` default.")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise UsageError(f"`seed` must be an integer >= 0; got {self.seed!r}.")


def bundle_seed(manifest: dict) -> int:
    """The seed compress ran with (manifest ``config.prepare.seed``; 0 where the manifest records none): what
    compress seeds its corruption sets with, so that `corrupt` after the fact writes the same bytes."""
    config = manifest.get("config") if isinstance(manifest, dict) else None
    prepare = config.get("prepare") if isinstance(config, dict) else None
    seed = prepare.get("seed") if isinstance(prepare, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else 0


def corrupt_bundle(cfg: CorruptConfig) -> tuple[Bundle, CorruptionRun]:
    """Make the sets of ``cfg`` for a finished bundle (see the module docstring); the bundle as rewritten."""
    require_corruption_deps()
    p = Path(cfg.bundle)
    bundle = Bundle.find(p) if p.exists() else None
    if bundle is None:
        raise UsageError(f"There is no bundle (manifest.json) at '{p}'.",
                         fix="Point at a bundle folder written by `edgerobust compress`, or a model.onnx inside it.")
    bundle.verify()  # never bless a changed file with a new manifest
    root = bundle.root
    if bundle.manifest.get("corruptions") and not cfg.overwrite:
        raise UsageError(f"The bundle '{root}' already holds {len(bundle.manifest['corruptions'])} corruption sets.",
                         fix="Pass `overwrite` to replace them.")
    ev = EvalSet.load(bundle.eval_path)
    eval_sha256 = sha256_file(bundle.eval_path)
    with atomic_dir(root, overwrite=True) as tmp:  # the old bundle, or the new one: never a mix
        shutil.copytree(root, tmp, symlinks=True, dirs_exist_ok=True, copy_function=_link_or_copy,
                        ignore=lambda folder, names: [n for n in names if Path(folder) == root and (
                            n == CORRUPTION_DIR or n.startswith(f".{CORRUPTION_DIR}.tmp-"))])  # the old sets
        seed = cfg.seed if cfg.seed is not None else bundle_seed(bundle.manifest)
        run = make_sets(ev, cfg.corruptions, cfg.corruption_severities, seed, tmp / CORRUPTION_DIR, eval_sha256)
        m = dict(bundle.manifest)
        files = {k: v for k, v in m.get("files", {}).items() if not k.startswith(f"{CORRUPTION_DIR}/")}
        files.update({f: sha256_file(tmp / f) for f in run.files})
        m.update(files=files, corruptions=run.files, corruption_sets=run.record())
        write_json(tmp / MANIFEST, m)
    return Bundle.open(root), run


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link to an unchanged bundle file (no second copy of the models), a copy where the
    filesystem has none. Safe: no file of the bundle is ever written in place (write_json and the
    atomic folder replace files)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
