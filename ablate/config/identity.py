"""A job's identity, as data: the hash of what it trains and the variant it belongs to.

The one place that decides which keys do not change what a job trains (left out of the hash
and the variant) and which keys make a variant. The variant is a mapping of config key to
value; its label is for display only and is never parsed back.
"""

from __future__ import annotations

import hashlib
import inspect
import json

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from .schema import plain
from .variants import parse_assignment

# Keys that say where things are written, shown or looked for, how often they are logged,
# evaluated or checkpointed: not what is trained (evaluation uses no randomness and leaves
# the model as it was; batches are a function of the seed and the step). Also the tuning
# grid and a preset's seed list: they choose which jobs run, not what one job trains, so a
# grid job is found again by a sweep with another grid or more seeds. A preset's claims are
# what its report checks, not what is trained. `trainer.threads` and `trainer.foreach` say
# how the same numbers are computed (the multi-tensor updates equal the per-tensor ones).
NOT_IN_HASH = ("outputs_dir", "resume", "resume_from", "share_gpus", "logger", "task.cache_dir",
               "trainer.progress", "trainer.log_interval", "trainer.eval_interval",
               "trainer.checkpoint_every", "trainer.bucket_mb", "trainer.buckets_in_flight",
               "trainer.collective_timeout_s", "trainer.threads", "trainer.foreach", "tune",
               "ablation.seeds", "ablation.claims")


def config_hash(cfg: DictConfig) -> str:
    """Identity of a job: its resolved config minus NOT_IN_HASH, hashed, as its one-process
    equivalent: what it trains is its global batch, not how many processes compute it (2
    processes x batch 4 is 1 x batch 8, the same numbers: tests/test_distributed.py), so a
    job resumes on another number of processes. `trainer.sharding` (what a checkpoint's
    layout is) stays in it, except at its default, which configs from before it lack."""
    tree = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for key in NOT_IN_HASH:
        *parents, leaf = key.split(".")
        node = tree
        for parent in parents:
            node = node[parent] or {}  # ablation: null outside presets
        node.pop(leaf, None)  # also a config saved before the key existed
    if (tree.get("adapter") or {}).get("name") == "none":
        del tree["adapter"]  # so a job without one keeps the hash it had before the group
    trainer = tree["trainer"]
    if trainer.get("processes", 1) > 1:
        trainer["batch_size"], trainer["processes"] = trainer["batch_size"] * trainer[
            "processes"], 1
    if trainer.get("sharding") == "none":
        del trainer["sharding"]
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]



# Overrides that do not make a variant: the seed and a tuned sweep's lr factor (runs that
# differ only in them are one variant: the report aggregates seeds and chooses the lr), what
# the resolved config shows anyway (optimizer name, toggles, the preset's variant), and the
# keys that do not change what is trained (NOT_IN_HASH).
NOT_IN_VARIANT = {"optimizer", "trainer.seed", "trainer.lr_factor", *NOT_IN_HASH}
ROOTS_NOT_IN_VARIANT = {"toggles", "ablation", "tune", "hydra",
                        *(k for k in NOT_IN_HASH if "." not in k)}


def variant(cfg: DictConfig, overrides: list[str]) -> dict:
    """What this job varies, as config key -> value, read from the resolved config: the
    optimizer, every toggle that differs from the optimizer's own form, and each value the
    command line or the preset's variant set (group choices such as `model=llama_60m` as
    chosen). Not the seed."""
    parts = {"optimizer": cfg.optimizer.name}
    defaults = inspect.signature(get_class(cfg.optimizer._target_)).parameters
    for key, value in OmegaConf.to_container(cfg.toggles, resolve=True, enum_to_str=True).items():
        default = True if key == "fused_backward" else (
            defaults[key].default if key in defaults else None)
        if value is not None and value != default:
            parts[f"toggles.{key}"] = value
    assignments = list(overrides)
    if cfg.ablation is not None and cfg.ablation.variant is not None:
        assignments += list(cfg.ablation.variants[cfg.ablation.variant])
    for assignment in assignments:
        key, _, value = assignment.lstrip("+~").partition("=")
        if key in NOT_IN_VARIANT or key.split("/")[0].split(".")[0] in ROOTS_NOT_IN_VARIANT:
            continue
        if "." in key:
            value = OmegaConf.select(cfg, key)
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True, enum_to_str=True)
        parts[key] = plain(value)  # device=cpu
    return parts


def short_key(key: str) -> str:
    """A variant key as labels show it: toggles and optimizer keys without their group."""
    return key.removeprefix("toggles.").removeprefix("optimizer.")


def label(parts: dict) -> str:
    """A variant, or some of its keys, for display: `adalomo nmf=False trainer.lr=0.01`."""
    name = [str(parts["optimizer"])] if "optimizer" in parts else []
    return " ".join(name + [f"{short_key(k)}={v}" for k, v in parts.items() if k != "optimizer"])


def is_baseline(cfg: DictConfig) -> bool | None:
    """Whether this job is the preset's unablated variant (None outside presets)."""
    if cfg.ablation is None or not cfg.ablation.baseline:
        return None
    return all(plain(OmegaConf.select(cfg, key)) == value
               for key, value in map(parse_assignment, cfg.ablation.baseline))
