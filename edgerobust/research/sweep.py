"""Sweeps: one model compressed at several sparsities and precisions, every model scored on the
same adversarial sets, with speedup measured side by side; resumable, in-process or on Ray.

    from edgerobust.research.sweep import SweepConfig, sweep
    result = sweep(SweepConfig(model="model.pt", out="sweeps/digits", sparsities=(0.5, 0.7)))

The stages, composed:

* :func:`edgerobust.workstation.prepare.prepare` once: the model, the split and the normalization, which
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
  (:func:`edgerobust.device.measure.measure_latency`), then sweep.json, the plots and report.html.

Results are dataclasses (:class:`~edgerobust.research.points.SweepResult`);
:func:`~edgerobust.research.points.summarize` turns one or more of them (seeds) into the plotted points.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgerobust import ui
from edgerobust.workstation.attacks import make_specs, split_eps_grid
from edgerobust.defaults import DEFAULT_ATTACKS, DEFAULT_EPS, DEFAULT_EVAL_SAMPLES
from edgerobust.errors import UsageError
from edgerobust.research.points import (ModelResult, Point, SetScore, SweepResult, find, macs_text, pct, point_key,  # noqa: F401
                     summarize, to_json)

SWEEP_TYPE = "edgerobust.research.sweep"
PRECISIONS = ("fp32", "int8")
THREATS = ("transfer", "whitebox")
# The latency profile of sweeps: one thread at batch 1, so a speedup compares the models' compute
# rather than how each one spreads over this host's cores (and a busy host disturbs it less).
SWEEP_PROFILE = "laptop-cpu-1thread"
MARKER = ".edgerobust-study"  # in an output folder a sweep, recipe or study may resume


def _prune_config():
    from edgerobust.workstation.prune import PruneConfig

    return PruneConfig()


def _train_config():
    from edgerobust.workstation.finetune import TrainConfig

    return TrainConfig(epochs=2)


def _quant_config():
    from edgerobust.workstation.quantize import QuantConfig

    return QuantConfig()


@dataclass(frozen=True)
class Variant:
    """One compressed model to build: its sparsity, the plot line (``group``) it belongs to, and
    how it is pruned and fine-tuned (None: the sweep's ``prune`` / ``finetune``)."""

    sparsity: float
    group: str = ""
    prune: object | None = None  # edgerobust.workstation.prune.PruneConfig; its sparsity is replaced
    finetune: object | None = None  # edgerobust.workstation.finetune.TrainConfig

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
    normalize / allow_weak_base: as in compress; decided once by prepare for every variant.
    profile / latency_rounds: the device profile and interleaved rounds for the speedup (batch 1).
    device: where torch runs (auto, cpu, cuda, cuda:N): the base stage here and every point's pruning,
    fine-tuning and white-box sets; export, int8 and scoring stay on the CPU. Resolved when the config
    is built, so a CUDA request on a host without CUDA is refused before any folder is made.
    fresh: recompute every point instead of reusing the finished ones under ``out``;
    overwrite: also replace an ``out`` that is not a sweep's folder.
    """

    model: str | Path
    out: str | Path
    sparsities: tuple[float, ...] = (0.5, 0.7)
    precisions: tuple[str, ...] = PRECISIONS
    attacks: str = DEFAULT_ATTACKS
    eps: str = DEFAULT_EPS
    steps: int | None = None
    threats: tuple[str, ...] = ("transfer",)
    variants: tuple[Variant, ...] = ()
    arch: str | None = None
    num_classes: int | None = None
    trust_model: bool = False
    data: str | None = None
    seed: int = 0
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    normalize: str = "auto"
    allow_weak_base: bool = False
    prune: object = field(default_factory=_prune_config)
    finetune: object = field(default_factory=_train_config)
    quant: object = field(default_factory=_quant_config)
    focus_eps: str | None = None
    profile: str = SWEEP_PROFILE
    latency_rounds: int = 5
    write_report: bool = True
    fresh: bool = False
    overwrite: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:  # noqa: C901 (one check per field)
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
        self.prepare_config()  # validates the model and data fields
        self.torch_device  # resolving it refuses a CUDA request on a host without CUDA, before any folder

    @property
    def torch_device(self):
        """The torch device ``device`` names on this host."""
        from edgerobust.workstation.devices import resolve_device

        return resolve_device(self.device)

    def prepare_config(self):
        from edgerobust.workstation.prepare import PrepareConfig

        return PrepareConfig(model=self.model, arch=self.arch, num_classes=self.num_classes,
                             trust_model=self.trust_model, data=self.data, normalize=self.normalize, seed=self.seed,
                             eval_samples=self.eval_samples, calib_samples=self.quant.calib_samples,
                             allow_weak_base=self.allow_weak_base, device=self.device)

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
# running


def sweep(config: SweepConfig, runner=None) -> SweepResult:
    """Run the sweep into ``config.out`` (sweep.json, adv/, points/, and with ``write_report`` the
    plots and report.html); ``runner`` (:mod:`edgerobust.research.runners`) runs the points, default here."""
    from edgerobust.research.runners import LocalRunner, point_device
    from edgerobust.research.sweep_eval import Built, measure_speedups, model_results, score_from_dict, score_models
    from edgerobust.workstation.devices import describe

    t0 = time.perf_counter()
    runner = runner or LocalRunner()
    device = config.torch_device
    task_device = point_device(runner, device)  # refuses a CUDA sweep on a Ray runner that asks for no GPU
    out = Path(config.out)
    prepare_out(out, "sweep", overwrite=config.overwrite, fresh=config.fresh)
    shared, ev, base = _base_stage(config, out)
    base.whitebox = {}
    tasks = _tasks(config, shared, task_device)
    ui.info(f"sweep: {len(config.variants)} variant(s) x {', '.join(config.precisions)} on {runner.name}, torch "
            f"on {describe(device)}; {len(config.specs)} set(s) crafted once on the base; {len(ev.y)} eval "
            f"samples (seed {config.seed})")
    records, reused = run_points(tasks, runner)
    base_scores = score_models([base], out, ev, config.threats, config.specs, shared.transfer, config.profile)
    models = [base] + [Built.from_dict(m) for r in records for m in r["models"]]
    scores = base_scores + [score_from_dict(s) for r in records for s in r["sets"]]
    profile, p50 = measure_speedups(models, out, config.profile, config.latency_rounds)
    result = SweepResult(seed=config.seed, n_eval=len(ev.y), profile=profile, models=model_results(models, out, p50),
                         sets=tuple(scores), config=config_dict(config), seconds=time.perf_counter() - t0,
                         out=str(out), runner=runner.name, reused=reused, computed=len(tasks) - reused)
    write_sweep(out, config, result)
    return result


def run_points(tasks: list, runner) -> tuple[list[dict], int]:
    """Every task's record, in order: reused from disk where intact, else built on ``runner``."""
    from edgerobust.research.sweep_points import load_point

    records: list[dict | None] = [None if t is None else load_point(t) for t in tasks]
    todo = [i for i, r in enumerate(records) if r is None]
    reused = len(tasks) - len(todo)
    if reused:
        ui.info(f"reusing {reused} finished point(s) of {len(tasks)}; computing {len(todo)}")
    with ui.task(f"points ({runner.name})", total=len(tasks)) as advance:
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


def _base_stage(config: SweepConfig, out: Path):
    """prepare once; base.onnx, eval.npz, calib.npz and the transfer sets under ``out``."""
    import numpy as np

    from edgerobust.workstation.export import export_onnx
    from edgerobust.workstation.prepare import prepare
    from edgerobust.workstation.prune import count
    from edgerobust.workstation.stages import eval_set, evidence_stage
    from edgerobust.research.sweep_eval import Built, array_digest
    from edgerobust.research.sweep_points import Shared

    prep = prepare(config.prepare_config())
    needs_whitebox = "whitebox" in config.threats and any(v.sparsity > 0 for v in config.variants)
    if needs_whitebox and not prep.loaded.arch:
        raise UsageError("The whitebox threat needs the pruned models as torch checkpoints, which need --arch.",
                         fix="Pass --arch (e.g. zoo:digits-cnn), or use --threats transfer.")
    base_onnx = export_onnx(prep.base, prep.example, out / "base.onnx")
    ev = eval_set(prep)
    ev.save(out / "eval.npz")
    np.savez(out / "calib.npz", x=prep.splits.calib.x)
    shutil.rmtree(out / "adv", ignore_errors=True)
    paths = evidence_stage(prep, out / "eval.npz", base_onnx, config.specs, out / "adv")
    macs, params = count(prep.base.net, prep.normalize(prep.example))
    shared = Shared(root=str(out), model=str(config.model), arch=config.arch, num_classes=config.num_classes,
                    trust_model=config.trust_model, data=prep.data_name, image_size=prep.image_size,
                    mean=tuple(prep.norm.mean), std=tuple(prep.norm.std), model_sha256=prep.loaded.sha256,
                    data_digest=array_digest(ev.x, ev.y, prep.splits.calib.x), base_params=params, base_macs=macs,
                    transfer={s.name: Path(p).relative_to(out).as_posix() for s, p in zip(config.specs, paths)})
    return shared, ev, Built("base", "", 0.0, "fp32", "base.onnx", params, macs, 1.0)


def prepare_out(out: Path, kind: str, overwrite: bool, fresh: bool) -> None:
    """Make ``out`` ready: resume a folder this kind of run left (its MARKER), start over with
    ``fresh``, and refuse any other existing folder unless ``overwrite``."""
    import json

    marker = out / MARKER
    mine = marker.is_file() and _marker_kind(marker) == kind
    if out.exists() and not mine and not overwrite:
        raise UsageError(f"'{out}' already exists.", why=f"It is not a folder an earlier {kind} left to resume.",
                         fix="Pass --overwrite to replace it, or choose another --out.")
    if out.exists() and (fresh or overwrite or not mine):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"kind": kind}) + "\n")


def _marker_kind(marker: Path) -> str | None:
    import json

    try:
        return json.loads(marker.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def write_sweep(out: Path, config: SweepConfig, result: SweepResult) -> dict:
    """sweep.json and, with ``write_report``, the plots and report.html."""
    from edgerobust.device.bundle import write_json

    points = summarize([result])
    data = {"config": result.config, "device": result.config["device"], "runs": [dataclasses.asdict(result)],
            "points": [dataclasses.asdict(p) for p in points], "plots": [], "findings": findings(points, config)}
    if config.write_report:
        from edgerobust.research.plots import write_report

        return write_report(out, f"Sweep of {Path(str(config.model)).name}", points, data,
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
    from edgerobust.workstation.devices import describe

    d = plain(config)
    d["focus_eps"] = config.focus
    d["device"] = describe(config.torch_device)  # as run: "cpu" or "cuda:0 (NVIDIA ...)", not "auto"
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
    return out
