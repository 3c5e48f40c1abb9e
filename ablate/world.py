"""Who this process is among a job's ranks, as its launcher says: read from the environment
here only, and importing no torch (the config check and the command line ask too)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0


def world_from_env() -> World:
    """What a launcher says this process is: torchrun, `accelerate launch` and our own
    `launch` set RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR, MASTER_PORT); a SLURM step
    with several tasks (srun, submitit) sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID."""
    env = os.environ
    if "WORLD_SIZE" in env:
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return World(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                     int(env.get("SLURM_LOCALID", 0)))
    return World()


def launched() -> bool:
    """Whether a launcher started this process as one of several ranks."""
    return world_from_env().size > 1
