"""Muon (Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural networks") for
the hidden weight matrices, as `torch.optim.Muon` computes it, and AdamW, as
`torch.optim.AdamW`, for every other parameter; which parameters are Muon's is config."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..sharding import gather, local, my_rows
from .adamw import adamw_update_, adamw_update_many_
from .base import Base, by_group, check_hyperparameters, named
from .galore import DEFAULT_TARGET_MODULES, split_by_target
from .precision import fp32, fp32_update, fp32_updates

# Keller Jordan's quintic Newton-Schulz coefficients (torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
ADJUST_LR_FNS = ("original", "match_rms_adamw")
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


class Muon(Base):
    r"""Momentum orthogonalized by Newton-Schulz iterations for the matrices the config
    names; AdamW for the rest.

    .. code-block:: text

        input: lr, momentum mu, switch nesterov, Newton-Schulz steps k, coefficients
               (a, b, c), its dtype ns_dtype, eps, weight decay wd, adjust_lr_fn; for the
               rest: lr ratio rho,
               adamw_betas, adamw_eps, adamw_weight_decay
        for step t = 1, 2, ..., for each parameter p with gradient g:
          if p is Muon's (2-D, its name matches an entry of muon_modules):
            1. B <- mu B + (1 - mu) g
            2. U <- g + mu (B - g)  (= (1 - mu) g + mu B)    if nesterov, else U <- B
            3. X <- U in ns_dtype, transposed if rows > cols; X <- X / max(||X||_F, eps)
            4. k times: A <- X X^T ;  X <- a X + (b A + c A A) X
            5. p <- p (1 - lr wd)
            6. p <- p - lr' X   (X transposed back)  with lr' = lr sqrt(max(1, rows/cols))
               (adjust_lr_fn=original) or lr 0.2 sqrt(max(rows, cols)) (match_rms_adamw)
          else:
            7. torch.optim.AdamW's step (`adamw.AdamW`'s box) at lr * rho

    Steps 1-6 are `torch.optim.Muon`'s single-tensor path op for op. Its Newton-Schulz
    iteration runs in bf16 (`ns_dtype=bfloat16`, the default, as the reference's: fast on a
    GPU); `ns_dtype=float32` runs it in float32, for CPUs, where bf16 matmuls are slow (a
    llama_tiny step: README, Muon). The rest's lr follows the same schedule as
    the matrices' (the trainer sets one lr for every group), scaled by `adamw_lr_ratio`.

    Which parameters are Muon's: as GaLore's projected weights, a param group carrying
    `muon` (True or False) is taken as given; in any other group the 2-D parameters passed as
    `(name, tensor)` whose name contains an entry of `muon_modules` are Muon's and the rest
    AdamW's. By name only: one instance per parameter (the fused backward) does what one
    instance over all of them does, each parameter getting the update its class assigns.

    A parameter stored in bf16 keeps its momentum (and AdamW's moments) in bf16, like the
    parameter, as torch's; the update runs on fp32 copies (`precision.fp32_update`).

    Sharded by rows (`trainer.sharding=fsdp`), each rank keeps its rows of the momentum
    and updates its rows of p; Newton-Schulz needs the whole matrix, so each step
    all-gathers U (step 2, the size of p), every rank orthogonalizes the same matrix the
    same way, and keeps its rows of X. The AdamW rest is elementwise: on the shard.

    `update_many` (`trainer.foreach`): steps 1, 2 and 5 and the rest's AdamW in foreach ops,
    steps 3-4 and 6 per matrix; sharded matrices take `_update` (its gathers).
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5,
                 ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                 ns_dtype: str = "bfloat16", eps: float = 1e-7, weight_decay: float = 0.1,
                 adjust_lr_fn: str = "original", muon_modules=DEFAULT_TARGET_MODULES,
                 adamw_lr_ratio: float = 1.0, adamw_betas: tuple[float, float] = (0.9, 0.999),
                 adamw_eps: float = 1e-8, adamw_weight_decay: float = 0.0):
        check_hyperparameters(lr=lr, momentum=momentum, eps=eps, weight_decay=weight_decay)
        try:  # the rest's AdamW values, named as the config names them
            check_hyperparameters(lr=lr, betas=adamw_betas, eps=adamw_eps,
                                  weight_decay=adamw_weight_decay)
        except ValueError as exc:
            raise ValueError(f"adamw_{exc}") from None
        if not adamw_lr_ratio > 0.0:
            raise ValueError(f"adamw_lr_ratio={adamw_lr_ratio}: must be > 0")
        if not 0 < ns_steps < 100:
            raise ValueError(f"ns_steps={ns_steps}: must be in [1, 99]")
        if len(ns_coefficients) != 3:
            raise ValueError(f"ns_coefficients={list(ns_coefficients)}: must be 3 numbers")
        if ns_dtype not in NS_DTYPES:
            raise ValueError(f"ns_dtype={ns_dtype}: allowed are {', '.join(NS_DTYPES)}")
        if adjust_lr_fn not in ADJUST_LR_FNS:
            raise ValueError(f"adjust_lr_fn={adjust_lr_fn}: allowed are "
                             f"{', '.join(ADJUST_LR_FNS)}")
        if not isinstance(nesterov, bool):
            raise ValueError(f"nesterov={nesterov}: allowed are true, false")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        ns_coefficients=tuple(ns_coefficients), ns_dtype=ns_dtype, eps=eps,
                        weight_decay=weight_decay, adjust_lr_fn=adjust_lr_fn, muon=True,
                        adamw_lr_ratio=adamw_lr_ratio, adamw_betas=tuple(adamw_betas),
                        adamw_eps=adamw_eps, adamw_weight_decay=adamw_weight_decay)
        super().__init__(split_by_target(params, muon_modules, key="muon", rest=False),
                         defaults)
        for group in self.param_groups:
            for name, p in named(group) if group["muon"] else ():
                if p.dim() != 2:
                    raise ValueError(f"{name} with shape {tuple(p.shape)}: Muon takes 2-D "
                                     "weights only")

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of `p`, created at its first step, in torch's forms: Muon's momentum
        buffer like `p`; for the rest, AdamW's (a float32 step count, two moments like `p`)."""
        state = self.state[p]
        if not state:
            if group["muon"]:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            else:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def gathers(self, p: Tensor, group: dict) -> bool:
        return group["muon"]  # the update U, each step, for Newton-Schulz

    def _update(self, params: list[tuple[str, Tensor, dict]]) -> None:
        for _, p, group in params:
            state = self.init_state(p, group)
            if not group["muon"]:
                state["step"] += 1
            with fp32_update(p, state) as (p32, state32):
                if group["muon"]:
                    muon_update_(p32, local(p.grad).float(), state32["momentum_buffer"],
                                 lr=group["lr"], momentum=group["momentum"],
                                 nesterov=group["nesterov"], ns_steps=group["ns_steps"],
                                 ns_coefficients=group["ns_coefficients"],
                                 ns_dtype=group["ns_dtype"], eps=group["eps"],
                                 weight_decay=group["weight_decay"],
                                 adjust_lr_fn=group["adjust_lr_fn"], whole=p)
                else:
                    adamw_update_(p32, local(p.grad).float(), state32,
                                  lr=group["lr"] * group["adamw_lr_ratio"],
                                  betas=group["adamw_betas"], eps=group["adamw_eps"],
                                  weight_decay=group["adamw_weight_decay"])

    def update_many(self, entries: list[tuple[Tensor, dict, dict]]) -> None:
        muon = [entry for entry in entries if entry[1]["muon"]]
        rest = [entry for entry in entries if not entry[1]["muon"]]
        if rest:
            torch._foreach_add_([state["step"] for _, _, state in rest], 1)
        for bucket in by_group(muon):
            params, groups, states = zip(*bucket)
            group = groups[0]
            with fp32_updates(params, states) as (p32s, states32):
                muon_update_many_(p32s, [fp32(p.grad) for p in params],
                                  [state["momentum_buffer"] for state in states32],
                                  lr=group["lr"], momentum=group["momentum"],
                                  nesterov=group["nesterov"], ns_steps=group["ns_steps"],
                                  ns_coefficients=group["ns_coefficients"],
                                  ns_dtype=group["ns_dtype"], eps=group["eps"],
                                  weight_decay=group["weight_decay"],
                                  adjust_lr_fn=group["adjust_lr_fn"])
        for bucket in by_group(rest, "step"):
            params, groups, states = zip(*bucket)
            group = groups[0]
            with fp32_updates(params, states) as (p32s, states32):
                adamw_update_many_(p32s, [fp32(p.grad) for p in params], states32,
                                   lr=group["lr"] * group["adamw_lr_ratio"],
                                   betas=group["adamw_betas"], eps=group["adamw_eps"],
                                   weight_decay=group["adamw_weight_decay"])


def orthogonalize(update: Tensor, ns_coefficients: tuple[float, float, float],
                  ns_steps: int, ns_dtype: str, eps: float) -> Tensor:
    """Steps 3-4: the Newton-Schulz iteration, in `ns_dtype` (returned in it)."""
    a, b, c = ns_coefficients
    x = update.to(NS_DTYPES[ns_dtype], copy=True)
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def adjusted_lr(lr: float, adjust_lr_fn: str, shape) -> float:
    rows, cols = shape[:2]
    if adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    return lr * 0.2 * math.sqrt(max(rows, cols))


def muon_update_(param: Tensor, grad: Tensor, buf: Tensor, *, lr: float, momentum: float,
                 nesterov: bool, ns_steps: int, ns_coefficients: tuple[float, float, float],
                 ns_dtype: str, eps: float, weight_decay: float, adjust_lr_fn: str,
                 whole: Tensor | None = None) -> None:
    """Steps 1-6 on one matrix, in place. `whole`: the parameter, when `param`, `grad` and
    `buf` are this rank's rows of a sharded one (U is then gathered whole)."""
    buf.lerp_(grad, 1 - momentum)
    update = grad.lerp(buf, momentum) if nesterov else buf
    update = my_rows(whole, orthogonalize(gather(whole, update), ns_coefficients, ns_steps,
                                                ns_dtype, eps))
    param.mul_(1 - lr * weight_decay)
    shape = param.shape if whole is None else whole.shape
    param.add_(update, alpha=-adjusted_lr(lr, adjust_lr_fn, shape))


def muon_update_many_(params: list[Tensor], grads: list[Tensor], bufs: list[Tensor], *,
                      lr: float, momentum: float, nesterov: bool, ns_steps: int,
                      ns_coefficients: tuple[float, float, float], ns_dtype: str, eps: float,
                      weight_decay: float, adjust_lr_fn: str) -> None:
    """`muon_update_` on lists of (unsharded) matrices: the elementwise steps in foreach
    ops, op for op; the Newton-Schulz iteration and its lr per matrix."""
    torch._foreach_lerp_(bufs, grads, 1 - momentum)
    updates = torch._foreach_lerp(grads, bufs, momentum) if nesterov else bufs
    torch._foreach_mul_(params, 1 - lr * weight_decay)
    for param, update in zip(params, updates):
        param.add_(orthogonalize(update, ns_coefficients, ns_steps, ns_dtype, eps),
                   alpha=-adjusted_lr(lr, adjust_lr_fn, param.shape))
