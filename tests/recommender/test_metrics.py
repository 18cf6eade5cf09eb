"""Metrics against independent (brute-force, textbook) computations."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from recommender import metrics as M


def _rng_pair(seed, n=12):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.5, 0.95, n)
    p = t + rng.normal(0, 0.1, n)
    return t, p


def _avg_ranks(x):
    # textbook average ranks, no scipy
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson_py(a, b):
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pearson_spearman_match_textbook(seed):
    t, p = _rng_pair(seed)
    assert M.pearson(t, p) == pytest.approx(_pearson_py(list(t), list(p)), abs=1e-12)
    assert M.spearman(t, p) == pytest.approx(_pearson_py(_avg_ranks(list(t)), _avg_ranks(list(p))), abs=1e-12)


def test_spearman_with_ties():
    t = [0.5, 0.6, 0.6, 0.9, 0.7]
    p = [1, 2, 3, 3, 0]
    assert M.spearman(t, p) == pytest.approx(_pearson_py(_avg_ranks(t), _avg_ranks(p)), abs=1e-12)


def test_kendall_tau_b_bruteforce():
    t = [0.5, 0.6, 0.6, 0.9, 0.7, 0.8]
    p = [1, 2, 3, 3, 0, 5]
    c = d = tt = tp = 0
    for i, j in itertools.combinations(range(len(t)), 2):
        st, sp = np.sign(t[i] - t[j]), np.sign(p[i] - p[j])
        if st == 0 and sp == 0:
            continue
        if st == 0:
            tt += 1
        elif sp == 0:
            tp += 1
        elif st == sp:
            c += 1
        else:
            d += 1
    expected = (c - d) / math.sqrt((c + d + tt) * (c + d + tp))
    assert M.kendall_tau(t, p) == pytest.approx(expected, abs=1e-12)


def _weighted_tau_bruteforce(t, p):
    """Vigna's additive hyperbolic weighted tau without ties: mean over both rank orders."""
    n = len(t)

    def one(primary, secondary):
        order = sorted(range(n), key=lambda i: (-primary[i], -secondary[i]))
        rank = {idx: r for r, idx in enumerate(order)}
        num = den = 0.0
        for i, j in itertools.combinations(range(n), 2):
            w = 1 / (rank[i] + 1) + 1 / (rank[j] + 1)
            num += w * np.sign(t[i] - t[j]) * np.sign(p[i] - p[j])
            den += w
        return num / den

    return (one(t, p) + one(p, t)) / 2


@pytest.mark.parametrize("seed", [3, 4])
def test_weighted_tau_bruteforce(seed):
    t, p = _rng_pair(seed, n=9)
    assert M.weighted_tau(t, p) == pytest.approx(_weighted_tau_bruteforce(list(t), list(p)), abs=1e-10)


def test_weighted_tau_weights_the_top():
    t = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    swap_top = np.array([5, 6, 4, 3, 2, 1.0])  # best two swapped
    swap_tail = np.array([6, 5, 4, 3, 1, 2.0])  # worst two swapped
    assert M.kendall_tau(t, swap_top) == pytest.approx(M.kendall_tau(t, swap_tail))
    assert M.weighted_tau(t, swap_top) < M.weighted_tau(t, swap_tail)


def test_regret_hand_computed():
    t = [0.70, 0.90, 0.85, 0.60]
    p = [4.0, 1.0, 3.0, 2.0]  # ranking: m0 (0.70), m2 (0.85), m3, m1
    assert M.regret_at_k(t, p, 1) == pytest.approx(20.0)
    assert M.regret_at_k(t, p, 2) == pytest.approx(5.0)
    assert M.regret_at_k(t, p, 3) == pytest.approx(5.0)
    assert M.regret_at_k(t, p, 4) == pytest.approx(0.0)
    assert M.regret_at_k(t, p, 10) == pytest.approx(0.0)  # k capped


def test_ties_are_broken_against_the_method():
    t = [0.9, 0.5, 0.7]
    const = [1.0, 1.0, 1.0]
    assert M.regret_at_k(t, const, 1) == pytest.approx(40.0)
    assert M.ndcg_at_k(t, const, 1) == pytest.approx(0.0)


def test_ndcg_hand_computed():
    t = np.array([0.6, 0.9, 0.8, 0.7])
    p = np.array([4.0, 3.0, 2.0, 1.0])  # ranks m0, m1, m2, m3
    g = (t - 0.6) / 0.3  # [0, 1, 2/3, 1/3]
    dcg = 0 / math.log2(2) + 1 / math.log2(3) + (2 / 3) / math.log2(4) + (1 / 3) / math.log2(5)
    idcg = 1 / math.log2(2) + (2 / 3) / math.log2(3) + (1 / 3) / math.log2(4) + 0 / math.log2(5)
    assert M.ndcg_at_k(t, p, 5) == pytest.approx(dcg / idcg)
    raw_dcg = sum(t[i] / math.log2(r + 2) for r, i in enumerate([0, 1, 2]))
    raw_idcg = sum(v / math.log2(r + 2) for r, v in enumerate([0.9, 0.8, 0.7]))
    assert M.ndcg_at_k(t, p, 3, gain="accuracy") == pytest.approx(raw_dcg / raw_idcg)
    assert M.ndcg_at_k(t, t, 5) == pytest.approx(1.0)
    assert g[1] == pytest.approx(1.0)


def test_undefined_and_bad_inputs():
    assert math.isnan(M.pearson([0.5, 0.6], [1.0, 1.0]))
    assert math.isnan(M.spearman([0.5], [1.0]))
    with pytest.raises(ValueError, match="finite"):
        M.pearson([0.5, np.nan], [1, 2])
    with pytest.raises(ValueError, match="3 values"):
        M.pearson([0.5, 0.6, 0.7], [1, 2])
    with pytest.raises(ValueError, match="gain"):
        M.ndcg_at_k([0.1, 0.2], [1, 2], gain="bogus")


def test_aggregate_ignores_nan_and_counts():
    mean, std, n = M.aggregate([0.5, np.nan, 0.7])
    assert (mean, n) == (pytest.approx(0.6), 2)
    assert std == pytest.approx(0.1)
    assert M.aggregate([np.nan])[2] == 0


@pytest.mark.parametrize("name", list(M.METRICS))
def test_registry_entries_perfect_vs_reversed(name):
    info = M.METRICS[name]
    t = np.array([0.55, 0.62, 0.71, 0.8, 0.93])
    best, worst = info.fn(t, t), info.fn(t, -t)
    assert best > worst if info.higher_is_better else best < worst
