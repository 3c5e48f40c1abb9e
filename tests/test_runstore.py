"""The run store: what a run directory holds reads back as written, and earlier work is found
by config hash through each folder's index, also in folders written before indexes existed."""

from __future__ import annotations

import json
import math

from ablate import runstore
from ablate.job import run_job


def write_run(run_dir, config_hash, status="completed"):
    run_dir.mkdir(parents=True, exist_ok=True)
    runstore.write_summary(run_dir, {"status": status, "config_hash": config_hash})


def test_metrics_keep_non_finite_values_and_skip_a_cut_line(tmp_path):
    lines = [runstore.metrics_line({"step": 1, "loss": 2.5}),
             runstore.metrics_line({"step": 2, "loss": math.inf}),
             runstore.metrics_line({"step": 3, "loss": math.nan, "val_loss": -math.inf}),
             "[1, 2]\n",  # JSON, but no record
             '{"step": 4, "lo']  # what a kill leaves
    (tmp_path / runstore.METRICS).write_text("".join(lines))
    rows = runstore.read_metrics(tmp_path)
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert rows[1]["loss"] == math.inf and math.isnan(rows[2]["loss"])
    assert rows[2]["val_loss"] == -math.inf
    assert json.loads(lines[1])["loss"] == "inf"  # JSON itself has no inf
    assert runstore.curve(tmp_path)[:2] == [(1, 2.5), (2, math.inf)]


def test_a_new_index_lists_the_runs_already_in_its_folder(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", "old")  # written before indexes existed
    runstore.create(sweep / "1", "new")
    runstore.create(sweep / "1", "new")  # a job that starts again is listed once
    entries = [json.loads(line) for line in (sweep / runstore.INDEX).read_text().splitlines()]
    assert entries == [{"run": "0", "config_hash": "old"}, {"run": "1", "config_hash": "new"}]
    found = runstore.runs_by_hash([tmp_path])
    assert found == {"old": [sweep.resolve() / "0"], "new": [sweep.resolve() / "1"]}


def test_finding_reads_indexes_and_unindexed_runs_but_nothing_inside_a_run(tmp_path):
    legacy = tmp_path / "multirun" / "2026-01-01" / "10-00-00"
    write_run(legacy / "0", "h")  # no index: found by its own summary
    write_run(legacy / "1" / "wandb" / "nested", "h")  # inside a run: not a run
    write_run(legacy / "1", "h", status="failed")
    runstore.create(tmp_path / "runs" / "day" / "a", "h")
    write_run(tmp_path / "runs" / "day" / "a" / "model", "h")  # inside a listed run
    found = runstore.runs_by_hash([tmp_path, tmp_path / "runs"])  # a root inside another
    assert found["h"] == [legacy.resolve() / "0", legacy.resolve() / "1",
                          (tmp_path / "runs" / "day" / "a").resolve()]
    assert runstore.find_completed([tmp_path], "h") == legacy.resolve() / "0"
    assert runstore.find_outcomes([tmp_path], {"h", "other"}) == {
        "h": {"status": "completed", "config_hash": "h"}}


def test_a_broken_index_loses_no_run(tmp_path):
    """An index is only a shortcut: lines that are not entries are skipped, and a run it does
    not list is found by its own files."""
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", "h")
    (sweep / runstore.INDEX).write_bytes(b'\x00\xff{"run": 1\n[1, 2]\n{"run": "9"}\n')
    assert runstore.runs_by_hash([tmp_path]) == {"h": [sweep.resolve() / "0"]}


def test_a_run_written_before_the_run_store_is_reused(tiny_cfg, tmp_path):
    """A completed run as the code before the run store wrote it (no index beside it, no
    `variant_config` in its summary) is found by resume and reused, not retrained."""
    cfg = tiny_cfg("trainer.max_steps=2")
    old = tmp_path / "earlier" / "0"
    first = run_job(cfg, old, [])
    (old.parent / runstore.INDEX).unlink()
    summary = runstore.read_summary(old)
    del summary["variant_config"]
    runstore.write_summary(old, summary)
    again = run_job(cfg, tmp_path / "now" / "0", [], resume_from=[tmp_path / "earlier"])
    assert again["reused_from"] == str(old.resolve())
    assert again["test_loss"] == first["test_loss"]
    assert runstore.curve(tmp_path / "now" / "0") == runstore.curve(old)
