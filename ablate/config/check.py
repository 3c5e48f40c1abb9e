"""The check every job passes before any compute: values the schema's types admit but
training cannot use, each rejected with one line. Task keys are the task's own check
(`ablate/tasks/`); optimizer keys are the optimizer's constructor, built on the meta device."""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..adapter import apply_adapter
from ..cores import cores
from ..errors import ConfigError, IncompatibleToggles, unknown_key
from ..models import build_model, check_weights, shape
from ..optim.adamw8bit import check_kernels
from ..optim.build import build_optimizer, optimizer_class, optimizer_kwargs
from ..tasks import check_task_config
from ..world import world_from_env
from .claims import check_claims
from .schema import plain
from .variants import job_config


def checked(cfg: DictConfig) -> DictConfig:
    """`job_config`, checked: what a sweep's jobs and the estimator start from."""
    cfg = job_config(cfg)
    check(cfg)
    return cfg

def _positive(cfg: DictConfig, *keys: str) -> None:
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value <= 0:
            raise ConfigError(f"{key}={value}: must be > 0")


def _check_against_schema(node: DictConfig, path: str = "") -> None:
    """Keys a `+key=value` override added that no schema has, and tuples of the wrong length
    (OmegaConf types neither): both would otherwise reach the optimizer or the label."""
    schema = OmegaConf.get_type(node)
    hints = typing.get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
    for key in node:
        name = f"{path}{key}"
        if hints and key not in hints:
            raise ConfigError(unknown_key(name, path.rstrip(".") or "the top level",
                                          [k for k in hints if not k.startswith("_")]))
        value, size = node.get(key), len(typing.get_args(hints.get(key)))
        if typing.get_origin(hints.get(key)) is tuple and len(value) != size:
            raise ConfigError(f"{name}={list(value)}: must be a list of {size} numbers")
        if isinstance(value, DictConfig):
            _check_against_schema(value, f"{name}.")


def _check_finite(tree, path: str = "") -> None:
    """NaN or inf in any number: a run would start, then stop as "diverged"."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        name = f"{path}.{key}" if path else str(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value}: must be a finite number")
        if isinstance(value, (dict, list)):
            _check_finite(value, name)


def check(cfg: DictConfig) -> None:
    """Reject values that the schema's types admit but training cannot use (one-line errors)."""
    _check_against_schema(cfg)
    _check_finite(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    _positive(cfg, "trainer.batch_size", "trainer.seq_len", "trainer.grad_accum_steps",
              "trainer.lr", "trainer.lr_factor", "trainer.eval_batches", "trainer.log_interval",
              "model.vocab_size", "model.hidden_size", "model.num_layers", "model.num_heads",
              "model.intermediate_size", "model.max_seq_len", "trainer.bucket_mb",
              "trainer.buckets_in_flight", "trainer.collective_timeout_s")
    t = cfg.trainer
    if not 0 <= t.seed < 2**32:
        raise ConfigError(f"trainer.seed={t.seed}: must be in [0, 2**32 - 1]")
    for folder in cfg.resume_from:
        if not Path(folder).is_dir():
            raise ConfigError(f"resume_from: {folder} is not a directory (allowed: folders "
                              "holding earlier runs or sweeps)")
    check_task_config(cfg)  # the task's own keys
    for key in ("max_steps", "warmup_steps", "eval_interval", "tgs_warmup_steps",
                "checkpoint_every"):
        if t[key] < 0:
            raise ConfigError(f"trainer.{key}={t[key]}: must be >= 0")
    if not 0.0 <= t.min_lr_ratio <= 1.0:
        raise ConfigError(f"trainer.min_lr_ratio={t.min_lr_ratio}: must be in [0, 1]")
    if t.clip_grad_norm is not None:
        if t.clip_grad_norm <= 0:
            raise ConfigError(f"trainer.clip_grad_norm={t.clip_grad_norm}: must be > 0 or null")
        if cfg.toggles.fused_backward and t.grad_accum_steps > 1:
            raise ConfigError("trainer.clip_grad_norm with toggles.fused_backward=true needs "
                              f"trainer.grad_accum_steps=1 (got {t.grad_accum_steps})")
    # Its first, gathering backward would consume the gradients accumulated so far.
    if cfg.toggles.grouped_norm == "global" and cfg.toggles.fused_backward \
            and t.grad_accum_steps > 1:
        raise ConfigError("toggles.grouped_norm=global with toggles.fused_backward=true needs "
                          f"trainer.grad_accum_steps=1 (got {t.grad_accum_steps})")
    try:
        model = shape(cfg.model)  # with model.pretrained, the checkpoint's
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.model.pretrained:
        check_weights(cfg.model.pretrained)
    if model.max_seq_len is not None and t.seq_len > model.max_seq_len:
        raise ConfigError(f"trainer.seq_len={t.seq_len}: must be <= model.max_seq_len="
                          f"{model.max_seq_len} for model {cfg.model.pretrained or model.name}")
    if not cfg.model.pretrained:
        if cfg.model.arch not in ("llama", "gpt2"):
            raise ConfigError(f"model.arch={cfg.model.arch}: allowed are llama, gpt2")
        if cfg.model.hidden_size % cfg.model.num_heads:
            raise ConfigError(f"model.hidden_size={cfg.model.hidden_size}: must be divisible "
                              f"by model.num_heads={cfg.model.num_heads}")
    if cfg.ablation is not None and cfg.ablation.seeds is not None:
        check_seeds(list(cfg.ablation.seeds))
    if cfg.ablation is not None:
        check_claims(OmegaConf.to_container(cfg.ablation.claims, resolve=True),
                     list(cfg.ablation.variants))
    if cfg.tune is not None:
        check_lr_factors(list(cfg.tune.lr_factors))
        if cfg.tune.grid_seed < 0:
            raise ConfigError(f"tune.grid_seed={cfg.tune.grid_seed}: must be >= 0")
    accepted = inspect.signature(optimizer_class(cfg)).parameters
    bad = [key for key, value in cfg.toggles.items()
           if key != "fused_backward" and value is not None and key not in accepted]
    if bad:
        supported = ["fused_backward"] + [k for k in cfg.toggles if k in accepted]
        raise IncompatibleToggles(
            f"toggle {', '.join(f'toggles.{k}' for k in bad)} is not supported by "
            f"optimizer={cfg.optimizer.name} (it supports: {', '.join(supported)})")
    if t.device.value == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda: no CUDA device is available (allowed: auto, cpu)")
    if getattr(optimizer_class(cfg), "eight_bit_states", False) or cfg.toggles.eight_bit:
        cuda = t.device.value == "cuda" or (t.device.value == "auto" and torch.cuda.is_available())
        try:
            check_kernels("cuda" if cuda else "cpu")
        except ValueError as exc:
            raise ConfigError(f"optimizer={cfg.optimizer.name}: 8-bit states: {exc}") from None
    _check_processes(t)
    if t.threads is not None and t.threads < 0:
        raise ConfigError(f"trainer.threads={t.threads}: must be >= 0 (0 or null: this job's "
                          "share of the CPU cores)")
    _check_optimizer_builds(cfg)
    _check_sharding(cfg)


def check_seeds(seeds: list) -> None:
    """A preset's `ablation.seeds` (the sweep's trainer.seed values)."""
    if not seeds or not all(type(s) is int and s >= 0 for s in seeds) or (
            len(set(seeds)) < len(seeds)):
        raise ConfigError(f"ablation.seeds={seeds}: must be distinct integers >= 0, "
                          "at least one")


def check_lr_factors(factors: list) -> None:
    """A tuned sweep's `tune.lr_factors` (the sweep's trainer.lr_factor values)."""
    if not factors or not all(type(f) in (int, float) and 0 < f < float("inf")
                              for f in factors) or len(set(factors)) < len(factors):
        raise ConfigError(f"tune.lr_factors={factors}: must be distinct numbers > 0 "
                          "(finite), at least one")


def _check_processes(t: DictConfig) -> None:
    """`trainer.processes`: at least one, at most one per GPU (on CUDA) or per CPU core;
    under an outside launcher (torchrun, SLURM), 1 or the launcher's world size."""
    if t.processes < 1:
        raise ConfigError(f"trainer.processes={t.processes}: must be >= 1")
    world = world_from_env()
    if world.size > 1:
        if t.processes not in (1, world.size):
            raise ConfigError(f"trainer.processes={t.processes}: this process is one of "
                              f"{world.size} ranks started by a launcher (allowed: 1 or "
                              f"{world.size})")
        return
    if t.processes == 1:
        return
    cuda = t.device.value == "cuda" or (t.device.value == "auto" and torch.cuda.is_available())
    if cuda and t.processes > torch.cuda.device_count():
        raise ConfigError(f"trainer.processes={t.processes}: more than this machine's "
                          f"{torch.cuda.device_count()} GPUs (allowed: 1 to "
                          f"{torch.cuda.device_count()}, one process per GPU)")
    if not cuda and t.processes > cores():
        raise ConfigError(f"trainer.processes={t.processes}: more than the {cores()} CPU cores "
                          f"this job may use (allowed: 1 to {cores()})")


def _check_sharding(cfg: DictConfig) -> None:
    """`trainer.sharding=fsdp`: fp32 or autocast weights, no ReLoRA and no saved adapter, a
    backend for the device, a row of every parameter on every rank (FSDP gives ceil(rows /
    N) rows to each rank in turn), and state the optimizer can shard (`check_sharding`:
    8-bit states in whole blocks)."""
    t = cfg.trainer
    if t.sharding.value != "fsdp":
        return
    if t.precision.value == "bf16_weights":
        raise ConfigError("trainer.precision=bf16_weights with trainer.sharding=fsdp: not "
                          "supported (each rank's bf16 gradient would be rounded before the "
                          "sum; allowed: fp32, bf16)")
    if cfg.adapter.name == "relora":
        raise ConfigError("adapter=relora with trainer.sharding=fsdp: not supported (its "
                          "restarts merge and redraw the factors on whole tensors; allowed: "
                          "adapter=none, lora, low_rank, or trainer.sharding=none)")
    if cfg.adapter.name != "none" and t.save_model:
        raise ConfigError(f"trainer.save_model=true with adapter={cfg.adapter.name} and "
                          "trainer.sharding=fsdp: not supported (peft saves from whole "
                          "tensors; allowed: trainer.save_model=false, or adapter=none)")
    cuda = t.device.value == "cuda" or (t.device.value == "auto" and torch.cuda.is_available())
    backend = "nccl" if cuda else "gloo"
    if not torch.distributed.is_available() or not torch.distributed.is_backend_available(
            backend):
        raise ConfigError(f"trainer.sharding=fsdp on trainer.device={t.device.value}: this "
                          f"torch has no {backend} backend (allowed: trainer.sharding=none)")
    ranks = max(t.processes, world_from_env().size)
    model = build_model(cfg.model, "meta")
    rows = min(p.shape[0] for p in model.parameters())
    if ranks > 1 and math.ceil(rows / ranks) * (ranks - 1) >= rows:
        raise ConfigError(f"trainer.processes={ranks} with trainer.sharding=fsdp: the smallest "
                          f"parameter has {rows} rows, too few to give each process one "
                          f"(allowed: at most {max_ranks(rows)} processes)")
    try:  # what only the optimizer knows: its states' shapes
        if ranks > 1:
            optimizer_class(cfg)(list(model.named_parameters()),
                                 **optimizer_kwargs(cfg)).check_sharding(ranks)
    except ValueError as exc:
        raise ConfigError(f"trainer.sharding=fsdp: optimizer={cfg.optimizer.name}: {exc}") \
            from None


def max_ranks(rows: int) -> int:
    """The most ranks FSDP's row shards of `rows` rows leave none of empty."""
    return max(n for n in range(1, rows + 1) if math.ceil(rows / n) * (n - 1) < rows)


def _check_optimizer_builds(cfg: DictConfig) -> None:
    """Build the model on the meta device (no memory) and the optimizer over it, so that a
    bad hyper-parameter (the constructor's ValueError) is reported before any compute."""
    model = apply_adapter(build_model(cfg.model, "meta"), cfg.adapter, cfg.model.name)
    targets = cfg.optimizer.get("target_modules")
    if targets is not None and plain(cfg.toggles.projection) != "none":
        weights = [n for n, p in model.named_parameters() if p.dim() == 2]
        if not any(t in n for n in weights for t in targets):
            names = dict.fromkeys(n.split(".")[-2] for n in weights)
            raise ConfigError(f"optimizer.target_modules={list(targets)}: matches no 2-D weight "
                              f"of model {cfg.model.name} (its weights: {', '.join(names)})")
    try:
        build_optimizer(cfg, model)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"optimizer={cfg.optimizer.name}: {exc}") from exc

