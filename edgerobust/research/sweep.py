"""Sweeps: one model compressed at several sparsities and precisions, every model scored on the
same adversarial sets, with speedup measured side by side; resumable, in-process or on Ray.

    from edgerobust import PrepareConfig, SweepConfig, sweep
    result = sweep(SweepConfig(PrepareConfig("model.pt"), out="sweeps/digits", sparsities=(0.5, 0.7)))

The stages, composed:

* :func:`edgerobust.workstation.pipeline.prepare.prepare` once: the model, the split and the normalization, which
  every variant then uses as given (no variant decides it again);
* the base is exported (``base.onnx``), the evaluation split saved (``eval.npz``) and every
  attack x eps set crafted on it once (``adv/<attack>_<eps>.npz``): the *transfer* threat;
* every variant is a *point* (:mod:`edgerobust.research.sweep_points`): compressed with
  :func:`edgerobust.workstation.compress.compress` (fp32 and int8 in one bundle; sparsity 0 is the base,
  whose int8 is the quantized ``base.onnx``), attacked white-box with the ``whitebox`` threat,
  and scored with ONNX Runtime. Points run on a runner (:mod:`edgerobust.research.runners`: in this
  process, or as Ray tasks) and are stored content-addressed under ``points/``: a rerun after a
  crash reuses the finished ones (``fresh=True`` starts over);
* every model's latency is measured in one interleaved run with the base
  (:func:`edgerobust.edge.runtime.measure.measure_latency`), then sweep.json, the plots and report.html.

Results are dataclasses (:class:`~edgerobust.research.points.SweepResult`);
:func:`~edgerobust.research.points.summarize` turns one or more of them (seeds) into the plotted points.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

from edgerobust import events
from edgerobust.edge.files.atomic import atomic_file
from edgerobust.errors import UsageError
from edgerobust.research import corruption_axis
from edgerobust.research.configs import SweepConfig
from edgerobust.research.points import Point, SweepResult, find, macs_text, pct, summarize, to_json

logger = logging.getLogger(__name__)

SWEEP_TYPE = "edgerobust.research.sweep"
MARKER = ".edgerobust-study"  # in an output folder a sweep, recipe or study may resume


# running


def sweep(config: SweepConfig, runner=None) -> SweepResult:
    """Run the sweep into ``config.out`` (sweep.json, adv/, points/, and with ``write_report`` the
    plots and report.html); ``runner`` (``edgerobust.research.runners``) runs the points, default here."""
    from edgerobust.research.runners import LocalRunner, point_device
    from edgerobust.research.sweep_eval import (Built, measure_speedups, model_results, score_corruptions, score_from_dict,
                                                score_models)
    from edgerobust.workstation.resources.torch_device import describe, resolve_device

    t0 = time.perf_counter()
    runner = runner or LocalRunner()
    device = resolve_device(config.prepare.device)  # a CUDA request on a host without CUDA: before any folder
    task_device = point_device(runner, device)  # refuses a CUDA sweep on a Ray runner that asks for no GPU
    out = Path(config.out)
    prepare_out(out, "sweep", overwrite=config.overwrite, fresh=config.fresh)
    shared, ev, base = base_stage(config, out)
    base.whitebox = {}
    tasks = _tasks(config, shared, task_device)
    logger.info(f"sweep: {len(config.variants)} variant(s) x {', '.join(config.precisions)} on {runner.name}, torch "
                f"on {describe(device)}; {len(config.specs)} set(s) crafted once on the base; {len(ev.y)} eval "
                f"samples (seed {config.seed})")
    records, reused = run_points(tasks, runner)
    base_scores = score_models([base], out, ev, config.threats, config.specs, shared.transfer, config.latency_profile)
    models = [base] + [Built.from_dict(m) for r in records for m in r["models"]]
    scores = base_scores + [score_from_dict(s) for r in records for s in r["sets"]]
    scores += score_corruptions(models, out, ev, shared.corruptions, config.latency_profile)
    profile, p50 = measure_speedups(models, out, config.latency_profile, config.latency_rounds)
    result = SweepResult(seed=config.seed, n_eval=len(ev.y), profile=profile, models=model_results(models, out, p50),
                         sets=tuple(scores), config=config_dict(config), seconds=time.perf_counter() - t0,
                         out=str(out), runner=runner.name, reused=reused, computed=len(tasks) - reused,
                         corruption=shared.corruption_record)
    write_sweep(out, config, result)
    return result


def run_points(tasks: list, runner) -> tuple[list[dict], int]:
    """Every task's record, in order: reused from disk where intact, else built on ``runner``."""
    from edgerobust.research.sweep_points import load_point

    records: list[dict | None] = [None if t is None else load_point(t) for t in tasks]
    todo = [i for i, r in enumerate(records) if r is None]
    reused = len(tasks) - len(todo)
    if reused:
        logger.info(f"reusing {reused} finished point(s) of {len(tasks)}; computing {len(todo)}")
    with events.task(f"points ({runner.name})", total=len(tasks)) as advance:
        advance(reused, f"{reused} reused")

        def done(j: int, record: dict) -> None:
            records[todo[j]] = record
            advance(1, f"done {record['variant']}")

        runner.map(_build, [tasks[i] for i in todo], done)
    return records, reused


def _build(task):
    """build_point, looked up when called (a test replaces it to interrupt a sweep)."""
    from edgerobust.research.sweep_points import build_point

    return build_point(task)


def _tasks(config: SweepConfig, shared, device: str) -> list:
    from edgerobust.research.sweep_points import PointTask
    from edgerobust.research.sweep_points import point_key as key_of

    return [PointTask(config, v, shared, key_of(config, v, shared), device) for v in config.variants]


def base_stage(config: SweepConfig, out: Path):
    """prepare once; base.onnx, eval.npz, calib.npz and the transfer sets under ``out``."""
    import numpy as np

    from edgerobust.workstation.model.export import export_onnx
    from edgerobust.workstation.pipeline.prepare import prepare
    from edgerobust.workstation.prune.structural import count
    from edgerobust.workstation.pipeline.stages import eval_set, evidence_stage
    from edgerobust.research.sweep_eval import Built, array_digest
    from edgerobust.research.sweep_points import Shared
    from edgerobust.workstation.data.normalization import NormSpec

    prep = prepare(config.prepare)
    needs_whitebox = "whitebox" in config.threats and any(v.sparsity > 0 for v in config.variants)
    if needs_whitebox and not prep.loaded.arch:
        raise UsageError("The whitebox threat needs the pruned models as torch checkpoints, which need `arch`.",
                         fix="Give `arch` (e.g. zoo:digits-cnn), or use the transfer `threats` only.")
    base_onnx = export_onnx(prep.base, prep.example, out / "base.onnx")
    ev = eval_set(prep)
    ev.save(out / "eval.npz")
    with atomic_file(out / "calib.npz") as tmp:
        np.savez(tmp, x=prep.splits.calib.x)
    shutil.rmtree(out / "adv", ignore_errors=True)
    paths = evidence_stage(prep, out / "eval.npz", base_onnx, config.specs, out / "adv")
    made = corruption_axis.make(out, config.corruptions, config.corruption_severities, prep.seed)
    macs, params = count(prep.base.net, prep.normalize(prep.example))
    decided = dataclasses.replace(config.prepare, model=str(config.prepare.model), data=prep.data_name,
                                  image_size=prep.image_size, allow_weak_base=True,  # the base passed its check here
                                  normalize=NormSpec("custom", tuple(prep.norm.mean), tuple(prep.norm.std)))
    shared = Shared(root=str(out), prepare=decided, model_sha256=prep.loaded.sha256,
                    data_digest=array_digest(ev.x, ev.y, prep.splits.calib.x), base_params=params, base_macs=macs,
                    transfer={s.name: Path(p).relative_to(out).as_posix() for s, p in zip(config.specs, paths)},
                    corruptions=made.files, corruption_record=made.record or None)
    return shared, ev, Built("base", "", 0.0, "fp32", "base.onnx", params, macs, 1.0)


def prepare_out(out: Path, kind: str, overwrite: bool, fresh: bool) -> None:
    """Make ``out`` ready: resume a folder this kind of run left (its MARKER), start over with
    ``fresh``, and refuse any other existing folder unless ``overwrite``."""
    import json

    marker = out / MARKER
    mine = marker.is_file() and _marker_kind(marker) == kind
    if out.exists() and not mine and not overwrite:
        raise UsageError(f"'{out}' already exists.", why=f"It is not a folder an earlier {kind} left to resume.",
                         fix="Pass `overwrite` to replace it, or choose another `out`.")
    if out.exists() and (fresh or overwrite or not mine):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(marker) as tmp:
        tmp.write_text(json.dumps({"kind": kind}) + "\n")


def _marker_kind(marker: Path) -> str | None:
    import json

    try:
        return json.loads(marker.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def write_sweep(out: Path, config: SweepConfig, result: SweepResult) -> dict:
    """sweep.json and, with ``write_report``, the plots and report.html."""
    from edgerobust.edge.files.npzio import write_json

    points = summarize([result])
    data = {"config": result.config, "device": result.config["device"], "runs": [dataclasses.asdict(result)],
            "points": [dataclasses.asdict(p) for p in points], "plots": [], "findings": findings(points, config)}
    if config.write_report:
        from edgerobust.research.plots import write_report

        return write_report(out, f"Sweep of {Path(str(config.prepare.model)).name}", points, data,
                            focus_eps=config.focus, kind=SWEEP_TYPE)
    write_json(out / "sweep.json", to_json(SWEEP_TYPE, data))
    return data


def config_dict(config: SweepConfig) -> dict:
    """The config as plain JSON values."""
    def plain(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v
    from edgerobust.workstation.resources.torch_device import describe, resolve_device

    d = plain(config)
    d["focus_eps"] = config.focus
    d["device"] = describe(resolve_device(config.prepare.device))  # as run: "cpu" or "cuda:0 (NVIDIA ...)", not "auto"
    return d


def findings(points: list[Point], config: SweepConfig) -> list[str]:
    """One sentence per attack and threat at the focus eps: the base, the best and worst compressed model."""
    out = []
    for threat in config.threats:
        for attack in dict.fromkeys(s.attack for s in config.specs):
            at = find(points, threat=threat, attack=attack, eps_text=config.focus)
            base = find(at, model="base")
            others = [p for p in at if p.model != "base"]
            if not base or not others:
                continue
            b = base[0]
            best = max(others, key=lambda p: p.accuracy)
            worst = min(others, key=lambda p: p.accuracy)
            out.append(f"{attack.upper()} {config.focus} ({threat}): the base keeps {pct(b.accuracy, b.accuracy_std)} "
                       f"robust accuracy; the best compressed model, {best.model} ({macs_text(best)}), "
                       f"{pct(best.accuracy, best.accuracy_std)} at {best.speedup:.2f}x speedup; the worst, "
                       f"{worst.model} ({macs_text(worst)}), {pct(worst.accuracy, worst.accuracy_std)} "
                       f"(n={b.n}{'' if b.seeds == 1 else f', {b.seeds} seeds'}).")
    line = corruption_finding(points)
    return out + ([line] if line else [])


def corruption_finding(points: list[Point]) -> str | None:
    """The base's accuracy pooled over the common-corruption sets, and the best and worst compressed model's."""
    at = find(points, threat=corruption_axis.MEAN_THREAT)
    base = find(at, model="base")
    others = [p for p in at if p.model != "base"]
    if not base or not others:
        return None
    b = base[0]
    sets = len({(p.attack, p.eps_text) for p in find(points, threat=corruption_axis.THREAT, model="base")})
    best = max(others, key=lambda p: p.accuracy)
    worst = min(others, key=lambda p: p.accuracy)
    return (f"Common corruptions (accuracy pooled over {sets} sets): the base keeps {pct(b.accuracy, b.accuracy_std)}; "
            f"the best compressed model, {best.model} ({macs_text(best)}), {pct(best.accuracy, best.accuracy_std)} "
            f"at {best.speedup:.2f}x speedup; the worst, {worst.model} ({macs_text(worst)}), "
            f"{pct(worst.accuracy, worst.accuracy_std)} (each eval row once per set, {b.n // max(sets, 1)} rows"
            f"{'' if b.seeds == 1 else f', {b.seeds} seeds'}).")
