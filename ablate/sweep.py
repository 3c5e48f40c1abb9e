"""Sweeps that survive: every job checked before the first runs, and the end-of-sweep report.

A job is identified by its `config_hash`, not its directory: re-running a multirun command
makes a new sweep directory (or reuses one named by `hydra.sweep.dir`), and each job there
first looks for a completed summary of its own config (reused, not retrained) or a
checkpoint of it (the latest one is continued), through the run store's indexes
(ablate/runstore.py), its own directory included.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.experimental.callback import Callback
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import runstore
from .config.check import checked
from .config.schema import plain
from .config.variants import expand
from .devices import check_parallel_jobs, gpu_count, parallel_jobs
from .errors import ConfigError, IncompatibleToggles, error_line


def sweep_report(sweep_dir: Path) -> tuple[str, list[str]]:
    """A line per job of a sweep directory, and the lines of the jobs that failed."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))
    lines, failed, counts = [], [], Counter()
    for job in jobs:
        summary = runstore.read_summary(job) or {"status": "killed"}  # no summary at all
        status = summary["status"]
        counts[status] += 1
        if status == "completed":
            resumed = summary.get("resumed_from")
            note = f"test_loss={summary['test_loss']:.4f}" + (
                " (reused)" if "reused_from" in summary else
                f" (resumed at step {resumed['step']})" if resumed else "")
        elif status == "stalled":
            note = "loss blew up, then stuck at ln(vocab)"
        elif status == "failed":
            note = f"{summary.get('error_type')}: {summary.get('error')}  [{job}]"
        elif status == "interrupted":
            note = f"by {summary.get('signal')} after step {summary.get('step')}  [{job}]"
        else:
            note = summary.get("reason", "")
        lines.append(f"  #{job.name} {status:<9} {summary.get('variant', '')}  {note}")
        if status in ("failed", "killed", "interrupted"):
            failed.append(lines[-1])
    head = f"sweep {sweep_dir}: {len(jobs)} jobs: " + ", ".join(
        f"{n} {status}" for status, n in sorted(counts.items()))
    return "\n".join([head, *lines]), failed


def check_launcher(launcher: DictConfig) -> None:
    """Launcher settings that would fail only once the sweep has started."""
    target = launcher._target_.rsplit(".", 1)[-1]
    if target == "JoblibLauncher" and launcher.n_jobs == 0:
        raise ConfigError("hydra.launcher.n_jobs=0: must be >= 1 (processes at a time), or "
                          "negative (-1: one per core)")
    if target == "SlurmLauncher" and shutil.which("sbatch") is None:
        raise ConfigError("hydra/launcher=submitit_slurm: no SLURM here (sbatch is not on PATH); "
                          "allowed on this machine: basic, joblib, submitit_local")


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands them (a preset's
    `hydra.sweeper.params` first, then the command line)."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    # Unresolved: `task.path=data/${task.name}` is each job's own, not the primary config's.
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    return expand([*params, *task], GlobalHydra.instance().config_loader())


class SweepReport(Callback):
    """Before the first job: check every job's config and data (a bad value is one line, and
    no sweep directory). After the last job: print every job's outcome; fail the sweep if any job
    failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_launcher(config.hydra.launcher)
            check_parallel_jobs(parallel_jobs(config.hydra.launcher),
                                gpu_count(plain(config.trainer.device)), config.share_gpus)
            from .tasks import load_task  # its data libraries load only when a sweep starts
            from .train import check_vocabulary

            jobs, tasks = sweep_jobs(config), {}
            for number, job in enumerate(jobs):
                try:
                    cfg = checked(compose(config.hydra.job.config_name, job))
                    # What a task's data depends on (its records are cut to seq_len).
                    key = json.dumps([OmegaConf.to_container(node, resolve=True,
                                                             enum_to_str=True)
                                      for node in (cfg.task, cfg.model)] + [cfg.trainer.seq_len])
                    if key not in tasks:
                        tasks[key] = load_task(cfg)
                    tasks[key].check(cfg.trainer)
                    check_vocabulary(tasks[key], cfg.model)
                except IncompatibleToggles:
                    continue  # recorded as skipped when the job runs
                except ConfigError as exc:
                    swept = [o for o in job if not all(o in other for other in jobs)]
                    raise ConfigError(f"{exc} (job #{number} of the sweep"
                                      f"{': ' + ' '.join(swept) if swept else ''})") from None
        except (ConfigError, HydraException, OmegaConfBaseException) as exc:
            # Hydra turns a callback's exception into a warning; an exit it lets pass.
            raise SystemExit(f"ablate: error: {error_line(exc)}") from exc

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        report, failed = sweep_report(Path(config.hydra.sweep.dir))
        print(report, flush=True)
        if failed:  # Hydra turns a callback's exception into a warning; an exit it lets pass
            raise SystemExit(f"ablate: {len(failed)} job(s) failed:\n" + "\n".join(failed))
