"""`python -m ablate.report SWEEP_DIR [--baseline PARTS] [--loss-target X] [--out DIR]`:
one row per variant of a sweep, in report.md, report.csv, four plots and the terminal.

Every job under SWEEP_DIR (nested sweep directories too) is read from its `summary.json`
and `metrics.jsonl`; a job directory without a summary (`.hydra/` only) counts as killed.
Jobs of one config (same `config_hash`: a job reused or resumed in a later sweep) count once.
Jobs with the same `variant` label (they differ only in the seed) make one row: the mean and
sample standard deviation (n - 1) over its completed jobs. A variant run at several
`trainer.lr_factor`s (a tuned sweep, +tune=lr) is shown at the factor with the lowest
validation loss on its grid seed, as the jobs themselves chose (ablate/tune.py); its numbers
are the test split's. Each variant's test loss is compared with the baseline's by Welch's
t-test (scipy.stats.ttest_ind, equal_var=False). The baseline variant is the one
`--baseline` names, else the preset's (`is_baseline`), else the lowest-numbered job's.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import yaml
from scipy import stats

from .tune import best_factor, edge, grid_loss

STATUSES = ("completed", "stalled", "diverged", "failed", "skipped", "killed")
# Summary fields aggregated per variant (mean and std over its completed jobs).
METRICS = ("test_loss", "test_perplexity", "test_accuracy", "val_loss", "final_train_loss",
           "peak_memory_gb", "estimated_memory_gb", "optimizer_state_gb", "tgs", "glue_score")
TARGET_FACTOR = 1.05  # default loss target: the baseline's mean final train loss + 5%
ALPHA = 0.05  # significance level of the verdicts


@dataclass
class Job:
    dir: Path
    summary: dict
    curve: list[tuple[int, float]]  # (step, training loss) from metrics.jsonl, in step order

    @property
    def status(self) -> str:
        return self.summary["status"]


def number(value) -> float:
    """A summary value as a float (summary.json writes NaN and inf as strings); NaN when
    missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def path_order(root: Path, path: Path) -> list[tuple[int, int | str]]:
    """Sort key: job directories in numeric order (2 before 10), at any depth."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in path.relative_to(root).parts]


def read_curve(job_dir: Path) -> list[tuple[int, float]]:
    losses = {}
    path = job_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if "loss" in row:
                losses[row["step"]] = float(row["loss"])
    return sorted(losses.items())


def killed_summary(job_dir: Path) -> dict:
    """What a job without summary.json was: its variant and config hash, from its saved
    Hydra config, as the job itself would have written them."""
    from omegaconf import OmegaConf

    from .config.variants import job_config
    from .job import describe

    overrides = list(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    try:
        described = describe(job_config(OmegaConf.load(job_dir / ".hydra" / "config.yaml")),
                             overrides)
    except Exception as exc:  # noqa: BLE001 - a config this version cannot read
        described = {"variant": " ".join(["?", *overrides]), "config_hash": str(job_dir),
                     "error": f"config unreadable: {exc}"}
    return {"status": "killed", **described}


def read_summary(path: Path) -> dict:
    """A job's summary.json, or one error line naming the file."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"ablate.report: error: {path}: not readable as JSON ({exc}); move "
                         "it away or re-run its job") from None
    if not isinstance(summary, dict) or not {"status", "variant", "config_hash"} <= summary.keys():
        raise SystemExit(f"ablate.report: error: {path}: not a job summary (a JSON object with "
                         "status, variant and config_hash); move it away or re-run its job")
    return summary


def read_jobs(root: Path) -> tuple[list[Job], int]:
    """Every job under `root` in numeric path order, one per config hash, and how many
    repeated attempts of a config were left out."""
    dirs = {p.parent for p in root.rglob("summary.json")}
    dirs |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    jobs = []
    for job_dir in sorted(dirs, key=lambda d: path_order(root, d)):
        summary_path = job_dir / "summary.json"
        summary = (read_summary(summary_path) if summary_path.is_file()
                   else killed_summary(job_dir))
        jobs.append(Job(job_dir, summary, read_curve(job_dir)))
    # Per config: the best status, an original before a reused copy, then the first found.
    rank = {status: i for i, status in enumerate(STATUSES)}
    by_config: dict[str, list[Job]] = {}
    for job in jobs:
        by_config.setdefault(job.summary["config_hash"], []).append(job)
    kept = [min(group, key=lambda job: (rank[job.status], "reused_from" in job.summary))
            for group in by_config.values()]
    kept.sort(key=lambda job: path_order(root, job.dir))
    return kept, len(jobs) - len(kept)


# ---------------------------------------------------------------- labels and the baseline
def label_parts(label: str) -> list[str]:
    """`adamw lr=0.1 betas=[0.9, 0.95]` -> [`adamw`, `lr=0.1`, `betas=[0.9, 0.95]`]."""
    return re.split(r" (?=[^ =]+=)", label)


def common_parts(labels: list[str]) -> list[str]:
    """The label parts every variant has."""
    first, *rest = [label_parts(label) for label in labels]
    return [p for p in first if all(p in parts for parts in rest)]


def short_label(label: str, common: list[str]) -> str:
    """The label without the parts all variants share (the optimizer name stays when
    nothing else is left)."""
    parts = label_parts(label)
    return " ".join([p for p in parts if p not in common] or parts[:1])


def comparable(part: str) -> tuple[str, object]:
    """A label part as (key, value), the value read as YAML then as a number, so that
    `false` matches `False` and `1e-3` matches `0.001`; `toggles.`/`optimizer.` prefixes
    are dropped as the labels drop them."""
    key, sep, text = part.partition("=")
    if not sep:
        return "optimizer", part
    key = key.removeprefix("toggles.").removeprefix("optimizer.")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


def match_baseline(labels: list[str], spec: str) -> str:
    """The variant whose label has every part of `spec` (fewest extra parts wins a tie)."""
    wanted = [comparable(p) for p in spec.split()]
    matches = sorted((len(label_parts(label)), label) for label in labels
                     if all(w in [comparable(p) for p in label_parts(label)] for w in wanted))
    if not matches or (len(matches) > 1 and matches[0][0] == matches[1][0]):
        found = "no variant" if not matches else f"{len(matches)} variants equally"
        raise SystemExit(f"ablate.report: error: --baseline {spec!r} matches {found}; "
                         "variants: " + " | ".join(labels))
    return matches[0][1]


def find_baseline(jobs: list[Job], spec: str | None) -> tuple[str, str]:
    """The baseline variant's label, and how it was found."""
    labels = list(dict.fromkeys(job.summary["variant"] for job in jobs))
    if spec:
        return match_baseline(labels, spec), f"given: --baseline {spec!r}"
    marked = [job for job in jobs if job.summary.get("is_baseline")]
    if marked:
        return marked[0].summary["variant"], "the preset's baseline (is_baseline in summary.json)"
    return jobs[0].summary["variant"], f"the lowest-numbered job's (`{jobs[0].dir}`)"


# ---------------------------------------------------------------- numbers
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


def by_variant(jobs: list[Job]) -> dict[str, list[Job]]:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.summary["variant"], []).append(job)
    return groups


def tuning_skipped(job: Job) -> bool:
    """A job a tuned sweep did not run: its seed runs only the chosen lr."""
    return job.status == "skipped" and str(job.summary.get("reason", "")).startswith("tuning:")


def variant_rows(chosen: dict[str, tuple[list[Job], dict]], baseline: str,
                 target: float) -> list[dict]:
    """One CSV row per variant (`chosen`: its jobs at the chosen lr and the choice, by
    label), the baseline first, the rest in job order."""
    labels = [baseline] + [label for label in chosen if label != baseline]
    common = common_parts(labels)
    rows = []
    for label in labels:
        group, choice = chosen[label]
        group = [job for job in group if not tuning_skipped(job)]
        done = [job for job in group if job.status == "completed"]
        lrs = {number(job.summary["peak_lr"]) for job in group if "peak_lr" in job.summary}
        row = {"variant": label, "label": short_label(label, common),
               "is_baseline": label == baseline, "n": len(done),
               "tuned": bool(choice), "lr_factor": choice["chosen"] if choice else math.nan,
               "lr": lrs.pop() if len(lrs) == 1 else math.nan,
               "lr_edge": (choice or {}).get("edge") or "",
               **{status: sum(job.status == status for job in group) for status in STATUSES}}
        for key in METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(
                [number(job.summary.get(key)) for job in done])
        row["test_loss_ci_low"], row["test_loss_ci_high"] = confidence_interval(
            [number(job.summary.get("test_loss")) for job in done])
        row["test_losses"] = [number(job.summary.get("test_loss")) for job in done]
        reached = [s for s in (steps_to_target(job.curve, target) for job in done)
                   if not math.isnan(s)]
        row["loss_target"] = target
        row["steps_to_target_mean"], row["steps_to_target_std"] = mean_std(reached)
        row["steps_to_target_n"] = len(reached)
        row["loss_auc_mean"], row["loss_auc_std"] = mean_std([loss_auc(job.curve) for job in done])
        rows.append(row)
    base_ppl, base_losses = rows[0]["test_perplexity_mean"], rows[0]["test_losses"]
    for row in rows:
        row["delta_test_perplexity"] = row["test_perplexity_mean"] - base_ppl
        row["delta_test_perplexity_pct"] = 100 * row["delta_test_perplexity"] / base_ppl
        row["delta_test_loss"], row["p_value"], row["verdict"] = (
            (math.nan, math.nan, "baseline") if row["is_baseline"]
            else compare(row["test_losses"], base_losses))
        del row["test_losses"]
    return rows


# ---------------------------------------------------------------- writing
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
        label = f"`{row['label']}`".replace("|", "\\|")
        lr = fmt(row["lr"]) + (f" (×{fmt(row['lr_factor'])})" if row["tuned"] else "") + (
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
        cells = [label, lr, str(row["n"]), pm(row, "test_loss"), ci, signed(row["delta_test_loss"]),
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
    for variant, choice in choices.items():
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
        notes.append(f"- `{labels[variant]}` (seed {choice['grid_seed']}, validation loss "
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
               "skipped": s.get("reason", ""),
               "killed": s.get("error", "no summary.json (killed, or still running)")}
        if job.status != "completed":
            notes.append(f"- `{labels[s['variant']]}` seed {s.get('seed')}: {job.status}: "
                         f"{why[job.status]} (`{job.dir}`)")
    return notes


def glue_table(jobs: list[Job]) -> list[str]:
    """GLUE scores as GaLore's Table 4: a row per variant (its label without the task's
    keys: its name and files), a column per GLUE task (mean ± std of `glue_score` over the completed jobs), and
    with several tasks their average (the mean of the row's task means, when it has all)."""
    scores: dict[str, dict[str, list[float]]] = {}
    for job in jobs:
        if job.status == "completed" and "glue_score" in job.summary:
            label = " ".join(p for p in label_parts(job.summary["variant"])
                             if not p.startswith("task."))  # a task's name and its files
            scores.setdefault(label, {}).setdefault(job.summary["task"], []).append(
                number(job.summary["glue_score"]))
    if not scores:
        return []
    from .tasks.glue import TASKS  # torch: only for a sweep with GLUE jobs

    tasks = [t for t in TASKS if any(t in row for row in scores.values())]
    metrics = ", ".join(f"{t} {TASKS[t].metrics[0]}" for t in tasks)
    head = ["variant", *tasks, *(["average"] if len(tasks) > 1 else [])]
    lines = ["## GLUE", "", f"Score on GLUE's validation split (the test split here): "
             f"{metrics}; mean ± std over seeds (n in brackets)" + (
                 "; average: the mean of the task means, blank unless every task ran"
                 if len(tasks) > 1 else "") + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    common = common_parts(list(scores))
    for label, row in scores.items():
        cells = []
        for t in tasks:
            mean, std = mean_std(row.get(t, []))
            cells.append("" if t not in row else fmt(mean) + (
                f" ± {fmt(std)}" if not math.isnan(std) else "") + f" ({len(row[t])})")
        if len(tasks) > 1:
            means = [mean_std(row[t])[0] if t in row else math.nan for t in tasks]
            cells.append(fmt(statistics.fmean(means)))
        lines.append(f"| `{short_label(label, common)}` | " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------- plots
def wrap(label: str) -> str:
    return textwrap.fill(label, 40)


def plot_losses(path: Path, jobs: list[Job], rows: list[dict]) -> None:
    """Mean training loss over each variant's completed jobs, band from min to max."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = iter(plt.get_cmap("tab10" if len(rows) <= 10 else "tab20").colors)
    for row in rows:
        curves = [dict(job.curve) for job in jobs
                  if job.summary["variant"] == row["variant"] and job.status == "completed"]
        name = row["label"] + (" (baseline)" if row["is_baseline"] else "")
        if not curves:
            ax.plot([], [], " ", label=f"{name}: no completed job, not plotted")
            continue
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        by_step = [[c[s] for c in curves] for s in steps]
        color = "black" if row["is_baseline"] else next(colors)
        ax.plot(steps, [statistics.fmean(v) for v in by_step], color=color,
                marker="o" if len(steps) <= 50 else None, markersize=3,
                linewidth=2 if row["is_baseline"] else 1.5, label=f"{name}, n={len(curves)}")
        ax.fill_between(steps, [min(v) for v in by_step], [max(v) for v in by_step],
                        color=color, alpha=0.2, linewidth=0)
    ax.set(xlabel="step", ylabel="training loss",
           title="Training loss per variant: mean over seeds, band = min..max")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sensitivity(path: Path, rows: list[dict], choices: dict[str, dict]) -> None:
    """Validation loss on the grid seed against the peak lr, a line per tuned variant; the
    chosen lr is a star. The axis stops at twice the lowest loss: a run above it (a blow-up)
    is a triangle at the top, a diverged one an x there."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    finite = [loss for c in choices.values() if c for loss in c["grid"].values()
              if math.isfinite(loss)]
    top = min(max(finite), 2 * min(finite)) if finite else 1.0
    colors = iter(plt.get_cmap("tab10" if len(rows) <= 10 else "tab20").colors)
    for row in rows:
        choice = choices[row["variant"]]
        if not choice:
            continue
        color = "black" if row["is_baseline"] else next(colors)
        points = sorted((choice["peak_lrs"][f], loss) for f, loss in choice["grid"].items())
        ok = [(lr, loss) for lr, loss in points if loss <= top]
        name = row["label"] + (" (baseline)" if row["is_baseline"] else "")
        ax.plot([lr for lr, _ in ok], [loss for _, loss in ok], marker="o", color=color,
                label=name)
        for marker, off in (("^", [lr for lr, loss in points if top < loss < math.inf]),
                            ("x", [lr for lr, loss in points if not math.isfinite(loss)])):
            ax.plot(off, [top] * len(off), marker, color=color, markersize=9, clip_on=False)
        if choice["chosen"] is not None:
            ax.plot(choice["peak_lrs"][choice["chosen"]], choice["grid"][choice["chosen"]],
                    "*", color=color, markersize=15)
    ax.set(xscale="log", xlabel="peak learning rate (log)", ylabel="validation loss",
           title="Learning-rate sensitivity (grid seed): ★ chosen, ▲ above the axis, x diverged",
           ylim=(None, top))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bars(path: Path, rows: list[dict], panels: list[tuple[str, str]], title: str) -> None:
    """Horizontal bars (one per variant, in table order) of each `(metric, axis label)`,
    mean with a ±std whisker; a variant with no completed job says so."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), sharey=True, squeeze=False,
                             figsize=(4.5 * len(panels) + 3, 1.2 + 0.5 * len(rows)))
    y = range(len(rows))
    for ax, (key, xlabel) in zip(axes[0], panels):
        means = [row[f"{key}_mean"] for row in rows]
        stds = [0.0 if math.isnan(row[f"{key}_std"]) else row[f"{key}_std"] for row in rows]
        colors = ["dimgray" if row["is_baseline"] else "tab:blue" for row in rows]
        ax.barh(y, [0.0 if math.isnan(m) else m for m in means], xerr=stds, color=colors,
                capsize=3)
        for i, (mean, std) in enumerate(zip(means, stds)):
            ax.text(0 if math.isnan(mean) else mean + std, i, "  no completed job"
                    if math.isnan(mean) else f"  {fmt(mean)}", va="center", fontsize="small")
        ax.set_xlabel(xlabel)
        ax.margins(x=0.3)
        ax.set_xlim(left=0)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(list(y), [wrap(row["label"]) + (" (baseline)" if row["is_baseline"]
                                                          else "") for row in rows])
    axes[0][0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- the report
def report(root: Path, out: Path, baseline_spec: str | None = None,
           loss_target: float | None = None) -> str:
    """Write report.md, report.csv and the plots into `out`; return the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    jobs, repeated = read_jobs(root)
    if not jobs:
        raise SystemExit(f"ablate.report: error: no job (summary.json or .hydra/) under {root}")
    baseline, how = find_baseline(jobs, baseline_spec)
    # Each variant's jobs at its chosen lr (all of them in a sweep that is not tuned).
    chosen = {label: choose_lr(group) for label, group in by_variant(jobs).items()}
    choices = {label: choice for label, (_, choice) in chosen.items()}
    shown = [job for group, _ in chosen.values() for job in group]
    base_final = mean_std([number(job.summary["final_train_loss"]) for job in shown
                           if job.summary["variant"] == baseline and job.status == "completed"])[0]
    if loss_target is None:
        target = TARGET_FACTOR * base_final
        target_how = (f"{fmt(target)} = the baseline's mean final train loss {fmt(base_final)} "
                      f"× {TARGET_FACTOR}" if not math.isnan(target) else
                      "none: the baseline has no completed job (give --loss-target)")
    else:
        target, target_how = loss_target, f"{fmt(loss_target)} (given: --loss-target)"
    rows = variant_rows(chosen, baseline, target)
    common = common_parts([row["variant"] for row in rows])
    labels = {row["variant"]: row["label"] for row in rows}
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "report.csv", rows)
    plot_losses(out / "loss_vs_step.png", shown, rows)
    tuned = any(choices.values())
    if tuned:
        plot_sensitivity(out / "lr_sensitivity.png", rows, choices)
    kinds = sorted({str(job.summary.get("memory_kind")) for job in jobs if "memory_kind" in
                    job.summary})
    plot_bars(out / "memory.png", rows,
              [("peak_memory_gb", f"peak memory, GB ({', '.join(kinds)})"),
               ("optimizer_state_gb", "optimizer state, GB")],
              "Memory per variant: mean ± std over seeds")
    plot_bars(out / "tgs.png", rows, [("tgs", "tokens per second per device (TGS)")],
              "Throughput per variant: mean ± std over seeds")
    sweeps = sorted({job.summary["sweep"] for job in jobs if job.summary.get("sweep")})
    devices = sorted({str(job.summary.get("device")) for job in jobs if "device" in job.summary})
    lines = [
        f"# Ablation report: {', '.join(sweeps) or root}", "",
        f"- Jobs: {len(jobs)} under `{root}`" + (
            f" (left out: {repeated} repeated attempts of the same configs)" if repeated else ""),
        f"- All variants share: `{' '.join(common)}`" if common else "- Variants share nothing",
        f"- Baseline: `{labels[baseline]}`, {how}",
        f"- Loss target: {target_how}",
        f"- Device: {', '.join(devices)}; peak memory is {', '.join(kinds)}", "",
        markdown_table(rows), "",
        "Numbers are mean ± sample std (n - 1) over the n completed jobs of each variant (no "
        "std when n = 1; blank when n = 0), on the test split; lr is the peak learning rate "
        "(chosen on the validation split in a tuned sweep). 95% CI: Student-t interval of the "
        "mean test loss. Δ loss and Δ ppl: the variant's mean minus the baseline's. p (Welch): "
        "Welch's t-test of the variant's test losses against the baseline's (seeds as "
        f"samples); verdict at alpha {ALPHA}: worse (higher loss), better, or no significant "
        "difference; with one seed on either side, no test. "
        "Steps to target: first logged step whose training loss (unsmoothed) is <= the loss "
        "target, over the jobs that reached it. Loss AUC: trapezoid area under the logged "
        "training loss divided by the step span (a mean loss). A blank is a number that cannot "
        "be computed (no completed job, one seed, a non-finite curve). report.csv has every "
        "number at full precision.", "",
        *(["![learning-rate sensitivity](lr_sensitivity.png)", ""] if tuned else []),
        "![training loss vs step](loss_vs_step.png)", "",
        "![peak and optimizer-state memory](memory.png)", "",
        "![throughput](tgs.png)",
    ]
    glue = glue_table(shown)
    if glue:
        lines += ["", *glue]
    if tuned:
        lines += ["", "## Learning-rate choice", "", *tuning_notes(choices, labels)]
    notes = job_notes(jobs, labels)
    if notes:
        lines += ["", "## Jobs that did not complete", "", *notes]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ablate.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (nested ones too)")
    parser.add_argument("--baseline", metavar="PARTS", help="label parts the baseline variant has, e.g. "
                        "'nmf=true' or 'adamw trainer.lr=1e-3'")
    parser.add_argument("--loss-target", type=float, metavar="LOSS", help="training loss for 'steps to "
                        f"target' (default: the baseline's mean final train loss × "
                        f"{TARGET_FACTOR})")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output directory (default: SWEEP_DIR/report)")
    parser.error = lambda message: sys.exit(f"ablate.report: error: {message}")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        sys.exit(f"ablate.report: error: {args.sweep_dir} is not a directory")
    if args.loss_target is not None and not 0 < args.loss_target < math.inf:
        sys.exit(f"ablate.report: error: --loss-target {args.loss_target}: must be a loss > 0")
    out = args.out or args.sweep_dir / "report"
    try:
        print(report(args.sweep_dir, out, args.baseline, args.loss_target))
    except OSError as exc:
        sys.exit(f"ablate.report: error: {exc.filename or out}: {exc.strerror} (--out {out} "
                 "must be a writable directory)")
    print(f"written: {out / 'report.md'}, {out / 'report.csv'} and the plots beside them")


if __name__ == "__main__":
    main()
