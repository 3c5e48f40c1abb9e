"""Sweeps that survive: every job checked before the first runs, finding earlier work of the
same config, and the end-of-sweep report.

A job is identified by its `config_hash`, not its directory: re-running a multirun command
makes a new sweep directory, and each job there first looks for a completed summary of its
own config (reused, not retrained) or a checkpoint of it (the latest one is continued).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import ConfigError, IncompatibleToggles, apply_variant, check, error_line, typed


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # being written by another process, or cut short by a kill


def find_completed(roots: list[Path], config_hash: str, exclude: Path) -> Path | None:
    """A run directory under `roots` whose summary says completed for this config."""
    for root in roots:
        for path in sorted(root.rglob("summary.json")):
            summary = _read(path)
            if (path.parent != exclude and summary and summary.get("status") == "completed"
                    and summary.get("config_hash") == config_hash
                    and "reused_from" not in summary):
                return path.parent
    return None


def find_outcomes(roots: list[Path], config_hashes: set[str]) -> dict[str, dict]:
    """For each of these configs, the summary of a finished (completed, else stalled or
    diverged) job under any of `roots`, in one pass over them (a root inside another is
    read once)."""
    roots = {root.resolve() for root in roots}
    roots = [root for root in roots if not any(other in root.parents for other in roots)]
    found: dict[str, dict] = {}
    for root in roots:
        for path in sorted(root.rglob("summary.json")):
            summary = _read(path)
            if (summary and summary.get("config_hash") in config_hashes
                    and summary.get("status") in ("completed", "stalled", "diverged")
                    and found.get(summary["config_hash"], {}).get("status") != "completed"):
                found[summary["config_hash"]] = summary
    return found


def find_checkpoints(roots: list[Path], config_hash: str, exclude: Path) -> list[tuple[Path, int]]:
    """The run directories under `roots` with a checkpoint of this config, and its step:
    the most advanced first."""
    found = {}
    for root in roots:
        for path in root.rglob("checkpoint.json"):
            meta = _read(path)
            if (path.parent != exclude and meta and meta.get("config_hash") == config_hash
                    and (path.parent / "checkpoint.pt").exists()):
                found[path.parent.resolve()] = meta["step"]
    return sorted(found.items(), key=lambda item: -item[1])


def sweep_report(sweep_dir: Path) -> tuple[str, list[str]]:
    """A line per job of a sweep directory, and the lines of the jobs that failed."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))
    lines, failed, counts = [], [], Counter()
    for job in jobs:
        summary = _read(job / "summary.json") or {"status": "killed"}  # no summary at all
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
        else:
            note = summary.get("reason", "")
        lines.append(f"  #{job.name} {status:<9} {summary.get('variant', '')}  {note}")
        if status in ("failed", "killed"):
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
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    overrides = parser.parse_overrides([*params, *config.hydra.overrides.task])
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


class SweepReport(Callback):
    """Before the first job: check every job's config and data (a bad value is one line, and
    no sweep directory). After the last job: print every job's outcome; fail the sweep if any job
    failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_launcher(config.hydra.launcher)
            from .tasks import load_task  # its data libraries load only when a sweep starts

            jobs, tasks = sweep_jobs(config), {}
            for number, job in enumerate(jobs):
                try:
                    cfg = apply_variant(typed(compose(config.hydra.job.config_name, job)))
                    check(cfg)
                    key = json.dumps(OmegaConf.to_container(cfg.task, resolve=True,
                                                            enum_to_str=True))
                    if key not in tasks:
                        tasks[key] = load_task(cfg)
                    tasks[key].check(cfg.trainer)
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
