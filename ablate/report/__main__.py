"""`python -m ablate.report SWEEP_DIR [--baseline PARTS] [--loss-target X] [--out DIR]`:
one row per variant of a sweep, in report.md, report.csv, the plots and the terminal.

Every job under SWEEP_DIR (nested sweep directories too) is read from its `summary.json`
and `metrics.jsonl`; a job directory without a summary (`.hydra/` only) counts as killed.
Jobs of one config (same `config_hash`: a job reused or resumed in a later sweep) count once.
Jobs of one variant (the same `variant_config`: they differ only in the seed) make one row: the
mean and sample standard deviation (n - 1) over its completed jobs. A variant run at several
`trainer.lr_factor`s (a tuned sweep, +tune=lr) is shown at the factor with the lowest
validation loss on its grid seed, as the jobs themselves chose (ablate/tune.py); its numbers
are the test split's. Each variant's test loss is compared with the baseline's by Welch's
t-test (scipy.stats.ttest_ind, equal_var=False). The baseline variant is the one
`--baseline` names, else the preset's (`is_baseline`), else the lowest-numbered job's.
Jobs of different tasks (`task` in their summaries: a GLUE task and a language-model task)
are never compared: each task gets its own table, baseline and loss target.
A job the report cannot read (ablate/report/read.py) is listed with its path and the reason,
and left out of every number; the other jobs are reported.
The claims of the preset (`ablation.claims` in the jobs' saved configs) are judged in a
Claims section, one line each: supported, contradicted or inconclusive (ablate/report/claims.py).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..config.identity import label
from .groups import by_variant, common_parts, find_baseline
from .claims import claim_lines, stated_claims
from .plots import plot_bars, plot_losses, plot_memory_frontier, plot_sensitivity
from .read import Job, number, read_jobs
from .stats import ALPHA, mean_std
from .table import choose_lr, fmt, glue_table, job_notes, markdown_table, tuning_notes, \
    variant_rows, write_csv

TARGET_FACTOR = 1.05  # default loss target: the baseline's mean final train loss + 5%


def compare_variants(jobs: list[Job], baseline_spec: str | None, loss_target: float | None,
                     task: str | None) -> tuple[dict[str, dict], dict[str, dict], list[Job],
                                                list[str]]:
    """The variants of one task's jobs against that task's baseline: the rows (by variant
    key), each variant's lr choice, the jobs shown (each at its chosen lr), and the report's
    lines for them; `task`: the heading and label prefix when the sweep has several tasks."""
    baseline_variant, how = find_baseline(jobs, baseline_spec)
    baseline = next(job.key for job in jobs if job.variant == baseline_variant)
    groups = by_variant(jobs)
    variants = {key: group[0].variant for key, group in groups.items()}
    # Each variant's jobs at its chosen lr (all of them in a sweep that is not tuned).
    chosen = {key: choose_lr(group) for key, group in groups.items()}
    choices = {key: choice for key, (_, choice) in chosen.items()}
    shown = [job for group, _ in chosen.values() for job in group]
    base_final = mean_std([number(job.summary.get("final_train_loss")) for job in shown
                           if job.key == baseline and job.status == "completed"])[0]
    if loss_target is None:
        target = TARGET_FACTOR * base_final
        target_how = (f"{fmt(target)} = the baseline's mean final train loss {fmt(base_final)} "
                      f"× {TARGET_FACTOR}" if not math.isnan(target) else
                      "none: the baseline has no completed job (give --loss-target)")
    else:
        target, target_how = loss_target, f"{fmt(loss_target)} (given: --loss-target)"
    rows = variant_rows(chosen, variants, baseline, target)
    for row in rows.values():
        row["task"] = jobs[0].task
        if task is not None:
            row["label"], row["name"] = f"{task}: {row['label']}", f"{task}: {row['name']}"
    common = common_parts([variants[key] for key in rows])
    lines = [*(["", f"## Task {task}", ""] if task is not None else []),
             f"- All variants share: `{label(common)}`" if common else "- Variants share nothing",
             f"- Baseline: `{rows[baseline]['label']}`, {how}",
             f"- Loss target: {target_how}", "",
             markdown_table(list(rows.values())), ""]
    claims = stated_claims(jobs)
    if claims:  # by the preset's variant names, `baseline` the baseline found above
        named = {job.preset_variant: job.key for job in jobs if job.preset_variant is not None}
        named["baseline"] = baseline
        lines += [f"{'###' if task is not None else '##'} Claims", "",
                  *claim_lines(claims, {name: chosen[key][0] for name, key in named.items()}),
                  ""]
    return rows, choices, shown, lines


def report(root: Path, out: Path, baseline_spec: str | None = None,
           loss_target: float | None = None) -> str:
    """Write report.md, report.csv and the plots into `out`; return the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    jobs, repeated, unreadable = read_jobs(root)
    if not jobs:
        raise SystemExit(f"ablate.report: error: no job (summary.json or .hydra/) under {root}"
                         if not unreadable else f"ablate.report: error: no readable job under "
                         f"{root} ({unreadable[0][0]}: {unreadable[0][1]}; move it away or "
                         "re-run its job)")
    by_task: dict[str, list[Job]] = {}
    for job in jobs:
        by_task.setdefault(job.task, []).append(job)
    rows, choices, shown, task_lines = {}, {}, [], []
    for task, task_jobs in by_task.items():  # a task's jobs are compared with its own baseline
        r, c, s, lines = compare_variants(task_jobs, baseline_spec, loss_target,
                                          task if len(by_task) > 1 else None)
        rows.update(r)
        choices.update(c)
        shown += s
        task_lines += lines
    labels = {key: row["label"] for key, row in rows.items()}
    in_order = list(rows.values())
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "report.csv", in_order)
    plot_losses(out / "loss_vs_step.png", shown, rows)
    tuned = any(choices.values())
    if tuned:
        plot_sensitivity(out / "lr_sensitivity.png", rows, choices)
    kinds = sorted({str(job.summary.get("memory_kind")) for job in jobs if "memory_kind" in
                    job.summary})
    plot_bars(out / "memory.png", in_order,
              [("peak_memory_gb", f"peak memory, GB ({', '.join(kinds)})"),
               ("optimizer_state_gb", "optimizer state, GB")],
              "Memory per variant: mean ± std over seeds")
    plot_bars(out / "tgs.png", in_order, [("tgs", "tokens per second per device (TGS)")],
              "Throughput per variant: mean ± std over seeds")
    plot_memory_frontier(out / "loss_vs_memory.png", in_order, ", ".join(kinds))
    sweeps = sorted({str(job.summary["sweep"]) for job in jobs if job.summary.get("sweep")})
    devices = sorted({str(job.summary.get("device")) for job in jobs if "device" in job.summary})
    left_out = [f"{repeated} repeated attempts of the same configs"] * bool(repeated) + [
        f"{len(unreadable)} unreadable: see below"] * bool(unreadable)
    lines = [
        f"# Ablation report: {', '.join(sweeps) or root}", "",
        f"- Jobs: {len(jobs)} under `{root}`" + (
            f" (left out: {'; '.join(left_out)})" if left_out else ""),
        *([f"- Tasks: {', '.join(by_task)}, each compared with its own baseline"]
          if len(by_task) > 1 else []),
        f"- Device: {', '.join(devices)}; peak memory is {', '.join(kinds)}",
        *task_lines,
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
        "![test loss against memory, the lower-left frontier marked](loss_vs_memory.png)", "",
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
    if unreadable:
        lines += ["", "## Unreadable jobs (left out of every number)", "",
                  *(f"- `{path}`: {why}" for path, why in unreadable)]
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
