"""`python -m ablate [overrides]`: compose the config with Hydra and run one job (or, with
`-m`, one job per combination of the swept values)."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from . import runstore
from .config.check import check
from .config.overrides import check_overrides
from .config.schema import config_dir, register_configs
from .config.variants import job_config
from .cores import auto_threads
from .devices import parallel_jobs, sweep_job_gpu
from .errors import ConfigError, IncompatibleToggles, error_line, first_line
from .interrupt import Interrupted
from .job import record, run_job
from .tune import decide
from .world import world_from_env

register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float:
    """A single run stops at its first error, with one line. In a sweep (every job's config
    already checked) each job's outcome is recorded in its summary.json and the next job
    runs; the sweep's report lists the failures."""
    hc = HydraConfig.get()
    run_dir, overrides = Path(hc.runtime.output_dir), list(hc.overrides.task)
    if hc.mode != RunMode.MULTIRUN:
        try:
            cfg = job_config(cfg)
            check(cfg)
            world = world_from_env()
            if world.size > 1:  # started by torchrun: the summary says how many
                cfg.trainer.processes = world.size
            # Rank > 0 of torchrun runs in a temporary directory: it looks where rank 0 does.
            summary = run_job(cfg, run_dir, overrides, resume_from=resume_roots(
                cfg, [run_dir.parent] if world.rank == 0 else []))
        except ConfigError as exc:
            remove_rejected_run(run_dir, Path(cfg.outputs_dir), hc.job.name)
            sys.exit(f"ablate: error: {exc}")
        except Exception as exc:  # noqa: BLE001 - recorded in summary.json and traceback.txt
            sys.exit(f"ablate: error: the job failed: {type(exc).__name__}: "
                     f"{first_line(exc)} (see {run_dir / 'traceback.txt'})")
    else:
        sweep = sweep_name(cfg, hc)
        try:
            cfg = job_config(cfg)
            check(cfg)
            roots = resume_roots(cfg, [Path(hc.sweep.dir).parent])
            tuning = None
            if cfg.tune is not None:
                runs, tuning = decide(cfg, [Path(hc.sweep.dir), *(roots or [])])
                if not runs:
                    record(cfg, run_dir, overrides, sweep, "skipped", reason=tuning["reason"],
                           tuning=tuning)
                    return math.nan
            if not cfg.trainer.threads:  # the jobs running at once share the cores
                cfg.trainer.threads = auto_threads(parallel_jobs(hc.launcher),
                                                   cfg.trainer.processes)
            with sweep_job_gpu(hc.job.num, cfg.trainer.device.value, hc.launcher,
                               cfg.share_gpus, Path(hc.sweep.dir)):
                summary = run_job(cfg, run_dir, overrides, sweep, roots, tuning)
        except IncompatibleToggles as exc:
            record(cfg, run_dir, overrides, sweep, "skipped", reason=str(exc))
            return math.nan
        except Exception as exc:  # noqa: BLE001 - recorded; the next job runs
            if not (run_dir / "summary.json").exists():  # failed before training began
                with contextlib.suppress(OSError):  # the disk that failed it
                    record(cfg, run_dir, overrides, sweep, "failed",
                           error_type=type(exc).__name__, error=first_line(exc))
            return math.nan
    if summary is None:  # a rank other than 0 of a launcher's job: rank 0 reports
        return math.nan
    print(one_line_summary(summary, run_dir), flush=True)
    return summary["val_loss"]


def remove_rejected_run(run_dir: Path, outputs_dir: Path, job_name: str) -> None:
    """Hydra writes `.hydra/` and a log before the config is checked: a rejected run takes
    them back, and the directories that held nothing else."""
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / f"{job_name}.log").unlink(missing_ok=True)
    top, folder = outputs_dir.resolve(), run_dir.resolve()
    while True:
        try:
            folder.rmdir()
        except OSError:  # not empty: something else lives there
            return
        if folder == top or top not in folder.parents:
            return
        folder = folder.parent


def resume_roots(cfg: DictConfig, beside: list[Path]) -> list[Path] | None:
    """Where a job looks for earlier work of its config: `outputs_dir`, the folders `beside`
    (the one holding this run's directory, or this sweep's), and every `resume_from` path;
    None with `resume=false`."""
    if not cfg.resume:
        return None
    return runstore.outermost([Path(cfg.outputs_dir), *beside, *map(Path, cfg.resume_from)])


def one_line_summary(s: dict, run_dir: Path) -> str:
    if s["status"] != "completed":
        return f"{s['status']}: {s['variant']} after {s['steps']} steps | {run_dir}"
    scores = (f"glue_metric={s['glue_metric']} glue_score={s['glue_score']:.4f}"
              if "glue_metric" in s else f"test_perplexity={s['test_perplexity']:.2f} "
              f"test_accuracy={s['test_accuracy']:.4f}")
    return (f"completed: {s['variant']} seed={s['seed']} lr={s['peak_lr']:.4g} | "
            f"val_loss={s['val_loss']:.4f} test_loss={s['test_loss']:.4f} {scores} | "
            f"peak_memory_gb={s['peak_memory_gb']:.3f} optimizer_state_gb="
            f"{s['optimizer_state_gb']:.4f} | tgs={s['tgs']:.0f} | {run_dir}")


def sweep_name(cfg: DictConfig, hc) -> str:
    """The W&B group: the preset's name, else the sweep directory."""
    return cfg.ablation.name if cfg.ablation is not None else hc.sweep.dir


def cli() -> None:
    # Let composition errors reach us instead of Hydra's multi-line report.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    world = world_from_env()
    if world.size > 1 and {"-m", "--multirun"} & set(sys.argv):
        sys.exit("ablate: error: -m under torchrun, accelerate launch or srun: each rank would "
                 "sweep on its own; launch one job at a time, or sweep with "
                 "trainer.processes=N (each job starts its N processes)")
    if world.rank > 0:  # rank 0 writes the run directory; the others write nothing
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled",
                     "hydra/hydra_logging=disabled",
                     f"hydra.run.dir={tempfile.mkdtemp(prefix=f'ablate-rank{world.rank}-')}"]
    try:
        check_overrides(sys.argv[1:])
        main()
    except Interrupted as exc:  # recorded in the job's summary.json
        print(f"ablate: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C outside a job (before one, between two)
        print("ablate: interrupted by SIGINT outside a job: nothing to record", file=sys.stderr,
              flush=True)
        sys.exit(128 + signal.SIGINT)
    except (ConfigError, HydraException, OmegaConfBaseException) as exc:
        sys.exit(f"ablate: error: {error_line(exc)}")
    except OSError as exc:  # Hydra creating the run or sweep directory, before any job
        sys.exit(f"ablate: error: outputs_dir: cannot write the run directory ({exc}); "
                 "outputs_dir must name a writable directory")


if __name__ == "__main__":
    # Each job starts with a full garbage collection (memory.reset_peak): the objects the
    # imports made, alive for good, are kept out of it (~0.2 s a job). Here only: a process
    # that calls cli() itself (the tests) keeps its own collector.
    gc.freeze()
    cli()
