"""Muon against torch.optim.Muon (its matrices) + torch.optim.AdamW (the rest): same
numbers; fused = unfused; accumulation, clipping (estimate = measured state:
tests/test_estimate.py; bf16 weights: tests/test_precision.py)."""

from __future__ import annotations

import pytest
import torch

from conftest import (assert_equals_reference, assert_fused_equals_unfused_and_accumulated,
                      assert_same_params, train)

# Shapes no other test uses: 40 wide, MLP 72 (tall and wide matrices); 5 heads of 8.
MUON = ["optimizer=muon", "model.hidden_size=40", "model.num_heads=5",
        "model.intermediate_size=72", "trainer.lr=0.01", "trainer.max_steps=7",
        "optimizer.weight_decay=0.1", "optimizer.adamw_weight_decay=0.05",
        "optimizer.adamw_lr_ratio=0.5", "optimizer.adamw_eps=1e-4"]


class TorchMuonAndAdamW:
    """torch.optim.Muon over the matrices Muon takes and torch.optim.AdamW over the rest,
    stepped one after the other; the trainer sets one lr for all groups, AdamW's groups get
    it times the ratio. With `ns_dtype=float32`, torch's Newton-Schulz function runs in
    float32: its one cast, `Tensor.bfloat16()`, is made a float32 copy during its step."""

    def __init__(self, model, cfg):
        o = cfg.optimizer
        matrices = [p for name, p in model.named_parameters()
                    if p.dim() == 2 and any(m in name for m in o.muon_modules)]
        rest = [p for p in model.parameters() if not any(p is q for q in matrices)]
        nesterov = cfg.toggles.nesterov is not False
        self.muon = torch.optim.Muon(
            matrices, lr=cfg.trainer.lr, weight_decay=o.weight_decay, momentum=o.momentum,
            nesterov=nesterov, ns_coefficients=tuple(o.ns_coefficients), eps=o.eps,
            ns_steps=o.ns_steps, adjust_lr_fn=o.adjust_lr_fn.value)
        self.adamw = torch.optim.AdamW(rest, lr=cfg.trainer.lr, betas=tuple(o.adamw_betas),
                                       eps=o.adamw_eps, weight_decay=o.adamw_weight_decay,
                                       foreach=False)
        self.ratio = o.adamw_lr_ratio
        self.float32 = o.ns_dtype.value == "float32"
        self.param_groups = self.muon.param_groups + self.adamw.param_groups

    def step(self):
        for group in self.adamw.param_groups:
            group["lr"] *= self.ratio
        with pytest.MonkeyPatch.context() as patch:
            if self.float32:
                patch.setattr(torch.Tensor, "bfloat16", lambda t: t.to(torch.float32, copy=True))
            self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none=True):
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)


@pytest.mark.parametrize("variant", [
    ["model=llama_tiny"], ["model=gpt2_tiny"],
    ["model=llama_tiny", "toggles=no_nesterov", "optimizer.ns_steps=3",
     "optimizer.adjust_lr_fn=original"],
    # Muon on the MLP only, its Newton-Schulz iteration in float32
    ["model=llama_tiny", "optimizer.muon_modules=[mlp]", "optimizer.ns_dtype=float32"],
    # Unfused: the clipping coefficient computed as the reference's run computes it (fused,
    # its norm sums the gradients in another order: see the test below).
    ["model=llama_tiny", "trainer.clip_grad_norm=0.05", "toggles.fused_backward=false"],
], ids=lambda v: " ".join(v))
def test_muon_equals_torch_muon_and_adamw(tiny_cfg, variant):
    """Ours fused (the runner's path) against torch's two optimizers after backward."""
    cfg = tiny_cfg(*MUON, *variant)
    assert_equals_reference(cfg, lambda model: TorchMuonAndAdamW(model, cfg))


def test_which_parameters_muon_takes_is_config(tiny_cfg):
    run = train(tiny_cfg(*MUON, "optimizer.muon_modules=[mlp]"), steps=1)
    muon = sorted(name for name, p in run.model.named_parameters()
                  if "momentum_buffer" in run.optimizer.state[p])
    assert len(muon) == 2 * 3 and all(".mlp." in name for name in muon), muon


def test_fused_equals_unfused_and_accumulation_equals_one_large_batch(tiny_cfg):
    common = MUON
    # The Newton-Schulz iteration rounds to bf16: a gradient summed in another order (over
    # micro-batches, or scaled by a clipping norm summed in another order) can round one
    # element of its input the other way, a change of 2^-8 of its size (measured: 5e-3 of
    # the largest weight after 7 clipped steps; 3e-3 in norm after 7 accumulated ones).
    assert_fused_equals_unfused_and_accumulated(tiny_cfg, *common, rtol=3e-2)
    clipped = [train(tiny_cfg(*common, "trainer.clip_grad_norm=0.05",
                              f"toggles.fused_backward={fused}")) for fused in ("true", "false")]
    assert_same_params(*(run.model for run in clipped), rtol=1e-2, atol=1e-3)
