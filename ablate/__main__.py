"""`python -m ablate [overrides]`: compose the config with Hydra and run one job (or, with
`-m`, one job per combination of the swept values)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from .config import (ConfigError, IncompatibleToggles, apply_variant, check, config_dir,
                     register_configs, typed)
from .job import record, run_job
from .tune import decide

register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float:
    """A single run stops at its first error. In a sweep every job's outcome is recorded in
    its summary.json and the next job runs; the sweep's report lists the failures."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir, overrides = Path(hc.runtime.output_dir), list(hc.overrides.task)
    try:
        cfg = apply_variant(typed(cfg))
        check(cfg)
    except ConfigError as exc:
        if not multirun:
            sys.exit(f"ablate: error: {exc}")
        sweep = sweep_name(cfg, hc)
        if isinstance(exc, IncompatibleToggles):
            record(cfg, run_dir, overrides, sweep, "skipped", reason=str(exc))
        else:
            record(cfg, run_dir, overrides, sweep, "failed", error_type="ConfigError",
                   error=str(exc))
        return math.nan
    if not multirun:
        summary = run_job(cfg, run_dir, overrides)
    else:
        resume_from = Path(cfg.outputs_dir) if cfg.resume else None
        tuning = None
        if cfg.tune is not None:
            roots = [Path(hc.sweep.dir)] + ([resume_from] if resume_from is not None else [])
            runs, tuning = decide(cfg, roots)
            if not runs:
                record(cfg, run_dir, overrides, sweep_name(cfg, hc), "skipped",
                       reason=tuning["reason"], tuning=tuning)
                return math.nan
        try:
            summary = run_job(cfg, run_dir, overrides, sweep_name(cfg, hc), resume_from, tuning)
        except Exception:  # noqa: BLE001 - recorded in summary.json and traceback.txt
            return math.nan
    print(one_line_summary(summary, run_dir), flush=True)
    return summary["val_loss"]


def one_line_summary(s: dict, run_dir: Path) -> str:
    if s["status"] != "completed":
        return f"{s['status']}: {s['variant']} after {s['steps']} steps | {run_dir}"
    return (f"completed: {s['variant']} seed={s['seed']} lr={s['peak_lr']:.4g} | "
            f"val_loss={s['val_loss']:.4f} test_loss={s['test_loss']:.4f} "
            f"test_perplexity={s['test_perplexity']:.2f} test_accuracy={s['test_accuracy']:.4f} | "
            f"peak_memory_gb={s['peak_memory_gb']:.3f} optimizer_state_gb="
            f"{s['optimizer_state_gb']:.4f} | tgs={s['tgs']:.0f} | {run_dir}")


def sweep_name(cfg: DictConfig, hc) -> str:
    """The W&B group: the preset's name, else the sweep directory."""
    return cfg.ablation.name if cfg.ablation is not None else hc.sweep.dir


def one_line(exc: BaseException) -> str:
    """Hydra and OmegaConf spread a bad value over several lines; keep what names it."""
    if isinstance(exc, MissingConfigException) and exc.options:
        group = exc.missing_cfg_file.rsplit("/", 1)[0]
        return f"{str(exc).splitlines()[0]}; allowed {group} options: {', '.join(exc.options)}"
    parts = [str(exc).splitlines()[0]]
    if exc.__cause__ is not None:
        parts += [line for line in str(exc.__cause__).splitlines()[:1] if line.strip()]
    return ": ".join(parts)


def cli() -> None:
    # Let composition errors reach us instead of Hydra's multi-line report.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except (ConfigError, HydraException, OmegaConfBaseException) as exc:
        sys.exit(f"ablate: error: {one_line(exc)}")


if __name__ == "__main__":
    cli()
