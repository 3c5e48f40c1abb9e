"""Adafactor (Shazeer and Stern, 2018), as `torch.optim.Adafactor` computes it, with the
switches that tell it apart from AdaLomo: a factored or full second moment, a relative or
absolute step, and the decaying or a constant beta2."""

from __future__ import annotations

import torch
from torch import Tensor

from ..sharding import is_sharded, local, state_zeros, sum_over_shards
from .base import Base, by_group, check_hyperparameters
from .precision import fp32_update, fp32_updates


# The smallest eps1 whose square float32 holds: below it the floor eps1^2 on v rounds to 0,
# and a gradient entry that is 0 (an embedding row no token of the batch used) gives 0 / 0.
EPS1_MIN = torch.finfo(torch.float32).tiny ** 0.5


class Adafactor(Base):
    r"""Adafactor without a first moment (torch's form of the paper's Algorithm 4/5).

    .. code-block:: text

        input: lr, eps = (eps1, eps2) (eps1 None: the dtype's machine epsilon), clipping
               threshold d, beta2_decay tau, beta2 (None: the schedule), weight decay wd,
               switches factored, relative_step
        for step t = 1, 2, ..., for each parameter p with gradient g:
          1. 1 - beta2_t <- t^tau  (1 at t = 1)  if beta2 is None, else 1 - beta2 (constant)
          2. alpha <- max(eps2, RMS(p)) * min(lr, 1 / sqrt(t))  if relative_step, else lr
          3. p <- p * (1 - lr * wd)
          4. if factored and p is a matrix (... x m x n):
               r <- lerp(r, rowmean(g^2), 1 - beta2_t)            (... x m x 1)
               c <- lerp(c, colmean(g^2), 1 - beta2_t)            (... x 1 x n)
               v <- (r @ c) / max(eps1, mean(r))
             else:
               v <- lerp(v, g^2, 1 - beta2_t)                     (full size of p)
          5. u <- g / sqrt(max(v, eps1^2))
          6. p <- p - alpha / max(1, RMS(u) / d) * u

    All switches on is `torch.optim.Adafactor` on its single-tensor path, op for op (tested
    equal). `factored=False` keeps the full second moment for matrices too;
    `relative_step=False` steps by the lr itself (no RMS(p) scale, no 1/sqrt(t) cap); a
    constant `beta2` replaces the schedule (Adam's beta2, no bias correction). AdaLomo is
    this with its own lr, eps1 added to g^2 and its grouped normalization. The state takes
    the parameter's dtype (as torch's); a bf16 parameter's update runs in fp32
    (`precision.fp32_update`), so eps1 None is float32's epsilon there.

    Sharded by rows (`trainer.sharding=fsdp`), each rank updates its rows: the row means r
    and the full v are its own; the column means c (n numbers), the mean of r, RMS(p) and
    RMS(u) are sums over the ranks, c replicated (the same on every rank), as AdaLomo's.
    """

    def __init__(self, params, lr: float = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, beta2: float | None = None, factored: bool = True,
                 relative_step: bool = True):
        check_hyperparameters(lr=lr, weight_decay=weight_decay)
        if not beta2_decay <= 0.0:
            raise ValueError(f"beta2_decay={beta2_decay}: must be <= 0")
        if len(eps) != 2 or not ((eps[0] is None or eps[0] >= EPS1_MIN) and eps[1] >= 0.0):
            raise ValueError(f"eps={list(eps)}: must be (eps1 >= {EPS1_MIN:.3g} or null, "
                             "eps2 >= 0); eps1 floors sqrt(v), and its square must be a "
                             "float32 (AdaLomo's 1e-30 added to g^2 is eps1 = 1e-15 here)")
        if not d >= 1.0:
            raise ValueError(f"d={d}: must be >= 1")
        if beta2 is not None and not 0.0 <= beta2 < 1.0:
            raise ValueError(f"beta2={beta2}: must be in [0, 1), or None for the schedule "
                             "1 - t^beta2_decay")
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=tuple(eps), d=d,
                        weight_decay=weight_decay, beta2=beta2, factored=factored,
                        relative_step=relative_step)
        super().__init__(params, defaults)

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of `p`, created at its first step, in torch's form: a float32 step count
        and, like `p`, the row and column means (keeping their reduced dimension) or the
        full second moment."""
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            if group["factored"] and p.dim() > 1:  # a matrix's columns span the ranks
                state["row_var"] = state_zeros(p, (*p.shape[:-1], 1), p.dtype, by_rows=True)
                state["col_var"] = state_zeros(p, (*p.shape[:-2], 1, p.shape[-1]), p.dtype,
                                               by_rows=p.dim() > 2)
            else:
                state["variance"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def kept_whole(self, p: Tensor, group: dict, key: str) -> bool:
        return key == "col_var" and p.dim() == 2  # a matrix's column statistics

    def _update(self, params: list[tuple[str, Tensor, dict]]) -> None:
        for _, p, group in params:
            state = self.init_state(p, group)
            state["step"] += 1
            with fp32_update(p, state) as (p32, state32):
                adafactor_update_(p32, local(p.grad).float(), state32, group, whole=p)

    def update_many(self, entries: list[tuple[Tensor, dict, dict]]) -> None:
        torch._foreach_add_([state["step"] for _, _, state in entries], 1)
        for bucket in by_group(entries, "step"):
            for factored in (True, False):
                part = [entry for entry in bucket if ("row_var" in entry[2]) == factored]
                if not part:
                    continue
                params, groups, states = zip(*part)
                with fp32_updates(params, states) as (p32s, states32):
                    adafactor_update_many_(p32s, [p.grad.float() for p in params], states32,
                                           groups[0])


def adafactor_update_(p: Tensor, grad: Tensor, state: dict, group: dict,
                      whole: Tensor | None = None) -> None:
    """Steps 1-6 on one fp32 tensor; factored or not is read off `state`. `whole`: the
    parameter, when `p`, `grad` and the state are this rank's rows of a sharded one."""
    step = state["step"].item()
    lr, (eps1, eps2) = group["lr"], group["eps"]
    if eps1 is None:
        eps1 = torch.finfo(p.dtype).eps
    one_minus_beta2 = step ** group["beta2_decay"] if group["beta2"] is None else (
        1.0 - group["beta2"])
    if group["relative_step"]:
        norm, numel = norm_and_numel(p, whole)
        alpha = max(eps2, norm / (numel ** 0.5)) * min(lr, 1 / (step ** 0.5))
    else:
        alpha = lr
    if group["weight_decay"] != 0:
        p.mul_(1 - lr * group["weight_decay"])
    if "row_var" in state:
        row_var, col_var = state["row_var"], state["col_var"]
        row_var.lerp_(torch.norm(grad, dim=-1, keepdim=True).square_().div_(grad.size(-1)),
                      one_minus_beta2)
        by_rows = is_sharded(whole) and whole.dim() == 2  # the columns' rows on every rank
        if by_rows:
            col_mean = sum_over_shards(whole, grad.square().sum(-2, keepdim=True)).div_(
                whole.shape[-2])
            row_mean = sum_over_shards(whole, row_var.sum(-2, keepdim=True)) / whole.shape[-2]
        else:
            col_mean = torch.norm(grad, dim=-2, keepdim=True).square_().div_(grad.size(-2))
            row_mean = row_var.mean(dim=-2, keepdim=True)
        col_var.lerp_(col_mean, one_minus_beta2)
        var_estimate = row_var @ col_var
        var_estimate.div_(row_mean.clamp_(min=eps1))
    else:
        state["variance"].lerp_(grad * grad, one_minus_beta2)
        var_estimate = state["variance"].clone()
    update = var_estimate.clamp_(min=eps1 * eps1).rsqrt_().mul_(grad)
    norm, numel = norm_and_numel(update, whole)
    denom = max(1.0, norm / ((numel ** 0.5) * group["d"]))
    p.add_(update, alpha=-alpha / denom)


def norm_and_numel(x: Tensor, whole: Tensor | None) -> tuple[float, int]:
    """The 2-norm and the size of `x` or, when `x` is this rank's rows of the sharded
    `whole`, of all rows (for an RMS, as torch's Adafactor takes it)."""
    if not is_sharded(whole):
        return x.norm(2).item(), x.numel()
    return sum_over_shards(whole, x.square().sum()).sqrt().item(), whole.numel()


def adafactor_update_many_(params: list[Tensor], grads: list[Tensor], states: list[dict],
                           group: dict) -> None:
    """`adafactor_update_` on lists of fp32 tensors with one step count, all factored or
    none, op for op: the elementwise steps in foreach ops; the row and column norms, the
    outer products and the last step per tensor (its scale is per tensor, and `add_` with
    it rounds once where a foreach multiply and add would round twice)."""
    step = states[0]["step"].item()
    lr, (eps1, eps2) = group["lr"], group["eps"]
    if eps1 is None:
        eps1 = torch.finfo(params[0].dtype).eps
    one_minus_beta2 = step ** group["beta2_decay"] if group["beta2"] is None else (
        1.0 - group["beta2"])
    if group["relative_step"]:
        alphas = [max(eps2, norm / (p.numel() ** 0.5)) * min(lr, 1 / (step ** 0.5))
                  for p, norm in zip(params, norms_of(params))]
    else:
        alphas = [lr] * len(params)
    if group["weight_decay"] != 0:
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
    if "row_var" in states[0]:
        row_vars = [state["row_var"] for state in states]
        row_means = [torch.linalg.vector_norm(grad, dim=-1, keepdim=True) for grad in grads]
        torch._foreach_mul_(row_means, row_means)
        torch._foreach_div_(row_means, [grad.size(-1) for grad in grads])
        torch._foreach_lerp_(row_vars, row_means, one_minus_beta2)
        col_means = [torch.linalg.vector_norm(grad, dim=-2, keepdim=True) for grad in grads]
        torch._foreach_mul_(col_means, col_means)
        torch._foreach_div_(col_means, [grad.size(-2) for grad in grads])
        torch._foreach_lerp_([state["col_var"] for state in states], col_means, one_minus_beta2)
        var_estimates = [state["row_var"] @ state["col_var"] for state in states]
        row_var_means = [row_var.mean(dim=-2, keepdim=True) for row_var in row_vars]
        torch._foreach_clamp_min_(row_var_means, eps1)
        torch._foreach_div_(var_estimates, row_var_means)
    else:
        variances = [state["variance"] for state in states]
        torch._foreach_lerp_(variances, torch._foreach_mul(grads, grads), one_minus_beta2)
        var_estimates = [variance.clone() for variance in variances]
    torch._foreach_clamp_min_(var_estimates, eps1 * eps1)
    torch._foreach_rsqrt_(var_estimates)
    torch._foreach_mul_(var_estimates, grads)
    for p, update, alpha, norm in zip(params, var_estimates, alphas, norms_of(var_estimates)):
        denom = max(1.0, norm / ((update.numel() ** 0.5) * group["d"]))
        p.add_(update, alpha=-alpha / denom)


def norms_of(xs: list[Tensor]) -> list[float]:
    """Each tensor's 2-norm on the host, from one foreach norm and one copy to the host
    (as `x.norm(2).item()` each: torch's `norm` is this `linalg.vector_norm`)."""
    return torch.stack(torch._foreach_norm(xs)).tolist()
