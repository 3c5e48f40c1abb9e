"""Tuned sweeps choose each variant's lr on the validation split, run the other seeds only
there, and the report shows test numbers at that lr with statistics that scipy agrees with."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ablate import train
from ablate.report.__main__ import main
from ablate.report.read import Job
from ablate.report.stats import compare, confidence_interval
from ablate.report.table import choose_lr
from ablate.tune import best_factor, edge
from conftest import run_in_process

GRID = "tune.lr_factors=[0.1,1,10]"


def summaries(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"),
                                                       key=lambda p: int(p.parent.name))]


def report_rows(sweep_dir: Path, out: Path) -> dict[str, dict]:
    main([str(sweep_dir), "--out", str(out)])
    with open(out / "report.csv") as f:
        return {row["label"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_args) -> Path:
    """SGD with and without momentum, lr grid 0.05 x (0.1, 1, 10), seeds 0 and 1."""
    cwd = tmp_path_factory.mktemp("tuned")
    code, _, err = run_in_process(cwd, "-m", *tiny_args, "optimizer=sgd", "trainer.lr=0.05",
                                  "+tune=lr", GRID, "optimizer.momentum=0.0,0.9",
                                  "trainer.seed=0,1", "logger.wandb.mode=disabled")
    assert code == 0, err
    (sweep_dir,) = (cwd / "outputs" / "multirun").glob("*/*")
    return sweep_dir


@pytest.mark.slow
def test_other_seeds_run_only_the_lr_with_the_lowest_validation_loss(tuned, tmp_path):
    jobs = summaries(tuned)
    assert len(jobs) == 2 * 3 * 2
    for momentum in ("0.0", "0.9"):
        variant = [s for s in jobs if f"optimizer.momentum={momentum}" in s["overrides"]]
        grid = {s["lr_factor"]: s["val_loss"] for s in variant if s["seed"] == 0}
        assert sorted(grid) == [0.1, 1.0, 10.0]
        assert all(s["status"] == "completed" for s in variant if s["seed"] == 0)
        chosen = min(grid, key=grid.get)
        for s in variant:
            if s["seed"] == 0:
                continue
            if s["lr_factor"] == chosen:
                assert s["status"] == "completed" and s["tuning"]["role"] == "chosen"
            else:
                assert s["status"] == "skipped" and s["reason"].startswith("tuning:")
        done = [s for s in variant if s["lr_factor"] == chosen]
        assert sorted(s["seed"] for s in done) == [0, 1]
        assert [s["peak_lr"] for s in done] == pytest.approx([0.05 * chosen] * 2, rel=1e-12)

    rows = report_rows(tuned, tmp_path / "report")
    assert list(rows) == ["momentum=0.0", "momentum=0.9"]
    for label, row in rows.items():
        done = [s for s in jobs if f"optimizer.{label}" in s["overrides"] and
                s["status"] == "completed" and s["lr_factor"] == float(row["lr_factor"])]
        assert len(done) == int(row["n"]) == 2
        test = [s["test_loss"] for s in done]
        assert float(row["test_loss_mean"]) == pytest.approx(np.mean(test), rel=1e-12)
        assert float(row["test_loss_std"]) == pytest.approx(np.std(test, ddof=1), rel=1e-9)
        low, high = stats.t.interval(0.95, 1, loc=np.mean(test), scale=stats.sem(test))
        assert (float(row["test_loss_ci_low"]), float(row["test_loss_ci_high"])) == (
            pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    # The p-value is scipy's Welch test on the same numbers.
    base, other = ([s["test_loss"] for s in jobs if f"optimizer.{label}" in s["overrides"]
                    and s["status"] == "completed" and
                    s["lr_factor"] == float(rows[label]["lr_factor"])] for label in rows)
    p = stats.ttest_ind(other, base, equal_var=False).pvalue
    assert float(rows["momentum=0.9"]["p_value"]) == pytest.approx(p, rel=1e-9)
    verdict = ("no significant difference" if p >= 0.05 else
               "worse" if np.mean(other) > np.mean(base) else "better")
    assert rows["momentum=0.9"]["verdict"] == verdict
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Learning-rate choice" in md and "![learning-rate sensitivity]" in md
    assert (tmp_path / "report" / "lr_sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Jobs that did not complete" not in md  # unchosen lrs are no failures


@pytest.mark.slow
def test_rerun_of_a_tuned_job_repeats_its_lr(tuned, tmp_path):
    job = next(p.parent for p in tuned.glob("*/summary.json")
               if json.loads(p.read_text())["tuning"]["role"] == "chosen")
    original = json.loads((job / "summary.json").read_text())
    code, _, err = run_in_process(tmp_path, job, f"outputs_dir={tmp_path}", module="ablate.rerun")
    assert code == 0, err
    (rerun,) = tmp_path.glob("reruns/*/*/summary.json")
    again = json.loads(rerun.read_text())
    assert again["peak_lr"] == original["peak_lr"]
    assert again["test_loss"] == original["test_loss"]
    assert again["config_hash"] == original["config_hash"]


def job(seed: int, factor: float, val: float, test: float, status: str = "completed") -> Job:
    summary = {"status": status, "seed": seed, "lr_factor": factor, "val_loss": val,
               "test_loss": test, "peak_lr": factor * 0.01, "variant": "v",
               "tuning": {"grid_seed": 0}}
    return Job(Path(f"/j/{seed}/{factor}"), summary, [], {"optimizer": "v"})


def test_selection_uses_validation_never_test():
    # On test, factor 10 would look best; on validation factor 1 is best.
    group = [job(0, 0.1, 5.0, 5.0), job(0, 1.0, 4.0, 4.5), job(0, 10.0, 4.2, 3.0),
             job(1, 1.0, 4.1, 4.4)]
    chosen, choice = choose_lr(group)
    assert choice["chosen"] == 1.0 and choice["edge"] is None
    assert [j.summary["seed"] for j in chosen] == [0, 1]
    # A diverged grid point counts as an infinite validation loss.
    chosen, choice = choose_lr([job(0, 0.1, 5.0, 5.0), job(0, 1.0, math.nan, math.nan, "diverged")])
    assert choice["chosen"] == 0.1 and choice["edge"] == "smallest"


def test_grid_edges_and_ties():
    assert edge(10.0, [0.1, 1.0, 10.0]) == "largest"
    assert edge(0.1, [0.1, 1.0, 10.0]) == "smallest"
    assert edge(1.0, [0.1, 1.0, 10.0]) is None and edge(1.0, [1.0]) is None
    assert best_factor({0.1: 3.0, 1.0: 3.0, 10.0: math.inf}) == 0.1
    assert best_factor({1.0: math.inf, 10.0: math.nan}) is None


@pytest.mark.parametrize("values, base", [
    ([4.1, 4.3, 4.2], [4.0, 4.05, 3.98]),
    ([4.0, 4.2], [4.1, 4.0, 4.3, 4.2]),
    ([5.0, 5.01, 5.02], [4.0, 4.01, 4.03]),
])
def test_welch_p_and_interval_equal_scipy(values, base):
    diff, p, verdict = compare(values, base)
    assert diff == pytest.approx(np.mean(values) - np.mean(base), rel=1e-12)
    assert p == pytest.approx(stats.ttest_ind(values, base, equal_var=False).pvalue, rel=1e-12)
    assert verdict == ("no significant difference" if p >= 0.05 else
                       "worse" if diff > 0 else "better")
    low, high = confidence_interval(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                scale=stats.sem(values))
    assert (low, high) == (pytest.approx(expected[0], rel=1e-12),
                           pytest.approx(expected[1], rel=1e-12))


def test_fewer_than_two_seeds_is_no_test():
    assert compare([4.0], [4.1, 4.2])[1:] == (pytest.approx(math.nan, nan_ok=True),
                                               "1 seed: no test")
    assert compare([], [4.1, 4.2])[2] == "no completed job: no test"
    assert math.isnan(confidence_interval([4.0])[0])


@pytest.mark.slow
@pytest.mark.parametrize("case, args", [
    # The report crash: 4 steps log one loss each, so every loss curve's area is NaN.
    ("nan_curves", ["optimizer=adalomo", "toggles=all,no_nmf", "trainer.seed=1,2",
                    "trainer.max_steps=4", "trainer.log_interval=10"]),
    ("one_step", ["optimizer=sgd,adamw", "trainer.max_steps=1"]),
    ("one_seed", ["optimizer=sgd,adamw", "trainer.seed=3"]),
    # Every job fails while training (raised: bad input such as more evaluation windows
    # than the split holds is refused before any job starts).
    ("all_failed", ["optimizer=sgd,adamw"]),
])
def test_reports_of_edge_sweeps_complete(tmp_path, tiny_args, case, args, monkeypatch):
    if case == "all_failed":
        def broken(self):
            raise ValueError("injected while training")
        monkeypatch.setattr(train.Trainer, "train_step", broken)
    code, _, err = run_in_process(tmp_path, "-m", *tiny_args, *args, "logger.wandb.mode=disabled")
    assert code == (1 if case == "all_failed" else 0), err
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    rows = report_rows(sweep_dir, tmp_path / "report")
    assert len(rows) == 2
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Traceback" not in md
    if case == "all_failed":
        assert all(row["n"] == "0" and row["test_loss_mean"] == "" for row in rows.values())
        assert md.count(": failed: ValueError: injected while training") == 2
    elif case == "nan_curves":
        assert all(row["loss_auc_mean"] == "" and row["n"] == "2" for row in rows.values())
        assert all(row["p_value"] != "" or row["is_baseline"] == "True" for row in rows.values())
    else:  # one job per variant: numbers, but no spread and no test
        assert all(row["n"] == "1" and row["test_loss_std"] == "" for row in rows.values())
        assert list(rows.values())[1]["verdict"] == "1 seed: no test"


def test_grid_and_seed_list_stay_out_of_the_config_hash(tiny_cfg):
    """They choose which jobs run, not what a job trains: a wider grid or one more seed
    finds the earlier jobs again."""
    from ablate.config.identity import config_hash

    plain = config_hash(tiny_cfg("optimizer=sgd"))
    assert config_hash(tiny_cfg("optimizer=sgd", "+tune=lr")) == plain
    assert config_hash(tiny_cfg("optimizer=sgd", "+tune=lr", "tune.lr_factors=[1,3]")) == plain
    assert config_hash(tiny_cfg("optimizer=sgd", "trainer.lr_factor=3")) != plain
    preset = config_hash(tiny_cfg("+ablation=adalomo_nmf"))
    assert config_hash(tiny_cfg("+ablation=adalomo_nmf", "ablation.seeds=[0,1,2,3]")) == preset
