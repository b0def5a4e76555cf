"""Is the latency edgerobust reports the latency a deployment sees? Alone vs profile vs audit.

For resnet18 and mobilenet_v2 (224x224, random weights, sparsity 0.5 + int8, compressed here)
and the demo bundle, this runs, per bundle and repeat, in this order:

  alone #1  each model in its own fresh process, built from the profile: 20 warmup runs, then
            3 s of back-to-back runs; the median p50 of 2 processes per model
  profile   `edgerobust profile model.onnx --baseline base.onnx --profile P -b 1`
  alone #2
  audit     `edgerobust audit bundle/model.onnx --profile P --deployed-only` (batch-1 rows)
  alone #3

and compares each tool measurement with the alone runs just before and after it (their mean),
printing each p50, the speedup, the ratio to alone, the p50's 95% interval, the share of the cores
other processes used meanwhile, and the drift: how much the alone speedup itself moved between
the two brackets. A host whose speed changes between two alone runs (a shared VM's neighbours)
shows there, not as an error of the tool. Two repeats give the repeat-to-repeat spread.

`--section options` compares ways of interleaving two sessions in one process (the cross-talk
mechanism and its fixes), each model's p50 relative to it alone, in one run.

`--section drift` watches the deployed model alone in one process for a minute, p50 per 1 s
window: when the host itself runs the model at more than one speed, it shows here, with no
second session to blame.

    python benchmarks/latency_truth.py [--work DIR] [--profile laptop-cpu] [--repeats 2]
                                       [--section truth,options,drift] [--bundles resnet18,mobilenet_v2,demo]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alone_p50, bare_options, other_load_now, wait_quiet  # noqa: E402

PY = sys.executable


# ---------------------------------------------------------------------------------------------
# bundles


def make_bundles(names: list[str], work: Path, profile: str) -> dict[str, Path]:
    """resnet18 / mobilenet_v2 at sparsity 0.5 + int8 (random weights) and the demo bundle, compressed
    with ``profile``'s compress hints (round_to, int8_stem) as `compress --profile` would."""
    out = {}
    for name in names:
        if name == "demo":
            b = work / "demo"
            if not (b / "model.onnx").exists():
                subprocess.run([PY, "-m", "edgerobust", "--quiet", "demo", "--out", str(b)], check=True,
                               capture_output=True)
            out[name] = b if (b / "model.onnx").exists() else next(b.rglob("model.onnx")).parent
            continue
        b = work / f"{name}-0.5" / "b0.5"
        if not (b / "model.onnx").exists():
            from speed import _compress, _torchvision_checkpoint

            b.parent.mkdir(parents=True, exist_ok=True)
            pt, data = _torchvision_checkpoint(name, b.parent)
            from edgerobust.workstation.pipeline.target import resolve_target

            plan = resolve_target(profile)  # the profile's round_to and int8 stem, as `compress --profile` takes
            _compress(name, pt, data, 0.5, b, round_to=plan.round_to, stem=plan.stem)
        out[name] = b
    return out


# ---------------------------------------------------------------------------------------------
# alone vs profile vs audit


def _cli_json(args: list[str]) -> dict:
    proc = subprocess.run([PY, "-m", "edgerobust", "--quiet", *args, "--json"], capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # 1: a budget failed, the report is still there
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout)["_data"]


def _measurement(data: dict) -> dict:
    """The measure report inside a profile or audit report."""
    return data if "models" in data and "speedup" in data else data["measurement"]


def _batch1(m: dict) -> dict:
    out = {"other_load": m.get("other_load")}
    for model in m["models"]:
        lat = next(lat for lat in model["latency"] if lat["batch_size"] == 1)
        out[model["role"]] = {k: lat[k] for k in ("p50_ms", "p50_ci_low_ms", "p50_ci_high_ms", "runs", "measured_s")}
    out["speedup"] = next(s["p50"] for s in m["speedup"] if s["batch_size"] == 1)
    return out


def alone(bundle: Path, profile: str, processes: int = 2) -> dict:
    runs = {"base": [], "deployed": []}
    for i in range(processes):
        for role in (("base", "deployed") if i % 2 == 0 else ("deployed", "base")):
            runs[role].append(alone_p50(bundle / ("base.onnx" if role == "base" else "model.onnx"), profile))
    out = {role: {"p50_ms": float(np.median([r["p50_ms"] for r in v])), "all": [r["p50_ms"] for r in v],
                  "runs": int(np.median([r["runs"] for r in v]))} for role, v in runs.items()}
    out["speedup"] = out["base"]["p50_ms"] / out["deployed"]["p50_ms"]
    out["other_load"] = float(np.max([r["other_load"] or 0 for v in runs.values() for r in v]))
    return out


def _bracket(before: dict, after: dict) -> dict:
    """The alone figures around one profile/audit measurement: their mean, and how far the host moved."""
    out = {role: {"p50_ms": (before[role]["p50_ms"] + after[role]["p50_ms"]) / 2} for role in ("base", "deployed")}
    out["speedup"] = out["base"]["p50_ms"] / out["deployed"]["p50_ms"]
    out["drift"] = max(before["speedup"], after["speedup"]) / min(before["speedup"], after["speedup"]) - 1
    out["other_load"] = max(before["other_load"], after["other_load"])
    return out


def truth(bundle: Path, profile: str) -> dict:
    """alone, profile, alone, audit, alone: each tool measurement is compared with the alone runs just
    before and after it, so a host that changes speed between them shows as drift, not as error."""
    t0 = time.perf_counter()
    a = [alone(bundle, profile)]
    res = {"profile": _batch1(_measurement(_cli_json(["profile", str(bundle / "model.onnx"), "--baseline",
                                                       str(bundle / "base.onnx"), "-p", profile, "-b", "1",
                                                       "--no-memory"])))}
    a.append(alone(bundle, profile))
    res["audit"] = _batch1(_measurement(_cli_json(["audit", str(bundle / "model.onnx"), "-p", profile,
                                                    "--no-memory", "--deployed-only"])))
    a.append(alone(bundle, profile))
    res["alone"] = a
    res["around"] = {"profile": _bracket(a[0], a[1]), "audit": _bracket(a[1], a[2])}
    res["seconds"] = time.perf_counter() - t0
    return res


def render_truth(results: dict) -> str:
    head = ("| bundle | repeat | how | base p50 ms [95% CI] | deployed p50 ms [95% CI] | speedup | "
            "alone around it: speedup (drift) | base / alone | deployed / alone | speedup / alone | other load |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, reps in results.items():
        for i, r in enumerate(reps):
            for j, a in enumerate(r["alone"]):
                lines.append(f"| {name} | {i + 1} | alone #{j + 1} (2 processes each) | {a['base']['p50_ms']:.2f} | "
                             f"{a['deployed']['p50_ms']:.3f} | {a['speedup']:.2f} | | 1 | 1 | 1 | {a['other_load']:.2f} |")
            for how in ("profile", "audit"):
                m, a = r[how], r["around"][how]
                b, d = m["base"], m["deployed"]
                lines.append(
                    f"| {name} | {i + 1} | {how} | {b['p50_ms']:.2f} [{b['p50_ci_low_ms']:.2f}-{b['p50_ci_high_ms']:.2f}] | "
                    f"{d['p50_ms']:.3f} [{d['p50_ci_low_ms']:.3f}-{d['p50_ci_high_ms']:.3f}] | {m['speedup']:.2f} | "
                    f"{a['speedup']:.2f} ({100 * a['drift']:.0f}%) | "
                    f"{b['p50_ms'] / a['base']['p50_ms']:.3f} | {d['p50_ms'] / a['deployed']['p50_ms']:.3f} | "
                    f"**{m['speedup'] / a['speedup']:.3f}** | "
                    f"{m['other_load'] if m['other_load'] is not None else 'n/a'} |")
        if len(reps) > 1:
            for how in ("profile", "audit"):
                sp = [r[how]["speedup"] for r in reps]
                lines.append(f"| {name} | spread | {how} | | | {min(sp):.2f}-{max(sp):.2f} "
                             f"({(max(sp) / min(sp) - 1) * 100:.1f}%) | | | | | |")
            sp = [a["speedup"] for r in reps for a in r["alone"]]
            lines.append(f"| {name} | spread | alone (all) | | | {min(sp):.2f}-{max(sp):.2f} "
                         f"({(max(sp) / min(sp) - 1) * 100:.1f}%) | | | | | |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# drift: one model alone in one process, p50 per window over a minute


def drift(model: Path, profile: str, seconds: float = 60.0, window_s: float = 1.0) -> dict:
    """The deployed model alone in one process (one session: no cross-talk possible), its p50 per
    ``window_s`` over ``seconds``: does the host itself run it at more than one speed?"""
    from edgerobust.edge.runtime.host import OtherLoad
    from edgerobust.edge.runtime.sessions import open_session
    from edgerobust.edge.runtime.profiles import load_profile

    s = open_session(model, "deployed", load_profile(profile))
    feed = {s.input.name: np.random.default_rng(0).random(s.input.concrete(1), dtype=np.float32).astype(s.input.dtype)}
    for _ in range(20):
        s.session.run(None, feed)
    windows, meter, end = [], OtherLoad().start(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        ts, stop = [], time.perf_counter() + window_s
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            s.session.run(None, feed)
            ts.append(time.perf_counter() - t0)
        windows.append(1e3 * float(np.median(ts)))
    w = np.asarray(windows)
    fast = float(np.percentile(w, 10))
    return {"windows_ms": windows, "p10_ms": fast, "median_ms": float(np.median(w)), "max_ms": float(w.max()),
            "slow_share": float(np.mean(w > 1.1 * fast)), "other_load": meter.stop()}


def _load(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def render_drift(name: str, d: dict) -> str:
    w = d["windows_ms"]
    spark = " ".join(f"{v:.2f}" for v in w[:: max(1, len(w) // 30)])
    return (f"| {name} | {len(w)} | {d['p10_ms']:.3f} | {d['median_ms']:.3f} | {d['max_ms']:.3f} | "
            f"{100 * d['slow_share']:.0f}% | {_load(d['other_load'])} |\n\nwindow p50s (ms, every "
            f"{max(1, len(w) // 30)}th): {spark}")


# ---------------------------------------------------------------------------------------------
# options: how two sessions are interleaved in one process

OPTIONS = {
    "A/B, threads spin between runs (before)": {},
    "A/B, allow_spinning = 0": {"session.intra_op.allow_spinning": "0"},
    "A/B, 50 ms pause at each switch": {"_pause": 0.05},
    "A/B, park (force_spinning_stop)": {"session.force_spinning_stop": "1"},
    "A/B, park + 1 untimed run per switch": {"session.force_spinning_stop": "1", "_warm": 1},
    "A/B, one shared thread pool + 1 untimed run per switch (chosen: isolation pool)": {"_global": True, "_warm": 1},
}


def _thread_cpu_s(tids: set[str]) -> float:
    import os

    total = 0
    for t in tids:
        try:
            fields = Path(f"/proc/self/task/{t}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def child(spec: dict) -> dict:
    """In this process: two sessions, interleaved turns of 10 runs, until each has 3 s; p50s and
    the CPU time the idle session's threads burned during the other's turns."""
    import os

    import onnxruntime as ort

    from edgerobust.edge.runtime.host import OtherLoad

    cfg = dict(spec["config"])
    pause, glob, warm = float(cfg.pop("_pause", 0)), cfg.pop("_global", False), int(cfg.pop("_warm", 0))
    if glob:
        from onnxruntime.capi import _pybind_state

        _pybind_state.set_global_thread_pool_sizes(spec["threads"], 1)
    runners, tids, before = {}, {}, set(os.listdir("/proc/self/task"))
    for role, path in spec["models"].items():
        so = bare_options(spec["threads"], cfg)
        so.use_per_session_threads = not glob
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)}
        runners[role] = (lambda s=sess, f=feed: s.run(None, f))
        now = set(os.listdir("/proc/self/task"))
        tids[role], before = now - before, now
    for run in runners.values():
        for _ in range(20):
            run()
    order, times, idle_burn = list(runners), {r: [] for r in runners}, []
    meter, i = OtherLoad().start(), 0
    while min(sum(v) for v in times.values()) < spec["seconds"]:
        for role in (order if i % 2 == 0 else order[::-1]):
            time.sleep(pause)
            for _ in range(warm):
                runners[role]()
            other = next(r for r in order if r != role)
            c0, w0 = _thread_cpu_s(tids[other]), time.perf_counter()
            for _ in range(10):
                t0 = time.perf_counter()
                runners[role]()
                times[role].append(time.perf_counter() - t0)
            idle_burn.append((_thread_cpu_s(tids[other]) - c0) / (time.perf_counter() - w0))
        i += 1
    return {"p50_ms": {r: 1e3 * float(np.median(v)) for r, v in times.items()},
            "p90_ms": {r: 1e3 * float(np.percentile(v, 90)) for r, v in times.items()},
            "idle_threads_cpu_share": float(np.median(idle_burn)), "other_load": meter.stop()}


def options(bundle: Path, profile: str, repeats: int, threads: int, quiet_s: float = 0.0) -> dict:
    models = {"base": str(bundle / "base.onnx"), "deployed": str(bundle / "model.onnx")}
    rows: dict[str, list] = {}
    for _ in range(repeats):
        wait_quiet(max_wait_s=quiet_s)
        a = {role: alone_p50(Path(p), profile)["p50_ms"] for role, p in models.items()}
        for name, cfg in OPTIONS.items():
            spec = {"models": models, "config": cfg, "threads": threads, "seconds": 3.0}
            proc = subprocess.run([PY, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-2000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.setdefault(name, []).append({
                "base": r["p50_ms"]["base"] / a["base"], "deployed": r["p50_ms"]["deployed"] / a["deployed"],
                "speedup": (r["p50_ms"]["base"] / r["p50_ms"]["deployed"]) / (a["base"] / a["deployed"]),
                "deployed_p90_ms": r["p90_ms"]["deployed"], "idle": r["idle_threads_cpu_share"],
                "other_load": r["other_load"], "alone_ms": a})
    return rows


def render_options(rows: dict) -> str:
    med = lambda v, k: float(np.median([x[k] for x in v]))  # noqa: E731
    rng = lambda v, k: f"{min(x[k] for x in v):.2f}-{max(x[k] for x in v):.2f}"  # noqa: E731
    lines = ["| how two sessions are timed in turn | base p50 / alone | deployed p50 / alone | speedup / alone | "
             "deployed p90 ms | idle session's threads, CPU share of the wall time | other load |",
             "|---|---|---|---|---|---|---|"]
    for name, v in rows.items():
        lines.append(f"| {name} | {med(v, 'base'):.3f} [{rng(v, 'base')}] | {med(v, 'deployed'):.3f} "
                     f"[{rng(v, 'deployed')}] | {med(v, 'speedup'):.3f} [{rng(v, 'speedup')}] | "
                     f"{med(v, 'deployed_p90_ms'):.2f} | {med(v, 'idle'):.2f} | {rng(v, 'other_load')} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="folder for the bundles (kept; reused when it has them)")
    ap.add_argument("--profile", default="laptop-cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--section", default="truth", help="truth, options, drift, comma-separated")
    ap.add_argument("--drift-seconds", type=float, default=60.0, help="how long the drift section watches one model")
    ap.add_argument("--bundles", default="resnet18,mobilenet_v2,demo")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of the options section")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="before each repeat, wait up to this many seconds for other processes to go quiet")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="er-truth-"))
    work.mkdir(parents=True, exist_ok=True)
    from edgerobust.edge.runtime.host import host_info

    h = host_info()
    print(f"host: {h.cpu}, {h.cores} cores, ISA {'/'.join(h.isa) or 'unknown'}; onnxruntime {h.onnxruntime}; "
          f"profile {args.profile}; other processes' CPU share at start {other_load_now():.2f}", flush=True)
    bundles = make_bundles(args.bundles.split(","), work, args.profile)
    res: dict = {"host": h.__dict__, "profile": args.profile}
    sections = args.section.split(",")
    if "options" in sections:
        name = next(iter(bundles))
        res["options"] = options(bundles[name], args.profile, args.repeats, args.threads, args.wait_quiet)
        print(f"\n### Interleaving two sessions: {name}, {args.threads} threads, {args.repeats} repeats, "
              f"median [min-max]\n\n" + render_options(res["options"]), flush=True)
    if "truth" in sections:
        res["truth"] = {}
        for name, b in bundles.items():
            res["truth"][name] = []
            for _ in range(args.repeats):
                wait_quiet(max_wait_s=args.wait_quiet)
                res["truth"][name].append(truth(b, args.profile))
                print(f"[truth] {name}: {res['truth'][name][-1]['seconds']:.0f} s", flush=True)
        print("\n### Alone vs profile vs audit, batch 1\n\n" + render_truth(res["truth"]), flush=True)
    if "drift" in sections:
        res["drift"] = {}
        print("\n### One model alone in one process, p50 per 1 s window (no second session: no cross-talk)\n\n"
              "| bundle | windows | fast (p10) ms | median ms | max ms | windows >1.1x fast | other load |\n"
              "|---|---|---|---|---|---|---|", flush=True)
        for name, b in bundles.items():
            res["drift"][name] = drift(b / "model.onnx", args.profile, args.drift_seconds)
            print(render_drift(name, res["drift"][name]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
