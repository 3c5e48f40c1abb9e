"""The optimizer of a job, built from its config: one builder for the check (on the meta
device), the trainer and the memory estimator."""

from __future__ import annotations

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from ..fused import OptimizerInBackward
from .base import Base


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


def peak_lr(t: DictConfig) -> float:
    """`trainer.lr` (the optimizer's recommended lr by default) times `trainer.lr_factor`
    (the point of a tuned sweep's grid; 1 otherwise)."""
    return t.lr * t.lr_factor


def build_optimizer(cfg: DictConfig, model: torch.nn.Module, reducer=None):
    """The configured optimizer over all trainable parameters, stepped in backward when
    `toggles.fused_backward` is on (one instance per parameter, updated a layer at a time
    with `trainer.foreach`; data parallel, on gradients summed over the ranks by `reducer`,
    a `distributed.BucketedAllReduce`) or by `step()` otherwise (multi-tensor with
    `trainer.foreach`)."""
    cls, kwargs, lr = optimizer_class(cfg), optimizer_kwargs(cfg), peak_lr(cfg.trainer)
    foreach = cfg.trainer.foreach

    def make(named_params: list) -> torch.optim.Optimizer:
        optimizer = cls(named_params, lr=lr, **kwargs)
        if isinstance(optimizer, Base):
            optimizer.foreach = foreach
        return optimizer

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return (OptimizerInBackward(named, make, reducer) if cfg.toggles.fused_backward
            else make(named))
