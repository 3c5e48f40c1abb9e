"""A joblib sweep of two jobs against each job run alone at one thread: the TGS each job
keeps when it shares the machine with another (issue 24: within 10% on two cores).

    python scripts/bench_sweep_threads.py [--rounds 2] [--dir /tmp/bench_sweep_threads]
        [overrides ...]

Each round runs, one after the other, the two jobs alone (`trainer.threads=1`, so a job
alone computes as it does in the sweep) and then the same two jobs as one
`hydra/launcher=joblib hydra.launcher.n_jobs=2` sweep, which leaves the thread count to
`ablate/cores.py`. The jobs are the default job's (any overrides given are added) at seeds 0
and 1, short, not resumed. Figures: each job's median TGS alone and in the sweep over the
rounds, and their ratio; its threads as its summary records them. An idle machine is assumed:
other load slows the sweep's two jobs more than one job alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

JOB = ["trainer.max_steps=40", "trainer.eval_batches=2", "trainer.tgs_warmup_steps=5",
       "logger.wandb.mode=disabled", "resume=false", "trainer.progress=false"]
SEEDS = (0, 1)


def ablate(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ablate", *args], check=True,
                   stdout=subprocess.DEVNULL)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench_sweep_threads"))
    args, overrides = parser.parse_known_args()
    job = [*JOB, *overrides]
    alone = {seed: [] for seed in SEEDS}
    swept = {seed: [] for seed in SEEDS}
    threads = {}
    for r in range(args.rounds):
        for seed in SEEDS:
            run_dir = args.dir / f"round{r}" / f"alone{seed}"
            ablate(*job, f"trainer.seed={seed}", "trainer.threads=1", f"hydra.run.dir={run_dir}")
            alone[seed].append(summary(run_dir)["tgs"])
        sweep_dir = args.dir / f"round{r}" / "sweep"
        ablate("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *job,
               f"trainer.seed={','.join(map(str, SEEDS))}", f"hydra.sweep.dir={sweep_dir}")
        for run_dir in sorted(p for p in sweep_dir.iterdir() if (p / "summary.json").exists()):
            s = summary(run_dir)
            swept[s["seed"]].append(s["tgs"])
            threads[s["seed"]] = s["threads"]
    print(f"{'job':<8}{'threads':>8}{'TGS alone':>12}{'TGS in sweep':>14}{'ratio':>8}")
    for seed in SEEDS:
        a, s = statistics.median(alone[seed]), statistics.median(swept[seed])
        print(f"{'seed ' + str(seed):<8}{threads[seed]:>8}{a:>12.0f}{s:>14.0f}{s / a:>8.3f}")


if __name__ == "__main__":
    main()
