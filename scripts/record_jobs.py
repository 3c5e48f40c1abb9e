"""Record a fixed set of small jobs, so that a restructure of the code (modules moved, no
behaviour change) can be shown to give bit-identical numbers before and after.

    python scripts/record_jobs.py --tree DIR --out FILE.json [--only NAME ...]
    python scripts/record_jobs.py --compare BEFORE.json AFTER.json

The first form runs every job (or the named ones, and the jobs they need) with `python -m
ablate`, the code taken from DIR only, on CPU in a fresh temporary folder, one job after
another (about 4 min on 2 loaded cores), and writes, per job, each run's summary without
its timings, memory measurements and paths, and its metrics.jsonl rows without their
timings. The second prints one line per job of BEFORE (`same`, or the first difference)
and exits 1 if any differs. Numbers are compared exactly (JSON keeps a float's every bit);
only the summary keys present in BEFORE are compared, so fields added after the
restructure do not count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

MODEL = ["model.hidden_size=64", "model.intermediate_size=128", "model.num_layers=2",
         "model.num_heads=2"]
TRAINER = ["trainer.seq_len=32", "trainer.batch_size=4", "trainer.max_steps=6",
           "trainer.warmup_steps=2", "trainer.eval_batches=2", "trainer.log_interval=1",
           "trainer.eval_interval=3", "trainer.tgs_warmup_steps=1"]
TINY = [*MODEL, "task.vocab_size=512", *TRAINER]  # GLUE: the pretrained model brings both
OPTIMIZERS = {name: [f"optimizer={name}"] for name in ("adamw", "sgd", "lomo", "adalomo")}
OPTIMIZERS["galore_adamw"] = GALORE = ["optimizer=galore_adamw", "optimizer.rank=8",
                                       "optimizer.update_proj_gap=3"]
FUSED = {"fused": "toggles.fused_backward=true", "unfused": "toggles.fused_backward=false"}

# name -> overrides. A name's run directory is runs/NAME, or sweeps/NAME/N for a sweep (-m).
JOBS = {
    **{f"{name}_{mode}": [*TINY, *choice, toggle]
       for name, choice in OPTIMIZERS.items() for mode, toggle in FUSED.items()},
    "adalomo_no_nmf": [*TINY, "optimizer=adalomo", "toggles=no_nmf"],
    "galore_random_proj": [*TINY, *GALORE, "toggles=random_proj"],
    # 2 variants x 2 seeds x 2 lr factors: seed 0 runs both factors, seed 1 only the one
    # chosen on seed 0's validation loss (the other recorded as skipped).
    "tuned_sweep": ["-m", *TINY, "optimizer=adalomo", "toggles=all,no_grouped_norm",
                    "+tune=lr", "tune.lr_factors=[0.5,1]", "trainer.seed=0,1"],
    "glue_sst2": [*TRAINER, "task=glue", "task.name=sst2", "task.path=glue/sst2",
                  "task.config_name=null", "task.val_size=16",
                  "model.pretrained=runs/adamw_fused/model"],
    "instruct_local": [*TINY, "task=instruct_local", "task.include=[a*.py,b*.py]",
                       "task.heldout_every=3", "trainer.seq_len=256"],
    "adalomo_processes_2": [*TINY, "optimizer=adalomo", "trainer.processes=2"],
}
JOBS["adamw_fused"].append("trainer.save_model=true")
NEEDS = {"glue_sst2": "adamw_fused"}  # its model.pretrained is that job's saved model

# Summary keys that change from run to run: timings, memory measurements, paths (and
# `sweep` where it is the sweep's directory, not a preset's name).
UNSTABLE = {"tgs", "train_s", "wall_s", "peak_memory_gb", "wandb_file", "model_dir", "device",
            "reused_from", "resumed_from"}
TIMINGS = {"tgs", "elapsed"}  # of a metrics.jsonl row


def write_sst2(folder: Path) -> None:
    """An SST-2-like folder (train.tsv, validation.tsv) whose label is the sentence's tone."""
    rng = random.Random(0)
    words = {1: "good great fine lovely".split(), 0: "bad awful dull boring".split()}
    filler = "the a movie film plot was is very and but".split()
    folder.mkdir(parents=True)
    for split, n in (("train", 96), ("validation", 40)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randrange(2)
            sentence = rng.choices(filler, k=4) + [rng.choice(words[label])]
            rng.shuffle(sentence)
            rows.append(f"{' '.join(sentence)}\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")


def run_dirs(root: Path, name: str, overrides: list[str]) -> list[Path]:
    if overrides[0] != "-m":
        return [root / "runs" / name]
    jobs = [d for d in (root / "sweeps" / name).iterdir() if d.name.isdigit()]
    return sorted(jobs, key=lambda d: int(d.name))


def read_run(run_dir: Path, root: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.exists() else []  # none if skipped
    rows = [json.loads(line) for line in lines]
    return {"summary": {k: v for k, v in summary.items()
                        if k not in UNSTABLE and not (k == "sweep" and (root / str(v)).is_dir())},
            "metrics": [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]}


def record(tree: Path, out: Path, names: list[str]) -> None:
    # `ablate` is a namespace package (no __init__.py), and the venv's editable install puts
    # its own checkout on sys.path: a module missing from DIR (moved, but still imported
    # from its old place) would silently be imported from that checkout. -S (no site, no
    # .pth files; spawned processes inherit it) leaves only DIR and the venv's packages.
    path = os.pathsep.join([str(tree.resolve()), sysconfig.get_paths()["purelib"]])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    recorded, start = {}, time.monotonic()
    with tempfile.TemporaryDirectory(prefix="record_jobs_") as tmp:
        root = Path(tmp)
        write_sst2(root / "glue" / "sst2")
        for name in names:
            overrides = JOBS[name]
            # Paths relative to the temporary folder, so the overrides in the summaries are
            # the same whatever folder it is; resume=false: no job reuses another's run.
            where = ([f"hydra.sweep.dir=sweeps/{name}"] if overrides[0] == "-m" else
                     [f"hydra.run.dir=runs/{name}"])
            began = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-S", "-m", "ablate", *overrides, *where, "outputs_dir=outputs",
                 "task.cache_dir=cache", "resume=false", "logger.wandb.mode=disabled",
                 "trainer.device=cpu", "trainer.progress=false"],
                cwd=root, env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"record_jobs: {name} exited {done.returncode}:\n{done.stderr[-3000:]}")
            recorded[name] = [read_run(d, root) for d in run_dirs(root, name, overrides)]
            statuses = " ".join(run["summary"]["status"] for run in recorded[name])
            print(f"{name}: {statuses} ({time.monotonic() - began:.1f} s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"{len(names)} jobs in {time.monotonic() - start:.0f} s: {out}")


def same(a, b) -> bool:
    """Exact equality, as JSON writes them (NaN equals NaN, -0.0 is not 0.0)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def first_difference(before: list[dict], after: list[dict] | None) -> str | None:
    if after is None:
        return "missing from AFTER"
    if len(before) != len(after):
        return f"{len(before)} runs != {len(after)} runs"
    for i, (old, new) in enumerate(zip(before, after)):
        for key, value in old["summary"].items():
            if not same(value, new["summary"].get(key)):
                return f"run {i} summary {key}: {value!r} != {new['summary'].get(key)!r}"
        if len(old["metrics"]) != len(new["metrics"]):
            return f"run {i}: {len(old['metrics'])} metrics rows != {len(new['metrics'])}"
        for row, new_row in zip(old["metrics"], new["metrics"]):
            for key, value in row.items():
                if not same(value, new_row.get(key)):
                    return (f"run {i} step {row.get('step')} {key}: "
                            f"{value!r} != {new_row.get(key)!r}")
    return None


def compare(before_file: Path, after_file: Path) -> int:
    before, after = (json.loads(Path(f).read_text()) for f in (before_file, after_file))
    differ = 0
    for name, runs in before.items():
        difference = first_difference(runs, after.get(name))
        differ += difference is not None
        print(f"{name}: {difference or 'same'}")
    print(f"{len(before)} jobs: " + (f"{differ} differ" if differ else f"{len(before)} identical"))
    return 1 if differ else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, help="the checkout whose `ablate` runs the jobs")
    parser.add_argument("--out", type=Path, help="the JSON file to write")
    parser.add_argument("--only", nargs="+", choices=JOBS, metavar="NAME",
                        help=f"run only these jobs (of: {', '.join(JOBS)})")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if not (args.tree and args.out):
        parser.error("--tree and --out are needed (or --compare BEFORE AFTER)")
    names = set(args.only or JOBS)
    names |= {NEEDS[name] for name in names if name in NEEDS}
    record(args.tree, args.out, [name for name in JOBS if name in names])


if __name__ == "__main__":
    main()
