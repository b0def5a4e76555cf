"""Sections 2-4: what edgerobust's own machinery adds over bare onnxruntime / torchattacks loops.

2. `edgerobust profile`'s p50 (measure_models, its entry point) against a bare timing loop.
3. audit's evaluation (edgerobust.device.audit.predict, both models) against bare batched inference.
4. craft_set (what `edgerobust attack` runs) against a bare torchattacks loop, same parameters.
Each pair alternates order across repeats; ratios are per repeat, reported as median [min-max].
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common import bare_session, spread


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
    from edgerobust.device.measure import measure_models

    threads = profile.session.intra_op_threads
    m = profile.measure
    rows = []
    for label, path in models.items():
        sess = bare_session(path, threads)
        shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
        x1 = np.random.default_rng(0).random(shape, dtype=np.float32)
        pairs = []
        for r in range(repeats):
            order = ("tool", "bare") if r % 2 == 0 else ("bare", "tool")
            got = {}
            for who in order:
                if who == "tool":
                    rep = measure_models({"model": path}, profile, memory=False, show_progress=False)
                    got["tool"] = rep.models[0].latency_at(1).p50_ms
                else:
                    got["bare"] = bare_p50_ms(sess, x1, m.rounds * m.runs_per_round, m.warmup_runs)
            pairs.append((got["tool"], got["bare"]))
        rows.append({"model": label, "profile_p50_ms": spread(p[0] for p in pairs),
                     "bare_p50_ms": spread(p[1] for p in pairs), "ratio": spread(p[0] / p[1] for p in pairs)})
    return rows


def audit_throughput(cases: dict[str, tuple[Path, Path, np.ndarray]], profile, repeats: int,
                     batch_size: int = 64) -> list[dict]:
    from edgerobust.device.audit import _predict_both
    from edgerobust.device.measure import open_sessions

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

        runs = {"audit": lambda: _predict_both(tool, x, batch_size, "bench", False),
                "audit+progress": lambda: _predict_both(tool, x, batch_size, "bench", True),
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
    from edgerobust.workstation.data import load_data, split
    from edgerobust.workstation.load import load_model
    from edgerobust.workstation.nets import PixelModel

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
