"""`python -m ablate [overrides]`: compose the config with Hydra and run one job (or, with
`-m`, one job per combination of the swept values)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from .config import ConfigError, check, config_dir, register_configs, typed
from .job import run_job

register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float:
    cfg = typed(cfg)
    hc = HydraConfig.get()
    try:
        check(cfg)
    except ConfigError as exc:
        if hc.mode == RunMode.MULTIRUN:
            raise  # recorded by the sweep; the other jobs go on
        sys.exit(f"ablate: error: {exc}")
    summary = run_job(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task))
    print(" ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, (dict, list))))
    return summary["eval_loss"]


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
