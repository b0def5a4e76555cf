"""Robust accuracy per threat and eps, the sanity checks and the query attack, as report tables
(terminal, report.md, report.html rows). Torch-free."""
from __future__ import annotations

from edgerobust.edge.scores.robust import COMBINED, GRADES

THREAT_TEXT = {"transfer": "transfer (crafted on the base)", "white-box": "white-box (crafted on each model)",
               "query": "query (the runtime itself)", COMBINED: "every attack (all sets + query)"}
MARK = {True: "PASS", False: "FAIL", None: "n/a"}


def _pct(p, ci: bool) -> str:
    if p is None or p.value is None:
        return "–"
    text = f"{100 * p.value:.1f}%"
    if ci and p.ci_low is not None:
        text += f" [{100 * p.ci_low:.1f}, {100 * p.ci_high:.1f}]"
    return text


def _pp(d) -> str:
    return "–" if d is None else f"{100 * d:+.1f} pp".replace("-", "−")


def robust_head(report) -> list[str]:
    extra = sorted({r for ra in report.robust for r in ra.models if r not in ("base", "deployed")})
    return ["threat", "eps", "grade", "n", "base", "deployed", "Δ", *extra]


def robust_rows(report, ci: bool = True) -> list[list[str]]:
    """One row per (threat, eps): per-sample worst case over every attack of that eps and threat."""
    extra = robust_head(report)[7:]
    rows = []
    for ra in report.robust:
        grade = GRADES[ra.grade] + (" (transferred)" if ra.threat == "transfer" and ra.grade == "upper-bound" else "")
        if ra.grades.get("base") not in (None, ra.grade):
            grade += f" (base: {GRADES[ra.grades['base']]})"
        rows.append([THREAT_TEXT.get(ra.threat, ra.threat), ra.eps_text + ("" if ra.norm == "Linf" else f" {ra.norm}"),
                     grade + (" *" if ra.note else ""), str(ra.n), _pct(ra.models.get("base"), ci), _pct(ra.models.get("deployed"), ci),
                     _pp(ra.delta), *[_pct(ra.models.get(r), ci) for r in extra]])
    return rows


ROBUST_NOTE = ("A sample counts as robust only if the model answers it correctly clean and on every attack of that "
               "eps and threat (the per-sample worst case, as AutoAttack and RobustBench report); 95% Wilson "
               "intervals. AutoAttack-grade: the standard AutoAttack components ran (APGD-CE, APGD-T, FAB-T, "
               "Square 5000). Upper bound: only weaker attacks ran, so the true robust accuracy is at most this.")


def query_head() -> list[str]:
    return ["attack", "eps", "iterations", "n", "base", "deployed", "Δ", "queries used per sample (base, deployed)",
            "seconds"]


def query_rows(report) -> list[list[str]]:
    rows = []
    for q in report.query:
        ra, per, sec = q["robust_accuracy"], q["queries_per_sample"], q["seconds"]
        rows.append([q["attack"], q["eps_text"], str(q["queries_budget"]), str(q["n"]),
                     "–" if ra.get("base") is None else f"{100 * ra['base']:.1f}%",
                     "–" if ra.get("deployed") is None else f"{100 * ra['deployed']:.1f}%", _pp(q.get("delta")),
                     ", ".join(f"{per[r]:.0f}" for r in ("base", "deployed") if r in per),
                     ", ".join(f"{sec[r]:.1f}" for r in ("base", "deployed") if r in sec)])
    return rows


def sanity_lines(report) -> list[str]:
    return [f"{MARK[c.passed]}  {c.name}: {c.detail}" for c in report.sanity]


def robust_md(report, md_table) -> list[str]:
    """The report.md sections: robust accuracy, the query attack, the sanity checks."""
    out = []
    if report.robust:
        notes = sorted({f"\\* eps {ra.eps_text}, {ra.threat}: {ra.note}." for ra in report.robust if ra.note})
        out += ["## Robust accuracy (per-sample worst case)", "", ROBUST_NOTE, "",
                md_table(robust_head(report), robust_rows(report)), "", *notes, *([""] if notes else [])]
    if report.query:
        out += ["## Query attack on the runtime", "",
                "A score-based black-box attack run directly against each model's onnxruntime session on this "
                "device: it measures the deployed numerics themselves, which no transfer set can.", "",
                md_table(query_head(), query_rows(report)), ""]
    if report.sanity:
        out += ["## Sanity checks", ""] + [f"- {line}" for line in sanity_lines(report)] + [""]
    return out
