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


def effective_weights(model) -> dict[str, torch.Tensor]:
    """Each adapted layer's weight as its forward uses it: W + (alpha / rank) B A."""
    from ablate.adapter import lora_layers

    return {id(layer): layer.get_base_layer().weight + layer.get_delta_weight("default")
            for layer in lora_layers(model)}


def test_relora_merges_restarts_and_drops_the_adapter_state(tiny_cfg):
    """At a restart the function is unchanged (the merged weight is W + (alpha / rank) B A),
    B is zero again, A redrawn, and the adapter's optimizer state is gone."""
    from ablate.adapter import lora_layers

    trainer = train(tiny_cfg(*LORA, "adapter=relora", "adapter.restart_every=3",
                              "adapter.full_rank=[norm]"), steps=2)
    norms = [p for n, p in trainer.model.named_parameters() if "norm" in n]
    assert all(p.requires_grad for p in norms)
    trainer.train_step()  # step 3: its update, then the restart
    after = effective_weights(trainer.model)
    layers = lora_layers(trainer.model)
    assert all(not layer.lora_B["default"].weight.any() for layer in layers)
    assert all(layer.lora_A["default"].weight.any() for layer in layers)
    assert set(trainer.optimizer.state) == set(norms)  # the full-rank norms keep theirs
    # the same steps without the restart end at the same function
    same = train(tiny_cfg(*LORA, "adapter.full_rank=[norm]"), steps=3)
    for key, want in zip(after, effective_weights(same.model).values()):
        torch.testing.assert_close(after[key], want, rtol=1e-5, atol=1e-6)


def test_low_rank_weights_are_b_a_from_scratch(tiny_cfg):
    from ablate.adapter import lora_layers

    trainer = train(tiny_cfg(*LORA, "adapter=low_rank"), steps=2)
    for layer in lora_layers(trainer.model):
        assert not layer.get_base_layer().weight.any()
        assert layer.lora_A["default"].weight.any() and layer.lora_B["default"].weight.any()
    assert trainer.losses[-1] < trainer.losses[0]


def test_save_model_writes_peft_adapter_and_merged_model(tiny_cfg, tmp_path):
    """peft's files hold the trained A and B; the merged model computes what the adapted
    one did."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    trainer = train(tiny_cfg(*LORA, "adapter.save_merged=true"), steps=2)
    trained = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
               if p.requires_grad}
    x = torch.randint(0, 512, (2, 8))
    logits = trainer.model(input_ids=x).logits.detach()
    trainer.save_model(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert len(saved) == len(trained)
    for name, value in trained.items():
        torch.testing.assert_close(saved[name.replace(".default", "")], value, rtol=0, atol=0)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(merged(input_ids=x).logits, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("adapter", ["lora", "relora"])
def test_adapter_with_bf16_weights_fused_equals_unfused(tiny_cfg, trainer, adapter):
    """The adapter's A and B are stored in bf16 like the rest (peft's fp32 upcast is off),
    and updated in fp32 like every weight; a restart at step 2 on both paths."""
    runs = []
    for fused in ("true", "false"):
        run = trainer(tiny_cfg(*LORA, f"adapter={adapter}", "adapter.restart_every=2",
                               "trainer.precision=bf16_weights",
                               f"toggles.fused_backward={fused}"))
        runs.append((run, [run.train_step() for _ in range(3)]))
        assert {p.dtype for p in run.model.parameters()} == {torch.bfloat16}
    (fused, fused_losses), (unfused, unfused_losses) = runs
    assert fused_losses == unfused_losses
    for p, q in zip(fused.model.parameters(), unfused.model.parameters()):
        assert torch.equal(p, q)


# Every baseline on 2 gloo processes against 1 (tests/test_distributed.py's cases: the plain
# batch, fused and not), in tests/test_sharding.py's one 2-process launch.
# 8-bit moments: a summation-order difference that moves a moment across a code boundary
# changes the step by about lr / 100 (1.5e-6 measured at lr 1e-4): the lr keeps it under atol.
BASELINES = {
    "adafactor": ["optimizer=adafactor"],
    "adamw8bit": ["optimizer=adamw8bit", "optimizer.eps=1e-4", "trainer.lr=1e-5"],
    "lora": ["adapter=lora", "optimizer.eps=1e-4"],
    "relora": ["adapter=relora", "adapter.restart_every=2", "optimizer.eps=1e-4"],
}


@pytest.mark.parametrize("optimizer", [["optimizer=adamw8bit"],
                                       ["optimizer=galore_adamw", "optimizer.rank=8",
                                        "toggles=eight_bit"]])
def test_eight_bit_states_on_a_device_without_bitsandbytes_kernels_are_refused(
        tiny_cfg, monkeypatch, optimizer):
    """A CUDA device torch has, where this bitsandbytes registered no CUDA kernels (as with
    a CPU-only torch build): refused at the check, one line."""
    from ablate.config.check import check
    from ablate.errors import ConfigError

    cfg = tiny_cfg(*optimizer)
    check(cfg)  # on the CPU: its kernels are there
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    kernels = torch._C._dispatch_has_kernel_for_dispatch_key(
        "bitsandbytes::optimizer_update_8bit_blockwise", "CUDA")
    for device in ("cuda", "auto"):
        if kernels:
            check(with_values(cfg, f"trainer.device={device}"))
        else:
            with pytest.raises(ConfigError, match="trainer.device=cuda: bitsandbytes has no "
                               "8-bit kernel for it"):
                check(with_values(cfg, f"trainer.device={device}"))


@pytest.mark.slow  # the corpus tokenized anew with the checkpoint's tokenizer
def test_lora_on_a_pretrained_checkpoint_trains_only_the_adapter(tiny_cfg, tmp_path):
    from transformers import AutoModelForCausalLM

    from test_glue import save_llama

    model_dir = save_llama(tmp_path / "llama")
    trainer = train(tiny_cfg(*LORA, f"model.pretrained={model_dir}", "adapter.rank=4"),
                    steps=3)
    original = dict(AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())
    for name, p in trainer.model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad
        else:  # base_model.model.<name>, or <name>.base_layer.weight
            plain = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert not p.requires_grad and torch.equal(p, original[plain]), name
    assert trainer.losses[-1] < trainer.losses[0]
