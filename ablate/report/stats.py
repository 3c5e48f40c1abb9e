"""The report's numbers: mean and spread over seeds, the comparison with the baseline, and
what a training-loss curve says (steps to a target, area under it)."""

from __future__ import annotations

import math
import statistics

from scipy import stats

ALPHA = 0.05  # significance level of the verdicts


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of the finite values; NaN where undefined
    (no finite value, or one for the std)."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean of the finite values; NaN under two values."""
    values = [v for v in values if math.isfinite(v)]
    if len(values) < 2:
        return math.nan, math.nan
    mean, sem = statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * sem
    return mean - half, mean + half


def compare(values: list[float], base: list[float]) -> tuple[float, float, str]:
    """A variant's test losses against the baseline's: difference of means, Welch's t-test
    p-value, and the verdict at ALPHA (a higher loss is worse)."""
    values = [v for v in values if math.isfinite(v)]
    base = [v for v in base if math.isfinite(v)]
    diff = (statistics.fmean(values) - statistics.fmean(base)) if values and base else math.nan
    if len(values) < 2 or len(base) < 2:
        return diff, math.nan, ("1 seed: no test" if values and base
                                else "no completed job: no test")
    p = float(stats.ttest_ind(values, base, equal_var=False).pvalue)
    if math.isnan(p):
        return diff, p, "no test: no spread over seeds"
    if p >= ALPHA:
        return diff, p, "no significant difference"
    return diff, p, "worse" if diff > 0 else "better"


def shifted_welch(values: list[float], base: list[float], shift: float, alternative: str) -> float:
    """p-value of Welch's one-sided t-test of H0 "mean(values) - mean(base) is not
    `alternative` ("less" or "greater") than `shift`"; NaN with no spread."""
    return float(stats.ttest_ind([v - shift for v in values], base, equal_var=False,
                                 alternative=alternative).pvalue)


def steps_to_target(curve: list[tuple[int, float]], target: float) -> float:
    """The first logged step whose training loss is <= target (no smoothing); NaN if none."""
    return next((float(step) for step, loss in curve if loss <= target), math.nan)


def loss_auc(curve: list[tuple[int, float]]) -> float:
    """Area under the training loss curve (trapezoids between logged steps) divided by the
    step span, so it reads as a mean loss; NaN under two logged steps."""
    if len(curve) < 2:
        return math.nan
    area = sum((s1 - s0) * (l0 + l1) / 2 for (s0, l0), (s1, l1) in zip(curve, curve[1:]))
    return area / (curve[-1][0] - curve[0][0])
