"""The report's rows: one per variant at its chosen lr, as report.csv and the markdown table,
the notes on the lr choice and on the jobs that did not complete, and the GLUE table."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

from ..config.identity import label
from ..tasks.glue_tasks import TASKS
from ..tune import best_factor, edge, grid_loss
from .groups import common_parts, short_label
from .read import STATUSES, Job, number, variant_key
from .stats import compare, confidence_interval, loss_auc, mean_std, steps_to_target

# Summary fields aggregated per variant (mean and std over its completed jobs).
METRICS = ("test_loss", "test_perplexity", "test_accuracy", "val_loss", "final_train_loss",
           "peak_memory_gb", "estimated_memory_gb", "optimizer_state_gb", "tgs", "glue_score")


def choose_lr(group: list[Job]) -> tuple[list[Job], dict]:
    """A variant's jobs at its chosen `lr_factor`, and the choice: with one factor, all of
    them; with several (a tuned sweep), the factor with the lowest validation loss on the
    grid seed (every factor's grid-seed run must have finished), as ablate/tune.py chose."""
    factors = sorted({number(job.summary.get("lr_factor", 1.0)) for job in group})
    if len(factors) < 2:
        return group, {}
    tuned = [job.summary["tuning"] for job in group if job.summary.get("tuning")]
    grid_seed = tuned[0]["grid_seed"] if tuned else min(job.summary["seed"] for job in group)
    on_grid = {number(job.summary["lr_factor"]): job for job in group
               if job.summary["seed"] == grid_seed}
    losses = {f: grid_loss(job.summary) for f, job in on_grid.items()}
    grid = {f: loss for f, loss in losses.items() if loss is not None}
    choice = {"grid_seed": grid_seed, "grid": grid,
              "peak_lrs": {f: number(job.summary.get("peak_lr")) for f, job in on_grid.items()},
              "missing": [f for f in factors if f not in grid]}
    chosen = best_factor(grid) if not choice["missing"] else None
    choice.update(chosen=chosen, edge=edge(chosen, factors) if chosen is not None else None)
    return [job for job in group if number(job.summary.get("lr_factor", 1.0)) == chosen], choice


def tuning_skipped(job: Job) -> bool:
    """A job a tuned sweep did not run: its seed runs only the chosen lr."""
    return job.status == "skipped" and str(job.summary.get("reason", "")).startswith("tuning:")


def variant_rows(chosen: dict[str, tuple[list[Job], dict]], variants: dict[str, dict],
                 baseline: str, target: float) -> dict[str, dict]:
    """One CSV row per variant, by its key (`chosen`: its jobs at the chosen lr and the
    choice; `variants`: its mapping), the baseline first, the rest in job order."""
    keys = [baseline] + [key for key in chosen if key != baseline]
    common = common_parts([variants[key] for key in keys])
    rows = {}
    for key in keys:
        group, choice = chosen[key]
        short = short_label(variants[key], common)
        # the preset's name for it, if any (a variant may have no job at its chosen lr)
        name = next((job.preset_variant for job in group if job.preset_variant), short)
        group = [job for job in group if not tuning_skipped(job)]
        done = [job for job in group if job.status == "completed"]
        lrs = {number(job.summary["peak_lr"]) for job in group if "peak_lr" in job.summary}
        row = {"variant": label(variants[key]), "label": short, "name": name,
               "is_baseline": key == baseline, "n": len(done),
               "tuned": bool(choice), "lr_factor": number((choice or {}).get("chosen")),
               "lr": lrs.pop() if len(lrs) == 1 else math.nan,
               "lr_edge": (choice or {}).get("edge") or "",
               **{status: sum(job.status == status for job in group) for status in STATUSES}}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(
                [number(job.summary.get(metric)) for job in done])
        row["test_loss_ci_low"], row["test_loss_ci_high"] = confidence_interval(
            [number(job.summary.get("test_loss")) for job in done])
        row["test_losses"] = [number(job.summary.get("test_loss")) for job in done]
        reached = [s for s in (steps_to_target(job.curve, target) for job in done)
                   if not math.isnan(s)]
        row["loss_target"] = target
        row["steps_to_target_mean"], row["steps_to_target_std"] = mean_std(reached)
        row["steps_to_target_n"] = len(reached)
        row["loss_auc_mean"], row["loss_auc_std"] = mean_std([loss_auc(job.curve) for job in done])
        rows[key] = row
    base_ppl, base_losses = rows[baseline]["test_perplexity_mean"], rows[baseline]["test_losses"]
    for row in rows.values():
        row["delta_test_perplexity"] = row["test_perplexity_mean"] - base_ppl
        row["delta_test_perplexity_pct"] = 100 * row["delta_test_perplexity"] / base_ppl
        row["delta_test_loss"], row["p_value"], row["verdict"] = (
            (math.nan, math.nan, "baseline") if row["is_baseline"]
            else compare(row["test_losses"], base_losses))
        del row["test_losses"]
    return rows


def fmt(x: float) -> str:
    """4 significant digits, whole numbers from 1000 up; blank when undefined."""
    if math.isnan(x):
        return ""
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def pm(row: dict, key: str) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    return fmt(mean) + (f" ± {fmt(std)}" if not math.isnan(std) else "")


def signed(x: float) -> str:
    return "" if math.isnan(x) else f"{'+' if x >= 0 else ''}{fmt(x)}"


def markdown_table(rows: list[dict]) -> str:
    head = ["variant", "lr", "n", "test loss", "95% CI", "Δ loss", "p (Welch)", "verdict",
            "test ppl", "Δ ppl", "peak mem GB", "est. GB", "opt state GB", "TGS",
            "steps to target", "loss AUC", "jobs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        name = f"`{row['label']}`".replace("|", "\\|")
        factor = f"×{fmt(row['lr_factor'])}" if not math.isnan(row["lr_factor"]) else "no choice"
        lr = fmt(row["lr"]) + (f" ({factor})" if row["tuned"] else "") + (
            f" ({row['lr_edge']} tried: widen the grid)" if row["lr_edge"] else "")
        ci = ("" if math.isnan(row["test_loss_ci_low"]) else
              f"{fmt(row['test_loss_ci_low'])} – {fmt(row['test_loss_ci_high'])}")
        steps = pm(row, "steps_to_target")
        if row["steps_to_target_n"] < row["n"]:
            steps = f"{steps} ({row['steps_to_target_n']}/{row['n']} reached)".lstrip()
        d, pct = row["delta_test_perplexity"], row["delta_test_perplexity_pct"]
        delta = "baseline" if row["is_baseline"] else (
            "" if math.isnan(d) else f"{signed(d)} ({pct:+.1f}%)")
        p = "" if math.isnan(row["p_value"]) else f"{row['p_value']:.3g}"
        jobs = ", ".join(f"{row[s]} {s}" for s in STATUSES if row[s])
        cells = [name, lr, str(row["n"]), pm(row, "test_loss"), ci, signed(row["delta_test_loss"]),
                 p, row["verdict"], pm(row, "test_perplexity"), delta,
                 pm(row, "peak_memory_gb"), pm(row, "estimated_memory_gb"),
                 pm(row, "optimizer_state_gb"), pm(row, "tgs"),
                 steps, pm(row, "loss_auc"), jobs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    """Full precision; an undefined number (NaN) is a blank cell."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v
                             for k, v in row.items()})


def tuning_notes(choices: dict[str, dict], labels: dict[str, str]) -> list[str]:
    """One line per tuned variant: the grid's validation losses and the choice."""
    notes = []
    for key, choice in choices.items():
        if not choice:
            continue
        grid = ", ".join(f"×{fmt(f)}: {fmt(loss)}" for f, loss in sorted(choice["grid"].items()))
        if choice["missing"]:
            outcome = ("no choice: no finished grid-seed run at lr_factor " +
                       ", ".join(fmt(f) for f in choice["missing"]))
        elif choice["chosen"] is None:
            outcome = "no choice: every lr diverged"
        else:
            outcome = f"chosen ×{fmt(choice['chosen'])}"
            if choice["edge"]:
                outcome += (f": the best lr is the {choice['edge']} tried, widen the grid "
                            "(tune.lr_factors)")
        notes.append(f"- `{labels[key]}` (seed {choice['grid_seed']}, validation loss "
                     f"by lr_factor; diverged = inf): {grid}; {outcome}")
    return notes


def job_notes(jobs: list[Job], labels: dict[str, str]) -> list[str]:
    """One line per job that did not complete (other than a tuned sweep's unchosen lrs),
    saying why."""
    notes = []
    for job in jobs:
        if tuning_skipped(job):
            continue
        s = job.summary
        why = {"stalled": f"loss blew up, then stuck at ln(vocab) (test_loss {s.get('test_loss')})",
               "diverged": f"non-finite loss after {s.get('steps')} steps",
               "failed": f"{s.get('error_type')}: {s.get('error')}",
               "interrupted": f"signal {s.get('signal')} at step {s.get('step')}",
               "skipped": s.get("reason", ""),
               "killed": s.get("error", "no summary.json (killed, or still running)")}
        if job.status != "completed":
            notes.append(f"- `{labels[job.key]}` seed {s.get('seed')}: {job.status}: "
                         f"{why[job.status]} (`{job.dir}`)")
    return notes


def glue_table(jobs: list[Job]) -> list[str]:
    """GLUE scores as GaLore's Table 4: a row per variant (its keys but the task's: its name
    and files), a column per GLUE task (mean ± std of `glue_score` over the completed jobs),
    and with several tasks their average (the mean of the row's task means, when it has all)."""
    variants: dict[str, dict] = {}
    scores: dict[str, dict[str, list[float]]] = {}
    for job in jobs:
        if job.status == "completed" and "glue_score" in job.summary:
            variant = {k: v for k, v in job.variant.items() if not k.startswith("task.")}
            variants[variant_key(variant)] = variant
            scores.setdefault(variant_key(variant), {}).setdefault(job.summary["task"], []).append(
                number(job.summary["glue_score"]))
    if not scores:
        return []
    tasks = [t for t in TASKS if any(t in row for row in scores.values())]
    metrics = ", ".join(f"{t} {TASKS[t].metrics[0]}" for t in tasks)
    head = ["variant", *tasks, *(["average"] if len(tasks) > 1 else [])]
    lines = ["## GLUE", "", f"Score on GLUE's validation split (the test split here): "
             f"{metrics}; mean ± std over seeds (n in brackets)" + (
                 "; average: the mean of the task means, blank unless every task ran"
                 if len(tasks) > 1 else "") + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    common = common_parts(list(variants.values()))
    for key, row in scores.items():
        cells = []
        for t in tasks:
            mean, std = mean_std(row.get(t, []))
            cells.append("" if t not in row else fmt(mean) + (
                f" ± {fmt(std)}" if not math.isnan(std) else "") + f" ({len(row[t])})")
        if len(tasks) > 1:
            means = [mean_std(row[t])[0] if t in row else math.nan for t in tasks]
            cells.append(fmt(statistics.fmean(means)))
        lines.append(f"| `{short_label(variants[key], common)}` | " + " | ".join(cells) + " |")
    return lines
