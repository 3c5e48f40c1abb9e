"""The papers' baselines against their own libraries: Adafactor against torch.optim.Adafactor,
8-bit AdamW against bitsandbytes' AdamW8bit; fused = unfused; 2 processes = 1."""

from __future__ import annotations

import pytest
import torch

from ablate.optim import Adafactor
from ablate.train import Trainer
from conftest import assert_same_params, train
from test_distributed import with_values
from test_galore import run_with

CONSTANT = ["trainer.schedule=constant", "trainer.warmup_steps=0", "trainer.max_steps=6"]
ADAFACTOR = ["optimizer=adafactor", "optimizer.weight_decay=0.1", *CONSTANT]
ADAMW8BIT = ["optimizer=adamw8bit", "optimizer.weight_decay=0.1", "trainer.lr=0.01",
             "optimizer.eps=1e-4", *CONSTANT]


@pytest.mark.parametrize("fused", ["true", "false"])
def test_adafactor_equals_torch_adafactor(tiny_cfg, fused):
    cfg = tiny_cfg(*ADAFACTOR, f"toggles.fused_backward={fused}")
    ours = train(cfg)
    reference = run_with(cfg, lambda model: torch.optim.Adafactor(
        model.parameters(), lr=0.01, weight_decay=0.1, foreach=False))
    assert ours.losses[-1] < ours.losses[0]
    assert_same_params(ours.model, reference.model, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("factored", [True, False])
@pytest.mark.parametrize("relative_step", [True, False])
def test_adafactor_first_step_is_the_closed_form(factored, relative_step):
    """At t = 1 the schedule gives beta2 = 0: v = g^2 (factored too, for a rank-one g^2),
    so u = sign(g), RMS(u) = 1 and the step is alpha * sign(g): alpha = max(eps2, RMS(p)) *
    min(lr, 1) relative, lr absolute. A constant beta2 makes v = (1 - beta2) g^2."""
    torch.manual_seed(0)
    p0 = torch.randn(6, 5)
    g = torch.outer(torch.rand(6) + 0.5, torch.rand(5) + 0.5) * torch.randn(6, 5).sign()
    for beta2, scale in [(None, 1.0), (0.75, 2.0)]:
        p = torch.nn.Parameter(p0.clone())
        p.grad = g.clone()
        opt = Adafactor([p], lr=0.05, factored=factored, relative_step=relative_step,
                        beta2=beta2)
        opt.step()
        # u = g / sqrt((1 - beta2) g^2) = scale * sign(g), clipped back to RMS 1 by d = 1
        alpha = 0.05 * max(1e-3, p0.pow(2).mean().sqrt().item()) if relative_step else 0.05
        torch.testing.assert_close(p.detach(), p0 - alpha * g.sign(), rtol=1e-6, atol=1e-7)
        assert ("row_var" in opt.state[p]) == factored


@pytest.mark.parametrize("fused", ["true", "false"])
def test_adamw8bit_equals_bitsandbytes_adamw8bit(tiny_cfg, fused):
    """The tiny model's embedding and MLP weights (over 4096 values) have 8-bit moments,
    the rest fp32 ones, as bitsandbytes chooses; the same kernels on the same batches."""
    import bitsandbytes as bnb

    cfg = tiny_cfg(*ADAMW8BIT, f"toggles.fused_backward={fused}")
    ours = train(cfg)
    reference = run_with(cfg, lambda model: bnb.optim.AdamW8bit(
        model.parameters(), lr=0.01, weight_decay=0.1, eps=1e-4))
    assert ours.losses[-1] < ours.losses[0]
    assert {v.dtype for s in ours.optimizer.state.values() for v in s.values()
            if torch.is_tensor(v)} == {torch.uint8, torch.float32}
    assert_same_params(ours.model, reference.model, rtol=0, atol=0)


LORA = ["adapter=lora", "adapter.rank=4", "adapter.alpha=8", "trainer.lr=0.01", *CONSTANT]


def peft_reference(cfg, start: dict):
    """peft's own loop: the trainer's base model (same seed) wrapped by `get_peft_model`,
    starting from the weights `start` (ours at step 0: the same random A), torch's AdamW
    over what peft leaves trainable, stepped on the trainer's batches."""
    from peft import LoraConfig, get_peft_model

    trainer = Trainer(with_values(cfg, "adapter.name=none"))
    trainer.model = trainer.net = get_peft_model(trainer.model, LoraConfig(
        r=4, lora_alpha=8, target_modules=list(cfg.adapter.target_modules)))
    trainer.model.load_state_dict(start)
    if trainer.fused:
        trainer.optimizer.remove_hooks()
    trainer.optimizer, trainer.fused = torch.optim.AdamW(
        [p for p in trainer.model.parameters() if p.requires_grad], lr=0.01,
        eps=1e-4, weight_decay=0.0, foreach=False), False
    while trainer.step < cfg.trainer.max_steps:
        trainer.train_step()
    return trainer


@pytest.mark.parametrize("fused", ["true", "false"])
def test_lora_equals_peft_own_loop(tiny_cfg, fused):
    cfg = tiny_cfg(*LORA, "optimizer.eps=1e-4", f"toggles.fused_backward={fused}")
    start = {k: v.clone() for k, v in Trainer(cfg).model.state_dict().items()}
    ours = train(cfg)
    reference = peft_reference(tiny_cfg(*LORA, "optimizer.eps=1e-4"), start)
    assert ours.losses[-1] < ours.losses[0]
    trained = {n: p for n, p in ours.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    want = dict(reference.model.named_parameters())
    for name, p in ours.model.named_parameters():
        torch.testing.assert_close(p, want[name], rtol=1e-5, atol=1e-6, msg=name)
