"""A runtimes comparison (edgerobust.edge.runtimes) as a table, a line naming the fastest, and Markdown.

One row per runtime: where the deployed model ran, the precision the runtime declares for it, its
p50 at batch 1 and the base's, the speedup over the base on that runtime, how fast it is against
onnxruntime's CPU provider, clean accuracy, and how many of its answers differ from the CPU
provider's (clean and adversarial sets together; the corruption sets apart, their rows repeat).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the module renders what edgerobust.edge.runtimes makes, which writes it: no import cycle
    from edgerobust.edge.runtimes import RuntimeComparison, RuntimeRow

HEAD = ["runtime", "ran on", "precision", "deployed p50 ms", "base p50 ms", "speedup", "vs CPU provider",
        "clean", "answers differ from the CPU provider"]
COMPACT = (0, 1, 3, 5, 6, 7, 8)  # the terminal's columns: precision and the base's p50 in the lines below


def _ms(v: float | None) -> str:
    return "–" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def _pct(k: int, n: int) -> str:
    return f"{k} of {n} ({100 * k / n:.1f}%)" if n else "–"


def _differ(r: RuntimeRow, reference: str | None, compact: bool = False) -> str:
    if r.runtime == reference:
        return "(the reference)"
    a = r.agreement
    if a is None:
        return "–"
    parts = [_pct(a["differ"], a["n"])] if a["n"] else []
    if compact:
        return parts[0] if parts else "–"
    if a.get("corruption"):
        c = a["corruption"]
        parts.append(f"corruption sets {100 * c['share']:.1f}%")
    w = a.get("worst")
    if w and w["differ"]:
        parts.append(f"most in {w['set']}: {w['differ']} of {w['n']}, McNemar p {w['p_value']:.2g}")
    return "; ".join(parts)


def _cpu(result: RuntimeComparison) -> RuntimeRow | None:
    return next((r for r in result.rows if r.runtime == "cpu" and r.error is None and r.deployed_p50_ms), None)


def _vs_cpu(r: RuntimeRow, cpu: RuntimeRow | None) -> str:
    if cpu is None or r.deployed_p50_ms is None:
        return "–"
    return "1.00x" if r is cpu else f"{cpu.deployed_p50_ms / r.deployed_p50_ms:.2f}x"


def table(result: RuntimeComparison, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """The head and one row of strings per runtime (a failed one says why in its last cell); ``compact``:
    the terminal's columns (:data:`COMPACT`), the rest in :func:`lines`."""
    from edgerobust.edge.runtime.providers import short_name

    cpu, rows = _cpu(result), []
    for r in result.rows:
        if r.error is not None:
            rows.append([r.runtime, "–", "–", "–", "–", "–", "–", "–", f"not measured: {r.error}"])
            continue
        ran = ", ".join(short_name(p) for p in r.providers[:1]) + (" (fallback)" if r.fallback else "")
        rows.append([r.runtime, ran or "–", r.precision or "–", _ms(r.deployed_p50_ms), _ms(r.base_p50_ms),
                     f"{r.speedup:.2f}x" if r.speedup else "–", _vs_cpu(r, cpu),
                     f"{100 * r.clean:.1f}%" if r.clean is not None else "–",
                     _differ(r, result.reference, compact)])
    if compact:
        return [HEAD[i] for i in COMPACT], [[row[i] for i in COMPACT] for row in rows]
    return HEAD, rows


def detail_lines(result: RuntimeComparison) -> list[str]:
    """Per runtime what the compact table leaves out: the precision it ran in, and where answers differed."""
    out = []
    for r in result.rows:
        if r.error is not None:
            out.append(f"{r.runtime}: not measured: {r.error}")
            continue
        text = f"{r.runtime}: precision {r.precision or 'not recorded'}"
        text += f"; observed: {r.observed}" if r.observed else ""
        differ = _differ(r, result.reference)
        if r.runtime != result.reference and differ != "–":
            text += f"; answers against the CPU provider's: {differ}"
        out.append(text)
    return out


def fastest_line(result: RuntimeComparison) -> str:
    """Which runtime ran the deployed model fastest here, by how much, and how its answers compare."""
    if result.fastest is None:
        return "No runtime ran the deployed model on its own provider: none is named fastest."
    best = next(r for r in result.rows if r.runtime == result.fastest)
    cpu = _cpu(result)
    text = (f"Fastest here: {best.runtime}{f' ({best.what})' if best.what else ''}, the deployed model at "
            f"{_ms(best.deployed_p50_ms)} ms p50 at batch 1")
    if cpu is not None and best is not cpu:
        text += f", {cpu.deployed_p50_ms / best.deployed_p50_ms:.2f}x the CPU provider's speed ({_ms(cpu.deployed_p50_ms)} ms)"
    others = [r for r in result.rows if r is not best and r.error is None and r.deployed_p50_ms and not r.fallback]
    if cpu is best and others:
        text += "; " + ", ".join(f"{r.runtime} ran at {best.deployed_p50_ms / r.deployed_p50_ms:.2f}x its speed"
                                 for r in others)
    a = best.agreement
    if a and a["n"]:
        text += f"; its answers differ from the CPU provider's on {_pct(a['differ'], a['n'])} of the samples"
    close = [r for r in others if _overlap(best, r)]
    if close:
        text += (f". Not clearly ahead of {', '.join(r.runtime for r in close)}: the p50 intervals overlap "
                 "(measured one after another; rerun to see which holds)")
    return text + "."


def _overlap(a: RuntimeRow, b: RuntimeRow) -> bool:
    """Whether two runtimes' p50 intervals overlap (an interval unknown counts as overlapping)."""
    import math

    if not a.deployed_ci_ms or not b.deployed_ci_ms or any(math.isnan(v) for v in (*a.deployed_ci_ms, *b.deployed_ci_ms)):
        return True
    return a.deployed_ci_ms[1] >= b.deployed_ci_ms[0] and b.deployed_ci_ms[1] >= a.deployed_ci_ms[0]


CAVEAT = ("Every runtime ran the same files, built for one profile; a bundle built for a runtime's own profile "
          "(compress `target`, e.g. laptop-openvino-cpu) can run faster there. Each runtime was measured alone, "
          "in the audit's probe processes, one after another: figures of different runtimes come from different "
          "moments of this host.")


def lines(result: RuntimeComparison, details: bool = False) -> list[str]:
    """The fastest line, then (``details``: the compact table's) each runtime's precision, the notes and
    the caveat."""
    return [fastest_line(result), *(detail_lines(result) if details else ()), *result.notes, CAVEAT]


def to_markdown(result: RuntimeComparison, title: str) -> str:
    head, rows = table(result)
    out = [f"# edgerobust runtimes: {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    out += [""] + [f"- {line}" for line in lines(result)]
    out += [f"- {r.runtime}: report in `{r.folder}`" for r in result.rows if r.folder]
    return "\n".join(out) + "\n"
