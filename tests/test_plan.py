"""Planner plans become presets: every shared plan imports, and its jobs are the expected ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ablate.plan import PlanError, component_for, jobs, parse_markdown, preset

PLANS = Path(__file__).resolve().parents[2] / "shared" / "planner-plans"
needs_plans = pytest.mark.skipif(not PLANS.is_dir(), reason=f"{PLANS} is not beside the repo")


def plan(prefix: str) -> str:
    (path,) = PLANS.glob(f"{prefix}_*.txt")
    return path.read_text()


def dry_run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate.plan", *args, "--dry-run"],
                          input=stdin, text=True, capture_output=True)


@needs_plans
@pytest.mark.parametrize("prefix, optimizer, variants", [
    ("000", "adalomo", {(), ("toggles.adaptive_lr=false",), ("toggles.grouped_norm=false",)}),
    ("001", "adalomo", {(), ("toggles.adaptive_lr=false",), ("toggles.nmf=false",)}),
    ("003", "galore_adamw", {(), ("toggles.projection=none",), ("toggles.projection=random",),
                              ("toggles.projection=pca",), ("optimizer.update_proj_gap=50",),
                              ("optimizer.update_proj_gap=1000",), ("toggles.eight_bit=false",),
                              ("optimizer.rank=4",), ("optimizer.rank=8",),
                              ("optimizer.rank=16",)}),
    ("004", "galore_adamw", {(), *{(f"optimizer.update_proj_gap={t}",) for t in (50, 1000, 10000)},
                              *{(f"optimizer.rank={r}",) for r in (4, 8, 16, 32)},
                              *{(f"optimizer.scale={a}",) for a in (0.5, 1.0, 2.0)},
                              ("toggles.projection=random",), ("toggles.two_sided=true",)}),
])
def test_every_shared_plan_imports_with_the_expected_jobs(prefix, optimizer, variants):
    (path,) = PLANS.glob(f"{prefix}_*.txt")
    result = dry_run(str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 * len(variants)  # three seeds each
    baseline = {"optimizer": optimizer}
    for line in lines:
        assert line.startswith(f"optimizer={optimizer} ")
    first = dict(word.split("=", 1) for word in lines[0].split())
    baseline.update({k: v for k, v in first.items() if k != "trainer.seed"})
    found = set()
    for line in lines:
        job = dict(word.split("=", 1) for word in line.split())
        changed = tuple(f"{k}={v}" for k, v in job.items()
                        if k != "trainer.seed" and baseline.get(k) != v)
        found.add(changed)
    assert found == variants


@needs_plans
def test_unmeasured_metrics_are_listed_not_ignored():
    body, _ = preset(parse_markdown(plan("000")), "p", seeds=3)
    assert body["ablation"]["not_measured"] == ["MMLU", "BBH", "GSM8K", "HumanEval",
                                                "AlpacaFarm", "Avg."]
    body, _ = preset(parse_markdown(plan("004")), "p", seeds=3)
    assert body["ablation"]["not_measured"] == ["Fine-tuning GLUE Score"]


def test_unknown_part_is_an_error_listing_known_components_closest_first():
    with pytest.raises(PlanError, match=r"unknown ablated part 'Adaptive learning rat'; known "
                                        r"components, closest first: adaptive_lr, "):
        component_for("Adaptive learning rat")
    result = dry_run("-", stdin=json.dumps({"name": "x", "ablated_part": "Warp drive",
                                            "action": "REMOVE", "metrics": []}))
    assert result.returncode == 1 and "unknown ablated part 'Warp drive'" in result.stderr
    assert "eight_bit" in result.stderr and result.stdout == ""


def test_jsonl_from_stdin_and_the_written_preset(tmp_path):
    rows = [{"name": "rank grid", "ablated_part": "Projection rank (r)", "action": "REPLACE",
             "replacement": ["4", "128"], "metrics": ["Perplexity", "GLUE"]},
            {"name": "no 8 bit", "ablated_part": "8-bit optimizers", "action": "REMOVE",
             "metrics": ["Memory (GB)"]}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    result = dry_run("-", stdin=text)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3 * 3  # baseline (rank 128 is it), rank 4, no 8-bit
    out = tmp_path / "mine.yaml"
    subprocess.run([sys.executable, "-m", "ablate.plan", "-", "--out", str(out), "--seeds", "2"],
                   input=text, text=True, check=True, capture_output=True)
    assert out.read_text().startswith("# @package _global_\n")
    body = yaml.safe_load(out.read_text())
    assert body["ablation"]["variants"] == {"baseline": [], "rank_4": ["optimizer.rank=4"],
                                            "no_eight_bit": ["toggles.eight_bit=false"]}
    assert body["ablation"]["not_measured"] == ["GLUE"]
    assert body["hydra"]["sweeper"]["params"]["trainer.seed"] == "0,1"
    assert len(jobs(body)) == 3 * 2


def test_mixed_optimizers_and_bad_actions_are_refused():
    with pytest.raises(PlanError, match="adalomo and galore_adamw"):
        preset(parse_markdown("### a\n- **Ablated Part**: NMF\n- **Action**: REMOVE\n"
                              "### b\n- **Ablated Part**: Rank\n- **Action**: REPLACE\n"
                              "- **Replacement**:\n  - 4\n"), "p", 3)
    with pytest.raises(PlanError, match="cannot be removed"):
        preset(parse_markdown("### a\n- **Ablated Part**: Rank\n- **Action**: REMOVE\n"), "p", 3)
    with pytest.raises(PlanError, match="allowed are random projection"):
        preset(parse_markdown("### a\n- **Ablated Part**: projection method\n"
                              "- **Action**: REPLACE\n- **Replacement**:\n  - fourier\n"), "p", 3)
