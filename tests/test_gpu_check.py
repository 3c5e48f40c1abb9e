"""scripts/gpu_check.sh --dry-run, as CI runs it (no CUDA, no wheels): the steps in order
with their time boxes within the budget, and the carried wheel list against pyproject.toml
(checked by the script, and here on its own)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

# scripts/gpu_wheels.py reads pyproject.toml with tomllib, as Python 3.11 on brings it
tomllib = pytest.importorskip("tomllib", reason="the dry run needs Python 3.11+ (tomllib)")

REPO = Path(__file__).resolve().parent.parent
STEPS = ["install", "cuda_tests", "bench_adalomo", "bench_galore", "estimate", "llama_7b", "jobs"]


def gpu_check(*args: str, root: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/gpu_check.sh", *args], cwd=root, text=True,
                          capture_output=True, env={**os.environ, "PYTHON": sys.executable},
                          timeout=60)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_dry_run_lists_the_steps_in_order_within_the_budget_and_checks_the_wheels():
    result = gpu_check("--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    listed = re.findall(r"^  (\w+) +(\d+) s  ", result.stdout, re.M)
    assert [name for name, _ in listed] == STEPS
    total = sum(int(seconds) for _, seconds in listed)
    assert total <= 480
    assert f"total time boxes: {total} s (at most 480 s); files back in $OUT: 8 (at most 8)" \
        in result.stdout
    assert re.search(r"^wheel list: \d+ wheels .* every pin allowed by its requirers$",
                     result.stdout, re.M)


def test_every_direct_dependency_is_carried_at_an_allowed_version_or_on_the_machine():
    """Independently of the script: each requirement of pyproject.toml (dependencies and the
    test extra) is pinned in scripts/gpu_wheels.txt within its range, or the machine has it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = [line.split("#")[0].strip()
             for line in (REPO / "scripts/gpu_wheels.txt").read_text().splitlines()]
    pins = dict(line.split("==") for line in lines if line)
    pins = {norm(name): version for name, version in pins.items()}
    machine = {norm(word) for line in (REPO / "scripts/gpu_machine.txt").read_text().splitlines()
               for word in line.split("#")[0].split()}
    for text in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(text)
        name = norm(req.name)
        assert (name in pins) != (name in machine), name
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), (text, pins[name])


def test_a_dependency_missing_from_the_list_or_an_unknown_option_is_one_line(tmp_path):
    for path in ("scripts", "tests/test_cuda.py", "pyproject.toml"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (shutil.copytree if (REPO / path).is_dir() else shutil.copy)(REPO / path, tmp_path / path)
    wheels = tmp_path / "scripts/gpu_wheels.txt"
    wheels.write_text(re.sub(r"(?m)^omegaconf==.*\n", "", wheels.read_text()))
    result = gpu_check("--dry-run", root=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        "gpu_check: scripts/gpu_wheels.txt lacks omegaconf==2.3.1 (needed by ablate, hydra-core)")
    result = gpu_check("--fast")
    assert (result.returncode, result.stdout) == (
        1, "gpu_check: unknown option --fast (allowed: --dry-run, --install-only, none)\n")
