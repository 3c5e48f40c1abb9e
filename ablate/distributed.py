"""Data parallelism for one job: who this process is, the process group, the launcher of
`trainer.processes` workers, and the bucketed all-reduce that lets a fused backward step
each parameter on the gradient summed over all ranks while backward still runs.

Conventions: every rank's loss is its share of the global batch's mean (its targets' loss
sum divided by the global batch's target count), so gradients are SUMMED across ranks,
never averaged: the sum over ranks is the one-process gradient of the global batch.

Sharded training (FSDP2, ZeRO-3) would replace `BucketedAllReduce` by a reduce-scatter
whose shards reach the same per-parameter update (`OptimizerInBackward`'s hook); nothing
else here assumes replicated parameters except `broadcast_parameters`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections import deque
from datetime import timedelta
from typing import Callable

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from . import interrupt
from .world import World, launched, world_from_env  # noqa: F401 - re-exported

# How long a worker whose launcher died may take to stop at a step boundary and record it
# (SLURM's usual grace after SIGTERM) before it exits regardless.
ORPHAN_GRACE_S = 30


def setup(device_type: str, timeout_s: float) -> World:
    """The process group of this job's ranks (gloo on CPU, NCCL on CUDA), made once per
    process. A collective that waits longer than `timeout_s` for a rank raises, so a rank
    that hangs ends the job instead of blocking the others for ever."""
    world = world_from_env()
    if world.size == 1 or dist.is_initialized():
        return world
    if "MASTER_ADDR" not in os.environ:  # SLURM: rank 0's node, a port from the job id
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=world.rank,
                            world_size=world.size, timeout=timedelta(seconds=timeout_s))
    return world


class RankFailed(RuntimeError):
    """A worker of a `launch` raised or died; the message names the first one to fail."""

    def __init__(self, message: str, error_type: str, traceback_text: str):
        super().__init__(message)
        self.error_type, self.traceback_text = error_type, traceback_text


def launch(processes: int, fn: Callable, args: tuple, monitor_interval_s: float = 0.2):
    """Run `fn(*args)` in `processes` workers on this machine with torch's elastic launcher
    (what `torchrun --standalone` runs: a local rendezvous on a free port) and return rank
    0's result. When a worker raises or dies the launcher stops the others (SIGTERM, within
    `monitor_interval_s`) and this raises `RankFailed` naming the first failure. A signal
    that stops a job (SIGTERM, SIGINT: to this process or to a worker) stops every worker
    at one step boundary (the launcher passes it on, then waits up to 30 s) and this raises
    `Interrupted`. Workers whose launcher dies stop on their own (`watch`)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in list(logging.Logger.manager.loggerDict):  # a failure or a signal is raised,
        if name.startswith(("torch.distributed.elastic", "torch.multiprocessing")):  # with
            logging.getLogger(name).setLevel(logging.CRITICAL)  # what it needs to say
    stopping = interrupt.job_signals()
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes,
                          run_id=uuid.uuid4().hex, rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", max_restarts=0,
                          monitor_interval=monitor_interval_s, start_method="forkserver",
                          signals_to_handle=",".join(interrupt.name(s) for s in
                                                     [*stopping, signal.SIGHUP, signal.SIGQUIT]))
    # Workers fork from one server process that has imported the trainer once: a sweep's
    # jobs start their workers in well under a second instead of importing torch each.
    multiprocessing.set_forkserver_preload(["ablate.train"])
    handlers = {signum: signal.getsignal(signum) for signum in stopping}  # the launcher's
    try:  # own handlers replace these while it runs
        return elastic_launch(config, _worker)(fn, args, os.getpid())[0]
    except SignalException as exc:  # the workers have stopped, or been killed after 30 s
        raise interrupt.Interrupted(exc.sigval, None, None, False) from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode - 128 in stopping:  # a worker that a signal stopped
            raise interrupt.Interrupted(failure.exitcode - 128, None, None, False) from None
        data = (failure.error_file_data or {}).get("message")
        if isinstance(data, dict):  # the worker's exception, recorded by `record`
            error_type, _, text = data.get("message", "").partition(": ")
            trace = data.get("extraInfo", {}).get("py_callstack", "")
        else:
            error_type, trace = "WorkerDied", ""
            text = (f"killed by {failure.signal_name()}" if failure.exitcode < 0
                    else f"exit code {failure.exitcode}")
        raise RankFailed(f"rank {rank} of {processes}: {error_type}: {text}",
                         error_type, trace) from None
    finally:
        interrupt.restore(handlers)


@record
def _worker(fn: Callable, args: tuple, launcher_pid: int):
    """One worker of `launch`: the job (whose Trainer takes its share of the cores, ablate/
    cores.py); a signal that stopped it is its exit status (128 + the signal's number), for
    the launcher to see."""
    done = threading.Event()
    threading.Thread(target=watch, args=(launcher_pid, done), daemon=True).start()
    try:
        with interrupt.catching():
            return fn(*args)
    except interrupt.Interrupted as exc:
        raise SystemExit(exc.exit_code) from None
    finally:
        done.set()


def watch(launcher_pid: int, done: threading.Event, interval_s: float = 0.5) -> None:
    """A worker's watchdog: once the process that launched it is gone (killed, even by
    SIGKILL), the job stops at the next step boundary, recorded as failed (LAUNCHER_DIED),
    and this process exits: at once if the job is done (a finished worker would otherwise
    wait for ever for its launcher to collect its result), else after ORPHAN_GRACE_S."""
    import psutil

    try:
        launcher = psutil.Process(launcher_pid)
        while launcher.is_running() and launcher.status() != psutil.STATUS_ZOMBIE:
            time.sleep(interval_s)
    except psutil.NoSuchProcess:
        pass
    interrupt.note(interrupt.LAUNCHER_DIED)
    done.wait(ORPHAN_GRACE_S)
    os._exit(1)


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Rank 0's parameters on every rank (the same init, whatever each rank's RNG did)."""
    with torch.no_grad():
        for p in model.parameters():
            dist.broadcast(p, src=0)


def max_over_ranks(value: float) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """A small tensor summed over ranks (blocking); itself in a single process."""
    if dist.is_initialized():
        dist.all_reduce(value)
    return value


def sum_gradients_hook(state, bucket):  # DDP rejects string annotations (ours are)
    """DDP communication hook: sum the bucket (a GradBucket) over ranks, where DDP's own
    hook averages."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(
        lambda fut: fut.value()[0])


class BucketedAllReduce:
    """Sums gradients over ranks in buckets of about `bucket_bytes`, as DDP does, for a
    backward that steps each parameter as soon as its summed gradient is there.

    `ready(p, use)` (from p's post-accumulate-grad hook) files p's gradient; when every
    gradient of the next bucket is filed, the bucket is flattened (its gradients freed) and
    its all-reduce launched asynchronously. Buckets launch in one fixed order, the same on
    every rank. Each `ready` then hands out the buckets whose all-reduce has finished:
    `p.grad` becomes the summed gradient and `use()` runs (the update, or the fused
    backward files it for its group's update; either frees it), while backward goes on
    computing and later buckets are on the wire. At most `in_flight` buckets are on the wire
    at once (each a flat copy of its gradients): a launch beyond them first waits for the
    oldest and hands it out, so that memory does not grow with how far backward runs ahead
    of the network. `finish()` after backward launches what is left and waits for
    everything. Parameters are bucketed in reverse order, the order backward completes a
    transformer's gradients in.
    """

    def __init__(self, params: list[torch.nn.Parameter], bucket_bytes: int, in_flight: int):
        self.buckets: list[list[torch.nn.Parameter]] = [[]]
        size = 0
        for p in reversed(params):
            if size and size + p.numel() * p.element_size() > bucket_bytes:
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += p.numel() * p.element_size()
        self.bucket_of = {p: i for i, bucket in enumerate(self.buckets) for p in bucket}
        self._filed: list[dict] = [{} for _ in self.buckets]  # per bucket: param -> use
        self._next = 0  # the next bucket to launch
        self._in_flight: deque = deque()
        self.max_in_flight = in_flight

    def ready(self, p: torch.nn.Parameter, use: Callable[[], None]) -> None:
        self._filed[self.bucket_of[p]][p] = use
        while (self._next < len(self.buckets)
               and len(self._filed[self._next]) == len(self.buckets[self._next])):
            self._launch()
        self._hand_out(wait=False)

    def finish(self) -> None:
        """Launch the buckets not yet full (a parameter without a gradient adds zeros and
        is not used) and hand out every bucket."""
        while self._next < len(self.buckets):
            self._launch()
        self._hand_out(wait=True)
        self._next = 0

    def _launch(self) -> None:
        if len(self._in_flight) == self.max_in_flight:
            self._hand_out_oldest()
        params, filed = self.buckets[self._next], self._filed[self._next]
        flat = torch.cat([p.grad.reshape(-1) if p in filed else p.new_zeros(p.numel())
                          for p in params])
        for p in filed:
            p.grad = None
        work = dist.all_reduce(flat, async_op=True)
        self._in_flight.append((params, filed, flat, work))
        self._filed[self._next] = {}
        self._next += 1

    def _hand_out(self, wait: bool) -> None:
        while self._in_flight and (wait or self._in_flight[0][3].is_completed()):
            self._hand_out_oldest()

    def _hand_out_oldest(self) -> None:
        params, filed, flat, work = self._in_flight.popleft()
        work.wait()
        for p, chunk in zip(params, flat.split([p.numel() for p in params])):
            if p in filed:
                p.grad = chunk.view_as(p)
                filed[p]()  # which frees it, now or with its group's update
