"""Statistics over seeds: 95% intervals (Student's t), win rates, and verdicts that admit too few seeds."""

from __future__ import annotations

import math

import pytest

from distgan import compare, stats


def test_ci95_is_students_t_over_the_seeds():
    mean, half = stats.ci95([1.0, 2.0, 3.0])  # sd 1, t(0.975, 2) = 4.303
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3))
    assert stats.ci95([5.0]) == (5.0, None) and stats.ci95([None, float("nan")]) == (None, None)
    assert stats.ci95([4.0, None, 4.0]) == (4.0, 0.0)


def test_t_quantiles_shrink_with_more_seeds_and_never_undercover():
    qs = [stats.t975(df) for df in range(1, 200)]
    assert all(a >= b for a, b in zip(qs, qs[1:], strict=False))
    assert stats.t975(35) == stats.T975[30] and stats.t975(500) == 1.96
    with pytest.raises(ValueError):
        stats.t975(0)


def test_win_rate_counts_every_seed_pair_and_ties_half():
    assert stats.win_rate([1.0, 2.0], [1.5, 3.0], lower_is_better=True) == 0.75
    assert stats.win_rate([1.0, 2.0], [1.5, 3.0], lower_is_better=False) == 0.25
    assert stats.win_rate([1.0], [1.0], lower_is_better=True) == 0.5
    assert stats.win_rate([], [1.0], lower_is_better=True) is None


def test_a_verdict_needs_disjoint_intervals_and_says_when_seeds_are_too_few():
    far, near = [10.0, 11.0, 12.0], [50.0, 51.0, 52.0]
    assert stats.verdict(far, near, ("a", "b"), lower_is_better=True) == "a better (95% intervals disjoint)"
    assert stats.verdict(far, near, ("a", "b"), lower_is_better=False) == "b better (95% intervals disjoint)"
    # every seed of a beats every seed of b, yet 3 noisy seeds cannot tell them apart
    a, b = [10.0, 20.0, 30.0], [31.0, 35.0, 45.0]
    assert stats.win_rate(a, b, True) == 1.0
    assert stats.verdict(a, b, ("a", "b"), True) == "not distinguishable with 3 seeds"
    assert "an interval needs two" in stats.verdict([1.0], [2.0], ("a", "b"), True)


def test_the_pairs_table_holds_every_pair_of_configs():
    def entry(name, seed, fid, inception):
        return {"name": name, "seed": seed, "result": {"final_fid": fid, "is": inception}}

    entries = [entry("a", s, 10.0 + s, 9.0) for s in range(3)] + [entry("b", s, 100.0 + s, 2.0) for s in range(3)]
    entries += [entry("c", s, 11.0 - s, 9.0 + 0.1 * s) for s in range(3)]
    text = compare.pairs_table(entries)
    rows = [line for line in text.splitlines()[2:]]
    assert len(rows) == 3  # a-b, a-c, b-c
    assert rows[0].startswith("| a | b | 100% | a better") and "| 0% | b better" not in rows[0]
    assert "| a | c |" in rows[1] and "not distinguishable with 3 seeds" in rows[1]
