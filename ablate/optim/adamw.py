"""AdamW (Loshchilov and Hutter, 2019), as `torch.optim.AdamW` computes it, with a switch
that removes the second moment: the AdaLomo paper's Section 2.2 takes Adam apart this way."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Base, by_group, check_hyperparameters, elementwise_batches
from ..sharding import local
from .precision import fp32, fp32_update, fp32_updates


class AdamW(Base):
    r"""AdamW with decoupled weight decay; `adaptive_lr=False` removes the second moment on
    the same code path.

    .. code-block:: text

        input: lr, betas = (beta1, beta2), eps, weight decay wd, switch adaptive_lr
        for step t = 1, 2, ..., for each parameter p with gradient g:
          1. p <- p * (1 - lr * wd)
          2. m <- beta1 m + (1 - beta1) g
          3. v <- beta2 v + (1 - beta2) g^2                          (if adaptive_lr)
          4. m_hat <- m / (1 - beta1^t),  v_hat <- v / (1 - beta2^t)
          5. p <- p - lr * m_hat / (sqrt(v_hat) + eps)                (if adaptive_lr)
             p <- p - lr * m_hat                                      (otherwise)

    All on is `torch.optim.AdamW` on its single-tensor path (the one it takes on CPU), op for
    op. `adaptive_lr=False` keeps no `exp_avg_sq`: momentum SGD with Adam's bias correction,
    so it wants a much larger lr. Adam without momentum is `betas=(0.0, beta2)`: then
    m = g, and `exp_avg` is still kept, as torch keeps it.

    A parameter stored in bf16 keeps its moments in bf16 (like the parameter, as torch's);
    the update runs on fp32 copies of the parameter, gradient and moments and writes them
    back rounded (`precision.fp32_update`).
    """

    foreach_shards = True  # update_many updates a shard of rows as _update does

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, adaptive_lr: bool = True):
        check_hyperparameters(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        adaptive_lr=adaptive_lr)
        super().__init__(params, defaults)

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of `p`, created at its first step, in torch's form (a float32 step
        count on the CPU, the moments like `p`); no second moment without `adaptive_lr`."""
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["adaptive_lr"]:
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _update(self, params: list[tuple[str, Tensor, dict]]) -> None:
        for _, p, group in params:
            state = self.init_state(p, group)
            state["step"] += 1
            with fp32_update(p, state) as (p32, state32):
                adamw_update_(p32, local(p.grad).float(), state32, lr=group["lr"],
                              betas=group["betas"], eps=group["eps"],
                              weight_decay=group["weight_decay"])

    def update_many(self, entries: list[tuple[Tensor, dict, dict]]) -> None:
        torch._foreach_add_([state["step"] for _, _, state in entries], 1)
        for bucket in by_group(entries, "step"):
            params, groups, states = zip(*bucket)
            with fp32_updates(params, states) as (p32s, states32):
                adamw_update_many_(p32s, [fp32(local(p.grad)) for p in params], states32,
                                   lr=groups[0]["lr"], betas=groups[0]["betas"],
                                   eps=groups[0]["eps"], weight_decay=groups[0]["weight_decay"])


def adamw_update_many_(params: list[Tensor], grads: list[Tensor], states: list[dict], *,
                       lr: float, betas: tuple[float, float], eps: float,
                       weight_decay: float) -> None:
    """`adamw_update_` on lists of tensors with one step count, op for op in foreach ops, on
    a CPU one cache-sized batch of slices at a time (`elementwise_batches`)."""
    step = states[0]["step"].item()
    moments = [[state["exp_avg"] for state in states]]
    if "exp_avg_sq" in states[0]:
        moments.append([state["exp_avg_sq"] for state in states])
    for params, exp_avgs, *exp_avg_sqs, grads in elementwise_batches([params, *moments],
                                                                     [grads]):
        adamw_foreach_(params, grads, exp_avgs, exp_avg_sqs[0] if exp_avg_sqs else None,
                       step=step, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def adamw_foreach_(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                   exp_avg_sqs: list[Tensor] | None, *, step: float, lr: float,
                   betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    beta1, beta2 = betas
    if weight_decay:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    step_size = lr / (1 - beta1 ** step)
    if exp_avg_sqs is not None:
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, (1 - beta2 ** step) ** 0.5)
        torch._foreach_add_(denoms, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denoms, value=-step_size)
    else:
        torch._foreach_add_(params, exp_avgs, alpha=-step_size)


def adamw_update_(p: Tensor, grad: Tensor, state: dict, *, lr: float,
                  betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    """Steps 1-5 on one tensor; whether there is a second moment is read off `state`."""
    beta1, beta2 = betas
    step = state["step"].item()
    if weight_decay:
        p.mul_(1 - lr * weight_decay)
    exp_avg = state["exp_avg"]
    exp_avg.lerp_(grad, 1 - beta1)
    step_size = lr / (1 - beta1 ** step)
    if "exp_avg_sq" in state:
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / (1 - beta2 ** step) ** 0.5).add_(eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)
    else:
        p.add_(exp_avg, alpha=-step_size)
