"""LOMO: SGD whose step can run inside backward (Lv et al., 2023, "Full Parameter
Fine-tuning for Large Language Models with Limited Resources"), as `lomo-optim`'s `Lomo`.

Both LOMO and AdaLomo prepare a gradient the same way before their own update; that part
lives here as `fp32_grads`, which both updates iterate over.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from ..sharding import local, sum_over_shards
from .base import Base, by_group, check_hyperparameters
from .precision import fp32, fp32_update, fp32_updates


def fp32_grads(params: list[tuple[str, Tensor, dict]], clip_grad_norm: float | None,
               loss_scale: float) -> Iterator[tuple[Tensor, dict, Tensor]]:
    """`(param, group, grad)` for each of `params` (`Base.params_with_grads()`), in the
    reference's order of operations: grad in fp32, divided by `loss_scale`, clamped to the
    group's `clip_grad_value`, then scaled so that the global norm over all of these gradients
    (taken before value clipping) is at most `clip_grad_norm`.

    Like LOMO, this consumes the gradients: each `p.grad` is freed as it is handed out, and
    the fp32 gradient handed out (which is `p.grad` itself when that is fp32) may be
    overwritten by the update. A sharded parameter's gradient is this rank's shard, and the
    norm is summed over the ranks.
    """
    clip_coef = None
    if clip_grad_norm is not None and params:
        norms = torch.stack([torch.linalg.vector_norm(local(p.grad), dtype=torch.float32)
                             for _, p, _ in params])
        total = sum_over_shards(params[0][1], norms.square().sum()).sqrt() / loss_scale
        clip_coef = (clip_grad_norm / (total + 1e-6)).clamp(max=1.0)
    for _, p, group in params:
        grad = fp32(local(p.grad))
        p.grad = None
        if loss_scale != 1.0:
            grad.div_(loss_scale)
        if group["clip_grad_value"] is not None:
            grad.clamp_(-group["clip_grad_value"], group["clip_grad_value"])
        if clip_coef is not None:
            grad.mul_(clip_coef)
        yield p, group, grad


class Lomo(Base):
    r"""LOMO: plain SGD, with the options `lomo-optim`'s `Lomo` has.

    .. code-block:: text

        input: lr, weight decay wd, clip_grad_value, clip_grad_norm, loss_scale
        for each step, for each parameter p with gradient g:
          1. g <- g / loss_scale                      (the caller multiplied the loss)
          2. g <- clamp(g, -clip_grad_value, clip_grad_value)      (if set)
          3. g <- g * min(1, clip_grad_norm / ||all g||)    (if set; norm before step 2)
          4. p <- p * (1 - lr * wd)
          5. p <- p - lr * g

    `step()` is the ordinary path. In the trainer's fused backward every parameter has its
    own instance whose `step()` runs from that parameter's gradient hook; global norm
    clipping is then the trainer's (`trainer.clip_grad_norm`), since one instance sees one
    parameter. `step()` frees each `p.grad` it uses. There is no state.
    """

    foreach_shards = True  # update_many updates a shard of rows as _update does

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0,
                 clip_grad_norm: float | None = None, clip_grad_value: float | None = None,
                 loss_scale: float = 1.0):
        check_hyperparameters(lr=lr, weight_decay=weight_decay, clip_grad_norm=clip_grad_norm,
                              clip_grad_value=clip_grad_value, loss_scale=loss_scale)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay,
                                      clip_grad_value=clip_grad_value))
        self.clip_grad_norm = clip_grad_norm  # global over this instance: not per group
        self.loss_scale = loss_scale

    def _update(self, params: list[tuple[str, Tensor, dict]]) -> None:
        for p, group, grad in fp32_grads(params, self.clip_grad_norm, self.loss_scale):
            with fp32_update(p, {}) as (p32, _):
                lomo_update_(p32, grad, lr=group["lr"], weight_decay=group["weight_decay"])

    def update_many(self, entries: list[tuple[Tensor, dict, dict]]) -> None:
        prepared = fp32_grads([("", p, group) for p, group, _ in entries], self.clip_grad_norm,
                              self.loss_scale)
        for bucket in by_group([(p, group, {}, grad) for p, group, grad in prepared]):
            params, groups, states, grads = zip(*bucket)
            with fp32_updates(params, states) as (p32s, _):
                lomo_update_many_(p32s, list(grads), lr=groups[0]["lr"],
                                  weight_decay=groups[0]["weight_decay"])


def lomo_update_(p: Tensor, grad: Tensor, *, lr: float, weight_decay: float) -> None:
    """Steps 4-5 on one fp32 tensor."""
    if weight_decay:
        p.mul_(1.0 - lr * weight_decay)
    p.add_(grad, alpha=-lr)


def lomo_update_many_(params: list[Tensor], grads: list[Tensor], *, lr: float,
                      weight_decay: float) -> None:
    """`lomo_update_` on lists of fp32 tensors, op for op in foreach ops."""
    if weight_decay:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_add_(params, grads, alpha=-lr)
