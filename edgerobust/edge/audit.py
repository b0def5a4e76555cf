"""The audit: the deployed model's robustness next to its speedup, measured on the device.

``audit(AuditConfig(model=...)) -> AuditReport`` finds the bundle beside the model, verifies
its hashes, refuses adversarial sets crafted on another model or eval set, measures latency,
memory and size of base and deployed on a device profile, replays the clean and adversarial
sets through both sessions (:mod:`edgerobust.edge.scores.replay`, streamed: only each sample's predicted
class and top-1 margin are kept, and returned as ``AuditReport.predictions``) and scores them
(accuracy with Wilson CIs, attack/transfer success, flip rate, exact McNemar; what each Δ
compares: :mod:`edgerobust.edge.scores.scoring`). ``AuditReport.provenance`` records what was audited, by
sha256. It also checks that this host is the profile's device
(:mod:`edgerobust.edge.runtime.hostcheck`) and says so when it is not. Common-corruption sets are replayed too
(:mod:`edgerobust.edge.scores.corruption`; their answers and hashes join the predictions and the provenance).
Rendering and writing: :mod:`edgerobust.edge.render.report`. Torch-free.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgerobust import __version__
from edgerobust.edge.scores.advcheck import check_adv_sets
from edgerobust.edge.scores.corruption import check_corruption_sets, corruption_source, replay_corruptions
from edgerobust.edge.files.bundle import MANIFEST, AdvSet, Bundle, EvalSet
from edgerobust.edge.files.npzio import sha256_file
from edgerobust.edge.estimate.predict import EstimateConfig, estimate
from edgerobust.errors import BundleError, ModelLoadError, ProfileError, UsageError
from edgerobust.edge.runtime.hostcheck import HostCheck, check_host, host_facts
from edgerobust.edge.runtime.measure import MeasureReport, measure
from edgerobust.edge.runtime.sessions import open_session, open_sessions, plan_providers
from edgerobust.edge.files.predictions import Predictions
from edgerobust.edge.runtime.profiles import best_match_profile, load_profile
from edgerobust.edge.runtime.profile_schema import DeviceProfile
from edgerobust.edge.scores.query import QueryConfig, check_query, require_art
from edgerobust.edge.files.provenance import (Provenance, bundle_provenance, check_adv_provenance, check_eval_spec,
                                              check_input_spec)
from edgerobust.edge.scores.replay import replay
from edgerobust.edge.scores.sanity import assess, held_out_warning, int8_agreement_warning
from edgerobust.edge.scores.scoring import SetResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditConfig:
    """What to audit and how.

    model: the deployed ONNX model (normally ``<bundle>/model.onnx``).
    profile: a shipped profile name, a path to a ``.toml``, a DeviceProfile, or None for the
        host's best match.
    baseline / eval_set / adv_sets: override the bundle's base model, eval set and
        adversarial sets (all three are needed when the model has no bundle beside it).
    verify: check the sha256 of every bundle file against the manifest first.
    allow_fallback: measure on the providers this host has when the profile's are missing.
    batch_size: samples per inference while replaying the sets (not the latency batch sizes).
    out_dir: where the report goes (None: ``<bundle>/reports/<profile>-<timestamp>/``).
    fail_on_budget: the CLI exits 1 when a budget is missed (the audit itself never raises).
    measure_memory: run the fresh-process memory probe.
    show_progress: progress bars on stderr.
    profile_reason: why this profile was chosen, when the caller picked it automatically.
    variants: also measure and replay the bundle's other precision variants of the pruned model
        (model_fp32.onnx, model_fp16.onnx, model_int8.onnx beside the deployed one), interleaved with
        base and deployed, and say which is fastest on this device.
    query: a QueryConfig (edgerobust.edge.scores.query): a query attack run directly on the sessions (base and
        deployed), torch-free; "quick" (query.QUICK): its short default, where ART is installed; None: none.
    estimate: a device's calibration file: also predict each model's latency there (estimate.predict), apart.
    """

    model: Path
    profile: str | os.PathLike | DeviceProfile | None = None
    baseline: Path | None = None
    eval_set: Path | None = None
    adv_sets: tuple[Path, ...] = ()
    verify: bool = True
    allow_fallback: bool = False
    batch_size: int = 64
    out_dir: Path | None = None
    fail_on_budget: bool = False
    measure_memory: bool = True
    show_progress: bool = True
    profile_reason: str | None = None
    variants: bool = True
    query: QueryConfig | str | None = None
    estimate: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "model", Path(self.model))
        for name in ("baseline", "eval_set", "out_dir", "estimate"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, Path(v))
        object.__setattr__(self, "adv_sets", tuple(Path(p) for p in self.adv_sets))
        check_query(self.query)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError(f"batch_size must be a positive integer; got {self.batch_size!r}.")


@dataclass(frozen=True)
class BudgetCheck:
    """One profile budget for the deployed model; ``passed`` is None when it was not measured.

    ``evidence`` is False when this host is not the profile's device and the value depends on
    the host (latency, memory): it is this host's running the profile's settings, so it says
    nothing about the device's budget. A model's file size is the same everywhere.
    """

    name: str
    limit: float
    value: float | None
    unit: str
    passed: bool | None
    evidence: bool = True


@dataclass(frozen=True)
class AuditReport:
    """Everything an audit found; serialized by edgerobust.edge.render.report."""

    created: str
    edgerobust_version: str
    model: str
    baseline: str
    eval_set: str
    bundle: str | None
    bundle_name: str | None
    verified: bool
    profile: str
    profile_source: str
    profile_reason: str | None
    measurement: MeasureReport
    sets: tuple[SetResult, ...]
    budgets: tuple[BudgetCheck, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)
    host_check: HostCheck | None = None
    provenance: Provenance | None = None
    # the deployed model's precision (fp32, fp16, int8) when the bundle says, and every variant
    # measured: role -> precision (the other variants' roles are their precision names)
    deployed_variant: str | None = None
    variants: dict[str, str] = field(default_factory=dict)
    # every model's class and margin on every sample: written to predictions.npz, not to report.json
    predictions: Predictions | None = field(default=None, repr=False, compare=False)
    # per-sample worst-case robust accuracy per threat and eps (edgerobust.edge.scores.robust), the
    # sanity checks on them (edgerobust.edge.scores.sanity) and the query attack's records (query.py)
    robust: tuple = ()
    sanity: tuple = ()
    query: tuple = ()
    query_status: str = "off"  # what came of AuditConfig.query: ran, off, not installed (query.QUERY_STATUS)
    estimate: object = None  # an estimate.predict.Estimate: predicted on a calibrated device, never measured
    corruption: object = None  # a scores.corruption.CorruptionReport, None without corruption sets

    @property
    def fallback(self) -> bool:
        return self.measurement.fallback

    @property
    def host_matches_profile(self) -> bool:
        """False when this host is not the profile's device (see host_check.mismatch)."""
        return self.host_check is None or self.host_check.matches

    @property
    def budgets_passed(self) -> bool:
        return all(b.passed is not False for b in self.budgets)


def resolve_profile(profile: str | os.PathLike | DeviceProfile | None) -> tuple[DeviceProfile, str | None]:
    """The profile to use and, when it was chosen automatically, why."""
    if isinstance(profile, DeviceProfile):
        return profile, None
    if profile is None:
        match = best_match_profile()
        return load_profile(match.name), match.reason
    return load_profile(profile), None


@dataclass(frozen=True)
class _Inputs:
    bundle: Bundle | None
    baseline: Path
    eval_set: Path
    adv_sets: tuple[Path, ...]
    spec: dict | None
    warnings: tuple[str, ...]
    variants: dict[str, Path] = field(default_factory=dict)  # every precision variant, deployed included


def _locate(config: AuditConfig) -> _Inputs:
    """Find the bundle and the files to use; verify hashes when asked."""
    if not config.model.is_file():
        raise UsageError(f"The model '{config.model}' {'is a folder' if config.model.is_dir() else 'does not exist'}.",
                         fix="Pass the deployed model inside a bundle, e.g. "
                             f"{config.model / 'model.onnx' if config.model.is_dir() else 'export/mymodel/model.onnx'}.")
    bundle = Bundle.find(config.model)
    warnings: list[str] = []
    if bundle is None:
        if config.baseline is None or config.eval_set is None:
            raise BundleError(f"There is no bundle (manifest.json) beside '{config.model}'.",
                              why="Without a bundle the audit does not know the base model and the eval set.",
                              fix="Point at model.onnx inside a bundle written by `edgerobust compress`, "
                                  "or pass `baseline` BASE.onnx and `eval_set` EVAL.npz (and `adv_sets` SET.npz).")
        return _Inputs(None, config.baseline, config.eval_set, config.adv_sets, None,
                       ("no bundle: files were not verified against a manifest",))
    if config.verify:
        bundle.verify()
        rel = _relative(config.model, bundle.root)
        if rel is None or rel not in bundle.manifest.get("files", {}):
            warnings.append(f"'{config.model.name}' is not listed in the bundle manifest, so it was not verified")
    else:
        warnings.append("bundle hashes were not checked (verification was turned off)")
    baseline = config.baseline or bundle.path("base")
    if baseline.resolve() == config.model.resolve():
        warnings.append("the audited model is the base model itself; deltas are zero by construction")
    variants = {k: p for k, p in bundle.variants.items() if p.is_file()}
    return _Inputs(bundle, baseline, config.eval_set or bundle.eval_path,
                   config.adv_sets or tuple(bundle.adv_paths), bundle.input_spec, tuple(warnings), variants)


def _roles(config: AuditConfig, inputs: _Inputs) -> tuple[dict[str, Path], str | None]:
    """The models to audit by role (base, deployed and, with ``config.variants``, the other precision
    variants under their precision names) and the deployed model's precision when known."""
    same = {config.model.resolve(), inputs.baseline.resolve()}
    deployed = next((k for k, p in inputs.variants.items() if p.resolve() == config.model.resolve()), None)
    models = {"base": inputs.baseline, "deployed": config.model}
    if config.variants:
        models.update({k: p for k, p in inputs.variants.items() if p.resolve() not in same})
    return models, deployed


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def check_budgets(profile: DeviceProfile, m: MeasureReport, role: str = "deployed",
                  evidence: bool = True) -> tuple[BudgetCheck, ...]:
    """The profile's budgets against the deployed model's measurements.

    ``evidence``: whether this host is the profile's device (BudgetCheck.evidence).
    """
    b, model = profile.budgets, m.model(role)
    lat = model.latency_at(1) if model else None
    measured = (("latency_ms_p50", b.latency_ms_p50, lat.p50_ms if lat else None, "ms"),
                ("peak_memory_mb", b.peak_memory_mb, model.memory.peak_mb if model and model.memory else None, "MiB"),
                ("model_size_mb", b.model_size_mb, model.size_mb if model else None, "MiB"))
    return tuple(BudgetCheck(name, limit, value, unit, None if value is None else value <= limit,
                             evidence or name == "model_size_mb")
                 for name, limit, value, unit in measured if limit is not None)


def _host_warnings(profile: DeviceProfile, check: HostCheck) -> list[str]:
    """A warning when this host is not the profile's device, and one when threads exceed cores."""
    out = []
    if not check.matches:
        out.append(f"host: this host is not {profile.name}'s device ({'; '.join(check.mismatch)}). The "
                   f"{check.settings_line(profile.name)}; budgets are marked so.")
    if check.threads:
        out.append(check.threads)
    return out


def _open(models: dict[str, Path], profile: DeviceProfile, allow_fallback: bool) -> tuple[dict, list[str]]:
    """Sessions for base and deployed (an error stops the audit) and for each other variant (one that
    onnxruntime cannot load is left out with a warning: it is extra evidence, not the audited model)."""
    main = {r: models[r] for r in ("base", "deployed")}
    sessions = open_sessions(main, profile, allow_fallback)
    first, out = sessions["base"], []
    for role in [r for r in models if r not in main]:
        try:
            sessions[role] = open_session(models[role], role, profile, allow_fallback, first.plan, first.info.isolation)
        except (ModelLoadError, ProfileError) as exc:
            out.append(f"variant {role} ({Path(models.pop(role)).name}) left out: {exc.what}")
    return sessions, out


def _drop_fixed_batch_variants(sessions: dict, models: dict) -> list[str]:
    """Leave out a variant whose batch axis is fixed where base and deployed take others: it would
    shrink the batch sizes measured for the main pair (only sizes every model takes are timed)."""
    main = {sessions[r].input.shape[0] for r in ("base", "deployed")}
    out = []
    for role in [r for r in sessions if r not in ("base", "deployed")]:
        fixed = sessions[role].input.shape[0]
        if fixed is not None and main != {fixed}:
            del sessions[role]
            name = Path(models.pop(role)).name
            out.append(f"variant {role} ({name}) left out: its batch axis is fixed to {fixed}, and timing it "
                       "would restrict base and deployed to that batch size")
    return out


def no_adv_sets_warning(bundle: Bundle | None) -> str:
    """What to do when there is nothing adversarial to replay."""
    src = bundle.manifest.get("source") if bundle is not None else None
    model = f" ({Path(src['path']).name})" if isinstance(src, dict) and isinstance(src.get("path"), str) else ""
    return ("no adversarial sets: only clean accuracy was audited, robustness was not. Craft sets on the base "
            f"model{model} with `edgerobust attack` on the workstation (e.g. pgd at eps 8/255 into a folder sets), "
            "then audit again with sets/eval.npz as the evaluation set and sets/adv/pgd_8-255.npz as an adversarial "
            "set (or compress again with attack sets).")


def _check_sets(config: AuditConfig, inputs: _Inputs) -> tuple[EvalSet, Provenance]:
    """Refuse a base model, eval set or adversarial set that does not belong here; return the eval
    set and what is audited, by content."""
    for what, path in (("base model", inputs.baseline), ("evaluation set", inputs.eval_set)):
        if not path.is_file():
            raise BundleError(f"The {what} '{path}' does not exist.",
                              fix="Check `baseline`/`eval_set`, or copy the whole bundle again.")
    base_sha, eval_sha = sha256_file(inputs.baseline), sha256_file(inputs.eval_set)
    # A set crafted by `edgerobust attack` on the torch model the bundle was compressed from
    # records that file's hash: it is the same base model, so it is accepted too.
    base_shas = {base_sha}
    if inputs.bundle is not None and isinstance(inputs.bundle.manifest.get("source"), dict):
        src = inputs.bundle.manifest["source"].get("sha256")
        if isinstance(src, str) and src:
            base_shas.add(src)
    ev = EvalSet.load(inputs.eval_set)
    model_sha = sha256_file(config.model)
    targets = {model_sha: config.model.name}
    # white-box sets are crafted on the pruned model (fp32) or an int8 simulation of it: any variant
    # of the pruned model is a target they may name, whichever of them is deployed
    for p in inputs.variants.values():
        if p.resolve() != config.model.resolve():
            targets[sha256_file(p)] = p.name
    sets = {}
    for p in inputs.adv_sets:  # metadata, labels and indices only: the inputs stay on disk
        adv = AdvSet.load(p, with_x=False)
        check_adv_provenance(adv, p, base_shas, eval_sha, len(ev.y), ev.y, targets)
        if adv.x.shape[1:] != ev.x.shape[1:]:
            raise BundleError(f"The adversarial set '{p}' holds inputs of shape {list(adv.x.shape[1:])}, "
                              f"the eval set {list(ev.x.shape[1:])}.")
        sets[adv.name] = sha256_file(p)
    b = inputs.bundle
    prov = bundle_provenance({"base": base_sha, "deployed": model_sha, "eval": eval_sha}, sets,
                             b.manifest if b else None, sha256_file(b.root / MANIFEST) if b else None)
    return ev, prov


def audit(config: AuditConfig) -> AuditReport:
    """Run the whole audit; see the module docstring."""
    if isinstance(config.query, QueryConfig):
        require_art()  # before minutes of measuring, not after
    inputs = _locate(config)
    profile, reason = resolve_profile(config.profile)
    reason = reason or config.profile_reason
    plan_providers(profile, allow_fallback=config.allow_fallback)  # a missing provider is the one message
    warnings = list(inputs.warnings)
    host = check_host(profile, host_facts())
    host_warnings = _host_warnings(profile, host)
    if not host.matches and config.show_progress:
        logger.warning(host_warnings[0])  # before minutes of measuring, not only at the end
    warnings += host_warnings

    # Provenance first: it is cheap and a mismatch makes everything after it meaningless.
    ev, prov = _check_sets(config, inputs)
    warnings += [w for w in (held_out_warning(ev.meta), int8_agreement_warning(inputs.bundle)) if w]
    # Every set's contents too (finite, in range, within eps of its clean rows), verified or not.
    check_adv_sets(inputs.adv_sets, ev, (inputs.spec or {}).get("value_range"))
    corrupted, note = corruption_source(inputs.bundle, inputs.eval_set)
    check_corruption_sets(corrupted.corruption_paths if corrupted else [], inputs.eval_set, ev)
    warnings += [w for w in (note, None if inputs.adv_sets else no_adv_sets_warning(inputs.bundle)) if w]

    models, deployed_variant = _roles(config, inputs)
    sessions, left_out = _open(models, profile, config.allow_fallback)
    warnings += left_out + _drop_fixed_batch_variants(sessions, models)
    predicted = estimate(EstimateConfig(config.estimate, models, profile.measure.batch_sizes)) if config.estimate else None
    spec = inputs.spec or {"name": sessions["base"].input.name, "shape": list(sessions["base"].input.shape)}
    where = "the bundle manifest" if inputs.spec else "the base model"
    for s in sessions.values():
        check_input_spec(s, spec, where)
    check_eval_spec(ev.x.shape, inputs.eval_set, spec, where)
    if any(s.info.fallback for s in sessions.values()):
        used = ", ".join(sessions["deployed"].info.providers)
        warnings.append(f"fallback: profile '{profile.name}' asked for {', '.join(profile.provider_names)}; "
                        f"measured on {used}. These numbers do not describe the profiled device.")
        if config.show_progress:
            logger.warning(warnings[-1])

    measurement = measure(sessions, profile, memory=config.measure_memory, show_progress=config.show_progress)
    results, predictions = replay(sessions, inputs.eval_set, ev, inputs.adv_sets, config.batch_size,
                                  config.show_progress)
    robust, checks, query, query_status = assess(results, predictions, deployed_variant, sessions, ev,
                                                 config.query, config.batch_size, config.show_progress)
    warnings += [f"sanity check failed ({c.name}): {c.detail}" for c in checks if c.passed is False]
    corruption, predictions, prov = replay_corruptions(sessions, corrupted, inputs.eval_set, ev, predictions, prov,
                                                       config.batch_size, config.show_progress)
    return AuditReport(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        edgerobust_version=__version__, model=str(config.model), baseline=str(inputs.baseline),
        eval_set=str(inputs.eval_set), bundle=str(inputs.bundle.root) if inputs.bundle else None,
        bundle_name=inputs.bundle.manifest.get("name") if inputs.bundle else None,
        verified=bool(inputs.bundle and config.verify), profile=profile.name, profile_source=profile.source,
        profile_reason=reason, measurement=measurement, sets=tuple(results),
        budgets=check_budgets(profile, measurement, evidence=host.matches), warnings=tuple(warnings),
        host_check=host, provenance=prov, predictions=predictions, deployed_variant=deployed_variant,
        robust=robust, sanity=checks, query=tuple(q.to_dict() for q in query), query_status=query_status,
        estimate=predicted, corruption=corruption, variants={**({"deployed": deployed_variant} if deployed_variant else {}),
                                      **{r: r for r in models if r not in ("base", "deployed")}})

