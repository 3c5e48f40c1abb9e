"""`trainer.sharding=fsdp` on 2 gloo processes equals one process on the same global batch,
for every optimizer and toggle preset, fused and unfused, with accumulation and clipping;
and so does every job replicated on 2 processes (tests/test_distributed.py's cases and
tests/test_baselines.py's): all cases in one 2-process launch, against one one-process run
of each distinct case (a sharded case and its replicated twin share it)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

import dist_worker
from ablate import distributed
from ablate.estimate import estimate
from ablate.train import Trainer
from conftest import ablate, losses, run_in_process
from test_baselines import BASELINES
from test_distributed import (FAULT, NEW_OPTIMIZERS, OPTIMIZERS, STEPS, assert_equal_results,
                              cases, with_values)

# Elementwise (or AdaLomo's sums): every case of tests/test_distributed.py.
SHARDED = {name: args for name, args in OPTIMIZERS.items() if not name.startswith("galore")}
# What gathers, projects or sums by blocks: each on the plain batch once, fused for every
# other one (accumulation and clipping act on the summed gradient before any optimizer sees
# it: they run above). Adam-mini's one head of 64 rows spans both ranks' 32; APOLLO-Mini's
# svd projector is taken from the gathered gradient; LoRA's factors are sharded by rows
# beside their frozen weights. (APOLLO's at rank 4 is not compared:
# an svd of the tiny query gradients turns its basis on rounding, 2 processes or 1,
# sharded or not.)
ONE_FORM = {
    **{name: args for name, args in OPTIMIZERS.items() if name.startswith("galore")},
    "apollo": NEW_OPTIMIZERS["apollo"],
    "apollo_mini svd": ["optimizer=apollo_mini", "optimizer.update_proj_gap=2",
                        "optimizer.eps=1e-4", "toggles.projection=svd"],
    "adam_mini head across ranks": ["optimizer=adam_mini", "optimizer.eps=1e-4",
                                    "optimizer.num_heads=1"],
    "muon": NEW_OPTIMIZERS["muon"],
    **{name: BASELINES[name] for name in ("adafactor", "adamw8bit", "lora")},
    "low_rank": ["adapter=low_rank", "optimizer.eps=1e-4", "trainer.lr=1e-2"],
}
ONE_CASE = {f"{name} fused={('false', 'true')[i % 2]} batch" for i, name in enumerate(ONE_FORM)}
# Replicated: buckets of about one gradient each (10 KB; the tiny model's are 0.5-128 KB),
# one on the wire at a time, so that each launch first hands out the bucket before it.
SMALL_BUCKETS = ("trainer.bucket_mb=0.01", "trainer.buckets_in_flight=1")


@pytest.mark.slow
def test_replicated_and_sharded_equal_one_process_on_the_same_global_batch(tiny_cfg, tmp_path):
    """Also `trainer.save_model` sharded: rank 0 writes model/ from every rank's shards, and
    transformers loads it with the weights of one process trained on the same batches."""
    from transformers import AutoModelForCausalLM

    replicated = {**OPTIMIZERS, **NEW_OPTIMIZERS, **BASELINES}
    two_process, one_process = {}, {}
    for name, two, one in cases(tiny_cfg, {**replicated, **ONE_FORM}):
        optimizer = name.split(" fused=")[0]
        if optimizer in replicated:
            two_process[f"replicated {name}"] = with_values(two, *SMALL_BUCKETS)
        if optimizer in SHARDED or name in ONE_CASE:
            two_process[f"sharded {name}"] = with_values(two, "trainer.sharding=fsdp")
        if optimizer in replicated or name in ONE_CASE:
            one_process[name] = one
    saved = "adamw fused=true batch"
    results = distributed.launch(2, dist_worker.train_all, (
        two_process, STEPS, (f"sharded {saved}", str(tmp_path / "model"))))
    reference = dist_worker.train_all(one_process, STEPS)  # one thread, as each worker
    replicated_cases = 13 * 2 + 6 * 2 * 2 - 1 + 3 * 2 * 3 + len(BASELINES) * 2
    sharded_cases = 8 * 2 + 5 * 2 * 2 - 1 + len(ONE_FORM)
    assert len(results) == replicated_cases + sharded_cases
    assert len(reference) == replicated_cases + 3  # APOLLO-Mini, Adam-mini's head, low_rank
    assert_equal_results(results, {name: reference[name.partition(" ")[2]] for name in results})
    # the estimate per rank: rank 0's rows of the state sharded by rows, the rest whole
    for name in [*ONE_CASE, "adalomo all fused=true batch"]:
        got = results[f"sharded {name}"]["state"]
        assert got == estimate(two_process[f"sharded {name}"]).optimizer_state, name
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    want = reference[saved]["params"]
    assert {name for name, _ in model.named_parameters()} == set(want)
    for name, p in model.named_parameters():
        assert torch.allclose(p, want[name], rtol=1e-5, atol=1e-6), name


def test_a_device_without_its_backend_is_refused(tmp_path, tiny_args, monkeypatch):
    monkeypatch.setattr("torch.distributed.is_backend_available", lambda backend: False)
    code, _, err = run_in_process(tmp_path, *tiny_args, "trainer.sharding=fsdp")
    assert code == 1 and err.strip() == ("ablate: error: trainer.sharding=fsdp on "
                                         "trainer.device=cpu: this torch has no gloo backend "
                                         "(allowed: trainer.sharding=none)"), err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_sharded_job_killed_mid_run_resumes_on_two_processes_and_on_one(tmp_path, tiny_args,
                                                                         tiny_cfg):
    """Rank 1 of a 2-process AdaLomo job raises at step 4, after the step-3 checkpoint (one
    file per rank); the job on 2 processes again, and on 1 process, the same global batch,
    each continues from it and ends with the losses of an uninterrupted run."""
    (tmp_path / "fault").mkdir()
    (tmp_path / "fault" / "sitecustomize.py").write_text(FAULT)
    args = [*tiny_args, "optimizer=adalomo", "trainer.sharding=fsdp", "trainer.max_steps=6",
            "trainer.checkpoint_every=3", "trainer.collective_timeout_s=30"]
    # (each resumed run in a folder of its own: a job looks for its completed run beside it)
    first, second, third = (tmp_path / "first", tmp_path / "on_one" / "run",
                            tmp_path / "on_two" / "run")
    failed = ablate(tmp_path, *args, "trainer.processes=2", "trainer.batch_size=2",
                    f"hydra.run.dir={first}", check=False,
                    env={"ABLATE_FAULT_STEP": "4",
                         "PYTHONPATH": os.pathsep.join([str(tmp_path / "fault"), *sys.path])})
    assert failed.returncode == 1, failed.stderr
    assert json.loads((first / "checkpoint.json").read_text())["step"] == 3
    assert sorted(p.name for p in (first / "checkpoint.dcp").glob("*.distcp")) == [
        "__0_0.distcp", "__1_0.distcp"]
    code, _, err = run_in_process(tmp_path, *args, "trainer.batch_size=4",
                                  f"resume_from=[{first}]", f"hydra.run.dir={second}")
    assert code == 0, err
    ablate(tmp_path, *args, "trainer.processes=2", "trainer.batch_size=2",
           f"resume_from=[{first}]", f"hydra.run.dir={third}")
    trainer = Trainer(tiny_cfg("optimizer=adalomo", "trainer.max_steps=6"))
    uninterrupted = [trainer.train_step().item() for _ in range(6)]
    for run_dir, processes in ((second, 1), (third, 2)):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["resumed_from"] == {"run_dir": str(first), "step": 3}
        assert summary["world_size"] == processes and summary["global_batch_size"] == 4
        assert losses(run_dir) == pytest.approx(uninterrupted, rel=1e-5)


def test_a_job_is_its_global_batch_whatever_computes_it(tiny_cfg):
    from ablate.config.identity import config_hash

    one = config_hash(tiny_cfg("trainer.batch_size=8"))
    assert config_hash(tiny_cfg("trainer.batch_size=4", "trainer.processes=2")) == one
    assert config_hash(tiny_cfg("trainer.batch_size=4", "trainer.grad_accum_steps=2")) != one
    assert config_hash(tiny_cfg("trainer.batch_size=8", "trainer.sharding=fsdp")) != one
