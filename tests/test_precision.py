"""`trainer.precision=bf16_weights` against fp32: every optimizer's update on bf16 tensors is
the same optimizer run in fp32 on `.float()` copies of the same inputs (parameter, gradient,
state), rounded to bf16; fused = unfused; a checkpoint keeps each state tensor's dtype.
`ablate.optim.SGD` against `torch.optim.SGD`."""

from __future__ import annotations

import pytest
import torch

from ablate.models import build_model
from ablate.optim import SGD
from ablate.optim.build import build_optimizer
from ablate.optim.precision import is_float

OPTIMIZERS = [
    ["optimizer=adamw", "optimizer.weight_decay=0.1"],
    ["optimizer=adamw", "toggles=no_adaptive_lr"],
    ["optimizer=sgd", "optimizer.momentum=0.9", "optimizer.weight_decay=0.1"],
    ["optimizer=lomo", "optimizer.weight_decay=0.1"],
    ["optimizer=adalomo", "optimizer.weight_decay=0.1"],
    ["optimizer=adalomo", "toggles=no_nmf"],
    ["optimizer=adalomo", "toggles=no_adaptive_lr"],
    ["optimizer=adalomo", "toggles=no_grouped_norm"],
    ["optimizer=adalomo", "toggles=global_norm"],
    ["optimizer=galore_adamw", "optimizer.rank=8", "optimizer.update_proj_gap=2"],
    ["optimizer=galore_adamw", "optimizer.rank=8", "optimizer.update_proj_gap=2",
     "toggles=random_proj"],
    ["optimizer=galore_adamw", "optimizer.rank=8", "optimizer.update_proj_gap=2",
     "toggles=two_sided"],
    # 64 x 128 = 8192 values: the MLP's moments are 8-bit codes at rank 64
    ["optimizer=galore_adamw", "optimizer.rank=64", "toggles=eight_bit"],
    ["optimizer=galore_adamw", "toggles=no_projection", "optimizer.weight_decay=0.1"],
    # issue 23
    ["optimizer=apollo", "optimizer.rank=8", "optimizer.update_proj_gap=2"],
    ["optimizer=apollo_mini", "optimizer.update_proj_gap=2", "toggles=svd_proj"],
    ["optimizer=adam_mini", "optimizer.weight_decay=0.1"],
    ["optimizer=muon", "optimizer.weight_decay=0.1"],
]
IDS = [" ".join(o) for o in OPTIMIZERS]


def params_of(optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=IDS)
def test_each_update_is_the_fp32_update_of_the_same_bf16_inputs_rounded(tiny_cfg, optimizer):
    """Three steps (GaLore: a projector made, reused, made again). Before each, the fp32
    reference gets `.float()` copies of the bf16 parameters, gradients and state; after it,
    the bf16 run holds exactly the reference's parameters and state rounded to their dtypes."""
    assert_updates_are_fp32_rounded(tiny_cfg(*optimizer, "toggles.fused_backward=false",
                                             "trainer.lr=0.01"), "cpu")


def assert_updates_are_fp32_rounded(cfg, device: str) -> None:
    """The test above on `device` (tests/test_cuda.py runs it on CUDA's kernels)."""
    torch.manual_seed(0)
    bf16 = build_optimizer(cfg, build_model(cfg.model, device, dtype=torch.bfloat16))
    reference = build_optimizer(cfg, build_model(cfg.model, device))
    for step in range(3):
        grads = [torch.randn_like(p) for p in params_of(bf16)]
        for p, p32, g in zip(params_of(bf16), params_of(reference), grads):
            p32.data.copy_(p.float())
            p.grad, p32.grad = g, g.float()
            reference.state[p32] = {k: v.to(torch.float32, copy=True) if is_float(v)
                                    else v.clone() if torch.is_tensor(v) else v
                                    for k, v in bf16.state[p].items()}
        bf16.step()
        reference.step()
        for p, p32 in zip(params_of(bf16), params_of(reference)):
            assert p.dtype == torch.bfloat16
            assert torch.equal(p, p32.bfloat16()), (step, p.shape)
            state, expected = bf16.state[p], reference.state[p32]
            assert state.keys() == expected.keys()
            for key, value in state.items():
                if torch.is_tensor(value):
                    assert torch.equal(value, expected[key].to(value.dtype)), (step, key)
                else:
                    assert value == expected[key]


def state_tensors(optimizer) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for p in params_of(optimizer) for k, v in optimizer.state[p].items()
            if torch.is_tensor(v)]


FUSED = [0, 2, 3, 8, 11, 13,  # AdamW, SGD, LOMO, AdaLomo (global norm), GaLore two-sided, full
         14, 15, 16, 17]  # APOLLO, APOLLO-Mini (SVD), Adam-mini, Muon


@pytest.mark.parametrize("optimizer", [OPTIMIZERS[i] for i in FUSED], ids=[IDS[i] for i in FUSED])
def test_bf16_weights_fused_equals_unfused_and_a_checkpoint_keeps_state_as_saved(
        tiny_cfg, trainer, optimizer):
    runs = {}
    for fused in (True, False):
        cfg = tiny_cfg(*optimizer, f"toggles.fused_backward={fused}",
                       "trainer.precision=bf16_weights")
        run = trainer(cfg)
        grad_dtypes = set()
        for p in run.model.parameters():  # each gradient as autograd computes it
            p.register_hook(lambda g: grad_dtypes.add(g.dtype))
        losses = [run.train_step() for _ in range(3)]
        assert grad_dtypes == {torch.bfloat16}
        assert {p.dtype for p in run.model.parameters()} == {torch.bfloat16}
        runs[fused] = run, losses
    (fused, fused_losses), (unfused, unfused_losses) = runs[True], runs[False]
    assert fused_losses == unfused_losses
    for p, q in zip(fused.model.parameters(), unfused.model.parameters()):
        assert torch.equal(p, q)
    resumed = trainer(cfg)
    resumed.load_state_dict(unfused.state_dict())
    kept, saved = state_tensors(resumed.optimizer), state_tensors(unfused.optimizer)
    assert [k for k, _ in kept] == [k for k, _ in saved]
    for (key, value), (_, expected) in zip(kept, saved):
        assert value.dtype == expected.dtype and torch.equal(value, expected), key
    assert [resumed.train_step() for _ in range(2)] == [unfused.train_step() for _ in range(2)]


def test_sgd_is_torch_sgd_op_for_op():
    torch.manual_seed(0)
    for momentum, weight_decay in ((0.0, 0.0), (0.9, 0.1)):
        ours = torch.randn(5, 3, requires_grad=True)
        theirs = ours.detach().clone().requires_grad_()
        a = SGD([ours], lr=0.1, momentum=momentum, weight_decay=weight_decay)
        b = torch.optim.SGD([theirs], lr=0.1, momentum=momentum, weight_decay=weight_decay)
        for _ in range(4):
            g = torch.randn(5, 3)
            ours.grad, theirs.grad = g.clone(), g.clone()
            a.step()
            b.step()
            assert torch.equal(ours, theirs)
