"""The training loop: fused and unfused backward agree, runs are deterministic."""

from __future__ import annotations

import math

import pytest
import torch

from ablate.train import Trainer
from conftest import assert_same_params, mean_loss, train


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("model", ["llama_tiny", "gpt2_tiny"])
def test_fused_backward_equals_unfused(tiny_cfg, optimizer, model):
    fused = train(tiny_cfg(f"optimizer={optimizer}", f"model={model}", "trainer.lr=0.01",
                           "toggles.fused_backward=true"))
    plain = train(tiny_cfg(f"optimizer={optimizer}", f"model={model}", "trainer.lr=0.01",
                           "toggles.fused_backward=false"))
    assert fused.losses == pytest.approx(plain.losses, rel=1e-5)
    assert fused.losses[-1] < fused.losses[0]
    assert_same_params(fused.model, plain.model)


def test_fused_adamw_equals_torch_adamw_run_the_ordinary_way(tiny_cfg):
    """Our fused path against a hand-written loop around torch.optim.AdamW."""
    cfg = tiny_cfg("optimizer=adamw", "optimizer.weight_decay=0.1", "trainer.lr=0.01",
                   "trainer.schedule=constant", "trainer.warmup_steps=0")
    fused = train(cfg)
    torch.manual_seed(cfg.trainer.seed)
    reference = Trainer(cfg)  # same init (same seed), its hooks never fire below
    reference.optimizer.remove_hooks()
    opt = torch.optim.AdamW(reference.model.parameters(), lr=0.01, weight_decay=0.1)
    for step in range(cfg.trainer.max_steps):
        mean_loss(reference, reference.task.train_batch(step, 4)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert_same_params(fused.model, reference.model)


# Adam divides by sqrt(v) + eps: for a gradient near zero made of cancelling terms, float
# rounding (a different summation order) is amplified, so these tests give Adam an eps
# that keeps tiny gradients tiny; SGD is linear in the gradient and needs no such care.
OPTIMIZERS = ["optimizer=sgd", "optimizer=adamw optimizer.eps=1e-4"]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_gradient_clipping_fused_two_pass_equals_unfused(tiny_cfg, optimizer):
    common = (*optimizer.split(), "trainer.lr=0.01", "trainer.clip_grad_norm=0.05")
    fused = train(tiny_cfg(*common, "toggles.fused_backward=true"))
    plain = train(tiny_cfg(*common, "toggles.fused_backward=false"))
    assert_same_params(fused.model, plain.model)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("fused", ["true", "false"])
def test_grad_accumulation_equals_one_large_batch(tiny_cfg, optimizer, fused):
    common = (*optimizer.split(), f"toggles.fused_backward={fused}", "trainer.lr=0.01")
    small = train(tiny_cfg(*common, "trainer.batch_size=2", "trainer.grad_accum_steps=2"))
    large = train(tiny_cfg(*common, "trainer.batch_size=4", "trainer.grad_accum_steps=1"))
    assert small.losses == pytest.approx(large.losses, rel=1e-5)
    assert_same_params(small.model, large.model)


@pytest.mark.parametrize("fused", ["true", "false"])
def test_a_non_finite_loss_updates_no_parameter(tiny_cfg, fused):
    """The loss of step 4 made NaN (times NaN: its gradients are NaN too, so any update from
    them would show): the run is recorded diverged at step 4, with the parameters of step 3,
    the check coming before the first update of the step (the fused path's, in backward)."""
    cfg = tiny_cfg("optimizer=sgd", "trainer.lr=0.01", "trainer.max_steps=6",
                   f"toggles.fused_backward={fused}", "trainer.log_interval=5")
    diverged = Trainer(cfg)
    real = diverged.task.loss

    def loss(net, micro):
        value, *rest = real(net, micro)
        return (value * math.nan if diverged.step == 3 else value, *rest)
    diverged.task.loss = loss
    records = []
    summary = diverged.fit(records.append)
    assert summary["status"] == "diverged" and math.isnan(summary["final_train_loss"])
    assert records[-1]["step"] == 4 and math.isnan(records[-1]["loss"])
    before = train(cfg, steps=3)
    for (name, p), q in zip(diverged.model.named_parameters(), before.model.parameters()):
        assert torch.isfinite(p).all() and torch.equal(p, q), name
