"""GaLore (Zhao et al., 2024, "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
Projection"), as `galore-torch`'s `GaLoreAdamW` computes it, with each component behind a
switch."""

from __future__ import annotations

import functools
import math
import zlib

import torch
from torch import Tensor

from ..sharding import gather, is_sharded, local, my_rows, state_zeros, sum_over_shards
from .base import Base, by_group, check_hyperparameters, elementwise_batches, name_of, named
from .precision import fp32, fp32_update, fp32_updates

# Module-name substrings whose 2-D weights are projected: LLaMA attention and MLP, and
# GPT-2's Conv1D layers (stored transposed, in x out, which projection does not mind).
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                          "down_proj", "c_attn", "c_proj", "c_fc", "query", "key", "value",
                          "intermediate.dense", "output.dense")
PROJ_TYPES = ("std", "reverse_std", "left", "right", "full")
PROJECTIONS = ("svd", "random", "pca", "none")
# 8-bit moments as bitsandbytes' 8-bit Adam stores them: blocks of 256 values, one fp32
# absmax per block, dynamic-tree codes; tensors under 4096 values stay fp32.
BLOCKSIZE = 256
MIN_8BIT_SIZE = 4096


class GaLoreAdamW(Base):
    r"""AdamW whose moments live in a low-rank projection of each projected weight's gradient.

    .. code-block:: text

        input: lr, betas (b1, b2), eps, weight decay wd, rank r, update_proj_gap T,
               scale alpha, switches projection, two_sided, eight_bit
        for step t = 1, 2, ..., for each parameter p (rows x cols) with gradient G:
          if p is projected (2-D, its group has a rank, projection != none):
            1. if (t - 1) mod T == 0, recompute the projector from G:
                 one-sided: Q = top-r right basis (r x cols) if rows >= cols (proj_type=std),
                            else P = top-r left basis (rows x r)
                 two-sided: both P and Q
                 basis = singular vectors of G (svd), of G mean-centred over the samples
                 (pca), or a seeded Gaussian matrix orthonormalised by QR (random)
            2. R <- P^T G  and/or  R <- R Q^T                          (r x cols, rows x r
                                                                        or r x r)
          else:
               R <- G
          3. m <- b1 m + (1 - b1) R           (moments have R's shape; a new projector
          4. v <- b2 v + (1 - b2) R^2          does not reset them, as in the reference)
          5. N <- m / (sqrt(v) + eps)
          6. if projected: N <- alpha * (P N  and/or  N Q)             (back to rows x cols)
          7. p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * N
          8. p <- p - lr * wd * p                                      (after the update)

    Steps 5, 7 and 8 are the reference's AdamW form, not `torch.optim.AdamW`'s: eps is added
    to sqrt(v) before bias correction, and weight decay shrinks the updated weights.
    `projection=none` runs steps 3-8 on every parameter: full-rank AdamW in that form.
    With `eight_bit`, m and v are stored blockwise-quantised to 8 bits between steps
    (bitsandbytes' format) and dequantised for steps 3-5.

    Which parameters are projected: a param group that carries `rank` (the reference's
    style: `{"params": [...], "rank": 128, "update_proj_gap": 200, "scale": 0.25,
    "proj_type": "std"}`) is projected as given; in any other group, the 2-D parameters
    passed as `(name, tensor)` whose name contains an entry of `target_modules` are
    projected with the constructor's GaLore values and the rest get plain AdamW. The
    decision needs only the name, so an instance built over one parameter (the trainer's
    fused backward) does exactly what one instance over all of them does.

    A parameter stored in bf16 keeps fp32 moments (or 8-bit codes) and bf16 projectors; the
    update, the projection and the SVD run on fp32 copies (`precision.fp32_update`).

    The random projector of refresh k is drawn from a generator seeded by (seed, parameter
    name, k): a pure function of what the state holds, so a checkpoint resumes exactly.

    Sharded by rows (`trainer.sharding=fsdp`), each rank holds its rows of G and of p. At a
    refresh, svd and pca all-gather the whole G and every rank computes the same projectors
    (random draws them from the shared seed: no communication); P and Q are replicated.
    The left projection P^T G is each rank's rows of P times its rows of G, summed over the
    ranks (an all-reduce of r x cols); G Q^T is row by row (none). So the moments of a
    left-projected weight are replicated (the same numbers on every rank), those of a
    right-projected or unprojected one are sharded by rows, and each rank back-projects to
    its own rows. 8-bit moments are quantised where they live: replicated ones identically
    on every rank; sharded ones in the blocks one process would use, which needs each
    rank's rows to be a whole number of 256-value blocks, the same number on every rank
    (`check_sharding` refuses other shapes).
    """

    foreach_shards = True  # update_many updates a shard of rows as _update does

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, rank: int = 128,
                 update_proj_gap: int = 200, scale: float = 0.25, proj_type: str = "std",
                 target_modules=DEFAULT_TARGET_MODULES, projection: str = "svd",
                 two_sided: bool = False, eight_bit: bool = False, seed: int = 0):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        rank=rank, update_proj_gap=update_proj_gap, scale=scale,
                        proj_type=proj_type, projection=projection, two_sided=two_sided,
                        eight_bit=eight_bit, seed=seed)
        super().__init__(split_by_target(params, target_modules), defaults)
        for group in self.param_groups:
            check_group(group)

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of `p`, created at its first step: a python step count, the two moments
        in the projected shape (fp32, or uint8 codes and fp32 block absmaxes) and, where `p`
        is projected, its projectors in `p`'s dtype (zeros here: the first step computes
        them from the gradient)."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            shape, by_rows = moment_shape(p, group)
            numel = math.prod(shape)
            for key in ("exp_avg", "exp_avg_sq"):
                if group["eight_bit"] and numel >= MIN_8BIT_SIZE:
                    state[key] = state_zeros(p, shape, torch.uint8, by_rows)
                    state[f"{key}_absmax"] = state_zeros(p, (-(numel // -BLOCKSIZE),),
                                                         torch.float32, by_rows)
                else:
                    state[key] = state_zeros(p, shape, torch.float32, by_rows)
            if projected(group):
                left, right = sides(p.shape, group)
                if left:  # rows x rank
                    state["proj_left"] = state_zeros(p, (p.shape[0], shape[0]), p.dtype, False)
                if right:  # rank x cols
                    state["proj_right"] = state_zeros(p, (shape[1], p.shape[1]), p.dtype,
                                                      False)
        return state

    def check_sharding(self, ranks: int) -> None:
        """ValueError for a parameter whose 8-bit moments, sharded by rows over `ranks`,
        would not split into whole 256-value blocks, the same number on every rank."""
        for group in self.param_groups:
            for name, p in named(group) if group["eight_bit"] else ():
                shape, by_rows = moment_shape(p, group)
                if by_rows and math.prod(shape) >= MIN_8BIT_SIZE:
                    check_blocks(name, shape, ranks)

    def kept_whole(self, p: Tensor, group: dict, key: str) -> bool:
        """The projectors, and the moments of left-projected (wide) weights."""
        return key.startswith("proj_") or not moment_shape(p, group)[1]

    def gathers(self, p: Tensor, group: dict) -> bool:
        """svd and pca take the projectors from the whole gradient, at a refresh."""
        state = self.state[p]
        return group["projection"] in ("svd", "pca") and ("proj_left" in state
                                                          or "proj_right" in state)

    def _update(self, params: list[tuple[str, Tensor, dict]]) -> None:
        for name, p, group in params:
            beta1, beta2 = group["betas"]
            with fp32_update(p, self.init_state(p, group)) as (p32, state32):
                galore_adamw(p32, local(p.grad).float(), state32, name=name, lr=group["lr"],
                             beta1=beta1, beta2=beta2, eps=group["eps"],
                             weight_decay=group["weight_decay"],
                             sides=sides(p.shape, group) if projected(group) else None,
                             rank=group["rank"], update_proj_gap=group["update_proj_gap"],
                             scale=group["scale"], projection=group["projection"],
                             seed=group["seed"], whole=p)

    def update_many(self, entries: list[tuple[Tensor, dict, dict]]) -> None:
        """Steps 1-2 and 6's back-projection per tensor (the svd and the matmuls), the rest
        for each bucket of entries in foreach ops."""
        for bucket in by_group(entries, "step"):
            params, groups, states = zip(*bucket)
            group = groups[0]
            with fp32_updates(params, states) as (p32s, states32):
                grads = [fp32(local(p.grad)) for p in params]
                projectors = None
                if projected(group):
                    grads, lefts, rights = zip(*(project(
                        grad, state, name=name_of(p, own), sides=sides(p.shape, group),
                        rank=group["rank"], update_proj_gap=group["update_proj_gap"],
                        projection=group["projection"], seed=group["seed"], whole=p)
                        for p, own, state, grad in zip(params, groups, states32, grads)))
                    projectors = list(zip(lefts, rights))
                galore_adamw_many(p32s, list(grads), states32, group, projectors)


def moment_shape(p: Tensor, group: dict) -> tuple[tuple[int, ...], bool]:
    """The moments' shape for `p`, and whether they are sharded by rows as `p` (not
    left-projected: their rows are `p`'s) or replicated."""
    if not projected(group):
        return tuple(p.shape), True
    return projected_shape(p.shape, group), not sides(p.shape, group)[0]


def check_blocks(name: str, shape, ranks: int) -> None:
    """ValueError unless `shape`'s rows split over `ranks` evenly into whole 256-value
    blocks (8-bit states sharded by rows)."""
    row_numel = math.prod(shape[1:])
    if shape[0] % ranks or shape[0] // ranks * row_numel % BLOCKSIZE:
        raise ValueError(f"{name}: its 8-bit states of shape {tuple(shape)} do not split "
                         f"over {ranks} processes into whole {BLOCKSIZE}-value blocks, the "
                         "same number on each (allowed: another number of processes, or "
                         "trainer.sharding=none)")


# ---------------------------------------------------------------- parameter selection
def split_by_target(params, target_modules, key: str = "rank", rest=None) -> list[dict]:
    """Param groups: one carrying `key` stays as given; any other is split into its named 2-D
    parameters matching `target_modules` (projected, constructor's GaLore values) and the
    rest (`key` set to `rest`, rank None: plain AdamW). Unnamed parameters are never
    matched. Muon splits its matrices from its AdamW rest the same way."""
    groups = list(params)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]

    def targeted(item) -> bool:
        return (isinstance(item, tuple) and item[1].dim() == 2
                and any(t in item[0] for t in target_modules))

    result = []
    for group in groups:
        if key in group:
            result.append(group)
            continue
        items = list(group["params"])
        matched = [item for item in items if targeted(item)]
        others = [item for item in items if not targeted(item)]
        if matched:
            result.append({**group, "params": matched})
        if others:
            result.append({**group, "params": others, key: rest})
    return result


def projected(group: dict) -> bool:
    return group["rank"] is not None and group["projection"] != "none"


def sides(shape, group: dict) -> tuple[bool, bool]:
    """(left, right): which sides of a rows x cols gradient the projector multiplies."""
    if group["two_sided"] or group["proj_type"] == "full":
        return True, True
    tall = shape[0] >= shape[1]
    right = {"std": tall, "reverse_std": not tall, "right": True, "left": False}[group["proj_type"]]
    return not right, right


def projected_shape(shape, group: dict) -> tuple[int, int]:
    left, right = sides(shape, group)
    return (group["rank"] if left else shape[0], group["rank"] if right else shape[1])


def check_group(group: dict) -> None:
    """One-line ValueErrors for a param group's values (the constructor's, or a group's own)
    and, where it is projected, for the shape of each of its parameters."""
    check_hyperparameters(lr=group["lr"], betas=group["betas"], eps=group["eps"],
                          weight_decay=group["weight_decay"])
    if group["projection"] not in PROJECTIONS:
        raise ValueError(f"projection={group['projection']}: allowed are {', '.join(PROJECTIONS)}")
    if group["rank"] is None:  # plain AdamW: the GaLore values are not used
        return
    if group["proj_type"] not in PROJ_TYPES:
        raise ValueError(f"proj_type={group['proj_type']}: allowed are {', '.join(PROJ_TYPES)}")
    check_projected(group, projected(group), "GaLore")


def check_projected(group: dict, is_projected: bool, who: str) -> None:
    """A projected group's rank, gap and scale, and (where it projects) its parameters'
    shapes: GaLore's and APOLLO's."""
    rank, gap, scale = group["rank"], group["update_proj_gap"], group["scale"]
    if not rank > 0:
        raise ValueError(f"rank={rank}: must be > 0")
    if not gap > 0:
        raise ValueError(f"update_proj_gap={gap}: must be > 0")
    if not scale > 0.0:
        raise ValueError(f"scale={scale}: must be > 0")
    for name, p in named(group) if is_projected else ():
        if p.dim() != 2:
            raise ValueError(f"{name} with shape {tuple(p.shape)} cannot be projected: {who} "
                             "projects 2-D weights only")
        if rank > min(p.shape):
            raise ValueError(f"rank={rank}: must be <= min(rows, cols) = {min(p.shape)} for "
                             f"{name} with shape {tuple(p.shape)}")


# ---------------------------------------------------------------- the math
def projectors(grad: Tensor, rank: int, left: bool, right: bool, projection: str,
               seed: int) -> tuple[Tensor | None, Tensor | None]:
    """P (rows x rank, orthonormal columns) if `left`, Q (rank x cols, orthonormal rows) if
    `right`, from the gradient `grad` (svd, pca) or from `seed` alone (random)."""
    matrix = grad.float()
    P = Q = None
    if projection == "svd":  # one decomposition serves both sides, as in the reference
        U, _, Vh = torch.linalg.svd(matrix, full_matrices=False)
        P, Q = U[:, :rank], Vh[:rank]
    elif projection == "pca":  # samples: the columns for P, the rows for Q
        if left:
            P = torch.linalg.svd(matrix - matrix.mean(dim=1, keepdim=True),
                                 full_matrices=False)[0][:, :rank]
        if right:
            Q = torch.linalg.svd(matrix - matrix.mean(dim=0, keepdim=True),
                                 full_matrices=False)[2][:rank]
    else:  # random
        generator = torch.Generator().manual_seed(seed)
        rows, cols = matrix.shape
        if left:
            P = torch.linalg.qr(torch.randn(rows, rank, generator=generator))[0]
        if right:
            Q = torch.linalg.qr(torch.randn(cols, rank, generator=generator))[0].T

    def compact(M: Tensor) -> Tensor:
        """A copy: a slice of U or Vh would keep the whole factor alive. It keeps LAPACK's
        column-major layout, which the matmuls then see exactly as the reference's do."""
        return M.to(grad.device, grad.dtype).clone()

    return compact(P) if left else None, compact(Q) if right else None


def project(grad: Tensor, state: dict, *, name: str, sides: tuple[bool, bool], rank: int,
            update_proj_gap: int, projection: str, seed: int, whole: Tensor | None = None
            ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Steps 1-2 for one projected parameter: its projectors made anew at a refresh step
    (read off `state`, which keeps them), and (R, P, Q), P this rank's rows of it. `whole`:
    the parameter, when `grad` is this rank's rows of a sharded one."""
    step = state["step"]
    if step % update_proj_gap == 0:
        key = f"{seed}/{name}/{step // update_proj_gap}"
        matrix = grad
        if is_sharded(whole):  # random: the shape alone
            matrix = (grad.new_zeros(()).expand(whole.shape) if projection == "random"
                      else gather(whole, grad))
        P, Q = projectors(matrix, rank, *sides, projection, zlib.crc32(key.encode()))
        for side, matrix in (("proj_left", P), ("proj_right", Q)):
            if matrix is not None:
                state[side] = matrix
    P, Q = state.get("proj_left"), state.get("proj_right")
    if P is not None:
        P = my_rows(whole, P)
        grad = sum_over_shards(whole, P.t() @ grad)
    if Q is not None:
        grad = grad @ Q.t()
    return grad, P, Q


def back_project(update: Tensor, P: Tensor | None, Q: Tensor | None) -> Tensor:
    """Step 6's P N and/or N Q (without alpha)."""
    if P is not None:
        update = P @ update
    if Q is not None:
        update = update @ Q
    return update


def galore_adamw(param: Tensor, grad: Tensor, state: dict, *, name: str, lr: float,
                 beta1: float, beta2: float, eps: float, weight_decay: float,
                 sides: tuple[bool, bool] | None, rank: int, update_proj_gap: int, scale: float,
                 projection: str, seed: int, whole: Tensor | None = None) -> None:
    """One step of the class docstring's algorithm for one parameter, in place; `sides`
    (left, right) says which sides are projected, None that the parameter is not. `whole`:
    the parameter, when `param` and `grad` are this rank's rows of a sharded one."""
    if sides is not None:
        grad, P, Q = project(grad, state, name=name, sides=sides, rank=rank,
                             update_proj_gap=update_proj_gap, projection=projection, seed=seed,
                             whole=whole)
    state["step"] = step = state["step"] + 1
    step_size = lr * math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
    exp_avg, exp_avg_sq = load_moments(state)
    if sides is None:
        for [p], [m], [v], [g] in elementwise_batches([[param], [exp_avg], [exp_avg_sq]],
                                                      [[grad]]):
            p.add_(adam_direction(m, v, g, beta1, beta2, eps), alpha=-step_size)
    else:
        update = back_project(adam_direction(exp_avg, exp_avg_sq, grad, beta1, beta2, eps),
                              P, Q)
        param.add_(update.mul_(scale), alpha=-step_size)
    store_moments(state, exp_avg, exp_avg_sq)
    if weight_decay > 0.0:
        param.add_(param, alpha=-lr * weight_decay)


def galore_adamw_many(params: list[Tensor], grads: list[Tensor], states: list[dict],
                      group: dict, projectors: list[tuple] | None) -> None:
    """Steps 3-8 of `galore_adamw` on lists of fp32 tensors with one step count, op for op
    in foreach ops: `grads` are R, and `projectors` each one's (P, Q) from `project` (None:
    unprojected parameters, stepped in `base.elementwise_batches`, as in `galore_adamw`)."""
    beta1, beta2 = group["betas"]
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    step = states[0]["step"] + 1
    for state in states:
        state["step"] = step
    step_size = lr * math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
    exp_avgs, exp_avg_sqs = map(list, zip(*(load_moments(state) for state in states)))
    if projectors is None:
        for p, m, v, g in elementwise_batches([params, exp_avgs, exp_avg_sqs], [grads]):
            torch._foreach_add_(p, adam_directions(m, v, g, beta1, beta2, eps),
                                alpha=-step_size)
    else:
        updates = [back_project(update, P, Q) for update, (P, Q) in zip(
            adam_directions(exp_avgs, exp_avg_sqs, grads, beta1, beta2, eps), projectors)]
        torch._foreach_mul_(updates, group["scale"])
        torch._foreach_add_(params, updates, alpha=-step_size)
    for state, exp_avg, exp_avg_sq in zip(states, exp_avgs, exp_avg_sqs):
        store_moments(state, exp_avg, exp_avg_sq)
    if weight_decay > 0.0:
        torch._foreach_add_(params, params, alpha=-lr * weight_decay)


def adam_direction(exp_avg: Tensor, exp_avg_sq: Tensor, grad: Tensor, beta1: float,
                   beta2: float, eps: float) -> Tensor:
    """Steps 3-5: update m and v in place and return N = m / (sqrt(v) + eps)."""
    exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    denom = exp_avg_sq.sqrt().add_(eps)
    return torch.div(exp_avg, denom, out=denom)  # in place: one temporary, not two


def adam_directions(exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor], grads: list[Tensor],
                    beta1: float, beta2: float, eps: float) -> list[Tensor]:
    """`adam_direction` on lists of tensors, op for op in foreach ops."""
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denoms, eps)
    return torch._foreach_div(exp_avgs, denoms)


# ---------------------------------------------------------------- 8-bit moments
@functools.cache
def quantization_code(signed: bool, device: torch.device) -> Tensor:
    """bitsandbytes' dynamic-tree code: signed for m, unsigned for v (as its 8-bit Adam)."""
    import bitsandbytes.functional as bnb  # imported here: slow, and only 8-bit needs it

    return bnb.create_dynamic_map(signed=signed).to(device)


def load_moments(state: dict) -> tuple[Tensor, Tensor]:
    """m and v as fp32 tensors: the state's own, or dequantised copies of its 8-bit codes."""
    if "exp_avg_absmax" not in state:
        return state["exp_avg"], state["exp_avg_sq"]
    import bitsandbytes.functional as bnb

    return tuple(bnb.dequantize_blockwise(state[key], absmax=state[f"{key}_absmax"],
                                          code=quantization_code(signed, state[key].device),
                                          blocksize=BLOCKSIZE)
                 for key, signed in (("exp_avg", True), ("exp_avg_sq", False)))


def store_moments(state: dict, exp_avg: Tensor, exp_avg_sq: Tensor) -> None:
    """Quantise updated m and v back into 8-bit state (fp32 state was updated in place)."""
    if "exp_avg_absmax" not in state:
        return
    import bitsandbytes.functional as bnb

    for key, value, signed in (("exp_avg", exp_avg, True), ("exp_avg_sq", exp_avg_sq, False)):
        bnb.quantize_blockwise(value, code=quantization_code(signed, value.device),
                               absmax=state[f"{key}_absmax"], out=state[key],
                               blocksize=BLOCKSIZE)
