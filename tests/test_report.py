"""The report of a real sweep says what the jobs' files say, and the W&B runs carry what a
dashboard groups by."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ablate import runstore
from ablate.config.identity import label
from ablate.report.__main__ import main
from ablate.report.groups import common_parts, find_baseline, match_baseline, short_label
from ablate.report.read import Job
from ablate.report.stats import compare as stats_compare, mean_std
from ablate.tracking import fit, flatten
from conftest import run_in_process
from wandb_file import read_run

METRICS = ("test_loss", "test_perplexity", "test_accuracy", "val_loss", "final_train_loss",
           "peak_memory_gb", "optimizer_state_gb", "tgs")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_args) -> Path:
    """SGD at lr=0.5 (loss 6.27 -> ~5.85 in 8 steps) and at lr=1e6 (non-finite loss at
    step 3), 2 seeds each, W&B offline."""
    cwd = tmp_path_factory.mktemp("sweep")
    code, _, err = run_in_process(cwd, "-m", *tiny_args, "optimizer=sgd", "trainer.lr=0.5,1e6",
                                  "trainer.seed=0,1", "trainer.max_steps=8")
    assert code == 0, err
    (sweep_dir,) = (cwd / "outputs" / "multirun").glob("*/*")
    return sweep_dir


def by_lr(sweep_dir: Path) -> dict[str, list[Path]]:
    """Job directories grouped by their lr override, read from summary.json directly."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(sweep_dir.glob("*/summary.json")):
        lr = next(o for o in json.loads(path.read_text())["overrides"] if "trainer.lr=" in o)
        groups.setdefault(lr, []).append(path.parent)
    return groups


def train_losses(job: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    steps, losses = zip(*[(r["step"], float(r["loss"])) for r in rows if "loss" in r])
    return np.array(steps, dtype=float), np.array(losses)


def cell(row: dict, key: str) -> float:
    return math.nan if row[key] == "" else float(row[key])


@pytest.mark.slow
def test_report_numbers_are_the_summaries_numbers(sweep, capsys):
    root = sweep.parent.parent  # outputs/multirun: the report searches nested directories
    # A killed job of the lr=0.5 variant (a third seed; its .hydra/ but no summary yet) ...
    killed = sweep / "4"
    shutil.copytree(sweep / "0" / ".hydra", killed / ".hydra")
    config = yaml.safe_load((killed / ".hydra" / "config.yaml").read_text())
    config["trainer"]["seed"] = 2
    (killed / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    # ... and job 0 reused by a later sweep (same config hash): counted once.
    reused = root / "later" / "sweep" / "0"
    shutil.copytree(sweep / "0", reused)
    summary = json.loads((reused / "summary.json").read_text())
    (reused / "summary.json").write_text(json.dumps({**summary, "reused_from": str(sweep / "0")}))

    main([str(root)])
    out = root / "report"
    printed = capsys.readouterr().out
    with open(out / "report.csv") as f:
        rows = {row["label"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["trainer.lr=0.5", "trainer.lr=1000000.0"]  # the baseline first
    base, diverged = rows["trainer.lr=0.5"], rows["trainer.lr=1000000.0"]

    groups = by_lr(sweep)
    summaries = [json.loads((job / "summary.json").read_text()) for job in groups["trainer.lr=0.5"]]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert base["is_baseline"] == "True"  # the lowest-numbered job's variant
    assert (base["n"], base["completed"], base["killed"], base["diverged"]) == ("2", "2", "1", "0")
    for key in METRICS:
        values = [float(s[key]) for s in summaries]
        assert cell(base, f"{key}_mean") == pytest.approx(np.mean(values), rel=1e-12), key
        assert cell(base, f"{key}_std") == pytest.approx(np.std(values, ddof=1), rel=1e-9), key
    target = 1.05 * np.mean([s["final_train_loss"] for s in summaries])
    curves = [train_losses(job) for job in groups["trainer.lr=0.5"]]
    first_below = [steps[np.argmax(losses <= target)] for steps, losses in curves]
    auc = [np.trapezoid(losses, steps) / (steps[-1] - steps[0]) for steps, losses in curves]
    assert cell(base, "loss_target") == pytest.approx(target, rel=1e-12)
    assert 1 < min(first_below) and max(first_below) < 8  # the target is not trivial
    assert cell(base, "steps_to_target_mean") == np.mean(first_below)
    assert cell(base, "loss_auc_mean") == pytest.approx(np.mean(auc), rel=1e-12)
    assert cell(base, "loss_auc_std") == pytest.approx(np.std(auc, ddof=1), rel=1e-9)
    assert cell(base, "delta_test_perplexity") == 0.0

    assert [json.loads((job / "summary.json").read_text())["status"]
            for job in groups["trainer.lr=1000000.0"]] == ["diverged", "diverged"]
    assert (diverged["n"], diverged["diverged"], diverged["completed"]) == ("0", "2", "0")
    assert all(diverged[f"{key}_mean"] == "" for key in METRICS)

    md = (out / "report.md").read_text()
    assert "Jobs: 5 under" in md and "left out: 1 repeated attempts" in md
    assert "All variants share: `sgd model.hidden_size=64" in md
    assert "Baseline: `trainer.lr=0.5`, the lowest-numbered job's" in md
    base_line = next(line for line in md.splitlines() if line.startswith("| `trainer.lr=0.5`"))
    assert f"{np.mean([s['test_loss'] for s in summaries]):.4g} ± " in base_line
    assert "2 completed, 1 killed" in base_line
    assert "| `trainer.lr=1000000.0` | 1000000 | 0 |" in md and "2 diverged |" in md
    assert "seed 2: killed: no summary.json" in md
    assert base_line in printed  # the table goes to the terminal too
    for name in ("loss_vs_step.png", "memory.png", "tgs.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
        assert f"]({name})" in md


@pytest.mark.slow
def test_baseline_given_on_the_command_line(sweep, tmp_path):
    code, out, err = run_in_process(tmp_path, sweep, "--baseline", "trainer.lr=1e6", "--out",
                                    tmp_path / "r", module="ablate.report")
    assert code == 0, err
    assert "Baseline: `trainer.lr=1000000.0`, given: --baseline 'trainer.lr=1e6'" in out
    assert "Loss target: none: the baseline has no completed job" in out
    with open(tmp_path / "r" / "report.csv") as f:
        first = next(csv.DictReader(f))
    assert first["label"] == "trainer.lr=1000000.0" and first["is_baseline"] == "True"
    code, _, err = run_in_process(tmp_path, sweep, "--baseline", "trainer.lr=3",
                                  module="ablate.report")
    assert code == 1 and "matches no variant" in err
    assert len(err.strip().splitlines()) == 1, err


def same(on_disk, in_wandb) -> bool:
    """Equal; a NaN (the string "nan" in summary.json) is null in W&B's summary."""
    return in_wandb is None if on_disk == "nan" else on_disk == in_wandb


@pytest.mark.slow
def test_offline_wandb_runs_are_grouped_by_sweep_and_variant(sweep):
    job_types = {}
    for path in sorted(sweep.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        run = read_run(summary["wandb_file"])
        assert sweep.parent.parent.parent.parent / run["group"] == sweep  # the sweep directory
        assert run["group"] == summary["sweep"]
        assert len(summary["variant"]) > 64 and run["job_type"] == fit(summary["variant"])
        assert len(run["job_type"]) == 64
        assert run["name"] == f"{run['job_type']} seed={summary['seed']}"
        assert run["tags"] == ["sgd", "fused_backward=true"]
        assert run["config"]["optimizer.name"] == "sgd"
        assert run["config"]["trainer.seed"] == summary["seed"]
        assert run["config"]["trainer.lr"] in (0.5, 1e6)
        job_types.setdefault(run["config"]["trainer.lr"], set()).add(run["job_type"])
        for key, value in flatten(summary).items():
            assert key in run["summary"] and same(value, run["summary"][key]), key
    # One job_type per variant, shared by its seeds, distinct although the labels are
    # longer than W&B allows and differ only past the kept head.
    assert len(job_types[0.5]) == len(job_types[1e6]) == 1 and job_types[0.5] != job_types[1e6]


def test_labels_baseline_matching_and_std():
    variants = [{"optimizer": "adalomo", "trainer.max_steps": 300},
                {"optimizer": "adalomo", "toggles.nmf": False, "trainer.max_steps": 300},
                {"optimizer": "adalomo", "toggles.adaptive_lr": False, "trainer.max_steps": 300}]
    assert [label(v) for v in variants] == [
        "adalomo trainer.max_steps=300", "adalomo nmf=False trainer.max_steps=300",
        "adalomo adaptive_lr=False trainer.max_steps=300"]
    common = common_parts(variants)
    assert common == {"optimizer": "adalomo", "trainer.max_steps": 300}
    assert label(common) == "adalomo trainer.max_steps=300"
    assert [short_label(v, common) for v in variants] == [
        "adalomo", "nmf=False", "adaptive_lr=False"]
    assert match_baseline(variants, "toggles.nmf=false") == variants[1]
    assert match_baseline(variants, "adalomo") == variants[0]  # fewest other parts
    lrs = [{"optimizer": "adamw", "optimizer.lr": 0.001},
           {"optimizer": "adamw", "optimizer.lr": 0.01}]
    assert match_baseline(lrs, "lr=1e-3") == lrs[0]
    with pytest.raises(SystemExit, match="matches 2 variants equally"):
        match_baseline(variants[1:], "trainer.max_steps=300")
    assert short_label({"optimizer": "sgd", "optimizer.betas": [0.9, 0.95]},
                       {"optimizer": "sgd"}) == "betas=[0.9, 0.95]"
    preset = [Job(Path(str(i)), {"variant": label(v), "is_baseline": i == 1}, [], v)
              for i, v in enumerate(variants)]
    assert find_baseline(preset, None)[0] == variants[1]  # the preset's
    assert find_baseline(preset, "adaptive_lr=false")[0] == variants[2]  # given wins
    mean, std = mean_std([2.0])
    assert mean == 2.0 and math.isnan(std)  # n = 1: no std
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample std, n - 1


def completed_job(run_dir: Path, variant: dict, seed: int, test_loss: float) -> None:
    """A completed job's files, as a job writes them, with only what the report reads."""
    run_dir.mkdir(parents=True)
    runstore.write_summary(run_dir, {
        "status": "completed", "variant": label(variant), "variant_config": variant,
        "config_hash": run_dir.name, "seed": seed, "test_loss": test_loss,
        "test_perplexity": math.exp(test_loss), "final_train_loss": test_loss})
    (run_dir / "metrics.jsonl").write_text("".join(
        runstore.metrics_line({"step": step, "loss": test_loss + 1 / step}) for step in (1, 2)))


def test_variants_whose_labels_parse_ambiguously_are_kept_apart(tmp_path):
    """Values with spaces and `=` in them: the labels of two variants can be equal, or seem
    to share a part; the report groups, shortens and matches by the mapping."""
    variants = [{"optimizer": "sgd", "optimizer.target_modules": ["a", "b=c"]},
                {"optimizer": "sgd", "optimizer.target_modules": ["a", "d=c"]},
                {"optimizer": "sgd", "task.template": "a b=c"},
                {"optimizer": "sgd", "task.template": "a", "b": "c"}]
    assert label(variants[2]) == label(variants[3]) == "sgd task.template=a b=c"
    for i, variant in enumerate(variants):
        for seed in (0, 1):
            completed_job(tmp_path / "sweep" / str(2 * i + seed), variant, seed,
                          4.0 + i / 10 + seed / 100)
    main([str(tmp_path / "sweep"), "--out", str(tmp_path / "r"),
          "--baseline", "target_modules=[a,d=c]"])
    with open(tmp_path / "r" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["label"] for row in rows] == ["target_modules=['a', 'd=c']",
                                              "target_modules=['a', 'b=c']",
                                              "task.template=a b=c", "task.template=a b=c"]
    assert [row["n"] for row in rows] == ["2"] * 4
    assert [float(row["test_loss_mean"]) for row in rows] == pytest.approx(
        [4.105, 4.005, 4.205, 4.305])
    assert rows[0]["is_baseline"] == "True"
    assert "Claims" not in (tmp_path / "r" / "report.md").read_text()  # no saved config


@pytest.mark.slow
def test_sweep_written_before_variant_config_reports_in_the_same_rows(sweep, tmp_path):
    """Summaries without `variant_config` get it from their saved Hydra config; one whose
    config this version cannot read shows under its label."""
    new, old = tmp_path / "new", tmp_path / "old"
    for copy in (new, old):
        shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report"))
    for i in (0, 3):  # one job of each variant
        summary = json.loads((old / str(i) / "summary.json").read_text())
        del summary["variant_config"]
        (old / str(i) / "summary.json").write_text(json.dumps(summary))

    def rows(root: Path) -> list[dict]:
        main([str(root), "--out", str(root / "report")])
        with open(root / "report" / "report.csv") as f:
            return list(csv.DictReader(f))

    assert rows(old) == rows(new)
    (old / "3" / ".hydra" / "config.yaml").write_text("optimizer: {name: [\n")
    unreadable = json.loads((old / "3" / "summary.json").read_text())["variant"]
    labels = [row["variant"] for row in rows(old)]
    assert len(labels) == 3 and labels[2] == unreadable


def edit_summary(job: Path, **fields) -> None:
    summary = json.loads((job / "summary.json").read_text())
    (job / "summary.json").write_text(json.dumps({**summary, **fields}))


@pytest.mark.slow
def test_unreadable_jobs_are_listed_and_the_others_reported(sweep, tmp_path):
    """Issue 21: a cut summary, a cut or non-numeric metrics line and an unknown status list
    their job as unreadable (path and reason); an interrupted job is among those that did
    not complete; a job of another task gets its own table and baseline."""
    root = tmp_path / "sweep"
    shutil.copytree(sweep, root, ignore=shutil.ignore_patterns("report"))
    (a, b), (c, d) = by_lr(root)["trainer.lr=0.5"], by_lr(root)["trainer.lr=1000000.0"]
    kept = json.loads((b / "summary.json").read_text())
    (c / "summary.json").write_text((c / "summary.json").read_text()[:40])  # cut by a kill
    with open(a / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "lo')
    lines = (a / "metrics.jsonl").read_text().count("\n") + 1
    for name, fields, metrics in [("7", {"status": 5}, None),
                                  ("8", {}, '{"step": 1, "loss": "abc"}\n'),
                                  ("9", {"task": "sst2", "test_loss": 0.25}, None)]:
        shutil.copytree(b, root / name)
        edit_summary(root / name, config_hash=name, **fields)
        if metrics:
            (root / name / "metrics.jsonl").write_text(metrics)
    edit_summary(d, status="interrupted", signal=15, step=3)

    code, printed, err = run_in_process(tmp_path, root, module="ablate.report")
    assert code == 0, err
    md = (root / "report" / "report.md").read_text()
    assert md in printed
    unreadable = md.split("## Unreadable jobs (left out of every number)\n\n")[1].splitlines()
    assert unreadable == [
        f"- `{a}`: metrics.jsonl line {lines}: not JSON (cut short by a kill or a full disk?)",
        f"- `{c}`: summary.json: not readable as JSON (cut short, or not UTF-8)",
        f"- `{root / '7'}`: summary.json: status 5 is not one of completed, stalled, diverged, "
        "failed, interrupted, skipped, killed",
        f"- `{root / '8'}`: metrics.jsonl line 1: loss 'abc' is not a number"]
    jobs = len(runstore.run_dirs(root)) - 4  # job 4 is the killed one of the first test
    assert f"Jobs: {jobs} under" in md and "left out: 4 unreadable: see below" in md
    assert f"seed 1: interrupted: signal 15 at step 3 (`{d}`)" in md
    with open(root / "report" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["task"], r["label"], r["n"], r["is_baseline"]) for r in rows] == [
        ("pretrain_local", "pretrain_local: trainer.lr=0.5", "1", "True"),
        ("pretrain_local", "pretrain_local: trainer.lr=1000000.0", "0", "False"),
        ("sst2", "sst2: sgd", "1", "True")]
    assert float(rows[0]["test_loss_mean"]) == kept["test_loss"]
    assert float(rows[2]["test_loss_mean"]) == 0.25 and rows[2]["delta_test_loss"] == ""
    assert "## Task pretrain_local" in md and "## Task sst2" in md
    assert "- Baseline: `sst2: sgd`, the lowest-numbered job's" in md


@pytest.mark.slow
def test_tuned_sweep_with_a_killed_grid_job_reports(tmp_path, tiny_args):
    """Issue 21: a tuned sweep whose grid-seed job at one factor was killed (no summary)
    reports 'no choice' for its variant instead of crashing."""
    code, _, err = run_in_process(tmp_path, "-m", *tiny_args, "optimizer=sgd", "trainer.lr=0.05",
                                  "+tune=lr", "tune.lr_factors=[0.5,1]", "trainer.seed=0,1",
                                  "trainer.max_steps=2", "trainer.eval_batches=1",
                                  "logger.wandb.mode=disabled")
    assert code == 0, err
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    killed = next(job for job in sweep_dir.glob("*/summary.json")
                  if json.loads(job.read_text())["lr_factor"] == 1.0
                  and json.loads(job.read_text())["seed"] == 0).parent
    (killed / "summary.json").unlink()
    code, printed, err = run_in_process(tmp_path, sweep_dir, module="ablate.report")
    assert code == 0, err
    assert "| `sgd` |  (no choice) | 0 |" in printed
    assert "no choice: no finished grid-seed run at lr_factor 1" in printed
    assert f"seed 0: killed: no summary.json (killed, or still running) (`{killed}`)" in printed


def welch(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Welch's difference of means, its standard error and Welch-Satterthwaite degrees of
    freedom, from the textbook formulas."""
    vx, vy = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    return float(np.mean(x) - np.mean(y)), math.sqrt(vx + vy), df


@pytest.mark.parametrize("expect, x, y, margin, verdict", [
    ("worse", [5.0, 5.2, 5.1], [4.0, 4.1, 4.3], None, "supported"),
    ("worse", [4.0, 4.1, 4.3], [5.0, 5.2, 5.1], None, "contradicted"),
    ("better", [4.0, 4.6, 4.3], [4.1, 4.5, 4.2], None, "inconclusive"),
    ("equivalent", [4.00, 4.02, 4.01], [4.01, 4.00, 4.03], 0.05, "supported"),
    ("equivalent", [4.0, 4.3, 3.8], [4.01, 4.00, 4.03], 0.05, "inconclusive"),
    ("equivalent", [4.50, 4.52, 4.51], [4.01, 4.00, 4.03], 0.05, "contradicted"),
    ("not_worse", [4.03, 4.05, 4.04], [4.01, 4.00, 4.03], 0.1, "supported"),
    ("not_worse", [4.50, 4.52, 4.51], [4.01, 4.00, 4.03], 0.1, "contradicted"),
])
def test_claim_verdicts_match_the_closed_form_tests(expect, x, y, margin, verdict):
    """Each verdict and p-value against Welch's t statistic and the t distribution by hand:
    two-sided for worse/better; TOST's two one-sided p-values for equivalent; the one-sided
    non-inferiority p-value for not_worse."""
    from scipy.stats import t

    from ablate.report.claims import judge

    d, se, df = welch(x, y)
    p = {"worse": 2 * t.sf(abs(d) / se, df), "better": 2 * t.sf(abs(d) / se, df),
         "equivalent": max(t.sf((d + (margin or 0)) / se, df),
                           t.cdf((d - (margin or 0)) / se, df)),
         "not_worse": t.cdf((d - (margin or 0)) / se, df)}[expect]
    claim = {"variant": "a", "against": "b", "expect": expect,
             **({"margin": margin} if margin else {})}
    got, text = judge(claim, x, y)
    assert got == verdict, text
    assert f"= {p:.3g} " in text, (p, text)
    # A metric where higher is better (accuracy): the same numbers, negated, same verdict.
    negated = judge({**claim, "metric": "test_accuracy"}, [-v for v in x], [-v for v in y])
    assert negated[0] == verdict


def test_claim_with_one_seed_is_inconclusive():
    from ablate.report.claims import judge

    verdict, text = judge({"variant": "a", "against": "b", "expect": "worse"}, [5.0], [4.0, 4.1])
    assert verdict == "inconclusive" and "a has 1 completed jobs, b 2" in text


def test_pareto_frontier_of_a_hand_made_case():
    from ablate.report.plots import frontier

    # (memory, loss): (1, 5) and (4, 3) and (10, 2.5) trade memory for loss; (5, 4) is beaten
    # by (4, 3); (1, 6) by (1, 5); (20, 2.5) by (10, 2.5); a duplicate of a frontier point stays.
    points = [(5, 4), (1, 5), (4, 3), (10, 2.5), (1, 6), (20, 2.5), (4, 3)]
    assert frontier(points) == [False, True, True, True, False, False, True]


def preset_job(run_dir: Path, name: str, seed: int, test_loss: float, claims: list,
               status: str = "completed") -> None:
    """A preset's job: its summary and a saved config naming its variant and the claims."""
    completed_job(run_dir, {"optimizer": "adamw", "trainer.lr": name}, seed, test_loss)
    if status != "completed":
        edit_summary(run_dir, status=status, error_type="RuntimeError", error="boom")
    edit_summary(run_dir, is_baseline=name == "a", optimizer_state_gb=0.01 * len(name),
                 peak_memory_gb=0.5)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"ablation": {"name": "p", "variant": name, "claims": claims}}))


def test_report_states_each_claim_of_the_saved_config(tmp_path):
    """The Claims section: one line per claim from the jobs' saved configs; a variant with
    no completed job and one not in the sweep are inconclusive, saying why; the
    loss-against-memory plot is written, its points named by the preset's variant names. (A sweep without saved claims, as the one above,
    has no Claims section.)"""
    claims = [{"variant": "b", "against": "a", "expect": "worse"},
              {"variant": "baseline", "against": "b", "expect": "equivalent", "margin": 0.05},
              {"variant": "c", "against": "a", "expect": "better"},
              {"variant": "d", "against": "baseline", "expect": "not_worse", "margin": 0.1}]
    losses = {"a": [4.0, 4.1, 4.05], "b": [4.5, 4.6, 4.55], "c": [3.9, 3.8, 3.85]}
    for i, (name, seed) in enumerate((n, s) for n in losses for s in range(3)):
        preset_job(tmp_path / "sweep" / str(i), name, seed, losses[name][seed], claims,
                   "failed" if name == "c" else "completed")
    main([str(tmp_path / "sweep"), "--out", str(tmp_path / "r")])
    text = (tmp_path / "r" / "report.md").read_text()
    lines = text.split("## Claims\n\n")[1].splitlines()[:4]
    _, p, _ = stats_compare(losses["b"], losses["a"])
    assert lines[0] == (f"- `b` worse than `a` (test_loss): **supported**: Δ +0.5 (4.55 vs "
                        f"4.05, n = 3, 3); Welch's t-test p = {p:.3g} < 0.05")
    assert lines[1].startswith("- `baseline` equivalent to `b` within ±0.05 (test_loss): "
                               "**contradicted**: Δ -0.5")
    assert lines[2] == ("- `c` better than `a` (test_loss): **inconclusive**: c has 0 completed "
                        "jobs, a 3: a test needs two on each side")
    assert lines[3] == ("- `d` not worse than `baseline` (margin 0.1) (test_loss): "
                        "**inconclusive**: no job of variant d in this sweep")
    assert (tmp_path / "r" / "loss_vs_memory.png").read_bytes().startswith(PNG)
    with open(tmp_path / "r" / "report.csv") as f:  # the plot's names: the preset's own
        assert [row["name"] for row in csv.DictReader(f)] == ["a", "b", "c"]
