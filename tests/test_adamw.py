"""AdamW: equal to torch.optim.AdamW through the runner, fused and not; without the second
moment and without momentum against the formulas; the toggle through the config."""

from __future__ import annotations

import pytest
import torch

from ablate.config.check import check
from ablate.config.variants import compose
from ablate.errors import ConfigError
from ablate.job import describe
from ablate.memory import optimizer_state_bytes
from ablate.optim import AdamW
from ablate.train import Trainer, lr_at
from conftest import assert_same_params, mean_loss, train


def run_by_hand(cfg, make_optimizer) -> tuple[Trainer, torch.optim.Optimizer]:
    """The trainer's model, init and batches (the same seed), stepped by a hand-written
    ordinary loop around `make_optimizer(params)` with the trainer's lr schedule."""
    reference = Trainer(cfg)
    if cfg.toggles.fused_backward:
        reference.optimizer.remove_hooks()
    opt = make_optimizer(reference.model.parameters())
    t = cfg.trainer
    for step in range(t.max_steps):
        opt.param_groups[0]["lr"] = lr_at(step, t)
        mean_loss(reference, reference.task.train_batch(step, t.batch_size)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return reference, opt


@pytest.mark.parametrize("fused", ["true", "false"])
def test_runner_adamw_equals_torch_adamw_with_weight_decay(tiny_cfg, fused):
    """Six steps on a tiny LLaMA (warm-up, then cosine decay): our class through the trainer
    against a hand-written loop around torch.optim.AdamW on the same init and batches."""
    cfg = tiny_cfg("optimizer=adamw", "optimizer.weight_decay=0.1", "trainer.lr=0.01",
                   f"toggles.fused_backward={fused}")
    ours = train(cfg)
    reference, opt = run_by_hand(cfg, lambda params: torch.optim.AdamW(
        params, lr=0.01, weight_decay=0.1))
    assert_same_params(ours.model, reference.model, rtol=1e-6, atol=0)
    assert ours.losses[-1] < ours.losses[0]
    assert optimizer_state_bytes(ours.optimizer) == optimizer_state_bytes(opt)


def toy_steps(steps: int = 4):
    """Two tensors and a fixed gradient sequence for each step."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen)]
    grads = [[torch.randn(p.shape, generator=gen) for p in params] for _ in range(steps)]
    return params, grads


def run(params, grads, **options) -> tuple[list[torch.Tensor], AdamW]:
    params = [p.clone().requires_grad_() for p in params]
    opt = AdamW(params, **options)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params], opt


def test_no_second_moment_is_momentum_with_bias_correction_and_keeps_no_exp_avg_sq():
    """adaptive_lr=False, by the box: p <- p(1 - lr wd) - lr m / (1 - beta1^t)."""
    params, grads = toy_steps()
    lr, beta1, wd = 0.01, 0.9, 0.1
    ours, opt = run(params, grads, lr=lr, betas=(beta1, 0.999), weight_decay=wd,
                    adaptive_lr=False)
    expected = []
    for p, gs in zip(params, zip(*grads)):
        m = torch.zeros_like(p)
        for t, g in enumerate(gs, start=1):
            p = p * (1 - lr * wd)
            m = beta1 * m + (1 - beta1) * g
            p = p - lr * m / (1 - beta1 ** t)
        expected.append(p)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)
    assert set(opt.state[opt.param_groups[0]["params"][0]]) == {"step", "exp_avg"}
    with_v, _ = run(params, grads, lr=lr, betas=(beta1, 0.999), weight_decay=wd)
    assert not torch.allclose(with_v[0], ours[0], rtol=1e-2)


def test_no_momentum_is_betas_zero_and_equals_torch():
    """betas=(0, 0.999): m = g, so the step is lr g_hat / (sqrt(v_hat) + eps); torch agrees."""
    params, grads = toy_steps()
    ours, _ = run(params, grads, lr=0.01, betas=(0.0, 0.999), weight_decay=0.1)
    theirs = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.AdamW(theirs, lr=0.01, betas=(0.0, 0.999), weight_decay=0.1)
    expected = []
    for p, gs in zip(params, zip(*grads)):
        v = torch.zeros_like(p)
        for t, g in enumerate(gs, start=1):
            v = 0.999 * v + 0.001 * g * g
            p = p * (1 - 0.01 * 0.1) - 0.01 * g / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
        expected.append(p)
    for step_grads in grads:
        for p, g in zip(theirs, step_grads):
            p.grad = g.clone()
        opt.step()
    torch.testing.assert_close(ours, [p.detach() for p in theirs], rtol=1e-6, atol=0)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fused", ["true", "false"])
def test_no_adaptive_lr_toggle_through_the_runner(tiny_cfg, fused):
    """`toggles=no_adaptive_lr` with adamw: accepted, labelled, half of Adam's moment bytes,
    and equal to the optimizer built by hand with adaptive_lr=False."""
    cfg = tiny_cfg("optimizer=adamw", "toggles=no_adaptive_lr", "trainer.lr=0.01",
                   f"toggles.fused_backward={fused}")
    check(cfg)
    label = describe(cfg, ["toggles=no_adaptive_lr"])["variant"]
    assert label.startswith("adamw ") and label.endswith(" adaptive_lr=False")
    ours = train(cfg)
    full = train(tiny_cfg("optimizer=adamw", "trainer.lr=0.01", f"toggles.fused_backward={fused}"))
    n_tensors = len(list(ours.model.parameters()))
    moments = optimizer_state_bytes(full.optimizer) - 4 * n_tensors  # minus the step counts
    assert optimizer_state_bytes(ours.optimizer) == moments // 2 + 4 * n_tensors
    reference, _ = run_by_hand(cfg, lambda params: AdamW(params, lr=0.01, weight_decay=0.0,
                                                         adaptive_lr=False))
    assert_same_params(ours.model, reference.model, rtol=1e-6, atol=0)
    assert ours.losses[-1] < ours.losses[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": -1.0}, "lr="), ({"betas": (0.9, 1.0)}, "betas="), ({"betas": (0.9,)}, "betas="),
    ({"eps": -1.0}, "eps="), ({"weight_decay": -0.1}, "weight_decay="),
])
def test_bad_hyper_parameters_are_one_line_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        AdamW([torch.zeros(2, requires_grad=True)], **kwargs)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^optimizer=adamw: betas=\[0.9, 1.0\]"):
        check(compose(["optimizer=adamw", "optimizer.betas=[0.9,1.0]"]))
