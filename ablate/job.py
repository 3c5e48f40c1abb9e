"""One job: train, and record what happened, whatever happens.

What a run directory holds, and how it is written and read, is `ablate/runstore.py`.
A job on several processes (`trainer.processes`, torchrun, SLURM) has rank 0 write it all.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from . import distributed, interrupt, runstore
from .config.identity import config_hash, is_baseline, label, variant
from .errors import first_line
from .tracking import WandbRun, fit


def describe(cfg: DictConfig, overrides: list[str], sweep: str | None = None) -> dict:
    """The fields of a summary that come from the config alone."""
    parts = variant(cfg, overrides)
    toggles = OmegaConf.to_container(cfg.toggles, resolve=True, enum_to_str=True)
    return {
        "variant": label(parts),
        "variant_config": parts,
        "is_baseline": is_baseline(cfg),
        "sweep": sweep,
        "optimizer": cfg.optimizer.name,
        "toggles": {k: v for k, v in toggles.items() if v is not None},
        "model": cfg.model.name,
        "task": cfg.task.name,
        "seed": cfg.trainer.seed,
        "lr_factor": cfg.trainer.lr_factor,
        "overrides": list(overrides),
        "config_hash": config_hash(cfg),
    }


def record(cfg: DictConfig, run_dir: Path, overrides: list[str], sweep: str | None,
           status: str, **fields) -> dict:
    """A summary for a job that did not train (skipped, or rejected by the config check)."""
    summary = {"status": status, **describe(cfg, overrides, sweep), **fields}
    runstore.create(run_dir, summary["config_hash"])
    runstore.write_summary(run_dir, summary)
    return summary


def run_job(cfg: DictConfig, run_dir: Path, overrides: list[str], sweep: str | None = None,
            resume_from: list[Path] | None = None, tuning: dict | None = None) -> dict:
    """Train one config into `run_dir`; the summary is written even when training raises
    (then the exception is re-raised after it is recorded). With `resume_from` (folders), a
    completed run of the same config under them (`run_dir` itself included) is reused, else
    the most advanced readable checkpoint of it is continued. A ConfigError (data that
    cannot give the batches asked for) is raised before anything is written. A signal
    (ablate/interrupt.py) stops the job at a step boundary, recorded, and raises Interrupted."""
    from .estimate import summary_fields  # transformers loads only when a job runs

    summary = {"status": "failed", **describe(cfg, overrides, sweep), **summary_fields(cfg)}
    if tuning is not None:
        summary["tuning"] = tuning
    checkpoints = []
    if resume_from is not None:
        done = runstore.find_completed(resume_from, summary["config_hash"])
        if done is not None:
            return reuse(done, run_dir, summary)
        checkpoints = runstore.find_checkpoints(resume_from, summary["config_hash"])
    with interrupt.catching():
        if cfg.trainer.processes > 1 and not distributed.launched():
            return train_on_processes(cfg, run_dir, summary, checkpoints, resume_from)
        return train_job(cfg, run_dir, summary, checkpoints, resume_from)


def reuse(done: Path, run_dir: Path, summary: dict) -> dict:
    """A completed run of this config: `run_dir` itself (nothing to do), or copied into it."""
    if done.resolve() == run_dir.resolve():
        print(f"resume: {run_dir} holds the completed run (config {summary['config_hash']})",
              flush=True)
        return runstore.read_summary(run_dir)
    runstore.create(run_dir, summary["config_hash"])
    runstore.copy_run(done, run_dir)
    summary = {**runstore.read_summary(done), **summary,
               "status": "completed", "reused_from": str(done.resolve())}
    runstore.write_summary(run_dir, summary)
    print(f"resume: reused the completed run {done} (config {summary['config_hash']})",
          flush=True)
    return summary


def train_on_processes(cfg: DictConfig, run_dir: Path, summary: dict,
                       checkpoints: list[tuple[Path, int]],
                       resume_from: list[Path] | None) -> dict:
    """`train_job` on `trainer.processes` workers; rank 0 writes. When a rank fails, the
    summary records the first failure (rank 0 may have been stopped before it could); when
    a signal stops the job, what rank 0 recorded (or, if it could not, the signal)."""
    try:
        return distributed.launch(cfg.trainer.processes, train_job,
                                  (cfg, run_dir, summary, checkpoints, resume_from))
    except distributed.RankFailed as exc:
        runstore.create(run_dir, summary["config_hash"])
        written = runstore.read_summary(run_dir) or summary
        written.update(status="failed", error_type=exc.error_type, error=str(exc))
        if exc.traceback_text:
            runstore.write_traceback(run_dir, exc.traceback_text)
        runstore.write_summary(run_dir, written)
        raise
    except interrupt.Interrupted as exc:
        written = runstore.read_summary(run_dir)
        if written is None or written["config_hash"] != summary["config_hash"]:
            step = max((r["step"] for r in runstore.read_metrics(run_dir)), default=0)
            written = {**summary, **interrupt.outcome(exc.signum, step)}
            runstore.create(run_dir, summary["config_hash"])
            runstore.write_summary(run_dir, written)
        raise interrupt.Interrupted(exc.signum, written.get("step", written.get("steps")),
                                    run_dir, bool(cfg.trainer.checkpoint_every)) from None


def saves_model(cfg: DictConfig, outcome: dict) -> bool:
    """Whether a job ends by saving its model: asked for, and trained to its end."""
    return cfg.trainer.save_model and outcome["status"] in ("completed", "stalled")


def train_job(cfg: DictConfig, run_dir: Path, summary: dict,
              checkpoints: list[tuple[Path, int]], resume_from: list[Path] | None) -> dict | None:
    """Train (from the first readable checkpoint) and record. Of several ranks, rank 0
    writes every file and the W&B run; the others train along and return None. A job
    stopped by a signal raises Interrupted once it is recorded."""
    from .train import Trainer

    trainer = Trainer(cfg)
    resumed = resume(trainer, checkpoints)

    def checkpoint() -> None:  # sharded: every rank writes its shards
        if trainer.sharded_checkpoints:
            runstore.save_sharded_checkpoint(run_dir, trainer.state_dict(),
                                             summary["config_hash"], trainer.step)
        else:
            runstore.save_checkpoint(run_dir, trainer.state_dict(), summary["config_hash"],
                                     trainer.step)

    if trainer.world.rank:
        outcome = trainer.fit(lambda record: None,
                              checkpoint if trainer.sharded_checkpoints else None)
        if trainer.sharded and saves_model(cfg, outcome):  # its shards, to rank 0
            trainer.save_model(None)
        raise_if_interrupted(trainer, run_dir)
        return None
    if resume_from is not None and resumed is None:
        print(f"resume: no earlier work of config {summary['config_hash']} under "
              f"{', '.join(map(str, resume_from))}: training from step 0", flush=True)
    runstore.create(run_dir, summary["config_hash"])
    # The earlier run's lines up to the step continued from (none when starting afresh):
    # a step is never logged twice, even when the run continues in its own directory.
    kept = [r for r in runstore.read_metrics(resumed) if r["step"] <= trainer.step] if (
        resumed is not None) else []
    runstore.write_metrics(run_dir, kept)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    # job_type groups a variant's seeds; tags filter by optimizer and toggle (`nmf=false`).
    label = fit(summary["variant"])
    lr_part = f" lr_factor={cfg.trainer.lr_factor:g}" if cfg.tune is not None else ""
    toggle_tags = [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                   for k, v in summary["toggles"].items()]
    wandb_run = WandbRun(resolved["logger"]["wandb"], run_dir, resolved, group=summary["sweep"],
                         name=f"{label}{lr_part} seed={cfg.trainer.seed}", job_type=label,
                         tags=[cfg.optimizer.name, *toggle_tags])
    summary["wandb_file"] = wandb_run.file
    began = time.perf_counter()

    def send(record: dict) -> None:
        wandb_run.log({k: v for k, v in record.items() if k != "step"}, record["step"])

    try:
        for record in kept:
            send(record)
        if resumed is not None:
            summary["resumed_from"] = {"run_dir": str(resumed), "step": trainer.step}
        with open(run_dir / runstore.METRICS, "a", buffering=1) as metrics:
            def log(record: dict) -> None:
                metrics.write(runstore.metrics_line(record))
                send(record)

            summary.update(trainer.fit(log, checkpoint))
            if saves_model(cfg, summary):
                trainer.save_model(run_dir / "model")
                summary["model_dir"] = str((run_dir / "model").resolve())  # a reuse points here
    except Exception as exc:
        summary.update(status="failed", error_type=type(exc).__name__, error=str(exc))
        runstore.write_traceback(run_dir, traceback.format_exc())
        raise
    finally:
        summary["wall_s"] = time.perf_counter() - began
        try:
            runstore.write_summary(run_dir, summary)
        except OSError as exc:
            print(f"ablate: cannot write {run_dir / 'summary.json'} ({exc}); the job was "
                  f"{summary['status']}", file=sys.stderr, flush=True)
        wandb_run.finish(summary, failed=summary["status"] == "failed")
    raise_if_interrupted(trainer, run_dir)
    return summary


def raise_if_interrupted(trainer, run_dir: Path) -> None:
    """Interrupted, when a signal stopped the job (or came after its last step: the job is
    recorded as it ended, and still stops the sweep or the command)."""
    signum = trainer.stopped_by or interrupt.noted()
    if signum and signum != interrupt.LAUNCHER_DIED:
        raise interrupt.Interrupted(signum, trainer.step, run_dir,
                                    bool(trainer.t.checkpoint_every))


def resume(trainer, checkpoints: list[tuple[Path, int]]) -> Path | None:
    """Load the first checkpoint that can be read; one that cannot is named in a warning and
    set aside (renamed `checkpoint.pt.unreadable`, or `checkpoint.dcp.unreadable`), so that no later re-run trips on it."""
    for run_dir, step in checkpoints:
        path = run_dir / (runstore.SHARDED_CHECKPOINT if trainer.sharded_checkpoints
                          else runstore.CHECKPOINT)
        try:
            state = (runstore.load_sharded_checkpoint(path, trainer.state_template())
                     if trainer.sharded_checkpoints else torch.load(path, weights_only=False))
        except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds on a bad file
            aside = path.with_name(path.name + ".unreadable")
            with contextlib.suppress(OSError):
                path.replace(aside)
            warnings.warn(f"resume: cannot read checkpoint {path} ({type(exc).__name__}: "
                          f"{first_line(exc)}); set aside as {aside.name}", stacklevel=2)
            continue
        trainer.load_state_dict(state)
        if trainer.world.rank == 0:
            print(f"resume: continuing from {path} at step {trainer.step}", flush=True)
        return run_dir
    return None

