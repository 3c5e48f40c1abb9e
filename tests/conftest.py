"""Shared fixtures and helpers: tiny configs that train in seconds on a CPU."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import subprocess
import sys
from pathlib import Path

# One torch thread per process, here and in every subprocess a test starts (they inherit
# the environment): these tensors are too small to gain from a second thread, and with
# pytest-xdist's workers (and a test's own worker processes) on two cores, every parallel
# region of a two-thread process waits until both threads get a core, up to 12x slower.
# Subprocesses computing with as many threads as this process also round alike.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from ablate.config.variants import compose  # noqa: E402
from ablate.runstore import curve  # noqa: E402

torch.set_num_threads(1)

# A 2-layer model on a 512-token vocabulary: big enough to be a real LLaMA, small enough
# that a few steps take well under a second.
TINY = [
    "model.hidden_size=64", "model.intermediate_size=128", "model.num_layers=2",
    "model.num_heads=2", "task.vocab_size=512", "trainer.seq_len=32", "trainer.batch_size=4",
    "trainer.max_steps=6", "trainer.warmup_steps=2", "trainer.eval_batches=2",
    "trainer.log_interval=1", "trainer.eval_interval=0", "trainer.tgs_warmup_steps=1",
    "logger.wandb.mode=disabled", "trainer.device=cpu", "trainer.progress=false",
]


# Modules whose tests share an expensive module-scoped fixture (a sweep): pytest-xdist runs
# each one on one worker, so the fixture is made once. (`--dist loadgroup` and xdist_group
# marks would say it per test, but do not group on pytest 9.2: pytest-xdist issue 1386.)
ONE_WORKER = ("test_report.py", "test_tune.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist load` (pyproject's addopts), but each ONE_WORKER module a single unit."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):  # units: a ONE_WORKER module, else one test
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return path if Path(path).name in ONE_WORKER else nodeid
    return Scheduling(config, log)


def pytest_collection_modifyitems(items):
    """The slow tests first (in their order): pytest-xdist hands tests out in this order, so
    no worker is left with a long one at the end while the other has nothing to do."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_collection_finish(session):
    """Every Trainer starts with a full garbage collection (`ablate.memory.reset_peak`),
    which walks every object alive: after torch, transformers and the test modules are
    imported, ~1 s each. The objects alive now are moved out of the collector's sight, as
    tests/dist_worker.py does (anything made later is collected as before)."""
    import transformers.models.gpt2.modeling_gpt2  # noqa: F401 - lazily imported by jobs
    import transformers.models.llama.modeling_llama  # noqa: F401

    import ablate.job  # noqa: F401
    import ablate.train  # noqa: F401

    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One tokenizer cache for the whole session (training a 512-token BPE takes ~1 s),
    shared by pytest-xdist's workers (a cache entry appears whole, by a rename)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "cache"
        shared.mkdir(exist_ok=True)
        return str(shared)
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


def run_in_process(cwd: Path, *args: str, module: str = "ablate",
                   stdin: str = "") -> tuple[int, str, str]:
    """`python -m MODULE ARGS` in `cwd`, in this process (a subprocess spends ~4 s on imports):
    the exit status, stdout and stderr, as the interpreter would give them; `stdin` is what
    the command reads from standard input."""
    from hydra.core.global_hydra import GlobalHydra

    from ablate import __main__, rerun
    from ablate.estimate import main as estimate_main
    from ablate.plan.__main__ import main as plan_main
    from ablate.report.__main__ import main as report_main

    args = [str(a) for a in args]
    entry = {"ablate": lambda: __main__.cli(), "ablate.rerun": lambda: rerun.main(args),
             "ablate.report": lambda: report_main(args),
             "ablate.plan": lambda: plan_main(args),
             "ablate.estimate": lambda: estimate_main(args)}[module]
    out, err, before, argv, stdin_before = (io.StringIO(), io.StringIO(), os.getcwd(), sys.argv,
                                            sys.stdin)
    code = 0
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        os.chdir(cwd)
        sys.argv, sys.stdin = [module, *args], io.StringIO(stdin)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            entry()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=err)
        code = exc.code if isinstance(exc.code, int) else 1 if exc.code else 0
    finally:
        os.chdir(before)
        sys.argv, sys.stdin = argv, stdin_before
        GlobalHydra.instance().clear()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def corpus(cache_dir):
    """The tiny settings' corpus, loaded once per process."""
    from ablate.tasks.pretrain import load_corpus

    return load_corpus(compose([*TINY, f"task.cache_dir={cache_dir}"]).task)


@pytest.fixture
def trainer(corpus, monkeypatch):
    """`trainer(cfg)`: a Trainer on the tiny settings' corpus that reuses `corpus` and skips
    the peak-memory reset (a garbage collection): for tests that read no peak."""
    monkeypatch.setattr("ablate.tasks.pretrain.load_corpus", lambda task, pretrained=None: corpus)
    monkeypatch.setattr("ablate.train.reset_peak", lambda device: None)
    from ablate.train import Trainer

    return Trainer


def train(cfg, steps=None):
    """A Trainer of `cfg` after `steps` steps (default trainer.max_steps); `.losses` holds
    the losses of the steps it took."""
    from ablate.train import Trainer

    trainer = Trainer(cfg)
    losses = []
    while trainer.step < (steps or cfg.trainer.max_steps):
        losses.append(trainer.train_step().item())
    trainer.losses = losses
    return trainer


def run_with(cfg, make_optimizer):
    """The trainer's init, batches and loop (unfused), stepping `make_optimizer(model)`: a
    reference optimizer on the same init and batches as the runner's own."""
    from ablate.train import Trainer

    trainer = Trainer(cfg)
    if trainer.fused:
        trainer.optimizer.remove_hooks()
    trainer.optimizer, trainer.fused = make_optimizer(trainer.model), False
    while trainer.step < cfg.trainer.max_steps:
        trainer.train_step()
    return trainer


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module, rtol=1e-5, atol=1e-6):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=name)


def assert_equals_reference(cfg, make_reference) -> None:
    """The runner's job (fused, unless `cfg` says otherwise) trains, and ends with the
    parameters of `make_reference(model)` stepped by the same loop after backward."""
    ours = train(cfg)
    theirs = run_with(cfg, make_reference)
    assert ours.losses[-1] < ours.losses[0]
    assert_same_params(ours.model, theirs.model)


def assert_same_params_in_norm(a: torch.nn.Module, b: torch.nn.Module, rtol: float):
    """Each parameter of `a` within `rtol` of `b`'s in norm: |a - b| <= rtol |b|."""
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        relative = ((p - q).norm() / q.norm()).item()
        assert relative <= rtol, f"{name}: |a - b| / |b| = {relative:.3g} > {rtol}"


def assert_fused_equals_unfused_and_accumulated(tiny_cfg, *common: str, rtol=1e-3):
    """`common` fused = unfused (elementwise, rtol 1e-5), and fused over 2 micro-batches of 2
    rows = one batch of 4: losses to rel 1e-5, each parameter to `rtol` in norm. The
    micro-batches sum each gradient in another order, and where an element's terms cancel
    to their rounding, an Adam-like normalisation turns that into a sizeable difference of
    its update (up to lr): a few such elements differ by more than a tolerance the CPU's
    rounding can be trusted with (measured on AMD: APOLLO-Mini's embedding, 4e-5 of 0.01
    elementwise, 3e-5 in norm). A wrong accumulation moves every element by about lr (0.5 in
    norm), and the losses from the second step."""
    fused = train(tiny_cfg(*common, "toggles.fused_backward=true"))
    plain = train(tiny_cfg(*common, "toggles.fused_backward=false"))
    assert_same_params(fused.model, plain.model)
    accumulated = train(tiny_cfg(*common, "toggles.fused_backward=true", "trainer.batch_size=2",
                                 "trainer.grad_accum_steps=2"))
    assert accumulated.losses == pytest.approx(fused.losses, rel=1e-5)
    assert_same_params_in_norm(accumulated.model, fused.model, rtol)


def mean_loss(trainer, batch: dict):
    """The mean loss of a trainer's task on a batch: what one step without accumulation
    minimises."""
    loss_sum, count = trainer.task.loss(trainer.model, batch)
    return loss_sum / count


def losses(run_dir: Path) -> list[float]:
    """The training losses a run logged, in step order (the run store's reader: a
    non-finite one, written as the string "inf", "-inf" or "nan", as a float)."""
    return [loss for _, loss in curve(run_dir)]


def run_dirs(folder: Path) -> list[Path]:
    """The run directories of single runs or reruns (`folder/DATE/TIME_NAME`), in name order;
    not the run store's index beside them."""
    return sorted(p for p in folder.glob("*/*") if p.is_dir())
