"""Memory of a training job, estimated from its config alone.

The model and the optimizer are built on the `meta` device (no memory is allocated), so the
figures hold for sizes no machine at hand can train. The terms, in bytes:

- weights: every parameter, at the dtype `trainer.precision` stores it in (2 bytes with
  `bf16_weights`, else 4);
- gradients: of the trained parameters (with an adapter, `ablate/adapter.py`, its own):
  all of them without a fused backward (and with gradient accumulation); with
  one, those alive at once: the largest single gradient (with multi-tensor updates, the
  largest layer's gradients: `ablate/fused.py`), plus a tied embedding's, which autograd
  holds from the output layer's backward until the input embedding's;
- optimizer state: the tensors each optimizer creates for a parameter at its first step,
  made by the optimizer's own `init_state` on the meta device and counted as
  `optimizer_state_gb` counts them after training;
- activations: the tensors the forward saves for the backward (a closed form of what the
  `transformers` LLaMA and GPT-2 save, with SDPA attention, with and without
  `trainer.activation_checkpointing`), plus the two logits-sized gradients alive at the
  start of the backward;
- total: the peak, at the larger of two moments: the start of the backward (weights, state,
  all activations, the gradients alive at once) and, without a fused backward, the update
  (weights, state, every gradient; the activations are freed by then).

Sharded (`trainer.sharding=fsdp` on `trainer.processes=N`), the figures are one rank's
(rank 0's, which never holds fewer rows than another): its rows of every weight, of the
gradients and of the state sharded by rows; whole, the root's weights (outside every
unit, gathered all step) and the state that stays replicated (`Base.kept_whole`); the
largest unit's whole gradient twice (as autograd made it, and FSDP's flat copy that is reduce-scattered;
in its backward, its gathered weight and its gradient); off the CPU also the decoder block
FSDP prefetches and the previous unit's reduce-scatter input FSDP keeps; the largest matrix
an update gathers whole (`Base.gathers`); the activations of the rank's own batch.
Replicated on N processes, the gradients' all-reduce buffers too (`bucket_bytes`; unfused,
DDP's flat copy of every gradient).

`python -m ablate.estimate [--table] [--accounting galore] [overrides]`
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass

import torch
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .adapter import apply_adapter
from .config.check import checked
from .config.overrides import check_overrides
from .config.variants import compose, expand
from .distributed import BucketedAllReduce
from .errors import ConfigError, IncompatibleToggles, error_line
from .fused import OptimizerInBackward, groups_of
from .memory import GB, optimizer_state_bytes
from .models import build_model, shape
from .optim.base import Base
from .optim.build import build_optimizer
from .sharding import blocks, units
from .train import weight_dtype


@dataclass
class Estimate:
    weights: int
    gradients: int
    optimizer_state: int
    activations: int
    total: int

    def gb(self) -> dict:
        return {k: v / GB for k, v in asdict(self).items()}


def estimate(cfg: DictConfig, accounting: str = "full") -> Estimate:
    """The job's memory, as its `trainer.precision` and `trainer.activation_checkpointing`
    make it. `accounting="galore"` is the GaLore paper's (its Table 6): weights and
    optimizer state only, every value 2 bytes (8-bit codes 1)."""
    t = cfg.trainer
    model = apply_adapter(build_model(cfg.model, "meta", dtype=weight_dtype(t)), cfg.adapter)
    optimizer = build_optimizer(cfg, model)
    init_states(optimizer)
    if accounting == "galore":
        kept = weight_bytes(model, 2), paper_state_bytes(optimizer)
        return Estimate(kept[0], 0, kept[1], 0, sum(kept))
    width = weight_width(t.precision.value)
    params = weight_bytes(model, width)
    state = optimizer_state_bytes(optimizer)
    accumulating = t.grad_accum_steps > 1
    grouped = isinstance(optimizer, OptimizerInBackward) and optimizer.grouped
    gradients = gradient_bytes(model, width, not cfg.toggles.fused_backward or accumulating,
                               grouped)
    ranks = t.processes if t.sharding.value == "fsdp" else 1
    in_flight = 0  # replicated on several processes: the gradients' all-reduce buffers
    if ranks > 1:
        # the root's parameters (outside every unit: the final norm; GPT-2's tied embedding
        # and positions too), gathered from the forward's start to the backward's end
        unit_bytes = [weight_bytes(unit, width) for unit in units(model)]
        root = weight_bytes(model, width) - sum(unit_bytes)
        largest = max(root, *unit_bytes)
        # Off the CPU (trainer.device auto or cuda), FSDP prefetches the next decoder block
        # in the backward and keeps a unit's reduce-scatter input until the next unit's
        # (sharding.shard does neither on CPU, where gloo's collectives are synchronous).
        gpu = t.device.value != "cpu"
        block = max(weight_bytes(unit, width) for unit in blocks(model))
        params = sum(rank_rows(p, ranks) for p in model.parameters()) * width + root + (
            block if gpu else 0)
        state = rank_state_bytes(optimizer, ranks)
        # A unit's whole gradient and FSDP's flat copy of it, reduce-scattered (or, in its
        # backward, its weight gathered and its gradient); accumulating, FSDP keeps every
        # unit's gradient whole until the last micro-batch. And the largest matrix an update
        # gathers whole.
        gradients = (gradients + largest if accumulating else gradients // ranks + 2 * largest) \
            + (largest if gpu else 0) + gathered_bytes(optimizer, width)
    elif t.processes > 1:
        in_flight = (bucket_bytes(model, t.bucket_mb, t.buckets_in_flight, width)
                     if cfg.toggles.fused_backward
                     else gradient_bytes(model, width, True))
        gradients += in_flight
    activations = activation_bytes(shape(cfg.model), t.batch_size, t.seq_len, t.precision.value,
                                   t.activation_checkpointing, cfg.adapter)
    # Accumulated gradients are all alive in every backward but the first; else a backward
    # starts with only those alive at once (the previous step's were freed). Sharded, the
    # largest unit's whole gradients (in the backward) are counted beside every activation.
    at_backward = activations + (gradients if accumulating or ranks > 1
                                 else gradient_bytes(model, width, False, grouped) + in_flight)
    return Estimate(params, gradients, state, activations,
                    params + state + max(at_backward, gradients))


def summary_fields(cfg: DictConfig) -> dict:
    """A job's estimate in GB, its total beside the measured peak; none for an optimizer
    class the estimator does not know (the job still trains)."""
    try:
        gb = estimate(cfg).gb()
    except ConfigError:
        return {"estimated_memory_gb": None}
    return {"estimated_memory_gb": gb.pop("total"), "estimated_memory": gb}


def weight_width(precision: str) -> int:
    """Bytes of a stored weight value (and of a gradient, and of a buffer like the weight)."""
    return 2 if precision == "bf16_weights" else 4


def weight_bytes(model: torch.nn.Module, width: int) -> int:
    return sum(p.numel() for p in model.parameters()) * width


def bucket_bytes(model: torch.nn.Module, bucket_mb: float, in_flight: int, width: int) -> int:
    """The flat copies of gradients a replicated fused backward all-reduces at once
    (`distributed.BucketedAllReduce`'s buckets: about `bucket_mb`, or one larger gradient;
    at most `in_flight` of them, counted as the largest), alive beside the gradients they
    copy. (Unfused, DDP keeps a flat copy of all of them.)"""
    params = [p for p in model.parameters() if p.requires_grad]
    buckets = BucketedAllReduce(params, int(bucket_mb * 2**20), in_flight).buckets
    sizes = sorted(sum(p.numel() for p in bucket) for bucket in buckets)
    return sum(sizes[-in_flight:]) * width


def tied_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters used twice in the forward (GPT-2's embedding is also its output layer)."""
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return [inp.weight] if out is not None and out.weight is inp.weight else []


def gradient_bytes(model: torch.nn.Module, width: int, all_grads: bool,
                   grouped: bool = False) -> int:
    """Gradients of the trained parameters (with an adapter, its own and the full-rank
    ones). With a fused backward each gradient is freed by its own hook, so one is alive at
    a time, or, `grouped` (multi-tensor updates, `ablate/fused.py`), by its group's update,
    so one group's are (a layer's, or the final norm's with the head's); a tied parameter's
    gradient lives in autograd's buffer from its first use in the backward to its last,
    beside each of the others."""
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if all_grads:
        return sum(p.numel() for _, p in trained) * width
    tied = [p for p in tied_params(model) if p.requires_grad]
    held = sum(p.numel() for p in tied)
    names = [name for name, _ in trained]
    groups = groups_of(names) if grouped else {name: name for name in names}
    rest: dict[str, int] = {}  # per group (a parameter on its own unless grouped)
    for name, p in trained:
        if all(p is not q for q in tied):
            rest[groups[name]] = rest.get(groups[name], 0) + p.numel()
    return (held + max(rest.values(), default=0)) * width


def init_states(optimizer) -> None:
    """Every parameter's optimizer state, created by the optimizer as at its first step (on
    the meta device: shapes and dtypes, no memory). An optimizer class not built on
    `optim.base.Base` is not known here."""
    for opt in instances(optimizer):
        if not isinstance(opt, Base):
            raise ConfigError(f"optimizer class {type(opt).__name__}: the estimator counts the "
                              "state of the optimizers in ablate.optim")
        for group in opt.param_groups:
            for p in group["params"]:
                opt.init_state(p, group)


def instances(optimizer) -> list:
    """The optimizers of a fused backward (one per parameter), or the optimizer itself."""
    return list(optimizer.optimizers.values()) if isinstance(optimizer, OptimizerInBackward) \
        else [optimizer]


def rank_rows(t: torch.Tensor, ranks: int) -> int:
    """The values of rank 0's rows of `t` sharded by rows over `ranks` (FSDP's `Shard(0)`:
    ceil(rows / N) each, so rank 0 has no fewer than another); all of a 0-d `t`."""
    return -(-t.shape[0] // ranks) * (t.numel() // t.shape[0]) if t.dim() else t.numel()


def rank_state_bytes(optimizer, ranks: int) -> int:
    """Rank 0's optimizer state, sharded over `ranks` (`optimizer_state_gb` of a sharded
    job): its rows of each state tensor sharded by rows, and each one kept whole
    (`Base.kept_whole`)."""
    return sum((value.numel() if opt.kept_whole(p, group, key) else rank_rows(value, ranks))
               * value.element_size()
               for opt in instances(optimizer) for group in opt.param_groups
               for p in group["params"] for key, value in opt.state[p].items()
               if torch.is_tensor(value))


def gathered_bytes(optimizer, width: int) -> int:
    """The largest matrix an update all-gathers whole on a sharded job (`Base.gathers`),
    one at a time."""
    return max([0] + [p.numel() * width for opt in instances(optimizer)
                      for group in opt.param_groups for p in group["params"]
                      if opt.gathers(p, group)])


def paper_state_bytes(optimizer) -> int:
    """The state as the GaLore paper counts it: 2 bytes a value (8-bit codes 1), whatever
    the dtype; a step count (AdamW's float32 tensor) as stored."""
    return sum(value.numel() * (value.element_size() if key == "step"
                                else min(value.element_size(), 2))
               for state in optimizer.state.values() for key, value in state.items()
               if torch.is_tensor(value))


def activation_bytes(model: DictConfig, batch_size: int, seq_len: int, precision: str,
                     checkpointing: bool = False, adapter: DictConfig | None = None) -> int:
    """Saved-for-backward bytes, plus what the backward adds at its peak: the gradients of
    the log-softmax and of the logits (fp32, logits-sized, together at its start), or, with
    activation checkpointing, one layer's recomputed activations if those are larger."""
    terms = layer_terms(model, seq_len, precision, adapter)
    tokens = batch_size * seq_len
    recomputed = tokens * terms.per_token + terms.per_layer + terms.in_layers
    return (saved_activation_bytes(model, batch_size, seq_len, precision, checkpointing, adapter)
            + max(2 * tokens * model.vocab_size * 4, recomputed if checkpointing else 0))


def saved_activation_bytes(model: DictConfig, batch_size: int, seq_len: int, precision: str,
                           checkpointing: bool = False, adapter: DictConfig | None = None) -> int:
    """What the forward of `transformers`' LLaMA / GPT-2 (SDPA attention) and the fp32
    cross-entropy save for the backward, parameters excluded: the layers' share
    (`layer_terms`, with the adapter's, `adapter_terms`; with activation checkpointing only
    each layer's input, in the weights' dtype), the final norm, the output layer's input,
    the log-softmax, input ids and targets."""
    terms = layer_terms(model, seq_len, precision, adapter)
    tokens, h = batch_size * seq_len, model.hidden_size
    if checkpointing:
        layers = model.num_layers * tokens * weight_width(precision) * h
    else:
        layers = model.num_layers * (tokens * terms.per_token + terms.per_layer) + terms.in_layers
    return (layers + tokens * (terms.head_per_token + 8 + 8 + 4 * model.vocab_size)
            + terms.head + terms.outside + 4)  # + the loss's total weight


@dataclass
class LayerTerms:
    per_token: int  # bytes a layer saves per token
    per_layer: int  # bytes a layer saves whatever the batch: autocast's bf16 weight copies
    in_layers: int  # saved once, used by every layer (LLaMA's RoPE cos and sin)
    outside: int  # saved once, outside the layers (GPT-2's position ids)
    head_per_token: int  # final norm and the output layer's input, per token
    head: int  # the output layer's bf16 weight copy


def layer_terms(model: DictConfig, seq_len: int, precision: str,
                adapter: DictConfig | None = None) -> LayerTerms:
    """The closed form, per architecture. With bf16 (autocast, or bf16 weights) the matmuls
    save bf16 inputs. Autocast saves one bf16 copy of each linear weight and of each
    linear's input per consumer (LLaMA's q, k, v read three copies of one normed input); its
    norms and residual stream stay fp32. With bf16 weights the residual stream is bf16:
    LLaMA's RMSNorm still saves its input upcast to fp32, GPT-2's LayerNorm (on CPU) its
    bf16 input with a bf16 mean and 1/std."""
    if model.arch not in ("llama", "gpt2"):  # a pretrained checkpoint of another kind
        raise ConfigError(f"model.pretrained={model.pretrained}: no activation estimate for "
                          f"its architecture {model.arch} (the closed form covers llama, gpt2)")
    h, inter, heads = model.hidden_size, model.intermediate_size, model.num_heads
    a = 2 if precision != "fp32" else 4  # bytes of a matmul's saved input/output
    w = weight_width(precision)  # bytes of a value of the residual stream
    cast = precision == "bf16"
    head_copy = 2 * model.vocab_size * h if cast else 0
    if model.arch == "llama":
        norm = 4 * h + w * h + 4  # RMSNorm: fp32 input, normed output and 1/rms
        attn_inputs = (3 if cast else 1) * a * h  # q, k, v projections' input
        mlp_inputs = (2 if cast else 1) * a * h  # gate and up projections' input
        # q and k after RoPE, v, attention output; log-sum-exp per head; gate, up, silu,
        # product (the down projection's input)
        per_token = 2 * norm + attn_inputs + mlp_inputs + 4 * a * h + 4 * heads + 4 * a * inter
        own_token, own_layer = adapter_terms(model, adapter, precision)
        return LayerTerms(per_token + own_token,
                          (2 * (4 * h * h + 3 * h * inter) if cast else 0) + own_layer,
                          in_layers=2 * seq_len * (h // heads) * w, outside=0,
                          head_per_token=norm + a * h, head=head_copy)
    norm = w * h + 2 * w  # LayerNorm: input, mean and 1/std
    # c_attn's input, its q/k/v output, log-sum-exp, attention output; c_fc's input,
    # gelu_new's four saved tensors and c_proj's input
    per_token = 2 * norm + 4 * a * h + 4 * heads + a * h + a * h + 5 * a * inter
    own_token, own_layer = adapter_terms(model, adapter, precision)
    return LayerTerms(per_token + own_token,
                      (2 * (4 * h * h + 2 * h * inter) if cast else 0) + own_layer,
                      in_layers=0, outside=seq_len * 8, head_per_token=norm + a * h,
                      head=head_copy)


def adapter_targets(model: DictConfig) -> dict[str, tuple[int, int, str]]:
    """A layer's adaptable projections: name -> (in, out, what its input is): `attention` or
    `mlp` (one tensor read by each of those projections), `own` (read by this one only),
    `kept` (also saved by another op: the attention's output, which SDPA saves)."""
    h, inter = model.hidden_size, model.intermediate_size
    if model.arch == "llama":
        return {**{n: (h, h, "attention") for n in ("q_proj", "k_proj", "v_proj")},
                "o_proj": (h, h, "kept"), "gate_proj": (h, inter, "mlp"),
                "up_proj": (h, inter, "mlp"), "down_proj": (inter, h, "own")}
    # GPT-2: attention's and the MLP's c_proj share a name (a target adapts both)
    return {"c_attn": (h, 3 * h, "own"), "c_proj": (h, h, "kept"), "c_fc": (h, inter, "own"),
            "c_proj.mlp": (inter, h, "own")}


def adapter_terms(model: DictConfig, adapter: DictConfig | None,
                  precision: str) -> tuple[int, int]:
    """The bytes a layer's adapter adds to what it saves, per token and per layer (peft's
    LoRA, as ReLoRA and low-rank use it, with the target weights frozen): B's input, the
    rank-r intermediate; with autocast, A's and B's bf16 weight copies, and A's own bf16
    copy of an input another op also keeps (a frozen weight's projection saves none of its
    input, so A's copy replaces it elsewhere). With dropout: A's input (the dropped copy)
    and the dropout's mask (the input's dtype: fp32 but with bf16 weights), in place of
    the frozen projections' inputs. Closed for every projection of a layer targeted and
    the norms trained (`adapter.full_rank`), as the presets run; a frozen norm or
    projection saves less (no input kept for its own gradient)."""
    if adapter is None or adapter.name == "none":
        return 0, 0
    a, r, cast = (2 if precision != "fp32" else 4), adapter.rank, precision == "bf16"
    mask = 2 if precision == "bf16_weights" else 4
    per_token = per_layer = 0
    read = set()  # the shared inputs counted
    for name, (n_in, n_out, kind) in adapter_targets(model).items():
        if name.split(".")[0] not in adapter.target_modules:
            continue
        per_token += a * r
        per_layer += 2 * r * (n_in + n_out) if cast else 0
        if adapter.dropout == 0:
            per_token += 2 * n_in if cast and kind == "kept" else 0
            continue
        per_token += (a + mask) * n_in
        # the input the frozen projection no longer saves (autocast: its own copy of it)
        if kind == "own" or (kind != "kept" and (cast or kind not in read)):
            per_token -= a * n_in
        read.add(kind)
    return per_token, per_layer


# ---------------------------------------------------------------- command line
COLUMNS = ("weights", "gradients", "optimizer_state", "activations", "total")


def label(cfg: DictConfig) -> str:
    """Model, optimizer, its adapter if any, the toggles set, the backward, and a precision
    or activation checkpointing other than the default: `llama_7b adalomo nmf=False fused
    bf16_weights`, `llama_tiny adamw lora(r=8) fused`."""
    toggles = OmegaConf.to_container(cfg.toggles, resolve=True, enum_to_str=True)
    set_ = [f"{k}={v}" for k, v in toggles.items() if v is not None and k != "fused_backward"]
    t = cfg.trainer
    adapter = [] if cfg.adapter.name == "none" else [f"{cfg.adapter.name}(r={cfg.adapter.rank})"]
    return " ".join([cfg.model.name, cfg.optimizer.name, *adapter, *set_,
                     "fused" if cfg.toggles.fused_backward else "unfused",
                     *([t.precision.value] if t.precision.value != "fp32" else []),
                     *(["checkpointing"] if t.activation_checkpointing else [])])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ablate.estimate",
        description="Estimate a job's memory (GB = 1e9 bytes) without allocating the model.")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as `python -m ablate`")
    parser.add_argument("--table", action="store_true",
                        help="sweep comma lists (model=a,b optimizer=c,d): one row per job")
    parser.add_argument("--accounting", choices=("full", "galore"), default="full",
                        help="galore: the GaLore paper's (weights and optimizer state, "
                             "2 bytes a value)")
    parser.error = lambda message: sys.exit(f"ablate.estimate: error: {message}")
    args = parser.parse_args(argv)
    rows, skipped = [], []
    try:
        check_overrides(args.overrides)
        jobs = expand(args.overrides) if args.table else [args.overrides]
    except (ConfigError, HydraException) as exc:
        sys.exit(f"ablate.estimate: error: {error_line(exc)}")
    for overrides in jobs:
        try:
            cfg = checked(compose(overrides))
        except (ConfigError, HydraException, OmegaConfBaseException) as exc:
            if args.table and isinstance(exc, IncompatibleToggles):
                skipped.append(str(exc))  # a combination that makes no sense, as in a sweep
                continue
            sys.exit(f"ablate.estimate: error: {error_line(exc)}")
        rows.append((label(cfg), estimate(cfg, args.accounting).gb()))
    if not rows:
        sys.exit(f"ablate.estimate: error: --table: every one of the {len(jobs)} combinations "
                 f"is skipped ({skipped[0]})")
    if not args.table:
        name, gb = rows[0]
        print(name)
        for key in COLUMNS:
            print(f"  {key:16s} {gb[key]:10.4f} GB")
        return
    print("| job | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, gb in rows:
        print(f"| {name} | " + " | ".join(f"{gb[k]:.3f}" for k in COLUMNS) + " |")


if __name__ == "__main__":
    main()
