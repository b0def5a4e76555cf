"""The budget search: Optuna over the compress space, every trial scored as the audit scores.

    from edgerobust import OptimizeConfig, PrepareConfig, optimize
    result = optimize(OptimizeConfig(PrepareConfig("model.pt"), out="opt", max_latency_ms=0.5, attacks=specs))

**Sampler.** Optuna's TPE sampler with ``constraints_func`` (constrained TPE, Optuna >= 3.0): one
objective (robust accuracy for aim robust, latency for aim speed) and the budget and the accuracy
gate as constraints (``value <= 0`` is feasible). The question a user brings has one aim and hard
limits, not a trade-off to browse, so a single-objective sampler that learns where the feasible
region lies spends its trials there; NSGA-II would spread them over the whole latency x robustness
front, most of it outside the budget, and needs populations larger than the few dozen trials a
search here runs. Every trial's point is still recorded, so pareto.json and report.html show the front.

**State.** The study lives in Optuna's SQLite storage, ``OUT/study.db``, under a fixed name: a killed
run resumes (trials left running are marked failed and drawn again), a rerun with more ``trials``
runs only the missing ones, and the points themselves are content-addressed sweep points under
``OUT/points/`` (an identical point is never rebuilt). The study stores the settings it was made
with (:func:`fingerprint`); a rerun with other settings is refused before the base stage, naming
what changed. The reference point (compress at `sparsity` 0.5 with `int8`, and compress's own defaults,
:mod:`.reference`) is built once beside the study, not drawn by the sampler; only complete and pruned
trials are records.

**Halving.** Aim robust scores a point on a quarter of the rows first (:func:`.trial.first_rung`) and
reports each row's worst-case outcome to Optuna's ``WilcoxonPruner``, which stops the point there when
a paired signed-rank test finds it worse than the best feasible trial on the same rows (p < 0.05);
the stopped trial's value is the best trial's figure plus its paired difference on the first rung,
and it is never a candidate for ``best/``.

**Host.** A profile of another device than this host is refused unless ``estimate`` gives that
device's calibration (latency predicted there); this is checked, with the profile and calibration
loaded, before anything is written.

**Choice.** The feasible trials in order of the aim; the first is compressed again into an ordinary
bundle with its attack sets, audited in full with :func:`edgerobust.edge.audit.audit`, and only
then renamed to ``OUT/best/``; if its audit misses the budget, the next one. If no point meets the
budget, :class:`~edgerobust.errors.QualityGateError` names the fastest point and its latency
(pareto.json and report.html are written; ``best/`` is not, and a previous run's is removed).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgerobust import events
from edgerobust.errors import DependencyError, UsageError
from edgerobust.research.optimize import space as S
from edgerobust.research.optimize.configs import OptimizeConfig
from edgerobust.research.optimize.trial import (FIRST_RUNG_MIN, Context, evaluate, integrity_check, score,
                                                stored_error)

logger = logging.getLogger(__name__)

STUDY_NAME = "edgerobust-optimize"
# what the base stage needs of a point (the model, data and attack sets are the search's; the point is never built)
BASE_POINT = {"sparsity": 0.5, "ratios": "uniform", "round_to": 8, "mode": "standard", "epochs": 0, "precision": "fp32"}
HALVING_P = 0.05  # WilcoxonPruner's threshold: a point stopped at the first rung is worse than the best at p < 0.05
KIND = "optimize"  # the output folder's marker (edgerobust.research.sweep.MARKER)
FINGERPRINT = "edgerobust.settings"  # the study's user attribute: the settings its trials were scored under


@dataclass
class OptimizeResult:
    """What a search found. ``trials``: every trial's record (pareto.json's rows); ``chosen``: the
    record of the point in ``best/`` and ``audited`` what its full audit measured (None: none chosen)."""

    out: str
    budget_ms: float
    base: dict
    reference: dict | None
    trials: list[dict]
    chosen: dict | None
    audited: dict | None
    ran: int  # trials run by this call
    seconds: float
    latency_kind: str  # measured | estimated
    aim: str = "robust"
    tried: list[str] = field(default_factory=list)  # candidates whose full audit missed the budget


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise DependencyError("The budget search needs the optuna package, which is not installed.",
                              why="Optuna is an optional extra of edgerobust.",
                              fix="pip install 'edgerobust[optimize]'.") from None
    return optuna


def optimize(cfg: OptimizeConfig, runner=None, sampler=None) -> OptimizeResult:
    """Search ``cfg.space`` for the best point under the budget; write OUT/study.db, points/, derived/,
    reference/, pareto.json, report.html and (when a point meets the budget) best/. ``sampler``: another
    Optuna sampler than the constrained TPE (benchmarks/optimize.py compares random search and the grid)."""
    from edgerobust.research.sweep import prepare_out

    optuna = require_optuna()
    t0 = time.perf_counter()
    prof, cal = _preflight(cfg)  # a bad profile, another device or a bad calibration: before anything is written
    out = Path(cfg.out)
    prepare_out(out, KIND, overwrite=False, fresh=False)
    with _quiet(optuna):
        study = _study(optuna, cfg, out, sampler, fingerprint(cfg, prof))  # a changed setting: before the base stage
        ctx = _context(cfg, runner, cal)
        reference = _reference(ctx)
        done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
        todo = max(cfg.trials - len(done), 0)
        if todo > 0:
            logger.info(f"optimize: {todo} trial(s) to run on {ctx.runner.name} (budget {ctx.budget_ms:.3g} ms p50, "
                        f"{ctx.base_latency['kind']}; the base: {ctx.base_latency['p50_ms']:.3g} ms; precisions "
                        f"{', '.join(ctx.precisions)})")
            with events.task("optimize trials", total=todo) as advance:
                try:
                    study.optimize(lambda t: _objective(t, ctx, advance), n_trials=todo, catch=())
                except ValueError as exc:  # Optuna: a parameter's distribution differs from the stored trials'
                    if "distribution" not in str(exc) and "dynamic value space" not in str(exc):
                        raise
                    raise _changed_error(out, ["space"]) from None
        records = [dict(t.user_attrs["record"], number=t.number) for t in study.trials
                   if t.state.name in ("COMPLETE", "PRUNED") and "record" in t.user_attrs]
    from edgerobust.research.optimize.choose import choose, clear_best, closest_error
    from edgerobust.research.optimize.report import write_outputs

    result = OptimizeResult(out=str(ctx.out), budget_ms=ctx.budget_ms, base=_base_record(ctx), reference=reference,
                            trials=records, chosen=None, audited=None, ran=todo, seconds=0.0,
                            latency_kind=ctx.base_latency["kind"], aim=cfg.aim)
    result.chosen, result.audited, result.tried = choose(ctx, records + [reference])
    if result.chosen is None:
        clear_best(ctx.out)  # a previous run's best/ would contradict pareto.json's chosen null
    result.seconds = time.perf_counter() - t0
    write_outputs(result, cfg)
    if result.chosen is None:
        raise closest_error(result)
    return result


def _reference(ctx: Context) -> dict:
    """The reference point's record (built once, reused on a rerun); aim speed cannot judge without it."""
    from edgerobust.errors import QualityGateError
    from edgerobust.research.optimize.reference import evaluate_reference

    rec = _plain(evaluate_reference(ctx))
    if rec.get("robust"):
        ctx.reference_robust = rec["robust"]["value"]
    elif ctx.cfg.aim == "speed":
        raise QualityGateError(f"Aim speed gates robust accuracy against the reference point, which has none: "
                               f"{rec.get('why')}.", why="`max_robust_drop` is measured from the reference's.",
                               fix="Use aim robust, or loosen the gates compress applies to the reference.")
    return rec


def _preflight(cfg: OptimizeConfig):
    """(the profile, the calibration or None), refused before anything is written: a profile of another
    device than this host is measured on only with ``estimate`` (its latency predicted there)."""
    from edgerobust.edge.audit import resolve_profile
    from edgerobust.edge.runtime.hostcheck import check_host, host_facts
    from edgerobust.edge.runtime.sessions import plan_providers

    prof, _ = resolve_profile(cfg.profile)
    if cfg.estimate is not None:
        from edgerobust.edge.estimate.calibrate import load_calibration

        return prof, load_calibration(cfg.estimate)
    host = check_host(prof, host_facts())
    if not host.matches:
        raise UsageError(f"The `profile` {prof.name} is another device: this host ({host.host}) is not it "
                         f"({'; '.join(host.mismatch)}).",
                         why="Latency measured here would be this host's running that profile's settings, and the "
                             "budget would be checked against figures that are no evidence for that device.",
                         fix=f"Give `estimate` with a calibration made on {prof.name}'s device (edgerobust calibrate), "
                             f"or a `profile` of this host.")
    plan_providers(prof, allow_fallback=False)  # a missing provider is one message, not a fallback's latency
    return prof, None


def _context(cfg: OptimizeConfig, runner, cal) -> Context:
    """The base stage once per run: base.onnx, eval and attack sets, the base's scores and latency."""
    from edgerobust.research.runners import LocalRunner, point_device
    from edgerobust.research.sweep import base_stage
    from edgerobust.research.sweep_eval import measure_speedups
    from edgerobust.workstation.pipeline.target import resolve_target
    from edgerobust.workstation.resources.torch_device import resolve_device

    runner = runner or LocalRunner()
    device = point_device(runner, resolve_device(cfg.prepare.device))
    out = Path(cfg.out)
    shared, ev, base = base_stage(S.sweep_config(BASE_POINT, cfg, out), out)
    if cal is not None:
        lat = base_estimate(cal, out / "base.onnx")
    else:
        _, p50 = measure_speedups([base], out, cfg.profile, cfg.latency_rounds)
        lat = {"kind": "measured", "p50_ms": p50["base"], "low_ms": None, "high_ms": None}
    plan = resolve_target(cfg.profile)
    ctx = Context(cfg=cfg, out=out, shared=shared, ev=ev, base=base, base_latency=lat, base_clean=None,
                  base_robust=None, budget_ms=cfg.latency_budget(lat["p50_ms"]), runner=runner, device=device,
                  plan=plan, precisions=S.precisions(cfg, plan.runtime), calibration=cal)
    ctx.base_clean, ctx.base_robust, ctx.base_corruption = score(ctx, out / "base.onnx")
    return ctx


def base_estimate(cal, path: Path) -> dict:
    """The base's predicted latency; a calibration that cannot predict it (kernels it lacks) is refused."""
    from edgerobust.edge.estimate.predict import predict_model

    m = predict_model(cal, "base", path)
    if m.p50_ms is None:
        raise UsageError(f"The `estimate` calibration lacks the kernels of the base model's "
                         f"{', '.join(m.missing) or 'layers'} layers: it cannot predict its latency.",
                         why="Every budget and every trial's latency is predicted from the base's kernels.",
                         fix="Calibrate that device again with those kernels (edgerobust calibrate), or give another "
                             "`estimate`.")
    return {"kind": "estimated", "p50_ms": m.p50_ms, "low_ms": m.low_ms, "high_ms": m.high_ms}


def fingerprint(cfg: OptimizeConfig, prof) -> dict:
    """The settings a study's trials depend on, flat: the config less ``trials`` and ``out`` (which a
    rerun may change), the profile's settings and the calibration's content in place of its path."""
    import hashlib

    from edgerobust.configio import to_dict

    d = {k: v for k, v in to_dict(cfg).items() if k not in ("trials", "out", "estimate", "_version")}
    if not cfg.corruptions:  # a study made before corruptions were searched keeps its fingerprint
        d = {k: v for k, v in d.items() if k not in ("corruptions", "corruption_severities")}
    flat: dict = {}

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            flat[prefix] = json.dumps(v, sort_keys=True, default=str)

    walk("", d)
    flat["profile (its settings)"] = hashlib.sha256(repr(prof).encode()).hexdigest()[:16]
    est = Path(cfg.estimate).read_bytes() if cfg.estimate is not None else b""
    flat["estimate (the calibration)"] = hashlib.sha256(est).hexdigest()[:16] if est else "none"
    return flat


def _changed_error(out: Path, keys: list[str]) -> UsageError:
    return UsageError(f"The study in `out` ({out}) was made with other settings: "
                      f"{', '.join(f'`{k}`' for k in keys)} changed since.",
                      why="Its trials were scored under those settings; mixing them with new ones would compare "
                          "points measured against different budgets, gates or spaces.",
                      fix="Use another `out`, or the same settings.")


def _damaged_error(out: Path, what: str) -> UsageError:
    return UsageError(f"The study in `out` ({out}) cannot be read back: {what}.",
                      why="Its study.db is damaged, or was written by another program or an incompatible Optuna.",
                      fix="Use another `out`, or move its study.db away to search again from the start (the points "
                          "built so far are reused).")


def _study(optuna, cfg: OptimizeConfig, out: Path, sampler=None, fp: dict | None = None):
    """The study in OUT/study.db: created with the settings' fingerprint, or loaded (refused when they
    changed) with its stale running trials marked failed."""
    # Optuna >= 5 reads the constraints a trial sets (Trial.set_constraint); older ones ask constraints_func
    legacy = {} if hasattr(optuna.trial.Trial, "set_constraint") else {"constraints_func": _constraints}
    sampler = sampler or optuna.samplers.TPESampler(seed=cfg.prepare.seed, **legacy,
                                                    n_startup_trials=min(10, max(2, cfg.trials // 3)))
    try:  # everything stored is decoded and checked here, before anything runs
        integrity_check(out / "study.db")
        study = optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{(out / 'study.db').resolve()}",
                                    load_if_exists=True, sampler=sampler, pruner=_pruner(optuna, cfg),
                                    direction="minimize" if cfg.aim == "speed" else "maximize")
        stored, trials = study.user_attrs.get(FINGERPRINT), study.trials
        bad = stored_error(study, trials) or (None if stored is None or isinstance(stored, dict) else
                                               "its record of the settings the trials were scored under is not the search's")
    except Exception as exc:  # SQLite's, SQLAlchemy's and Optuna's zoo of errors on a damaged or foreign file
        bad = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
    if bad:
        raise _damaged_error(out, bad)
    if fp is not None:
        if stored is None:
            study.set_user_attr(FINGERPRINT, fp)
        else:
            changed = sorted(k for k in set(stored) | set(fp) if stored.get(k) != fp.get(k))
            if changed:
                raise _changed_error(out, changed)
    for t in trials:
        if t.state == optuna.trial.TrialState.RUNNING:  # a killed run's: drawn again
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    return study


def _pruner(optuna, cfg: OptimizeConfig):
    """Aim robust with halving: Optuna's WilcoxonPruner over the first rung's per-row robust outcomes
    (a paired test against the best feasible trial on the same rows); else none."""
    import warnings

    if cfg.aim != "robust" or not cfg.halving:
        return optuna.pruners.NopPruner()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.WilcoxonPruner(p_threshold=HALVING_P, n_startup_steps=FIRST_RUNG_MIN // 2)


def _constraints(trial) -> list[float]:
    return list(trial.user_attrs.get("constraints", [1.0, 1.0]))


def _objective(trial, ctx: Context, advance) -> float:
    import optuna

    p = S.suggest(trial, ctx.cfg, ctx.precisions)
    t0 = time.perf_counter()
    seen: dict = {}
    rec = evaluate(ctx, p, halt=_halter(trial, seen))
    rec["seconds"] = time.perf_counter() - t0
    trial.set_user_attr("record", _plain(rec))
    violations = _violations(ctx, rec)
    trial.set_user_attr("constraints", violations)
    if hasattr(trial, "set_constraint"):
        for key, v in zip(("budget", "gate"), violations):
            trial.set_constraint(key, v)
    state = "feasible" if rec["feasible"] else "infeasible"
    advance(1, f"{rec['config']}: {state}{' (stopped at the first rung)' if rec.get('halved') else ''}")
    if rec["state"] == "skipped":
        raise optuna.TrialPruned(rec["why"])
    if ctx.cfg.aim == "robust":  # a point the pruner stopped: its paired estimate (_halter)
        return seen.get("estimate", rec["robust"].value if rec.get("robust") is not None else 0.0)
    if ctx.cfg.aim == "corruption":
        return rec["corruption"].value if rec.get("corruption") is not None else 0.0
    return rec["check_ms"] if rec.get("check_ms") is not None else float("inf")


def _halter(trial, seen: dict):
    """``halt(rows, ok)`` for :func:`evaluate`: report the first rung's per-row outcomes (step = the
    row's index in eval.npz, the same rows for every trial) and ask the pruner. When it stops the
    trial, ``seen["estimate"]`` is the value Optuna learns: the best trial's full figure plus this
    trial's difference from it on the same rows (paired), never above the best's."""
    def halt(rows, ok) -> str | None:
        for r, v in zip(rows, ok):
            trial.report(float(v), int(r))
        if not trial.should_prune():
            return None
        best = trial.study.best_trial
        mine = [float(v) for r, v in zip(rows, ok) if int(r) in best.intermediate_values]
        theirs = [best.intermediate_values[int(r)] for r in rows if int(r) in best.intermediate_values]
        gap = sum(mine) / len(mine) - sum(theirs) / len(theirs)
        seen["estimate"] = max(0.0, best.value + min(gap, 0.0))
        return (f"stopped at the first rung: robust on {100 * sum(mine) / len(mine):.1f}% of {len(mine)} rows against "
                f"{100 * sum(theirs) / len(theirs):.1f}% for trial {best.number} on the same rows, worse by Optuna's "
                f"WilcoxonPruner (p < {HALVING_P:g}): not scored on the rest")
    return halt


def _violations(ctx: Context, rec: dict) -> list[float]:
    """Optuna's constraints: <= 0 is met. The budget (ms over it) and the gate (1 if failed)."""
    gate = 1.0 if rec.get("gate_failed") else 0.0
    if rec.get("over_budget") is not None:  # judged (a speedup budget: against the same run's base)
        return [float(rec["over_budget"]), gate]
    ms = rec.get("check_ms", rec.get("bound_ms"))
    return [float(ms - ctx.budget_ms) if ms is not None else 1.0, gate]


def _plain(rec: dict) -> dict:
    """A record as JSON values (Proportions as dicts)."""
    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in rec.items()}


def _base_record(ctx: Context) -> dict:
    return {"latency": ctx.base_latency, "clean": dataclasses.asdict(ctx.base_clean),
            "robust": dataclasses.asdict(ctx.base_robust), "macs": ctx.shared.base_macs,
            "corruption": dataclasses.asdict(ctx.base_corruption) if ctx.base_corruption is not None else None}


@contextlib.contextmanager
def _quiet(optuna):
    """Optuna's own lines off while the search runs (the library reports through events), its
    warnings too: the one it logs for a failed trial carries the traceback of what stopped it (a
    Ctrl-C, or an error the search reports itself)."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)
