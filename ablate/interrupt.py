"""SIGTERM and SIGINT (and, in a submitit job, its preemption signal) end a job at a step
boundary: the handler only notes the signal; the train loop looks before each step, writes
a checkpoint if the job checkpoints, records `status: interrupted`, and the job raises
`Interrupted`. No update is ever half applied when a job stops.

A handler that was there before ours (submitit's checkpoint-and-requeue on SIGUSR2) gets
the signal once the job has stopped, so submitit requeues a job whose checkpoint is written.
The death of the process that launched a worker is noted the same way, as `LAUNCHER_DIED`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

# Not a signal: the process that launched this worker is gone (see distributed.watch).
LAUNCHER_DIED = 256

_noted: list[int] = []


class Interrupted(BaseException):
    """A job stopped by a signal (a request to stop, not an error: a BaseException, as
    KeyboardInterrupt, so that nothing between the job and the command line records it as
    a failure)."""

    def __init__(self, signum: int, step: int | None, run_dir, checkpointed: bool):
        super().__init__(signum, step, run_dir, checkpointed)
        self.signum, self.step, self.run_dir, self.checkpointed = (signum, step, run_dir,
                                                                   checkpointed)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        after = "continues from its checkpoint" if self.checkpointed else (
            "starts again (trainer.checkpoint_every=0: no checkpoint)")
        return (f"interrupted by {name(self.signum)} after step {self.step}: recorded in "
                f"{self.run_dir}/summary.json; the same command again {after}")


def name(signum: int) -> str:
    return signal.Signals(signum).name


def noted() -> int:
    """The first stop request noted during this job (a signal number), 0 if none."""
    return _noted[0] if _noted else 0


def note(signum: int, frame=None) -> None:
    _noted.append(signum)


def job_signals() -> list[int]:
    """The signals that stop a job: SIGTERM, SIGINT, and in a submitit job its preemption
    and time-limit signal (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise)."""
    signals = [signal.SIGTERM, signal.SIGINT]
    if os.environ.get("SUBMITIT_EXECUTOR"):
        signals.append(getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")))
    return signals


@contextlib.contextmanager
def catching():
    """Within: the job's signals are noted, not acted on (in the main thread; elsewhere
    signals cannot be handled and nothing changes). When the job ends `Interrupted` by a
    signal that had a handler of its own before (submitit's), that handler runs now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in job_signals()}
    _noted.clear()
    for signum in previous:
        signal.signal(signum, note)
    try:
        yield
    except Interrupted as exc:
        restore(previous)
        handler = previous.get(exc.signum)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(exc.signum, None)  # submitit: checkpoint the submission, requeue, exit
        raise
    finally:
        restore(previous)


def restore(handlers: dict) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def outcome(stopped_by: int, step: int) -> dict:
    """The summary's fields for a job stopped early at `step`."""
    if stopped_by == LAUNCHER_DIED:
        return {"status": "failed", "error_type": "LauncherDied",
                "error": f"the process that launched this job's workers died (at step {step})"}
    return {"status": "interrupted", "signal": name(stopped_by), "step": step}
