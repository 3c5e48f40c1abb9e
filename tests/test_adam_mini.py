"""Adam-mini against the adam-mini package: same numbers for each partition; fused =
unfused; accumulation, clipping; its state (estimate = measured: tests/test_estimate.py;
bf16 weights: tests/test_precision.py)."""

from __future__ import annotations

import pytest
from adam_mini import Adam_mini

from ablate.estimate import estimate
from conftest import (assert_equals_reference, assert_fused_equals_unfused_and_accumulated,
                      train)

# Shapes no other test uses: 48 wide, 3 heads of 16, MLP 80.
ADAM_MINI = ["optimizer=adam_mini", "model.hidden_size=48", "model.num_heads=3",
             "model.intermediate_size=80", "trainer.lr=0.01", "trainer.max_steps=7",
             "optimizer.weight_decay=0.1"]


def reference(model, cfg) -> Adam_mini:
    """The package's optimizer over the model's named parameters. Its name sets are its
    partition: for partition=neuron queries and keys join the per-neuron names; for
    tensor, every attention and MLP weight is left to its per-tensor default."""
    o, partition = cfg.optimizer, cfg.toggles.partition
    optimizer = Adam_mini(model.named_parameters(), lr=cfg.trainer.lr, betas=tuple(o.betas),
                          eps=o.eps, weight_decay=o.weight_decay, dim=cfg.model.hidden_size,
                          n_heads=cfg.model.num_heads, verbose=False)
    if partition is not None and partition.value == "neuron":
        optimizer.mlp_names |= optimizer.wqk_names
        optimizer.wqk_names = set()
    if partition is not None and partition.value == "tensor":
        optimizer.wqk_names = optimizer.wv_names = optimizer.attn_proj_names = set()
        optimizer.mlp_names = set()
    return optimizer


@pytest.mark.parametrize("variant", [
    ["model=llama_tiny"], ["model=gpt2_tiny"], ["model=llama_tiny", "toggles=neuron_partition"],
    ["model=llama_tiny", "toggles=tensor_partition"],
    ["model=llama_tiny", "trainer.clip_grad_norm=0.05"],
], ids=lambda v: " ".join(v))
def test_adam_mini_equals_the_package(tiny_cfg, variant):
    """Ours fused (the runner's path) against the reference stepped after backward."""
    cfg = tiny_cfg(*ADAM_MINI, *variant)
    assert_equals_reference(cfg, lambda model: reference(model, cfg))


def test_blocks_are_the_papers(tiny_cfg):
    """llama with 3 heads: queries and keys one value per head, the other weights one per
    row, embeddings and output one per token, norms one."""
    run = train(tiny_cfg(*ADAM_MINI), steps=1)
    shapes = {name: tuple(run.optimizer.state[p]["vmean"].shape)
              for name, p in run.model.named_parameters()}
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (3, 1)
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (3, 1)
    assert shapes["model.layers.0.self_attn.v_proj.weight"] == (48, 1)
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (48, 1)
    assert shapes["model.layers.0.mlp.up_proj.weight"] == (80, 1)
    assert shapes["model.embed_tokens.weight"] == shapes["lm_head.weight"] == (512, 1)
    assert shapes["model.layers.0.input_layernorm.weight"] == ()


def test_fused_equals_unfused_and_accumulation_equals_one_large_batch(tiny_cfg):
    common = ADAM_MINI
    assert_fused_equals_unfused_and_accumulated(tiny_cfg, *common)


def test_state_is_about_half_of_adamw(tiny_cfg):
    """m per value and v per block: a little over half of AdamW's two moments."""
    mini = estimate(tiny_cfg("optimizer=adam_mini")).optimizer_state
    adamw = estimate(tiny_cfg("optimizer=adamw")).optimizer_state
    assert 0.5 < mini / adamw < 0.52
