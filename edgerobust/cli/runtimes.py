"""`audit --runtimes` and `profile --runtimes`: the bundle timed (and its sets replayed) on every runtime
installed here, side by side, the fastest named (edgerobust.edge.runtimes)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerobust import ui
from edgerobust.cli.flags import to_flags
from edgerobust.errors import UsageError

RuntimesOpt = Annotated[Optional[str], typer.Option(
    "--runtimes", show_default=False,
    help="Audit on several runtimes, one after another, and name the fastest: all (every execution provider "
         "this onnxruntime offers whose device is here: CPU, OpenVINO CPU/GPU/NPU, CUDA, TensorRT, DirectML, "
         "Core ML, QNN) or comma-separated names (cpu, openvino-cpu, openvino-gpu, openvino-npu, cuda, tensorrt, "
         "directml, coreml, qnn). Each gets its own report folder in one folder (audit --out; default "
         "<bundle>/reports/runtimes-<timestamp>/), with runtimes.json and runtimes.md beside them; compare reads "
         "that folder as one device per runtime. The CPU provider is timed with --profile (a CPU profile; "
         "default laptop-cpu), the others with their own shipped profile.")]


def cpu_profile(profile: Optional[str]):
    """The profile the CPU provider is timed with: ``profile`` when it is a CPU profile, else laptop-cpu."""
    from edgerobust.edge.runtime.profiles import load_profile

    p = load_profile(profile or "laptop-cpu")
    if list(p.provider_names[:1]) != ["CPUExecutionProvider"]:
        raise UsageError(f"--profile {p.name} runs on {p.provider_names[0]}, not the CPU provider.",
                         why="With --runtimes, --profile sets how the CPU provider is timed (threads, batch "
                             "sizes); every other runtime is timed with its own shipped profile.",
                         fix="Pass a CPU profile (laptop-cpu, laptop-cpu-1thread) or leave --profile out.")
    return p


def names(text: str) -> tuple[str, ...]:
    """The runtimes asked for, each checked (unknown, not installed, device absent: exit 2 now)."""
    from edgerobust.edge.runtimes import parse_runtimes

    out = parse_runtimes(text)
    if not out:
        raise UsageError("No runtime can run here.", fix="Check the onnxruntime install (python -c 'import "
                         "onnxruntime as o; print(o.get_available_providers())').")
    ui.info(f"Runtimes: {', '.join(out)}")
    return out


def show(result, as_json: bool, root: Optional[Path] = None) -> None:
    """The comparison on stdout: a table and the fastest line, or JSON."""
    from edgerobust.edge.render.runtimes_render import lines, table

    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        head, rows = table(result, compact=True)
        ui.out.print(ui.table("Runtimes on this host (batch 1; each alone, one after another)", head, rows))
        for line in lines(result, details=True):
            ui.out.print(f"  {to_flags(line)}", markup=False, highlight=False)
    if root is not None:
        ui.info(f"Runtimes written to {root} (runtimes.json, runtimes.md, one report folder per runtime)")


def check_audit(config) -> None:
    """Refuse what --runtimes cannot combine with, before anything is measured."""
    if config.estimate is not None:
        raise UsageError("--runtimes and --estimate do not go together.",
                         why="--runtimes measures every runtime of this host; --estimate predicts another device.",
                         fix="Run them as two audits.")
    if config.allow_fallback:
        raise UsageError("--runtimes and --allow-fallback do not go together.",
                         why="Each runtime is measured on its own provider; one that falls back measures another.")
    if config.fail_on_budget:
        raise UsageError("--runtimes and --fail-on-budget do not go together.",
                         why="Budgets belong to one profile; each runtime is audited on its own.",
                         fix="Audit the runtime you deploy with --profile and --fail-on-budget.")


def audit_runtimes(config, chosen: tuple[str, ...], cpu, as_json: bool) -> None:
    """`audit --runtimes`: ``config`` (an AuditConfig) audited once per runtime of ``chosen``."""
    import dataclasses

    from edgerobust.edge.runtimes import audit_runtimes as run, runtimes_root

    root = runtimes_root(config.model, config.out_dir)
    show(run(dataclasses.replace(config, out_dir=None), chosen, root, cpu), as_json, root)


def profile_runtimes(models: dict, text: str, profile: Optional[str], as_json: bool, memory: bool,
                     batch_sizes, allow_fallback: bool = False) -> None:
    """`profile --runtimes`: a model inside a bundle is audited per runtime (its sets replayed, answers
    compared, base and deployed only, no query attack); a lone model is timed per runtime."""
    from edgerobust.edge.runtimes import measure_runtimes

    if allow_fallback:
        raise UsageError("--runtimes and --allow-fallback do not go together.",
                         why="Each runtime is measured on its own provider; one that falls back measures another.")
    cpu = cpu_profile(profile)
    chosen = names(text)
    if batch_sizes:
        cpu = cpu.with_batch_sizes(tuple(batch_sizes))
    model = models.get("deployed") or models["model"]
    if (Path(model).resolve().parent / "manifest.json").is_file():
        from edgerobust.edge.audit import AuditConfig

        config = AuditConfig(model=Path(model), profile=cpu, baseline=models.get("base"), measure_memory=memory,
                             variants=False, query=None)
        audit_runtimes(config, chosen, cpu, as_json)
        return
    show(measure_runtimes(models, chosen, cpu, memory, tuple(batch_sizes or ())), as_json)
