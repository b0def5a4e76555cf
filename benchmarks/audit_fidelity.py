"""Does `audit` report what a bare onnxruntime loop sees? Accuracy equality and p50 fidelity.

For a bundle (default: make the demo bundle), this runs `edgerobust.edge.audit` on the
`laptop-cpu-1thread` profile, then a bare 20-line onnxruntime loop on the same .npz files and
models with the same thread settings, and prints a table: every accuracy side by side (they must
be equal), and audit's p50 against the bare loop's p50 (interleaved with each other, 3 repeats,
median ratio).

    python benchmarks/audit_fidelity.py [BUNDLE_DIR] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import bare_session
from overhead import bare_p50_ms  # the bare 20-line timing loop, shared with run.py


def bare_accuracy(sess: ort.InferenceSession, x: np.ndarray, y: np.ndarray, bs: int = 64) -> float:
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + bs]})[0].argmax(1) for i in range(0, len(x), bs)])
    return float((pred == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", help="a bundle folder (default: build the demo bundle in a temp dir)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from edgerobust.edge.audit import AuditConfig, audit
    from edgerobust.edge.files.bundle import AdvSet, Bundle, EvalSet
    from edgerobust.edge.runtime.profiles import load_profile

    if args.bundle:
        bundle = Bundle.open(args.bundle)
    else:
        from edgerobust.workstation.demo import run_demo

        bundle = Bundle.open(run_demo(out=Path(tempfile.mkdtemp()) / "demo").compress.bundle)
    profile = load_profile("laptop-cpu-1thread")
    threads = profile.session.intra_op_threads or 1

    # 1. accuracies: audit's report against a bare loop on the same files
    report = audit(AuditConfig(model=bundle.path("deployed"), profile=profile, measure_memory=False,
                               show_progress=False))
    sessions = {"base": bare_session(bundle.path("base"), threads),
                "deployed": bare_session(bundle.path("deployed"), threads)}
    ev = EvalSet.load(bundle.eval_path)
    rows, mismatches = [], 0
    for s in report.sets:
        if s.kind == "clean":
            x, y = ev.x, ev.y
        else:
            adv = AdvSet.load(s.path)  # the report records the path it read
            x, y = adv.x, adv.y
        for role in ("base", "deployed"):
            got = getattr(s, role).accuracy.value
            bare = bare_accuracy(sessions[role], x, y)
            same = abs(got - bare) < 1e-12
            mismatches += not same
            rows.append((s.name, role, got, bare, "equal" if same else "DIFFERENT"))

    # 2. p50 at batch 1: audit's measurement against the bare loop, alternated, repeated
    x1 = ev.x[:1]
    ratios = {"base": [], "deployed": []}
    for _ in range(args.repeats):
        m = audit(AuditConfig(model=bundle.path("deployed"), profile=profile, measure_memory=False,
                              show_progress=False)).measurement
        for role in ("base", "deployed"):
            audit_p50 = next(mm for mm in m.models if mm.role == role).latency_at(1).p50_ms
            ratios[role].append((audit_p50, bare_p50_ms(sessions[role], x1, runs=200, warmup=20)))

    print(f"\nhost: {report.measurement.host.cpu}, onnxruntime {ort.__version__}, profile {profile.name}\n")
    print("| set | model | audit accuracy | bare accuracy | |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]:.4f} | {r[4]} |")
    print("\n| model | audit p50 ms (median of repeats) | bare p50 ms | ratio audit/bare |\n|---|---|---|---|")
    for role, pairs in ratios.items():
        a = statistics.median(p[0] for p in pairs)
        b = statistics.median(p[1] for p in pairs)
        ratio = statistics.median(p[0] / p[1] for p in pairs)
        print(f"| {role} | {a:.4f} | {b:.4f} | {ratio:.3f} |")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
