"""Typed schemas for every config group, registered in Hydra's ConfigStore.

The YAML files in conf/ hold the values; these dataclasses hold the types, so a wrong
type or an unknown key fails when Hydra composes the config. Range checks that a type
cannot express live in `config.check`, which runs before any compute starts.
"""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError, first_line


def config_dir() -> Path:
    """conf/ inside an installed wheel, else the checkout's top-level conf/."""
    packaged = Path(__file__).parent.parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent.parent / "conf"


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Sharding(Enum):
    """How several processes hold the model (ablate/sharding.py)."""

    none = "none"  # replicated: every rank holds all of it (data parallel)
    fsdp = "fsdp"  # FSDP2: each rank holds 1/N of the weights, gradients and state


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
class ProjectedConfig(OptimizerConfig):
    """GaLore's and APOLLO's common keys: Adam moments in a projection of 2-D weights."""

    betas: Tuple[float, float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING
    rank: int = MISSING
    update_proj_gap: int = MISSING  # T: steps between projector refreshes
    scale: float = MISSING  # alpha (APOLLO: the update is multiplied by sqrt(alpha))
    target_modules: List[str] = MISSING  # name substrings of the projected 2-D weights
    seed: int = MISSING  # for projection=random


@dataclass
class GaLoreAdamWConfig(ProjectedConfig):
    proj_type: ProjType = MISSING


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


class Scaling(Enum):
    """APOLLO's gradient scaling factor: one per channel (APOLLO) or per tensor (Mini)."""

    channel = "channel"
    tensor = "tensor"


@dataclass
class ApolloConfig(ProjectedConfig):
    scaling: Scaling = MISSING


class Partition(Enum):
    """Adam-mini's blocks for the attention and MLP weights (ablate/optim/adam_mini.py)."""

    head = "head"  # queries and keys per head, the rest per output neuron (the reference)
    neuron = "neuron"  # every weight per output neuron
    tensor = "tensor"  # one block per weight


@dataclass
class AdamMiniConfig(OptimizerConfig):
    betas: Tuple[float, float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING
    num_heads: int = MISSING  # attention heads: a query or key head is in/num_heads rows


class AdjustLr(Enum):
    """Muon's lr for a rows x cols matrix (torch.optim.Muon's `adjust_lr_fn`)."""

    original = "original"  # lr * sqrt(max(1, rows / cols)) (Keller Jordan's)
    match_rms_adamw = "match_rms_adamw"  # lr * 0.2 * sqrt(max(rows, cols)) (Moonshot's)


class NsDtype(Enum):
    """The dtype of Muon's Newton-Schulz iteration."""

    bfloat16 = "bfloat16"  # torch.optim.Muon's
    float32 = "float32"  # for CPUs, where bf16 matmuls are slow


@dataclass
class MuonConfig(OptimizerConfig):
    momentum: float = MISSING
    ns_steps: int = MISSING  # Newton-Schulz iterations
    ns_coefficients: Tuple[float, float, float] = MISSING  # (a, b, c)
    ns_dtype: NsDtype = MISSING
    eps: float = MISSING  # floor of the norm the iteration's input is divided by
    weight_decay: float = MISSING
    adjust_lr_fn: AdjustLr = MISSING
    muon_modules: List[str] = MISSING  # name substrings of the 2-D weights Muon takes
    adamw_lr_ratio: float = MISSING  # the other parameters' AdamW lr = lr x this
    adamw_betas: Tuple[float, float] = MISSING
    adamw_eps: float = MISSING
    adamw_weight_decay: float = MISSING


@dataclass
class AdafactorConfig(OptimizerConfig):
    beta2_decay: float = MISSING
    beta2: Optional[float] = None  # a constant in [0, 1); None: the schedule 1 - t^beta2_decay
    eps: List[Optional[float]] = MISSING  # (eps1: null = the dtype's epsilon, eps2)
    d: float = MISSING
    weight_decay: float = MISSING
    factored: bool = MISSING
    relative_step: bool = MISSING


@dataclass
class AdamW8bitConfig(AdamWConfig):
    min_8bit_size: int = MISSING  # smaller tensors keep fp32 moments (bitsandbytes' 4096)


# ---------------------------------------------------------------- adapter
@dataclass
class AdapterConfig:
    """The model's adapter (ablate/adapter.py): none, or LoRA through peft (lora, relora,
    low_rank)."""

    name: str = MISSING  # none | lora | relora | low_rank
    rank: int = MISSING
    alpha: float = MISSING  # the adapter's output is scaled by alpha / rank
    dropout: float = MISSING
    target_modules: List[str] = MISSING  # module names (or their last parts) adapted
    full_rank: List[str] = MISSING  # name substrings of weights trained in full beside it
    restart_every: int = MISSING  # relora: merge and restart every T steps
    save_merged: bool = MISSING  # trainer.save_model: also RUN_DIR/model/merged, merged


# ---------------------------------------------------------------- the rest
@dataclass
class TogglesConfig:
    """Component switches. `None` means "the optimizer's own form" (component on)."""

    fused_backward: bool = True
    # GaLore: svd (its own), random, pca, none; APOLLO: random (its own), svd, none
    projection: Optional[Projection] = None
    two_sided: Optional[bool] = None  # GaLore: project both sides (P^T G Q)
    eight_bit: Optional[bool] = None  # GaLore: Adam moments in 8 bits (its own default: off)
    adaptive_lr: Optional[bool] = None  # AdaLomo: false = no second moment (u = g)
    # AdaLomo: false = plain lr step, no RMS clip/scale; global = one RMS over all parameters'
    # updates. true, false or global: a bool-or-string has no OmegaConf type, so the
    # optimizer's constructor checks it (reported by check()).
    grouped_norm: Any = None
    nmf: Optional[bool] = None  # AdaLomo: false = full m x n second moment, not factored
    limiter: Optional[bool] = None  # APOLLO: false = no norm-growth limiter
    partition: Optional[Partition] = None  # Adam-mini: head (its own), neuron, tensor
    nesterov: Optional[bool] = None  # Muon: false = plain momentum (its own: Nesterov)


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
    # fused: at most this many buckets' sums in flight at once (memory: as many flat copies)
    buckets_in_flight: int = 2  # (a default: configs saved before it lack it)
    sharding: Sharding = Sharding.none  # fsdp: weights, gradients and state 1/N per rank
    collective_timeout_s: float = MISSING  # a rank waiting longer on the others fails the job
    # CPU threads of each of the job's processes (torch's intra-op threads); null or 0: the
    # job's share of the cores, with the jobs of a joblib sweep and its processes (ablate/cores.py)
    threads: Optional[int] = None
    # multi-tensor optimizer updates: unfused, all parameters at once; fused, one decoder
    # layer at a time (ablate/fused.py); false: every tensor on its own (the reference)
    foreach: bool = True


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
    # What the preset expects of its variants: {variant, against, expect, margin, metric}
    # mappings, checked before compute (config/claims.py), judged by the report.
    claims: List[Dict[str, Any]] = field(default_factory=list)


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
    adapter: AdapterConfig = MISSING
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
    cs.store(group="schema/optimizer", name="apollo", node=ApolloConfig)
    cs.store(group="schema/optimizer", name="adam_mini", node=AdamMiniConfig)
    cs.store(group="schema/optimizer", name="muon", node=MuonConfig)
    cs.store(group="schema/optimizer", name="adafactor", node=AdafactorConfig)
    cs.store(group="schema/optimizer", name="adamw8bit", node=AdamW8bitConfig)
    cs.store(group="schema/adapter", name="adapter", node=AdapterConfig)
    cs.store(group="schema/task", name="local", node=LocalTaskConfig)
    cs.store(group="schema/task", name="hub", node=HubTaskConfig)
    cs.store(group="schema/task", name="glue", node=GlueTaskConfig)
    cs.store(group="schema/task", name="instruct_local", node=InstructLocalTaskConfig)
    cs.store(group="schema/task", name="instruct_hub", node=InstructHubTaskConfig)



def plain(value):
    """A config value as the YAML that set it: an enum member as its value."""
    return value.value if isinstance(value, Enum) else value



def typed(cfg: DictConfig) -> DictConfig:
    """A job config under the root schema: a saved `.hydra/config.yaml` (no defaults list)
    gets the same types as a freshly composed one."""
    try:
        return OmegaConf.merge(OmegaConf.structured(Config), cfg)
    except OmegaConfBaseException as exc:  # a rerun's override of a wrong type or key
        raise ConfigError(f"{exc.full_key}: {first_line(exc)}") from None

