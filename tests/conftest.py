"""Shared fixtures: tiny configs that train in seconds on a CPU."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.config import compose
from ablate.job import read_metrics

# A 2-layer model on a 512-token vocabulary: big enough to be a real LLaMA, small enough
# that a few steps take well under a second.
TINY = [
    "model.hidden_size=64", "model.intermediate_size=128", "model.num_layers=2",
    "model.num_heads=2", "task.vocab_size=512", "trainer.seq_len=32", "trainer.batch_size=4",
    "trainer.max_steps=6", "trainer.warmup_steps=2", "trainer.eval_batches=2",
    "trainer.log_interval=1", "trainer.eval_interval=0", "trainer.tgs_warmup_steps=1",
    "logger.wandb.mode=disabled", "trainer.device=cpu", "trainer.progress=false",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One tokenizer cache for the whole session (training a 512-token BPE takes ~1 s)."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def tiny_cfg(cache_dir):
    """`tiny_cfg("optimizer=sgd", ...)`: a composed config for a tiny job."""
    def make(*overrides: str):
        return compose([*TINY, f"task.cache_dir={cache_dir}", *overrides])
    return make


@pytest.fixture(scope="session")
def tiny_args(cache_dir):
    """TINY as command-line overrides, W&B left at its default (offline)."""
    return [a for a in TINY if not a.startswith("logger.")] + [f"task.cache_dir={cache_dir}"]


def ablate(cwd: Path, *args: str, module: str = "ablate", env: dict | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
    """`python -m ablate ARGS` (or another module) in `cwd`, as a user would run it."""
    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, text=True,
                            capture_output=True, env={**os.environ, **(env or {})}, timeout=900)
    if check and result.returncode:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def run_in_process(cwd: Path, *args: str, module: str = "ablate") -> tuple[int, str, str]:
    """`python -m MODULE ARGS` in `cwd`, in this process (a subprocess spends ~4 s on imports):
    the exit status, stdout and stderr, as the interpreter would give them."""
    from hydra.core.global_hydra import GlobalHydra

    from ablate import __main__, report, rerun

    entry = {"ablate": lambda: __main__.cli(), "ablate.rerun": lambda: rerun.main(list(args)),
             "ablate.report": lambda: report.main(list(args))}[module]
    out, err, before, argv = io.StringIO(), io.StringIO(), os.getcwd(), sys.argv
    code = 0
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        os.chdir(cwd)
        sys.argv = [module, *map(str, args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            entry()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=err)
        code = exc.code if isinstance(exc.code, int) else 1 if exc.code else 0
    finally:
        os.chdir(before)
        sys.argv = argv
        GlobalHydra.instance().clear()
    return code, out.getvalue(), err.getvalue()


def mean_loss(trainer, batch: dict):
    """The mean loss of a trainer's task on a batch: what one step without accumulation
    minimises."""
    loss_sum, count = trainer.task.loss(trainer.model, batch)
    return loss_sum / count


def losses(run_dir: Path) -> list[float]:
    """The training losses a run logged, in step order; a non-finite one (written as the
    string "inf", "-inf" or "nan") as a float."""
    return [float(row["loss"]) for row in read_metrics(run_dir / "metrics.jsonl")
            if "loss" in row]
