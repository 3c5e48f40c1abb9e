"""LOMO: SGD whose step can run inside backward (Lv et al., 2023, "Full Parameter
Fine-tuning for Large Language Models with Limited Resources"), as `lomo-optim`'s `Lomo`.

Both LOMO and AdaLomo prepare a gradient the same way before their own update; that part
lives here as `fp32_grads`, which both `step()`s iterate over.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.optim import Optimizer

from .precision import fp32_update


def check_common(lr: float, weight_decay: float, clip_grad_norm: float | None,
                 clip_grad_value: float | None, loss_scale: float) -> None:
    """The hyper-parameters LOMO and AdaLomo share, validated with one-line errors."""
    if not lr >= 0.0:
        raise ValueError(f"lr={lr}: must be >= 0")
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay={weight_decay}: must be >= 0")
    if clip_grad_norm is not None and not clip_grad_norm > 0.0:
        raise ValueError(f"clip_grad_norm={clip_grad_norm}: must be > 0 or None")
    if clip_grad_value is not None and not clip_grad_value > 0.0:
        raise ValueError(f"clip_grad_value={clip_grad_value}: must be > 0 or None")
    if not loss_scale > 0.0:
        raise ValueError(f"loss_scale={loss_scale}: must be > 0")


def fp32_grads(optimizer: Optimizer, clip_grad_norm: float | None,
               loss_scale: float) -> Iterator[tuple[Tensor, dict, Tensor]]:
    """`(param, group, grad)` for each parameter that has a gradient, in the reference's
    order of operations: grad in fp32, divided by `loss_scale`, clamped to the group's
    `clip_grad_value`, then scaled so that the global norm over all of these gradients (taken
    before value clipping) is at most `clip_grad_norm`.

    Like LOMO, this consumes the gradients: each `p.grad` is freed as it is handed out, and
    the fp32 gradient handed out (which is `p.grad` itself when that is fp32) may be
    overwritten by the update.
    """
    params = [(p, group) for group in optimizer.param_groups for p in group["params"]
              if p.grad is not None]
    clip_coef = None
    if clip_grad_norm is not None and params:
        norms = torch.stack([torch.linalg.vector_norm(p.grad, dtype=torch.float32)
                             for p, _ in params])
        total = torch.linalg.vector_norm(norms) / loss_scale
        clip_coef = (clip_grad_norm / (total + 1e-6)).clamp(max=1.0)
    for p, group in params:
        grad = p.grad.float()
        p.grad = None
        if loss_scale != 1.0:
            grad.div_(loss_scale)
        if group["clip_grad_value"] is not None:
            grad.clamp_(-group["clip_grad_value"], group["clip_grad_value"])
        if clip_coef is not None:
            grad.mul_(clip_coef)
        yield p, group, grad


class Lomo(Optimizer):
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

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0,
                 clip_grad_norm: float | None = None, clip_grad_value: float | None = None,
                 loss_scale: float = 1.0):
        check_common(lr, weight_decay, clip_grad_norm, clip_grad_value, loss_scale)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay,
                                      clip_grad_value=clip_grad_value))
        self.clip_grad_norm = clip_grad_norm  # global over this instance: not per group
        self.loss_scale = loss_scale

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for p, group, grad in fp32_grads(self, self.clip_grad_norm, self.loss_scale):
            with fp32_update(p, {}) as (p32, _):
                lomo_update_(p32, grad, lr=group["lr"], weight_decay=group["weight_decay"])
        return loss


def lomo_update_(p: Tensor, grad: Tensor, *, lr: float, weight_decay: float) -> None:
    """Steps 4-5 on one fp32 tensor."""
    if weight_decay:
        p.mul_(1.0 - lr * weight_decay)
    p.add_(grad, alpha=-lr)
