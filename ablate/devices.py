"""One GPU per job of a parallel sweep on a machine with several (`hydra/launcher=joblib`).

Job i tries GPU i mod (GPUs) first, then the others, and holds the first one no other job of
its sweep holds (an exclusive lock file in the sweep directory, released when the job ends
or its process dies), so jobs that finish early never leave two jobs on one GPU. More
parallel jobs than GPUs is refused before the sweep starts unless `share_gpus=true`; then
job i runs on GPU i mod (GPUs), shared. The submitit launchers need none of this: SLURM gives
each job the GPUs its `gpus_per_node` / `gpus_per_task` ask for.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from .errors import ConfigError


def parallel_jobs(launcher: DictConfig) -> int:
    """Jobs the launcher runs at once on this machine: joblib's `n_jobs` (negative: counted
    from the cores, as joblib counts them); 1 for the others (basic runs one at a time,
    submitit's jobs get their GPUs from the scheduler)."""
    if not launcher._target_.endswith("JoblibLauncher") or launcher.n_jobs == 0:
        return 1
    from joblib import effective_n_jobs

    return effective_n_jobs(launcher.n_jobs)


def gpu_count(device: str) -> int:
    """GPUs here that jobs with `trainer.device=device` would use (none on `cpu`)."""
    import torch

    return torch.cuda.device_count() if device != "cpu" else 0


def check_parallel_jobs(n_jobs: int, gpus: int, share_gpus: bool) -> None:
    """Refuse more jobs at once than GPUs (on a GPU machine) unless sharing was asked for."""
    if gpus and n_jobs > gpus and not share_gpus:
        raise ConfigError(f"hydra.launcher.n_jobs={n_jobs}: more parallel jobs than the {gpus} "
                          f"GPU(s) here (allowed: at most {gpus}, one GPU per job; or "
                          "share_gpus=true to let jobs share them)")


def gpu_order(job_num: int, gpus: int) -> list[int]:
    """The GPUs job `job_num` tries, its own (the job number modulo the GPUs) first."""
    return [(job_num + k) % gpus for k in range(gpus)]


@contextlib.contextmanager
def claimed_gpu(job_num: int, gpus: int, share_gpus: bool, lock_dir: Path) -> Iterator[int]:
    """The GPU this job runs on, held (a lock on `lock_dir/gpu<i>.lock`) while the block
    runs. Shared: the job's own GPU, no lock. All held (only when jobs of another sweep share
    the folder): wait for the job's own."""
    order = gpu_order(job_num, gpus)
    if share_gpus:
        yield order[0]
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    for blocking in (False, True):
        for gpu in order[:1] if blocking else order:
            handle = open(lock_dir / f"gpu{gpu}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield gpu
            finally:
                handle.close()  # closing releases the lock
            return


@contextlib.contextmanager
def sweep_job_gpu(job_num: int, device: str, launcher: DictConfig, share_gpus: bool,
                  sweep_dir: Path) -> Iterator[None]:
    """A sweep job's GPU, made the current CUDA device before the trainer touches CUDA
    (`trainer.device=auto` and `cuda` then mean it), when jobs run in parallel on several."""
    gpus = gpu_count(device)
    if gpus < 2 or parallel_jobs(launcher) < 2:
        yield
        return
    import torch

    with claimed_gpu(job_num, gpus, share_gpus, sweep_dir / ".gpus") as gpu:
        torch.cuda.set_device(gpu)
        yield
