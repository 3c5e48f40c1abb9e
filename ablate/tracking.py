"""Weights & Biases: one run per job, never allowed to break training.

A failing `wandb.init` (no network, no key, a bad key) falls back to offline, then to no
W&B at all, with a warning; the local files are written either way.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def fit(text: str, limit: int = 64) -> str:
    """`text` within W&B's 64 characters for a tag or a job_type (wandb 0.31 refuses a longer
    tag at `init`; the server refuses a longer job_type at `wandb sync`): longer text keeps
    its head and gets a hash of the whole, so that distinct labels stay distinct."""
    if len(text) <= limit:
        return text
    return f"{text[:limit - 9]}~{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class WandbRun:
    def __init__(self, settings: dict, run_dir: Path, config: dict, name: str,
                 group: str | None = None, job_type: str | None = None,
                 tags: list[str] | None = None):
        """`settings` is the `logger.wandb` config; its group, if set, wins over `group`.
        Tags longer than W&B allows are shortened by `fit`."""
        self.run = None
        modes = {"online": ["online", "offline"], "offline": ["offline"], "disabled": []}
        for mode in modes[settings["mode"]]:
            try:
                import wandb

                self.run = wandb.init(
                    mode=mode, project=settings["project"], entity=settings["entity"],
                    group=settings["group"] or group, job_type=job_type, name=name,
                    tags=[fit(t) for t in [*settings["tags"], *(tags or [])]],
                    config=flatten(config),
                    dir=str(run_dir), reinit="create_new", settings=wandb.Settings(quiet=True),
                )
                break
            except Exception as exc:  # noqa: BLE001 - W&B must never kill a run
                then = "trying offline" if mode == "online" else "going on without W&B"
                warnings.warn(f"W&B init in {mode} mode failed ({type(exc).__name__}: {exc}); "
                              f"{then}", stacklevel=2)

    @property
    def file(self) -> str | None:
        """The run's transaction log (`run-*.wandb`), what `wandb sync` uploads."""
        return self.run.settings.sync_file if self.run is not None else None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            try:
                self.run.log(metrics, step=step)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"W&B log failed: {exc}", stacklevel=2)

    def finish(self, summary: dict[str, Any], failed: bool) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(flatten(summary))
            self.run.finish(exit_code=1 if failed else 0)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"W&B finish failed: {exc}", stacklevel=2)
        self.run = None
