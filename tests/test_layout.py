"""The shape of the package: floors only look down, and the tools that only read files
import no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_graph_has_no_circle():
    result = subprocess.run([sys.executable, "scripts/import_graph.py"], cwd=REPO, text=True,
                            capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("no circle: ")


def test_import_graph_finds_a_circle(tmp_path):
    """The checker itself: a lazy import back from a lower floor is a circle."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import import_graph
    finally:
        sys.path.pop(0)
    assert import_graph.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]]
    assert import_graph.circles({"a": {"b"}, "b": set()}) == []


def test_report_and_plan_import_no_torch():
    code = "import sys, ablate.report, ablate.plan, ablate.runstore; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, text=True,
                            capture_output=True)
    assert result.stdout.strip() == "False", result.stderr
