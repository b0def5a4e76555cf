"""Statistics for the audit: proportions with Wilson intervals, attack rates, exact McNemar.

Everything takes per-sample integer predictions (never logits) and is pure numpy + math, so
it runs on a device without scipy.

* Confidence intervals are **Wilson score** intervals (95 % by default): unlike the normal
  approximation they stay inside [0, 1] and behave at 0 % and 100 % accuracy.
* McNemar's test is **exact**: a two-sided binomial test (p = 1/2) on the discordant pairs,
  computed with ``math.comb`` for up to 5000 discordant pairs and in log space above that
  (still the exact binomial tail, only rounded to float precision).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n``; ``value`` and the interval are None when ``n`` is 0 (nothing to rate)."""

    k: int
    n: int
    value: float | None
    ci_low: float | None
    ci_high: float | None
    method: str = "wilson-95"


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two models' correctness on the same samples.

    ``only_a`` counts samples model A gets right and B wrong, ``only_b`` the reverse.
    """

    only_a: int
    only_b: int
    p_value: float
    method: str = "exact-binomial"


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    if n <= 0:
        raise ValueError("the Wilson interval needs n > 0")
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must lie in [0, n={n}]")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # Guard the exact ends against float rounding (k == 0 gives lo == 0, k == n gives hi == 1).
    if k == 0:
        lo = 0.0
    if k == n:
        hi = 1.0
    return lo, hi


def proportion(k: int, n: int) -> Proportion:
    k, n = int(k), int(n)
    if n == 0:
        return Proportion(k=0, n=0, value=None, ci_low=None, ci_high=None)
    lo, hi = wilson_interval(k, n)
    return Proportion(k=k, n=n, value=k / n, ci_low=lo, ci_high=hi)


def _same_shape(*arrays: np.ndarray) -> list[np.ndarray]:
    out = [np.asarray(a).reshape(-1) for a in arrays]
    if len({a.shape[0] for a in out}) != 1:
        raise ValueError(f"arrays differ in length: {[a.shape[0] for a in out]}")
    return out


def accuracy(pred: np.ndarray, y: np.ndarray) -> Proportion:
    """Share of samples where the prediction equals the label."""
    pred, y = _same_shape(pred, y)
    return proportion(int(np.sum(pred == y)), pred.shape[0])


def attack_success_rate(clean_pred: np.ndarray, adv_pred: np.ndarray, y: np.ndarray) -> Proportion:
    """Among samples the model gets right clean, the share it gets wrong adversarially."""
    clean_pred, adv_pred, y = _same_shape(clean_pred, adv_pred, y)
    right = clean_pred == y
    return proportion(int(np.sum(right & (adv_pred != y))), int(np.sum(right)))


def transfer_success_rate(base_clean: np.ndarray, base_adv: np.ndarray, target_clean: np.ndarray,
                          target_adv: np.ndarray, y: np.ndarray) -> Proportion:
    """Among adversarial examples that fool the base model, the share that also fool the target.

    Only samples both models get right clean count: there the attack flipped the base model,
    and the question is whether the same input flips the target too.
    """
    base_clean, base_adv, target_clean, target_adv, y = _same_shape(
        base_clean, base_adv, target_clean, target_adv, y)
    fooled_base = (base_clean == y) & (target_clean == y) & (base_adv != y)
    return proportion(int(np.sum(fooled_base & (target_adv != y))), int(np.sum(fooled_base)))


def flip_rate(pred_a: np.ndarray, pred_b: np.ndarray) -> Proportion:
    """Share of samples where the two models' predictions differ (labels play no part)."""
    pred_a, pred_b = _same_shape(pred_a, pred_b)
    return proportion(int(np.sum(pred_a != pred_b)), pred_a.shape[0])


def binomial_two_sided_half(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n trials under p = 1/2.

    With p = 1/2 the distribution is symmetric, so the two-sided p-value is twice the
    smaller tail, capped at 1.
    """
    if n == 0:
        return 1.0
    m = min(k, n - k)
    if n <= 5000:
        tail = sum(math.comb(n, i) for i in range(m + 1))
        # Exact rational tail / 2**n, turned into a float only at the end.
        p = 2 * tail / (1 << n) if 2 * tail < (1 << n) else 1.0
        return min(1.0, float(p))
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(m + 1)]
    top = max(log_terms)
    log_tail = top + math.log(sum(math.exp(t - top) for t in log_terms)) - n * math.log(2)
    return min(1.0, 2 * math.exp(log_tail))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact McNemar test: are models A and B equally often right on the same samples?"""
    correct_a, correct_b = _same_shape(np.asarray(correct_a, bool), np.asarray(correct_b, bool))
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    return McNemar(only_a=only_a, only_b=only_b, p_value=binomial_two_sided_half(only_a, only_a + only_b))


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p values (Holm 1979), in the order given: the i-th smallest of m p values is
    multiplied by m - i (i from 0), the running maximum taken, capped at 1. A p counts at family-wise level
    alpha when its adjusted p is below alpha."""
    ps = [float(p) for p in p_values]
    m, out, run = len(ps), [0.0] * len(ps), 0.0
    for i, j in enumerate(sorted(range(m), key=lambda k: ps[k])):
        run = max(run, min(1.0, (m - i) * ps[j]))
        out[j] = run
    return out
