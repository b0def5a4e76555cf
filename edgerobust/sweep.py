"""Sweeps: one model compressed at several sparsities and precisions, every model scored on the
same adversarial sets, with speedup measured side by side.

    from edgerobust.sweep import SweepConfig, sweep
    result = sweep(SweepConfig(model="model.pt", out="sweeps/digits", sparsities=(0.5, 0.7)))

What happens, once each:

* the base model is exported (``base.onnx``) and the evaluation split saved (``eval.npz``);
* every attack x eps set is crafted on the base model (``adv/<attack>_<eps>.npz``): the
  *transfer* threat, where inputs crafted on the base are replayed on every compressed model;
* every variant (a sparsity, with its pruning and fine-tuning) is compressed once with
  :func:`edgerobust.compress.compress`; with int8 in the precisions, one bundle holds both
  ``model_fp32.onnx`` and ``model.onnx``. Sparsity 0 means the base itself, unpruned (its int8
  is the quantized ``base.onnx``);
* with the ``whitebox`` threat, the sets are also crafted on each pruned fp32 model itself
  (``whitebox/<variant>/*.npz``) and replayed on it and on its int8 version;
* every (model, set) pair is scored with ONNX Runtime (:func:`edgerobust.audit.predict`,
  Wilson intervals from :mod:`edgerobust.stats`), and every model's latency is measured in one
  interleaved run with the base (:func:`edgerobust.measure.measure_latency`).

Results are dataclasses (:class:`SweepResult`); :func:`summarize` turns one or more of them
(seeds) into the :class:`Point` rows that the plots draw and ``sweep.json`` holds.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from . import ui
from .attacks import make_specs, split_eps_grid
from .bundle import AdvSet, EvalSet, atomic_dir, sha256_file, write_json
from .errors import BundleError, UsageError
from .stats import Proportion, accuracy, attack_success_rate

SWEEP_TYPE = "edgerobust.sweep"
VERSION = 1
PRECISIONS = ("fp32", "int8")
THREATS = ("transfer", "whitebox")


def _prune_config():
    from .prune import PruneConfig

    return PruneConfig(criterion="l1")


def _train_config():
    from .finetune import TrainConfig

    return TrainConfig(epochs=2)


def _quant_config():
    from .quantize import QuantConfig

    return QuantConfig()


@dataclass(frozen=True)
class Variant:
    """One compressed model to build: its sparsity, the plot line (``group``) it belongs to, and
    how it is pruned and fine-tuned (None: the sweep's ``prune`` / ``finetune``)."""

    sparsity: float
    group: str = ""
    prune: object | None = None  # edgerobust.prune.PruneConfig; its sparsity is replaced
    finetune: object | None = None  # edgerobust.finetune.TrainConfig

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) \
                or not 0.0 <= self.sparsity < 1.0:
            raise UsageError(f"A sweep sparsity must lie in [0, 1); got {self.sparsity!r}.",
                             why="0 is the base model unpruned; 1 would remove every channel.",
                             fix="Use e.g. --sparsities 0.3,0.5,0.7.")

    @property
    def label(self) -> str:
        return f"{self.group} s={self.sparsity:g}".strip()

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in ".-" else "_" for c in self.label.replace(" ", "_"))


@dataclass(frozen=True)
class SweepConfig:
    """Everything `edgerobust sweep` needs; validated when built.

    model / arch / num_classes / trust_model / data: the base model and its data, as in compress.
    sparsities: the grid (ignored when ``variants`` are given); 0 is the base, unpruned.
    precisions: ``fp32`` and/or ``int8`` (int8 from ONNX Runtime static quantization, ``quant``).
    attacks / eps / steps: the adversarial grid, as command-line text (``"fgsm,pgd"``, ``"2/255,8/255"``).
    threats: ``transfer`` (sets crafted on the base) and/or ``whitebox`` (crafted on each pruned model).
    focus_eps: the eps (as typed in ``eps``) of the MACs-reduction and speedup plots; default the largest.
    eval_samples: evaluation samples (every set is crafted from these).
    profile / latency_rounds: the device profile and interleaved rounds for the speedup (batch 1).
    """

    model: str | Path
    out: str | Path
    sparsities: tuple[float, ...] = (0.5, 0.7)
    precisions: tuple[str, ...] = PRECISIONS
    attacks: str = "fgsm,pgd"
    eps: str = "2/255,4/255,8/255"
    steps: int | None = None
    threats: tuple[str, ...] = ("transfer",)
    variants: tuple[Variant, ...] = ()
    arch: str | None = None
    num_classes: int | None = None
    trust_model: bool = False
    data: str | None = None
    seed: int = 0
    eval_samples: int = 300
    prune: object = field(default_factory=_prune_config)
    finetune: object = field(default_factory=_train_config)
    quant: object = field(default_factory=_quant_config)
    focus_eps: str | None = None
    profile: str = "laptop-cpu-1thread"
    latency_rounds: int = 5
    write_report: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("sparsities", tuple(self.sparsities))
        set_("precisions", tuple(self.precisions))
        set_("threats", tuple(self.threats))
        set_("variants", tuple(self.variants) or tuple(Variant(float(s)) for s in self.sparsities))
        if not self.variants:
            raise UsageError("A sweep needs at least one sparsity.", fix="Use e.g. --sparsities 0.5,0.7.")
        labels = [v.label for v in self.variants]
        dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
        if dupes:
            raise UsageError(f"The sweep lists {', '.join(dupes)} more than once.", fix="List each sparsity once.")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions or len(set(self.precisions)) != len(self.precisions):
            raise UsageError(f"Unknown or repeated precision(s) in {','.join(self.precisions) or '(none)'}.",
                             fix=f"Use one or both of: {', '.join(PRECISIONS)}.")
        bad = [t for t in self.threats if t not in THREATS]
        if bad or not self.threats or len(set(self.threats)) != len(self.threats):
            raise UsageError(f"Unknown or repeated threat(s) in {','.join(self.threats) or '(none)'}.",
                             why="transfer: sets crafted on the base model; whitebox: crafted on each pruned model.",
                             fix=f"Use one or both of: {', '.join(THREATS)}.")
        if all(v.sparsity == 0 for v in self.variants) and "int8" not in self.precisions:
            raise UsageError("Sparsity 0 in fp32 is the base model itself: this sweep would compare nothing.",
                             fix="Add a sparsity above 0 or the int8 precision.")
        if isinstance(self.eval_samples, bool) or not isinstance(self.eval_samples, int) or self.eval_samples < 1:
            raise UsageError(f"--eval-samples must be a positive integer; got {self.eval_samples!r}.")
        if self.latency_rounds < 1:
            raise UsageError(f"--latency-rounds must be >= 1; got {self.latency_rounds}.")
        specs = self.specs  # parses attacks and eps, raising UsageError on bad text
        texts = [t for t, _ in split_eps_grid(self.eps)]
        if self.focus_eps is not None and self.focus_eps.strip().replace(" ", "") not in texts:
            raise UsageError(f"--focus-eps {self.focus_eps!r} is not one of the swept eps ({', '.join(texts)}).",
                             fix="Pick one of the --eps values, written the same way.")
        if not specs:  # pragma: no cover - make_specs never returns an empty grid
            raise UsageError("The attack grid is empty.")

    @property
    def specs(self) -> list:
        return make_specs(self.attacks, self.eps, steps=self.steps, seed=self.seed)

    @property
    def focus(self) -> str:
        """The eps text the MACs-reduction and speedup plots use."""
        if self.focus_eps:
            return self.focus_eps.strip().replace(" ", "")
        return max(split_eps_grid(self.eps), key=lambda tv: tv[1])[0]


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class ModelResult:
    """One model of the sweep: the base, or a variant at one precision."""

    model: str  # "base", "base int8", "s=0.5 fp32", "l1 s=0.5 int8", ...
    group: str
    sparsity: float
    precision: str
    path: str  # relative to the sweep folder
    params: int
    macs: int
    macs_reduction: float
    size_bytes: int
    latency_p50_ms: float
    speedup: float  # base p50 / this p50 at batch 1, measured interleaved in the same run
    clean: Proportion
    finetune: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SetScore:
    """One model on one adversarial set."""

    model: str
    threat: str  # "transfer" or "whitebox"
    attack: str
    eps: float
    eps_text: str
    set: str  # the set's file, relative to the sweep folder
    accuracy: Proportion  # robust accuracy
    attack_success: Proportion  # among samples the model gets right clean


@dataclass(frozen=True)
class SweepResult:
    """Every number one sweep (one seed) measured."""

    seed: int
    n_eval: int
    profile: str
    models: tuple[ModelResult, ...]
    sets: tuple[SetScore, ...]
    config: dict
    seconds: float
    out: str


@dataclass(frozen=True)
class Point:
    """One plotted value: a model on the clean set or on one adversarial set, over seeds.

    ``accuracy`` is the mean over ``seeds`` runs and ``accuracy_std`` the sample standard
    deviation (None with one seed); ``ci_low``/``ci_high`` are the Wilson 95 % interval of a
    single run (None over several seeds). ``sparsity`` is what was requested; ``macs_reduction``
    what pruning realized (base MACs / this model's MACs, mean over seeds): plots and findings
    use the realized figure, as rounding can make it differ much from ``1 / (1 - sparsity)^2``.
    """

    model: str
    group: str
    sparsity: float
    precision: str
    threat: str  # "clean", "transfer" or "whitebox"
    attack: str  # "clean" for the clean set
    eps: float
    eps_text: str
    n: int  # samples per run
    seeds: int
    accuracy: float
    accuracy_std: float | None
    ci_low: float | None
    ci_high: float | None
    attack_success: float | None
    speedup: float
    speedup_std: float | None
    macs_reduction: float

    @property
    def key(self) -> str:
        return point_key(self.model, self.threat, self.attack, self.eps_text)


def point_key(model: str, threat: str, attack: str, eps_text: str) -> str:
    return f"{model}|{threat}|{attack}|{eps_text}"


def summarize(results: Iterable[SweepResult]) -> list[Point]:
    """Points over one or more runs of the same sweep (seeds): mean and sample std per point."""
    results = list(results)
    if not results:
        raise UsageError("There are no sweep results to summarize.")
    order: list[str] = []
    rows: dict[str, list[tuple[ModelResult, str, str, float, str, Proportion, Proportion | None]]] = {}
    for r in results:
        models = {m.model: m for m in r.models}
        for m in r.models:
            k = point_key(m.model, "clean", "clean", "0")
            rows.setdefault(k, []).append((m, "clean", "clean", 0.0, "0", m.clean, None))
            if k not in order:
                order.append(k)
        for s in r.sets:
            k = point_key(s.model, s.threat, s.attack, s.eps_text)
            rows.setdefault(k, []).append((models[s.model], s.threat, s.attack, s.eps, s.eps_text, s.accuracy,
                                           s.attack_success))
            if k not in order:
                order.append(k)
    points = []
    for k in order:
        runs = rows[k]
        m, threat, attack, eps, eps_text, _, _ = runs[0]
        acc = [p.value for *_, p, _ in runs]
        asr = [a.value for *_, a in runs if a is not None and a.value is not None]
        speed = [r[0].speedup for r in runs]
        one = len(runs) == 1
        points.append(Point(
            model=m.model, group=m.group, sparsity=m.sparsity, precision=m.precision, threat=threat,
            attack=attack, eps=eps, eps_text=eps_text, n=runs[0][5].n, seeds=len(runs),
            accuracy=_mean(acc), accuracy_std=None if one else _std(acc),
            ci_low=runs[0][5].ci_low if one else None, ci_high=runs[0][5].ci_high if one else None,
            attack_success=_mean(asr) if asr else None, speedup=_mean(speed),
            speedup_std=None if one else _std(speed), macs_reduction=_mean([r[0].macs_reduction for r in runs])))
    return points


def _mean(v: list[float | None]) -> float:
    vals = [x for x in v if x is not None]
    return float(np.mean(vals)) if vals else float("nan")


def _std(v: list[float | None]) -> float:
    vals = [x for x in v if x is not None]
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def find(points: Iterable[Point], **match) -> list[Point]:
    """The points whose fields equal every ``match`` value (e.g. ``attack="pgd", eps_text="8/255"``)."""
    return [p for p in points if all(getattr(p, k) == v for k, v in match.items())]


def to_json(kind: str, data: dict) -> dict:
    return {"_type": kind, "_version": VERSION, "_data": data}


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class _Model:
    name: str
    group: str
    sparsity: float
    precision: str
    path: Path
    params: int
    macs: int
    macs_reduction: float
    finetune: dict = field(default_factory=dict)
    whitebox: dict[str, Path] = field(default_factory=dict)  # attack set name -> file


def sweep(config: SweepConfig) -> SweepResult:
    """Run the sweep into ``config.out`` (sweep.json, adv/, bundles/, and with ``write_report``
    the plots and report.html); see the module docstring."""
    import torch

    from .compress import CompressConfig, check_runs, compress, resolve_data
    from .data import split
    from .export import export_onnx
    from .load import load_model
    from .nets import PixelModel
    from .prune import count

    t0 = time.perf_counter()
    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise UsageError(f"'{out}' already exists.", fix="Pass --overwrite to replace it, or choose another --out.")
    torch.manual_seed(config.seed)
    specs = config.specs
    loaded = load_model(config.model, arch=config.arch, num_classes=config.num_classes, trust_model=config.trust_model)
    spec = loaded.input_spec or {}
    ds, data_name, _ = resolve_data(config.data, None, loaded)  # the same data and checks as compress
    sp = split(ds, seed=config.seed, eval_samples=config.eval_samples, calib_samples=config.quant.calib_samples)
    mean = tuple(spec.get("mean") or ds.mean)
    std = tuple(spec.get("std") or ds.std)
    base = PixelModel(loaded.model, mean, std).eval()
    example = torch.from_numpy(sp.eval.x[:1])
    check_runs(base, example, data_name)
    macs_base, params_base = count(base.net, (example - base.mean) / base.std)
    needs_whitebox = "whitebox" in config.threats and any(v.sparsity > 0 for v in config.variants)
    if needs_whitebox and not loaded.arch:
        raise UsageError("The whitebox threat needs the pruned models as torch checkpoints, which need --arch.",
                         fix="Pass --arch (e.g. zoo:digits-cnn), or use --threats transfer.")

    with atomic_dir(out, overwrite=config.overwrite) as tmp:
        base_onnx = export_onnx(base, example, tmp / "base.onnx")
        ev = EvalSet(x=sp.eval.x, y=sp.eval.y, meta={"data": data_name, "seed": config.seed, "split": "eval",
                                                     "n": len(sp.eval)})
        ev.save(tmp / "eval.npz")
        base_sha, eval_sha = sha256_file(base_onnx), sha256_file(tmp / "eval.npz")
        ui.info(f"sweep: {len(config.variants)} variant(s) x {', '.join(config.precisions)}; "
                f"{len(specs)} set(s) crafted once on the base; {len(ev.y)} eval samples (seed {config.seed})")

        # 1. the adversarial sets, crafted once on the base model
        transfer: dict[str, Path] = {}
        from .attacks import craft_set

        (tmp / "adv").mkdir()
        for s in specs:
            adv = craft_set(base, ev.x, ev.y, s, base_sha256=base_sha, eval_sha256=eval_sha)
            transfer[s.name] = tmp / "adv" / f"{s.name}.npz"
            adv.save(transfer[s.name])

        # 2. the models: the base, and each variant compressed once (fp32 and int8 in one bundle)
        models = [_Model("base", "", 0.0, "fp32", base_onnx, params_base, macs_base, 1.0)]
        for v in config.variants:
            models.extend(_build_variant(config, v, tmp, base_onnx, ev, sp.calib.x, specs, mean, std,
                                         (params_base, macs_base), compress, CompressConfig, load_model, PixelModel))

        # 3. score every (model, set) with ONNX Runtime; 4. latency, interleaved, batch 1
        result = _evaluate(config, models, transfer, ev, specs, tmp)
        result = replace(result, seconds=time.perf_counter() - t0, out=str(out))
        points = summarize([result])
        data = {"config": result.config, "runs": [dataclasses.asdict(result)],
                "points": [dataclasses.asdict(p) for p in points], "plots": [], "findings": findings(points, config)}
        if config.write_report:
            from .plots import write_report

            data = write_report(tmp, f"Sweep of {Path(str(config.model)).name}", points, data,
                                focus_eps=config.focus, kind=SWEEP_TYPE)
        else:
            write_json(tmp / "sweep.json", to_json(SWEEP_TYPE, data))
    return result


def _build_variant(config, v: Variant, tmp: Path, base_onnx: Path, ev: EvalSet, calib_x: np.ndarray, specs,
                   mean, std, base_counts, compress, CompressConfig, load_model, PixelModel) -> list[_Model]:
    params_base, macs_base = base_counts
    models: list[_Model] = []
    if v.sparsity == 0:  # the base itself; only its int8 is a new model
        if "int8" in config.precisions:
            from .quantize import quantize

            path = tmp / "base_int8.onnx"
            quantize(base_onnx, path, calib_x, config.quant)
            name = f"{v.group} int8".strip() if v.group else "base int8"
            models.append(_Model(name, v.group, 0.0, "int8", path, params_base, macs_base, 1.0))
        return models
    pc = replace(v.prune or config.prune, sparsity=v.sparsity)
    tc = v.finetune or config.finetune
    int8 = "int8" in config.precisions
    bundle = tmp / "bundles" / v.slug
    res = compress(CompressConfig(model=config.model, arch=config.arch, num_classes=config.num_classes,
                                  trust_model=config.trust_model, data=config.data, seed=config.seed,
                                  eval_samples=config.eval_samples, prune=pc, finetune=tc, int8=int8,
                                  quant=config.quant, max_int8_drop=None, max_prune_drop=None, out=bundle,
                                  overwrite=True))  # a sweep measures every point, gates would hide some
    their = EvalSet.load(bundle / "eval.npz")
    if not (np.array_equal(their.y, ev.y) and np.array_equal(their.x, ev.x)):
        raise BundleError(f"The bundle '{bundle.name}' was evaluated on other samples than the sweep's eval set.",
                          why="compress and sweep split the data differently, so the transfer sets would not match.")
    ft = {k: (v2 if isinstance(v2, (int, float, str, bool, type(None))) else str(v2))
          for k, v2 in dataclasses.asdict(tc).items()}
    mr = res.prune.macs_reduction
    common = dict(group=v.group, sparsity=v.sparsity, params=res.prune.params_after, macs=res.prune.macs_after,
                  macs_reduction=mr, finetune=ft)
    fp32 = _Model(f"{v.label} fp32", path=bundle / ("model_fp32.onnx" if int8 else "model.onnx"), precision="fp32",
                  **common)
    q = _Model(f"{v.label} int8", path=bundle / "model.onnx", precision="int8", **common) if int8 else None
    if "whitebox" in config.threats:
        from .whitebox import whitebox_sets

        pruned = load_model(bundle / "pruned.pt")
        target = PixelModel(pruned.model, mean, std).eval()
        wdir = tmp / "whitebox" / v.slug
        wdir.mkdir(parents=True)
        # crafted on the pruned fp32 model; the int8 model is scored on the same sets
        sets = whitebox_sets(target, ev.x, ev, list(specs), False, fp32_sha256=sha256_file(fp32.path),
                             eval_sha256=sha256_file(tmp / "eval.npz"), fp32_target=fp32.path.name)
        for s, adv in zip(specs, sets):
            path = wdir / f"{s.name}.npz"
            adv.save(path)
            fp32.whitebox[s.name] = path
            if q is not None:
                q.whitebox[s.name] = path
    if "fp32" in config.precisions:
        models.append(fp32)
    if q is not None:
        models.append(q)
    return models


def _evaluate(config: SweepConfig, models: list[_Model], transfer: dict[str, Path], ev: EvalSet, specs,
              root: Path) -> SweepResult:
    from .audit import predict, resolve_profile
    from .measure import measure_latency, open_sessions

    profile, _ = resolve_profile(config.profile)
    settings = replace(profile.measure, batch_sizes=(1,), warmup_runs=3, rounds=config.latency_rounds,
                       runs_per_round=10, min_seconds=0.0, max_rounds=config.latency_rounds)
    sessions = open_sessions({m.name: m.path for m in models}, profile, allow_fallback=True)
    sets = {name: AdvSet.load(p) for name, p in transfer.items()}
    scores: list[SetScore] = []
    clean_pred: dict[str, np.ndarray] = {}
    with ui.task("scoring models on the sets", total=len(models)) as advance:
        for m in models:
            s = sessions[m.name]
            clean_pred[m.name] = predict(s, ev.x, 256)
            for threat in config.threats:
                for spec in specs:
                    if threat == "transfer" or m.name == "base" or (m.sparsity == 0 and m.precision == "int8"):
                        path = transfer[spec.name]  # on the base (and its int8), white-box is the transfer set
                        adv = sets[spec.name]
                    else:
                        path = m.whitebox[spec.name]
                        adv = AdvSet.load(path)
                    pred = predict(s, adv.x, 256)
                    clean = clean_pred[m.name][adv.idx]
                    scores.append(SetScore(model=m.name, threat=threat, attack=spec.attack, eps=spec.eps,
                                           eps_text=spec.eps_text, set=path.relative_to(root).as_posix(),
                                           accuracy=accuracy(pred, adv.y),
                                           attack_success=attack_success_rate(clean, pred, adv.y)))
            advance(1, m.name)
    latency, _ = measure_latency(sessions, settings, show_progress=False)
    p50 = {name: stats[0].p50_ms for name, stats in latency.items()}
    results = tuple(ModelResult(
        model=m.name, group=m.group, sparsity=m.sparsity, precision=m.precision,
        path=m.path.relative_to(root).as_posix(), params=m.params, macs=m.macs, macs_reduction=m.macs_reduction,
        size_bytes=m.path.stat().st_size, latency_p50_ms=p50[m.name], speedup=p50["base"] / p50[m.name],
        clean=accuracy(clean_pred[m.name], ev.y), finetune=m.finetune) for m in models)
    return SweepResult(seed=config.seed, n_eval=len(ev.y), profile=profile.name, models=results,
                       sets=tuple(scores), config=config_dict(config), seconds=0.0, out=str(config.out))


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
    d = plain(config)
    d["focus_eps"] = config.focus
    return d


# ---------------------------------------------------------------------------------------------
# findings


def pct(v: float | None, std: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.1f}%" + (f" ± {100 * std:.1f}" if std is not None else "")


def macs_text(p: Point) -> str:
    """The realized compression of a point's model, as findings quote it: ``3.9x fewer MACs``."""
    return "unpruned" if p.sparsity == 0 else f"{p.macs_reduction:.1f}x fewer MACs"


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
    return out

