"""Sweeps that survive: finding earlier work of the same config, and the end-of-sweep report.

A job is identified by its `config_hash`, not its directory: re-running a multirun command
makes a new sweep directory, and each job there first looks under `outputs_dir` for a
completed summary of its own config (reused, not retrained) or a checkpoint of it (the
latest one is continued).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # being written by another process, or cut short by a kill


def find_completed(root: Path, config_hash: str, exclude: Path) -> Path | None:
    """A run directory under `root` whose summary says completed for this config."""
    for path in sorted(root.rglob("summary.json")):
        summary = _read(path)
        if (path.parent != exclude and summary and summary.get("status") == "completed"
                and summary.get("config_hash") == config_hash and "reused_from" not in summary):
            return path.parent
    return None


def find_outcome(roots: list[Path], config_hash: str) -> dict | None:
    """The summary of a finished (completed, else diverged) job of this config under any
    of `roots`."""
    found = [summary for root in roots for path in sorted(root.rglob("summary.json"))
             if (summary := _read(path)) and summary.get("config_hash") == config_hash
             and summary.get("status") in ("completed", "diverged")]
    return min(found, key=lambda s: s["status"] != "completed", default=None)


def find_checkpoint(root: Path, config_hash: str, exclude: Path) -> tuple[Path, int] | None:
    """The run directory under `root` with the most advanced checkpoint of this config."""
    best = None
    for path in root.rglob("checkpoint.json"):
        meta = _read(path)
        if (path.parent != exclude and meta and meta["config_hash"] == config_hash
                and (path.parent / "checkpoint.pt").exists()
                and (best is None or meta["step"] > best[1])):
            best = (path.parent, meta["step"])
    return best


def sweep_report(sweep_dir: Path) -> tuple[str, list[str]]:
    """A line per job of a sweep directory, and the lines of the jobs that failed."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))
    lines, failed, counts = [], [], Counter()
    for job in jobs:
        summary = _read(job / "summary.json") or {"status": "killed"}  # no summary at all
        status = summary["status"]
        counts[status] += 1
        if status == "completed":
            note = f"test_loss={summary['test_loss']:.4f}" + (
                " (reused)" if "reused_from" in summary else "")
        elif status == "failed":
            note = f"{summary.get('error_type')}: {summary.get('error')}  [{job}]"
        else:
            note = summary.get("reason", "")
        lines.append(f"  #{job.name} {status:<9} {summary.get('variant', '')}  {note}")
        if status in ("failed", "killed"):
            failed.append(lines[-1])
    head = f"sweep {sweep_dir}: {len(jobs)} jobs: " + ", ".join(
        f"{n} {status}" for status, n in sorted(counts.items()))
    return "\n".join([head, *lines]), failed


class SweepReport(Callback):
    """After the last job: print every job's outcome; fail the sweep if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        report, failed = sweep_report(Path(config.hydra.sweep.dir))
        print(report, flush=True)
        if failed:  # Hydra turns a callback's exception into a warning; an exit it lets pass
            raise SystemExit(f"ablate: {len(failed)} job(s) failed:\n" + "\n".join(failed))
