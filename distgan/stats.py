"""Statistics over seeds, for comparisons that say what the seeds allow and no more.

- :func:`ci95`: the mean and the half-width of its 95% confidence interval, Student's t with n - 1 degrees
  of freedom over the seeds' values (a run per seed is one independent draw of the training's randomness).
- :func:`win_rate`: over every (seed of A, seed of B) pair, the share in which A beats B (ties count half):
  the probability of superiority behind the Mann-Whitney U test, 0.5 when the two are alike.
- :func:`verdict`: "A better" / "B better" only when the two 95% intervals are disjoint (a conservative
  test: disjoint 95% intervals mean p < 0.05 for the difference); otherwise "not distinguishable with n
  seeds", which is the honest answer for close configs at 2-3 seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Two-sided 95% quantiles of Student's t (t_{0.975, df}), df 1-30; past 30 the nearest tabulated df below
# is used (a slightly wider interval), and 1.96 past 120.
T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.080,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.060,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    if df > 120:
        return 1.960
    return T975[max(k for k in T975 if k <= df)]


def _known(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def ci95(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """(mean, half-width of the 95% interval); half-width None with fewer than two values."""
    vals = _known(values)
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return mean, t975(len(vals) - 1) * sd / math.sqrt(len(vals))


def win_rate(a: Sequence[float | None], b: Sequence[float | None], lower_is_better: bool) -> float | None:
    """Share of (a_i, b_j) pairs in which a beats b; ties count half. None when either side has no value."""
    xs, ys = _known(a), _known(b)
    if not xs or not ys:
        return None
    wins = sum((x < y if lower_is_better else x > y) + 0.5 * (x == y) for x in xs for y in ys)
    return wins / (len(xs) * len(ys))


def verdict(a: Sequence[float | None], b: Sequence[float | None], names: tuple[str, str], lower_is_better: bool) -> str:
    """Which of two configs is better on a metric, or that their seeds cannot tell them apart."""
    (ma, ha), (mb, hb) = ci95(a), ci95(b)
    n = min(len(_known(a)), len(_known(b)))
    if ma is None or mb is None:
        return "no values"
    if ha is None or hb is None:
        return f"not distinguishable with {n} seed{'s' if n != 1 else ''} (an interval needs two)"
    if ma + ha < mb - hb or mb + hb < ma - ha:
        better = names[0] if (ma < mb) == lower_is_better else names[1]
        return f"{better} better (95% intervals disjoint)"
    return f"not distinguishable with {n} seeds"
