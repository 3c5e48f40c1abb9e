"""The report's Claims section: each claim of the preset (`ablation.claims`, read from the
jobs' saved configs) judged on the jobs, one line each: supported, contradicted or
inconclusive, with the test behind it, at ALPHA.

A claim compares `variant` with `against` on `metric` (ablate/config/claims.py), each at
its chosen lr in a tuned sweep, seeds as samples. The difference d = mean(variant) -
mean(against) is oriented so that d > 0 is worse (a higher loss, a lower accuracy).
- worse / better: Welch's t-test (the table's, two-sided): supported when significant in
  the claimed direction, contradicted when significant in the other, else inconclusive.
- equivalent within margin m (TOST): two one-sided Welch tests, of H0 d <= -m and of H0
  d >= m; supported when both reject (p = the larger of the two < ALPHA); contradicted when
  d is significantly beyond the margin (one-sided Welch, d > m or d < -m), else inconclusive.
- not_worse within margin m (non-inferiority): one one-sided Welch test of H0 d >= m;
  supported when it rejects; contradicted when d > m is significant, else inconclusive.
Fewer than two completed jobs on a side is inconclusive, saying so.
"""

from __future__ import annotations

import json
import math
import statistics

from ..config.claims import METRICS
from .read import Job, number
from .stats import ALPHA, compare, shifted_welch
from .table import fmt, signed

WORDS = {"worse": "worse than", "better": "better than", "equivalent": "equivalent to",
         "not_worse": "not worse than"}


def stated_claims(jobs: list[Job]) -> list[dict]:
    """The claims the jobs' configs state, each once, in job order."""
    seen = {json.dumps(claim, sort_keys=True): claim for job in jobs for claim in job.claims}
    return list(seen.values())


def p_text(p: float) -> str:
    return f"{p:.3g} {'<' if p < ALPHA else '≥'} {ALPHA}"


def judge(claim: dict, values: list[float], base: list[float]) -> tuple[str, str]:
    """The verdict on one claim and the test behind it, from the variant's and the other
    variant's metric values (seeds as samples)."""
    sign = -1.0 if METRICS[claim.get("metric", "test_loss")] else 1.0  # d > 0: worse
    x = [sign * v for v in values if math.isfinite(v)]
    y = [sign * v for v in base if math.isfinite(v)]
    if len(x) < 2 or len(y) < 2:
        return "inconclusive", (f"{claim['variant']} has {len(x)} completed jobs, "
                                f"{claim['against']} {len(y)}: a test needs two on each side")
    d = statistics.fmean(x) - statistics.fmean(y)
    means = (f"Δ {signed(sign * d)} ({fmt(sign * statistics.fmean(x))} vs "
             f"{fmt(sign * statistics.fmean(y))}, n = {len(x)}, {len(y)})")
    expect, margin = claim["expect"], claim.get("margin")
    if expect in ("worse", "better"):
        _, p, word = compare(x, y)
        if math.isnan(p):
            return "inconclusive", f"{means}; Welch's t-test: {word}"
        verdict = ("inconclusive" if word == "no significant difference" else
                   "supported" if word == expect else "contradicted")
        return verdict, f"{means}; Welch's t-test p = {p_text(p)}"
    beyond = min(shifted_welch(x, y, margin, "greater"),
                 shifted_welch(x, y, -margin, "less") if expect == "equivalent" else 1.0)
    if expect == "equivalent":
        low, high = shifted_welch(x, y, -margin, "greater"), shifted_welch(x, y, margin, "less")
        p, test = max(low, high), f"TOST p = max({low:.3g}, {high:.3g})"
    else:
        p, test = shifted_welch(x, y, margin, "less"), "one-sided Welch (non-inferiority) p"
    if math.isnan(p):
        return "inconclusive", f"{means}; {test}: no spread over seeds"
    verdict = ("supported" if p < ALPHA else "contradicted" if beyond < ALPHA
               else "inconclusive")
    text = f"{means}; {test} = {p_text(p)}"
    if verdict == "contradicted":
        text += f"; beyond the margin: one-sided Welch p = {p_text(beyond)}"
    return verdict, text


def claim_lines(claims: list[dict], named: dict[str, list[Job]]) -> list[str]:
    """One line per claim; `named`: each preset variant's jobs (at its chosen lr) by its
    name, `baseline` the report's baseline."""
    lines = []
    for claim in claims:
        metric = claim.get("metric", "test_loss")
        margin = ("" if "margin" not in claim else f" within ±{fmt(claim['margin'])}"
                  if claim["expect"] == "equivalent" else f" (margin {fmt(claim['margin'])})")
        what = (f"`{claim['variant']}` {WORDS[claim['expect']]} `{claim['against']}`"
                f"{margin} ({metric})")
        missing = [name for name in (claim["variant"], claim["against"]) if name not in named]
        if missing:
            verdict, why = "inconclusive", f"no job of variant {missing[0]} in this sweep"
        else:
            done = [[number(job.summary.get(metric)) for job in named[name]
                     if job.status == "completed"] for name in (claim["variant"], claim["against"])]
            verdict, why = judge(claim, *done)
        lines.append(f"- {what}: **{verdict}**: {why}")
    return lines
