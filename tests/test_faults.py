"""Faults that lose nothing: resume from wherever earlier work was written, unreadable
checkpoints set aside, write failures recorded, runs stuck after a blow-up marked."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from ablate import train
from ablate.job import run_job
from ablate.report.__main__ import report
from ablate.runstore import read_metrics
from ablate.train import Trainer
from conftest import TINY, losses, run_in_process


@pytest.fixture
def sweep(tmp_path, cache_dir):
    """`python -m ablate -m ARGS` (tiny settings) in tmp_path, in this process: exit status
    and stdout."""
    def run(*args: str) -> tuple[int, str]:
        code, out, err = run_in_process(tmp_path, "-m", *TINY, f"task.cache_dir={cache_dir}",
                                        "trainer.max_steps=3", *args)
        return code, out + err
    return run


def summaries(sweep_dir: Path) -> list[dict]:
    return [json.loads((sweep_dir / str(i) / "summary.json").read_text())
            for i in range(len(list(sweep_dir.glob("*/summary.json"))))]


@pytest.mark.slow
def test_resume_finds_a_sweep_written_outside_outputs_dir(sweep, tmp_path):
    first, second = tmp_path / "elsewhere" / "first", tmp_path / "elsewhere" / "second"
    code, out = sweep("trainer.seed=0,1", f"hydra.sweep.dir={first}")
    assert code == 0 and out.count("resume: no earlier work of config") == 2
    code, out = sweep("trainer.seed=0,1", f"hydra.sweep.dir={second}")  # same parent
    assert code == 0 and out.count("resume: reused the completed run") == 2
    assert [s["reused_from"] for s in summaries(second)] == [str(first / "0"), str(first / "1")]
    assert losses(second / "1") == losses(first / "1")
    # Anywhere else, named by resume_from.
    third = tmp_path / "third"
    code, out = sweep("trainer.seed=0", f"hydra.sweep.dir={third}", f"resume_from=[{first}]")
    assert code == 0 and summaries(third)[0]["reused_from"] == str(first / "0")
    assert not (tmp_path / "outputs").exists()  # outputs_dir never held any of them


def test_checkpoint_and_log_settings_keep_the_config(sweep, tmp_path):
    """Turning checkpoints on (or logging more often) for a config that ran without them is
    the same config: same hash, same label, reused. The sweeps' folders are named: two
    sweeps in one second get folders of the same time, in the order of a random suffix."""
    first, second = (tmp_path / "outputs" / "multirun" / name for name in ("first", "second"))
    sweep("trainer.seed=0", "trainer.checkpoint_every=0", f"hydra.sweep.dir={first}")
    code, out = sweep("trainer.seed=0", "trainer.checkpoint_every=2", "trainer.log_interval=2",
                      "trainer.eval_interval=1", f"hydra.sweep.dir={second}")
    before, after = summaries(first)[0], summaries(second)[0]
    assert after["config_hash"] == before["config_hash"]
    assert after["variant"] == before["variant"]
    assert after["reused_from"] == str(first / "0") and "resume: reused" in out


def fail_at(monkeypatch, step: int) -> None:
    """The job raises when it reaches `step` (after the checkpoints before it)."""
    real = train.Trainer.train_step

    def train_step(self):
        if self.step == step:
            raise RuntimeError(f"killed at step {step}")
        return real(self)
    monkeypatch.setattr(train.Trainer, "train_step", train_step)


def test_unreadable_checkpoint_is_set_aside_and_the_next_good_one_used(
        tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("trainer.checkpoint_every=2")
    run_job(cfg, tmp_path / "uninterrupted", [])
    for run, step in (("a", 3), ("b", 5)):  # a good checkpoint at step 2; one at step 4,
        with monkeypatch.context() as patch:  # then cut short:
            fail_at(patch, step)
            with pytest.raises(RuntimeError):
                run_job(cfg, tmp_path / "earlier" / run, [])
    broken = tmp_path / "earlier" / "b" / "checkpoint.pt"
    broken.write_bytes(broken.read_bytes()[:1000])

    with pytest.warns(UserWarning, match=re.escape(f"cannot read checkpoint {broken} ")):
        summary = run_job(cfg, tmp_path / "resumed", [], resume_from=[tmp_path / "earlier"])
    assert summary["status"] == "completed"
    assert summary["resumed_from"] == {"run_dir": str(tmp_path / "earlier" / "a"), "step": 2}
    assert losses(tmp_path / "resumed") == losses(tmp_path / "uninterrupted")
    assert not broken.exists() and broken.with_suffix(".pt.unreadable").exists()  # set aside


def test_write_failure_mid_job_is_recorded_and_loses_nothing_earlier(
        tiny_cfg, tmp_path, monkeypatch):
    """A full disk at the second checkpoint: the job is failed with the reason, the first
    checkpoint and the logged metrics are intact, no partial file is left."""
    real_save, saves = torch.save, []

    def save(obj, file):
        saves.append(obj["step"])
        if len(saves) == 2:
            file.write(b"half a checkpoint")  # what a full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, file)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError):
        run_job(tiny_cfg("trainer.checkpoint_every=2"), tmp_path, [])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error_type"] == "OSError"
    assert "No space left on device" in summary["error"]
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 2
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 2
    assert len(losses(tmp_path)) == 4  # steps 1-4 logged before the failing checkpoint
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []


def test_sweep_goes_on_after_a_job_fails_to_write(sweep, tmp_path, monkeypatch):
    real_save = torch.save

    def save(obj, file):  # the first checkpoint (job #0's) fails; the disk then has room
        monkeypatch.setattr(torch, "save", real_save)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", save)
    code, out = sweep("trainer.seed=0,1", "trainer.checkpoint_every=2")
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    failed, done = summaries(sweep_dir)
    assert failed["status"] == "failed" and "No space left on device" in failed["error"]
    assert done["status"] == "completed"
    assert code == 1 and "ablate: 1 job(s) failed" in out


def at_steps(monkeypatch, actions: dict) -> None:
    """`actions[k](model)` runs (without grad) just before the job's step k + 1."""
    real = train.Trainer.train_step

    def train_step(self):
        if self.step in actions:
            with torch.no_grad():
                actions[self.step](self.model)
        return real(self)
    monkeypatch.setattr(train.Trainer, "train_step", train_step)


def test_run_stuck_at_uniform_loss_after_a_blow_up_is_stalled(tiny_cfg, tmp_path, monkeypatch):
    """A blow-up and a stall made on purpose, so that no CPU's rounding decides them: the
    output weights scaled 1000-fold before step 3 (logits in the hundreds: a loss far above
    2 ln(vocab)), zeroed before step 4 (every logit 0: a loss of exactly ln(vocab)); the lr
    is so small that the logits stay near 0 for the last steps."""
    head = lambda model: model.get_output_embeddings().weight  # noqa: E731
    cfg = tiny_cfg("optimizer=sgd", "trainer.lr=1e-3", "trainer.schedule=constant",
                   "trainer.warmup_steps=0", "trainer.max_steps=6")
    with monkeypatch.context() as patch:
        at_steps(patch, {2: lambda model: head(model).mul_(1e3),
                         3: lambda model: head(model).zero_()})
        summary = run_job(cfg, tmp_path / "0", [])
    curve = losses(tmp_path / "0")
    assert len(curve) == 6 and curve[2] > 10 * math.log(512)  # it blew up ...
    assert curve[3] == pytest.approx(math.log(512), abs=1e-6)  # ... to uniform, and stuck:
    assert summary["final_train_loss"] == pytest.approx(math.log(512), abs=train.STALL_TOL / 10)
    assert summary["status"] == "stalled"
    run_job(tiny_cfg("optimizer=sgd"), tmp_path / "1", [])
    text = report(tmp_path, tmp_path / "report")
    assert "1 stalled" in text and "stalled: loss blew up, then stuck at ln(vocab)" in text


# Signals, orphans, re-runs and the model save (issue 21). A job is started as the real
# command in a session of its own, signalled once its metrics show step 3, and the same
# command again must end with the losses of a run that never stopped, each step once.
SIGNALLED = ["trainer.max_steps=40", "trainer.checkpoint_every=30"]


def start(cwd: Path, *args: str) -> subprocess.Popen:
    """`python -m ablate ARGS` in a new session (its process group: what Ctrl-C reaches)."""
    return subprocess.Popen([sys.executable, "-m", "ablate", *map(str, args)], cwd=cwd,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_for_step(metrics: Path, step: int, job: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not any(r.get("step", 0) >= step for r in read_metrics(metrics.parent)):
        assert job.poll() is None, job.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def train_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir) if "loss" in r]


UNINTERRUPTED: dict[int, list[float]] = {}  # steps: losses, made once per test process


def uninterrupted(tiny_cfg, steps: int) -> list[float]:
    """The losses of a run that never stopped (one process, the same global batch of 4)."""
    if steps not in UNINTERRUPTED:
        trainer = Trainer(tiny_cfg(f"trainer.max_steps={steps}"))
        UNINTERRUPTED[steps] = [trainer.train_step().item() for _ in range(steps)]
    return UNINTERRUPTED[steps]


@pytest.mark.slow
@pytest.mark.parametrize("name, processes", [("SIGTERM", 1), ("SIGTERM", 2), ("SIGINT", 2)])
def test_a_signal_is_recorded_and_the_same_command_resumes(tmp_path, tiny_args, tiny_cfg, name,
                                                           processes):
    """SIGTERM to the command's process (as `kill` or SLURM sends it), SIGINT to its whole
    process group (as Ctrl-C does). It stops at a step boundary with a checkpoint, one line
    and exit status 128 + signal; again, into the same run directory (SIGTERM) or a new one
    (SIGINT), it continues from that step."""
    signum = getattr(signal, name)
    first = tmp_path / "first"
    args = [*tiny_args, *SIGNALLED, f"trainer.processes={processes}",
            f"trainer.batch_size={4 // processes}"]
    job = start(tmp_path, *args, f"hydra.run.dir={first}")
    wait_for_step(first / "metrics.jsonl", 3, job)
    if name == "SIGINT":
        os.killpg(job.pid, signum)
    else:
        job.send_signal(signum)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 128 + signum, err
    summary = json.loads((first / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == name, summary
    step = summary["step"]
    assert 3 <= step < 40 and summary["steps"] == step
    assert json.loads((first / "checkpoint.json").read_text())["step"] == step
    assert train_steps(first) == list(range(1, step + 1))
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"ablate: interrupted by {name} after step {step}: ") and (
        "Traceback" not in err and "KeyboardInterrupt" not in err), err

    again = first if name == "SIGTERM" else tmp_path / "again"
    code, out, err = run_in_process(tmp_path, *args, f"hydra.run.dir={again}")
    assert code == 0, err
    assert processes > 1 or (  # a worker prints it, to the process's own stdout
        f"resume: continuing from {first / 'checkpoint.pt'} at step {step}" in out)
    summary = json.loads((again / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["resumed_from"] == {"run_dir": str(first), "step": step}
    assert train_steps(again) == list(range(1, 41))  # each step once
    want = uninterrupted(tiny_cfg, 40)
    assert losses(again) == (want if processes == 1 else pytest.approx(want, rel=1e-5))


def alive_in_group(pgid: int) -> list[str]:
    """The processes of a process group that are still running (not zombies)."""
    alive = []
    for process in psutil.process_iter(["status", "cmdline"]):
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {' '.join(process.info['cmdline'])[:80]}")
    return alive


@pytest.mark.slow
def test_workers_of_a_killed_launcher_stop_and_record_the_job_failed(tmp_path, tiny_args):
    """SIGKILL of a 2-process job's launcher (nothing of it runs after): its workers, the
    forkserver and the resource tracker are gone within 10 s; rank 0 recorded the job."""
    run = tmp_path / "run"
    job = start(tmp_path, *tiny_args, "trainer.max_steps=400", "trainer.checkpoint_every=300",
                "trainer.processes=2", "trainer.batch_size=2", f"hydra.run.dir={run}")
    wait_for_step(run / "metrics.jsonl", 3, job)
    assert len(alive_in_group(job.pid)) == 5  # launcher, 2 workers, forkserver, tracker
    job.kill()
    job.communicate()
    deadline = time.monotonic() + 10
    while alive_in_group(job.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive_in_group(job.pid) == []
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error_type"] == "LauncherDied"
    assert summary["error"].startswith("the process that launched this job's workers died")
    assert json.loads((run / "checkpoint.json").read_text())["step"] == summary["steps"]


def test_a_model_that_cannot_be_saved_fails_the_job(tiny_args, tmp_path, monkeypatch):
    """RUN_DIR/model a file (transformers' save_pretrained would only log it), then a save
    that writes nothing: each job is failed with the reason and one line; never completed."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model").write_text("in the way")
    code, out, err = run_in_process(tmp_path, *tiny_args, "trainer.save_model=true",
                                    "logger.wandb.mode=disabled", f"hydra.run.dir={run}")
    summary = json.loads((run / "summary.json").read_text())
    assert code == 1 and summary["status"] == "failed", summary
    assert summary["error_type"] == "FileExistsError" and "model" in summary["error"]
    assert err.splitlines() == [f"ablate: error: the job failed: FileExistsError: "
                                f"{summary['error']} (see {run / 'traceback.txt'})"]
    assert "model_dir" not in summary

    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", lambda *a, **k: None)
    code, out, err = run_in_process(tmp_path, *tiny_args, "trainer.save_model=true",
                                    "logger.wandb.mode=disabled",
                                    f"hydra.run.dir={tmp_path / 'nothing'}")
    summary = json.loads((tmp_path / "nothing" / "summary.json").read_text())
    assert code == 1 and summary["status"] == "failed" and summary["error_type"] == "OSError"
    assert summary["error"] == ("saving the model left no config.json and weights in "
                                f"{tmp_path / 'nothing' / 'model'}")


@pytest.mark.slow
def test_the_same_command_again_reuses_its_completed_run(tiny_args, tmp_path):
    """A single run again, into its own directory or a new one, and a sweep again into its
    own directory: nothing is trained twice; `resume=false` trains."""
    tiny_args = [*tiny_args, "logger.wandb.mode=disabled"]
    first = ["trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'first'}"]
    assert run_in_process(tmp_path, *tiny_args, *first)[0] == 0
    code, out, _ = run_in_process(tmp_path, *tiny_args, *first)
    assert code == 0 and f"resume: {tmp_path / 'first'} holds the completed run" in out
    code, out, _ = run_in_process(tmp_path, *tiny_args, "trainer.max_steps=3",
                                  f"hydra.run.dir={tmp_path / 'second'}")  # beside the first
    assert code == 0 and f"resume: reused the completed run {tmp_path / 'first'}" in out
    code, out, _ = run_in_process(tmp_path, *tiny_args, *first, "resume=false")
    assert code == 0 and "resume:" not in out and len(losses(tmp_path / "first")) == 3

    sweep = ["-m", *tiny_args, "trainer.max_steps=3", "trainer.seed=1,2",
             f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert run_in_process(tmp_path, *sweep)[0] == 0
    code, out, _ = run_in_process(tmp_path, *sweep)
    assert code == 0 and out.count("holds the completed run") == 2, out


@pytest.mark.slow
def test_submitit_requeues_a_preempted_job_that_resumes_from_its_checkpoint(
        tmp_path, tiny_args, tiny_cfg):
    """submitit's preemption and time-limit signal (SIGUSR2: what SLURM sends before the time
    limit, and submitit's local `_interrupt`) to a `submitit_local` job: it stops at a step
    boundary with a checkpoint, submitit requeues it, and it continues in its own directory
    from that step to the losses of an uninterrupted run, each step once."""
    sweep = tmp_path / "sweep"
    job = start(tmp_path, "-m", *tiny_args, *SIGNALLED, "hydra/launcher=submitit_local",
                "logger.wandb.mode=disabled", f"hydra.sweep.dir={sweep}")
    wait_for_step(sweep / "0" / "metrics.jsonl", 3, job)
    (task,) = [p for p in psutil.Process(job.pid).children(recursive=True)
               if "submitit.core._submit" in p.cmdline()]
    task.send_signal(signal.SIGUSR2)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["resumed_from"]["run_dir"] == str(sweep / "0")
    assert summary["resumed_from"]["step"] >= 3
    (log,) = (sweep / ".submitit").glob("*/*_0_log.err")
    assert "Caught signal SIGUSR2" in log.read_text()  # submitit's handler ran, then requeued
    assert train_steps(sweep / "0") == list(range(1, 41))
    assert losses(sweep / "0") == uninterrupted(tiny_cfg, 40)
