"""Study files: grids bigger than one command line, run as sweeps (one per model and seed) on the
same points machinery (local or Ray, resumable), reported together with the models as series.

    from edgerobust.research.study import load_study, run_study
    run_study(load_study("study.toml", out="studies/digits"), out="studies/digits")

A study file (TOML)::

    [[models]]                     # one or more; each is a series in the report
    name = "cnn"                   # the series name (default: the file's stem)
    path = "models/digits-cnn.pt"  # relative to the study file
    arch = "zoo:digits-cnn"        # optional, as `arch`; also data, num_classes, normalize

    [grid]                         # every key optional; defaults as in `edgerobust sweep`
    sparsities = [0.5, 0.7]
    precisions = ["fp32", "int8"]
    finetune = ["standard", "pgd-at"]   # fine-tuning modes, one series each
    finetune_epochs = 2
    criterion = "l2"
    attacks = ["fgsm", "pgd"]
    eps = ["2/255", "8/255"]
    attack_steps = 10
    threats = ["transfer"]
    corruptions = ["default"]      # common corruptions replayed on every model (none by default)
    corruption_severities = [1, 3, 5]
    seeds = [0, 1]
    eval_samples = 1000

Where torch runs is not a study key: ``load_study(..., device=)`` (the command's device option)
sets it for every sweep. Output: ``study.json`` ({"_type": "edgerobust.research.study", ...},
with ``device``: where torch ran), the PNGs and ``report.html`` over all models, and
``<model>/seed-<s>/`` with each sweep (its points, sets and sweep.json).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from edgerobust.defaults import DEFAULT_ATTACKS, DEFAULT_CRITERION, DEFAULT_EPS, DEFAULT_EVAL_SAMPLES
from edgerobust.errors import UsageError
from edgerobust.research.points import Point, SweepResult, summarize

logger = logging.getLogger(__name__)

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

STUDY_TYPE = "edgerobust.research.study"
# key -> (the TOML types it takes, what it means): the study file's schema, and its error messages
MODEL_KEYS = {"name": (str, "the series name"), "path": (str, "the model file, relative to the study file"),
              "arch": (str, "as `arch`"), "data": (str, "as `data`"), "num_classes": (int, "as `num_classes`"),
              "normalize": (str, "as `normalize`"), "trust_model": (bool, "as `trust_model`"),
              "eval_data": (str, "as `eval_data`: held-out evaluation rows")}
GRID_KEYS = {"sparsities": (list, "sparsities in [0, 1)"), "precisions": (list, "fp32 and/or int8"),
             "finetune": (list, "fine-tuning modes (standard, pgd-at, trades)"),
             "finetune_epochs": (int, "fine-tuning epochs"), "criterion": (str, "the pruning criterion"),
             "attacks": (list, "attack names"), "eps": (list, "eps as text, e.g. \"8/255\""),
             "attack_steps": (int, "iterations of iterative attacks"), "threats": (list, "transfer and/or whitebox"),
             "seeds": (list, "seeds, e.g. [0, 1, 2]"), "eval_samples": (int, "evaluation samples"),
             "focus_eps": (str, "the eps of the MACs and speedup plots"), "profile": (str, "the latency profile"),
             "latency_rounds": (int, "interleaved latency rounds"),
             "corruptions": (list, "common corruptions: names, families, \"default\" or \"all\""),
             "corruption_severities": (list, "corruption severities 1-5, e.g. [1, 3, 5]")}
# the items of these [grid] lists (the others are read as text, or checked where they are used)
GRID_ITEMS = {"sparsities": ((int, float), "numbers", "[0.5, 0.7]"), "precisions": (str, "texts", '["fp32", "int8"]'),
              "threats": (str, "texts", '["transfer"]'), "finetune": (str, "texts", '["standard", "pgd-at"]')}
TOP_KEYS = {"name": (str, "the study's title"), "models": (list, "[[models]] tables"), "grid": (dict, "[grid]")}


@dataclass(frozen=True)
class Study:
    """A validated study file: its title, the sweeps to run (one per model and seed) and their series names."""

    file: Path
    name: str
    sweeps: tuple[tuple[str, int, object], ...]  # (series, seed, SweepConfig)


def _bad(file: Path, key: str, what: str, fix: str) -> UsageError:
    return UsageError(f"{file}: {key} {what}.", fix=fix)


def _check_table(file: Path, table: dict, schema: dict, where: str) -> None:
    for key, value in table.items():
        if key not in schema:
            raise _bad(file, f"{where}{key}", "is not a study key",
                       f"Use one of: {', '.join(schema)} (in {where.rstrip('.') or 'the top level'}).")
        typ, meaning = schema[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise _bad(file, f"{where}{key}", f"must be a {typ.__name__} ({meaning}); got {value!r}",
                       f"Write e.g. {key} = {_example(typ)}.")
        if typ is list and not value and where == "grid.":  # a grid axis with no value: a study of nothing
            raise _bad(file, f"{where}{key}", f"is empty ({meaning})", f"List at least one, or leave {key} out for "
                       "its default.")
        items = GRID_ITEMS.get(key) if where == "grid." else None
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, items[0])] if items else []
        if bad:
            raise _bad(file, f"{where}{key}", f"must list {items[1]}; got {bad[0]!r}", f"Write e.g. {key} = {items[2]}.")


def _example(typ: type) -> str:
    return {list: "[...]", int: "2", str: '"..."', bool: "true", dict: "{...}"}[typ]


def load_study(path: str | Path, out: str | Path, device: str = "auto") -> Study:
    """Read and validate a study file; a bad key or value is one UsageError naming the file, the key and the fix.

    ``device``: where every sweep's torch runs (auto, cpu, cuda, cuda:N), checked here, before the file.
    """
    from edgerobust.workstation.resources.torch_device import resolve_device

    resolve_device(device)  # a CUDA request on a host without CUDA is refused before any work or folder
    file = Path(path)
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"Cannot read the study file '{file}'.", why=str(exc), fix="Check the path.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        why, fix = {UnicodeDecodeError: (f"It is not UTF-8 text: {exc}.", "Save it as UTF-8."),
                    RecursionError: ("It nests lists or tables too deeply.", "Nest them a few levels at most.")
                    }.get(type(exc), (str(exc), "Fix the line named above."))
        raise UsageError(f"{file} is not valid TOML.", why=why, fix=fix) from None
    _check_table(file, doc, TOP_KEYS, "")
    models, grid = doc.get("models"), doc.get("grid", {})
    if not models or not all(isinstance(m, dict) for m in models):
        raise _bad(file, "models", "must list at least one [[models]] table",
                   'Add [[models]] with path = "model.pt" (and arch = ... for a state_dict).')
    _check_table(file, grid, GRID_KEYS, "grid.")
    sweeps, names = [], []
    for i, m in enumerate(models):
        _check_table(file, m, MODEL_KEYS, f"models[{i}].")
        if "path" not in m:
            raise _bad(file, f"models[{i}].path", "is missing", 'Add path = "model.pt" (relative to the study file).')
        name = m.get("name") or Path(m["path"]).stem
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):  # it names the model's folder under out
            raise _bad(file, f"models[{i}].name", f"{name!r} is no folder name", 'Write e.g. name = "cnn", without '
                       "slashes: each model's sweeps go to a folder of that name in the output folder.")
        if name in names:
            raise _bad(file, f"models[{i}].name", f"repeats {name!r}", "Give every model its own name.")
        names.append(name)
        for seed in grid.get("seeds", [0]):
            sweeps.append((name, seed, _sweep_config(file, m, grid, seed, Path(out) / name / f"seed-{seed}", device)))
    return Study(file=file, name=doc.get("name") or file.stem, sweeps=tuple(sweeps))


def _sweep_config(file: Path, m: dict, grid: dict, seed, out: Path, device: str = "auto"):
    """One SweepConfig; its own validation errors are reported with the study file's name."""
    from edgerobust.research.configs import SweepConfig, Variant
    from edgerobust.workstation.configs import PrepareConfig, PruneConfig, TrainConfig

    def text(key: str, default: str) -> str:
        return ",".join(str(v) for v in grid[key]) if key in grid else default

    try:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UsageError(f"a seed must be an integer >= 0; got {seed!r}.")
        modes = grid.get("finetune", ["standard"])
        epochs = grid.get("finetune_epochs", 2)
        # float() only in range: Variant refuses the rest, and float() of a huge whole number overflows
        variants = tuple(Variant(float(s) if -1 <= s <= 1 else s, group=mode if len(modes) > 1 else "",
                                 finetune=TrainConfig(epochs=epochs, mode=mode))
                         for mode in modes for s in grid.get("sparsities", [0.5, 0.7]))
        path = Path(m["path"])
        prep = PrepareConfig(model=path if path.is_absolute() else file.parent / path, arch=m.get("arch"),
                             num_classes=m.get("num_classes"), trust_model=m.get("trust_model", False),
                             data=m.get("data"), eval_data=m.get("eval_data"), normalize=m.get("normalize", "auto"), seed=seed,
                             eval_samples=grid.get("eval_samples", DEFAULT_EVAL_SAMPLES), device=device)
        return SweepConfig(
            prep, out=out, variants=variants,
            precisions=tuple(grid.get("precisions", ["fp32", "int8"])), attacks=text("attacks", DEFAULT_ATTACKS),
            eps=text("eps", DEFAULT_EPS), steps=grid.get("attack_steps"), threats=tuple(grid.get("threats", ["transfer"])),
            prune=PruneConfig(criterion=grid.get("criterion", DEFAULT_CRITERION)), focus_eps=grid.get("focus_eps"),
            latency_rounds=grid.get("latency_rounds", 5), write_report=False,
            corruptions=tuple(grid.get("corruptions", ())), corruption_severities=tuple(grid.get("corruption_severities",
                                                                                                  (1, 3, 5))),
            **({"latency_profile": grid["profile"]} if "profile" in grid else {}))
    except (UsageError, TypeError, ValueError) as exc:
        what = getattr(exc, "what", str(exc))
        raise UsageError(f"{file}: {what}", why=getattr(exc, "why", None),
                         fix=getattr(exc, "fix", None) or "Fix the value in the study file.") from None


@dataclass(frozen=True)
class StudyResult:
    name: str
    points: tuple[Point, ...]
    runs: tuple[SweepResult, ...]
    out: Path
    seconds: float


def run_study(study: Study, out: str | Path, runner=None, fresh: bool = False,
              overwrite: bool = False) -> StudyResult:
    """Run every sweep of ``study`` (points on ``runner``), then study.json, the plots and report.html."""
    from edgerobust.research.sweep import prepare_out, sweep

    t0 = time.perf_counter()
    out = Path(out)
    prepare_out(out, "study", overwrite=overwrite, fresh=fresh)
    runs: dict[str, list[SweepResult]] = {}
    for series, seed, cfg in study.sweeps:
        logger.info(f"{study.name}: {series}, seed {seed}")
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        runs.setdefault(series, []).append(sweep(dataclasses.replace(cfg, fresh=fresh), runner))
    points = [p for series, rs in runs.items() for p in as_series(summarize(rs), series, len(runs) > 1)]
    all_runs = tuple(r for rs in runs.values() for r in rs)
    _write(out, study, points, all_runs, time.perf_counter() - t0)
    return StudyResult(name=study.name, points=tuple(points), runs=all_runs, out=out,
                       seconds=time.perf_counter() - t0)


def as_series(points: list[Point], series: str, prefix: bool) -> list[Point]:
    """The points of one model, named after its series (a study with one model keeps the sweep's names)."""
    if not prefix:
        return points
    return [dataclasses.replace(p, model=f"{series} {p.model}",
                                group=f"{series} {p.group}".strip()) for p in points]


def _write(out: Path, study: Study, points: list[Point], runs, seconds: float) -> None:
    from edgerobust.research.plots import write_report

    first = study.sweeps[0][2]
    data = {"study": study.name, "file": str(study.file), "series": list(dict.fromkeys(s for s, _, _ in study.sweeps)),
            "device": runs[0].config["device"],
            "runs": [dataclasses.asdict(r) for r in runs], "points": [dataclasses.asdict(p) for p in points],
            "plots": [], "findings": [], "seconds": seconds}
    write_report(out, f"Study {study.name}", points, data, first.focus, STUDY_TYPE, json_name="study.json",
                 subtitle=f"{len(data['series'])} model(s), {len(runs)} sweep(s) from {study.file.name}.")
