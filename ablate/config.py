"""Typed schemas for every config group, registered in Hydra's ConfigStore.

The YAML files in conf/ hold the values; these dataclasses hold the types, so a wrong
type or an unknown key fails when Hydra composes the config. Range checks that a type
cannot express live in `check()`, which runs before any compute starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import secrets
import typing
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from hydra.core.config_store import ConfigStore
from hydra.errors import MissingConfigException
from hydra.utils import get_class
import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .distributed import world_from_env


def config_dir() -> Path:
    """conf/ inside an installed wheel, else the checkout's top-level conf/."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "conf"


class ConfigError(ValueError):
    """A config value that is well typed but not allowed; its message is one line."""


class IncompatibleToggles(ConfigError):
    """A toggle the chosen optimizer does not have: in a sweep's cartesian product such a
    job is recorded as skipped, not run as something else under a wrong label."""


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(Enum):
    """How weights are stored and the forward computes (ablate/optim/precision.py)."""

    fp32 = "fp32"
    bf16 = "bf16"  # autocast: bf16 matmuls over fp32 weights, gradients and updates
    # Parameters and gradients stored in bf16 (the papers' pre-training); every optimizer
    # computes its update in fp32 and writes the parameter back rounded to bf16.
    bf16_weights = "bf16_weights"


class Schedule(Enum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


class ProjType(Enum):
    """GaLore's side choice for a one-sided projection (the reference's `proj_type`)."""

    std = "std"  # right if rows >= cols, else left
    reverse_std = "reverse_std"
    left = "left"
    right = "right"
    full = "full"  # both sides, as toggles.two_sided=true


class Projection(Enum):
    """How GaLore finds its subspace; `none` removes the projection (full-rank AdamW)."""

    svd = "svd"
    random = "random"
    pca = "pca"
    none = "none"


class TaskKind(Enum):
    """The module of ablate/tasks/ that a task's data and metrics come from."""

    pretrain = "pretrain"
    glue = "glue"
    instruct = "instruct"


class WandbMode(Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


# ---------------------------------------------------------------- optimizer
@dataclass
class OptimizerConfig:
    """`_target_` is the optimizer class; the keys other than `name` and `lr` are keywords
    to it. `lr` is the optimizer's recommended peak learning rate: `trainer.lr` (what the
    schedule uses) defaults to it, so each optimizer in a sweep gets its own."""

    _target_: str = MISSING
    name: str = MISSING
    lr: float = MISSING


@dataclass
class AdamWConfig(OptimizerConfig):
    betas: Tuple[float, float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = MISSING
    weight_decay: float = MISSING


@dataclass
class GaLoreAdamWConfig(OptimizerConfig):
    betas: Tuple[float, float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING
    rank: int = MISSING
    update_proj_gap: int = MISSING  # T: steps between projector refreshes
    scale: float = MISSING  # alpha
    proj_type: ProjType = MISSING
    target_modules: List[str] = MISSING  # name substrings of the projected 2-D weights
    seed: int = MISSING  # for projection=random


@dataclass
class LomoConfig(OptimizerConfig):
    weight_decay: float = MISSING
    clip_grad_value: Optional[float] = None


@dataclass
class AdaLomoConfig(OptimizerConfig):
    eps: Tuple[float, float] = MISSING
    clip_threshold: float = MISSING
    decay_rate: float = MISSING
    beta2: Optional[float] = None  # a constant in [0, 1); None: the schedule 1 - t^decay_rate
    weight_decay: float = MISSING
    clip_grad_value: Optional[float] = None


# ---------------------------------------------------------------- the rest
@dataclass
class TogglesConfig:
    """Component switches. `None` means "the optimizer's own form" (component on)."""

    fused_backward: bool = True
    projection: Optional[Projection] = None  # GaLore: svd (its own), random, pca, none
    two_sided: Optional[bool] = None  # GaLore: project both sides (P^T G Q)
    eight_bit: Optional[bool] = None  # GaLore: Adam moments in 8 bits (its own default: off)
    adaptive_lr: Optional[bool] = None  # AdaLomo: false = no second moment (u = g)
    # AdaLomo: false = plain lr step, no RMS clip/scale; global = one RMS over all parameters'
    # updates. true, false or global: a bool-or-string has no OmegaConf type, so the
    # optimizer's constructor checks it (reported by check()).
    grouped_norm: Any = None
    nmf: Optional[bool] = None  # AdaLomo: false = full m x n second moment, not factored


@dataclass
class ModelConfig:
    name: str = MISSING
    arch: str = MISSING  # llama | gpt2
    vocab_size: int = MISSING
    hidden_size: int = MISSING
    intermediate_size: int = MISSING
    num_layers: int = MISSING
    num_heads: int = MISSING
    max_seq_len: int = MISSING
    # A hub name or a local directory that transformers' Auto classes load; the shape keys
    # above are then read from its config.json (and ignored where given).
    pretrained: Optional[str] = None


@dataclass
class TaskConfig:
    kind: TaskKind = MISSING  # the module of ablate/tasks/ that runs it
    name: str = MISSING
    vocab_size: int = MISSING  # size of the BPE vocabulary trained on the training text
    cache_dir: str = MISSING  # tokenizer and token ids are cached here, keyed by content


@dataclass
class LocalTaskConfig(TaskConfig):
    """Python's standard-library sources: a real corpus present on every machine."""

    include: List[str] = MISSING  # globs relative to the stdlib directory
    heldout_every: int = MISSING  # every k-th file (sorted by path) is held out: val, test, val...


@dataclass
class HubTaskConfig(TaskConfig):
    """A `datasets` corpus loaded by name (downloads; never used in tests)."""

    path: str = MISSING
    config_name: Optional[str] = None
    data_files: Optional[Any] = None
    train_split: str = MISSING
    val_split: str = MISSING  # for choosing (a tuned sweep's lr)
    test_split: str = MISSING  # for the report's numbers; may equal val_split (then halved)
    text_field: str = MISSING
    streaming: bool = MISSING
    max_train_docs: int = MISSING
    max_eval_docs: int = MISSING


@dataclass
class GlueTaskConfig:
    """A GLUE task (ablate/tasks/glue.py) through `datasets`: by name from the hub, or from
    local files with GLUE's columns."""

    kind: TaskKind = MISSING  # glue
    name: str = MISSING  # cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte
    path: str = MISSING  # nyu-mll/glue, a folder of train/validation files, or csv/json
    config_name: Optional[str] = None  # the hub's config (the task's name); null for files
    data_files: Optional[Any] = None  # {split: file(s)} for path=csv/json
    val_size: int = MISSING  # examples of the train split held out as val (for choosing)
    max_eval_examples: Optional[int] = None  # first N of each evaluated split; null: all
    cache_dir: Optional[str] = None  # where `datasets` keeps its copy; null: its own cache


@dataclass
class PromptTemplateConfig:
    """An instruction record's prompt: `{instruction}` and `{input}` are filled in."""

    prompt_input: str = MISSING  # for a record with a non-empty input
    prompt_no_input: str = MISSING


@dataclass
class InstructTaskConfig(TaskConfig):
    """Instruction tuning on Alpaca-format records; `vocab_size` and `cache_dir` serve the
    BPE trained on the records when the model has no tokenizer of its own."""

    template: PromptTemplateConfig = MISSING
    heldout_every: int = MISSING  # every k-th file or record is held out: val, test, val...


@dataclass
class InstructLocalTaskConfig(InstructTaskConfig):
    """The standard library's documented functions (no download)."""

    include: List[str] = MISSING  # globs relative to the stdlib directory


@dataclass
class InstructHubTaskConfig(InstructTaskConfig):
    """Records through `datasets`: a hub name, or `json` with local `data_files`."""

    path: str = MISSING
    config_name: Optional[str] = None
    data_files: Optional[Any] = None
    split: str = MISSING  # the one split read; held-out records are taken out of it
    max_records: int = MISSING


@dataclass
class TrainerConfig:
    max_steps: int = MISSING
    batch_size: int = MISSING
    seq_len: int = MISSING
    grad_accum_steps: int = MISSING
    lr: float = MISSING  # learning rate (default: optimizer.lr); the schedule's peak is lr x lr_factor
    lr_factor: float = MISSING  # 1, or a point of a tuned sweep's grid (conf/tune/)
    schedule: Schedule = MISSING
    warmup_steps: int = MISSING
    min_lr_ratio: float = MISSING  # final lr = lr * min_lr_ratio (cosine and linear)
    clip_grad_norm: Optional[float] = None  # global norm; fused backward then needs two passes
    eval_interval: int = MISSING  # 0: evaluate only at the end
    eval_batches: int = MISSING
    log_interval: int = MISSING
    checkpoint_every: int = MISSING  # 0: no checkpoints; else a resumable one every k steps
    tgs_warmup_steps: int = MISSING  # steps left out of the TGS measurement
    seed: int = MISSING
    device: Device = MISSING
    precision: Precision = MISSING
    # transformers' gradient checkpointing: each layer keeps only its input and recomputes
    # its activations in the backward (less memory, one more forward of the layers)
    activation_checkpointing: bool = MISSING
    progress: bool = MISSING  # progress bar (only drawn on a TTY)
    save_model: bool = False  # RUN_DIR/model/: the model and its tokenizer, transformers' format
    # Data parallel: the global batch is processes x batch_size x grad_accum_steps rows.
    processes: int = MISSING  # workers this job launches (1: none; see ablate/distributed.py)
    bucket_mb: float = MISSING  # gradients summed across processes in buckets of this size
    collective_timeout_s: float = MISSING  # a rank waiting longer on the others fails the job


@dataclass
class WandbConfig:
    mode: WandbMode = MISSING
    project: str = MISSING
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    wandb: WandbConfig = MISSING


@dataclass
class AblationConfig:
    """A sweep preset (conf/ablation/): what it studies and which variant is the baseline."""

    name: str = MISSING  # the W&B group and the report's title
    baseline: List[str] = field(default_factory=list)  # key=value pairs the baseline has
    # Imported plans study several components at once, which is no cartesian product:
    # each variant is a list of key=value pairs applied on top of the composed config.
    variants: Dict[str, List[str]] = field(default_factory=dict)
    variant: Optional[str] = None
    not_measured: List[str] = field(default_factory=list)  # asked-for metrics no task measures
    # The seeds the preset sweeps (its trainer.seed sweep reads them, and so does +tune=lr,
    # which needs the seed before the lr in the sweep's order).
    seeds: Optional[List[int]] = None


@dataclass
class TuneConfig:
    """Per-variant learning-rate tuning (conf/tune/, ablate/tune.py)."""

    lr_factors: List[float] = MISSING  # the grid: multiples of trainer.lr
    grid_seed: int = MISSING  # the seed that runs the whole grid; other seeds the chosen lr


@dataclass
class Config:
    outputs_dir: str = MISSING  # run and sweep directories go under it
    resume: bool = MISSING  # multirun: reuse completed jobs and checkpoints of the same config
    resume_from: List[str] = field(default_factory=list)  # more places resume looks in
    # hydra/launcher=joblib on GPUs: allow more parallel jobs than GPUs (job i on GPU i mod
    # GPUs, shared); else each job holds a GPU of its own (ablate/devices.py)
    share_gpus: bool = MISSING
    ablation: Optional[AblationConfig] = None
    tune: Optional[TuneConfig] = None
    optimizer: Any = MISSING
    toggles: TogglesConfig = MISSING
    model: ModelConfig = MISSING
    task: Any = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING


def register_configs() -> None:
    # conf/hydra/launcher/{basic,joblib,submitit_*}.yaml share the launchers' names on
    # purpose: `hydra/launcher=joblib` gets this project's settings, checked against the
    # plugin's own schema. Hydra 1.3 still does that matching but warns it is deprecated.
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against "
                            "ConfigStore schema with the same name")
    # A sweep directory name that two sweeps started in the same second cannot share.
    OmegaConf.register_new_resolver("unique", lambda: secrets.token_hex(3), use_cache=True,
                                    replace=True)
    # A list as a sweep's comma-separated values (the presets' seeds, the tuning grid), or
    # the fallback value when the list is unset.
    OmegaConf.register_new_resolver(
        "sweep_values", lambda xs, fallback=None: ",".join(map(str, xs)) if xs else str(fallback),
        replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    # Kept out of the option groups so that `optimizer=...` lists only real choices.
    cs.store(group="schema/optimizer", name="adamw", node=AdamWConfig)
    cs.store(group="schema/optimizer", name="sgd", node=SGDConfig)
    cs.store(group="schema/optimizer", name="galore_adamw", node=GaLoreAdamWConfig)
    cs.store(group="schema/optimizer", name="lomo", node=LomoConfig)
    cs.store(group="schema/optimizer", name="adalomo", node=AdaLomoConfig)
    cs.store(group="schema/task", name="local", node=LocalTaskConfig)
    cs.store(group="schema/task", name="hub", node=HubTaskConfig)
    cs.store(group="schema/task", name="glue", node=GlueTaskConfig)
    cs.store(group="schema/task", name="instruct_local", node=InstructLocalTaskConfig)
    cs.store(group="schema/task", name="instruct_hub", node=InstructHubTaskConfig)


# ---------------------------------------------------------------- checks
def optimizer_class(cfg: DictConfig) -> type:
    return get_class(cfg.optimizer._target_)


def optimizer_kwargs(cfg: DictConfig) -> dict:
    """Keywords for the optimizer class: its config minus bookkeeping, plus the toggles it takes."""
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.optimizer, resolve=True,
                                                        enum_to_str=True).items()
              if k not in ("_target_", "name", "lr")}
    for key, value in OmegaConf.to_container(cfg.toggles, resolve=True, enum_to_str=True).items():
        if key != "fused_backward" and value is not None:
            kwargs[key] = value
    return kwargs


MIN_VOCAB = 257  # a byte-level BPE: 256 byte tokens and the end-of-text token


def plain(value):
    """A config value as the YAML that set it: an enum member as its value."""
    return value.value if isinstance(value, Enum) else value


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
            known = ", ".join(k for k in hints if not k.startswith("_"))
            where = path.rstrip(".") or "the top level"
            raise ConfigError(f"{name}: unknown key (allowed under {where}: {known})")
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
              "trainer.collective_timeout_s")
    t = cfg.trainer
    if not 0 <= t.seed < 2**32:
        raise ConfigError(f"trainer.seed={t.seed}: must be in [0, 2**32 - 1]")
    if "vocab_size" in cfg.task and cfg.task.vocab_size < MIN_VOCAB:  # GLUE has a tokenizer
        raise ConfigError(f"task.vocab_size={cfg.task.vocab_size}: must be >= {MIN_VOCAB} (the "
                          "tokenizer's 256 byte tokens and its end-of-text token)")
    for folder in cfg.resume_from:
        if not Path(folder).is_dir():
            raise ConfigError(f"resume_from: {folder} is not a directory (allowed: folders "
                              "holding earlier runs or sweeps)")
    if "heldout_every" in cfg.task and cfg.task.heldout_every < 2:
        raise ConfigError(f"task.heldout_every={cfg.task.heldout_every}: must be >= 2 (every "
                          "k-th file is held out; the others train)")
    if "max_records" in cfg.task and cfg.task.max_records < 1:
        raise ConfigError(f"task.max_records={cfg.task.max_records}: must be >= 1 (the first "
                          "max_records records of task.split are read)")
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
    from .models import shape

    try:
        model = shape(cfg.model)  # with model.pretrained, the checkpoint's
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    if model.max_seq_len is not None and t.seq_len > model.max_seq_len:
        raise ConfigError(f"trainer.seq_len={t.seq_len}: must be <= model.max_seq_len="
                          f"{model.max_seq_len} for model {cfg.model.pretrained or model.name}")
    if not cfg.model.pretrained:
        if cfg.model.arch not in ("llama", "gpt2"):
            raise ConfigError(f"model.arch={cfg.model.arch}: allowed are llama, gpt2")
        if cfg.model.hidden_size % cfg.model.num_heads:
            raise ConfigError(f"model.hidden_size={cfg.model.hidden_size}: must be divisible "
                              f"by model.num_heads={cfg.model.num_heads}")
        if "vocab_size" in cfg.task and cfg.task.vocab_size > cfg.model.vocab_size:
            raise ConfigError(f"task.vocab_size={cfg.task.vocab_size}: must be <= "
                              f"model.vocab_size={cfg.model.vocab_size} for model "
                              f"{cfg.model.name}")
    if cfg.ablation is not None and cfg.ablation.seeds is not None:
        seeds = list(cfg.ablation.seeds)
        if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
            raise ConfigError(f"ablation.seeds={seeds}: must be distinct integers >= 0, "
                              "at least one")
    if cfg.tune is not None:
        factors = list(cfg.tune.lr_factors)
        if not factors or not all(0 < f < float("inf") for f in factors) or (
                len(set(factors)) < len(factors)):
            raise ConfigError(f"tune.lr_factors={factors}: must be distinct numbers > 0 "
                              "(finite), at least one")
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
    _check_processes(t)
    _check_optimizer_builds(cfg)


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
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cuda and t.processes > cores:
        raise ConfigError(f"trainer.processes={t.processes}: more than the {cores} CPU cores "
                          f"this job may use (allowed: 1 to {cores})")


def _check_optimizer_builds(cfg: DictConfig) -> None:
    """Build the model on the meta device (no memory) and the optimizer over it, so that a
    bad hyper-parameter (the constructor's ValueError) is reported before any compute."""
    from .models import build_model
    from .train import build_optimizer

    model = build_model(cfg.model, "meta")
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


# Keys that say where things are written, shown or looked for, how often they are logged,
# evaluated or checkpointed: not what is trained (evaluation uses no randomness and leaves
# the model as it was; batches are a function of the seed and the step). Also the tuning
# grid and a preset's seed list: they choose which jobs run, not what one job trains, so a
# grid job is found again by a sweep with another grid or more seeds.
NOT_IN_HASH = ("outputs_dir", "resume", "resume_from", "share_gpus", "logger", "task.cache_dir",
               "trainer.progress", "trainer.log_interval", "trainer.eval_interval",
               "trainer.checkpoint_every", "trainer.bucket_mb", "trainer.collective_timeout_s",
               "tune", "ablation.seeds")


def config_hash(cfg: DictConfig) -> str:
    """Identity of a job: its resolved config minus NOT_IN_HASH, hashed."""
    tree = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for key in NOT_IN_HASH:
        *parents, leaf = key.split(".")
        node = tree
        for parent in parents:
            node = node[parent] or {}  # ablation: null outside presets
        node.pop(leaf, None)  # also a config saved before the key existed
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML (true, 50, 0.5, none -> "none")."""
    key, sep, value = assignment.partition("=")
    if not sep:
        raise ConfigError(f"{assignment!r}: expected key=value")
    return key.strip(), yaml.safe_load(value)


def apply_variant(cfg: DictConfig) -> DictConfig:
    """Set the chosen `ablation.variant`'s key=value pairs (type-checked by the schema)."""
    ablation = cfg.ablation
    if ablation is None or ablation.variant is None:
        return cfg
    if ablation.variant not in ablation.variants:
        allowed = ", ".join(ablation.variants) or f"none (preset {ablation.name} has no variants)"
        raise ConfigError(f"ablation.variant={ablation.variant}: allowed are {allowed}")
    for assignment in ablation.variants[ablation.variant]:
        key, value = parse_assignment(assignment)
        if key == "optimizer":  # a group choice, which Hydra has already composed
            value = optimizer_option(value)
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except Exception as exc:  # noqa: BLE001 - OmegaConf raises several kinds
            raise ConfigError(f"ablation variant {ablation.variant}: {assignment}: "
                              f"{str(exc).splitlines()[0]}") from exc
    return cfg


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def error_line(exc: BaseException) -> str:
    """Hydra and OmegaConf spread a bad value over several lines; keep what names it."""
    if isinstance(exc, MissingConfigException) and exc.options:
        group = exc.missing_cfg_file.rsplit("/", 1)[0]
        return f"{first_line(exc)}; allowed {group} options: {', '.join(exc.options)}"
    parts = [first_line(exc)]
    if exc.__cause__ is not None and first_line(exc.__cause__):
        parts.append(first_line(exc.__cause__))
    return ": ".join(parts)


def optimizer_option(name: str) -> DictConfig:
    """conf/optimizer/NAME.yaml under the schema its defaults list names: what `optimizer=NAME`
    composes, for a preset variant that changes the optimizer (`optimizer=sgd`)."""
    path = config_dir() / "optimizer" / f"{name}.yaml"
    if not path.is_file():
        allowed = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise ConfigError(f"optimizer={name}: allowed are {allowed}")
    body = OmegaConf.load(path)
    schemas = [ConfigStore.instance().load(entry.split("@")[0].lstrip("/") + ".yaml").node
               for entry in body.pop("defaults", []) if entry.startswith("/schema/")]
    return OmegaConf.merge(*schemas, body)


def typed(cfg: DictConfig) -> DictConfig:
    """A job config under the root schema: a saved `.hydra/config.yaml` (no defaults list)
    gets the same types as a freshly composed one."""
    try:
        return OmegaConf.merge(OmegaConf.structured(Config), cfg)
    except OmegaConfBaseException as exc:  # a rerun's override of a wrong type or key
        raise ConfigError(f"{exc.full_key}: {first_line(exc)}") from None


def compose(overrides: list[str] = ()) -> DictConfig:
    """The job config `python -m ablate OVERRIDES` would run (for tests and notebooks)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))
