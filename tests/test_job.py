"""One job end to end: the files it writes, what they say, and what happens when it fails."""

from __future__ import annotations

import json
import math

import pytest

from ablate import train
from ablate.config.variants import compose
from ablate.job import run_job
from ablate.models import build_model, count_params
from ablate.train import lr_at
from conftest import losses
from wandb_file import read_run

SUMMARY_KEYS = {
    "status", "final_train_loss", "val_loss", "test_loss", "test_perplexity", "test_accuracy", "peak_lr",
    "peak_memory_gb", "optimizer_state_gb", "tgs", "steps", "tokens", "wall_s", "optimizer",
    "toggles", "model", "task", "params_m", "overrides", "config_hash",
}


def test_summary_contract(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.max_steps=8", "trainer.eval_interval=4")
    summary = run_job(cfg, tmp_path, ["trainer.max_steps=8"])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert SUMMARY_KEYS <= on_disk.keys()
    assert on_disk["status"] == "completed"
    assert on_disk["steps"] == 8 and on_disk["tokens"] == 8 * 4 * 32
    for split in ("val", "test"):
        assert on_disk[f"{split}_perplexity"] == pytest.approx(math.exp(on_disk[f"{split}_loss"]),
                                                               rel=1e-12)
        assert 0 <= on_disk[f"{split}_accuracy"] <= 1
    assert on_disk["val_loss"] != on_disk["test_loss"]  # two different splits
    for key in ("peak_memory_gb", "optimizer_state_gb", "tgs", "wall_s", "params_m"):
        assert on_disk[key] > 0, key
    # AdamW keeps two fp32 moments per parameter, plus a 4-byte step count per tensor.
    model = build_model(cfg.model, "meta")
    n_tensors = len(list(model.parameters()))
    assert on_disk["optimizer_state_gb"] * 1e9 == 8 * count_params(model) + 4 * n_tensors
    assert on_disk["overrides"] == ["trainer.max_steps=8"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 9))
    assert {"step", "loss", "lr", "tokens", "tgs", "elapsed"} <= train_rows[0].keys()
    eval_rows = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in eval_rows] == [4, 8]
    assert eval_rows[-1]["val_loss"] == on_disk["val_loss"]
    assert eval_rows[-1]["test_loss"] == on_disk["test_loss"]
    assert "test_loss" not in eval_rows[0]  # the test split is only read at the end
    assert train_rows[-1]["loss"] == on_disk["final_train_loss"]


def test_same_config_and_seed_give_bit_identical_losses(tiny_cfg, tmp_path):
    run_job(tiny_cfg(), tmp_path / "a", [])
    run_job(tiny_cfg(), tmp_path / "b", [])
    run_job(tiny_cfg("trainer.seed=1"), tmp_path / "c", [])
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert losses(tmp_path / "a") != losses(tmp_path / "c")


def test_divergence_stops_early_with_status_diverged(tiny_cfg, tmp_path):
    summary = run_job(tiny_cfg("optimizer=sgd", "trainer.lr=1e6", "trainer.max_steps=20"),
                      tmp_path, [])
    assert summary["status"] == "diverged"
    assert summary["steps"] < 20
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "diverged" and math.isnan(float(on_disk["test_loss"]))


def test_exception_is_recorded_then_reraised(tiny_cfg, tmp_path, monkeypatch):
    def broken(self):
        raise RuntimeError("boom at step 0")

    monkeypatch.setattr(train.Trainer, "train_step", broken)
    with pytest.raises(RuntimeError, match="boom"):
        run_job(tiny_cfg(), tmp_path, [])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error_type"] == "RuntimeError" and summary["error"] == "boom at step 0"
    assert "boom at step 0" in (tmp_path / "traceback.txt").read_text()


def test_offline_wandb_run_holds_flat_config_and_summary(tiny_cfg, tmp_path):
    summary = run_job(tiny_cfg("logger.wandb.mode=offline"), tmp_path, [])
    run = read_run(summary["wandb_file"])
    assert str(tmp_path) in summary["wandb_file"]
    assert run["config"]["optimizer.name"] == "adamw"
    assert run["config"]["trainer.max_steps"] == 6
    assert run["config"]["toggles.fused_backward"] is True
    for key in ("test_loss", "tgs", "peak_memory_gb", "config_hash", "status"):
        assert run["summary"][key] == summary[key], key
    assert [row["loss"] for row in run["history"] if "loss" in row] == losses(tmp_path)


def test_wandb_failure_falls_back_instead_of_killing_the_run(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.warns(UserWarning, match="W&B init in online mode failed"):
        summary = run_job(tiny_cfg("logger.wandb.mode=online"), tmp_path, [])
    assert summary["status"] == "completed"
    assert read_run(summary["wandb_file"])["summary"]["status"] == "completed"


def test_cpu_peak_memory_is_reset_between_jobs_of_one_process(tiny_cfg, tmp_path):
    # ~21M parameters, as many as with a 4096-token vocabulary and 4 layers, without
    # training a 4096-token tokenizer first.
    big = ("model.hidden_size=512", "model.intermediate_size=2048", "model.num_layers=5",
           "model.num_heads=8", "trainer.max_steps=2")
    big_peak = run_job(tiny_cfg(*big), tmp_path / "big", [])["peak_memory_gb"]
    small_peak = run_job(tiny_cfg("trainer.max_steps=2"), tmp_path / "small", [])["peak_memory_gb"]
    assert small_peak < big_peak - 0.1  # the big job holds ~0.3 GB more of weights and state


def test_big_models_build_on_meta_device():
    for name, params_b in [("llama_7b", 6.74), ("llama_1b", 1.34), ("gpt2_xl", 1.56)]:
        model = build_model(compose([f"model={name}"]).model, "meta")
        assert count_params(model) / 1e9 == pytest.approx(params_b, rel=0.01), name
        assert next(model.parameters()).device.type == "meta"


def test_lr_schedule(tiny_cfg):
    t = tiny_cfg("trainer.max_steps=110", "trainer.warmup_steps=10", "trainer.lr=1.0",
                 "trainer.min_lr_ratio=0.1").trainer
    assert [lr_at(s, t) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_at(60, t) == pytest.approx(0.55)  # cosine half way: (1 + 0.1) / 2
    assert lr_at(110, t) == pytest.approx(0.1)
    t.schedule = "linear"
    assert lr_at(60, t) == pytest.approx(0.55)
    t.schedule = "constant"
    assert lr_at(60, t) == 1.0
