"""`trainer.activation_checkpointing`: the same losses and weights as without (fp32, CPU),
and with the fused backward each parameter is still updated exactly once per step, also when
a step runs gathering backwards first (global norm clipping, AdaLomo's global RMS)."""

from __future__ import annotations

import pytest
import torch

from ablate.train import Trainer


def counted(run: Trainer) -> dict:
    """Updates per parameter: each optimizer instance's per-tensor `_update` and multi-tensor
    `update_many` (a fused group's, over several instances' parameters) wrapped to count the
    parameters they change."""
    counts = {p: 0 for p in run.model.parameters()}
    optimizers = getattr(run.optimizer, "optimizers", {"all": run.optimizer}).values()
    for optimizer in optimizers:
        def update(params, update=optimizer._update):
            update(params)
            for _, p, _ in params:
                counts[p] += 1

        def update_many(entries, update_many=optimizer.update_many):
            update_many(entries)
            for p, _, _ in entries:
                counts[p] += 1
        optimizer._update = update
        if optimizer.update_many is not None:
            optimizer.update_many = update_many
    return counts


@pytest.mark.parametrize("setting", [
    ["optimizer=adamw"],
    ["optimizer=adamw", "toggles.fused_backward=false"],
    ["optimizer=adalomo", "toggles=global_norm", "trainer.clip_grad_norm=0.5"],
    ["optimizer=galore_adamw", "optimizer.rank=8", "model=gpt2_tiny"],
], ids=" ".join)
def test_checkpointing_changes_no_loss_and_updates_each_parameter_once(
        tiny_cfg, trainer, setting):
    runs = {}
    for checkpointing in (False, True):
        run = trainer(tiny_cfg(*setting, f"trainer.activation_checkpointing={checkpointing}"))
        assert run.model.is_gradient_checkpointing == checkpointing
        counts = counted(run)
        losses = []
        for step in range(1, 4):
            losses.append(run.train_step().item())
            assert set(counts.values()) == {step}
        runs[checkpointing] = run, losses
    (plain, plain_losses), (recomputing, losses) = runs[False], runs[True]
    assert losses == pytest.approx(plain_losses, rel=1e-6, abs=0)
    for p, q in zip(plain.model.parameters(), recomputing.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)
