"""APOLLO and APOLLO-Mini against apollo-torch: same numbers; fused = unfused; accumulation;
the state's closed form (estimate = measured: tests/test_estimate.py; bf16 weights:
tests/test_precision.py; bad values: tests/test_bad_input.py)."""

from __future__ import annotations

import zlib

import pytest
import torch
from apollo_torch import APOLLOAdamW

from ablate.estimate import estimate
from ablate.memory import optimizer_state_bytes
from conftest import (assert_equals_reference, assert_fused_equals_unfused_and_accumulated,
                      train)

# Shapes no other test uses (48 wide, 3 heads, MLP 80: wide and tall weights); T=3 over 7
# steps: projectors drawn at steps 1, 4 and 7.
APOLLO = ["optimizer.update_proj_gap=3",
          "model.hidden_size=48", "model.num_heads=3", "model.intermediate_size=80",
          "trainer.lr=0.01", "trainer.schedule=constant", "trainer.warmup_steps=0",
          "trainer.max_steps=7"]
FULL = ["optimizer=apollo", "optimizer.rank=4"]  # APOLLO at rank 4
MINI = ["optimizer=apollo_mini"]  # tensor-wise at rank 1, scale 128


def reference(model, cfg, projection: str, limiter: bool) -> APOLLOAdamW:
    """Param groups as the APOLLO repository builds them (the nn.Linear weights of attention
    and MLP modules projected, the rest plain AdamW), each projected weight's first random
    seed set to ours: the reference seeds by the parameter's position, ours by its name (both
    then advance by the same `next_seed`), so the draws are equal by construction."""
    o = cfg.optimizer
    names = {id(p): name for name, p in model.named_parameters()}
    projected = [m.weight for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ("attn" in name or "mlp" in name)]
    rest = [p for p in model.parameters() if not any(p is q for q in projected)]
    optimizer = APOLLOAdamW(
        [{"params": rest},
         {"params": projected, "rank": o.rank, "update_proj_gap": o.update_proj_gap,
          "scale": o.scale, "proj_type": "std", "proj": projection,
          "scale_type": o.scaling.value}],
        lr=cfg.trainer.lr, weight_decay=o.weight_decay, disable_nl=not limiter)
    for p in projected:
        optimizer.state[p]["seed"] = zlib.crc32(f"{o.seed}/{names[id(p)]}".encode())
    return optimizer


@pytest.mark.parametrize("variant", [
    [*FULL, "optimizer.weight_decay=0.1"],  # channel-wise, random, limiter
    MINI,
    [*FULL, "toggles=svd_proj", "optimizer.scale=4"],
    [*FULL, "toggles=no_limiter"],
    [*FULL, "trainer.clip_grad_norm=0.05"],  # on the clipped gradients
], ids=lambda v: " ".join(v))
def test_apollo_equals_apollo_torch(tiny_cfg, variant):
    """Ours fused (the runner's path) against the reference stepped after backward."""
    cfg = tiny_cfg(*APOLLO, *variant)
    projection = cfg.toggles.projection.value if cfg.toggles.projection else "random"
    limiter = cfg.toggles.limiter is not False
    assert_equals_reference(cfg, lambda model: reference(model, cfg, projection, limiter))


@pytest.mark.parametrize("variant", [MINI, [*FULL, "toggles=[svd_proj,no_limiter]"]],
                         ids=lambda v: " ".join(v))
def test_fused_equals_unfused_and_accumulation_equals_one_large_batch(tiny_cfg, variant):
    common = (*APOLLO, *variant)
    assert_fused_equals_unfused_and_accumulated(tiny_cfg, *common)


def test_mini_state_is_the_closed_form(tiny_cfg):
    """Each projected weight (rows x cols): two rank-1 moments of max(rows, cols) values, a
    projector of min(rows, cols), and the limiter's norm; every other parameter AdamW's two
    moments; all fp32."""
    cfg = tiny_cfg("optimizer=apollo_mini")
    run = train(cfg, steps=1)
    expected = 0
    for name, p in run.model.named_parameters():
        if "mlp" in name or "self_attn" in name:
            expected += 4 * (2 * max(p.shape) + min(p.shape) + 1)
        else:
            expected += 4 * 2 * p.numel()
    assert optimizer_state_bytes(run.optimizer) == estimate(cfg).optimizer_state == expected


@pytest.mark.slow
def test_memory_efficient_preset_runs_every_optimizer_with_its_own_state():
    """Each variant of the preset composes, passes the check, and gets its optimizer
    (APOLLO-Mini through `group_option`, which follows apollo_mini.yaml's base); their
    estimated states on llama_tiny in the order their algorithms give."""
    from ablate.config.check import checked
    from ablate.config.variants import compose

    state = {}
    for variant in ("adamw", "adamw8bit", "adafactor", "adalomo", "lomo", "galore_adamw",
                    "apollo", "apollo_mini", "adam_mini", "muon", "lora"):
        cfg = checked(compose(["+ablation=memory_efficient", f"ablation.variant={variant}",
                               "model=llama_tiny"]))
        assert (cfg.optimizer.name, cfg.adapter.name) == ((variant, "none") if variant != "lora"
                                                          else ("adamw", "lora"))
        state[variant] = estimate(cfg).optimizer_state
    # rank 128 -> 1 on 4 layers: per rank, each 256 x 256 attention weight 2 x 256 moment
    # and 256 projector values, each 688 x 256 MLP weight 2 x 688 and 256; 4 bytes each
    assert state["apollo"] - state["apollo_mini"] == 4 * 4 * 127 * (4 * 3 * 256
                                                                  + 3 * (2 * 688 + 256))
    assert state["apollo"] == state["galore_adamw"] + 4 * 7 * 4  # + a limiter norm a weight
    assert (state["lomo"] < state["adalomo"] < state["apollo_mini"] < state["adam_mini"]
            < state["muon"] < state["galore_adamw"] < state["adamw"])
    # torch's Adafactor keeps AdaLomo's factored moments and a step count a tensor (39);
    # LoRA: AdamW's two moments of each rank-8 adapter (28 weights) and of the embeddings,
    # head and norms trained in full, more than 8-bit AdamW's one byte a moment value
    assert state["adafactor"] == state["adalomo"] + 4 * 39
    assert state["adamw8bit"] < state["lora"] < state["galore_adamw"]
