"""AdaLomo (Lv et al., 2023, "AdaLomo: Low-memory Optimization with Adaptive Learning
Rate"), as `lomo-optim`'s `AdaLomo` computes it, with each component behind a switch."""

from __future__ import annotations

import torch
from torch import Tensor

from ..sharding import is_sharded, like, local, replicated, sum_over_shards
from .base import Base, by_group, check_hyperparameters
from .lomo import fp32_grads
from .precision import fp32_update, fp32_updates


class AdaLomo(Base):
    r"""AdaLomo: Adafactor's factored second moment, no first moment, grouped update
    normalization, and a step relative to the parameter's RMS; small enough to run inside
    backward.

    .. code-block:: text

        input: lr, eps = (eps1, eps2), clip_threshold d, decay_rate tau, beta2 (None: the
               schedule), weight decay wd, switches adaptive_lr, grouped_norm, nmf
        for step t = 1, 2, ..., for each parameter p with gradient g (fp32; first the
        gradient is unscaled and clipped as in `Lomo`, steps 1-3):
          1. beta2_t <- 1 - t^tau  (0 at t = 1)  if beta2 is None, else beta2 (constant)
          2. if adaptive_lr and nmf and p is a matrix (m x n):
               r <- beta2_t r + (1 - beta2_t) rowmean(g^2 + eps1)   (m: each row's mean)
               c <- beta2_t c + (1 - beta2_t) colmean(g^2 + eps1)   (n: each column's mean)
               v <- (r / mean(r)) outer c
             elif adaptive_lr:
               v <- beta2_t v + (1 - beta2_t) (g^2 + eps1)          (full size of p)
          3. u <- g / sqrt(v)            if adaptive_lr, else u <- g
          4. if grouped_norm is True:     u <- u / max(1, RMS(u) / d)
             if grouped_norm is "global": u <- u / max(1, RMS(all u) / d)
               (one RMS over every parameter's u, concatenated: steps 1-3 run for all
               parameters before any parameter takes step 5)
             if grouped_norm (True or "global"): lr' <- lr * max(eps2, RMS(p))
             else:                               lr' <- lr
          5. p <- p * (1 - lr' * wd)
          6. p <- p - lr' * u

    All switches on is exactly the reference. `nmf=False` keeps the full m x n second moment
    (memory O(mn) instead of O(m + n)); `adaptive_lr=False` keeps none (no state tensors);
    `grouped_norm=False` makes the step a plain `lr * u`; `grouped_norm="global"` replaces the
    per-parameter RMS of u by one over all parameters (the relative step lr' stays per
    parameter). A constant `beta2` has no bias correction: at t = 1, v is (1 - beta2) times
    the schedule's. Tensors with more than two dimensions are factored as (first dim) x (the
    rest).

    `step()` is the ordinary path. In the trainer's fused backward every parameter has its
    own instance whose `step()` runs from that parameter's gradient hook, so the update uses
    only that parameter's gradient and state; global norm clipping is then the trainer's
    (`trainer.clip_grad_norm`), and so is the global RMS of u: a first backward calls
    `global_sums()` on every instance (u computed, state untouched), and the sum over all
    instances is handed to each as `global_totals` before the updating backward. Used on its
    own, `clip_grad_norm` clips by the norm over all of this instance's gradients, and
    "global" is over all of its parameters. `step()` frees each `p.grad` it uses.

    Sharded by rows (`trainer.sharding=fsdp`), each rank updates its rows: the row
    statistics are its own, the column statistics (n numbers), the mean of r, RMS(p), RMS(u)
    and the global sums are sums over the ranks (`sharding.sum_over_shards`).
    """

    foreach_shards = True  # update_many updates a shard of rows as _update does

    def __init__(self, params, lr: float = 1e-3, eps: tuple[float, float] = (1e-30, 1e-3),
                 clip_threshold: float = 1.0, decay_rate: float = -0.8,
                 beta2: float | None = None, weight_decay: float = 0.0,
                 clip_grad_norm: float | None = None, clip_grad_value: float | None = None,
                 loss_scale: float = 1.0, adaptive_lr: bool = True,
                 grouped_norm: bool | str = True, nmf: bool = True):
        check_hyperparameters(lr=lr, weight_decay=weight_decay, clip_grad_norm=clip_grad_norm,
                              clip_grad_value=clip_grad_value, loss_scale=loss_scale)
        if len(eps) != 2 or not (eps[0] >= 0.0 and eps[1] >= 0.0):
            raise ValueError(f"eps={list(eps)}: must be two numbers >= 0 (eps1, eps2)")
        if not clip_threshold > 0.0:
            raise ValueError(f"clip_threshold={clip_threshold}: must be > 0")
        if not decay_rate <= 0.0:
            raise ValueError(f"decay_rate={decay_rate}: must be <= 0")
        if beta2 is not None and not 0.0 <= beta2 < 1.0:
            raise ValueError(f"beta2={beta2}: must be in [0, 1), or None for the schedule "
                             "1 - t^decay_rate")
        if not (isinstance(grouped_norm, bool) or grouped_norm == "global"):
            raise ValueError(f"grouped_norm={grouped_norm!r}: allowed are true, false, global")
        defaults = dict(lr=lr, eps=tuple(eps), clip_threshold=clip_threshold,
                        decay_rate=decay_rate, beta2=beta2, weight_decay=weight_decay,
                        clip_grad_value=clip_grad_value, adaptive_lr=adaptive_lr,
                        grouped_norm=grouped_norm, nmf=nmf)
        super().__init__(params, defaults)
        self.clip_grad_norm = clip_grad_norm  # global over this instance: not per group
        self.loss_scale = loss_scale
        # Sums over every parameter (of u^2, and the element count) for grouped_norm="global",
        # given by the fused backward before its updating pass; None: step() takes its own.
        self.global_totals: Tensor | None = None

    @property
    def needs_global_sums(self) -> bool:
        """Whether an update needs sums over all parameters (the fused backward's protocol)."""
        return any(group["grouped_norm"] == "global" for group in self.param_groups)

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of `p`, created at its first step: a python step count and, with
        `adaptive_lr`, the second moment (factored for a matrix when `nmf`)."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            if group["adaptive_lr"] and group["nmf"] and p.dim() >= 2:
                rows, device = local(p).shape[0], local(p).device  # this rank's, if sharded
                state["exp_avg_sq_row"] = like(p, torch.zeros(rows, dtype=torch.float32,
                                                              device=device))
                state["exp_avg_sq_col"] = replicated(p, torch.zeros(
                    p.numel() // p.shape[0], dtype=torch.float32, device=device))
            elif group["adaptive_lr"]:
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
        return state

    def kept_whole(self, p: Tensor, group: dict, key: str) -> bool:
        return key == "exp_avg_sq_col"  # the column statistics

    def _update(self, params: list[tuple[str, Tensor, dict]]) -> None:
        pending = []  # grouped_norm="global": every u first, then the updates
        for p, group, grad in fp32_grads(params, self.clip_grad_norm, self.loss_scale):
            state = self.init_state(p, group)
            state["step"] += 1
            u = adalomo_direction_(grad, state, state["step"], eps1=group["eps"][0],
                                   decay_rate=group["decay_rate"], beta2=group["beta2"],
                                   whole=p)
            if group["grouped_norm"] == "global":
                pending.append((p, group, u))
            else:
                with fp32_update(p, {}) as (p32, _):
                    adalomo_step_(p32, u, group, whole=p)
        if pending:
            totals = self.global_totals
            if totals is None:
                totals = sum_over_shards(pending[0][0],
                                         sum(sq_sum_and_count(u) for _, _, u in pending))
            update_rms = (totals[0] / totals[1]).sqrt().float()
            for p, group, u in pending:
                with fp32_update(p, {}) as (p32, _):
                    adalomo_step_(p32, u, group, update_rms, whole=p)

    def update_many(self, entries: list[tuple[Tensor, dict, dict]]) -> None:
        """Steps 1-3 in foreach ops over the tensors alike (one step count and group, all
        factored or all full), each row and column mean per tensor (reductions), and per
        tensor for a sharded parameter (its means are sums over the ranks); then steps 4-6
        for all of a group's tensors in foreach ops, a sharded parameter's per tensor (their
        RMS are sums over the ranks)."""
        prepared = fp32_grads([("", p, group) for p, group, _ in entries], self.clip_grad_norm,
                              self.loss_scale)
        directions = []  # (p, group, state, u): u is the gradient, turned into u in place
        for (p, group, grad), (_, _, state) in zip(prepared, entries):
            state["step"] += 1
            directions.append((p, group, state, grad))
        for bucket in by_group(directions, "step"):
            group, step = bucket[0][1], bucket[0][2]["step"]
            options = dict(eps1=group["eps"][0], decay_rate=group["decay_rate"],
                           beta2=group["beta2"])
            for p, _, state, grad in bucket:
                if is_sharded(p):
                    adalomo_direction_(grad, state, step, **options, whole=p)
            for key in ("exp_avg_sq_row", "exp_avg_sq"):
                kind = [(state, grad) for p, _, state, grad in bucket
                        if key in state and not is_sharded(p)]
                if kind:
                    states, grads = zip(*kind)
                    adalomo_directions_many_(list(grads), list(states), step, **options)
        update_rms = None
        pending = [entry for entry in directions if entry[1]["grouped_norm"] == "global"]
        if pending:
            totals = self.global_totals
            if totals is None:
                totals = sum_over_shards(pending[0][0],
                                         sum(sq_sum_and_count(u) for *_, u in pending))
            update_rms = (totals[0] / totals[1]).sqrt().float()
        for bucket in by_group(directions):
            params, groups, _, us = zip(*bucket)
            group = groups[0]
            shared = update_rms if group["grouped_norm"] == "global" else None
            if any(is_sharded(p) for p in params):
                for p, u in zip(params, us):
                    with fp32_update(p, {}) as (p32, _):
                        adalomo_step_(p32, u, group, shared, whole=p)
            else:
                with fp32_updates(params, [{} for _ in params]) as (p32s, _):
                    adalomo_step_many_(p32s, list(us), group, shared)

    @torch.no_grad()
    def global_sums(self) -> Tensor:
        """[sum of u^2, number of elements] over this instance's parameters whose group has
        grouped_norm="global", u as `step()` would compute it from the present gradients;
        the state is left as it was (steps 1-3 run on a copy). Frees each `p.grad`."""
        sums = torch.zeros(2, dtype=torch.float64)
        for p, group, grad in fp32_grads(self.params_with_grads(), self.clip_grad_norm,
                                         self.loss_scale):
            if group["grouped_norm"] != "global":
                continue
            state = {key: value.clone() if torch.is_tensor(value) else value
                     for key, value in self.init_state(p, group).items()}
            u = adalomo_direction_(grad, state, state["step"] + 1, eps1=group["eps"][0],
                                   decay_rate=group["decay_rate"], beta2=group["beta2"],
                                   whole=p)
            sums = sums + sq_sum_and_count(u).cpu()
        return sums


def adalomo_direction_(grad: Tensor, state: dict, step: int, *, eps1: float,
                       decay_rate: float, beta2: float | None,
                       whole: Tensor | None = None) -> Tensor:
    """Steps 1-3 on one tensor: updates the second moment in `state` (which one, if any, is
    read off it) and turns `grad` (fp32) into u in place: no full-size temporary on the
    factored path. `whole`: the parameter, when `grad` is this rank's rows of a sharded
    one (the column means and the mean of r are then sums over the ranks)."""
    if beta2 is None:
        beta2 = 1.0 - step ** decay_rate
    if "exp_avg_sq_row" in state:
        matrix = grad.view(grad.shape[0], -1)  # shares grad's memory
        row, col = local(state["exp_avg_sq_row"]), local(state["exp_avg_sq_col"])
        row_mean_sq, col_mean_sq = mean_sq_rows_cols(matrix)
        if is_sharded(whole):  # this rank's share of the mean
            sum_over_shards(whole, col_mean_sq.mul_(matrix.shape[0] / whole.shape[0]))
        row.mul_(beta2).add_(row_mean_sq.add_(eps1), alpha=1.0 - beta2)
        col.mul_(beta2).add_(col_mean_sq.add_(eps1), alpha=1.0 - beta2)
        matrix.mul_((row / mean(row, whole)).rsqrt_().unsqueeze(-1)).mul_(col.rsqrt())
    elif "exp_avg_sq" in state:
        v = local(state["exp_avg_sq"])
        v.mul_(beta2).add_(grad.square().add_(eps1), alpha=1.0 - beta2)
        grad.mul_(v.rsqrt())
    return grad


def adalomo_directions_many_(grads: list[Tensor], states: list[dict], step: int, *,
                             eps1: float, decay_rate: float, beta2: float | None) -> None:
    """`adalomo_direction_` on lists of fp32 gradients (not sharded) whose states are all
    factored or all full, op for op: the row and column means per tensor, the rest in
    foreach ops."""
    if beta2 is None:
        beta2 = 1.0 - step ** decay_rate
    if "exp_avg_sq_row" in states[0]:
        matrices = [grad.view(grad.shape[0], -1) for grad in grads]  # share grads' memory
        rows = [state["exp_avg_sq_row"] for state in states]
        cols = [state["exp_avg_sq_col"] for state in states]
        row_mean_sqs, col_mean_sqs = map(list, zip(*map(mean_sq_rows_cols, matrices)))
        for moments, mean_sqs in ((rows, row_mean_sqs), (cols, col_mean_sqs)):
            torch._foreach_add_(mean_sqs, eps1)
            torch._foreach_mul_(moments, beta2)
            torch._foreach_add_(moments, mean_sqs, alpha=1.0 - beta2)
        row_factors = torch._foreach_div(rows, [row.mean() for row in rows])
        torch._foreach_rsqrt_(row_factors)
        torch._foreach_mul_(matrices, [factor.unsqueeze(-1) for factor in row_factors])
        torch._foreach_mul_(matrices, torch._foreach_rsqrt(cols))
    else:
        vs = [state["exp_avg_sq"] for state in states]
        squares = torch._foreach_pow(grads, 2)
        torch._foreach_add_(squares, eps1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_add_(vs, squares, alpha=1.0 - beta2)
        torch._foreach_mul_(grads, torch._foreach_rsqrt(vs))


def adalomo_step_(p: Tensor, u: Tensor, group: dict, update_rms: Tensor | None = None,
                  whole: Tensor | None = None) -> None:
    """Steps 4-6 on one fp32 tensor. `update_rms`: the RMS of all parameters' u, for
    grouped_norm="global"; grouped_norm=True takes this tensor's own. `whole`: the
    parameter, when `p` and `u` are this rank's rows of a sharded one (RMS over all rows)."""
    lr = group["lr"]
    if group["grouped_norm"]:
        lr = lr * rms(p, whole).clamp_(min=group["eps"][1])
        if update_rms is None:
            update_rms = rms(u, whole)
        step_size = lr / (update_rms / group["clip_threshold"]).clamp_(min=1.0)
    else:
        step_size = torch.tensor(lr)
    if group["weight_decay"]:
        p.mul_(1.0 - lr * group["weight_decay"])
    p.addcmul_(u, step_size, value=-1.0)


def adalomo_step_many_(params: list[Tensor], us: list[Tensor], group: dict,
                       update_rms: Tensor | None = None) -> None:
    """`adalomo_step_` on lists of fp32 tensors (not sharded), op for op in foreach ops."""
    lr = group["lr"]
    if group["grouped_norm"]:
        lrs = rms_many(params)
        torch._foreach_clamp_min_(lrs, group["eps"][1])
        torch._foreach_mul_(lrs, lr)
        update_rmss = rms_many(us) if update_rms is None else [update_rms] * len(us)
        denoms = torch._foreach_div(update_rmss, group["clip_threshold"])
        torch._foreach_clamp_min_(denoms, 1.0)
        step_sizes = torch._foreach_div(lrs, denoms)
        if group["weight_decay"]:  # p * (1 - lr' wd), as 1 + lr' (-wd): the same number
            decays = torch._foreach_mul(lrs, -group["weight_decay"])
            torch._foreach_add_(decays, 1.0)
            torch._foreach_mul_(params, decays)
    else:
        step_sizes = [torch.tensor(lr)] * len(us)
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
    torch._foreach_addcmul_(params, us, step_sizes, value=-1.0)


def rms_many(xs: list[Tensor]) -> list[Tensor]:
    """`rms` of each of `xs` (not sharded), in foreach ops."""
    norms = torch._foreach_norm(xs)
    torch._foreach_div_(norms, [x.numel() ** 0.5 for x in xs])
    return norms


def sq_sum_and_count(u: Tensor) -> Tensor:
    """[sum of u^2, number of elements] in float64: added up over parameters for the
    global RMS (the same sums in the same precision fused or not)."""
    return torch.stack([torch.linalg.vector_norm(u).double().square(),
                        torch.tensor(float(u.numel()), dtype=torch.float64, device=u.device)])


def rms(x: Tensor, whole: Tensor | None = None) -> Tensor:
    """RMS of `x`, or, when `x` is this rank's rows of the sharded `whole`, of all rows."""
    if not is_sharded(whole):
        return torch.linalg.vector_norm(x) / x.numel() ** 0.5
    return (sum_over_shards(whole, x.square().sum()) / whole.numel()).sqrt()


def mean(x: Tensor, whole: Tensor | None = None) -> Tensor:
    """Mean of `x`, or, when `x` is this rank's rows of a vector over the rows of the
    sharded `whole`, of all rows."""
    if not is_sharded(whole):
        return x.mean()
    return sum_over_shards(whole, x.sum()) / whole.shape[0]


def mean_sq_rows_cols(x: Tensor, block_numel: int = 2**22) -> tuple[Tensor, Tensor]:
    """Means of `x * x` over each row and over each column of a matrix, without a full-size
    temporary (that would cost an allocation and two more passes over the 32k-vocabulary
    embeddings). Rows: a row norm, one pass. Columns: torch's column norm is a strided
    reduction, several times slower on CPU, so blocks of rows are squared and summed one at
    a time. The blocks are large (16 MB in fp32; four for a 32000 x 512 embedding): each op
    on a block is a parallel region, and on a busy machine every region waits for all of
    its threads, so many small blocks are several times slower there."""
    rows = torch.linalg.vector_norm(x, dim=-1).square_()
    cols = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    block_rows = max(1, block_numel // x.shape[1])
    for start in range(0, x.shape[0], block_rows):
        cols.add_(x[start:start + block_rows].square().sum(0))
    return rows.div_(x.shape[1]), cols.div_(x.shape[0])
