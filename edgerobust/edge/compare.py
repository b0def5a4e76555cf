"""Does the same model give the same answers on different runtimes? Audits of one bundle, side by side.

``compare(CompareConfig(reports=(A, B, ...))) -> Comparison`` reads two or more audit report
folders (report.json and predictions.npz, :mod:`edgerobust.edge.files.predictions`), refuses reports of
different bundles (the sha256 of base, deployed model and eval set must agree) and a missing or
changed predictions file, and puts side by side per device: latency and speedup, accuracy per
set, and for every pair of devices and every set they share the **cross-runtime agreement** of
the deployed model: the share of samples whose predicted class differs (Wilson 95% CI), an
exact McNemar test of the two devices' correctness on the same samples, and the most disputed
samples: those where the devices disagree, the most confident first (ordered by the smaller of
the two top-1 margins). The base model's disagreement is given alongside, as the reference of
fp32 kernels. Common-corruption sets (audit report version 9 and later) that every report shares are
compared set by set like the others, and pooled per device and per pair of devices
(:class:`CorruptionPool`): the renderings show the pooled figures, compare.json holds both.
Rendering is in :mod:`edgerobust.edge.render.compare_render`. Torch-free.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerobust.errors import BundleError, UsageError
from edgerobust.edge.estimate.beside import estimated_rows
from edgerobust.edge.files.npzio import json_shape_error
from edgerobust.edge.files.predictions import CORRUPTION, Predictions, SetPredictions, load_predictions
from edgerobust.edge.scores.stats import McNemar, Proportion, mcnemar_exact, proportion

COMPARE_TYPE = "edgerobust.edge.compare-report"
COMPARE_VERSION = 2  # 2: ``corruption``, the shared common-corruption sets pooled (their per-set rows join the rest)
AUDIT_TYPE = "edgerobust.edge.audit-report"
MIN_AUDIT_VERSION = 3  # the first audit report with provenance hashes and per-sample predictions
POOLED = ("pooled over the corruption sets: each eval row counts once per set (rows repeat across sets), so the "
          "pooled samples are not independent and no interval is given")
IDENTITY = (("base_sha256", "base model"), ("deployed_sha256", "deployed model"), ("eval_sha256", "eval set"))
_SHA, _MS = (str, type(None)), (int, float, type(None))
# what compare reads of a report.json's _data (npzio.json_shape_error): a hand-edited or damaged one is one BundleError
REPORT_SHAPE = {"profile": str, "bundle_name": _SHA, "predictions": {"file": str, "sha256": _SHA}, "summary": {},
                "provenance": {"base_sha256": _SHA, "deployed_sha256": _SHA, "eval_sha256": _SHA, "sets": {"*": _SHA}},
                "sets": [{"name": str}], "corruption": (type(None), {"sets": [{"name": str}]}),
                "measurement": {"host": {}, "speedup": [{"batch_size": int, "p50": _MS}], "models": [{
                    "role": _SHA, "session": {"providers": [str]}, "precision": (type(None), {"declared": str}),
                    "latency": [{"batch_size": int, "p50_ms": _MS}]}]}}


@dataclass(frozen=True)
class CompareConfig:
    """reports: two or more audit report folders of one bundle (a runtimes comparison's folder counts as
    the audits it holds). top: disputed samples listed per set and pair."""

    reports: tuple[Path, ...]
    top: int = 10

    def __post_init__(self):
        from edgerobust.edge.runtimes import report_folders

        # a runtimes comparison's folder (audit `runtimes`) stands for its audits, one device per runtime
        object.__setattr__(self, "reports", tuple(f for p in self.reports for f in report_folders(p) or [Path(p)]))
        if len(self.reports) < 2:
            raise UsageError(f"compare needs two or more report folders; got {len(self.reports)}.",
                             fix="Pass the report folders of audits of one bundle, e.g. "
                                 "`edgerobust compare bundle/reports/laptop-cpu-… jetson-reports/…`.")
        seen = [p.resolve() for p in self.reports]
        dup = next((p for i, p in enumerate(self.reports) if seen[i] in seen[:i]), None)
        if dup is not None:
            raise UsageError(f"The report folder '{dup}' is given twice.", fix="Pass each audit once.")
        if isinstance(self.top, bool) or not isinstance(self.top, int) or self.top < 0:
            raise UsageError(f"`top` must be a non-negative integer; got {self.top!r}.")


@dataclass(frozen=True)
class AuditRun:
    """One audit as compare reads it: its folder, report.json's data and its predictions."""

    folder: Path
    data: dict
    predictions: Predictions


@dataclass(frozen=True)
class Device:
    """One audited device: the profile, this host, what the deployed model ran on."""

    label: str
    folder: str
    profile: str
    host: str
    providers: tuple[str, ...]
    fallback: bool
    host_matches_profile: bool
    created: str
    precision: str = "not recorded"  # what the deployed model's float layers ran in (report version 5 and later)


@dataclass(frozen=True)
class DeviceLatency:
    device: str
    batch_size: int
    base_p50_ms: float | None
    deployed_p50_ms: float | None
    speedup: float | None


@dataclass(frozen=True)
class DeviceAccuracy:
    device: str
    set: str
    base: Proportion
    deployed: Proportion


@dataclass(frozen=True)
class Disputed:
    """A sample two devices' deployed models answer differently. index: position in the set;
    row: the eval row it was made from; pred / margin: device a's and device b's."""

    index: int
    row: int
    label: int
    pred: tuple[int, int]
    margin: tuple[float, float]


@dataclass(frozen=True)
class Agreement:
    """Devices a and b on one set. disagree: deployed predictions differ; base_disagree: the
    base's differ; mcnemar: deployed correctness, only_a = right on a only."""

    set: str
    a: str
    b: str
    n: int
    disagree: Proportion
    base_disagree: Proportion
    mcnemar: McNemar
    disputed: tuple[Disputed, ...]


@dataclass(frozen=True)
class PooledAccuracy:
    """One device's accuracy over the samples of every shared corruption set together (no interval: POOLED)."""

    device: str
    base: Proportion
    deployed: Proportion


@dataclass(frozen=True)
class PooledAgreement:
    """Devices a and b over the samples of every shared corruption set together: deployed (and base) answers
    that differ and the McNemar counts, summed (no interval, no test: POOLED); and ``worst``, the set where
    most deployed answers differ (None when none does), with its share there (Wilson CI: one set's samples
    are distinct rows) and its own exact McNemar p."""

    a: str
    b: str
    n: int
    disagree: Proportion
    base_disagree: Proportion
    only_a: int
    only_b: int
    worst: str | None = None
    worst_disagree: Proportion | None = None
    worst_p_value: float | None = None


@dataclass(frozen=True)
class CorruptionPool:
    """The common-corruption sets every report shares, by name; their per-set figures are in
    Comparison.accuracy and .agreement like any set's, pooled here."""

    sets: tuple[str, ...]
    accuracy: tuple[PooledAccuracy, ...]
    agreement: tuple[PooledAgreement, ...]
    note: str = POOLED


@dataclass(frozen=True)
class Comparison:
    bundle: dict
    devices: tuple[Device, ...]
    latency: tuple[DeviceLatency, ...]
    accuracy: tuple[DeviceAccuracy, ...]
    agreement: tuple[Agreement, ...]
    sets_left_out: tuple[str, ...] = field(default_factory=tuple)
    corruption: CorruptionPool | None = None  # None: no corruption set in every report
    corruption_left_out: tuple[str, ...] = ()  # the corruption sets among sets_left_out
    estimated: tuple = ()  # beside.EstimatedLatency: devices predicted from a report's calibration, not measured

    def device(self, label: str) -> Device:
        return next(d for d in self.devices if d.label == label)

    def is_corruption(self, name: str) -> bool:
        """Whether the set ``name`` is a shared common-corruption set (shown pooled, not row by row)."""
        return self.corruption is not None and name in self.corruption.sets


# =============================================================================================
# reading and checking


def _no_report(folder: Path) -> BundleError:
    inner = sorted(p.parent.name for p in folder.glob("*/report.json"))[:5] if folder.is_dir() else []
    fix = (f"It holds report folders: {', '.join(inner)}; pass those." if inner else
           "Pass the folder an audit wrote (default <bundle>/reports/<profile>-<time>/).")
    return BundleError(f"'{folder}' holds no audit report (report.json).", fix=fix)


def load_audit(folder: str | os.PathLike) -> AuditRun:
    """Read one report folder; refuse what compare cannot trust or use."""
    folder = Path(folder)
    path = folder / "report.json"
    if not path.is_file():
        raise _no_report(folder)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"'{path}' is not readable JSON.", why=str(exc),
                          fix="Copy the report folder again from the device.") from exc
    if not isinstance(doc, dict) or doc.get("_type") != AUDIT_TYPE or not isinstance(doc.get("_data"), dict):
        raise BundleError(f"'{path}' is not an audit report.",
                          why=f"Its _type is {doc.get('_type') if isinstance(doc, dict) else None!r}.",
                          fix="Pass report folders written by `edgerobust audit`.")
    version, data = doc.get("_version"), doc["_data"]
    if not isinstance(version, int) or version < MIN_AUDIT_VERSION or not data.get("predictions") \
            or not data.get("provenance"):
        raise BundleError(f"'{path}' (audit report version {version}) has no per-sample predictions.",
                          why="Reports before version 3 recorded neither the predictions nor the hashes of the "
                              "audited files, so they cannot be compared sample by sample.",
                          fix="Run the audit again on that device with this version of edgerobust.")
    bad = json_shape_error(data, REPORT_SHAPE, "_data")
    if bad:
        raise BundleError(f"'{path}' is damaged: its field {bad} is not what an audit writes.",
                          fix="Copy the report folder again from the device, or run the audit again.")
    rec = data["predictions"]
    preds = load_predictions(folder / str(rec.get("file")), sha256=rec.get("sha256"))
    # corruption sets' answers are kept from version 9 on; before, report.json lists them but predictions.npz not
    corr = [s.get("name") for s in (data.get("corruption") or {}).get("sets", [])] if version >= 9 else []
    names = [s.get("name") for s in data.get("sets", [])] + corr
    if [s.name for s in preds.sets] != names or not {"base", "deployed"} <= set(preds.roles):
        raise BundleError(f"The predictions in '{folder}' do not match its report.json.",
                          why=f"The report lists the sets {names}, the predictions {[s.name for s in preds.sets]}.",
                          fix="Copy the report folder again from the device.")
    return AuditRun(folder=folder, data=data, predictions=preds)


def _same_bundle(runs: list[AuditRun]) -> None:
    """Refuse reports whose audited base, deployed model or eval set differ."""
    first = runs[0]
    for run in runs[1:]:
        diff = [what for key, what in IDENTITY if run.data["provenance"].get(key) != first.data["provenance"].get(key)]
        if diff:
            def desc(r: AuditRun) -> str:
                p = r.data["provenance"]
                return (f"'{r.folder}' audited bundle {r.data.get('bundle_name')!r} "
                        f"({', '.join(f'{what} {str(p.get(key))[:12]}…' for key, what in IDENTITY)})")
            raise BundleError(f"The reports are audits of different bundles: their {', '.join(diff)} differ.",
                              why=f"{desc(first)}; {desc(run)}.",
                              fix="Compare audits of one bundle: copy the same bundle folder to each device "
                                  "and audit its model.onnx there.")


def _labels(runs: list[AuditRun]) -> list[str]:
    """The profile name, or the folder name where two audits share a profile."""
    profiles = [r.data.get("profile", "?") for r in runs]
    return [p if profiles.count(p) == 1 else f"{p} [{r.folder.name}]" for p, r in zip(profiles, runs)]


# =============================================================================================
# what is compared


def _device(label: str, run: AuditRun) -> Device:
    d, m = run.data, run.data.get("measurement", {})
    h = m.get("host", {})
    deployed = next((x for x in m.get("models", []) if x.get("role") == "deployed"), {})
    summary = d.get("summary", {})
    return Device(label=label, folder=str(run.folder), profile=d.get("profile", "?"),
                  host=f"{h.get('cpu', '?')}, {h.get('cores', '?')} cores, {h.get('machine', '?')}",
                  providers=tuple(deployed.get("session", {}).get("providers", ())),
                  fallback=bool(summary.get("fallback")), host_matches_profile=bool(summary.get("host_matches_profile", True)),
                  created=str(d.get("created", "")),
                  precision=(deployed.get("precision") or {}).get("declared", "not recorded"))


def _latency(label: str, run: AuditRun) -> list[DeviceLatency]:
    m = run.data.get("measurement", {})
    lat = {x.get("role"): {s["batch_size"]: s.get("p50_ms") for s in x.get("latency", []) if "batch_size" in s}
           for x in m.get("models", [])}
    speed = {s["batch_size"]: s.get("p50") for s in m.get("speedup", []) if "batch_size" in s}
    sizes = sorted(set(lat.get("base", {})) | set(lat.get("deployed", {})))
    return [DeviceLatency(label, bs, lat.get("base", {}).get(bs), lat.get("deployed", {}).get(bs), speed.get(bs))
            for bs in sizes]


def _accuracy(label: str, s: SetPredictions) -> DeviceAccuracy:
    """Accuracy from the per-sample predictions (the file whose hash report.json records)."""
    base, dep = (proportion(int(np.sum(s.pred[r] == s.y)), s.n) for r in ("base", "deployed"))
    return DeviceAccuracy(label, s.name, base, dep)


def _shared_sets(runs: list[AuditRun]) -> tuple[list[str], list[str]]:
    """Set names every report holds with the same file (sha256), and the names left out."""
    def sha(run: AuditRun, name: str) -> str | None:
        p = run.data["provenance"]
        return p.get("eval_sha256") if name == "clean" else p.get("sets", {}).get(name)

    names = list(dict.fromkeys(s.name for r in runs for s in r.predictions.sets))
    shared = [n for n in names if all(r.predictions.get(n) is not None for r in runs)
              and sha(runs[0], n) is not None and len({sha(r, n) for r in runs}) == 1]
    return shared, [n for n in names if n not in shared]


def agreement(name: str, a: str, b: str, sa: SetPredictions, sb: SetPredictions, top: int) -> Agreement:
    """Devices a and b on one set (see Agreement)."""
    if sa.n != sb.n or not np.array_equal(sa.y, sb.y) or not np.array_equal(sa.idx, sb.idx):
        raise BundleError(f"The set '{name}' holds different samples in the reports of {a} and {b}.",
                          why="Its labels or eval rows differ although the set files have the same sha256.",
                          fix="Copy both report folders again from the devices.")
    pa, pb = sa.pred["deployed"], sb.pred["deployed"]
    differ = np.flatnonzero(pa != pb)
    ma, mb = sa.margin["deployed"], sb.margin["deployed"]
    order = differ[np.lexsort((differ, -np.minimum(ma[differ], mb[differ])))][:top]
    disputed = tuple(Disputed(index=int(i), row=int(sa.idx[i]), label=int(sa.y[i]), pred=(int(pa[i]), int(pb[i])),
                              margin=(float(ma[i]), float(mb[i]))) for i in order)
    base_differ = int(np.sum(sa.pred["base"] != sb.pred["base"]))
    return Agreement(set=name, a=a, b=b, n=sa.n, disagree=proportion(len(differ), sa.n),
                     base_disagree=proportion(base_differ, sa.n),
                     mcnemar=mcnemar_exact(pa == sa.y, pb == sb.y), disputed=disputed)


def pooled(k: int, n: int) -> Proportion:
    """``k`` of ``n`` samples pooled over several sets: the share, without an interval (POOLED)."""
    return Proportion(k=int(k), n=int(n), value=k / n if n else None, ci_low=None, ci_high=None,
                      method="pooled over sets, no interval")


def pool_corruptions(names: list[str], accuracy: list[DeviceAccuracy], agree: list[Agreement]) -> CorruptionPool | None:
    """The shared corruption sets ``names`` pooled per device and per pair of devices (None without any)."""
    if not names:
        return None
    acc = []
    for label in dict.fromkeys(a.device for a in accuracy):
        rows = [a for a in accuracy if a.device == label and a.set in names]
        n = sum(a.deployed.n for a in rows)
        acc.append(PooledAccuracy(label, pooled(sum(a.base.k for a in rows), n),
                                  pooled(sum(a.deployed.k for a in rows), n)))
    pairs = []
    for a, b in dict.fromkeys((g.a, g.b) for g in agree):
        groups = [g for g in agree if (g.a, g.b) == (a, b) and g.set in names]
        n, k = sum(g.n for g in groups), sum(g.disagree.k for g in groups)
        worst = max(groups, key=lambda g: (g.disagree.value or 0.0, -g.mcnemar.p_value)) if k else None
        pairs.append(PooledAgreement(a, b, n, pooled(k, n), pooled(sum(g.base_disagree.k for g in groups), n),
                                     sum(g.mcnemar.only_a for g in groups), sum(g.mcnemar.only_b for g in groups),
                                     worst.set if worst else None, worst.disagree if worst else None,
                                     worst.mcnemar.p_value if worst else None))
    return CorruptionPool(tuple(names), tuple(acc), tuple(pairs))


def compare(config: CompareConfig) -> Comparison:
    """Read, check and compare the reports; see the module docstring."""
    runs = [load_audit(p) for p in config.reports]
    _same_bundle(runs)
    labels = _labels(runs)
    shared, left_out = _shared_sets(runs)
    accuracy = [_accuracy(label, run.predictions.get(name)) for name in shared for label, run in zip(labels, runs)]
    pairs = list(itertools.combinations(range(len(runs)), 2))
    agree = [agreement(name, labels[i], labels[j], runs[i].predictions.get(name), runs[j].predictions.get(name),
                       config.top) for i, j in pairs for name in shared]
    p = runs[0].data["provenance"]
    bundle = {"name": runs[0].data.get("bundle_name"), **{k: p.get(k) for k, _ in IDENTITY}}
    source = {s.name: s.source for r in runs for s in r.predictions.sets}
    corrupted = [n for n in shared if source[n] == CORRUPTION]
    return Comparison(bundle=bundle, devices=tuple(_device(lab, r) for lab, r in zip(labels, runs)),
                      latency=tuple(x for lab, r in zip(labels, runs) for x in _latency(lab, r)),
                      accuracy=tuple(accuracy), agreement=tuple(agree), sets_left_out=tuple(left_out),
                      corruption=pool_corruptions(corrupted, accuracy, agree),
                      corruption_left_out=tuple(n for n in left_out if source[n] == CORRUPTION),
                      estimated=estimated_rows([(str(r.folder), r.data) for r in runs]))


def to_json(c: Comparison) -> dict:
    return {"_type": COMPARE_TYPE, "_version": COMPARE_VERSION, "_data": dataclasses.asdict(c)}
