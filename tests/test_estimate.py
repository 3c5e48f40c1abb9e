"""The memory estimate against what a real tiny training run holds: optimizer state byte for
byte after real steps, weights exactly, saved activations as autograd's saved-tensor hooks
see them, and the gradients alive in a fused backward as the gradient hooks see them."""

from __future__ import annotations

import pytest
import torch
from conftest import mean_loss

from ablate.config.variants import compose
from ablate.estimate import (estimate, main, saved_activation_bytes, tied_params,
                             weight_bytes)
from ablate.fused import groups_of
from ablate.job import run_job
from ablate.memory import GB, optimizer_state_bytes
from ablate.models import build_model, count_params
from ablate.optim.build import build_optimizer
from ablate.report.__main__ import main as report_main
from ablate.train import weight_dtype

MODELS = ["model=llama_tiny", "model=gpt2_tiny"]
OPTIMIZERS = [
    ["optimizer=adamw"],
    ["optimizer=adamw", "toggles=no_adaptive_lr"],
    ["optimizer=sgd", "optimizer.momentum=0.9"],
    ["optimizer=sgd"],
    ["optimizer=lomo"],
    ["optimizer=adalomo"],
    ["optimizer=adalomo", "toggles=no_nmf"],
    ["optimizer=adalomo", "toggles=no_adaptive_lr"],
    ["optimizer=adalomo", "toggles=global_norm"],
    ["optimizer=galore_adamw", "optimizer.rank=8"],
    ["optimizer=galore_adamw", "optimizer.rank=8", "toggles=two_sided"],
    ["optimizer=galore_adamw", "optimizer.rank=8", "toggles=eight_bit"],
    ["optimizer=galore_adamw", "optimizer.rank=8", "toggles=[two_sided,eight_bit]"],
    ["optimizer=galore_adamw", "optimizer.rank=8", "optimizer.proj_type=left"],
    ["optimizer=galore_adamw", "toggles=no_projection"],
    # issue 23
    ["optimizer=apollo", "optimizer.rank=8"],
    ["optimizer=apollo_mini", "toggles=[svd_proj,no_limiter]"],
    ["optimizer=adam_mini"],
    ["optimizer=muon"],
    ["optimizer=adafactor"],  # issue 26 baselines
    ["optimizer=adafactor", "optimizer.factored=false"],
    ["optimizer=adamw8bit"],
    ["optimizer=adamw", "adapter=lora"],
    ["optimizer=adafactor", "adapter=relora", "adapter.full_rank=[norm,ln_,embed,wte,lm_head]"],
    ["optimizer=adamw8bit", "adapter=low_rank", "adapter.rank=32"],
]


# One optimizer per parameter (fused) or one over all of them: the same state.
@pytest.mark.parametrize("model,optimizer", [
    *[(model, [*optimizer, "toggles.fused_backward=true"])
      for model in MODELS for optimizer in OPTIMIZERS],
    *[("model=llama_tiny", [*optimizer, "toggles.fused_backward=false"])
      for optimizer in OPTIMIZERS[::3]],
    # bf16 weights: AdamW's and SGD's buffers and GaLore's projectors in bf16, the rest fp32
    *[(model, [*optimizer, "trainer.precision=bf16_weights"])
      for model in MODELS for optimizer in OPTIMIZERS[::2]]],
    ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_optimizer_state_and_weights_are_exact(tiny_cfg, trainer, model, optimizer):
    cfg = tiny_cfg(model, *optimizer)
    trainer = trainer(cfg)
    for _ in range(2):  # state is made at a parameter's first step, and kept
        trainer.train_step()
    predicted = estimate(cfg)
    assert predicted.optimizer_state == optimizer_state_bytes(trainer.optimizer)
    assert predicted.weights == sum(p.numel() * p.element_size()
                                    for p in trainer.model.parameters())


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "bf16_weights"])
@pytest.mark.parametrize("shape", [[], ["trainer.batch_size=3", "trainer.seq_len=24",
                                        "model.num_heads=4", "model.num_layers=3"]])
@pytest.mark.parametrize("model", MODELS)
def test_saved_activations_are_what_autograd_saves(tiny_cfg, trainer, model, shape, precision,
                                                   checkpointing):
    """With activation checkpointing (`trainer.activation_checkpointing`) the forward saves
    each layer's input only; the layer is recomputed in the backward."""
    cfg = tiny_cfg(model, *shape, f"trainer.precision={precision}",
                   f"trainer.activation_checkpointing={checkpointing}")
    t = cfg.trainer
    assert saved_bytes(trainer(cfg), cfg) == saved_activation_bytes(
        cfg.model, t.batch_size, t.seq_len, precision, checkpointing)


FULL_RANK = "adapter.full_rank=[embed,norm,lm_head,wte,wpe,ln_]"


@pytest.mark.parametrize("model,precision,adapter", [
    ("model=llama_tiny", "fp32", ["adapter=lora"]),
    ("model=llama_tiny", "bf16", ["adapter=lora", "adapter.dropout=0.1"]),
    ("model=gpt2_tiny", "bf16_weights", ["adapter=relora", "adapter.rank=4",
                                         "adapter.dropout=0.2"]),
    ("model=gpt2_tiny", "bf16", ["adapter=low_rank", "adapter.rank=4"])], ids=str)
def test_adapter_activations_are_what_autograd_saves(tiny_cfg, trainer, model, precision,
                                                     adapter):
    """An adapter's own saved tensors (its rank-r intermediates; autocast's copies of A, B
    and an input; with dropout, the dropped inputs and masks in place of the frozen
    projections' inputs) on every projection, the norms, embeddings and head in full."""
    cfg = tiny_cfg(model, f"trainer.precision={precision}", *adapter, FULL_RANK)
    t = cfg.trainer
    assert saved_bytes(trainer(cfg), cfg) == saved_activation_bytes(
        cfg.model, t.batch_size, t.seq_len, precision, adapter=cfg.adapter)


def saved_bytes(trainer, cfg) -> int:
    """The bytes of the tensors (parameters excluded) autograd saves in one training step of
    `trainer` on a random batch, each storage once, as its saved-tensor hooks see them."""
    params = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
    saved = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    t = cfg.trainer
    x = torch.randint(0, cfg.model.vocab_size, (t.batch_size, t.seq_len))
    y = torch.randint(0, cfg.model.vocab_size, (t.batch_size, t.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), trainer.autocast:
        loss = mean_loss(trainer, {"input_ids": x, "targets": y})
    loss.backward()
    return sum(saved.values())


@pytest.mark.parametrize("precision,width", [("fp32", 4), ("bf16_weights", 2)])
@pytest.mark.parametrize("model", MODELS)
def test_fused_gradients_alive_are_one_at_a_time_plus_a_tied_embedding(tiny_cfg, model,
                                                                        precision, width):
    """Counting hooks, registered before the fused optimizer's, see every live `.grad` just
    before each update: one layer's at most (multi-tensor updates, a layer at a time); a
    tied embedding's gradient waits in autograd's buffer (not in `.grad`) until its last
    use, so its hook fires once, after every other."""
    cfg = tiny_cfg(model, f"trainer.precision={precision}")
    m = build_model(cfg.model, dtype=weight_dtype(cfg.trainer))
    params = list(m.parameters())
    alive, order = [], []

    def count(p: torch.Tensor) -> None:
        order.append(p)
        alive.append(sum(q.grad.numel() * q.grad.element_size()
                         for q in params if q.grad is not None))

    for p in params:
        p.register_post_accumulate_grad_hook(count)
    optimizer = build_optimizer(cfg, m)  # noqa: F841 - its hooks hold it only weakly
    x = torch.randint(0, cfg.model.vocab_size, (4, 32))
    m(input_ids=x, labels=x).loss.backward()
    assert all(p.grad is None for p in params)  # the fused optimizer freed every one
    tied = tied_params(m)
    assert len(order) == len(params) and (not tied or order[-1] is tied[0])
    held = sum(p.numel() * width for p in tied)
    assert optimizer.grouped
    groups = groups_of([name for name, _ in m.named_parameters()])
    layers: dict[str, int] = {}  # gradient bytes per group (the tied embedding: its own)
    for name, p in m.named_parameters():
        if all(p is not q for q in tied):
            layers[groups[name]] = layers.get(groups[name], 0) + p.numel() * width
    assert max(alive) == max(held, *layers.values())
    assert estimate(cfg).gradients == held + max(layers.values())


def test_unfused_gradients_are_all_of_them(tiny_cfg):
    cfg = tiny_cfg("toggles.fused_backward=false")
    assert estimate(cfg).gradients == weight_bytes(build_model(cfg.model, "meta"), 4)


# The tiny model (conftest.TINY), fp32: embedding and output layer 512 x 64 (the largest
# gradients), a decoder block (the largest unit: 4 x 64 x 64, 3 x 128 x 64, 2 norms of 64),
# its largest matrices (gate, up, down) 128 x 64.
EMBEDDING, BLOCK, MLP = 512 * 64 * 4, (4 * 64 * 64 + 3 * 128 * 64 + 2 * 64) * 4, 128 * 64 * 4
SHARDED = ["trainer.processes=2", "trainer.sharding=fsdp"]


def test_a_rank_holds_its_rows_of_sharded_state_and_replicated_state_whole(tiny_cfg):
    """AdaLomo over 3 ranks: rank 0's ceil(rows / 3) rows of each row statistic and of
    each 1-D parameter's second moment, and each matrix's column statistics whole (n
    numbers, replicated). tests/test_sharding.py compares every optimizer's with the state
    a sharded run holds."""
    model, ranks = build_model(tiny_cfg().model, "meta"), 3
    cfg = tiny_cfg("optimizer=adalomo", f"trainer.processes={ranks}", "trainer.sharding=fsdp")
    assert estimate(cfg).optimizer_state == sum(
        4 * (-(-p.shape[0] // ranks) + (p.shape[1] if p.dim() == 2 else 0))
        for p in model.parameters())


def test_a_tied_embedding_is_gathered_whole_by_the_root_all_step(tiny_cfg):
    """GPT-2 sharded over 2: its weights' halves, and whole what FSDP's root keeps gathered
    from the forward's start to the backward's end: every parameter outside the decoder
    blocks (the embedding, also the output layer, the positions, the final norm)."""
    model = build_model(tiny_cfg("model=gpt2_tiny").model, "meta")
    root = sum(p.numel() * 4 for name, p in model.named_parameters()
               if not name.startswith("transformer.h."))
    assert estimate(tiny_cfg("model=gpt2_tiny", *SHARDED)).weights == root + sum(
        -(-p.shape[0] // 2) * (p.numel() // p.shape[0]) * 4 for p in model.parameters())


def test_replicated_processes_count_the_flat_copies_of_gradients_they_all_reduce(tiny_cfg):
    """Fused: the flat copies of the `buckets_in_flight` largest buckets, beside their
    gradients (buckets of one gradient each here: the largest are the embedding's and the
    output layer's); unfused, DDP's flat copy of every gradient."""
    one = estimate(tiny_cfg())
    fused = one.gradients
    # 100: more buckets in flight than there are, so a flat copy of every gradient
    for in_flight, copies in ((1, EMBEDDING), (2, 2 * EMBEDDING), (100, one.weights)):
        assert estimate(tiny_cfg("trainer.processes=2", "trainer.bucket_mb=0.001",
                                 f"trainer.buckets_in_flight={in_flight}")
                        ).gradients == fused + copies
    unfused = estimate(tiny_cfg("toggles.fused_backward=false")).gradients
    assert estimate(tiny_cfg("toggles.fused_backward=false", "trainer.processes=2")
                    ).gradients == 2 * unfused


@pytest.mark.parametrize("optimizer,gathered", [
    (["optimizer=muon"], MLP),  # its update U, each step
    (["optimizer=galore_adamw", "optimizer.rank=8"], MLP),  # svd's gradient, at a refresh
    (["optimizer=galore_adamw", "optimizer.rank=8", "toggles=random_proj"], 0)], ids=str)
def test_sharded_gradients_are_shards_a_unit_whole_twice_and_a_gathered_matrix(
        tiny_cfg, optimizer, gathered):
    """Sharded over 2 (fused): the fused gradient's shard, the largest unit's whole gradient
    and FSDP's flat copy of it, and the largest matrix an update gathers whole."""
    one = estimate(tiny_cfg(*optimizer)).gradients
    assert estimate(tiny_cfg(*optimizer, *SHARDED)).gradients == (
        one // 2 + 2 * BLOCK + gathered)


@pytest.mark.parametrize("name,params_b", [("llama_13b", 13.0), ("llama_30b", 32.5),
                                            ("llama_65b", 65.3)])
def test_llama_1_sizes_build_on_meta(name, params_b):
    model = build_model(compose([f"model={name}"]).model, "meta")
    assert count_params(model) / 1e9 == pytest.approx(params_b, rel=0.01)


def test_galore_accounting_is_two_bytes_a_value_of_weights_and_state():
    cfg = compose(["model=llama_60m", "optimizer=adamw"])
    paper = estimate(cfg, accounting="galore")
    model = build_model(cfg.model, "meta")
    params = count_params(model)
    assert (paper.weights, paper.gradients, paper.activations) == (2 * params, 0, 0)
    steps = 4 * len(list(model.parameters()))  # AdamW's float32 step count per tensor
    assert paper.optimizer_state == 2 * 2 * params + steps


def test_table_sweeps_and_skips_combinations_that_make_no_sense(capsys):
    main(["--table", "model=llama_20m", "optimizer=adamw,adalomo", "toggles=all,no_nmf"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| llama_20m adamw fused", "| llama_20m adalomo fused",
        "| llama_20m adalomo nmf=False fused"]


def test_table_rows_name_precision_and_checkpointing_and_follow_them(capsys):
    main(["--table", "model=llama_20m", "optimizer=adamw",
          "trainer.precision=fp32,bf16_weights", "trainer.activation_checkpointing=false,true"])
    rows = [r.split(" | ") for r in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == [
        "| llama_20m adamw fused", "| llama_20m adamw fused checkpointing",
        "| llama_20m adamw fused bf16_weights",
        "| llama_20m adamw fused bf16_weights checkpointing"]
    cfg = compose(["model=llama_20m", "trainer.precision=bf16_weights",
                   "trainer.activation_checkpointing=true"])
    assert rows[3][-1] == f"{estimate(cfg).total / GB:.3f} |"
    totals = [float(r[-1].rstrip(" |")) for r in rows]
    assert totals[1] < totals[0] and totals[2] < totals[0] and totals[3] < totals[2]


@pytest.mark.parametrize("override,message", [
    ("trainer.seq_len=-1", "trainer.seq_len=-1: must be > 0"),
    ("model=llama_2b", "In 'config': Could not find 'model/llama_2b'; allowed model options: gpt2_large"),
    ("optimizer.rank=8", "optimizer.rank: unknown key (allowed under optimizer: name, lr, betas"),
])
def test_bad_input_is_one_line_before_any_compute(override, message):
    with pytest.raises(SystemExit) as exit_:
        main([override])
    assert str(exit_.value).startswith(f"ablate.estimate: error: {message}")
    assert "\n" not in str(exit_.value)


def test_summary_and_report_show_the_estimate_beside_the_peak(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg("trainer.max_steps=2")
    summary = run_job(cfg, tmp_path / "sweep" / "0", [])
    predicted = estimate(cfg)
    assert summary["estimated_memory_gb"] == predicted.total / GB
    assert summary["estimated_memory"]["optimizer_state"] * GB == predicted.optimizer_state
    report_main([str(tmp_path / "sweep")])
    head, _, row = [line for line in capsys.readouterr().out.splitlines()
                    if line.startswith("|")][:3]
    cells = dict(zip(head.split(" | "), row.split(" | ")))
    assert cells["est. GB"] == f"{predicted.total / GB:.4g}"


def test_incompatible_toggle_alone_is_an_error_not_an_empty_answer():
    with pytest.raises(SystemExit, match="toggles.nmf is not supported by optimizer=adamw"):
        main(["optimizer=adamw", "toggles=no_nmf"])
