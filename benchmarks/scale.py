"""Sections 5-6: audit time and peak memory against the adversarial set's size; the end-to-end demo.

Each audit runs in a fresh process (peak RSS of that process via getrusage); the sets are the
demo bundle's PGD set tiled to 1k, 10k and 100k rows (same provenance, so audit accepts them).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from common import PROFILE_PATH, run_measured

AUDIT_JOB = r"""
import json, sys, time
from pathlib import Path
def hwm_mb():  # VmHWM starts afresh at exec; ru_maxrss would carry the forking parent's peak
    for ln in open("/proc/self/status"):
        if ln.startswith("VmHWM:"):
            return int(ln.split()[1]) / 1024
t0 = time.perf_counter()
from edgerobust.edge.audit import AuditConfig, audit
bundle, adv, profile = sys.argv[1:4]
rss0 = hwm_mb()
t1 = time.perf_counter()
rep = audit(AuditConfig(model=Path(bundle) / "model.onnx", adv_sets=(Path(adv),), profile=profile,
                        measure_memory=False, show_progress=False, verify=False))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "audit_s": t2 - t1, "rss_after_import_mb": rss0,
                  "peak_rss_mb": hwm_mb(),
                  "n": rep.sets[-1].n}))
"""


def tiled_sets(bundle: Path, sizes: tuple[int, ...], work: Path) -> dict[int, Path]:
    from edgerobust.edge.files.bundle import AdvSet

    src = sorted((bundle / "adv").glob("pgd*.npz"))[0]
    adv = AdvSet.load(src)
    out = {}
    work.mkdir(parents=True, exist_ok=True)
    for n in sizes:
        j = np.arange(n) % len(adv.y)
        meta = dict(adv.meta, n=int(n), name=f"{adv.name}-x{n}")
        p = work / f"adv-{n}.npz"
        AdvSet(x=adv.x[j], y=adv.y[j], idx=adv.idx[j], meta=meta).save(p)
        out[n] = p
    return out


def audit_scale(bundle: Path, sizes: tuple[int, ...], work: Path, repeats: int) -> list[dict]:
    sets = tiled_sets(bundle, sizes, work)
    rows = []
    for n, p in sets.items():
        runs = []
        for _ in range(repeats):
            import subprocess

            proc = subprocess.run([sys.executable, "-c", AUDIT_JOB, str(bundle), str(p), str(PROFILE_PATH)],
                                  capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-2000:])
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        rows.append({"n": n, "file_mb": p.stat().st_size / 2**20,
                     "audit_s": float(np.median([r["audit_s"] for r in runs])),
                     "audit_s_all": [r["audit_s"] for r in runs],
                     "peak_rss_mb": float(np.median([r["peak_rss_mb"] for r in runs])),
                     "rss_after_import_mb": runs[0]["rss_after_import_mb"]})
    return rows


def demo(work: Path) -> dict:
    """`edgerobust demo` twice: cold (trains the zoo model) and warm (reuses the checkpoint, as documented)."""
    out = work / "demo"
    ckpt = out.parent / "demo-digits-resnet.pt"
    runs = {}
    for kind in ("cold", "warm"):
        if kind == "cold" and ckpt.exists():
            continue  # a --work folder from an earlier run: only the warm run is measurable
        r = run_measured([sys.executable, "-m", "edgerobust", "demo", "--out", str(out)])
        runs[kind] = {"wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"], "rc": r["rc"],
                      "stderr_tail": r["stderr_tail"][-600:] if r["rc"] else ""}
        if r["rc"]:
            break
    last = runs.get("warm") or runs["cold"]
    return {"runs": runs, "wall_s": last["wall_s"], "peak_rss_mb": last["peak_rss_mb"], "rc": last["rc"],
            "stderr_tail": last["stderr_tail"], "bundle": str(out), "checkpoint": str(ckpt)}
