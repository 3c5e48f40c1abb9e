"""Multi-tensor updates (`update_many`, `trainer.foreach`): the foreach form of each
optimizer's math equals its per-tensor form bit for bit (the same ops, on CPU each foreach
op runs the per-tensor op), in fp32 and for bf16 weights; the fused backward's groups (a
decoder layer at a time) equal the per-parameter update and free every gradient."""

from __future__ import annotations

import pytest
import torch

from ablate.fused import OptimizerInBackward, groups_of
from ablate.optim import (Adafactor, AdaLomo, AdamMini, AdamW, Apollo, GaLoreAdamW, Lomo, Muon,
                          SGD)

# GaLore and APOLLO project the 2-D `*_proj` weights (tall and wide), at rank 2 or 1, the
# projectors made anew every 2 steps; the 4096-value moments of k_proj (projected) and of
# embed are 8-bit with eight_bit.
PARAMS = [("q_proj", (6, 5)), ("norm", (5,)), ("conv", (3, 4, 2)), ("up_proj", (3, 7)),
          ("k_proj", (2048, 2)), ("embed", (64, 64))]
PROJECTED = dict(lr=0.1, weight_decay=0.1, rank=2, update_proj_gap=2)
OPTIMIZERS = [
    (AdamW, dict(lr=0.1, weight_decay=0.1)),
    (AdamW, dict(lr=0.1, adaptive_lr=False)),
    (SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
    (SGD, dict(lr=0.1)),
    (Lomo, dict(lr=0.1, weight_decay=0.1, clip_grad_norm=1.0, clip_grad_value=0.5,
                loss_scale=2.0)),
    (AdaLomo, dict(lr=0.1, weight_decay=0.1)),
    (AdaLomo, dict(lr=0.1, grouped_norm="global", clip_grad_norm=1.0)),
    (AdaLomo, dict(lr=0.1, grouped_norm=False, weight_decay=0.1, nmf=False)),
    (AdaLomo, dict(lr=0.1, adaptive_lr=False)),
    (Adafactor, dict(lr=0.1, weight_decay=0.1)),
    (Adafactor, dict(lr=0.1, factored=False, relative_step=False, beta2=0.9)),
    (GaLoreAdamW, PROJECTED),  # svd, one-sided (std)
    (GaLoreAdamW, dict(PROJECTED, two_sided=True)),
    (GaLoreAdamW, dict(PROJECTED, projection="none")),
    (GaLoreAdamW, dict(PROJECTED, eight_bit=True)),
    (GaLoreAdamW, dict(PROJECTED, projection="random", eps=1e-3)),
    (Apollo, PROJECTED),  # channel-wise, random, limiter
    (Apollo, dict(PROJECTED, rank=1, scale=128.0, scaling="tensor")),  # APOLLO-Mini
    (Apollo, dict(PROJECTED, projection="svd", limiter=False)),
    # Muon on the three matrices (tall and wide), AdamW on the rest
    (Muon, dict(lr=0.1, weight_decay=0.1, muon_modules=["q_proj", "up_proj", "k_proj"],
                adamw_weight_decay=0.1, adamw_lr_ratio=0.5)),
    (Muon, dict(lr=0.1, nesterov=False, ns_dtype="float32", adjust_lr_fn="match_rms_adamw",
                muon_modules=["q_proj", "up_proj", "k_proj"])),
    (AdamMini, dict(lr=0.1, weight_decay=0.1, num_heads=5)),
    (AdamMini, dict(lr=0.1, weight_decay=0.1, partition="tensor")),
]
# Adam-mini's blocks are by name: PARAMS as a query (per head), a norm (one block, no
# decay), a bias (Adam), a value, an MLP weight and an embedding (per row).
NAMES = {AdamMini: ["q_proj.weight", "norm.weight", "mlp.bias", "v_proj.weight",
                    "up_proj.weight", "embed_tokens.weight"]}


def stepped(cls, options: dict, foreach: bool, dtype: torch.dtype) -> list[torch.Tensor]:
    """Parameters of PARAMS after four steps on fixed gradients, the second with a
    parameter left out (its step count then lags: a bucket of its own)."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape).to(dtype)) for _, shape in PARAMS]
    names = NAMES.get(cls, [name for name, _ in PARAMS])
    opt = cls(list(zip(names, params)), **options)
    opt.foreach = foreach
    for step in range(4):
        for i, p in enumerate(params):
            p.grad = None if (step, i) == (1, 2) else torch.randn(p.shape).to(dtype)
        opt.step()
    return params


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cls, options", OPTIMIZERS,
                         ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(OPTIMIZERS)])
def test_the_multi_tensor_update_equals_the_per_tensor_one_bit_for_bit(cls, options, dtype,
                                                                        monkeypatch):
    monkeypatch.setattr("ablate.optim.base.CHUNK", 1000)  # slices cut and batched
    per_tensor = stepped(cls, options, False, dtype)
    multi = stepped(cls, options, True, dtype)
    for a, b in zip(per_tensor, multi):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    assert not torch.equal(per_tensor[0], torch.randn(PARAMS[0][1]).to(dtype))  # it stepped


class TwoLayers(torch.nn.Module):
    """An embedding, two numbered layers (one with a parameter that gets no gradient), a
    final norm and a head: four groups (the norm's and the head's parameters one)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 6)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(6, 6) for _ in range(2))
        self.unused = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(3))])
        self.layers[1].register_parameter("spare", torch.nn.Parameter(torch.zeros(2)))
        self.norm = torch.nn.LayerNorm(6)
        self.head = torch.nn.Linear(6, 11, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return self.head(self.norm(x))


@pytest.mark.parametrize("cls, options", [
    OPTIMIZERS[0], OPTIMIZERS[5], OPTIMIZERS[6],
    (Muon, dict(lr=0.1, weight_decay=0.1, muon_modules=["layers"])),  # AdamW: embed, head
    (AdamMini, dict(lr=0.1, weight_decay=0.1)),  # per token, per tensor, Adam for biases
], ids=["AdamW", "AdaLomo", "AdaLomo-global", "Muon", "AdamMini"])
def test_fused_groups_equal_the_per_parameter_update_and_free_the_gradients(cls, options):
    """Grouped (foreach) against one update per parameter, fused, and the unfused step():
    the same parameters bit for bit after three steps; each group's update is one call."""
    options = {k: v for k, v in options.items() if k != "clip_grad_norm"}

    def make(params, foreach: bool):
        opt = cls(params, **options)
        opt.foreach = foreach
        return opt
    results, calls = {}, []
    many = cls.update_many
    for path in ("grouped", "per parameter", "unfused"):
        torch.manual_seed(0)
        model = TwoLayers()
        tokens = torch.randint(0, 11, (4, 5))
        if path == "unfused":
            opt = cls(model.named_parameters(), **options)
        else:
            opt = OptimizerInBackward(model.named_parameters(), lambda params: make(
                params, path == "grouped"))
            assert opt.grouped == (path == "grouped")
        if path == "grouped":
            cls.update_many = lambda self, entries: calls.append(len(entries)) or many(
                self, entries)
        try:
            for _ in range(3):
                loss = model(tokens).square().mean()
                if path == "unfused":
                    loss.backward()
                    opt.step()
                    opt.zero_grad()
                else:
                    opt.backward(loss, None)
                    assert all(p.grad is None for p in model.parameters())
        finally:
            cls.update_many = many
        results[path] = [p.detach().clone() for p in model.parameters()]
    for path in ("per parameter", "unfused"):
        for a, b in zip(results["grouped"], results[path]):
            assert torch.equal(a, b), path
    # the head with the norm, layer 0, the embedding, then layer 1 (2 of its 3 parameters)
    # after backward
    assert calls == [3, 2, 1, 2] * 3


def test_groups_are_the_layers_the_tail_and_single_parameters():
    names = ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight",
             "model.layers.0.input_layernorm.weight", "model.layers.1.mlp.up_proj.weight",
             "extra.0", "model.norm.weight", "lm_head.weight"]
    assert groups_of(names) == {
        "model.embed_tokens.weight": "model.embed_tokens.weight",
        "model.layers.0.mlp.up_proj.weight": "model.layers.0",
        "model.layers.0.input_layernorm.weight": "model.layers.0",
        "model.layers.1.mlp.up_proj.weight": "model.layers.1",
        "extra.0": "extra.0",  # a ParameterList's entry: numbered, a layer of its own
        "model.norm.weight": "model.norm.weight", "lm_head.weight": "model.norm.weight"}
    assert groups_of(["embed.weight", "head.weight"]) == {  # no layers: each on its own
        "embed.weight": "embed.weight", "head.weight": "head.weight"}
