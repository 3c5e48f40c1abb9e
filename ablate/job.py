"""One job: train, and record what happened, whatever happens.

Files in the run directory:
- `metrics.jsonl`: one JSON object per log step (and per evaluation), flushed as written,
  so a killed run keeps what it logged;
- `summary.json`: the outcome (`status` completed | failed | diverged | skipped);
- `traceback.txt`: only when the job raised;
- `checkpoint.pt` (+ `checkpoint.json`: its step and config hash): with
  `trainer.checkpoint_every=k`, the latest of every k steps.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
import time
import traceback
from enum import Enum
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .config import config_hash, optimizer_class, parse_assignment
from .sweep import find_checkpoint, find_completed
from .tracking import WandbRun, fit

# Overrides that do not make a variant: the seed and a tuned sweep's lr factor (runs that
# differ only in them are one variant: the report aggregates seeds and chooses the lr), what the resolved config shows anyway (optimizer name, toggles, the preset's
# variant), and where things are written or shown.
NOT_IN_VARIANT = {"optimizer", "trainer.seed", "trainer.lr_factor", "trainer.progress"}
ROOTS_NOT_IN_VARIANT = {"toggles", "ablation", "tune", "hydra", "logger", "outputs_dir",
                        "resume"}


def _json_safe(value):
    """JSON has no NaN or inf: write them as strings, as Python's float() reads them back."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: _json_safe(v) for k, v in obj.items()}, indent=2) + "\n")
    tmp.replace(path)


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


def plain(value):
    """A config value as the YAML that set it: an enum member as its value."""
    return value.value if isinstance(value, Enum) else value


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
            resume_from: Path | None = None, tuning: dict | None = None) -> dict:
    """Train one config into `run_dir`; the summary is written even when training raises
    (then the exception is re-raised after it is recorded). With `resume_from`, a completed
    run of the same config under it is reused, and its latest checkpoint continued."""
    from .estimate import summary_fields  # transformers loads only when a job runs
    from .train import Trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"status": "failed", **describe(cfg, overrides, sweep), **summary_fields(cfg)}
    if tuning is not None:
        summary["tuning"] = tuning
    if resume_from is not None:
        done = find_completed(resume_from, summary["config_hash"], exclude=run_dir)
        if done is not None:
            shutil.copy(done / "metrics.jsonl", run_dir / "metrics.jsonl")
            summary = {**json.loads((done / "summary.json").read_text()), **summary,
                       "status": "completed", "reused_from": str(done.resolve())}
            write_json(run_dir / "summary.json", summary)
            return summary
        latest = find_checkpoint(resume_from, summary["config_hash"], exclude=run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    # job_type groups a variant's seeds; tags filter by optimizer and toggle (`nmf=false`).
    label = fit(summary["variant"])
    lr_part = f" lr_factor={cfg.trainer.lr_factor:g}" if cfg.tune is not None else ""
    toggle_tags = [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                   for k, v in summary["toggles"].items()]
    wandb_run = WandbRun(resolved["logger"]["wandb"], run_dir, resolved, group=sweep,
                         name=f"{label}{lr_part} seed={cfg.trainer.seed}", job_type=label,
                         tags=[cfg.optimizer.name, *toggle_tags])
    summary["wandb_file"] = wandb_run.file
    began = time.perf_counter()
    try:
        with open(run_dir / "metrics.jsonl", "a", buffering=1) as metrics:
            def log(record: dict) -> None:
                metrics.write(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n")
                wandb_run.log({k: v for k, v in record.items() if k != "step"}, record["step"])

            trainer = Trainer(cfg)
            if resume_from is not None and latest is not None:
                old_dir, step = latest
                trainer.load_state_dict(torch.load(old_dir / "checkpoint.pt", weights_only=False))
                for line in (old_dir / "metrics.jsonl").read_text().splitlines():
                    logged = json.loads(line)
                    if logged["step"] <= step:
                        log(logged)
                summary["resumed_from"] = {"run_dir": str(old_dir.resolve()), "step": step}

            def checkpoint() -> None:
                torch.save(trainer.state_dict(), run_dir / "checkpoint.pt.tmp")
                (run_dir / "checkpoint.pt.tmp").replace(run_dir / "checkpoint.pt")
                write_json(run_dir / "checkpoint.json",
                           {"config_hash": summary["config_hash"], "step": trainer.step})

            summary.update(trainer.fit(log, checkpoint))
    except Exception as exc:
        summary.update(error_type=type(exc).__name__, error=str(exc))
        (run_dir / "traceback.txt").write_text(traceback.format_exc())
        raise
    finally:
        summary["wall_s"] = time.perf_counter() - began
        write_json(run_dir / "summary.json", summary)
        wandb_run.finish(summary, failed=summary["status"] == "failed")
    return summary
