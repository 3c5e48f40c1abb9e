"""The jobs of a sweep directory, read through the run store, each with its variant as a
mapping (config key -> value).

A job's variant is its summary's `variant_config`. A summary written before that field
existed, and a job without a summary (killed: `.hydra/` only), get theirs from the saved
Hydra config, as the job itself would have written it (this imports the optimizers, so
torch, only then); a saved config this version cannot read makes the variant
`{"optimizer": <the summary's label>}`, so the job still shows, under its label.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .. import runstore

STATUSES = ("completed", "stalled", "diverged", "failed", "skipped", "killed")
SUMMARY_KEYS = {"status", "variant", "config_hash"}


@dataclass
class Job:
    dir: Path
    summary: dict
    curve: list[tuple[int, float]]  # (step, training loss) from metrics.jsonl, in step order
    variant: dict  # config key -> value: what makes this job's variant

    @property
    def status(self) -> str:
        return self.summary["status"]

    @property
    def key(self) -> str:
        """The variant as one string, to group by: equal mappings, equal keys."""
        return variant_key(self.variant)


def variant_key(mapping: dict) -> str:
    return json.dumps(mapping, sort_keys=True)


def number(value) -> float:
    """A summary value as a float (summary.json writes NaN and inf as strings); NaN when
    missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def path_order(root: Path, path: Path) -> list[tuple[int, int | str]]:
    """Sort key: job directories in numeric order (2 before 10), at any depth."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in path.relative_to(root).parts]


def saved_overrides(job_dir: Path) -> list[str]:
    from omegaconf import OmegaConf

    return list(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))


def saved_config(job_dir: Path):
    """A job's saved Hydra config, as the job ran it."""
    from omegaconf import OmegaConf

    from ..config.variants import job_config

    return job_config(OmegaConf.load(job_dir / ".hydra" / "config.yaml"))


def killed_summary(job_dir: Path) -> dict:
    """What a job without summary.json was: its variant and config hash, from its saved
    Hydra config, as the job itself would have written them."""
    from ..job import describe

    overrides = saved_overrides(job_dir)
    try:
        described = describe(saved_config(job_dir), overrides)
    except Exception as exc:  # noqa: BLE001 - a config this version cannot read
        described = {"variant": " ".join(["?", *overrides]), "config_hash": str(job_dir),
                     "error": f"config unreadable: {exc}"}
    return {"status": "killed", **described}


def saved_variant(job_dir: Path, summary: dict) -> dict:
    """The variant of a job whose summary has no `variant_config` (the module docstring)."""
    from ..config.identity import variant

    try:
        return variant(saved_config(job_dir), saved_overrides(job_dir))
    except Exception:  # noqa: BLE001 - no saved config, or one this version cannot read
        return {"optimizer": summary["variant"]}


def job_summary(job_dir: Path) -> dict:
    """A job's summary.json, or one error line naming the file."""
    summary = runstore.read_summary(job_dir)
    path = job_dir / runstore.SUMMARY
    if summary is None:
        raise SystemExit(f"ablate.report: error: {path}: not readable as JSON; move it away "
                         "or re-run its job")
    if not isinstance(summary, dict) or not SUMMARY_KEYS <= summary.keys():
        raise SystemExit(f"ablate.report: error: {path}: not a job summary (a JSON object with "
                         "status, variant and config_hash); move it away or re-run its job")
    return summary


def read_jobs(root: Path) -> tuple[list[Job], int]:
    """Every job under `root` in numeric path order, one per config hash, and how many
    repeated attempts of a config were left out."""
    jobs = []
    for job_dir in sorted(runstore.run_dirs(root), key=lambda d: path_order(root, d)):
        summary = (job_summary(job_dir) if (job_dir / runstore.SUMMARY).is_file()
                   else killed_summary(job_dir))
        variant = (summary["variant_config"] if "variant_config" in summary
                   else saved_variant(job_dir, summary))
        jobs.append(Job(job_dir, summary, runstore.curve(job_dir), variant))
    # Per config: the best status, an original before a reused copy, then the first found.
    rank = {status: i for i, status in enumerate(STATUSES)}
    by_config: dict[str, list[Job]] = {}
    for job in jobs:
        by_config.setdefault(job.summary["config_hash"], []).append(job)
    kept = [min(group, key=lambda job: (rank[job.status], "reused_from" in job.summary))
            for group in by_config.values()]
    kept.sort(key=lambda job: path_order(root, job.dir))
    return kept, len(jobs) - len(kept)
