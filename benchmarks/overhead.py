"""Sections 2-4: what edgerobust's own machinery adds over bare onnxruntime / torchattacks loops.

2. `edgerobust profile`'s p50 (the CLI, a fresh process) against a bare timing loop in another fresh process.
3. audit's evaluation (edgerobust.edge.scores.replay.predict_all, both models) against bare batched inference.
4. craft_set (what `edgerobust attack` runs) against a bare torchattacks loop, same parameters.
Each pair alternates order across repeats; ratios are per repeat, reported as median [min-max].
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common import PROFILE_PATH, alone_p50, bare_session, spread


def bare_p50_ms(sess, x1: np.ndarray, runs: int, warmup: int) -> float:
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: x1})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x1})
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def fidelity(models: dict[str, Path], profile, repeats: int) -> list[dict]:
    """`edgerobust profile MODEL -p bench-2threads.toml -b 1` (a fresh process, as a user runs it) against a
    plain timing loop in another fresh process, alternating, ``repeats`` times. Both sides are fresh
    processes: a process can sit in a slow state for its whole life on a shared host (the digits
    int8 model: 0.104 ms in the harness's own process against 0.063 ms in fresh ones), so a loop in
    the harness's process is no reference."""
    rows = []
    for label, path in models.items():
        pairs = []
        for r in range(repeats):
            order = ("tool", "bare") if r % 2 == 0 else ("bare", "tool")
            got = {}
            for who in order:
                if who == "tool":
                    got["tool"] = _cli_p50(path)
                else:
                    got["bare"] = alone_p50(path, PROFILE_PATH, seconds=1.0)["p50_ms"]
            pairs.append((got["tool"], got["bare"]))
        rows.append({"model": label, "profile_p50_ms": spread(p[0] for p in pairs),
                     "bare_p50_ms": spread(p[1] for p in pairs), "ratio": spread(p[0] / p[1] for p in pairs)})
    return rows


def _cli_p50(path: Path) -> float:
    """The batch-1 p50 `edgerobust profile` reports for one model on the harness profile."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "edgerobust", "--quiet", "profile", str(path), "-p", str(PROFILE_PATH),
                           "-b", "1", "--no-memory", "--json"], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    data = json.loads(proc.stdout)["_data"]
    return next(lat["p50_ms"] for lat in data["models"][0]["latency"] if lat["batch_size"] == 1)


def audit_throughput(cases: dict[str, tuple[Path, Path, np.ndarray]], profile, repeats: int,
                     batch_size: int = 64) -> list[dict]:
    from edgerobust.edge.scores.replay import predict_all
    from edgerobust.edge.runtime.sessions import open_sessions

    rows = []
    threads = profile.session.intra_op_threads
    for label, (base, deployed, x) in cases.items():
        tool = open_sessions({"base": base, "deployed": deployed}, profile)
        bare = [bare_session(base, threads), bare_session(deployed, threads)]

        def run_bare():
            for s in bare:
                name = s.get_inputs()[0].name
                np.concatenate([s.run(None, {name: x[i:i + batch_size]})[0].argmax(1)
                                for i in range(0, len(x), batch_size)])

        runs = {"audit": lambda: predict_all(tool, x, batch_size, "bench", False),
                "audit+progress": lambda: predict_all(tool, x, batch_size, "bench", True),
                "bare": run_bare}
        for f in runs.values():  # warm
            f()
        secs = {k: [] for k in runs}
        for r in range(repeats):
            for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                t0 = time.perf_counter()
                runs[k]()
                secs[k].append(time.perf_counter() - t0)
        n = 2 * len(x)
        rows.append({"case": label, "samples": len(x), "batch_size": batch_size,
                     "bare_samples_per_s": spread(n / t for t in secs["bare"]),
                     "audit_samples_per_s": spread(n / t for t in secs["audit"]),
                     "throughput_ratio": spread(b / a for a, b in zip(secs["audit"], secs["bare"])),
                     "throughput_ratio_with_progress": spread(b / a for a, b in zip(secs["audit+progress"],
                                                                                    secs["bare"]))})
    return rows


def attack_cost(ckpt: Path, n: int, repeats: int, attack: str = "pgd", eps: str = "8/255") -> dict:
    import torch
    import torchattacks

    from edgerobust.workstation.attacks import craft_set, make_specs
    from edgerobust.workstation.data.sources import load_data, split
    from edgerobust.workstation.model.load import load_model
    from edgerobust.workstation.model.nets import PixelModel

    loaded = load_model(ckpt)
    spec_in = loaded.input_spec
    ds = load_data(spec_in["data"], image_size=spec_in["image_size"])
    ev = split(ds, seed=0, eval_samples=n).eval
    x, y = ev.x[:n], ev.y[:n]
    model = PixelModel(loaded.model, spec_in["mean"], spec_in["std"]).eval()
    spec = make_specs(attack, eps, seed=0)[0]
    params = spec.params()
    bs = 256

    def tool():
        craft_set(model, x, y, spec, batch_size=bs, progress=lambda *a, **k: None)

    def bare():
        torch.manual_seed(0)
        atk = getattr(torchattacks, spec.entry.torchattacks_class)(model, **params)
        out = [atk(torch.from_numpy(x[i:i + bs]), torch.from_numpy(y[i:i + bs])).numpy()
               for i in range(0, len(y), bs)]
        return np.concatenate(out)

    tool(), bare()
    secs = {"tool": [], "bare": []}
    for r in range(repeats):
        for k, f in ((("tool", tool), ("bare", bare)) if r % 2 == 0 else (("bare", bare), ("tool", tool))):
            t0 = time.perf_counter()
            f()
            secs[k].append(time.perf_counter() - t0)
    return {"attack": spec.describe(), "params": params, "n": len(y), "batch_size": bs,
            "torch_threads": torch.get_num_threads(),
            "tool_s": spread(secs["tool"]), "bare_s": spread(secs["bare"]),
            "ratio": spread(a / b for a, b in zip(secs["tool"], secs["bare"]))}
