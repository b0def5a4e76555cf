"""Statistics against hand-computed cases: Wilson intervals, attack rates, exact McNemar."""
from fractions import Fraction
from math import comb

import numpy as np
import pytest

from edgerobust.edge.scores.stats import (accuracy, attack_success_rate, binomial_two_sided_half, flip_rate,
                              mcnemar_exact, proportion, transfer_success_rate, wilson_interval)


@pytest.mark.parametrize("k,n,lo,hi", [
    (8, 10, 0.4901625, 0.9433178),   # textbook Wilson 95% for 8/10
    (0, 10, 0.0, 0.2775328),
    (10, 10, 0.7224672, 1.0),
    (50, 100, 0.4038315, 0.5961685),
], ids=["8of10", "0of10", "10of10", "50of100"])
def test_wilson_interval_matches_hand_computed(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-6)


def test_proportion_of_nothing_has_no_value():
    p = proportion(0, 0)
    assert (p.k, p.n, p.value, p.ci_low, p.ci_high) == (0, 0, None, None, None)


def test_accuracy_counts_matches():
    p = accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0]))
    assert (p.k, p.n, p.value) == (2, 4, 0.5)
    assert p.ci_low < 0.5 < p.ci_high


def test_attack_success_rate_counts_only_clean_correct():
    y = np.array([0, 1, 2, 0])
    clean = np.array([0, 1, 2, 3])   # the last sample is wrong clean: it does not count
    adv = np.array([0, 9, 2, 9])     # of the three clean-correct, one is fooled
    p = attack_success_rate(clean, adv, y)
    assert (p.k, p.n) == (1, 3)


def test_transfer_success_rate():
    y = np.array([0, 0, 0, 0, 0])
    base_clean = np.array([0, 0, 0, 0, 1])   # sample 4 excluded (base wrong clean)
    dep_clean = np.array([0, 0, 0, 1, 0])    # sample 3 excluded (deployed wrong clean)
    base_adv = np.array([5, 5, 0, 5, 5])     # samples 0, 1 fool the base among the rest
    dep_adv = np.array([5, 0, 5, 5, 5])      # of those, sample 0 also fools the deployed model
    p = transfer_success_rate(base_clean, base_adv, dep_clean, dep_adv, y)
    assert (p.k, p.n, p.value) == (1, 2, 0.5)


def test_flip_rate_ignores_labels():
    p = flip_rate(np.array([1, 2, 3, 4]), np.array([1, 0, 3, 0]))
    assert (p.k, p.n) == (2, 4)


@pytest.mark.parametrize("a,b,p", [
    (1, 9, 2 * 11 / 1024),      # 2 * (C(10,0) + C(10,1)) / 2^10
    (0, 6, 2 / 64),
    (5, 5, 1.0),
    (0, 0, 1.0),
    (3, 0, 0.25),               # 2 * 1/8
], ids=["1v9", "0v6", "5v5", "none", "3v0"])
def test_mcnemar_exact_hand_computed(a, b, p):
    correct_a = np.array([True] * a + [False] * b + [True] * 4 + [False] * 2)
    correct_b = np.array([False] * a + [True] * b + [True] * 4 + [False] * 2)
    res = mcnemar_exact(correct_a, correct_b)
    assert (res.only_a, res.only_b) == (a, b)
    assert res.p_value == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize("k,n", [(2400, 5001), (2950, 6000), (10, 7000)])
def test_binomial_log_space_equals_exact_above_5000(k, n):
    m = min(k, n - k)
    exact = min(Fraction(1), 2 * Fraction(sum(comb(n, i) for i in range(m + 1)), 2 ** n))
    assert binomial_two_sided_half(k, n) == pytest.approx(float(exact), rel=1e-9, abs=1e-300)


def test_binomial_is_symmetric():
    assert binomial_two_sided_half(3, 20) == binomial_two_sided_half(17, 20)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        accuracy(np.array([1, 2]), np.array([1]))
