"""`python -m ablate.rerun RUN_DIR [overrides]`: run a saved job again, for debugging.

The job's own `.hydra/config.yaml` (single run or one job of a multirun) becomes the primary
config, so the rerun trains exactly what was trained then, whatever conf/ says now; extra
`key=value` overrides apply on top. The rerun gets a new directory under
`<outputs_dir>/reruns/`; nothing in RUN_DIR is touched. A rerun trains: it neither reuses
nor continues earlier work of its config (`resume=false`, unless the overrides say otherwise).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from .__main__ import cli
from .errors import first_line

GROUPS = ("optimizer", "toggles", "model", "task", "trainer", "logger")


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        sys.exit("usage: python -m ablate.rerun RUN_DIR [key=value ...]")
    run_dir = Path(argv[0]).resolve()
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        sys.exit(f"ablate.rerun: error: {saved} not found (RUN_DIR must be a job's directory)")
    try:
        job = OmegaConf.load(saved)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        sys.exit(f"ablate.rerun: error: {saved}: not readable as YAML ({type(exc).__name__}: "
                 f"{first_line(exc)})")
    if not isinstance(job, DictConfig) or not all(group in job for group in GROUPS):
        sys.exit(f"ablate.rerun: error: {saved}: not a job's config (a mapping with "
                 f"{', '.join(GROUPS)})")
    for override in argv[1:]:
        if override.split("=", 1)[0].lstrip("+~") in GROUPS:
            sys.exit(f"ablate.rerun: error: {override}: a rerun keeps the saved config groups and "
                     "takes single-value overrides (e.g. trainer.max_steps=5); to change a "
                     "group, launch python -m ablate")
    name = f"{run_dir.parent.name}_{run_dir.name}"
    sys.argv = [sys.argv[0], f"--config-path={saved.parent}", "--config-name=config",
                "hydra.run.dir=${outputs_dir}/reruns/${now:%Y-%m-%d}/${now:%H-%M-%S}_" + name,
                "resume=false", *argv[1:]]
    cli()


if __name__ == "__main__":
    main(sys.argv[1:])
