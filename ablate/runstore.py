"""The one module that writes and reads a run directory, and finds earlier work by config hash.

A run directory holds:
- `summary.json`: the outcome (`status` completed | stalled | diverged | failed | skipped |
  interrupted);
- `metrics.jsonl`: one JSON object per log step and per evaluation, flushed as written, so a
  killed run keeps what it logged; NaN and inf are written as the strings "nan", "inf";
- `traceback.txt`: only when the job raised;
- `checkpoint.pt` and `checkpoint.json` (its step and config hash): the latest checkpoint.

Each folder that holds run directories has an `index.jsonl`, a line per run (its directory
name and config hash), appended when the run starts. Finding earlier work of a config reads
the indexes under the folders it is given, without descending into any indexed run; a run
written before indexes existed (no index beside it) is found by its own files, as before.
Imports no torch: the report reads runs with it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path

SUMMARY, METRICS, TRACEBACK = "summary.json", "metrics.jsonl", "traceback.txt"
CHECKPOINT, CHECKPOINT_META, INDEX = "checkpoint.pt", "checkpoint.json", "index.jsonl"
SHARDED_CHECKPOINT = "checkpoint.dcp"  # trainer.sharding=fsdp: a folder, a file per rank
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _json_safe(value):
    """JSON has no NaN or inf: write them as strings, as Python's float() reads them back."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _finite_back(value):
    return NON_FINITE.get(value, value) if isinstance(value, str) else value


def write_whole(path: Path, text: str) -> None:
    """Written whole or not at all: a full disk or a kill leaves the previous file, never
    half of one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: dict) -> None:
    write_whole(path, json.dumps({k: _json_safe(v) for k, v in obj.items()}, indent=2) + "\n")


def read_json(path: Path) -> dict | None:
    """A JSON file, or None when it is missing, being written or cut short by a kill."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_summary(run_dir: Path) -> dict | None:
    return read_json(run_dir / SUMMARY)


def write_summary(run_dir: Path, summary: dict) -> None:
    write_json(run_dir / SUMMARY, summary)


def metrics_line(record: dict) -> str:
    return json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n"


def _metrics_record(line: str) -> tuple[dict | None, str | None]:
    """A metrics.jsonl line as a record of a logged step (NaN and inf as floats again), or
    why it is none."""
    try:
        record = json.loads(line)
    except ValueError:
        return None, "not JSON (cut short by a kill or a full disk?)"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    record = {k: _finite_back(v) for k, v in record.items()}
    step, loss = record.get("step"), record.get("loss", 0.0)
    if type(step) is not int:
        return None, f"step {step!r} is not an integer"
    if type(loss) not in (int, float):
        return None, f"loss {loss!r} is not a number"
    return record, None


def _metrics(run_dir: Path):
    """(line number, record or None, why not) for each non-blank line of metrics.jsonl."""
    path = run_dir / METRICS
    if path.is_file():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if line.strip():
                yield number, *_metrics_record(line)


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl, NaN and inf as floats again; a line that is no
    record of a logged step (cut short, no JSON object, a step or loss that is no number) is
    skipped (`metrics_problem` names it)."""
    return [record for _, record, _ in _metrics(run_dir) if record is not None]


def metrics_problem(run_dir: Path) -> str | None:
    """`metrics.jsonl line N: why` for its first line that `read_metrics` skips, else None."""
    return next((f"{METRICS} line {number}: {why}" for number, _, why in _metrics(run_dir)
                 if why), None)


def write_metrics(run_dir: Path, records: list[dict]) -> None:
    """metrics.jsonl holding exactly `records` (what a resumed run keeps of the run it
    continues), replaced whole."""
    write_whole(run_dir / METRICS, "".join(map(metrics_line, records)))


def curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, training loss) of every logged step, in step order (a step logged twice: the
    later line)."""
    losses = {row["step"]: float(row["loss"]) for row in read_metrics(run_dir) if "loss" in row}
    return sorted(losses.items())


def write_traceback(run_dir: Path, text: str) -> None:
    with contextlib.suppress(OSError):  # the disk that failed the job may be full
        (run_dir / TRACEBACK).write_text(text)


def save_checkpoint(run_dir: Path, state: dict, config_hash: str, step: int) -> None:
    """`checkpoint.pt` through a temporary file (a full disk never leaves half a checkpoint
    under its name), then `checkpoint.json` with its step and config hash."""
    import torch

    tmp = run_dir / (CHECKPOINT + ".tmp")
    try:
        with open(tmp, "wb") as f:  # closed at once on a failure: its space freed
            torch.save(state, f)
        tmp.replace(run_dir / CHECKPOINT)
    except RuntimeError as exc:  # how torch's writer reports a full disk
        tmp.unlink(missing_ok=True)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise OSError(f"cannot write {tmp}: {first} (its disk has "
                      f"{shutil.disk_usage(run_dir).free} bytes free without it)") from exc
    finally:
        tmp.unlink(missing_ok=True)
    write_json(run_dir / CHECKPOINT_META, {"config_hash": config_hash, "step": step})


def save_sharded_checkpoint(run_dir: Path, state: dict, config_hash: str, step: int) -> None:
    """`checkpoint.dcp/` (torch.distributed.checkpoint), written by every rank at once:
    each its own shards, so no rank holds the whole model. Written beside the last one and
    renamed over it by rank 0, which then writes `checkpoint.json`."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    tmp, old = (run_dir / (SHARDED_CHECKPOINT + suffix) for suffix in (".tmp", ".old"))
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if rank0:
        shutil.rmtree(tmp, ignore_errors=True)
    dcp.save(state, checkpoint_id=tmp)  # ends with a collective: every rank has written
    if rank0:
        if (run_dir / SHARDED_CHECKPOINT).exists():
            (run_dir / SHARDED_CHECKPOINT).replace(old)
        tmp.replace(run_dir / SHARDED_CHECKPOINT)
        shutil.rmtree(old, ignore_errors=True)
        write_json(run_dir / CHECKPOINT_META, {"config_hash": config_hash, "step": step})


def load_sharded_checkpoint(path: Path, state: dict) -> dict:
    """A `checkpoint.dcp/` read into `state` (the job's own state dict: its tensors, sharded
    as this job shards them, are filled in place), on any number of ranks."""
    import torch.distributed.checkpoint as dcp

    dcp.load(state, checkpoint_id=path)
    return state


def create(run_dir: Path, config_hash: str) -> None:
    """Make the run directory and list it in its folder's index (a new index also lists the
    runs already in the folder, written before indexes existed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    index = run_dir.parent / INDEX
    entries = _index_entries(index) if index.exists() else [
        (child.name, h) for child in sorted(run_dir.parent.iterdir())
        if child.is_dir() and child != run_dir and (h := _own_hash(child))]
    if (run_dir.name, config_hash) in entries:
        return
    new = ([] if index.exists() else entries) + [(run_dir.name, config_hash)]
    with contextlib.suppress(OSError), open(index, "a") as f:
        f.write("".join(json.dumps({"run": name, "config_hash": h}) + "\n" for name, h in new))


def _index_entries(index: Path) -> list[tuple[str, str]]:
    """(run directory name, config hash) of each readable line of a folder's index."""
    entries = []
    with contextlib.suppress(OSError):
        for line in index.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                entries.append((str(entry["run"]), str(entry["config_hash"])))
    return entries


def _own_hash(run_dir: Path) -> str | None:
    """The config hash a run directory's own files record."""
    for name in (SUMMARY, CHECKPOINT_META):
        found = read_json(run_dir / name)
        if isinstance(found, dict) and found.get("config_hash"):
            return found["config_hash"]
    return None


def outermost(roots: list[Path]) -> list[Path]:
    """The folders of `roots` that no other one holds (each searched once), sorted."""
    roots = {Path(root).resolve() for root in roots}
    return sorted(root for root in roots if not any(other in root.parents for other in roots))


def runs_by_hash(roots: list[Path]) -> dict[str, list[Path]]:
    """Every run directory under `roots`, by config hash: from each folder's index, and from
    the files of a run that no index lists."""
    found: dict[str, list[Path]] = {}
    for root in outermost(roots):
        for folder, dirs, files in os.walk(root):
            folder = Path(folder)
            listed = set()
            if INDEX in files:
                for name, h in _index_entries(folder / INDEX):
                    listed.add(name)
                    runs = found.setdefault(h, [])
                    if folder / name not in runs:
                        runs.append(folder / name)
            if SUMMARY in files or CHECKPOINT_META in files:  # an unlisted run: its own files
                h = _own_hash(folder)
                if h and folder not in found.get(h, []):
                    found.setdefault(h, []).append(folder)
                dirs[:] = []  # nothing under a run is a run
            dirs[:] = sorted(d for d in dirs if d not in listed)
    return found


def find_completed(roots: list[Path], config_hash: str) -> Path | None:
    """A run directory under `roots` whose summary says completed for this config (an
    original, not a copy reused from elsewhere)."""
    for run_dir in runs_by_hash(roots).get(config_hash, []):
        summary = read_summary(run_dir)
        if (summary and summary.get("status") == "completed"
                and summary.get("config_hash") == config_hash and "reused_from" not in summary):
            return run_dir
    return None


def find_outcomes(roots: list[Path], config_hashes: set[str]) -> dict[str, dict]:
    """For each of these configs, the summary of a finished (completed, else stalled or
    diverged) job under any of `roots`."""
    found: dict[str, dict] = {}
    for config_hash, run_dirs in runs_by_hash(roots).items():
        if config_hash not in config_hashes:
            continue
        for run_dir in run_dirs:
            summary = read_summary(run_dir)
            if (summary and summary.get("config_hash") == config_hash
                    and summary.get("status") in ("completed", "stalled", "diverged")
                    and found.get(config_hash, {}).get("status") != "completed"):
                found[config_hash] = summary
    return found


def find_checkpoints(roots: list[Path], config_hash: str) -> list[tuple[Path, int]]:
    """The run directories under `roots` with a checkpoint of this config, and its step:
    the most advanced first."""
    found = {}
    for run_dir in runs_by_hash(roots).get(config_hash, []):
        meta = read_json(run_dir / CHECKPOINT_META)
        if (meta and meta.get("config_hash") == config_hash
                and any((run_dir / name).exists() for name in (CHECKPOINT,
                                                               SHARDED_CHECKPOINT))):
            found[run_dir.resolve()] = meta["step"]
    return sorted(found.items(), key=lambda item: -item[1])


def copy_run(source: Path, run_dir: Path) -> None:
    """A completed run's metrics, reused by a job of the same config."""
    shutil.copy(source / METRICS, run_dir / METRICS)


def run_dirs(root: Path) -> set[Path]:
    """Every job directory under `root`: with a summary, or only Hydra's saved config (a job
    killed before it wrote one)."""
    return ({p.parent for p in root.rglob(SUMMARY)}
            | {p.parent.parent for p in root.rglob(".hydra/config.yaml")})
