"""A query attack on the deployed runtime itself: what an attacker who can query the device gets.

Transfer sets say how the base model's adversarial examples carry over; they say nothing of the
deployed model's own weaknesses (int8 kernels, the device's numerics, a preprocessing step
without gradients). The audit can run a score-based black-box attack directly against each
ONNX Runtime session, with numpy only:

- ``square``: Square Attack (Andriushchenko et al. 2020, arXiv:1912.00049), Linf, random square
  patches of +-eps kept when they lower the margin loss; no gradients, only the model's output
  scores. From IBM's Adversarial Robustness Toolbox (``pip install 'edgerobust[query]'``;
  ART is torch-free), its ``SquareAttack`` on a ``BlackBoxClassifierNeuralNetwork`` whose
  predict function is the onnxruntime session.

Each model (base and deployed, and the variants when asked) is attacked on the same evaluation
rows with the same seed; the result records queries used, time, and per-sample correctness, so
robust accuracy is a per-sample figure (edgerobust.edge.scores.robust) with the Δ deployed − base.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from edgerobust.edge.scores.robust import RobustAccuracy
from edgerobust.edge.scores.stats import proportion
from edgerobust.eps import parse_eps
from edgerobust.errors import DependencyError, UsageError

logger = logging.getLogger(__name__)

# name -> (summary, paper): the attacks `query_attack` may name
QUERY_ATTACKS = {"square": ("Square Attack: score-based random search over square patches, Linf, no gradients",
                            "Andriushchenko et al. 2020, arXiv:1912.00049")}


@dataclass(frozen=True)
class QueryConfig:
    """The audit's query attack. ``eps``: Linf radii in [0, 1] pixels (as text, e.g. "8/255");
    ``queries``: the iterations of the random search (ART's max_iter; each iteration queries every
    sample not yet broken, about three times in ART's Square: the queries really used are counted
    and reported); ``samples``: the first N evaluation rows are attacked; ``seed`` fixes the search."""

    attack: str = "square"
    eps: tuple[str, ...] = ("8/255",)
    queries: int = 1000
    samples: int = 200
    seed: int = 0
    roles: tuple[str, ...] = ("base", "deployed")

    def __post_init__(self) -> None:
        if self.attack not in QUERY_ATTACKS:
            raise UsageError(f"Unknown `query_attack` '{self.attack}'.", fix=f"Use one of: {', '.join(QUERY_ATTACKS)}.")
        object.__setattr__(self, "eps", tuple(str(e).strip() for e in self.eps))
        if not self.eps:
            raise UsageError("The query attack needs at least one `query_eps`.", fix="Give e.g. 8/255.")
        for e in self.eps:
            v = parse_eps(e, "query_eps")
            if not 0 < v <= 1:
                raise UsageError(f"A `query_eps` must lie in (0, 1] pixels; got {e}.")
        for name, lo in (("queries", 1), ("samples", 1), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise UsageError(f"`{name}` must be an integer >= {lo}; got {v!r}.")


@dataclass
class QueryResult:
    """One query attack at one eps on every attacked model: per-sample correctness, queries, time."""

    attack: str
    eps: float
    eps_text: str
    queries_budget: int
    idx: np.ndarray  # the evaluation rows attacked
    clean_correct: dict[str, np.ndarray] = field(default_factory=dict)
    adv_correct: dict[str, np.ndarray] = field(default_factory=dict)
    queries_used: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    library: str = ""

    def robust_accuracy(self) -> RobustAccuracy:
        n = len(self.idx)
        correct = {r: self.clean_correct[r] & self.adv_correct[r] for r in self.adv_correct}
        models = {r: proportion(int(ok.sum()), n) for r, ok in correct.items()}
        return RobustAccuracy(threat="query", norm="Linf", eps=self.eps, eps_text=self.eps_text, grade="query",
                              components=(f"{self.attack} ({self.queries_budget} iterations)",), n=n, models=models,
                              sets={r: (f"query {self.attack} {self.eps_text}",) for r in models},
                              grades={r: "query" for r in models}, rows=self.idx, correct=correct,
                              compares=f"the same query attack ({self.queries_budget} iterations) on each runtime",
                              strongest={r: "query" for r in models})

    def to_dict(self) -> dict:
        ra = self.robust_accuracy()
        return {"attack": self.attack, "eps": self.eps, "eps_text": self.eps_text, "norm": "Linf",
                "queries_budget": self.queries_budget, "n": len(self.idx), "library": self.library,
                "robust_accuracy": {r: p.value for r, p in ra.models.items()},
                "queries_used": dict(self.queries_used), "queries_per_sample": {
                    r: q / max(1, len(self.idx)) for r, q in self.queries_used.items()},
                "seconds": {r: round(s, 3) for r, s in self.seconds.items()}, "delta": ra.delta}


# The audit's default query attack where ART is installed (`edgerobust audit` without `query_attack`,
# and `edgerobust demo`): Square on the first QUICK_SAMPLES evaluation rows for QUICK_ITERATIONS
# iterations, base and deployed, at the transfer sets' largest Linf eps, so that its per-sample answers
# join theirs in the headline's worst case. Sized to the demo: about 30,000 queries per model (ART's
# Square queries each row about three times per iteration), some 10 s on an idle 2-core machine, most of
# it the fp32 base model's (measured in docs/audit.md); a short search, so its figure is an upper bound:
# `query_attack` square (1000 iterations, 200 samples) runs the full one.
QUICK = "quick"
QUICK_SAMPLES = 100
QUICK_ITERATIONS = 100
# AuditConfig.query as the report records what came of it (AuditReport.query_status); QUICK needs Linf
# transfer sets to pair with: without any it does not run ("no transfer sets")
QUERY_STATUS = ("ran", "off", "not installed", "no transfer sets")


def art_installed() -> bool:
    """Whether the Adversarial Robustness Toolbox can be imported; looked up, not imported: ART imports
    torch where torch is installed, which must not happen before the audit's latency is measured."""
    import importlib.util

    return importlib.util.find_spec("art") is not None


def quick_config(sets) -> QueryConfig | None:
    """The short default query attack (QUICK_*) at the largest Linf eps of the transfer sets (the audit's
    SetResults), so that the per-sample worst case can pair them; None without any."""
    linf = [s.attack for s in sets if s.kind == "adversarial" and getattr(s, "source", "transfer") == "transfer"
            and s.attack.get("norm", "Linf") == "Linf" and 0 < float(s.attack.get("eps", 0)) <= 1]
    if not linf:
        return None
    top = max(linf, key=lambda a: float(a["eps"]))
    text = str(top.get("eps_text") or "")
    eps = text if text and math.isclose(parse_eps(text), float(top["eps"]), rel_tol=1e-6) else repr(float(top["eps"]))
    return QueryConfig(eps=(eps,), queries=QUICK_ITERATIONS, samples=QUICK_SAMPLES)


def check_query(query) -> None:
    """A UsageError unless ``query`` (AuditConfig.query) is a QueryConfig, QUICK or None."""
    if not (query is None or query == QUICK or isinstance(query, QueryConfig)):
        raise UsageError(f"AuditConfig.query must be a QueryConfig, {QUICK!r} or None; got {query!r}.")


def resolve_query(query, sets) -> tuple[QueryConfig | None, str]:
    """The query attack an audit runs (None: none) and its AuditReport.query_status. ``query``: a
    QueryConfig runs as given; QUICK runs quick_config(sets) where ART is installed and there are transfer
    sets; otherwise none, "not installed" where ART is missing (the headline then says how to check the
    transfer figures)."""
    if isinstance(query, QueryConfig):
        return query, "ran"
    if not art_installed():
        return None, "not installed"
    if query != QUICK:
        return None, "off"
    quick = quick_config(sets)
    return quick, ("ran" if quick is not None else "no transfer sets")


def require_art() -> None:
    """A DependencyError naming the extra when the Adversarial Robustness Toolbox is not installed
    (art_installed)."""
    if not art_installed():
        raise DependencyError("The query attack needs IBM's Adversarial Robustness Toolbox, which is not installed.",
                              fix="pip install 'edgerobust[query]' (torch-free).")


def _art():
    try:
        from art.attacks.evasion import SquareAttack
        from art.estimators.classification import BlackBoxClassifierNeuralNetwork
        import art
    except ImportError as exc:
        raise DependencyError("The query attack needs IBM's Adversarial Robustness Toolbox, which is not installed.",
                              why=str(exc), fix="pip install 'edgerobust[query]' (torch-free).") from exc
    return art, SquareAttack, BlackBoxClassifierNeuralNetwork


def _scores(session, batch_size: int, counter: list):
    """A predict function over an onnxruntime session: softmax scores, counting the rows queried."""
    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        counter[0] += len(x)
        out = []
        for i in range(0, len(x), batch_size):
            chunk = x[i:i + batch_size].astype(session.input.dtype, copy=False)
            logits = np.asarray(session.session.run([session.output_name], {session.input.name: chunk})[0],
                                dtype=np.float64).reshape(len(chunk), -1)
            e = np.exp(logits - logits.max(1, keepdims=True))
            out.append(e / e.sum(1, keepdims=True))
        return np.concatenate(out).astype(np.float32)
    return predict


def run_query_attack(sessions: dict, x: np.ndarray, y: np.ndarray, config: QueryConfig,
                     batch_size: int = 128, show: bool = True) -> list[QueryResult]:
    """The query attack of ``config`` on the first ``config.samples`` rows of (x, y), against each
    session of ``config.roles`` present in ``sessions``; one QueryResult per eps."""
    art, SquareAttack, BlackBox = _art()
    n = min(config.samples, len(y))
    xs, ys = np.ascontiguousarray(x[:n], dtype=np.float32), np.asarray(y[:n])
    roles = [r for r in config.roles if r in sessions]
    fixed = [r for r in roles if sessions[r].input.shape[0]]
    if fixed:
        raise UsageError(f"The query attack needs models with a free batch axis; {', '.join(fixed)} fix it.")
    out = []
    for eps_text in config.eps:
        eps = parse_eps(eps_text)
        res = QueryResult(config.attack, eps, eps_text, config.queries, np.arange(n, dtype=np.int64),
                          library=f"adversarial-robustness-toolbox {art.__version__}")
        for role in roles:
            counter = [0]
            predict = _scores(sessions[role], batch_size, counter)
            clf = BlackBox(predict, xs.shape[1:], int(predict(xs[:1]).shape[1]), clip_values=(0.0, 1.0))
            counter[0] = 0
            res.clean_correct[role] = predict(xs).argmax(1) == ys
            counter[0] = 0
            attack = SquareAttack(clf, norm=np.inf, eps=eps, max_iter=config.queries, nb_restarts=1,
                                  batch_size=batch_size, verbose=False)
            t0 = time.perf_counter()
            np.random.seed(config.seed)  # ART draws its squares from numpy's global generator
            if show:
                logger.info(f"query {config.attack} eps {eps_text} on {role}: {n} samples, {config.queries} iterations ...")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                adv = attack.generate(xs, y=ys)
            res.seconds[role] = time.perf_counter() - t0
            res.queries_used[role] = counter[0]
            # inside the eps ball and [0, 1], in float32 (ART's float arithmetic can overshoot by an ulp)
            adv = np.clip(np.clip(adv, xs - np.float32(eps), xs + np.float32(eps)), 0.0, 1.0).astype(np.float32)
            counter[0] = 0
            res.adv_correct[role] = predict(adv).argmax(1) == ys
        out.append(res)
        if show:
            ra = res.robust_accuracy()
            logger.info(f"query {config.attack} eps {eps_text} ({config.queries} iterations, {n} samples): "
                        + ", ".join(f"{r} {p.value:.1%}" for r, p in ra.models.items() if p.value is not None))
    return out
