"""Adam-mini (Zhang et al., 2024, "Adam-mini: Use Fewer Learning Rates To Gain More"), as
the `adam-mini` package's `Adam_mini` 1.1.1 computes it, with its partition behind a switch."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..sharding import is_sharded, local, rows, state_zeros, sum_over_shards
from .base import Base, by_group, check_hyperparameters, name_of, named
from .precision import fp32, fp32_update, fp32_updates

# The reference's name fragments (matched in the lower-cased parameter name), in the order
# it tests them: biases first, then queries and keys, then the per-row blocks.
EMBEDDING_NAMES = ("embed", "embd", "wte")
OUTPUT_NAMES = ("lm_head", "output", "final_layer")
QK_NAMES = ("k_proj", "q_proj", "wq", "wk", "query", "key")
NEURON_NAMES = ("v_proj", "wv", "value", "o_proj", "wo", "attn.proj", "feed_forward",
                "linear", "mlp")
NO_DECAY_NAMES = ("norm", "ln", "bias")
PARTITIONS = ("head", "neuron", "tensor")


class AdamMini(Base):
    r"""Adam with one second-moment value per block of parameters instead of one per value.

    .. code-block:: text

        input: lr, betas (b1, b2), eps, weight decay wd, partition (head | neuron | tensor)
        for step t = 1, 2, ..., for each parameter p with gradient g, split into blocks:
          1. p <- p * (1 - lr * wd)            (wd = 0 for names with norm, ln or bias)
          2. m <- b1 m + (1 - b1) g                                      (one per value)
          3. v_b <- b2 v_b + (1 - b2) mean(g_b^2) for each block b       (one per block)
          4. p_b <- p_b - lr / (1 - b1^t) * m_b / (sqrt(v_b) / sqrt(1 - b2^t) + eps)

    The blocks, by the parameter's name (the reference's fragments):
      bias ..................... every value its own block (Adam)
      embeddings, output layer . one block per row (per token)
      queries, keys ............ one block per attention head (partition=head, the
                                 reference), per row (neuron) or the whole tensor (tensor)
      values, attention output,
      MLP ...................... one block per row (per output neuron; head and neuron)
                                 or the whole tensor (tensor)
      anything else (norms) .... the whole tensor
    partition=tensor is what the paper calls PyTorch's default partition. A block split by
    rows needs a 2-D weight; a parameter of another shape is one block.

    A head is `in_features / num_heads` rows of a (out x in) query or key weight, as the
    reference's `dim * dim / n_heads` values (grouped keys then give their fewer heads).
    The decision needs only the name, so one instance per parameter (the fused backward)
    does what one instance over all of them does.

    A parameter stored in bf16 keeps m and v in bf16 (as the reference, like the
    parameter); the update runs on fp32 copies (`precision.fp32_update`).

    Sharded by rows (`trainer.sharding=fsdp`), each rank updates its rows: m, Adam's v and
    the per-row blocks' v are its own; a tensor block's mean of g^2 is a scalar sum over the
    ranks. A head may span two ranks' rows, so each head's sum of g^2 is taken from every
    rank's row sums (an all-reduce of one number per row) and its v, one number per head,
    is replicated: the same on every rank.

    The multi-tensor form (`update_many`) runs each step's ops in foreach calls, one per
    kind of block (bit for bit as the per-tensor update); sharded parameters take the
    per-tensor update (`foreach_shards` is off).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, num_heads: int = 32,
                 partition: str = "head"):
        check_hyperparameters(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        if not num_heads > 0:
            raise ValueError(f"num_heads={num_heads}: must be > 0")
        if partition not in PARTITIONS:
            raise ValueError(f"partition={partition}: allowed are {', '.join(PARTITIONS)}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        num_heads=num_heads, partition=partition)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for name, p in named(group):
                if block(name, p, group) == "head" and p.numel() % head_size(p, group):
                    raise ValueError(f"num_heads={num_heads}: {name} with shape "
                                     f"{tuple(p.shape)} does not split into heads")

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of `p`, created at its first step: a python step count, m like `p`, and
        v like `p` (Adam blocks), one value per block (heads, rows: a column) or a 0-d one
        (tensor), in `p`'s dtype, as the reference."""
        state = self.state[p]
        if not state:
            kind = block(name_of(p, group), p, group)
            state["step"] = 0
            state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if kind == "adam":
                state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif kind == "tensor":
                state["vmean"] = state_zeros(p, (), p.dtype, by_rows=False)
            elif kind == "head":
                heads = p.numel() // head_size(p, group)
                state["vmean"] = state_zeros(p, (heads, 1), p.dtype, by_rows=False)
            else:
                state["vmean"] = state_zeros(p, (p.shape[0], 1), p.dtype, by_rows=True)
        return state

    def kept_whole(self, p: Tensor, group: dict, key: str) -> bool:
        return key == "vmean" and block(name_of(p, group), p, group) == "head"  # v per head

    def _update(self, params: list[tuple[str, Tensor, dict]]) -> None:
        for name, p, group in params:
            beta1, beta2 = group["betas"]
            with fp32_update(p, self.init_state(p, group)) as (p32, state32):
                adam_mini(p32, local(p.grad).float(), state32, kind=block(name, p, group),
                          lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                          weight_decay=decay(name, group),
                          head_size=head_size(p, group) if p.dim() == 2 else 0, whole=p)

    def update_many(self, entries: list[tuple[Tensor, dict, dict]]) -> None:
        """One multi-tensor call per bucket of the same hyperparameters, step count, kind of
        block and weight decay (sharded parameters take `_update`: `foreach_shards` is off)."""
        named_entries = [(p, group, state, name_of(p, group)) for p, group, state in entries]
        for bucket in by_group(named_entries, "step"):
            kinds: dict[tuple, list] = {}
            for p, group, state, name in bucket:
                key = (block(name, p, group), decay(name, group))
                kinds.setdefault(key, []).append((p, state))
            group = bucket[0][1]
            beta1, beta2 = group["betas"]
            for (kind, weight_decay), pairs in kinds.items():
                params, states = zip(*pairs)
                with fp32_updates(params, states) as (p32s, states32):
                    adam_mini_many(p32s, [fp32(p.grad) for p in params], states32, kind=kind,
                                   lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                                   weight_decay=weight_decay)


def decay(name: str, group: dict) -> float:
    """The weight decay of the parameter `name`: none for norms and biases (step 1)."""
    return 0.0 if any(n in name.lower() for n in NO_DECAY_NAMES) else group["weight_decay"]


def block(name: str, p: Tensor, group: dict) -> str:
    """adam, head, neuron or tensor: how `p`'s values are split into blocks (class docstring)."""
    name, partition = name.lower(), group["partition"]
    if "bias" in name:
        return "adam"
    if p.dim() != 2:
        return "tensor"
    if any(n in name for n in QK_NAMES):
        return partition
    if any(n in name for n in EMBEDDING_NAMES + OUTPUT_NAMES):
        return "neuron"
    if any(n in name for n in NEURON_NAMES):
        return "tensor" if partition == "tensor" else "neuron"
    return "tensor"


def head_size(p: Tensor, group: dict) -> int:
    """Values in one attention head's rows of a 2-D (out x in) weight."""
    return p.shape[1] * p.shape[1] // group["num_heads"]


def adam_mini(param: Tensor, grad: Tensor, state: dict, *, kind: str, lr: float,
              beta1: float, beta2: float, eps: float, weight_decay: float,
              head_size: int, whole: Tensor | None = None) -> None:
    """Steps 1-4 of the class docstring for one parameter, in place, op for op as the
    reference's branch for its kind of block (bit for bit: Adam's m / sqrt(v) turns the
    rounding of a gradient that is about 0, as a key's bias's, into a step of size lr).
    `whole`: the parameter, when `param`, `grad` and the state are this rank's rows of a
    sharded one (class docstring)."""
    if weight_decay > 0.0:
        param.mul_(1 - lr * weight_decay)
    state["step"] = step = state["step"] + 1
    m = state["m"]
    m.lerp_(grad, 1 - beta1)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    if kind == "adam":
        v = state["v"]
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        h = (v.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(m, h, value=-lr / bias_correction1)
        return
    vmean = state["vmean"]
    sharded = is_sharded(whole)
    if kind == "tensor":
        numel = whole.numel() if sharded else grad.numel()
        vmean.mul_(beta2).add_(sum_over_shards(whole, torch.sum(grad * grad)) / numel,
                               alpha=1 - beta2)
        blocks = m
    elif kind == "head" and sharded:  # one row's sum per number: the rows of all ranks
        sums = grad.new_zeros(whole.shape[0])
        sums[rows(whole)] = torch.sum(grad * grad, dim=1)
        heads = sum_over_shards(whole, sums).view(vmean.shape[0], -1).sum(1, keepdim=True)
        vmean.mul_(beta2).add_(heads / head_size, alpha=1 - beta2)
        blocks = m  # by rows: each row takes its head's h
    else:
        blocks = m.view(vmean.shape[0], -1)
        grad = grad.view(vmean.shape[0], -1)
        vmean.mul_(beta2).add_(torch.mean(grad * grad, dim=1, keepdim=True), alpha=1 - beta2)
    h = (vmean.sqrt() / bias_correction2_sqrt).add_(eps)
    if kind == "head" and sharded:
        h = h.repeat_interleave(whole.shape[0] // vmean.shape[0], dim=0)[rows(whole)]
    update = (blocks * ((1 / bias_correction1) / h)).view(param.shape)
    update.mul_(lr)
    param.sub_(update)  # the reference adds -update: the same numbers, one temporary less


def adam_mini_many(params: list[Tensor], grads: list[Tensor], states: list[dict], *, kind: str,
                   lr: float, beta1: float, beta2: float, eps: float,
                   weight_decay: float) -> None:
    """`adam_mini` on lists of unsharded tensors with one step count and one kind of block,
    op for op in foreach ops (so bit for bit)."""
    if weight_decay > 0.0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    step = states[0]["step"] + 1
    for state in states:
        state["step"] = step
    ms = [state["m"] for state in states]
    torch._foreach_lerp_(ms, grads, 1 - beta1)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    vs = [state["v" if kind == "adam" else "vmean"] for state in states]
    torch._foreach_mul_(vs, beta2)
    if kind == "adam":
        torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
    else:
        squares = torch._foreach_mul(grads, grads)
        means = [torch.sum(sq) / sq.numel() if kind == "tensor"
                 else torch.mean(sq.view(v.shape[0], -1), dim=1, keepdim=True)
                 for sq, v in zip(squares, vs)]
        torch._foreach_add_(vs, means, alpha=1 - beta2)
    hs = torch._foreach_sqrt(vs)
    torch._foreach_div_(hs, bias_correction2_sqrt)
    torch._foreach_add_(hs, eps)
    if kind == "adam":
        torch._foreach_addcdiv_(params, ms, hs, value=-lr / bias_correction1)
        return
    scales = torch._foreach_reciprocal(hs)  # (1 / bias_correction1) / h, as torch divides
    torch._foreach_mul_(scales, 1 / bias_correction1)
    blocks = ms if kind == "tensor" else [m.view(v.shape[0], -1) for m, v in zip(ms, vs)]
    updates = torch._foreach_mul(blocks, scales)
    torch._foreach_mul_(updates, lr)
    torch._foreach_sub_(params, [u.view(p.shape) for u, p in zip(updates, params)])
