"""The jobs of a sweep directory, read through the run store, each with its variant as a
mapping (config key -> value).

A job's variant is its summary's `variant_config`. A summary written before that field
existed, and a job without a summary (killed: `.hydra/` only), get theirs from the saved
Hydra config, as the job itself would have written it (this imports the optimizers, so
torch, only then); a saved config this version cannot read makes the variant
`{"optimizer": <the summary's label>}`, so the job still shows, under its label.

A job the report cannot use (a summary.json cut short or not a job summary, an unknown
status, a metrics.jsonl line that is no record of a logged step) is listed as unreadable,
with its path and the reason; every other job is reported.

A job of a preset also carries its preset variant's name (`ablation.variant`) and the
preset's claims (`ablation.claims`), read from its saved config (`.hydra/config.yaml`) as
plain YAML; a job without them (an old run, a sweep without a preset) has none.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import runstore

STATUSES = ("completed", "stalled", "diverged", "failed", "interrupted", "skipped", "killed")
SUMMARY_KEYS = {"status", "variant", "config_hash"}


@dataclass
class Job:
    dir: Path
    summary: dict
    curve: list[tuple[int, float]]  # (step, training loss) from metrics.jsonl, in step order
    variant: dict  # config key -> value: what makes this job's variant
    preset_variant: str | None = None  # its `ablation.variant`: the name claims use
    claims: list[dict] = field(default_factory=list)  # its preset's `ablation.claims`

    @property
    def status(self) -> str:
        return self.summary["status"]

    @property
    def task(self) -> str:
        return str(self.summary.get("task"))

    @property
    def key(self) -> str:
        """The task and the variant as one string, to group by: equal mappings of one task,
        equal keys (jobs of different tasks are never one variant)."""
        return variant_key({"task": self.task, "variant": self.variant})


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

    overrides = []
    try:
        overrides = saved_overrides(job_dir)
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


def saved_ablation(job_dir: Path) -> tuple[str | None, list[dict]]:
    """A job's `ablation.variant` and `ablation.claims`, from its saved config (none when
    it has no readable one, or no preset)."""
    try:
        config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None, []
    ablation = (config.get("ablation") if isinstance(config, dict) else None) or {}
    return ablation.get("variant"), list(ablation.get("claims") or [])


class Unreadable(Exception):
    """A job directory the report cannot use; the message says why, naming the file."""


def job_summary(job_dir: Path) -> dict:
    """A job's summary.json, checked (Unreadable when it is not a job summary)."""
    summary = runstore.read_summary(job_dir)
    if summary is None:
        raise Unreadable(f"{runstore.SUMMARY}: not readable as JSON (cut short, or not UTF-8)")
    if not isinstance(summary, dict) or not SUMMARY_KEYS <= summary.keys():
        raise Unreadable(f"{runstore.SUMMARY}: not a job summary (a JSON object with status, "
                         "variant and config_hash)")
    if summary["status"] not in STATUSES:
        raise Unreadable(f"{runstore.SUMMARY}: status {summary['status']!r} is not one of "
                         f"{', '.join(STATUSES)}")
    if not isinstance(summary.get("variant_config", {}), dict):
        raise Unreadable(f"{runstore.SUMMARY}: variant_config is not a mapping")
    return summary


def read_job(job_dir: Path) -> Job:
    """One job directory as a Job (Unreadable: why the report cannot use it)."""
    summary = (job_summary(job_dir) if (job_dir / runstore.SUMMARY).is_file()
               else killed_summary(job_dir))
    problem = runstore.metrics_problem(job_dir)
    if problem is not None:
        raise Unreadable(problem)
    variant = (summary["variant_config"] if "variant_config" in summary
               else saved_variant(job_dir, summary))
    return Job(job_dir, summary, runstore.curve(job_dir), variant, *saved_ablation(job_dir))


def read_jobs(root: Path) -> tuple[list[Job], int, list[tuple[Path, str]]]:
    """Every readable job under `root` in numeric path order, one per config hash; how many
    repeated attempts of a config were left out; and each unreadable job's directory and
    why."""
    jobs, unreadable = [], []
    for job_dir in sorted(runstore.run_dirs(root), key=lambda d: path_order(root, d)):
        try:
            jobs.append(read_job(job_dir))
        except Unreadable as exc:
            unreadable.append((job_dir, str(exc)))
    # Per config: the best status, an original before a reused copy, then the first found.
    rank = {status: i for i, status in enumerate(STATUSES)}
    by_config: dict[str, list[Job]] = {}
    for job in jobs:
        by_config.setdefault(str(job.summary["config_hash"]), []).append(job)
    kept = [min(group, key=lambda job: (rank[job.status], "reused_from" in job.summary))
            for group in by_config.values()]
    kept.sort(key=lambda job: path_order(root, job.dir))
    return kept, len(jobs) - len(kept), unreadable
