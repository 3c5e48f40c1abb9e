"""SGD with momentum and L2 weight decay, as `torch.optim.SGD` computes it (no dampening, no
Nesterov), with its update in fp32 for bf16 weights like every optimizer here."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Base, by_group, check_hyperparameters
from ..sharding import local
from .precision import fp32, fp32_update, fp32_updates


class SGD(Base):
    r"""Stochastic gradient descent.

    .. code-block:: text

        input: lr, momentum mu, weight decay wd
        for each step, for each parameter p with gradient g:
          1. g <- g + wd p
          2. b <- mu b + g            (if mu != 0; b starts at 0, so b = g at the first step)
          3. p <- p - lr b            (p - lr g without momentum)

    `torch.optim.SGD` op for op (tested equal); the momentum buffer, kept only with
    momentum, takes the parameter's dtype as torch's does.
    """

    foreach_shards = True  # update_many updates a shard of rows as _update does

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        check_hyperparameters(lr=lr, momentum=momentum, weight_decay=weight_decay)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of `p`, created at its first step: with momentum, its buffer (like `p`)."""
        state = self.state[p]
        if group["momentum"] and not state:
            state["momentum_buffer"] = torch.zeros_like(p)
        return state

    def _update(self, params: list[tuple[str, Tensor, dict]]) -> None:
        for _, p, group in params:
            with fp32_update(p, self.init_state(p, group)) as (p32, state32):
                sgd_update_(p32, local(p.grad).float(), state32, lr=group["lr"],
                            momentum=group["momentum"], weight_decay=group["weight_decay"])

    def update_many(self, entries: list[tuple[Tensor, dict, dict]]) -> None:
        for bucket in by_group(entries):
            params, groups, states = zip(*bucket)
            with fp32_updates(params, states) as (p32s, states32):
                sgd_update_many_(p32s, [fp32(local(p.grad)) for p in params], states32,
                                 lr=groups[0]["lr"], momentum=groups[0]["momentum"],
                                 weight_decay=groups[0]["weight_decay"])


def sgd_update_many_(params: list[Tensor], grads: list[Tensor], states: list[dict], *,
                     lr: float, momentum: float, weight_decay: float) -> None:
    """`sgd_update_` on lists of fp32 tensors, op for op in foreach ops."""
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if "momentum_buffer" in states[0]:
        buffers = [state["momentum_buffer"] for state in states]
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_add_(buffers, grads)
        grads = buffers
    torch._foreach_add_(params, grads, alpha=-lr)


def sgd_update_(p: Tensor, grad: Tensor, state: dict, *, lr: float, momentum: float,
                weight_decay: float) -> None:
    """Steps 1-3 on one fp32 tensor."""
    if weight_decay:
        grad = grad.add(p, alpha=weight_decay)
    if "momentum_buffer" in state:
        grad = state["momentum_buffer"].mul_(momentum).add_(grad)
    p.add_(grad, alpha=-lr)
