"""One job: train, and record what happened, whatever happens.

Files in the run directory:
- `metrics.jsonl`: one JSON object per log step (and per evaluation), flushed as written,
  so a killed run keeps what it logged;
- `summary.json`: the outcome (`status` completed | failed | diverged | skipped);
- `traceback.txt`: only when the job raised;
- `checkpoint.pt`: with `trainer.checkpoint_every=k`, the latest of every k steps.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .config import config_hash
from .tracking import WandbRun


def _json_safe(value):
    """JSON has no NaN or inf: write them as strings, as Python's float() reads them back."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: _json_safe(v) for k, v in obj.items()}, indent=2) + "\n")
    tmp.replace(path)


def describe(cfg: DictConfig, overrides: list[str]) -> dict:
    """The fields of a summary that come from the config alone."""
    toggles = OmegaConf.to_container(cfg.toggles, resolve=True)
    return {
        "optimizer": cfg.optimizer.name,
        "toggles": {k: v for k, v in toggles.items() if v is not None},
        "model": cfg.model.name,
        "task": cfg.task.name,
        "seed": cfg.trainer.seed,
        "overrides": list(overrides),
        "config_hash": config_hash(cfg),
    }


def run_job(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict:
    """Train one config into `run_dir`; the summary is written even when training raises
    (then the exception is re-raised after it is recorded)."""
    from .train import Trainer  # torch and transformers load only when a job runs

    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"status": "failed", **describe(cfg, overrides)}
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    wandb_run = WandbRun(resolved["logger"]["wandb"], run_dir, resolved,
                         name=run_dir.name)
    summary["wandb_file"] = wandb_run.file
    began = time.perf_counter()
    try:
        with open(run_dir / "metrics.jsonl", "a", buffering=1) as metrics:
            def log(record: dict) -> None:
                metrics.write(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n")
                wandb_run.log({k: v for k, v in record.items() if k != "step"}, record["step"])

            trainer = Trainer(cfg)

            def checkpoint() -> None:
                tmp = run_dir / "checkpoint.pt.tmp"
                torch.save(trainer.state_dict(), tmp)
                tmp.replace(run_dir / "checkpoint.pt")

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
