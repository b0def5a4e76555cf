"""CLI commands of the torch-free half: `audit`, `compare`, `profile`, and `profiles list|show`.

Each command validates its options, builds a config, calls one library function and renders
the result; results go to stdout, progress and status lines to stderr.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from edgerobust import ui
from edgerobust.cli.configured import Flag, FlagValues, configured
from edgerobust.cli.flags import to_flags
from edgerobust.cli.runtimes import RuntimesOpt
from edgerobust.edge.runtime.profiles import best_match_profile, list_profiles, load_profile, profile_text
from edgerobust.edge.runtime.providers import short_name
from edgerobust.edge.scores.query import QUICK_ITERATIONS, QUICK_SAMPLES

_NAMES = ", ".join(list_profiles())
PROFILE_HELP = (f"Device profile: a shipped name ({_NAMES}) or a path to your own .toml. "
                "Default: the best match for this host (said in the output).")


def resolve_profile_line(profile: Optional[str]):
    """The DeviceProfile to use, why it was chosen automatically (or None), and a line saying so."""
    from edgerobust.edge.audit import resolve_profile

    p, reason = resolve_profile(profile)
    if reason is not None:
        return p, reason, f"Profile: {p.name} (best match for this host: {to_flags(reason)}; choose another with --profile)"
    return p, None, f"Profile: {p.name} from {p.source}"


ProfileOpt = Annotated[Optional[str], typer.Option("--profile", "-p", envvar="EDGEROBUST_PROFILE", help=PROFILE_HELP,
                                                   show_default=False)]
FallbackOpt = Annotated[bool, typer.Option("--allow-fallback", help="If this host lacks a provider the profile asks "
                                           "for (e.g. TensorRT), measure with the providers it has instead of "
                                           "failing. The report then carries a fallback warning.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout instead of tables.")]
NoMemoryOpt = Annotated[bool, typer.Option("--no-memory", help="Skip the peak-memory probe (a fresh process per model).")]
EstimateOpt = Annotated[Optional[Path], typer.Option("--estimate", show_default=False, help="A device's calibration file "
                        "(`edgerobust calibrate` on that device): predict each model's latency there, at the "
                        "profile's batch sizes, with the band from the calibration's held-out kernels. Estimates are "
                        "labelled so and kept apart from what is measured here.")]


Baseline = Annotated[Optional[Path], typer.Option("--baseline", show_default=False, help="Base model to compare with "
                                                   "(default: the bundle's base.onnx).")]
EvalSetOpt = Annotated[Optional[Path], typer.Option("--eval", show_default=False, help="Clean evaluation set .npz with "
                                                    "arrays x, y (default: the bundle's eval.npz).")]
AdvOpt = Annotated[Optional[list[Path]], typer.Option("--adv", show_default=False, help="Adversarial set .npz; repeat "
                                                      "for several (default: every set the bundle lists).")]
NoVerify = Annotated[bool, typer.Option("--no-verify", help="Do not check the bundle files' sha256 against the manifest "
                                        "(adversarial sets are still checked against the base model).")]
FailOnBudget = Annotated[bool, typer.Option("--fail-on-budget", help="Exit with code 1 when the deployed model misses "
                                            "a budget of the profile (latency, memory, size); for CI.")]
ReportOut = Annotated[Optional[Path], typer.Option("--out", "-o", show_default=False, help="Folder for report.json, "
                                                   "report.md, report.html and predictions.npz (default: "
                                                   "<bundle>/reports/<profile>-<timestamp>/). Never overwrites a "
                                                   "report.")]
ReplayBatch = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Samples per inference while replaying "
                                          "the clean and adversarial sets.")]
DeployedOnly = Annotated[bool, typer.Option("--deployed-only", help="Audit base and deployed only; by default the "
                                            "bundle's other precision variants (model_fp32/fp16/int8.onnx) are timed "
                                            "and replayed too, and the report names the fastest on this device.")]
QueryAttack = Annotated[Optional[str], typer.Option(
    "--query-attack", show_default=False,
    help="Attack each model's runtime directly with a score-based black-box attack (square: Square Attack, "
         "Andriushchenko et al. 2020), numpy only, on this device: what an attacker who can query the device gets, "
         "int8 kernels and all. Needs pip install 'edgerobust[query]'. Default, where it is installed: a short one "
         f"({QUICK_ITERATIONS} iterations on {QUICK_SAMPLES} samples, at the transfer sets' largest eps, base and "
         "deployed), whose answers join the transfer sets' in the headline's per-sample worst case; square: the "
         "full one (--query-eps, --queries, --query-samples; typing any of them asks for it); none: no query "
         "attack.")]
QueryEps = Annotated[str, typer.Option("--query-eps", help="Comma-separated Linf eps of the query attack, in [0, 1] "
                                                          "pixels; 0.5 also runs the large-eps sanity check.")]
Queries = Annotated[int, typer.Option("--queries", min=1, help="Iterations of the query attack's random search (the "
                                                               "queries really used are counted).")]
QuerySamples = Annotated[int, typer.Option("--query-samples", min=1, help="Evaluation samples the query attack "
                                                                          "attacks (the first N).")]

F = Flag
# The audit's inputs and settings (read by audit_cmd; the profile is resolved before AuditConfig is built).
AUDIT_FLAGS = (
    F("baseline", Baseline), F("eval_set", EvalSetOpt), F("adv", AdvOpt), F("no_verify", NoVerify, False),
    F("allow_fallback", FallbackOpt, False), F("fail_on_budget", FailOnBudget, False), F("out", ReportOut),
    F("batch_size", ReplayBatch, 64), F("no_memory", NoMemoryOpt, False), F("deployed_only", DeployedOnly, False),
    F("query_attack", QueryAttack), F("query_eps", QueryEps, "8/255"), F("queries", Queries, 1000),
    F("query_samples", QuerySamples, 200), F("estimate", EstimateOpt), F("runtimes", RuntimesOpt),
)


@configured(AUDIT_FLAGS)
def audit_cmd(
    model: Annotated[Path, typer.Argument(help="The deployed model, normally model.onnx inside a bundle folder.",
                                          show_default=False)],
    profile: ProfileOpt = None, as_json: JsonOpt = False, *, flags: FlagValues,
) -> None:
    """Audit a deployed model on this device: robustness next to speedup, memory and size.

    Every precision variant in the bundle is timed in the same interleaved run and answers the same
    sets; the report says which is fastest here and whether it is the deployed one.
    """
    from edgerobust.edge.audit import AuditConfig, audit
    from edgerobust.edge.scores.query import QUICK, QueryConfig
    from edgerobust.edge.render.report import check_out_dir, render, write_report

    query, text = QUICK, flags["query_attack"]  # no flag: the short default, where ART is installed
    if text is None and any(flags.given(p) for p in ("query_eps", "queries", "query_samples")):
        text = "square"  # the full attack's settings typed: the full attack
    if text is not None:
        query = None if text.strip().lower() == "none" else QueryConfig(
            attack=text.strip().lower(), eps=tuple(e for e in flags["query_eps"].split(",") if e.strip()),
            queries=flags["queries"], samples=flags["query_samples"])
    check_out_dir(flags["out"])
    if flags["runtimes"] is not None:
        from edgerobust.cli.runtimes import audit_runtimes, check_audit, cpu_profile, names

        prof, reason = cpu_profile(profile), None
    else:
        prof, reason, line = resolve_profile_line(profile)
        ui.info(line)
    config = AuditConfig(model=model, profile=prof, baseline=flags["baseline"], eval_set=flags["eval_set"],
                         adv_sets=tuple(flags["adv"] or ()), verify=not flags["no_verify"],
                         allow_fallback=flags["allow_fallback"], batch_size=flags["batch_size"], out_dir=flags["out"],
                         fail_on_budget=flags["fail_on_budget"], measure_memory=not flags["no_memory"],
                         profile_reason=reason, variants=not flags["deployed_only"], query=query,
                         estimate=flags["estimate"])
    if flags["runtimes"] is not None:
        check_audit(config)
        return audit_runtimes(config, names(flags["runtimes"]), prof, as_json)
    with ui.recording_warnings() as shown:
        report = audit(config)
    folder = write_report(report, config.out_dir)
    if as_json:  # what report.json holds, with the record of predictions.npz
        typer.echo(json.dumps(json.loads((folder / "report.json").read_text(encoding="utf-8")), indent=2))
    else:
        render(_unrepeated(report, shown), ui.out, to_flags)
    ui.info(f"Report written to {folder}")
    if config.fail_on_budget and not report.budgets_passed:
        missed = ", ".join(b.name for b in report.budgets if b.passed is False)
        ui.err.print(f"[bold red]budget missed:[/bold red] {escape(missed)} (--fail-on-budget: exit code 1)", highlight=False)
        raise typer.Exit(code=1)


def _unrepeated(report, shown: list[str]):
    """The report without the warnings the audit printed on stderr while it ran (the host
    mismatch, a provider fallback) when stdout is the same terminal: a person reads each once,
    before the minutes of measuring. Redirected or piped, stdout keeps every warning."""
    said = tuple(to_flags(w) for w in report.warnings)  # the library names fields; a command-line user reads flags
    if shown and ui.same_screen():
        said = tuple(w for w, raw in zip(said, report.warnings) if raw not in shown)
    return dataclasses.replace(report, warnings=said)


def compare_cmd(
    reports: Annotated[list[Path], typer.Argument(
        metavar="REPORT_DIR", help="Two or more audit report folders of one bundle (each holds report.json and "
        "predictions.npz), e.g. from different devices or profiles; the folder of an audit with --runtimes counts "
        "as one device per runtime.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for compare.html and compare.json. "
                   "Never overwrites an earlier comparison.", show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Most disputed samples listed per set and pair "
                   "of devices.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON on stdout instead of "
                       "tables.")] = False,
) -> None:
    """Compare audits of one bundle across devices and runtimes: latency, accuracy, and whether the
    deployed model gives the same answers (per-sample disagreement, exact McNemar test)."""
    from edgerobust.edge.compare import CompareConfig, compare, to_json
    from edgerobust.edge.render.compare_render import render, write_html

    config = CompareConfig(reports=tuple(reports), top=top)
    if out is not None:
        check_compare_out(out)
    result = compare(config)
    if as_json:
        typer.echo(json.dumps(to_json(result), indent=2))
    else:
        render(result, ui.out)
    if out is not None:
        ui.info(f"Comparison written to {write_html(result, out)}")


def check_compare_out(out: Path) -> None:
    """Refuse an --out that already holds a comparison, or is a file."""
    from edgerobust.errors import UsageError

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' is a file, not a folder.", fix="Choose a folder for compare.html.")
    taken = [n for n in ("compare.html", "compare.json") if (out / n).exists()]
    if taken:
        raise UsageError(f"'{out}' already holds a comparison ({', '.join(taken)}).",
                         why="edgerobust never overwrites an earlier report.", fix="Choose another --out.")


def profile_cmd(
    model: Annotated[Path, typer.Argument(help="The ONNX model to measure.", show_default=False)],
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="A second model to compare with; the two "
                        "are measured interleaved and the speedup is baseline / model.", show_default=False)] = None,
    profile: ProfileOpt = None,
    allow_fallback: FallbackOpt = False,
    batch_sizes: Annotated[Optional[list[int]], typer.Option("--batch-size", "-b", min=1, help="Batch size to "
                           "measure; repeat for several (default: the profile's).", show_default=False)] = None,
    as_json: JsonOpt = False,
    no_memory: NoMemoryOpt = False,
    estimate: Annotated[Optional[Path], typer.Option("--estimate", show_default=False, help="A device's calibration "
                        "file (`edgerobust calibrate` on that device): predict the latency there instead of "
                        "measuring here (at each --batch-size, default 1; with its band; labelled as an "
                        "estimate).")] = None,
    runtimes: RuntimesOpt = None,
) -> None:
    """Measure latency, peak memory and size of one model, or compare two with --baseline.

    With --runtimes, on every runtime installed here: a model inside a bundle is audited on each (base and
    deployed, the bundle's sets replayed so the answers can be compared with the CPU provider's), a lone
    model only timed."""
    from edgerobust.edge.runtime.hostcheck import check_host, host_facts
    from edgerobust.edge.runtime.measure import measure_models
    from edgerobust.edge.render.report import dumps, render_estimate, render_measure

    models = {"base": baseline, "deployed": model} if baseline else {"model": model}
    if runtimes is not None:
        from edgerobust.cli.runtimes import profile_runtimes
        from edgerobust.errors import UsageError

        if estimate is not None:
            raise UsageError("--runtimes and --estimate do not go together.", fix="Run them apart.")
        return profile_runtimes(models, runtimes, profile, as_json, not no_memory, batch_sizes, allow_fallback)
    if estimate is not None:
        from edgerobust.edge.estimate.predict import EstimateConfig, estimate as predict

        est = predict(EstimateConfig(estimate, models, tuple(batch_sizes or (1,))))
        if as_json:
            typer.echo(json.dumps(est.to_dict(), indent=2))
        else:
            render_estimate(est, ui.out)
        return
    prof, _, line = resolve_profile_line(profile)
    ui.info(line)
    host = check_host(prof, host_facts())
    if not host.matches:
        ui.warn(f"this host is not {prof.name}'s device ({'; '.join(host.mismatch)}): the "
                f"{host.settings_line(prof.name)}.")
    if host.threads:
        ui.warn(host.threads)
    if batch_sizes:
        prof = prof.with_batch_sizes(tuple(batch_sizes))
    report = measure_models(models, prof, allow_fallback=allow_fallback, memory=not no_memory)
    if as_json:
        typer.echo(dumps(report))
    else:
        render_measure(report, ui.out, None if host.matches else host.host, to_flags)


profiles_app = typer.Typer(help="List and show device profiles.", no_args_is_help=True)


@profiles_app.command("list")
def profiles_list() -> None:
    """List the shipped device profiles; * marks the best match for this host."""
    from rich.padding import Padding
    from rich.text import Text

    match = best_match_profile()
    head = ("name", "providers", "threads", "batch sizes", "p50 budget")
    rows = []
    for name in list_profiles():
        p = load_profile(name)
        rows.append(("*" if name == match.name else " ", p.description, (
            name, ", ".join(short_name(x.name, dict(x.options)) for x in p.providers),
            str(p.session.intra_op_threads or "auto"), ", ".join(map(str, p.measure.batch_sizes)),
            f"{p.budgets.latency_ms_p50:g} ms" if p.budgets.latency_ms_p50 else "–")))
    # One line of settings per profile, its description wrapped below it: fits 80 columns.
    widths = [max(len(h), *(len(cells[i]) for _, _, cells in rows)) for i, h in enumerate(head)]

    def line(mark: str, cells) -> str:
        return f"{mark} " + "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    ui.out.print("[bold]Device profiles[/bold]", highlight=False)
    ui.out.print(Text(line(" ", head), style="bold"))
    for mark, description, cells in rows:
        ui.out.print(line(mark, cells), markup=False, highlight=False)
        ui.out.print(Padding(Text(description, style="dim"), (0, 0, 0, 4), expand=False), highlight=False)
    ui.out.print(f"* best match for this host: {match.name} ({to_flags(match.reason)})", markup=False, highlight=False)


@profiles_app.command("show")
def profiles_show(
    name: Annotated[str, typer.Argument(help=f"A shipped profile ({_NAMES}) or a path to a .toml file.",
                                        show_default=False)],
) -> None:
    """Validate a profile and print it, with the comments that give each choice's reason."""
    p = load_profile(name)
    ui.out.print(f"[bold]{escape(p.name)}[/bold]: {escape(p.description)}  [dim]({escape(str(p.source))}, valid)[/dim]",
                 highlight=False)
    ui.out.print(profile_text(name), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)
    app.command("compare")(compare_cmd)
    app.command("profile")(profile_cmd)
    app.add_typer(profiles_app, name="profiles")
