"""APOLLO and APOLLO-Mini (Zhu et al., 2024, "APOLLO: SGD-like Memory, AdamW-level
Performance"), as `apollo-torch`'s `APOLLOAdamW` computes them, with each component behind a
switch."""

from __future__ import annotations

import math
import zlib

import torch
from torch import Tensor

from ..sharding import gather, is_sharded, local, my_rows, state_zeros, sum_over_shards
from .base import Base, by_group, check_hyperparameters, name_of
from .galore import (DEFAULT_TARGET_MODULES, adam_direction, adam_directions, check_projected,
                     galore_adamw, galore_adamw_many, projectors, split_by_target)
from .precision import fp32, fp32_update, fp32_updates

PROJECTIONS = ("random", "svd", "none")
SCALINGS = ("channel", "tensor")
LIMIT = 1.01  # the norm-growth limiter's gamma (Fira's, as the reference fixes it)
TINY = 1e-8  # added to the norms the scaling factor and the limiter divide by


class Apollo(Base):
    r"""AdamW whose element-wise scaling is replaced by a channel-wise (or tensor-wise)
    factor, estimated from Adam moments kept in a low-rank projection of the gradient.

    .. code-block:: text

        input: lr, betas (b1, b2), eps, weight decay wd, rank r, update_proj_gap T,
               scale alpha, scaling (channel | tensor), switches projection, limiter
        for step t = 1, 2, ..., for each parameter p (rows x cols) with gradient G:
          if p is projected (2-D, targeted, projection != none):
            1. if (t - 1) mod T == 0, a new projector, on the smaller side:
                 rows >= cols: Q (r x cols), R = G Q^T (rows x r), channels are rows
                 rows <  cols: P (rows x r), R = P^T G (r x cols), channels are columns
                 random: a Gaussian matrix / sqrt(r), drawn from the parameter's seed,
                         which then advances; svd: the top-r singular vectors of G
            2. m <- b1 m + (1 - b1) R ;  v <- b2 v + (1 - b2) R^2   (moments have R's shape)
            3. N <- m / (sqrt(v) + eps)
            4. s <- ||N_c|| / (||R_c|| + 1e-8) for each channel c       (scaling=channel)
               s <- ||N|| / (||R|| + 1e-8), one number                  (scaling=tensor)
            5. U <- G * s                                     (the full-rank gradient, scaled)
            6. if limiter and t > 1:  l <- max(||U|| / (n + 1e-8), 1.01) / 1.01 ;  U <- U / l
               n <- ||U||                                   (the norm-growth limiter, Fira's)
            7. p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * sqrt(alpha) * U
          else: steps 2, 3 on G itself and p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * N
          8. p <- p - lr * wd * p                                      (after the update)

    APOLLO is scaling=channel at a rank such as 256; APOLLO-Mini is scaling=tensor at rank
    1 (`optimizer=apollo_mini`, alpha 128). The unprojected form is GaLore's (the reference
    shares it): `projection=none` is that AdamW on every parameter.

    Which parameters are projected: as `GaLoreAdamW` (a group carrying `rank`, or the 2-D
    named parameters matching `target_modules`), by name only, so one instance per
    parameter (the fused backward) does what one instance over all of them does.

    The random projector of refresh k is drawn with seed_k, where seed_0 is a hash of (seed,
    parameter name) and seed_k+1 is the reference's `next_seed(seed_k)`: the reference
    seeds by the parameter's position instead (1, 2, ...), which one instance per parameter
    cannot know. The current seed is kept in the state, so a checkpoint resumes exactly.

    A parameter stored in bf16 keeps fp32 moments and limiter norm and a bf16 projector;
    the update runs on fp32 copies (`precision.fp32_update`).

    Sharded by rows (`trainer.sharding=fsdp`), each rank holds its rows of G and of p; the
    projector is replicated (random: drawn from the shared seed on every rank; svd: from
    the whole G, all-gathered at a refresh). Tall weights (G Q^T): R, m, v and the channel
    factors are the rank's rows, no communication; wide ones (P^T G): the rank's rows of P
    times its rows of G are summed over the ranks (an all-reduce of r x cols), so R, m, v
    and the factors are replicated. The tensor-wise norms of a tall weight's N and R and
    the limiter's norm of U are scalar sums over the ranks.
    """

    foreach_shards = True  # update_many updates a shard of rows as _update does

    def __init__(self, params, lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, rank: int = 256,
                 update_proj_gap: int = 200, scale: float = 1.0, scaling: str = "channel",
                 target_modules=DEFAULT_TARGET_MODULES, projection: str = "random",
                 limiter: bool = True, seed: int = 0):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        rank=rank, update_proj_gap=update_proj_gap, scale=scale,
                        scaling=scaling, projection=projection, limiter=limiter, seed=seed)
        super().__init__(split_by_target(params, target_modules), defaults)
        for group in self.param_groups:
            check_group(group)

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of `p`, created at its first step: a python step count, the two moments
        (fp32, in the projected shape where `p` is projected) and, where it is, the
        projector in `p`'s dtype (zeros here: the first step makes it), the limiter's norm
        (a 0-d fp32 tensor) and, for random projections, the next draw's seed (an int)."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            shape = projected_shape(p.shape, group["rank"]) if projected(group) else p.shape
            by_rows = not projected(group) or p.shape[0] >= p.shape[1]  # R has p's rows
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = state_zeros(p, shape, torch.float32, by_rows)
            if projected(group):
                rows, cols = p.shape
                state["projector"] = state_zeros(
                    p, (group["rank"], cols) if rows >= cols else (rows, group["rank"]),
                    p.dtype, by_rows=False)
                if group["limiter"]:
                    state["limiter_norm"] = state_zeros(p, (), torch.float32, by_rows=False)
                if group["projection"] == "random":
                    state["seed"] = zlib.crc32(f"{group['seed']}/{name_of(p, group)}".encode())
        return state

    def kept_whole(self, p: Tensor, group: dict, key: str) -> bool:
        """The projector, the limiter's norm, and all state of a projected wide weight."""
        wide = projected(group) and p.shape[0] < p.shape[1]
        return key in ("projector", "limiter_norm") or wide

    def gathers(self, p: Tensor, group: dict) -> bool:
        """svd takes the projector from the whole gradient, at a refresh."""
        return group["projection"] == "svd" and "projector" in self.state[p]

    def _update(self, params: list[tuple[str, Tensor, dict]]) -> None:
        for _, p, group in params:
            beta1, beta2 = group["betas"]
            state = self.init_state(p, group)
            with fp32_update(p, state) as (p32, state32):
                if projected(group):
                    apollo(p32, local(p.grad).float(), state32, lr=group["lr"], beta1=beta1,
                           beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                           rank=group["rank"], update_proj_gap=group["update_proj_gap"],
                           scale=group["scale"], scaling=group["scaling"],
                           projection=group["projection"], limiter=group["limiter"], whole=p)
                else:  # GaLore's unprojected AdamW (the reference shares it); with
                    # sides=None its projection arguments are not read
                    galore_adamw(p32, local(p.grad).float(), state32, name="", lr=group["lr"],
                                 beta1=beta1, beta2=beta2, eps=group["eps"],
                                 weight_decay=group["weight_decay"], sides=None, rank=0,
                                 update_proj_gap=1, scale=1.0, projection="none", seed=0)

    def update_many(self, entries: list[tuple[Tensor, dict, dict]]) -> None:
        """Step 1 (the projector and its matmul) and the norms of steps 4 and 6 per tensor,
        the rest for each bucket of entries in foreach ops; unprojected parameters as
        `galore_adamw_many`."""
        for bucket in by_group(entries, "step"):
            params, groups, states = zip(*bucket)
            group = groups[0]
            with fp32_updates(params, states) as (p32s, states32):
                grads = [fp32(local(p.grad)) for p in params]
                if projected(group):
                    apollo_many(p32s, grads, states32, group, params)
                else:
                    galore_adamw_many(p32s, grads, states32, group, None)


def projected(group: dict) -> bool:
    return group["rank"] is not None and group["projection"] != "none"


def projected_shape(shape, rank: int) -> tuple[int, int]:
    """R's shape: the larger side kept, the smaller one cut to `rank`."""
    rows, cols = shape
    return (rows, rank) if rows >= cols else (rank, cols)


def check_group(group: dict) -> None:
    """One-line ValueErrors for a param group's values and, where it is projected, for the
    shape of each of its parameters."""
    check_hyperparameters(lr=group["lr"], betas=group["betas"], eps=group["eps"],
                          weight_decay=group["weight_decay"])
    if group["projection"] not in PROJECTIONS:
        raise ValueError(f"projection={group['projection']}: allowed for APOLLO are "
                         f"{', '.join(PROJECTIONS)}")
    if group["scaling"] not in SCALINGS:
        raise ValueError(f"scaling={group['scaling']}: allowed are {', '.join(SCALINGS)}")
    if not isinstance(group["limiter"], bool):
        raise ValueError(f"limiter={group['limiter']}: allowed are true, false")
    if group["rank"] is not None:  # None: plain AdamW, the APOLLO values are not used
        check_projected(group, projected(group), "APOLLO")


# ---------------------------------------------------------------- the math
def next_seed(seed: int) -> int:
    """The reference's `random_projector.next_seed`: the 15th int64 drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, torch.iinfo(torch.int64).max, (15,), generator=generator)[-1].item()


def random_projector(shape: tuple[int, int], rank: int, seed: int,
                     device: torch.device) -> Tensor:
    """A Gaussian matrix of `shape` over sqrt(rank), drawn on `device` from `seed`."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=generator, device=device) / math.sqrt(rank)


def project(grad: Tensor, state: dict, *, rank: int, update_proj_gap: int, projection: str,
            whole: Tensor | None = None) -> Tensor:
    """Step 1 for one projected parameter: its projector made anew at a refresh step (read
    off `state`, which keeps it), and R. `whole`: the parameter, when `grad` is this rank's
    rows of a sharded one."""
    tall = is_tall(grad, whole)
    if state["step"] % update_proj_gap == 0:
        shape = state["projector"].shape
        if projection == "random":
            state["projector"] = random_projector(shape, rank, state["seed"], grad.device)
            state["seed"] = next_seed(state["seed"])
        else:
            P, Q = projectors(gather(whole, grad), rank, not tall, tall, "svd", 0)
            state["projector"] = Q if tall else P
    projector = state["projector"]
    if tall:
        return grad @ projector.t()
    return sum_over_shards(whole, my_rows(whole, projector).t() @ grad)


def is_tall(grad: Tensor, whole: Tensor | None) -> bool:
    """Whether the parameter has at least as many rows as columns (then R = G Q^T)."""
    rows, cols = grad.shape if whole is None else whole.shape
    return rows >= cols


def channel_norms(x: Tensor, scaling: str, whole: Tensor, tall: bool) -> Tensor:
    """Step 4's norms of R or N (`x`), per channel or of the whole tensor (over the ranks
    where `x` is this rank's rows of a tall sharded weight)."""
    if scaling == "channel":
        return torch.norm(x, dim=1 if tall else 0)
    return norm(x, whole, tall and is_sharded(whole))


def apollo(param: Tensor, grad: Tensor, state: dict, *, lr: float, beta1: float,
           beta2: float, eps: float, weight_decay: float, rank: int, update_proj_gap: int,
           scale: float, scaling: str, projection: str, limiter: bool,
           whole: Tensor | None = None) -> None:
    """Steps 1-8 of the class docstring for one projected parameter, in place. `whole`: the
    parameter, when `param` and `grad` are this rank's rows of a sharded one."""
    low = project(grad, state, rank=rank, update_proj_gap=update_proj_gap,
                  projection=projection, whole=whole)
    tall = is_tall(grad, whole)
    state["step"] = step = state["step"] + 1
    normed = adam_direction(state["exp_avg"], state["exp_avg_sq"], low, beta1, beta2, eps)
    factor = (channel_norms(normed, scaling, whole, tall)
              / (channel_norms(low, scaling, whole, tall) + TINY))
    if scaling == "channel" and tall:
        factor = factor.unsqueeze(1)
    update = grad * factor
    if limiter:
        norm_u = norm(update, whole, is_sharded(whole))
        if step > 1:
            limit = torch.clamp(norm_u / (state["limiter_norm"] + TINY), min=LIMIT) / LIMIT
            update = update / limit
            norm_u = norm_u / limit
        state["limiter_norm"] = norm_u
    update *= math.sqrt(scale)
    step_size = lr * math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
    param.add_(update, alpha=-step_size)
    if weight_decay > 0.0:
        param.add_(param, alpha=-lr * weight_decay)


def apollo_many(params: list[Tensor], grads: list[Tensor], states: list[dict], group: dict,
                wholes: list[Tensor]) -> None:
    """`apollo` on lists of fp32 tensors of one group with one step count, op for op: the
    projections and norms per tensor, the elementwise steps in foreach ops."""
    beta1, beta2 = group["betas"]
    lr, scaling = group["lr"], group["scaling"]
    lows = [project(grad, state, rank=group["rank"], update_proj_gap=group["update_proj_gap"],
                    projection=group["projection"], whole=whole)
            for grad, state, whole in zip(grads, states, wholes)]
    talls = [is_tall(grad, whole) for grad, whole in zip(grads, wholes)]
    step = states[0]["step"] + 1
    for state in states:
        state["step"] = step
    normed = adam_directions([state["exp_avg"] for state in states],
                             [state["exp_avg_sq"] for state in states], lows, beta1, beta2,
                             group["eps"])
    factors = [channel_norms(x, scaling, whole, tall)
               for x, whole, tall in zip(normed, wholes, talls)]
    low_norms = [channel_norms(x, scaling, whole, tall)
                 for x, whole, tall in zip(lows, wholes, talls)]
    torch._foreach_add_(low_norms, TINY)
    torch._foreach_div_(factors, low_norms)
    if scaling == "channel":
        factors = [f.unsqueeze(1) if tall else f for f, tall in zip(factors, talls)]
    updates = torch._foreach_mul(grads, factors)
    if group["limiter"]:
        norms_u = [norm(u, whole, is_sharded(whole)) for u, whole in zip(updates, wholes)]
        if step > 1:
            limits = torch._foreach_add([state["limiter_norm"] for state in states], TINY)
            limits = torch._foreach_div(norms_u, limits)
            torch._foreach_clamp_min_(limits, LIMIT)
            torch._foreach_div_(limits, LIMIT)
            torch._foreach_div_(updates, limits)
            torch._foreach_div_(norms_u, limits)
        for state, norm_u in zip(states, norms_u):
            state["limiter_norm"] = norm_u
    torch._foreach_mul_(updates, math.sqrt(group["scale"]))
    step_size = lr * math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
    torch._foreach_add_(params, updates, alpha=-step_size)
    if group["weight_decay"] > 0.0:
        torch._foreach_add_(params, params, alpha=-lr * group["weight_decay"])


def norm(x: Tensor, whole: Tensor | None, by_rows: bool) -> Tensor:
    """The 2-norm of `x` or, when `x` is this rank's rows of a tensor sharded as `whole`
    (`by_rows`), of all rows."""
    if not by_rows:
        return torch.norm(x)
    return sum_over_shards(whole, x.square().sum()).sqrt()
