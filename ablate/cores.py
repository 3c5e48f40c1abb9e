"""A job's share of this machine's CPU cores: the intra-op threads of each of its processes.

Jobs that run side by side (a joblib sweep's `n_jobs`, a job's `trainer.processes`) each get
an equal share, so that no two threads wait for one core: a two-thread process beside
another ran 12x slower on two cores. `trainer.threads` sets the count instead.
"""

from __future__ import annotations

import os


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask, as a scheduler sets it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def auto_threads(parallel_jobs: int, processes: int) -> int:
    """Threads for each of a job's `processes` while `parallel_jobs` such jobs run at once:
    an equal share of the cores, at least one; at most OMP_NUM_THREADS where it is set
    (joblib's workers have it set to their share, as does torchrun's)."""
    share = max(1, cores() // (parallel_jobs * processes))
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return min(share, int(limit)) if limit.isdigit() and int(limit) > 0 else share
