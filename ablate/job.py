"""One job: train, and record what happened, whatever happens.

Files in the run directory:
- `metrics.jsonl`: one JSON object per log step (and per evaluation), flushed as written,
  so a killed run keeps what it logged;
- `summary.json`: the outcome (`status` completed | failed | diverged | skipped);
- `traceback.txt`: only when the job raised;
- `checkpoint.pt` (+ `checkpoint.json`: its step and config hash): with
  `trainer.checkpoint_every=k`, the latest of every k steps.
A job on several processes (`trainer.processes`, torchrun, SLURM) has rank 0 write them all.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from . import distributed
from .config import NOT_IN_HASH, config_hash, first_line, optimizer_class, parse_assignment, plain
from .sweep import _read, find_checkpoints, find_completed
from .tracking import WandbRun, fit

# Overrides that do not make a variant: the seed and a tuned sweep's lr factor (runs that
# differ only in them are one variant: the report aggregates seeds and chooses the lr), what
# the resolved config shows anyway (optimizer name, toggles, the preset's variant), and the
# keys that do not change what is trained (NOT_IN_HASH).
NOT_IN_VARIANT = {"optimizer", "trainer.seed", "trainer.lr_factor", *NOT_IN_HASH}
ROOTS_NOT_IN_VARIANT = {"toggles", "ablation", "tune", "hydra",
                        *(k for k in NOT_IN_HASH if "." not in k)}


def _json_safe(value):
    """JSON has no NaN or inf: write them as strings, as Python's float() reads them back."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(path: Path, obj: dict) -> None:
    """Written whole or not at all: a full disk leaves the previous file, never half of one."""
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({k: _json_safe(v) for k, v in obj.items()}, indent=2) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def variant(cfg: DictConfig, overrides: list[str]) -> dict:
    """What this job varies, read from the resolved config: the optimizer, every toggle that
    differs from the optimizer's own form, and each value the command line or the preset's
    variant set (group choices such as `model=llama_60m` as chosen). Not the seed."""
    parts = {"optimizer": cfg.optimizer.name}
    defaults = inspect.signature(optimizer_class(cfg)).parameters
    for key, value in OmegaConf.to_container(cfg.toggles, resolve=True, enum_to_str=True).items():
        default = True if key == "fused_backward" else (
            defaults[key].default if key in defaults else None)
        if value is not None and value != default:
            parts[key] = value
    assignments = list(overrides)
    if cfg.ablation is not None and cfg.ablation.variant is not None:
        assignments += list(cfg.ablation.variants[cfg.ablation.variant])
    for assignment in assignments:
        key, _, value = assignment.lstrip("+~").partition("=")
        if key in NOT_IN_VARIANT or key.split("/")[0].split(".")[0] in ROOTS_NOT_IN_VARIANT:
            continue
        short = key.removeprefix("optimizer.")
        value = OmegaConf.select(cfg, key) if "." in key else value
        parts[short] = plain(value)  # device=cpu
    return parts


def is_baseline(cfg: DictConfig) -> bool | None:
    """Whether this job is the preset's unablated variant (None outside presets)."""
    if cfg.ablation is None or not cfg.ablation.baseline:
        return None
    return all(plain(OmegaConf.select(cfg, key)) == value
               for key, value in map(parse_assignment, cfg.ablation.baseline))


def describe(cfg: DictConfig, overrides: list[str], sweep: str | None = None) -> dict:
    """The fields of a summary that come from the config alone."""
    parts = variant(cfg, overrides)
    toggles = OmegaConf.to_container(cfg.toggles, resolve=True, enum_to_str=True)
    return {
        "variant": " ".join([parts.pop("optimizer")] + [f"{k}={v}" for k, v in parts.items()]),
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
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"status": status, **describe(cfg, overrides, sweep), **fields}
    write_json(run_dir / "summary.json", summary)
    return summary


def run_job(cfg: DictConfig, run_dir: Path, overrides: list[str], sweep: str | None = None,
            resume_from: list[Path] | None = None, tuning: dict | None = None) -> dict:
    """Train one config into `run_dir`; the summary is written even when training raises
    (then the exception is re-raised after it is recorded). With `resume_from` (folders), a
    completed run of the same config under them is reused, else the most advanced readable
    checkpoint of it is continued. A ConfigError (data that cannot give the batches asked
    for) is raised before anything is written."""
    from .estimate import summary_fields  # transformers loads only when a job runs

    summary = {"status": "failed", **describe(cfg, overrides, sweep), **summary_fields(cfg)}
    if tuning is not None:
        summary["tuning"] = tuning
    checkpoints = []
    if resume_from is not None:
        done = find_completed(resume_from, summary["config_hash"], exclude=run_dir)
        if done is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(done / "metrics.jsonl", run_dir / "metrics.jsonl")
            summary = {**json.loads((done / "summary.json").read_text()), **summary,
                       "status": "completed", "reused_from": str(done.resolve())}
            write_json(run_dir / "summary.json", summary)
            print(f"resume: reused the completed run {done} (config {summary['config_hash']})",
                  flush=True)
            return summary
        checkpoints = find_checkpoints(resume_from, summary["config_hash"], exclude=run_dir)
    if cfg.trainer.processes > 1 and not distributed.launched():
        return train_on_processes(cfg, run_dir, summary, checkpoints, resume_from)
    return train_job(cfg, run_dir, summary, checkpoints, resume_from)


def train_on_processes(cfg: DictConfig, run_dir: Path, summary: dict,
                       checkpoints: list[tuple[Path, int]],
                       resume_from: list[Path] | None) -> dict:
    """`train_job` on `trainer.processes` workers; rank 0 writes. When a rank fails, the
    summary records the first failure (rank 0 may have been stopped before it could)."""
    try:
        return distributed.launch(cfg.trainer.processes, train_job,
                                  (cfg, run_dir, summary, checkpoints, resume_from))
    except distributed.RankFailed as exc:
        run_dir.mkdir(parents=True, exist_ok=True)
        written = _read(run_dir / "summary.json") or summary
        written.update(status="failed", error_type=exc.error_type, error=str(exc))
        if exc.traceback_text:
            with contextlib.suppress(OSError):
                (run_dir / "traceback.txt").write_text(exc.traceback_text)
        write_json(run_dir / "summary.json", written)
        raise


def train_job(cfg: DictConfig, run_dir: Path, summary: dict,
              checkpoints: list[tuple[Path, int]], resume_from: list[Path] | None) -> dict | None:
    """Train (from the first readable checkpoint) and record. Of several ranks, rank 0
    writes every file and the W&B run; the others train along and return None."""
    from .train import Trainer

    trainer = Trainer(cfg)
    resumed = resume(trainer, checkpoints)
    if trainer.world.rank:
        trainer.fit(lambda record: None)
        return None
    if resume_from is not None and resumed is None:
        print(f"resume: no earlier work of config {summary['config_hash']} under "
              f"{', '.join(map(str, resume_from))}: training from step 0", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
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
    try:
        with open(run_dir / "metrics.jsonl", "a", buffering=1) as metrics:
            def log(record: dict) -> None:
                metrics.write(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n")
                wandb_run.log({k: v for k, v in record.items() if k != "step"}, record["step"])

            if resumed is not None:
                for logged in read_metrics(resumed / "metrics.jsonl"):
                    if logged["step"] <= trainer.step:
                        log(logged)
                summary["resumed_from"] = {"run_dir": str(resumed), "step": trainer.step}

            def checkpoint() -> None:
                tmp = run_dir / "checkpoint.pt.tmp"
                try:
                    with open(tmp, "wb") as f:  # closed at once on a failure: its space freed
                        torch.save(trainer.state_dict(), f)
                    tmp.replace(run_dir / "checkpoint.pt")
                except RuntimeError as exc:  # how torch's writer reports a full disk
                    tmp.unlink(missing_ok=True)
                    raise OSError(f"cannot write {tmp}: {first_line(exc)} (its disk has "
                                  f"{shutil.disk_usage(run_dir).free} bytes free without it)"
                                  ) from exc
                finally:
                    tmp.unlink(missing_ok=True)
                write_json(run_dir / "checkpoint.json",
                           {"config_hash": summary["config_hash"], "step": trainer.step})

            summary.update(trainer.fit(log, checkpoint))
            if cfg.trainer.save_model and summary["status"] in ("completed", "stalled"):
                trainer.save_model(run_dir / "model")
                summary["model_dir"] = str((run_dir / "model").resolve())  # a reuse points here
    except Exception as exc:
        summary.update(error_type=type(exc).__name__, error=str(exc))
        with contextlib.suppress(OSError):  # the disk that failed the job may be full
            (run_dir / "traceback.txt").write_text(traceback.format_exc())
        raise
    finally:
        summary["wall_s"] = time.perf_counter() - began
        try:
            write_json(run_dir / "summary.json", summary)
        except OSError as exc:
            print(f"ablate: cannot write {run_dir / 'summary.json'} ({exc}); the job was "
                  f"{summary['status']}", file=sys.stderr, flush=True)
        wandb_run.finish(summary, failed=summary["status"] == "failed")
    return summary


def resume(trainer, checkpoints: list[tuple[Path, int]]) -> Path | None:
    """Load the first checkpoint that can be read; one that cannot is named in a warning and
    set aside (renamed `checkpoint.pt.unreadable`), so that no later re-run trips on it."""
    for run_dir, step in checkpoints:
        path = run_dir / "checkpoint.pt"
        try:
            state = torch.load(path, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds on a bad file
            aside = path.with_suffix(".pt.unreadable")
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


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a line cut short by a kill or a full disk is skipped."""
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records
