"""GaLore against galore-torch, bitsandbytes and torch: same numbers, same state, same errors."""

from __future__ import annotations

import io
import math

import pytest
import torch
from galore_torch import GaLoreAdamW as ReferenceGaLoreAdamW

from ablate.config.check import check
from ablate.errors import ConfigError
from ablate.memory import optimizer_state_bytes
from ablate.optim import GaLoreAdamW
from ablate.optim.galore import projectors
from ablate.train import Trainer
from conftest import assert_same_params, run_with, train

# T=3 over 8 steps: the projector is computed at steps 1, 4 and 7 (refreshed twice).
GALORE = ["optimizer=galore_adamw", "optimizer.rank=8", "optimizer.update_proj_gap=3",
          "trainer.lr=0.01", "trainer.schedule=constant", "trainer.warmup_steps=0",
          "trainer.max_steps=8"]


def reference_groups(model, proj_type: str) -> list[dict]:
    """Param groups as the GaLore repository builds them: the nn.Linear weights of attention
    and MLP modules get GaLore, everything else plain AdamW."""
    galore = [m.weight for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and ("attn" in name or "mlp" in name)]
    rest = [p for p in model.parameters() if not any(p is q for q in galore)]
    return [{"params": rest},
            {"params": galore, "rank": 8, "update_proj_gap": 3, "scale": 0.25,
             "proj_type": proj_type}]


@pytest.mark.parametrize("two_sided,proj_type", [("false", "std"), ("true", "full")])
def test_galore_equals_reference(tiny_cfg, two_sided, proj_type):
    """The runner's fused per-layer path against the reference's GaLoreAdamW stepped the
    ordinary way; one-sided (std: tall weights on the right, wide ones on the left) and
    two-sided (the reference's `full`)."""
    cfg = tiny_cfg(*GALORE, "optimizer.weight_decay=0.1", f"toggles.two_sided={two_sided}")
    ours = train(cfg)
    reference = run_with(cfg, lambda model: ReferenceGaLoreAdamW(
        reference_groups(model, proj_type), lr=0.01, weight_decay=0.1,
        no_deprecation_warning=True))
    assert ours.losses[-1] < ours.losses[0]
    assert_same_params(ours.model, reference.model)
    # Standalone, given the reference's own param groups (unnamed tensors, GaLore keys).
    standalone = run_with(cfg, lambda model: GaLoreAdamW(
        reference_groups(model, proj_type), lr=0.01, weight_decay=0.1))
    assert_same_params(standalone.model, reference.model)


@pytest.mark.parametrize("model,toggles", [
    ("llama_tiny", []), ("gpt2_tiny", []), ("llama_tiny", ["toggles.projection=random"]),
    ("llama_tiny", ["toggles.projection=pca"]), ("gpt2_tiny", ["toggles.two_sided=true"]),
    ("llama_tiny", ["toggles.eight_bit=true"]),
])
def test_fused_equals_ordinary(tiny_cfg, model, toggles):
    common = (*GALORE, f"model={model}", *toggles)
    fused = train(tiny_cfg(*common, "toggles.fused_backward=true"))
    plain = train(tiny_cfg(*common, "toggles.fused_backward=false"))
    assert fused.losses[-1] < fused.losses[0]
    assert_same_params(fused.model, plain.model)


def test_only_attention_and_mlp_weights_are_projected(tiny_cfg):
    for model, expected in [("llama_tiny", 7 * 2), ("gpt2_tiny", 4 * 2)]:
        trainer = train(tiny_cfg(*GALORE, f"model={model}"), steps=1)
        projected = sorted(name for name, p in trainer.model.named_parameters()
                           if "proj_left" in trainer.optimizer.state[p]
                           or "proj_right" in trainer.optimizer.state[p])
        assert len(projected) == expected, projected
        assert all(name.endswith(".weight") and ("attn" in name or "mlp" in name)
                   for name in projected)


def eps_matched(cls: type, eps: float = 1e-6) -> type:
    """`cls`, an Adam that adds eps after the bias correction (torch's and bitsandbytes'
    form), given eps / sqrt(1 - beta2^t) at step t: then it computes the reference's form
    (eps added to sqrt(v) before the correction) for that eps exactly."""
    class EpsMatched(cls):
        def step(self, closure=None):
            self.steps = getattr(self, "steps", 0) + 1
            for group in self.param_groups:
                group["eps"] = eps / math.sqrt(1.0 - group["betas"][1] ** self.steps)
            return super().step(closure)
    return EpsMatched


def test_no_projection_equals_reference_plain_adamw_and_torch_adamw(tiny_cfg):
    cfg = tiny_cfg(*GALORE, "toggles.projection=none", "optimizer.weight_decay=0.1")
    ours = train(cfg)
    reference = run_with(cfg, lambda model: ReferenceGaLoreAdamW(
        model.parameters(), lr=0.01, weight_decay=0.1, no_deprecation_warning=True))
    assert_same_params(ours.model, reference.model)
    # torch decays the weights before the update, the reference after: without weight decay,
    # and with eps placed alike, the two are one function. eps 1e-4 keeps float rounding of
    # near-zero gradients from being amplified (as in test_trainer.py); at eps 1e-30 one
    # weight in 8192 differs by 3e-6 after 8 steps, and eps 0 divides 0 by 0 in both.
    cfg = tiny_cfg(*GALORE, "toggles.projection=none", "optimizer.eps=1e-4")
    ours = train(cfg)
    reference = run_with(cfg, lambda model: eps_matched(torch.optim.AdamW, eps=1e-4)(
        model.parameters(), lr=0.01, weight_decay=0.0))
    assert_same_params(ours.model, reference.model)


def test_eight_bit_tracks_bitsandbytes_adamw8bit(tiny_cfg):
    """8-bit moments without projection against bitsandbytes' AdamW8bit (same codes, blocks
    and 4096-value threshold; eps matched as above), so what is left is float rounding that
    now and then lands a moment on the neighbouring code. Measured against what 8 bits
    change at all (ours with fp32 moments): a wrong block size or code map fails this."""
    import bitsandbytes as bnb

    common = (*GALORE, "model.hidden_size=128", "model.intermediate_size=256",
              "toggles.projection=none")
    ours = train(tiny_cfg(*common, "toggles.eight_bit=true"))
    fp32 = train(tiny_cfg(*common, "toggles.eight_bit=false"))
    reference = run_with(tiny_cfg(*common), lambda model: eps_matched(bnb.optim.AdamW8bit)(
        model.parameters(), lr=0.01, weight_decay=0.0))
    for (name, p), q, r in zip(ours.model.named_parameters(), reference.model.parameters(),
                               fp32.model.parameters()):
        assert (p - q).norm() < 0.1 * (p - r).norm(), name


def checkpoint_roundtrip(cfg) -> tuple[Trainer, Trainer]:
    whole = train(cfg)
    first = train(cfg, steps=4)
    buffer = io.BytesIO()
    torch.save({"model": first.model.state_dict(), "optimizer": first.optimizer.state_dict()},
               buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = Trainer(cfg)
    resumed.model.load_state_dict(saved["model"])
    resumed.optimizer.load_state_dict(saved["optimizer"])
    resumed.step = 4
    while resumed.step < 8:
        resumed.train_step()
    return whole, resumed


@pytest.mark.parametrize("toggles", [[], ["toggles.projection=random"],
                                     ["toggles.two_sided=true"], ["toggles.eight_bit=true"]])
def test_checkpoint_mid_subspace_resumes_exactly(tiny_cfg, toggles):
    whole, resumed = checkpoint_roundtrip(tiny_cfg(*GALORE, *toggles))
    for p, q in zip(whole.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


def closed_form_bytes(model, rank: int, two_sided: bool, eight_bit: bool) -> int:
    """Projectors (fp32) + two Adam moments in the projected shape for the attention and MLP
    weights, two full-size moments for every other parameter; an 8-bit moment of >= 4096
    values is one byte per value plus one fp32 absmax per block of 256."""
    def moment(n: int) -> int:
        return n + 4 * math.ceil(n / 256) if eight_bit and n >= 4096 else 4 * n

    total = 0
    for name, p in model.named_parameters():
        if p.dim() == 2 and ("attn" in name or "mlp" in name):
            rows, cols = p.shape
            if two_sided:
                total += 4 * (rows * rank + rank * cols) + 2 * moment(rank * rank)
            elif rows >= cols:
                total += 4 * rank * cols + 2 * moment(rows * rank)
            else:
                total += 4 * rows * rank + 2 * moment(rank * cols)
        else:
            total += 2 * moment(p.numel())
    return total


def moment_bytes(trainer) -> int:
    return sum(t.numel() * t.element_size() for s in trainer.optimizer.state.values()
               for key, t in s.items() if key.startswith("exp_avg"))


@pytest.mark.parametrize("two_sided", [False, True])
def test_optimizer_state_bytes_closed_form(tiny_cfg, two_sided):
    """On llama_tiny's real widths (256 x 688) at the paper's rank 128."""
    common = ("optimizer=galore_adamw", "model.hidden_size=256", "model.intermediate_size=688",
              f"toggles.two_sided={str(two_sided).lower()}")
    fp32 = train(tiny_cfg(*common, "toggles.eight_bit=false"), steps=1)
    int8 = train(tiny_cfg(*common, "toggles.eight_bit=true"), steps=1)
    for trainer, eight_bit in ((fp32, False), (int8, True)):
        assert optimizer_state_bytes(trainer.optimizer) == closed_form_bytes(
            trainer.model, 128, two_sided, eight_bit)
    assert 0.25 < moment_bytes(int8) / moment_bytes(fp32) < 0.28


@pytest.mark.parametrize("override,message", [
    ("optimizer.rank=65", "rank=65: must be <= min(rows, cols) = 64 for "
                          "model.layers.0.self_attn.q_proj.weight with shape (64, 64)"),
    ("optimizer.rank=0", "rank=0: must be > 0"),
    ("optimizer.update_proj_gap=0", "update_proj_gap=0: must be > 0"),
])
def test_bad_rank_or_gap_is_a_one_line_error_before_compute(tiny_cfg, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check(tiny_cfg("optimizer=galore_adamw", override))
    check(tiny_cfg("optimizer=galore_adamw", "optimizer.rank=65", "toggles.projection=none"))


def test_projectors_are_orthonormal_and_pca_spans_the_covariance_eigenvectors():
    torch.manual_seed(0)
    grad = torch.randn(48, 32) + 3.0  # a mean that PCA removes and SVD does not
    rank, eye = 4, torch.eye(4)
    for projection in ("svd", "pca", "random"):
        P, Q = projectors(grad, rank, True, True, projection, seed=1)
        torch.testing.assert_close(P.T @ P, eye, atol=1e-5, rtol=0)
        torch.testing.assert_close(Q @ Q.T, eye, atol=1e-5, rtol=0)
    P, Q = projectors(grad, rank, True, True, "pca", seed=1)
    for basis, samples in ((P, grad.T), (Q.T, grad)):  # rows of `samples` are the samples
        centred = samples - samples.mean(dim=0)
        eigvecs = torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -rank:]
        torch.testing.assert_close(basis @ basis.T, eigvecs @ eigvecs.T, atol=1e-4, rtol=0)
    again = projectors(grad, rank, True, True, "random", seed=1)
    other = projectors(grad, rank, True, True, "random", seed=2)
    assert torch.equal(again[0], projectors(grad, rank, True, True, "random", seed=1)[0])
    assert not torch.allclose(again[0], other[0])
