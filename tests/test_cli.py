"""The commands a researcher types, from an unrelated directory: the real command as a
subprocess where the process is part of what a test checks; other steps run the same entry
functions in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ablate, losses, run_dirs, run_in_process
from wandb_file import read_run

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_single_run_writes_metrics_summary_and_offline_wandb(tmp_path, tiny_args):
    result = ablate(tmp_path, *tiny_args, "trainer.max_steps=4")
    (run_dir,) = run_dirs(tmp_path / "outputs" / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert f"test_loss={summary['test_loss']:.4f}" in result.stdout and str(run_dir) in result.stdout
    assert len(losses(run_dir)) == 4
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    wandb_run = read_run(summary["wandb_file"])
    assert Path(summary["wandb_file"]).is_relative_to(run_dir.resolve())
    assert wandb_run["config"]["trainer.max_steps"] == 4
    assert wandb_run["config"]["model.hidden_size"] == 64
    assert wandb_run["summary"]["test_loss"] == summary["test_loss"]


@pytest.mark.slow
def test_multirun_then_rerun_reproduces_losses_exactly(tmp_path, tiny_args):
    """The sweep and the shorter rerun in this process; the rerun that must reproduce the
    sweep's losses exactly is a real `python -m ablate.rerun`."""
    code, _, err = run_in_process(tmp_path, "-m", *tiny_args, "optimizer=adamw,sgd",
                                  "toggles.fused_backward=true,false", "trainer.max_steps=3",
                                  "logger.wandb.mode=disabled")
    assert code == 0, err
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 4
    summaries = [json.loads((job / "summary.json").read_text()) for job in jobs]
    assert {(s["optimizer"], s["toggles"]["fused_backward"]) for s in summaries} == {
        ("adamw", True), ("adamw", False), ("sgd", True), ("sgd", False)}
    assert all(s["status"] == "completed" for s in summaries)

    ablate(tmp_path, jobs[1], module="ablate.rerun")
    (rerun,) = run_dirs(tmp_path / "outputs" / "reruns")
    assert losses(rerun) == losses(jobs[1])
    rerun_summary = json.loads((rerun / "summary.json").read_text())
    assert rerun_summary["config_hash"] == summaries[1]["config_hash"]

    code, _, err = run_in_process(tmp_path, jobs[1], "trainer.max_steps=2", module="ablate.rerun")
    assert code == 0, err
    shorter = max(run_dirs(tmp_path / "outputs" / "reruns"), key=lambda p: p.stat().st_mtime)
    assert losses(shorter) == losses(jobs[1])[:2]


# The real command in a subprocess, for an error of Hydra's composition and one of our check;
# every other bad value is a row of tests/test_bad_input.py's table.
@pytest.mark.parametrize("override, expected", [
    ("optimizer=nope", "allowed optimizer options: adafactor, adalomo, adam_mini, adamw,"),
    ("trainer.seq_len=-1", "trainer.seq_len=-1: must be > 0"),
])
def test_bad_value_fails_with_one_clear_line(tmp_path, override, expected):
    result = ablate(tmp_path, override, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ablate: error:") and expected in lines[0]
    assert not (tmp_path / "outputs" / "runs").exists() or not any(
        (tmp_path / "outputs" / "runs").rglob("summary.json"))


def test_big_model_composes(tmp_path):
    code, out, err = run_in_process(tmp_path, "model=llama_1b", "--cfg", "job")
    assert code == 0, err
    assert "hidden_size: 2048" in out and "num_layers: 24" in out


@pytest.mark.slow
def test_non_editable_install_finds_its_packaged_conf(tmp_path, tiny_args):
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, REPO],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("ablate-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", target, wheel], check=True,
                   capture_output=True)
    env = {"PYTHONPATH": str(target)}  # ahead of the editable install in site-packages
    where = subprocess.run(
        [sys.executable, "-c", "import ablate.config.schema as c; print(c.config_dir())"],
        cwd=elsewhere, env={**os.environ, **env}, text=True, capture_output=True, check=True)
    assert Path(where.stdout.strip()) == target / "ablate" / "conf"
    ablate(elsewhere, *tiny_args, "trainer.max_steps=2", "logger.wandb.mode=disabled", env=env)
    (summary,) = (elsewhere / "outputs" / "runs").glob("*/*/summary.json")
    assert json.loads(summary.read_text())["status"] == "completed"


def test_overrides_of_a_group_a_preset_brings_are_accepted(tmp_path):
    """Issue 21: `tune.*` without `+tune=lr` is refused, unless an added preset brings the
    tune group in its defaults (adalomo_vs_adamw does); the composed job then has the grid."""
    from ablate.config.overrides import check_overrides
    from ablate.config.variants import compose
    from ablate.errors import ConfigError

    args = ["+ablation=adalomo_vs_adamw", "tune.lr_factors=[1,2]"]
    check_overrides(args)
    assert list(compose(args).tune.lr_factors) == [1.0, 2.0]
    with pytest.raises(ConfigError, match=r"add \+tune=lr"):
        check_overrides(["+ablation=adalomo_nmf", "tune.lr_factors=[1,2]"])
    check_overrides(["toggles.two_sided=null", "trainer.activation_checkpointing=false",
                     "-m", "share_gpus=true,false", "hydra/launcher=basic"])
