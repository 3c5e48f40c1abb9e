"""Sweeps that survive: failures recorded, killed sweeps resumed, directories never shared."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from ablate.config.check import check
from ablate.config.identity import config_hash
from ablate.config.schema import config_dir, typed
from ablate.config.variants import apply_variant, compose
from ablate.cores import cores
from ablate.errors import ConfigError
from ablate.config.identity import is_baseline
from ablate.plan.jobs import jobs
from ablate import train
from conftest import ablate, losses, run_dirs, run_in_process

CONF = config_dir()


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "multirun").glob("*/*"))


def summaries(sweep: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


@pytest.fixture
def sweep_args(tiny_args):
    return [*tiny_args, "logger.wandb.mode=disabled"]


def test_failing_job_is_recorded_and_the_others_complete(tmp_path, sweep_args, monkeypatch):
    # Job #0 (seed 1) raises at its second step; the sweep runs in this process to inject it.
    real = train.Trainer.train_step

    def train_step(self):
        if self.t.seed == 1 and self.step == 1:
            raise ValueError("injected at step 1")
        return real(self)
    monkeypatch.setattr(train.Trainer, "train_step", train_step)
    code, out, err = run_in_process(tmp_path, "-m", *sweep_args, "trainer.seed=1,0",
                                    "trainer.max_steps=2")
    assert code == 1
    (sweep,) = sweep_dirs(tmp_path)
    jobs = summaries(sweep)
    assert jobs[0]["status"] == "failed" and jobs[0]["error_type"] == "ValueError"
    assert jobs[0]["error"] == "injected at step 1"
    assert "ValueError" in (sweep / "0" / "traceback.txt").read_text()
    assert jobs[1]["status"] == "completed"
    assert "1 job(s) failed" in err and "#0 failed" in err
    assert "1 completed, 1 failed" in out


@pytest.mark.slow
def test_killed_sweep_resumes_only_unfinished_jobs(tmp_path, sweep_args):
    args = ["-m", *sweep_args, "trainer.seed=0,1,2", "trainer.max_steps=40",
            "trainer.checkpoint_every=5"]
    proc = subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill job #1 once it has a checkpoint, mid-training
        marks = list(tmp_path.glob("outputs/multirun/*/*/1/checkpoint.json"))
        if marks and json.loads(marks[0].read_text())["step"] >= 5:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (first,) = sweep_dirs(tmp_path)
    killed = summaries(first)
    assert killed[0]["status"] == "completed" and 1 not in killed and 2 not in killed
    killed_at = json.loads((first / "1" / "checkpoint.json").read_text())["step"]
    assert 5 <= killed_at < 40

    code, _, err = run_in_process(tmp_path, *args)  # the same sweep again, in this process
    assert code == 0, err
    second = next(d for d in sweep_dirs(tmp_path) if d != first)
    resumed = summaries(second)
    assert resumed[0]["reused_from"] == str(first / "0")  # not retrained
    assert losses(second / "0") == losses(first / "0")
    assert resumed[1]["resumed_from"] == {"run_dir": str(first / "1"), "step": killed_at}
    assert "resumed_from" not in resumed[2] and "reused_from" not in resumed[2]
    assert all(s["status"] == "completed" and s["steps"] == 40 for s in resumed.values())
    assert (first / "1" / "metrics.jsonl").read_text().count("\n") >= killed_at  # kept

    # The interrupted job ends with the same losses as one that never stopped.
    code, _, err = run_in_process(tmp_path, *sweep_args, "trainer.seed=1", "trainer.max_steps=40",
                                  "resume=false")  # trained, not the sweep's job reused
    assert code == 0, err
    (uninterrupted,) = run_dirs(tmp_path / "outputs" / "runs")
    assert losses(second / "1") == losses(uninterrupted)


@pytest.mark.slow
def test_two_sweeps_started_together_get_their_own_directories(tmp_path, sweep_args):
    args = [sys.executable, "-m", "ablate", "-m", *sweep_args, "trainer.max_steps=1",
            "trainer.seed=0"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    sweeps = sweep_dirs(tmp_path)
    assert len(sweeps) == 2
    assert all(len(summaries(s)) == 1 for s in sweeps)


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_worker_processes(tmp_path, sweep_args):
    """Each of n_jobs=2 gets half the cores (trainer.threads=null), or the threads it asks
    for (the same config otherwise: resume=false trains it again); OMP_NUM_THREADS above
    any share, so neither it nor joblib's default decides."""
    limit = str(2 * cores())
    result = ablate(tmp_path, "-m", *sweep_args, "hydra/launcher=joblib",
                    "hydra.launcher.n_jobs=2", "trainer.threads=null,2", "trainer.max_steps=2",
                    "resume=false",
                    env={"OMP_NUM_THREADS": limit, "MKL_NUM_THREADS": limit})
    (sweep,) = sweep_dirs(tmp_path)
    jobs = summaries(sweep)
    assert [jobs[i]["status"] for i in (0, 1)] == ["completed", "completed"]
    assert [jobs[i]["threads"] for i in (0, 1)] == [max(1, cores() // 2), 2]
    assert "Joblib" in result.stdout + result.stderr
    assert "2 completed" in result.stdout


def test_nonsense_combination_is_skipped_and_list_toggles_reach_the_label(tmp_path, sweep_args):
    # AdamW has no `nmf` or `grouped_norm`: that job is skipped with its reason, not run as
    # plain AdamW under an AdaLomo label. `toggles=[a,b]` merges both presets into one job.
    code, out, err = run_in_process(tmp_path, "-m", *sweep_args, "optimizer=adamw,adalomo",
                                    "toggles=[no_nmf,no_grouped_norm]", "trainer.max_steps=2")
    assert code == 0, err
    (sweep,) = sweep_dirs(tmp_path)
    adamw, adalomo = summaries(sweep)[0], summaries(sweep)[1]
    assert adamw["status"] == "skipped" and "steps" not in adamw
    assert "toggles.nmf" in adamw["reason"] and "optimizer=adamw" in adamw["reason"]
    assert not (sweep / "0" / "metrics.jsonl").exists()
    assert adalomo["status"] == "completed"
    assert adalomo["variant"].startswith("adalomo grouped_norm=False nmf=False ")
    assert "1 completed, 1 skipped" in out


def presets(names) -> list:
    """Preset names as parameters; those of 7 variants or more (GLUE's 13, APOLLO's,
    Muon's, memory_efficient's) take ~5 s or more to compose: slow."""
    def many_variants(name: str) -> bool:
        body = yaml.safe_load((CONF / "ablation" / f"{name}.yaml").read_text())
        return len(body.get("ablation", {}).get("variants", {})) >= 7

    return [pytest.param(name, marks=pytest.mark.slow) if many_variants(name) else name
            for name in sorted(names)]


@functools.cache
def composed_groups(overrides: tuple[str, ...]) -> DictConfig:
    return compose(list(overrides))


def composed(preset: str, *assignments: str) -> DictConfig:
    """`compose(["+ablation=PRESET", *assignments])`, made as Hydra makes it: the group
    choices (`optimizer=sgd`) composed, each set of them once per process (Hydra composes
    slowly), then the values (`optimizer.rank=4`) set on a copy by the step Hydra itself
    runs after composing, in their order."""
    groups = tuple(a for a in assignments if (CONF / a.partition("=")[0]).is_dir())
    cfg = composed_groups((f"+ablation={preset}", *groups)).copy()
    values = [a for a in assignments if a not in groups]
    ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides(values),
                                                cfg)
    return cfg


@pytest.mark.parametrize("preset", presets(p.stem for p in CONF.glob("ablation/*.yaml")))
def test_every_preset_expands_to_jobs_that_pass_the_config_check(preset):
    body = yaml.safe_load((CONF / "ablation" / f"{preset}.yaml").read_text())
    expanded = jobs(body)
    assert len(expanded) == len({tuple(job) for job in expanded}) >= 6  # >= 2 variants x 3 seeds
    baselines = 0
    for job in expanded:
        cfg = apply_variant(typed(composed(preset, *job)))
        check(cfg)
        baselines += bool(is_baseline(cfg))
    assert baselines == 3  # the unablated variant, once per seed


@pytest.mark.parametrize("preset", presets(
    p.stem for p in CONF.glob("ablation/*.yaml") if "variants" in yaml.safe_load(p.read_text())
    .get("ablation", {})))
def test_every_variant_applied_equals_its_assignments_composed_by_hydra(preset):
    """What a sweep job runs (`ablation.variant=NAME`, applied after composition; a variant
    may pick another optimizer) is the config Hydra composes from the same assignments."""
    variants = yaml.safe_load((CONF / "ablation" / f"{preset}.yaml").read_text())["ablation"][
        "variants"]
    for name, assignments in variants.items():
        applied = apply_variant(typed(composed(preset, f"ablation.variant={name}")))
        hydra = typed(composed(preset, f"ablation.variant={name}", *assignments))
        assert config_hash(applied) == config_hash(hydra), name


@pytest.mark.parametrize("extra, allowed", [
    ([], "none (preset galore_rank has no variants)"),
    (["+ablation.variants.rank_4=['optimizer.rank=4']"], "rank_4"),
])
def test_unknown_variant_is_an_error_naming_the_allowed_ones(extra, allowed):
    cfg = compose(["+ablation=galore_rank", "ablation.variant=nope", *extra])
    with pytest.raises(ConfigError) as info:
        apply_variant(typed(cfg))
    assert str(info.value) == f"ablation.variant=nope: allowed are {allowed}"
