"""What every optimizer here shares: `step(closure)` and the parameters it updates, state
created at a parameter's first step by one method, a `load_state_dict` that keeps each state
tensor's dtype, and the checks of the hyper-parameters they have in common."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer


def check_hyperparameters(*, lr: float, weight_decay: float, eps: float | None = None,
                          betas: tuple[float, float] | None = None,
                          momentum: float | None = None, clip_grad_norm: float | None = None,
                          clip_grad_value: float | None = None,
                          loss_scale: float | None = None) -> None:
    """One-line ValueErrors naming the value, for those given (None: the optimizer has none,
    or, for the clipping thresholds, does not clip)."""
    if not lr >= 0.0:
        raise ValueError(f"lr={lr}: must be >= 0")
    if betas is not None and (len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas)):
        raise ValueError(f"betas={list(betas)}: must be two numbers in [0, 1)")
    if eps is not None and not eps >= 0.0:
        raise ValueError(f"eps={eps}: must be >= 0")
    if momentum is not None and not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum={momentum}: must be in [0, 1)")
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay={weight_decay}: must be >= 0")
    if clip_grad_norm is not None and not clip_grad_norm > 0.0:
        raise ValueError(f"clip_grad_norm={clip_grad_norm}: must be > 0 or None")
    if clip_grad_value is not None and not clip_grad_value > 0.0:
        raise ValueError(f"clip_grad_value={clip_grad_value}: must be > 0 or None")
    if loss_scale is not None and not loss_scale > 0.0:
        raise ValueError(f"loss_scale={loss_scale}: must be > 0")


def named(group: dict):
    """(name, parameter) pairs of a group; unnamed parameters are called `<i>`."""
    names = group.get("param_names") or [f"<{i}>" for i in range(len(group["params"]))]
    return zip(names, group["params"])


class Base(Optimizer):
    """An optimizer here implements `_update(params)`, its update of the parameters that
    have a gradient, which `step()` calls after the closure; one that keeps state creates a
    parameter's state at its first step in `init_state(p, group)`, which its update calls and
    which the memory estimator calls on the meta device to count the tensors it creates.
    Each updates a parameter's shard of rows exactly (`trainer.sharding=fsdp`); what it
    computes there and communicates, its docstring says."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update(self.params_with_grads())
        return loss

    def params_with_grads(self) -> list[tuple[str, Tensor, dict]]:
        """(name, parameter, group) for each parameter that has a gradient, in group order."""
        return [(name, p, group) for group in self.param_groups for name, p in named(group)
                if p.grad is not None]

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of `p`, created at its first step: none unless an optimizer keeps some."""
        return self.state[p]

    def check_sharding(self, ranks: int) -> None:
        """ValueError naming a parameter whose state cannot be sharded by rows over `ranks`
        (the config check asks before any compute): none, unless an optimizer says."""

    def load_state_dict(self, state_dict: dict) -> None:
        """`Optimizer.load_state_dict`, which casts every floating state tensor (and GaLore's
        uint8 codes) to its parameter's dtype, then each state tensor replaced by a copy of
        the saved one, as saved: 8-bit codes stay uint8, and a bf16-weights checkpoint keeps
        its fp32 moments unrounded, so a resumed run is the uninterrupted one."""
        super().load_state_dict(state_dict)
        params = dict(zip((i for group in state_dict["param_groups"] for i in group["params"]),
                          (p for group in self.param_groups for p in group["params"])))
        for index, saved in state_dict["state"].items():
            state = self.state[params[index]]
            for key, value in saved.items():
                if torch.is_tensor(value):
                    state[key] = value.to(state[key].device, copy=True)
